r"""The progressive-distillation loss of a diffusion sampler (Salimans & Ho, ICLR 2022).

In continuous time :math:`t \in [0, 1]` with :math:`z_t = \alpha_t x + \sigma_t \epsilon` and
:math:`\alpha_t^2 + \sigma_t^2 = 1`, a model predicts the clean sample :math:`\hat x(z_t)`; progressive distillation
regresses it onto the target :math:`\tilde x` that makes one DDIM step of the student land where two of the
teacher land (:func:`kdtools.applications.diffusion.distillation_target`):

.. math::
    L = w(\lambda_t)\, \lVert \tilde x - \hat x_\theta(z_t) \rVert^2, \qquad
    \lambda_t = \log \frac{\alpha_t^2}{\sigma_t^2} = \log \mathrm{SNR}(t)

(their Algorithm 2). The paper's weightings (their Section 4): ``"truncated_snr"``,
:math:`w = \max(\mathrm{SNR}, 1)`, and ``"snr+1"``, :math:`w = \mathrm{SNR} + 1`. Since
:math:`x - \hat x = \sigma_t (\hat v - v)` for the v-parameterisation, ``"snr+1"`` is exactly the plain MSE in
v-space, and ``"truncated_snr"`` is the v-space MSE weighted by :math:`\max(\alpha_t^2, \sigma_t^2)`.

Where the authors' code differs: their loss takes the mean over the pixels of each example (``meanflat``) before
weighting, as here; the weighting is computed from the log-SNR with the same formulas.
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch

from ._checks import finite_or_raise

__all__ = ["progressive_distillation_loss", "SNR_WEIGHTINGS"]


def _snr(t: torch.Tensor) -> torch.Tensor:
    alpha, sigma = torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)
    return alpha ** 2 / sigma ** 2


#: the paper's loss weightings as functions of t (cosine schedule); t = 0 (infinite SNR) is excluded
SNR_WEIGHTINGS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "truncated_snr": lambda t: torch.clamp(_snr(t), min=1.0),
    "snr+1": lambda t: _snr(t) + 1.0,
}


def progressive_distillation_loss(x_pred: torch.Tensor, x_target: torch.Tensor, t: torch.Tensor,
                                  weighting: str = "truncated_snr") -> torch.Tensor:
    r"""Progressive distillation's loss (Salimans & Ho, ICLR 2022, Algorithm 2):

    .. math::
        L = \frac1B \sum_b w(t_b)\, \frac1D \lVert \tilde x_b - \hat x_\theta(z_{t_b}) \rVert^2

    for predictions ``x_pred`` and targets ``x_target`` of shape ``[B, ...]`` (``D`` values per example) and times
    ``t`` ``[B]`` in (0, 1]; ``x_target`` is a constant (detached). ``weighting`` is a key of
    :data:`SNR_WEIGHTINGS` (default: the paper's truncated SNR, :math:`\max(\mathrm{SNR}, 1)`). Where the authors'
    code differs: it clips the log-SNR to [-20, 20], so its weights at the ends of [0, 1] are bounded; here t = 0 is
    refused instead. Non-finite inputs raise a ``ValueError`` naming them."""
    if weighting not in SNR_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {sorted(SNR_WEIGHTINGS)}, got {weighting!r}")
    if x_pred.shape != x_target.shape or x_pred.dim() < 1:
        raise ValueError(f"x_pred and x_target must have the same shape [B, ...], got {tuple(x_pred.shape)} and "
                         f"{tuple(x_target.shape)}")
    if t.shape != x_pred.shape[:1]:
        raise ValueError(f"t must have shape [B] = {tuple(x_pred.shape[:1])}, got {tuple(t.shape)}")
    if bool((t <= 0).any()) or bool((t > 1).any()):
        raise ValueError(f"t must lie in (0, 1] (t = 0 has infinite SNR), got values in [{float(t.min()):.4g}, "
                         f"{float(t.max()):.4g}]")
    per_example = (x_target.detach() - x_pred).pow(2).flatten(1).mean(1)
    loss = (SNR_WEIGHTINGS[weighting](t).to(per_example.dtype) * per_example).mean()
    return finite_or_raise(loss, x_pred=x_pred, x_target=x_target, t=t)
