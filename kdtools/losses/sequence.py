r"""Distillation for sequence models: per-token soft targets on ``[B, L, V]`` logits."""
from __future__ import annotations

import torch

from . import _checks
from .response import _tempered_kl

__all__ = ["token_kd_loss"]


def token_kd_loss(student_logits, teacher_logits, mask=None, temperature=1.0):
    r"""Word-level (token-level) knowledge distillation, averaged over the real tokens.

    .. math::
        \mathcal{L}_{tok} = \frac{\sum_{b,l} m_{b,l}\,T^2\,
            \mathrm{KL}\big(\mathrm{softmax}(z^{t}_{b,l}/T)\,\|\,\mathrm{softmax}(z^{s}_{b,l}/T)\big)}
            {\sum_{b,l} m_{b,l}}

    ``mask`` ``[B, L]`` marks the tokens to keep (1/True = real token, 0/False = padding, the
    ``attention_mask`` convention); masked tokens contribute neither value nor gradient. A
    fractional mask in [0, 1] gives a weighted mean. Without a mask every token counts. A batch
    whose mask is all zero gives 0.

    Paper: Y. Kim, A. M. Rush, "Sequence-Level Knowledge Distillation", EMNLP 2016 (word-level
    KD, eq. 3–4), which writes the cross-entropy :math:`-\sum_v q(v)\log p(v)` with the
    teacher's distribution at T = 1; the KL used here differs from it by the teacher's entropy, a
    constant, so the gradients are identical and the loss is 0 at a perfect match. The
    :math:`T^2` factor follows :func:`kd_loss` (as in DistilBERT) and is 1 at the default T = 1.

    Args:
        student_logits, teacher_logits: ``[B, L, V]``; the teacher is detached.
        mask: optional ``[B, L]`` bool or {0, 1}/[0, 1] numeric tensor.
    """
    _checks.check_logit_pair(student_logits, teacher_logits, layout="[B, L, V]", ndim=3, finite=False)
    temperature = _checks.check_positive(temperature, "temperature")
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise ValueError(f"mask must be a [B, L] torch.Tensor or None, got {type(mask).__name__}")
        if mask.shape != student_logits.shape[:2]:
            raise ValueError(
                f"mask must have shape [B, L] = {tuple(student_logits.shape[:2])}, got shape {tuple(mask.shape)}"
            )
        _checks.check_mask_values(mask, "mask")
    per_token = _tempered_kl(student_logits, teacher_logits, temperature)  # [B, L]
    if mask is None:
        loss = per_token.mean()
    else:
        weights = mask.to(per_token.dtype)
        # a NaN/inf in a masked token still makes the sum NaN, so finite_or_raise sees it
        loss = (per_token * weights).sum() / weights.sum().clamp_min(1e-12)
    return _checks.finite_or_raise(loss, student_logits=student_logits, teacher_logits=teacher_logits)
