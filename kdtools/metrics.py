r"""Accuracy and calibration of a classifier's predictions: expected calibration error and reliability curves.

A classifier is *calibrated* when its confidence matches its accuracy: among the predictions made with
confidence 0.8, 80 % are right. Guo et al. (2017, *On calibration of modern neural networks*)
measure the gap by sorting the :math:`n` predictions into :math:`M` equal-width bins of confidence :math:`\hat p_i = \max_k p_{ik}`,
:math:`B_m = \{i : \hat p_i \in ((m-1)/M,\; m/M]\}`, and averaging the per-bin gap weighted by the bin's size:

.. math::

    \mathrm{ECE} = \sum_{m=1}^{M} \frac{|B_m|}{n}\,\big|\mathrm{acc}(B_m) - \mathrm{conf}(B_m)\big|,
    \qquad \mathrm{acc}(B_m) = \frac{1}{|B_m|}\sum_{i \in B_m} \mathbf{1}[\hat y_i = y_i],
    \quad \mathrm{conf}(B_m) = \frac{1}{|B_m|}\sum_{i \in B_m} \hat p_i .

The reliability diagram plots :math:`\mathrm{acc}(B_m)` against :math:`\mathrm{conf}(B_m)` (or the bin
centre); a calibrated model lies on the diagonal. Guo et al. use :math:`M = 15`, the default here.

Every function accepts probabilities or logits, as a torch tensor or a numpy array of shape ``[N, C]``,
with integer labels of shape ``[N]``. ``logits=None`` (the default) decides from the values: rows of
non-negative numbers that sum to 1 are probabilities, anything else is logits and goes through a
softmax. Pass ``logits=True`` or ``False`` to say which.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

__all__ = ["ReliabilityCurve", "accuracy", "bin_index", "confidence_and_correct", "expected_calibration_error",
           "reliability_curve", "to_probabilities"]

_SUM_TOLERANCE = 1e-3  # float32 softmax outputs sum to 1 within ~1e-6; logits essentially never do


def _as_2d_float(values, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    if tensor.dim() != 2 or tensor.shape[0] == 0 or tensor.shape[1] < 2:
        raise ValueError(f"{name} must have shape [N, C] with N >= 1 and C >= 2, got shape {tuple(tensor.shape)}")
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must hold real numbers, got dtype {tensor.dtype}")
    tensor = tensor.detach().cpu().double()
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite, got {int((~torch.isfinite(tensor)).sum())} nan or inf entries")
    return tensor


def _looks_like_probabilities(values: torch.Tensor) -> bool:
    return bool((values >= 0).all() and (values <= 1).all()
                and ((values.sum(dim=1) - 1).abs() <= _SUM_TOLERANCE).all())


def to_probabilities(probs_or_logits, logits: Optional[bool] = None) -> torch.Tensor:
    """Class probabilities ``[N, C]`` (float64, CPU) from probabilities or logits (see the module docstring)."""
    values = _as_2d_float(probs_or_logits, "probs_or_logits")
    if logits is None:
        logits = not _looks_like_probabilities(values)
    if logits:
        return torch.softmax(values, dim=1)
    if not _looks_like_probabilities(values):
        raise ValueError("logits=False but probs_or_logits is not a probability matrix: every entry must lie in "
                         f"[0, 1] and every row sum to 1 (row sums range from {values.sum(1).min().item():.4g} "
                         f"to {values.sum(1).max().item():.4g})")
    return values


def _labels(labels, n: int, num_classes: int) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if tensor.dim() != 1 or tensor.shape[0] != n:
        raise ValueError(f"labels must have shape [{n}] (one per row of probs_or_logits), got shape "
                         f"{tuple(tensor.shape)}")
    if tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {tensor.dtype}")
    tensor = tensor.detach().cpu().long()
    if bool((tensor < 0).any() or (tensor >= num_classes).any()):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got values from {int(tensor.min())} "
                         f"to {int(tensor.max())}")
    return tensor


def confidence_and_correct(probs_or_logits, labels, logits: Optional[bool] = None):
    r"""Per example: the confidence :math:`\hat p_i = \max_k p_{ik}` and whether the argmax is the label.

    Returns two float64 tensors of shape ``[N]`` (``correct`` holds 0.0 or 1.0).
    """
    probs = to_probabilities(probs_or_logits, logits)
    labels = _labels(labels, probs.shape[0], probs.shape[1])
    confidence, predicted = probs.max(dim=1)
    return confidence, (predicted == labels).double()


def accuracy(probs_or_logits, labels, logits: Optional[bool] = None) -> float:
    """Top-1 accuracy in percent (ties go to the lowest class index, as ``argmax`` does)."""
    _, correct = confidence_and_correct(probs_or_logits, labels, logits)
    return 100.0 * correct.mean().item()


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin statistics of a reliability diagram (arrays of length ``n_bins``; empty bins hold NaN).

    edges: the ``n_bins + 1`` bin edges from 0 to 1; bin ``m`` is ``(edges[m], edges[m + 1]]`` and the first
    bin also holds confidence 0. confidence / accuracy: mean confidence and fraction correct in the bin
    (accuracy as a fraction, not percent). count: examples per bin.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def centers(self) -> np.ndarray:
        return 0.5 * (self.edges[:-1] + self.edges[1:])

    @property
    def ece(self) -> float:
        """The expected calibration error of these bins, as a fraction in [0, 1]."""
        filled = self.count > 0
        weights = self.count[filled] / self.count.sum()
        return float(np.sum(weights * np.abs(self.accuracy[filled] - self.confidence[filled])))


def _check_n_bins(n_bins) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    return int(n_bins)


def bin_index(confidence: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin ``m`` (0-based) of each confidence with right-closed bins ``(m/M, (m+1)/M]`` as in Guo et al.;
    confidence 0 goes to the first bin and 1 to the last."""
    n_bins = _check_n_bins(n_bins)
    return (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)


def reliability_curve(probs_or_logits, labels, n_bins: int = 15, logits: Optional[bool] = None) -> ReliabilityCurve:
    """Mean confidence, accuracy and size of each of ``n_bins`` equal-width confidence bins (Guo et al., 2017)."""
    n_bins = _check_n_bins(n_bins)
    confidence, correct = confidence_and_correct(probs_or_logits, labels, logits)
    bins = bin_index(confidence, n_bins)
    count = torch.bincount(bins, minlength=n_bins).double()
    conf_sum = torch.bincount(bins, weights=confidence, minlength=n_bins)
    correct_sum = torch.bincount(bins, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = (conf_sum / count).numpy()  # 0 / 0 = nan marks an empty bin
        mean_acc = (correct_sum / count).numpy()
    return ReliabilityCurve(edges=np.linspace(0.0, 1.0, n_bins + 1), confidence=mean_conf, accuracy=mean_acc,
                            count=count.numpy().astype(np.int64))


def expected_calibration_error(probs_or_logits, labels, n_bins: int = 15, logits: Optional[bool] = None) -> float:
    r"""Expected calibration error of Guo et al. (2017), as a fraction in [0, 1] (multiply by 100 for percent).

    :math:`\mathrm{ECE} = \sum_m \frac{|B_m|}{n}\,|\mathrm{acc}(B_m) - \mathrm{conf}(B_m)|` over ``n_bins``
    equal-width, right-closed confidence bins; empty bins contribute nothing. 0 means perfectly calibrated
    (at this binning); a model that is always 100 % confident and right half the time has ECE 0.5.
    """
    return reliability_curve(probs_or_logits, labels, n_bins, logits).ece


# --------------------------------------------------------------------------- similarity of representations
def linear_cka(features_x, features_y) -> float:
    r"""Linear centered kernel alignment (Kornblith et al., 2019, *Similarity of neural network
    representations revisited*) between two representations of the same :math:`n` examples.

    Each input is ``[n, ...]`` (a feature map ``[n, C, H, W]`` is flattened to ``[n, C·H·W]``); with
    :math:`X` and :math:`Y` centred over the examples,

    .. math::
        \mathrm{CKA}(X, Y) = \frac{\|Y^\top X\|_F^2}{\|X^\top X\|_F\,\|Y^\top Y\|_F} \in [0, 1].

    It is 1 for identical representations, invariant to rotations and isotropic scaling of either, and the
    two may have different widths. It is **not** invariant to an arbitrary invertible linear map, so a
    representation and its image under a regressor generally differ. Computed in float64.
    """
    x, y = (_as_feature_matrix(v, name) for v, name in ((features_x, "features_x"), (features_y, "features_y")))
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"features_x and features_y must describe the same examples, got {x.shape[0]} and "
                         f"{y.shape[0]} rows (shapes {tuple(x.shape)} and {tuple(y.shape)})")
    x, y = x - x.mean(0, keepdim=True), y - y.mean(0, keepdim=True)
    denominator = _self_similarity(x) * _self_similarity(y)
    if not denominator > 0:
        raise ValueError("features_x or features_y is constant over the examples: CKA is undefined")
    return float(torch.linalg.matrix_norm(y.T @ x) ** 2 / denominator)


def _self_similarity(x: torch.Tensor) -> torch.Tensor:
    # ‖XᵀX‖_F = ‖XXᵀ‖_F: build the smaller of the two Gram matrices (wide feature maps, few examples)
    return torch.linalg.matrix_norm(x.T @ x if x.shape[1] <= x.shape[0] else x @ x.T)


def _as_feature_matrix(values, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values.detach())
    if tensor.dim() < 2 or tensor.shape[0] < 2:
        raise ValueError(f"{name} must have shape [n, ...] with n >= 2 examples, got shape {tuple(tensor.shape)}")
    tensor = tensor.cpu().double().flatten(1)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains nan or inf values")
    return tensor


__all__ += ["linear_cka"]
