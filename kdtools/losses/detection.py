r"""Distillation for dense object detectors: box-edge distributions and masked feature imitation."""
from __future__ import annotations

import torch

from . import _checks
from .response import _tempered_kl

__all__ = ["localization_distillation_loss", "foreground_weighted_feature_loss"]


def localization_distillation_loss(student_edge_logits, teacher_edge_logits, temperature=10.0, weight=None,
                                   avg_factor=None):
    r"""Localization Distillation: KL between the discretised distributions of the four box edges.

    A GFL-style head predicts, for each of the four edges (left, top, right, bottom) of a box, a
    distribution over ``n_bins`` discretised offsets. With :math:`p_e = \mathrm{softmax}(z_e/T)`,
    the per-edge term is :math:`\ell_{n,e} = \frac{T^2}{n_{bins}}\,\mathrm{KL}(p^{t}_{n,e}\,\|\,p^{s}_{n,e})`
    and, with per-box weights :math:`w_n` (1 without ``weight``),

    .. math::
        \mathcal{L}_{LD} = \frac{1}{A}\sum_{n=1}^{N}\sum_{e=1}^{4} w_n\,\ell_{n,e},\qquad
        A = \texttt{avg\_factor}\ \text{if given, else } 4N.

    So without ``weight`` and ``avg_factor`` it is the mean over boxes of the mean over edges.

    Paper: Z. Zheng, R. Ye, P. Wang, D. Ren, W. Zuo, Q. Hou, M.-M. Cheng, "Localization
    Distillation for Dense Object Detection", CVPR 2022. Defaults: T = 10, loss weight 0.25 in
    the authors' GFL configs (not applied here), applied to the positive locations.

    Paper vs code: the paper sums :math:`\mathcal{L}_{KL}` over the four edges. The authors'
    ``knowledge_distillation_kl_div_loss`` (HikariTJU/LD; mmdetection's
    ``LocalizationDistillationLoss``) takes the **mean over the bins** of the pointwise KL terms
    (KL / n_bins) times T², and mmdet's ``weight_reduce_loss`` multiplies by ``weight`` and then
    takes the mean over all N·4 terms, or their sum divided by ``avg_factor`` when one is given —
    exactly this function's ``weight`` and ``avg_factor``. Their ``LDHead`` passes the box quality
    score (the student's detached classification score, max sigmoid over the classes, repeated
    over the 4 edges) as ``weight`` with ``avg_factor=4``: a weighted **sum** over the boxes of the
    mean over edges, which it does *not* divide by the sum of the weights (only the bbox and DFL
    losses are), then multiplies by the loss weight 0.25. Hence the head's term is
    ``0.25 * localization_distillation_loss(s, t, 10, weight=quality, avg_factor=4.0)``.
    (mmdet ≥ 2.19 adds machine epsilon to ``avg_factor``; not here.) N = 0 boxes gives 0.

    Args:
        student_edge_logits, teacher_edge_logits: ``[N, 4, n_bins]``; the teacher is detached.
        weight: optional ``[N]`` non-negative per-box weights.
        avg_factor: optional positive number that divides the weighted sum instead of the 4N terms.
    """
    names = ("student_edge_logits", "teacher_edge_logits")
    for x, name in zip((student_edge_logits, teacher_edge_logits), names):
        _checks.check_tensor(x, name, "[N, 4, n_bins]", 3, allow_empty=True, finite=False)
        if x.shape[1] != 4 or x.shape[2] < 2:
            raise ValueError(f"{name} must be [N, 4, n_bins] with n_bins >= 2, got shape {tuple(x.shape)}")
    _checks.check_same_shape(*(student_edge_logits, teacher_edge_logits), *names)
    temperature = _checks.check_positive(temperature, "temperature")
    if avg_factor is not None:
        avg_factor = _checks.check_positive(avg_factor, "avg_factor")
    n_boxes, _, n_bins = student_edge_logits.shape
    if weight is not None:
        _checks.check_tensor(weight, "weight", "[N]", 1, allow_empty=True)
        if weight.shape[0] != n_boxes:
            raise ValueError(f"weight must have N = {n_boxes} entries, got shape {tuple(weight.shape)}")
        if n_boxes and bool((weight < 0).any()):
            raise ValueError(f"weight must be non-negative, got min {float(weight.min())}")
    if n_boxes == 0:
        return student_edge_logits.sum() * 0
    per_edge = _tempered_kl(student_edge_logits, teacher_edge_logits, temperature) / n_bins  # [N, 4]
    if weight is not None:
        per_edge = per_edge * weight.detach().to(per_edge.dtype).unsqueeze(1)
    loss = per_edge.mean() if avg_factor is None else per_edge.sum() / avg_factor
    return _checks.finite_or_raise(
        loss, student_edge_logits=student_edge_logits, teacher_edge_logits=teacher_edge_logits
    )


def foreground_weighted_feature_loss(student_feat, teacher_feat, fg_mask, fg_weight, bg_weight):
    r"""Feature imitation with separate weights for foreground and background locations.

    .. math::
        \mathcal{L} = \frac{\alpha}{B}\sum_{b,c,h,w} M_{b,h,w}\,(F^{s}_{b,c,h,w}-F^{t}_{b,c,h,w})^2
                    + \frac{\beta}{B}\sum_{b,c,h,w} (1-M_{b,h,w})\,(F^{s}_{b,c,h,w}-F^{t}_{b,c,h,w})^2

    with :math:`M` = ``fg_mask`` (1 inside ground-truth boxes, 0 elsewhere, or soft values in
    [0, 1]), α = ``fg_weight``, β = ``bg_weight``. Foreground pixels are few, so an unweighted
    imitation loss is dominated by the background; separate weights rebalance the two.

    This is the decoupled feature loss of Focal and Global Distillation (Z. Yang, Z. Li, X. Jiang,
    Y. Gong, Z. Yuan, D. Zhao, C. Yuan, "Focal and Global Knowledge Distillation for Detectors",
    CVPR 2022), summed over C, H, W and divided by the batch size as in the authors' code
    (``MSELoss(reduction="sum") / N``), without FGD's extra factors: FGD scales the foreground
    mask by 1/(box area) and the background mask by 1/(number of background pixels) and multiplies
    both by the teacher's spatial and channel attention, and adds attention and global losses.
    Authors' defaults (for those normalised masks): α = 1e-3, β = 5e-4. Binary masks with
    α = β give plain summed MSE imitation; α > 0, β = 0 gives foreground-only imitation as in
    Wang et al., "Distilling Object Detectors with Fine-grained Feature Imitation", CVPR 2019.

    Args:
        student_feat, teacher_feat: ``[B, C, H, W]`` of the same shape (adapt the student first);
            the teacher is detached.
        fg_mask: ``[B, H, W]`` or ``[B, 1, H, W]``, bool or numeric in [0, 1].
        fg_weight, bg_weight: α, β >= 0.
    """
    _checks.check_tensor(student_feat, "student_feat", "[B, C, H, W]", 4, finite=False)
    _checks.check_tensor(teacher_feat, "teacher_feat", "[B, C, H, W]", 4, finite=False)
    _checks.check_same_shape(student_feat, teacher_feat, "student_feat", "teacher_feat")
    fg_weight = _checks.check_positive(fg_weight, "fg_weight", allow_zero=True)
    bg_weight = _checks.check_positive(bg_weight, "bg_weight", allow_zero=True)
    batch, _, height, width = student_feat.shape
    if not isinstance(fg_mask, torch.Tensor):
        raise ValueError(f"fg_mask must be a [B, H, W] torch.Tensor, got {type(fg_mask).__name__}")
    if tuple(fg_mask.shape) not in ((batch, height, width), (batch, 1, height, width)):
        raise ValueError(
            f"fg_mask must have shape [B, H, W] = {(batch, height, width)} (or [B, 1, H, W]), "
            f"got shape {tuple(fg_mask.shape)}"
        )
    _checks.check_mask_values(fg_mask, "fg_mask")
    mask = fg_mask.detach().to(student_feat.dtype).reshape(batch, 1, height, width)
    sq_err = (student_feat - teacher_feat.detach()).pow(2)
    fg = (sq_err * mask).sum() / batch
    bg = (sq_err * (1 - mask)).sum() / batch
    loss = fg_weight * fg + bg_weight * bg
    return _checks.finite_or_raise(loss, student_feat=student_feat, teacher_feat=teacher_feat)
