r"""Learning using privileged information (LUPI) and generalised distillation.

Vapnik's setting :cite:`vapnik2015learning`: training examples are triplets :math:`(x_i, x^\star_i, y_i)`,
where the *privileged* view :math:`x^\star_i` is available only while training and the model used at
test time sees only :math:`x_i`. Generalised distillation (D. Lopez-Paz, L. Bottou, B. Schölkopf,
V. Vapnik, "Unifying distillation and privileged information", ICLR 2016) solves it in three steps:
train a teacher on :math:`(x^\star_i, y_i)`, compute its soft labels
:math:`s_i = \mathrm{softmax}(f_t(x^\star_i)/T)`, and train the student on :math:`x_i` with

.. math::
    \mathcal{L} = \frac1B\sum_{b=1}^{B}\Big[(1-\lambda)\,\ell\big(y_b, \sigma(f_s(x_b))\big)
        + \lambda\,\ell\big(s_b, \sigma(f_s(x_b))\big)\Big],
    \qquad \ell(p, q) = -\sum_c p_c \log q_c ,

with imitation parameter :math:`\lambda \in [0, 1]` (their Eq. 2). The student's softmax is *not*
tempered, unlike Hinton et al.'s loss (:func:`kdtools.losses.kd_loss`).

This module holds what the LUPI notebook reuses: a degradation that turns the privileged view into
the regular one, the generalised-distillation loss as a :mod:`kdtools.train` term, and a power-law fit
of learning curves (error against the number of training examples) with the slope's standard error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["degrade", "generalized_distillation_targets", "generalized_distillation_loss",
           "privileged_term", "PowerLawFit", "fit_power_law"]


def degrade(images: torch.Tensor, factor: int = 4, noise_std: float = 0.0, seed: int = 0) -> torch.Tensor:
    r"""The regular view :math:`x` of a privileged image :math:`x^\star`: average-pool, then add noise.

    :math:`x = \mathrm{avgpool}_{k\times k}(x^\star) + \varepsilon`, :math:`\varepsilon \sim
    \mathcal{N}(0, \sigma^2)` i.i.d. per pixel, drawn from a generator seeded with ``seed`` so that a
    data set's degraded view is fixed (it is the input the student sees, not an augmentation).

    images: ``[N, C, H, W]`` with ``H`` and ``W`` divisible by ``factor`` (28 -> 7 for ``factor=4``).
    factor: pooling window and stride ``k >= 1`` (1 keeps the resolution).
    noise_std: :math:`\sigma \ge 0`, in the units of ``images``.
    Returns ``[N, C, H / k, W / k]``.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a tensor of shape [N, C, H, W], got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be an int >= 1, got {factor!r}")
    height, width = images.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(f"factor={factor} must divide the image size, got images of {height}x{width}")
    if not math.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
    pooled = F.avg_pool2d(images.float(), factor) if factor > 1 else images.float().clone()
    if noise_std > 0:
        generator = torch.Generator().manual_seed(seed)
        pooled = pooled + noise_std * torch.randn(pooled.shape, generator=generator)
    return pooled


def _check_gd_inputs(student_logits, labels, teacher_logits, temperature, imitation):
    if student_logits.dim() != 2:
        raise ValueError(f"student_logits must have shape [B, C], got {tuple(student_logits.shape)}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher_logits must have the student's shape {tuple(student_logits.shape)}, "
                         f"got {tuple(teacher_logits.shape)}")
    if labels.shape != student_logits.shape[:1] or labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels must be integer class indices of shape [{student_logits.shape[0]}], "
                         f"got {labels.dtype} of shape {tuple(labels.shape)}")
    classes = student_logits.shape[1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(f"labels must lie in [0, {classes - 1}], got values from {int(labels.min())} "
                         f"to {int(labels.max())}")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if not isinstance(imitation, (int, float)) or not 0.0 <= imitation <= 1.0:
        raise ValueError(f"imitation must be in [0, 1], got {imitation!r}")


def generalized_distillation_targets(labels: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                                     imitation: float) -> torch.Tensor:
    r"""The mixed target :math:`(1-\lambda)\,\mathrm{onehot}(y) + \lambda\,\mathrm{softmax}(z_t/T)`, ``[B, C]``.

    Cross-entropy is linear in its target, so the generalised-distillation loss is the cross-entropy
    of the student's softmax with this single distribution (each row sums to 1).
    """
    _check_gd_inputs(teacher_logits, labels, teacher_logits, temperature, imitation)
    soft = torch.softmax(teacher_logits.detach() / temperature, dim=-1)
    hard = F.one_hot(labels.long(), teacher_logits.shape[-1]).to(soft.dtype)
    return (1.0 - imitation) * hard + imitation * soft


def generalized_distillation_loss(student_logits: torch.Tensor, labels: torch.Tensor,
                                  teacher_logits: torch.Tensor, temperature: float = 1.0,
                                  imitation: float = 1.0) -> torch.Tensor:
    r"""Lopez-Paz et al.'s generalised distillation loss (module docstring), averaged over the batch.

    :math:`\frac1B\sum_b\big[(1-\lambda)\,\mathrm{CE}(y_b, \sigma(z_{s,b})) + \lambda\,\mathrm{CE}(s_b,
    \sigma(z_{s,b}))\big]` with :math:`s_b = \mathrm{softmax}(z_{t,b}/T)` computed from the teacher's
    logits on the *privileged* view. ``imitation=0`` is plain cross-entropy with the labels.

    student_logits, teacher_logits: ``[B, C]`` (the teacher is detached); labels: ``[B]`` integers;
    temperature: ``T > 0`` (softens the teacher only); imitation: :math:`\lambda \in [0, 1]`.
    Paper vs code: the authors' ``mnist.py`` weights the soft term by :math:`T^2\lambda` instead of
    :math:`\lambda`; this function follows the paper's equation.
    """
    _check_gd_inputs(student_logits, labels, teacher_logits, temperature, imitation)
    targets = generalized_distillation_targets(labels, teacher_logits, temperature, imitation)
    return -(targets * F.log_softmax(student_logits, dim=-1)).sum(dim=-1).mean()


def privileged_term(teacher_logits: torch.Tensor, temperature: float = 1.0, imitation: float = 1.0):
    r"""A :func:`kdtools.train.fit` loss term for generalised distillation from precomputed logits.

    ``teacher_logits[i]`` are the teacher's logits on the privileged view :math:`x^\star_i` of example
    ``i`` of the training loader's data set; the term looks them up with ``step.index``, so the teacher
    never sees the student's (degraded) inputs. ``imitation=0`` gives the hard-label baseline.
    """
    if not isinstance(teacher_logits, torch.Tensor) or teacher_logits.dim() != 2:
        got = tuple(teacher_logits.shape) if isinstance(teacher_logits, torch.Tensor) else teacher_logits
        raise ValueError(f"teacher_logits must be a tensor of shape [N, C], got {got!r}")
    table = teacher_logits.detach()
    _check_gd_inputs(table[:1], torch.zeros(1, dtype=torch.long), table[:1], temperature, imitation)

    def term(step) -> torch.Tensor:
        return generalized_distillation_loss(step.student_logits, step.labels,
                                             table[step.index.to(table.device)].to(step.student_logits.device),
                                             temperature, imitation)

    return term


@dataclass(frozen=True)
class PowerLawFit:
    r"""A least-squares fit of :math:`\log e = \log C + b \log n`, i.e. :math:`e \approx C\,n^{b}`.

    ``slope`` is :math:`b` (``-0.5`` for an :math:`O(1/\sqrt n)` rate, ``-1`` for :math:`O(1/n)`),
    ``slope_se`` its standard error from the residuals (``nan`` with only two points), ``prefactor``
    is :math:`C`, ``points`` the number of (n, error) pairs used.
    """

    slope: float
    slope_se: float
    prefactor: float
    points: int

    def predict(self, n) -> torch.Tensor:
        """:math:`C\\,n^b` at ``n`` (a number or a sequence)."""
        return self.prefactor * torch.as_tensor(n, dtype=torch.float64) ** self.slope

    def __str__(self) -> str:
        return f"slope {self.slope:+.3f} ± {self.slope_se:.3f} (SE, {self.points} points)"


def fit_power_law(n: Sequence[float], error: Sequence[float]) -> PowerLawFit:
    r"""Fit :math:`e \approx C n^b` by ordinary least squares on :math:`(\log n, \log e)`.

    n, error: equally long sequences of positive numbers; repeated ``n`` (one point per seed) are
    fine. With :math:`u = \log n`, :math:`v = \log e` and :math:`m` points,
    :math:`b = \sum (u-\bar u)(v-\bar v) / \sum (u-\bar u)^2`, :math:`\log C = \bar v - b\bar u` and
    :math:`\mathrm{SE}(b) = \sqrt{\frac{\sum r^2/(m-2)}{\sum (u-\bar u)^2}}` with residuals :math:`r`.
    The standard error assumes independent, equally noisy residuals around a straight line; curvature
    of the learning curve inflates it, and it is no substitute for repeating the experiment.
    """
    u = torch.as_tensor(n, dtype=torch.float64).flatten()
    v = torch.as_tensor(error, dtype=torch.float64).flatten()
    if u.numel() != v.numel():
        raise ValueError(f"n and error must have the same length, got {u.numel()} and {v.numel()}")
    if u.numel() < 2 or torch.unique(u).numel() < 2:
        raise ValueError(f"need at least two distinct n to fit a slope, got n={u.tolist()}")
    for name, values in (("n", u), ("error", v)):
        if not bool(torch.isfinite(values).all()) or bool((values <= 0).any()):
            raise ValueError(f"{name} must be finite and > 0 (a log-log fit), got {values.tolist()}")
    u, v = u.log(), v.log()
    du, dv = u - u.mean(), v - v.mean()
    sxx = (du * du).sum()
    slope = (du * dv).sum() / sxx
    intercept = v.mean() - slope * u.mean()
    residuals = v - (intercept + slope * u)
    points = u.numel()
    slope_se = math.sqrt(float((residuals ** 2).sum()) / (points - 2) / float(sxx)) if points > 2 else math.nan
    return PowerLawFit(slope=float(slope), slope_se=slope_se, prefactor=math.exp(float(intercept)), points=points)
