r"""Data-free distillation: losses that make a frozen teacher describe its own training data.

Nothing here sees a real image. DeepInversion (Yin et al., CVPR 2020) optimises pixels so that the
statistics of the teacher's BatchNorm inputs match the running statistics stored in the teacher, under
image priors; DAFL (Chen et al., ICCV 2019) trains a generator whose samples the teacher classifies
confidently, with strong activations and a balanced class histogram.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks

__all__ = ["batch_statistics", "deepinversion_bn_loss", "total_variation", "image_prior_loss",
           "dafl_losses", "DAFL_WEIGHTS", "IMAGE_PRIOR_WEIGHTS"]


def batch_statistics(features: torch.Tensor):
    r"""Per-channel mean and *biased* variance of a ``[B, C, ...]`` feature map over every axis but ``C``."""
    dims = [0] + list(range(2, features.dim()))
    return features.mean(dims), features.var(dims, unbiased=False)


def deepinversion_bn_loss(features: Sequence[torch.Tensor], bn_modules: Sequence[nn.Module],
                          layer_weights: Sequence[float] | None = None) -> torch.Tensor:
    r"""DeepInversion's feature-statistics regulariser.

    .. math::
        \mathcal{R}_{BN}(\hat x) = \sum_{l} w_l \Big(\big\lVert \mu_l(\hat x) - \mu^{BN}_l \big\rVert_2
            + \big\lVert \sigma^2_l(\hat x) - \sigma^{2,BN}_l \big\rVert_2\Big)

    where :math:`\mu_l, \sigma^2_l` are the per-channel mean and variance of the *input* of BatchNorm
    layer :math:`l` over the batch and spatial positions, and :math:`\mu^{BN}_l, \sigma^{2,BN}_l` its running
    statistics (what the teacher saw in training).

    Paper: H. Yin et al., "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion", CVPR 2020,
    eq. (3). The paper writes the two norms; the authors' ``DeepInversionFeatureHook``
    (NVlabs/DeepInversion) computes exactly this: the variance is the *biased* one
    (``var(1, unbiased=False)``), the norms are plain (not squared) L2 norms, and the layers are summed,
    the first one weighted ``first_bn_multiplier = 10`` in their ImageNet script (pass ``layer_weights``
    for that; default all 1).

    Args:
        features: one ``[B, C, ...]`` tensor per BN layer, the layer's input (hook ``bn`` with a forward
            pre-hook, or read the output of the conv before it), ``B >= 2``.
        bn_modules: the matching ``nn.BatchNorm*`` layers (with running statistics).
        layer_weights: optional weight per layer.
    """
    features, bn_modules = list(features), list(bn_modules)
    _checks.check_same_length(features, bn_modules, "features", "bn_modules")
    if not features:
        raise ValueError("features must hold at least one feature map, got an empty list")
    if layer_weights is None:
        layer_weights = [1.0] * len(features)
    layer_weights = list(layer_weights)
    _checks.check_same_length(layer_weights, features, "layer_weights", "features")
    total = 0.0
    for i, (x, bn) in enumerate(zip(features, bn_modules)):
        _checks.check_tensor(x, f"features[{i}]", "[B, C, ...]")
        if x.dim() < 2 or x.shape[0] < 2:
            raise ValueError(f"features[{i}] must be a [B, C, ...] tensor with B >= 2 (a variance needs two "
                             f"samples), got shape {tuple(x.shape)}")
        running_mean = getattr(bn, "running_mean", None)
        running_var = getattr(bn, "running_var", None)
        if running_mean is None or running_var is None:
            raise ValueError(f"bn_modules[{i}] must be a BatchNorm layer with running statistics, got "
                             f"{type(bn).__name__}")
        if running_mean.numel() != x.shape[1]:
            raise ValueError(f"features[{i}] has {x.shape[1]} channels but bn_modules[{i}] tracks "
                             f"{running_mean.numel()}; shapes {tuple(x.shape)} vs {tuple(running_mean.shape)}")
        mean, var = batch_statistics(x)
        total = total + layer_weights[i] * (torch.linalg.vector_norm(running_var.detach().to(var) - var)
                                            + torch.linalg.vector_norm(running_mean.detach().to(mean) - mean))
    return total


def total_variation(images: torch.Tensor):
    r"""The authors' total variation of ``[B, C, H, W]`` images: differences to the right, down and
    the two diagonal neighbours; returns ``(tv_l1, tv_l2)``.

    ``tv_l2`` is the sum over the four directions of the L2 norm of all differences (not squared, over
    the whole batch); ``tv_l1`` is the sum over directions of the mean absolute difference
    (``get_image_prior_losses`` in NVlabs/DeepInversion, whose ``/255 ... *255`` cancels).
    """
    _checks.check_tensor(images, "images", "[B, C, H, W]", ndim=4)
    if images.shape[2] < 2 or images.shape[3] < 2:
        raise ValueError(f"images must be at least 2x2 to have neighbours, got shape {tuple(images.shape)}")
    diffs = (images[:, :, :, :-1] - images[:, :, :, 1:],
             images[:, :, :-1, :] - images[:, :, 1:, :],
             images[:, :, 1:, :-1] - images[:, :, :-1, 1:],
             images[:, :, :-1, :-1] - images[:, :, 1:, 1:])
    tv_l1 = sum(d.abs().mean() for d in diffs)
    tv_l2 = sum(torch.linalg.vector_norm(d) for d in diffs)
    return tv_l1, tv_l2


#: weights of the priors in DeepInversion's ImageNet script (``--tv_l1 0 --tv_l2 1e-4 --l2 1e-5``)
IMAGE_PRIOR_WEIGHTS = {"tv_l1": 0.0, "tv_l2": 1e-4, "l2": 1e-5}


def image_prior_loss(images: torch.Tensor, tv_l1: float = IMAGE_PRIOR_WEIGHTS["tv_l1"],
                     tv_l2: float = IMAGE_PRIOR_WEIGHTS["tv_l2"], l2: float = IMAGE_PRIOR_WEIGHTS["l2"]):
    r"""DeepInversion's image prior.

    .. math::
        \mathcal{R}_{prior}(\hat x) = \alpha_{tv,1}TV_1(\hat x) + \alpha_{tv,2}TV_2(\hat x)
            + \alpha_{\ell_2}\,\frac1B\sum_b\lVert \hat x_b\rVert_2

    Paper: Yin et al. (2020), eq. (2) (total variation and the L2 norm of the image, from Mahendran &
    Vedaldi's inversion). Code: ``get_image_prior_losses`` plus ``loss_l2 = norm(inputs.view(B, -1),
    dim=1).mean()``; the default weights are their ImageNet script's (``tv_l1=0, tv_l2=1e-4, l2=1e-5``),
    which were tuned for 224x224 images in [0, 1]-normalised ImageNet space; pass your own for MNIST.
    See :func:`total_variation` for the two TV variants.
    """
    for name, w in (("tv_l1", tv_l1), ("tv_l2", tv_l2), ("l2", l2)):
        _checks.check_positive(w, name, allow_zero=True)
    var_l1, var_l2 = total_variation(images)
    norm = torch.linalg.vector_norm(images.flatten(1), dim=1).mean()
    return tv_l1 * var_l1 + tv_l2 * var_l2 + l2 * norm


#: DAFL's MNIST weights (``--oh 1 --ie 5 --a 0.1`` in DAFL_train.py)
DAFL_WEIGHTS = {"one_hot": 1.0, "information_entropy": 5.0, "activation": 0.1}


def dafl_losses(teacher_logits: torch.Tensor, teacher_features: torch.Tensor) -> Dict[str, torch.Tensor]:
    r"""The three losses with which DAFL trains its generator against a frozen teacher.

    .. math::
        \mathcal{L}_{oh} = \frac1B\sum_b \mathrm{CE}\big(z^t_b, \arg\max_c z^t_{b,c}\big),\qquad
        \mathcal{L}_{a} = -\frac1{B\,D}\sum_b \lVert f^t_b\rVert_1,\qquad
        \mathcal{L}_{ie} = -H_{10}\Big(\frac1B\sum_b \mathrm{softmax}(z^t_b)\Big)

    One-hot: the teacher should be confident on generated images (its own argmax as label). Activation:
    strong features (real images excite the teacher's filters). Information entropy: the *batch-mean*
    prediction should be uniform, so every class is generated. Weighted sum
    :math:`\mathcal{L}_{oh} + 5\,\mathcal{L}_{ie} + 0.1\,\mathcal{L}_{a}` on MNIST (:data:`DAFL_WEIGHTS`).

    Paper: H. Chen et al., "DAFL: Data-Free Learning of Student Networks", ICCV 2019, eqs. (3)-(6).
    Where the authors' code (huawei-noah, ``DAFL_train.py``) differs from the paper: the activation loss
    is ``-features.abs().mean()``, the mean over batch *and* feature dimensions (the paper's
    :math:`-\frac1n\sum\lVert f\rVert_1` sums over the features), and the entropy uses ``log10``
    (the paper's :math:`H` is unspecified, natural log); both only rescale the terms, and this function
    follows the code.

    Args:
        teacher_logits: ``[B, C]``, gradients flow (the generator is trained through them).
        teacher_features: ``[B, D]`` (or ``[B, ...]``, flattened) features before the teacher's head.
    Returns ``{"one_hot", "activation", "information_entropy"}``, each a scalar.
    """
    _checks.check_tensor(teacher_logits, "teacher_logits", "[B, C]", ndim=2)
    _checks.check_tensor(teacher_features, "teacher_features", "[B, ...]")
    if teacher_features.dim() < 2:
        raise ValueError(f"teacher_features must be a [B, D] tensor, got shape {tuple(teacher_features.shape)}")
    _checks.check_same_batch(teacher_logits, teacher_features, "teacher_logits", "teacher_features")
    pseudo_labels = teacher_logits.detach().argmax(dim=1)
    mean_probs = F.softmax(teacher_logits, dim=1).mean(dim=0)
    return {
        "one_hot": F.cross_entropy(teacher_logits, pseudo_labels),
        "activation": -teacher_features.abs().mean(),
        "information_entropy": (mean_probs * torch.log(mean_probs) / math.log(10)).sum(),
    }
