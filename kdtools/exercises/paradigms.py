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
        covers="paired rows, KL(p^t ‖ p^s), T², batch mean, gradient", rtol=1e-4, atol=1e-6)
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
import torch as _df_torch  # noqa: E402  (this block's imports stay in this block)


def _df_reference(features, running_mean, running_var):
    dims = [0, 2, 3]
    mean, var = features.mean(dims), features.var(dims, unbiased=False)
    return _df_torch.linalg.vector_norm(var - running_var) + _df_torch.linalg.vector_norm(mean - running_mean)


def _df_args(seed, batch, channels, size, scale=1.0):
    gen = _df_torch.Generator().manual_seed(seed)
    features = scale * _df_torch.randn(batch, channels, size, size, generator=gen) + 0.5
    running_mean = _df_torch.randn(channels, generator=gen)
    running_var = _df_torch.rand(channels, generator=gen) + 0.5
    return features, running_mean, running_var


def _df_cases():
    return [
        Case("a batch of 4 maps, 3 channels, 5x5", lambda: _df_args(200, 4, 3, 5)),
        Case("a batch of 2 maps, 8 channels, 3x3 (few samples per channel)", lambda: _df_args(201, 2, 8, 3, 2.0)),
        Case("a batch of 16 maps, 1 channel, 7x7", lambda: _df_args(202, 16, 1, 7, 0.5)),
        Case("the gradient with respect to the features, 3 maps, 4 channels", lambda: _df_args(203, 3, 4, 2),
             gradient=True),
    ]


_DF_UNBIASED = ("use the BIASED variance (divide by N, torch's var(..., unbiased=False)), as BatchNorm normalises\n"
                "  with and the authors' hook computes; the unbiased one divides by N - 1.")
_DF_SQUARED = ("take the L2 NORM of each difference, not its square: ||var - running_var||_2 + "
               "||mean - running_mean||_2.")
_DF_PER_SAMPLE = ("the statistics are per CHANNEL over the batch AND the spatial positions (dims 0, 2, 3), as\n"
                  "  BatchNorm computes them; you averaged per image first.")
_DF_STD = ("compare VARIANCES (BatchNorm stores running_var), not standard deviations.")
_DF_MEAN_ONLY = ("the loss has two terms: the variance difference AND the mean difference.")

_DF_MISTAKES = [
    Mistake(_DF_UNBIASED, lambda f, m, v: _df_torch.linalg.vector_norm(f.var([0, 2, 3]) - v)
            + _df_torch.linalg.vector_norm(f.mean([0, 2, 3]) - m)),
    Mistake(_DF_SQUARED, lambda f, m, v: ((f.var([0, 2, 3], unbiased=False) - v) ** 2).sum()
            + ((f.mean([0, 2, 3]) - m) ** 2).sum()),
    Mistake(_DF_PER_SAMPLE, lambda f, m, v: _df_torch.linalg.vector_norm(
        f.var([2, 3], unbiased=False).mean(0) - v) + _df_torch.linalg.vector_norm(f.mean([2, 3]).mean(0) - m)),
    Mistake(_DF_STD, lambda f, m, v: _df_torch.linalg.vector_norm(f.std([0, 2, 3], unbiased=False) - v.sqrt())
            + _df_torch.linalg.vector_norm(f.mean([0, 2, 3]) - m)),
    Mistake(_DF_MEAN_ONLY, lambda f, m, v: _df_torch.linalg.vector_norm(f.mean([0, 2, 3]) - m)),
]


def check_bn_statistics_loss(fn) -> CheckResult:
    r"""Check ``fn(features, running_mean, running_var)`` = DeepInversion's loss for one BatchNorm layer,
    :math:`\lVert \sigma^2(x) - \sigma^2_{BN}\rVert_2 + \lVert \mu(x) - \mu_{BN}\rVert_2`, with the per-channel
    mean and biased variance of the ``[B, C, H, W]`` input over the batch and spatial axes.

    Four checks: three shapes and the gradient.
    """
    return run_checks(
        fn, name="bn_statistics_loss", signature="bn_statistics_loss(features, running_mean, running_var)",
        reference=_df_reference, cases=_df_cases(), mistakes=_DF_MISTAKES,
        error_hints=[ErrorHint(r"size of tensor|must match|dimension",
                               "reduce over dims (0, 2, 3) so the mean and variance have one value per channel, "
                               "the shape of running_mean.")],
        covers="per-channel statistics, the biased variance, unsquared norms, gradients", rtol=1e-4, atol=1e-6)
# ---- end of data-free KD


# ---- Born-again networks (notebooks/05_paradigms/born_again.ipynb)
import torch as _ban_torch  # noqa: E402  (this block's imports stay in this block)


def _ban_reference(logits, temperature):
    return (logits / temperature).softmax(2).mean(0)


def _ban_args(seed, k, batch, classes, temperature):
    gen = _ban_torch.Generator().manual_seed(seed)
    return 3 * _ban_torch.randn(k, batch, classes, generator=gen), temperature


def _ban_cases():
    return [
        Case("3 generations, 4 images, 10 classes, T = 1", lambda: _ban_args(100, 3, 4, 10, 1.0), {"T": 1.0}),
        Case("2 generations, 5 images, 3 classes, T = 2", lambda: _ban_args(101, 2, 5, 3, 2.0), {"T": 2.0}),
        Case("5 generations, 2 images, 10 classes, T = 4", lambda: _ban_args(102, 5, 2, 10, 4.0), {"T": 4.0}),
        Case("the gradient with respect to the logits, 4 generations, T = 2", lambda: _ban_args(103, 4, 3, 6, 2.0),
             {"T": 2.0}, gradient=True),
    ]


_BAN_LOGIT_MEAN = ("you averaged the LOGITS and then took one softmax: BANE averages the generations'\n"
                   "  PROBABILITIES, mean_k softmax(z_k / T); a softmax of mean logits is a different distribution\n"
                   "  (a geometric rather than arithmetic mean of the members).")
_BAN_NO_T = ("divide the logits by the temperature before the softmax (here T = {T}): softmax(z_k / T).")
_BAN_SUM = ("you summed the generations' probabilities: their MEAN is the ensemble's distribution (each row must\n"
            "  sum to 1).")
_BAN_LOG = ("return probabilities, not log-probabilities: mean_k softmax(z_k / T), each row summing to 1.")

_BAN_MISTAKES = [
    Mistake(_BAN_LOGIT_MEAN, lambda z, T: (z.mean(0) / T).softmax(1)),
    Mistake(_BAN_NO_T, lambda z, T: z.softmax(2).mean(0)),
    Mistake(_BAN_SUM, lambda z, T: (z / T).softmax(2).sum(0)),
    Mistake(_BAN_LOG, lambda z, T: (z / T).softmax(2).mean(0).log()),
]


def check_bane_targets(fn) -> CheckResult:
    r"""Check ``fn(logits, temperature)`` = the born-again ensemble's target distribution
    :math:`\bar p = \frac1K\sum_k \mathrm{softmax}(z_k / T)` for the generations' logits ``[K, B, C]``,
    shape ``[B, C]``.

    Four checks: T = 1, 2 and 4 with 2 to 5 generations, and the gradient.
    """
    return run_checks(
        fn, name="bane_targets", signature="bane_targets(logits, temperature)", reference=_ban_reference,
        cases=_ban_cases(), mistakes=_BAN_MISTAKES,
        error_hints=[ErrorHint(r"size of tensor|must match|dimension",
                               "take the softmax over the class axis (the last one) of every generation's "
                               "[B, C] logits, then average over the generation axis (the first one).")],
        covers="probabilities averaged over generations, the temperature, gradients", rtol=1e-4, atol=1e-6)
# ---- end of born-again networks


# ---- Teacher assistants (notebooks/05_paradigms/teacher_assistant.ipynb)
import torch as _ta_torch  # noqa: E402  (this block's imports stay in this block)


def _ta_closest(accs, target):
    return _ta_torch.argmin((accs - target).abs())


def _ta_reference(teacher_acc, student_acc, assistant_accs):
    return _ta_closest(assistant_accs, (teacher_acc + student_acc) / 2)


def _ta_case(description, teacher_acc, student_acc, accs):
    return Case(description, lambda: (teacher_acc, student_acc, _ta_torch.tensor(accs)),
                {"mid": (teacher_acc + student_acc) / 2})


def _ta_cases():
    return [
        _ta_case("teacher 99.7, student 80.0, five made-up assistants", 99.7, 80.0, [100.0, 99.5, 89.0, 81.0, 60.0]),
        _ta_case("teacher 99.0, student 70.0, assistants in increasing order", 99.0, 70.0, [72.0, 83.0, 86.0, 97.0]),
        _ta_case("teacher 95.0, student 60.0, the best assistant is not the one in the middle", 95.0, 60.0,
                 [78.0, 94.0, 65.0]),
        _ta_case("one assistant only", 99.0, 90.0, [93.0]),
    ]


_TA_BEST = ("you picked the most accurate assistant: the rule picks the one whose accuracy is CLOSEST to the\n"
            "  average of the teacher's and the student's accuracies (here {mid:.2f}), not the best one.")
_TA_TEACHER = ("you picked the assistant closest to the TEACHER's accuracy: the rule aims at the midpoint between\n"
               "  teacher and student, (teacher_acc + student_acc) / 2 = {mid:.2f}.")
_TA_STUDENT = ("you picked the assistant closest to the STUDENT's accuracy: the rule aims at the midpoint between\n"
               "  teacher and student, (teacher_acc + student_acc) / 2 = {mid:.2f}.")
_TA_SIGNED = ("you took the smallest signed difference: use the absolute distance |accuracy − {mid:.2f}|, so that an\n"
              "  assistant below the midpoint can win too.")

_TA_MISTAKES = [
    Mistake(_TA_BEST, lambda t, s, a: _ta_torch.argmax(a)),
    Mistake(_TA_TEACHER, lambda t, s, a: _ta_closest(a, t)),
    Mistake(_TA_STUDENT, lambda t, s, a: _ta_closest(a, s)),
    Mistake(_TA_SIGNED, lambda t, s, a: _ta_torch.argmin(a - (t + s) / 2)),
]


def check_pick_assistant(fn) -> CheckResult:
    r"""Check ``fn(teacher_acc, student_acc, assistant_accs)`` = the index of the assistant whose accuracy is
    closest to :math:`(a_T + a_S)/2`, the "TA near the average accuracy" rule; ``assistant_accs`` is a 1-D
    tensor, the answer an index (an int or a 0-d integer tensor).

    Four checks: four assistants, increasing order, a best assistant far from the midpoint, one assistant.
    """
    return run_checks(
        fn, name="pick_assistant", signature="pick_assistant(teacher_acc, student_acc, assistant_accs)",
        reference=_ta_reference, cases=_ta_cases(), mistakes=_TA_MISTAKES,
        error_hints=[ErrorHint(r"argmin|argmax|abs", "assistant_accs is a tensor: (assistant_accs - target).abs() "
                                                      "gives every distance, .argmin() the closest one's index.")],
        covers="the midpoint of teacher and student, absolute distances, an index", rtol=0.0, atol=0.0)
# ---- end of teacher assistants


__all__ = sorted(name for name in dir() if name.startswith("check_"))
