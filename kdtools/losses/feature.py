r"""Feature-based distillation: the student matches intermediate feature maps ``[B, C, H, W]``.

FitNets (hints), Attention Transfer and Neuron Selectivity Transfer. Teacher maps are
detached inside; when the two maps have different spatial sizes, AT and NST average-pool the
larger one to the smaller (as the authors' code does).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks
from ._spatial import pool_to_common_size

__all__ = ["hint_loss", "ConvRegressor", "attention_map", "at_loss", "nst_loss", "NST_KERNELS"]


# --------------------------------------------------------------------------- FitNets
def hint_loss(student_feat, teacher_feat):
    r"""FitNets hint loss: mean squared error between the (regressed) student hint and the teacher's.

    .. math::
        \mathcal{L}_{HT} = \frac{1}{N}\sum_{i=1}^{N}\big(r(v_g)_i - u_h{}_i\big)^2

    over all :math:`N` entries of the ``[B, C, H, W]`` tensors, where :math:`r` is a regressor
    (:class:`ConvRegressor`) that maps the student's guided layer :math:`v_g` to the shape of the
    teacher's hint layer :math:`u_h`.

    Paper: A. Romero, N. Ballas, S. E. Kahou, A. Chassang, C. Gatta, Y. Bengio,
    "FitNets: Hints for Thin Deep Nets", ICLR 2015. The paper writes
    :math:`\tfrac12\|u_h - r(v_g)\|^2` (a sum) and trains in **two stages**: first the student up
    to the guided layer is pre-trained on the hint loss alone, then the whole student is trained
    with KD. Most practice (RepDistiller, mdistiller) is **one stage**: ``nn.MSELoss()`` (the mean,
    as here) added to the cross-entropy with weight 100 (RepDistiller ``-b 100``, mdistiller
    ``FITNET.LOSS.FEAT_WEIGHT = 100``) on the middle hint layer.

    Args:
        student_feat: the regressed student features, any rank >= 2, same shape as the teacher's.
        teacher_feat: the teacher's hint features (detached).
    """
    _checks.check_tensor(student_feat, "student_feat", "[B, C, H, W]", finite=False)
    _checks.check_tensor(teacher_feat, "teacher_feat", "[B, C, H, W]", finite=False)
    if student_feat.dim() < 2:
        raise ValueError(f"student_feat must have a batch axis and features, got shape {tuple(student_feat.shape)}")
    _checks.check_same_batch(student_feat, teacher_feat, "student_feat", "teacher_feat")
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(
            f"shapes differ: student_feat has shape {tuple(student_feat.shape)}, teacher_feat has shape "
            f"{tuple(teacher_feat.shape)} (map the student with a ConvRegressor first)"
        )
    loss = (student_feat - teacher_feat.detach()).pow(2).mean()
    return _checks.finite_or_raise(loss, student_feat=student_feat, teacher_feat=teacher_feat)


class ConvRegressor(nn.Module):
    r"""Maps student features ``[B, C_s, H, W]`` into the teacher's space ``[B, C_t, H_t, W_t]``.

    A 1×1 convolution (as in the lecture), followed by BatchNorm (``batch_norm=True``, as in
    RepDistiller's/mdistiller's ``ConvReg``) and optionally a ReLU. A spatial mismatch is
    handled before the convolution: the student map is average-pooled (adaptive) when it is
    larger than ``output_size`` and bilinearly upsampled when it is smaller; both commute with
    a 1×1 convolution, so this is the cheaper order.

    Differences from the authors' code: FitNets (2015) used a convolutional regressor whose kernel
    size made the spatial sizes agree; RepDistiller's ``ConvReg`` uses a strided 3×3 conv
    (half size), a transposed 4×4 conv (double size) or a ``(1+H_s-H_t)`` kernel, then BN and
    **ReLU**. The ReLU suits post-ReLU teacher hints only, so here it is off by default
    (``relu=True`` restores it).
    """

    def __init__(self, student_channels, teacher_channels, batch_norm=True, relu=False):
        super().__init__()
        self.student_channels = _checks.check_positive_int(student_channels, "student_channels")
        self.teacher_channels = _checks.check_positive_int(teacher_channels, "teacher_channels")
        self.conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(teacher_channels) if batch_norm else nn.Identity()
        self.act = nn.ReLU(inplace=False) if relu else nn.Identity()

    def forward(self, student_feat, output_size=None):
        """``output_size``: the teacher's ``(H_t, W_t)`` (e.g. ``teacher_feat.shape[-2:]``) or None."""
        _checks.check_tensor(student_feat, "student_feat", "[B, C, H, W]", 4)
        if student_feat.shape[1] != self.student_channels:
            raise ValueError(
                f"student_feat must have {self.student_channels} channels, got shape {tuple(student_feat.shape)}"
            )
        x = student_feat
        if output_size is not None:
            size = tuple(int(s) for s in output_size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"output_size must be (H, W) with H, W >= 1, got {output_size!r}")
            if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
                x = F.adaptive_avg_pool2d(x, size) if tuple(x.shape[-2:]) != size else x
            else:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.act(self.bn(self.conv(x)))


# --------------------------------------------------------------------------- Attention Transfer
def attention_map(feat, p=2):
    r"""Spatial attention map of a feature map ``[B, C, H, W]`` → ``[B, H*W]``.

    .. math::
        Q = \frac{\mathrm{vec}\,F(A)}{\|\mathrm{vec}\,F(A)\|_2},\qquad
        F(A) = \sum_{c=1}^{C} |A_c|^p

    Sum and mean over channels give the same map after the L2 normalisation (the authors' code
    uses the mean). ``p = 2`` as in the paper's experiments. The authors' code writes
    ``f.pow(p)`` rather than ``|f|^p``: identical for even ``p``, which is all they use.
    """
    _checks.check_tensor(feat, "feat", "[B, C, H, W]", 4, finite=False)
    return _checks.finite_or_raise(_attention_map(feat, _checks.check_positive(p, "p")), feat=feat)


def _attention_map(feat: torch.Tensor, p: float) -> torch.Tensor:
    powered = feat.pow(int(p)) if p % 2 == 0 else feat.abs().pow(p)  # even p: |x|^p = x^p, no abs
    return F.normalize(powered.mean(1).flatten(1), p=2, dim=1)


def _at_mean_squared(diff: torch.Tensor) -> torch.Tensor:
    return diff.pow(2).mean()


def _at_norm(diff: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(diff, ord=2, dim=1).mean()


_AT_MODES = {"code": _at_mean_squared, "paper": _at_norm}


def at_loss(student_feat, teacher_feat, p=2, mode="code"):
    r"""Attention Transfer between one student/teacher pair of feature maps.

    .. math::
        \mathcal{L}_{AT}^{code} = \frac{1}{B\,HW}\sum_{b}\sum_{k=1}^{HW}(Q^{s}_{b,k} - Q^{t}_{b,k})^2,
        \qquad
        \mathcal{L}_{AT}^{paper} = \frac{1}{B}\sum_b \big\|Q^{s}_b - Q^{t}_b\big\|_2

    with :math:`Q` from :func:`attention_map`. Channels may differ; different spatial sizes are
    aligned by average-pooling the larger map to the smaller.

    Paper: S. Zagoruyko, N. Komodakis, "Paying More Attention to Attention: Improving the
    Performance of Convolutional Neural Networks via Attention Transfer", ICLR 2017 (eq. 2):
    :math:`\frac{\beta}{2}\sum_j\|Q^j_S/\|Q^j_S\|_2 - Q^j_T/\|Q^j_T\|_2\|_p` with :math:`p=2`
    — a (non-squared) norm per sample, ``mode="paper"``; the paper sets β to 10³ divided by the
    number of elements of the attention map and the batch size. The authors' code (``at_loss`` in
    szagoruyko/attention-transfer, copied by RepDistiller and mdistiller) instead takes the
    **mean of the squared differences** over batch and positions, ``mode="code"`` (default), and
    adds β·Σ over the layer pairs with β = 1000 (RepDistiller ``-b 1000``, mdistiller
    ``AT.LOSS.FEAT_WEIGHT = 1000``). The weight β is not applied here.

    Args:
        student_feat, teacher_feat: ``[B, C, H, W]`` maps (channels may differ); teacher detached.
        p: exponent of the attention map (2).
        mode: ``"code"`` or ``"paper"``.
    """
    _checks.check_tensor(student_feat, "student_feat", "[B, C, H, W]", 4, finite=False)
    _checks.check_tensor(teacher_feat, "teacher_feat", "[B, C, H, W]", 4, finite=False)
    _checks.check_same_batch(student_feat, teacher_feat, "student_feat", "teacher_feat")
    _checks.check_choice(mode, "mode", _AT_MODES)
    p = _checks.check_positive(p, "p")
    pooled_s, pooled_t = pool_to_common_size(student_feat, teacher_feat.detach())
    loss = _AT_MODES[mode](_attention_map(pooled_s, p) - _attention_map(pooled_t, p))
    return _checks.finite_or_raise(loss, student_feat=student_feat, teacher_feat=teacher_feat)


# --------------------------------------------------------------------------- NST
def _linear_kernel(a, b, sigma2=None):
    return torch.bmm(a, b.transpose(1, 2))


def _poly_kernel(a, b, sigma2=None):
    return torch.bmm(a, b.transpose(1, 2)).pow(2)


def _gaussian_kernel(a, b, sigma2):
    sq_dist = a.pow(2).sum(-1).unsqueeze(2) + b.pow(2).sum(-1).unsqueeze(1) - 2 * torch.bmm(a, b.transpose(1, 2))
    return torch.exp(-sq_dist.clamp_min(0) / (2 * sigma2))


#: kernel name → k(a, b, sigma2) on batches of row vectors ``[B, n, d]``, ``[B, m, d]`` → ``[B, n, m]``
NST_KERNELS = {"linear": _linear_kernel, "poly": _poly_kernel, "gaussian": _gaussian_kernel}


def _mean_squared_pair_distance(x: torch.Tensor) -> torch.Tensor:
    """Mean over all ordered pairs (i, j) of ||x_i − x_j||² for rows of ``x`` ``[B, n, d]`` → ``[B, 1, 1]``."""
    mean_sq_norm = x.pow(2).sum(-1).mean(-1)
    sq_norm_of_mean = x.mean(1).pow(2).sum(-1)
    return (2 * mean_sq_norm - 2 * sq_norm_of_mean).clamp_min(1e-12).view(-1, 1, 1)


def nst_loss(student_feat, teacher_feat, kernel="poly"):
    r"""Neuron Selectivity Transfer: squared MMD between the distributions of channel activations.

    Each channel's map is flattened and L2-normalised, :math:`\hat f_c = f_c/\|f_c\|_2\in\mathbb R^{HW}`,
    and the channels of a sample are treated as samples of a distribution:

    .. math::
        \mathcal{L}_{NST} = \frac{1}{B}\sum_b \Big[
            \frac{1}{C_s^2}\sum_{i,j} k(\hat f^{s}_i,\hat f^{s}_j)
          + \frac{1}{C_t^2}\sum_{i,j} k(\hat f^{t}_i,\hat f^{t}_j)
          - \frac{2}{C_s C_t}\sum_{i,j} k(\hat f^{s}_i,\hat f^{t}_j)\Big]

    Kernels (``NST_KERNELS``): ``"poly"`` :math:`(x^\top y)^2` (degree 2, c = 0; the authors'
    default), ``"linear"`` :math:`x^\top y` — then the loss equals
    :math:`\|\mathrm{mean}_c \hat f^s_c - \mathrm{mean}_c \hat f^t_c\|^2` — and ``"gaussian"``
    :math:`\exp(-\|x-y\|^2/2\sigma^2)`.

    Paper: Z. Huang, N. Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity
    Transfer", arXiv:1707.01219, 2017. RepDistiller and mdistiller weight the loss by 50.

    Paper vs code: the reference code (RepDistiller ``NSTLoss``) only implements the polynomial
    kernel and builds ``[B, C, C, HW]`` products; here every kernel is a batched Gram matrix
    ``[B, C, C]`` (no ``[B, C, C, HW]`` tensor). The reference keeps the constant teacher–teacher
    term (``full_loss=True``), so does this function. The paper sets the Gaussian bandwidth
    :math:`\sigma^2` to "the mean of squared distances of the pairs" without saying which pairs;
    here it is the mean squared distance between the teacher's normalised channel vectors of the
    same sample (a constant for the student). Spatial sizes are aligned by average-pooling the
    larger map; channel counts may differ.
    """
    _checks.check_tensor(student_feat, "student_feat", "[B, C, H, W]", 4, finite=False)
    _checks.check_tensor(teacher_feat, "teacher_feat", "[B, C, H, W]", 4, finite=False)
    _checks.check_same_batch(student_feat, teacher_feat, "student_feat", "teacher_feat")
    _checks.check_choice(kernel, "kernel", NST_KERNELS)
    pooled_s, pooled_t = pool_to_common_size(student_feat, teacher_feat.detach())
    s = F.normalize(pooled_s.flatten(2), dim=2)
    t = F.normalize(pooled_t.flatten(2), dim=2)
    k = NST_KERNELS[kernel]
    sigma2 = _mean_squared_pair_distance(t) if kernel == "gaussian" else None  # the bandwidth
    loss = k(t, t, sigma2).mean() + k(s, s, sigma2).mean() - 2 * k(s, t, sigma2).mean()
    return _checks.finite_or_raise(loss, student_feat=student_feat, teacher_feat=teacher_feat)
