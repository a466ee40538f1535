r"""Distillation for dense prediction: per-pixel soft targets on ``[B, C, H, W]`` class maps."""
from __future__ import annotations

import torch

from . import _checks
from .response import _tempered_kl

__all__ = ["pixelwise_kd_loss", "PIXELWISE_REDUCTIONS"]

#: how the per-pixel KLs ``[B, H, W]`` become the loss
PIXELWISE_REDUCTIONS = {
    # the authors' CriterionPixelWise: summed over the batch, averaged over the H·W pixels of each image
    "authors": lambda per_pixel: per_pixel.sum() / (per_pixel.shape[1] * per_pixel.shape[2]),
    # the paper's 1/(W·H) Σ_i read per image: the mean over every pixel of the batch
    "mean": lambda per_pixel: per_pixel.mean(),
    "none": lambda per_pixel: per_pixel,
}


def pixelwise_kd_loss(student_logits, teacher_logits, temperature=1.0, reduction="authors"):
    r"""Pixel-wise distillation: a KL divergence between the teacher's and the student's class
    distributions at every pixel.

    .. math::
        \mathcal{L}_{pi} = \sum_{b=1}^{B}\frac{1}{W H}\sum_{i=1}^{W H}
            T^2\,\mathrm{KL}\big(p^{t}_{b,i}\,\|\,p^{s}_{b,i}\big),
        \qquad p_{b,i} = \mathrm{softmax}_c(z_{b,:,i}/T)

    The softmax runs over the class axis (dim 1), separately at each pixel.

    Paper: Y. Liu, K. Chen, C. Liu, Z. Qin, Z. Luo, J. Wang, "Structured Knowledge Distillation for
    Semantic Segmentation", CVPR 2019, eq. 1: :math:`\frac{1}{W\times H}\sum_i \mathrm{KL}(q^s_i\|q^t_i)`,
    weighted by λ = 10 in the total loss. Where the authors' code (``utils/criterion.py``,
    ``CriterionPixelWise``) differs from the paper:

    - it computes the cross-entropy :math:`-\sum_c p^t_c \log p^s_c`, not a KL; the two differ by the
      teacher's entropy, a constant for the student, so the gradients are identical. We return the KL
      (0 when the student matches the teacher);
    - the paper writes KL(q^s ‖ q^t) (student first); the code's cross-entropy weights by the
      teacher, i.e. KL(p^t ‖ p^s), which is what we compute;
    - the sum runs over all pixels of the whole batch but is divided only by W·H: the loss is the
      **sum over the batch** of per-image pixel means (``reduction="authors"``, the default), so its
      scale grows with the batch size (their batch was 8 images split over GPUs, each GPU's loss
      then averaged). ``reduction="mean"`` averages over the batch too (= ``"authors"`` / B);
      ``"none"`` returns the per-pixel ``[B, H, W]`` terms;
    - the code has no temperature (T = 1, the default here). With T ≠ 1 we scale by T² as
      :func:`kd_loss` does (Hinton et al. 2015).

    With ``reduction="mean"`` this equals ``kd_loss`` on the pixels flattened into a ``[B·H·W, C]``
    batch (reduction ``"batchmean"``).

    Args:
        student_logits, teacher_logits: ``[B, C, H, W]`` class maps of the same shape; the teacher
            is detached. (Upsample the smaller one first if the two resolutions differ.)
        temperature: T > 0.
        reduction: one of ``PIXELWISE_REDUCTIONS``.
    """
    for name, logits in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        _checks.check_tensor(logits, name, "[B, C, H, W]", ndim=4, finite=False)
    _checks.check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits",
                             what="class-map shapes [B, C, H, W]")
    temperature = _checks.check_positive(temperature, "temperature")
    _checks.check_choice(reduction, "reduction", PIXELWISE_REDUCTIONS)
    # classes last, so the softmax of _tempered_kl runs over the classes at each pixel
    per_pixel = _tempered_kl(student_logits.movedim(1, -1), teacher_logits.movedim(1, -1), temperature)
    loss = PIXELWISE_REDUCTIONS[reduction](per_pixel)  # per_pixel: [B, H, W]
    return _checks.finite_or_raise(loss, student_logits=student_logits, teacher_logits=teacher_logits)
