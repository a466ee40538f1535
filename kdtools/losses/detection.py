r"""Distillation for dense object detectors: box-edge distributions and masked feature imitation."""
from __future__ import annotations

import torch

from . import _checks
from .response import _tempered_kl

__all__ = ["localization_distillation_loss", "foreground_weighted_feature_loss"]


def localization_distillation_loss(student_edge_logits, teacher_edge_logits, temperature=10.0, weight=None):
    r"""Localization Distillation: KL between the discretised distributions of the four box edges.

    A GFL-style head predicts, for each of the four edges (left, top, right, bottom) of a box, a
    distribution over ``n_bins`` discretised offsets. With :math:`p_e = \mathrm{softmax}(z_e/T)`:

    .. math::
        \mathcal{L}_{LD} = \frac{\sum_{n} w_n\,\frac14\sum_{e=1}^{4}
            \frac{T^2}{n_{bins}}\,\mathrm{KL}\big(p^{t}_{n,e}\,\|\,p^{s}_{n,e}\big)}{\sum_n w_n}

    (:math:`w_n = 1` without ``weight``: a plain mean over the N boxes).

    Paper: Z. Zheng, R. Ye, P. Wang, D. Ren, W. Zuo, Q. Hou, M.-M. Cheng, "Localization
    Distillation for Dense Object Detection", CVPR 2022. Defaults: T = 10, loss weight 0.25 in
    the authors' GFL configs (not applied here), applied to the positive locations.

    Paper vs code: the paper sums :math:`\mathcal{L}_{KL}` over the four edges. The authors'
    ``knowledge_distillation_kl_div_loss`` takes the **mean over the bins** of the pointwise KL
    terms (i.e. KL / n_bins) times T², the head passes the box quality score as ``weight``
    (repeated over the 4 edges) with ``avg_factor=4`` (mean over edges), and the GFL head then
    divides by the sum of those weights — this function's formula. (GFL clamps that sum at 1;
    here it is used as is.) N = 0 boxes gives 0.

    Args:
        student_edge_logits, teacher_edge_logits: ``[N, 4, n_bins]``; the teacher is detached.
        weight: optional ``[N]`` non-negative per-box weights.
    """
    names = ("student_edge_logits", "teacher_edge_logits")
    for x, name in zip((student_edge_logits, teacher_edge_logits), names):
        _checks.check_tensor(x, name, "[N, 4, n_bins]", 3, allow_empty=True, finite=False)
        if x.shape[1] != 4 or x.shape[2] < 2:
            raise ValueError(f"{name} must be [N, 4, n_bins] with n_bins >= 2, got shape {tuple(x.shape)}")
    _checks.check_same_shape(*(student_edge_logits, teacher_edge_logits), *names)
    temperature = _checks.check_positive(temperature, "temperature")
    n_boxes, _, n_bins = student_edge_logits.shape
    if weight is not None:
        _checks.check_tensor(weight, "weight", "[N]", 1, allow_empty=True)
        if weight.shape[0] != n_boxes:
            raise ValueError(f"weight must have N = {n_boxes} entries, got shape {tuple(weight.shape)}")
        if n_boxes and bool((weight < 0).any()):
            raise ValueError(f"weight must be non-negative, got min {float(weight.min())}")
    if n_boxes == 0:
        return student_edge_logits.sum() * 0
    per_box = _tempered_kl(student_edge_logits, teacher_edge_logits, temperature).mean(1) / n_bins
    if weight is None:
        loss = per_box.mean()
    else:
        weight = weight.detach().to(per_box.dtype)
        loss = (per_box * weight).sum() / weight.sum().clamp_min(1e-12)
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
