r"""Checkers of Module 5 (paradigms): cross-modal KD, deep mutual learning, data-free KD, born-again networks,
teacher assistants.

Every ``check_*`` function defined here is exported by :mod:`kdtools.exercises` and listed in its ``CHECKERS``;
each lesson keeps its checkers, references and imports inside its own block below (imports aliased with the
block's prefix, e.g. ``import torch as _dml_torch``, so blocks never share a name).
"""
from __future__ import annotations

from ._harness import Case, CheckResult, ErrorHint, Mistake, run_checks  # noqa: F401  (used by the sections)

# ---- Cross-modal KD (notebooks/05_paradigms/cross_modal.ipynb)
import torch as _xm_torch  # noqa: E402  (this block's imports stay in this block)
import torch.nn.functional as _xm_F  # noqa: E402


def _xm_reference(student_logits, teacher_logits_table, index, temperature):
    from ..paradigms.cross_modal import label_free_kd_loss
    return label_free_kd_loss(student_logits, teacher_logits_table, index, temperature)


def _xm_kl(student_logits, teacher_logits, temperature, reverse=False, squared=True, reduce="mean"):
    log_s = _xm_F.log_softmax(student_logits / temperature, dim=1)
    log_t = _xm_F.log_softmax(teacher_logits / temperature, dim=1)
    if reverse:
        log_s, log_t = log_t, log_s
    per_row = (log_t.exp() * (log_t - log_s)).sum(1)
    loss = per_row.mean() if reduce == "mean" else per_row.sum()
    return loss * temperature ** 2 if squared else loss


def _xm_args(seed, batch, n_data, classes, temperature):
    gen = _xm_torch.Generator().manual_seed(seed)
    student = 2 * _xm_torch.randn(batch, classes, generator=gen)
    table = 3 * _xm_torch.randn(n_data, classes, generator=gen)
    index = _xm_torch.randperm(n_data, generator=gen)[:batch]
    return student, table, index, temperature


def _xm_case(description, seed, batch, n_data, classes, temperature, gradient=False):
    return Case(description, lambda: _xm_args(seed, batch, n_data, classes, temperature),
                {"T": temperature, "B": batch}, gradient)


def _xm_cases():
    return [
        _xm_case("a batch of 4 recordings from a table of 12 paired images, 10 classes, T = 4", 80, 4, 12, 10, 4.0),
        _xm_case("T = 1: the plain KL, 6 recordings from a table of 20", 81, 6, 20, 10, 1.0),
        _xm_case("T = 2, 5 recordings from a table of 9, 3 classes", 82, 5, 9, 3, 2.0),
        _xm_case("the gradient with respect to student_logits, 8 of 30 recordings, T = 4", 83, 8, 30, 10, 4.0,
                 gradient=True),
    ]


_XM_BY_POSITION = ("you took the first B rows of the teacher's table: row i of the batch is recording index[i],\n"
                   "  so its teacher is teacher_logits_table[index[i]], the image PAIRED with that recording.")
_XM_REVERSED = ("your KL is the wrong way round: KD is KL(p^t ‖ p^s), the teacher's distribution first,\n"
                "  Σ_c p^t_c (log p^t_c − log p^s_c) with p^t from the paired images' teacher logits.")
_XM_NO_T2 = ("multiply by T² (here {T}²): softening by T shrinks the KL's gradients by 1/T², and T² keeps the\n"
             "  term's scale independent of T, as in Hinton et al.")
_XM_SUM = ("you summed over the batch: the loss is the MEAN over the B = {B} recordings of the batch.")

_XM_MISTAKES = [
    Mistake(_XM_BY_POSITION, lambda s, table, index, T: _xm_kl(s, table[:len(s)], T)),
    Mistake(_XM_REVERSED, lambda s, table, index, T: _xm_kl(s, table[index], T, reverse=True)),
    Mistake(_XM_NO_T2, lambda s, table, index, T: _xm_kl(s, table[index], T, squared=False)),
    Mistake(_XM_SUM, lambda s, table, index, T: _xm_kl(s, table[index], T, reduce="sum")),
]

_XM_FORBIDDEN = {name: "write the loss with log_softmax and the KL yourself: kdtools' kd_loss is the reference "
                       "this checker compares with." for name in ("kdtools.losses.kd_loss",
                                                                  "kdtools.losses.response.kd_loss")}


def check_label_free_kd_loss(fn) -> CheckResult:
    r"""Check ``fn(student_logits, teacher_logits_table, index, temperature)`` = the label-free cross-modal KD
    loss :math:`T^2 \frac{1}{B}\sum_b \mathrm{KL}(p^t_T(\text{table}[\text{index}_b]) \,\|\, p^s_T(z^s_b))`:
    the audio student's logits ``[B, C]`` against the image teacher's logits of the PAIRED images, looked up in
    a ``[N, C]`` table by the batch's data-set positions ``index`` ``[B]``.

    Four checks: T = 4, T = 1, three classes, the gradient.
    """
    return run_checks(
        fn, name="label_free_kd_loss", signature="label_free_kd_loss(student_logits, teacher_logits_table, index, "
                                                 "temperature)",
        reference=_xm_reference, cases=_xm_cases(), mistakes=_XM_MISTAKES, forbidden=_XM_FORBIDDEN,
        error_hints=[ErrorHint(r"size of tensor|must match|shape",
                               "look up the batch's teacher rows first, teacher_logits_table[index] ([B, C]), "
                               "then compare them with the student's [B, C] logits row by row.")],
        covers="the paired rows, KL(p^t ‖ p^s), T², the batch mean, gradients", rtol=1e-4, atol=1e-6)
# ---- end of cross-modal KD


# ---- Deep mutual learning (notebooks/05_paradigms/deep_mutual_learning.ipynb)
import torch as _dml_torch  # noqa: E402  (this block's imports stay in this block)
import torch.nn.functional as _dml_F  # noqa: E402


def _dml_reference(logits, labels):
    from ..paradigms.mutual import cohort_losses
    return cohort_losses(logits, labels)


def _dml_model(logits, labels, reverse=False, reduce="mean", ce=True, detach=True):
    k = logits.shape[0]
    log_p = _dml_F.log_softmax(logits, dim=2)
    out = []
    for i in range(k):
        kls = []
        for j in range(k):
            if j == i:
                continue
            other = log_p[j].detach() if detach else log_p[j]
            a, b = (log_p[i], other) if reverse else (other, log_p[i])
            kls.append((a.exp() * (a - b)).sum(1).mean())
        mutual_term = sum(kls) / (len(kls) if reduce == "mean" else 1) if kls else 0.0
        out.append((_dml_F.cross_entropy(logits[i], labels) if ce else 0.0) + mutual_term)
    return _dml_torch.stack(out)


def _dml_args(seed, k, batch, classes):
    gen = _dml_torch.Generator().manual_seed(seed)
    return 2 * _dml_torch.randn(k, batch, classes, generator=gen), _dml_torch.randint(0, classes, (batch,),
                                                                                     generator=gen)


def _dml_cases():
    return [
        Case("two peers, 4 images, 10 classes", lambda: _dml_args(90, 2, 4, 10), {"K": 2}),
        Case("three peers, 5 images, 4 classes", lambda: _dml_args(91, 3, 5, 4), {"K": 3}),
        Case("four peers, 3 images, 10 classes", lambda: _dml_args(92, 4, 3, 10), {"K": 4}),
        Case("the gradient with respect to the logits, three peers", lambda: _dml_args(93, 3, 4, 6), {"K": 3},
             gradient=True),
    ]


_DML_REVERSED = ("your KL is the wrong way round: peer k mimics the others, so its term is KL(p_l ‖ p_k), the\n"
                 "  OTHER peer's distribution first: Σ_c p_l,c (log p_l,c − log p_k,c).")
_DML_SUM = ("you summed the KL terms over the other peers: DML AVERAGES them, dividing by K − 1 = {K} − 1, so\n"
            "  that the mimicry term keeps its scale however many peers the cohort has.")
_DML_NO_CE = ("each peer also learns from the labels: L_k = CE(y, p_k) + the mean KL to the others; the\n"
              "  cross-entropy is missing.")

_DML_MISTAKES = [
    Mistake(_DML_REVERSED, lambda z, y: _dml_model(z, y, reverse=True)),
    Mistake(_DML_SUM, lambda z, y: _dml_model(z, y, reduce="sum")),
    Mistake(_DML_NO_CE, lambda z, y: _dml_model(z, y, ce=False)),
]

_DML_FORBIDDEN = {name: "write the cohort's losses yourself: kdtools' dml_loss and cohort_losses are the references "
                        "this checker compares with." for name in (
                            "kdtools.losses.dml_loss", "kdtools.losses.response.dml_loss",
                            "kdtools.paradigms.mutual.cohort_losses")}


def check_dml_losses(fn) -> CheckResult:
    r"""Check ``fn(logits, labels)`` = every peer's deep-mutual-learning loss, shape ``[K]``, for ``logits``
    ``[K, B, C]`` and ``labels`` ``[B]``: :math:`\mathcal L_k = \mathrm{CE}(y, p_k) + \frac{1}{K-1}\sum_{l\ne k}
    \mathrm{KL}(p_l \| p_k)` at :math:`T = 1`, batch means, with the other peers' predictions as constants.

    Four checks: K = 2, 3 and 4 peers, and the gradient (a peer's loss must not reach the others' logits).
    """
    return run_checks(
        fn, name="dml_losses", signature="dml_losses(logits, labels)", reference=_dml_reference,
        cases=_dml_cases(), mistakes=_DML_MISTAKES, forbidden=_DML_FORBIDDEN,
        error_hints=[ErrorHint(r"stack expects|size of tensor|must match",
                               "return one scalar loss per peer, stacked into a tensor of shape [K].")],
        covers="CE + mean KL(p_l ‖ p_k) per peer, detached peers, gradients", rtol=1e-4, atol=1e-6)
# ---- end of deep mutual learning


# ---- Data-free KD (notebooks/05_paradigms/data_free_kd.ipynb)
# (this lesson's checkers go here)
# ---- end of data-free KD


# ---- Born-again networks (notebooks/05_paradigms/born_again.ipynb)
# (this lesson's checkers go here)
# ---- end of born-again networks


# ---- Teacher assistants (notebooks/05_paradigms/teacher_assistant.ipynb)
# (this lesson's checkers go here)
# ---- end of teacher assistants


__all__ = sorted(name for name in dir() if name.startswith("check_"))
