r"""Response-based distillation: the student matches the teacher's output distribution.

Logits are ``[B, C]`` and targets ``[B]`` integers. All divergences are computed from
``log_softmax`` outputs (log space), so no probability is ever taken the log of; teacher
logits are detached inside every function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _checks

__all__ = ["kd_loss", "dkd_terms", "dkd_loss", "dkd_warmup_factor", "dml_loss"]

_REDUCTIONS = {
    "batchmean": torch.mean,  # the per-sample sums are averaged over the batch
    "sum": torch.sum,
    "none": lambda per_sample: per_sample,
}


def _kl_from_log_probs(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_c p_c(\log p_c - \log q_c)` over the last axis, both arguments in log space (one fused op)."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


def _tempered_kl(student_logits, teacher_logits, temperature):
    r"""Per-sample :math:`T^2\,\mathrm{KL}(\mathrm{softmax}(z_t/T)\,\|\,\mathrm{softmax}(z_s/T))` over the last axis."""
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    return temperature**2 * _kl_from_log_probs(log_p_teacher, log_p_student)


def kd_loss(student_logits, teacher_logits, temperature=4.0, reduction="batchmean"):
    r"""Vanilla knowledge distillation (soft targets).

    .. math::
        \mathcal{L}_{KD} = \frac{T^2}{B}\sum_{b=1}^{B}\sum_{c=1}^{C}
            p^{t}_{b,c}\,\log\frac{p^{t}_{b,c}}{p^{s}_{b,c}},
        \qquad p = \mathrm{softmax}(z/T)

    Paper: G. Hinton, O. Vinyals, J. Dean, "Distilling the Knowledge in a Neural Network",
    NIPS Deep Learning Workshop 2014 (arXiv:1503.02531, 2015). The :math:`T^2` factor keeps the
    gradient magnitude independent of :math:`T` (paper, section 2).

    Defaults: ``temperature=4`` as in mdistiller's CIFAR-100 config (``KD.TEMPERATURE=4``,
    with loss weights CE 0.1 / KD 0.9); the paper itself only reports several temperatures.
    Paper vs code: mdistiller's ``kd_loss`` computes ``kl_div(log_softmax(z_s/T), softmax(z_t/T))``
    summed over classes, averaged over the batch, times T², which is exactly this function
    (here the teacher side is also kept in log space, so no 0·log 0 special case arises).

    Args:
        student_logits, teacher_logits: ``[B, C]``; the teacher is detached.
        temperature: ``T > 0``.
        reduction: ``"batchmean"`` (scalar, mean over samples of the per-sample sum over
            classes), ``"sum"`` (scalar) or ``"none"`` (per-sample ``[B]``).
    """
    _checks.check_logit_pair(student_logits, teacher_logits, finite=False)
    temperature = _checks.check_positive(temperature, "temperature")
    _checks.check_choice(reduction, "reduction", _REDUCTIONS)
    loss = _REDUCTIONS[reduction](_tempered_kl(student_logits, teacher_logits, temperature))
    return _checks.finite_or_raise(loss, student_logits=student_logits, teacher_logits=teacher_logits)


def _target_split_log_probs(logits: torch.Tensor, target: torch.Tensor, gt_mask: torch.Tensor):
    """Log-space pieces of the DKD decomposition for one set of tempered logits ``[B, C]``.

    Returns ``log_p_target`` and ``log_p_others`` ``[B]`` (log p_t and log(1 − p_t)) and
    ``log_hat`` ``[B, C]``, the log of the distribution renormalised over the non-target classes,
    with the target slot set to 0 (it then contributes exp(0)·(0 − 0) = 0 to any KL). All are
    finite for finite logits: log(1 − p_t) is a log-sum-exp of the other classes' log
    probabilities, never log(1 − p_t) of a rounded p_t.
    """
    log_p = F.log_softmax(logits, dim=1)
    log_p_target = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
    log_p_others = torch.logsumexp(log_p.masked_fill(gt_mask, float("-inf")), dim=1)
    log_hat = (log_p - log_p_others.unsqueeze(1)).masked_fill(gt_mask, 0.0)
    return log_p_target, log_p_others, log_hat


def dkd_terms(student_logits, teacher_logits, target, temperature=4.0):
    r"""The two parts of the KD loss separated by Decoupled KD, per sample.

    With :math:`b=[p_t, 1-p_t]` the binary target/non-target distribution and
    :math:`\hat p_j = p_j/(1-p_t)` (:math:`j\neq t`) the distribution among non-target classes,

    .. math::
        \mathrm{KL}(p^{T}\|p^{S}) = \underbrace{\mathrm{KL}(b^{T}\|b^{S})}_{\mathrm{TCKD}}
            + (1-p^{T}_t)\,\underbrace{\mathrm{KL}(\hat p^{T}\|\hat p^{S})}_{\mathrm{NCKD}}

    Returns ``(tckd, nckd, weight)``, each ``[B]``; ``tckd`` and ``nckd`` are multiplied by
    :math:`T^2` and ``weight`` :math:`=1-p^T_t` is the teacher's non-target mass, so that
    ``kd_loss(s, t, T, reduction="none") == tckd + weight * nckd`` to float precision.

    Paper: B. Zhao, Q. Cui, R. Song, Y. Qiu, J. Liang, "Decoupled Knowledge Distillation",
    CVPR 2022 (eq. 1–5). Everything is computed in log space (see :func:`dkd_loss`).
    """
    _checks.check_logit_pair(student_logits, teacher_logits, finite=False)
    num_classes = student_logits.shape[1]
    if num_classes < 2:
        raise ValueError(f"DKD needs at least 2 classes, got logits of shape {tuple(student_logits.shape)}")
    _checks.check_targets(target, student_logits.shape[0], num_classes)
    temperature = _checks.check_positive(temperature, "temperature")

    target = target.long()
    gt_mask = torch.zeros_like(student_logits, dtype=torch.bool).scatter_(1, target.unsqueeze(1), True)
    tgt_s, oth_s, log_hat_s = _target_split_log_probs(student_logits / temperature, target, gt_mask)
    tgt_t, oth_t, log_hat_t = _target_split_log_probs(teacher_logits.detach() / temperature, target, gt_mask)
    weight = oth_t.exp()  # 1 - p_t of the teacher
    binary_kl = tgt_t.exp() * (tgt_t - tgt_s) + weight * (oth_t - oth_s)
    tckd = temperature**2 * binary_kl
    nckd = temperature**2 * _kl_from_log_probs(log_hat_t, log_hat_s)
    return _checks.finite_or_raise(
        (tckd, nckd, weight), student_logits=student_logits, teacher_logits=teacher_logits
    )


def dkd_loss(student_logits, teacher_logits, target, alpha=1.0, beta=8.0, temperature=4.0):
    r"""Decoupled Knowledge Distillation.

    .. math::
        \mathcal{L}_{DKD} = \alpha\,\frac{1}{B}\sum_b \mathrm{TCKD}_b
                          + \beta\,\frac{1}{B}\sum_b \mathrm{NCKD}_b

    (terms as in :func:`dkd_terms`, :math:`T^2`-scaled; NCKD is *not* multiplied by
    :math:`1-p^T_t` — replacing that coupling weight by β is the point of the paper).

    Paper: B. Zhao, Q. Cui, R. Song, Y. Qiu, J. Liang, "Decoupled Knowledge Distillation",
    CVPR 2022. Defaults of the authors' code (mdistiller ``CFG.DKD``): α = 1, β = 8, T = 4,
    CE weight 1, and a linear warm-up of the DKD term over 20 epochs (:func:`dkd_warmup_factor`).
    Per-pair configs change β (e.g. 6 for some WRN pairs); ImageNet uses α = 0.5, β = 0.5,
    T = 1, warm-up 1 epoch.

    Paper vs code: mdistiller's ``dkd_loss`` forms the binary probabilities by summing
    softmax probabilities with a ground-truth mask and then takes ``torch.log`` of them, and
    it obtains :math:`\hat p` by subtracting 1000 from the tempered target logit before a
    softmax (a mask trick, exact only while the target logit / T stays below ~1000 + the others).
    When a probability underflows (large logits, e.g. ±1e4 in float32) ``log(0)`` gives
    ``-inf`` and the loss becomes NaN. This function computes the same quantity with
    log-sum-exp differences, so it equals mdistiller's value on ordinary logits and is finite
    (with finite gradients) for any finite logits.

    Args:
        student_logits, teacher_logits: ``[B, C]`` (C >= 2); the teacher is detached.
        target: ``[B]`` integer class indices in ``[0, C)``.
    Returns:
        a scalar tensor.
    """
    alpha = _checks.check_positive(alpha, "alpha", allow_zero=True)
    beta = _checks.check_positive(beta, "beta", allow_zero=True)
    tckd, nckd, _ = dkd_terms(student_logits, teacher_logits, target, temperature)
    return alpha * tckd.mean() + beta * nckd.mean()


def dkd_warmup_factor(epoch, warmup_epochs=20):
    r"""Linear warm-up of the DKD term used by the authors: :math:`\min(\mathrm{epoch}/w, 1)`.

    mdistiller multiplies ``dkd_loss`` by ``min(epoch / DKD.WARMUP, 1.0)`` with
    ``WARMUP = 20`` on CIFAR-100 (1 on ImageNet); its epochs are counted from 1, so the first
    epoch already uses 1/20 of the loss.
    """
    epoch = _checks.check_positive(epoch, "epoch", allow_zero=True)
    warmup_epochs = _checks.check_positive(warmup_epochs, "warmup_epochs")
    return min(epoch / warmup_epochs, 1.0)


def dml_loss(logits, peer_logits, temperature=1.0):
    r"""Deep Mutual Learning: one network mimics a peer that is trained at the same time.

    .. math::
        \mathcal{L}_{DML} = \frac{T^2}{B}\sum_b \mathrm{KL}\big(p^{peer}_b \,\|\, p_b\big),
        \qquad p = \mathrm{softmax}(z/T)

    Each network ``k`` of the cohort minimises ``CE(z_k, y) + mean_{l != k} dml_loss(z_k, z_l)``.
    The peer's logits are detached: no gradient reaches the peer through this term (the peer
    gets its own, symmetric term).

    Paper: Y. Zhang, T. Xiang, T. M. Hospedales, H. Lu, "Deep Mutual Learning", CVPR 2018
    (eq. 3–4). The paper uses plain softmax (T = 1) and weight 1; no temperature appears in it —
    a temperature > 1 (with the usual :math:`T^2` factor) is an extension kept for symmetry
    with :func:`kd_loss`. With ``T = 1`` this is exactly the paper's KL, averaged over the batch.

    Args:
        logits, peer_logits: ``[B, C]``. Returns a scalar.
    """
    _checks.check_logit_pair(logits, peer_logits, names=("logits", "peer_logits"), finite=False)
    temperature = _checks.check_positive(temperature, "temperature")
    loss = _tempered_kl(logits, peer_logits, temperature).mean()
    return _checks.finite_or_raise(loss, logits=logits, peer_logits=peer_logits)
