r"""Relation-based distillation: the student matches relations between layers or between samples.

FSP (flow between two layers, per sample) and RKD (distances and angles between the
samples of a batch). Teacher inputs are detached inside.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from . import _checks
from ._spatial import pool_to_common_size

__all__ = [
    "fsp_matrix", "fsp_loss",
    "rkd_distance_loss", "rkd_angle_loss", "rkd_loss", "RKD_WEIGHTS",
]


# --------------------------------------------------------------------------- FSP
def fsp_matrix(feat_a, feat_b):
    r"""Flow of Solution Procedure matrix between two feature maps of one network → ``[B, m, n]``.

    .. math::
        G_{ij} = \frac{1}{h\,w}\sum_{s=1}^{h}\sum_{t=1}^{w} F^{a}_{s,t,i}\,F^{b}_{s,t,j}

    with ``feat_a`` ``[B, m, h, w]`` (the first layer — its channels index the rows, as in the
    lecture) and ``feat_b`` ``[B, n, h, w]``. If the spatial sizes differ, the larger map is
    average-pooled to the smaller one (as RepDistiller does). Computed as one batched matrix
    product; RepDistiller builds the ``[B, n, m, hw]`` product and stores the transpose
    (second layer's channels first), which does not change :func:`fsp_loss`.
    """
    _checks.check_tensor(feat_a, "feat_a", "[B, C, H, W]", 4, finite=False)
    _checks.check_tensor(feat_b, "feat_b", "[B, C, H, W]", 4, finite=False)
    _checks.check_same_batch(feat_a, feat_b, "feat_a", "feat_b")
    pooled_a, pooled_b = pool_to_common_size(feat_a, feat_b)
    a = pooled_a.flatten(2)
    b = pooled_b.flatten(2)
    gram = torch.bmm(a, b.transpose(1, 2)) / a.shape[-1]
    return _checks.finite_or_raise(gram, feat_a=feat_a, feat_b=feat_b)


def _check_pairs(pairs, name: str) -> None:
    if not isinstance(pairs, (list, tuple)) or len(pairs) == 0:
        raise ValueError(f"{name} must be a non-empty list of (feat_a, feat_b) pairs, got {type(pairs).__name__}")
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"{name}[{i}] must be a (feat_a, feat_b) pair, got {type(pair).__name__}")


def fsp_loss(student_pairs, teacher_pairs, weights=None):
    r"""FSP loss: weighted squared difference of the student's and the teacher's FSP matrices.

    .. math::
        \mathcal{L}_{FSP} = \sum_{i=1}^{n}\lambda_i\,\frac{1}{B\,m_i n_i}
            \sum_{b}\big\|G^{S}_{i,b} - G^{T}_{i,b}\big\|_F^2

    ``student_pairs[i]`` and ``teacher_pairs[i]`` are ``(feat_a, feat_b)`` pairs whose FSP
    matrices (:func:`fsp_matrix`) must have the same shape (same channel counts); ``weights``
    (:math:`\lambda_i`, default all 1) must have one entry per pair.

    Paper: J. Yim, D. Joo, J. Bae, J. Kim, "A Gift from Knowledge Distillation: Fast
    Optimization, Network Minimization and Transfer Learning", CVPR 2017 (eq. 2). The paper sums
    the squared entries (:math:`\tfrac1N\sum_x\sum_i\lambda_i\|G^T_i-G^S_i\|_2^2`, equal
    :math:`\lambda_i`) and trains in **two stages** (FSP loss alone, then the task loss).
    RepDistiller takes the **mean** over entries per pair and sums the pairs (as here, with
    weights 1) and uses FSP as an initialisation stage before training with the task loss.
    """
    _check_pairs(student_pairs, "student_pairs")
    _check_pairs(teacher_pairs, "teacher_pairs")
    _checks.check_same_length(student_pairs, teacher_pairs, "student_pairs", "teacher_pairs")
    if weights is None:
        weights = [1.0] * len(student_pairs)
    if not isinstance(weights, Sequence):
        raise ValueError(f"weights must be a list of numbers, got {type(weights).__name__}")
    _checks.check_same_length(student_pairs, weights, "student_pairs", "weights")
    weights = [_checks.check_positive(w, f"weights[{i}]", allow_zero=True) for i, w in enumerate(weights)]

    total = 0.0
    for i, ((s_a, s_b), (t_a, t_b), w) in enumerate(zip(student_pairs, teacher_pairs, weights)):
        g_s = fsp_matrix(s_a, s_b)
        g_t = fsp_matrix(t_a.detach(), t_b.detach())
        if g_s.shape != g_t.shape:
            raise ValueError(
                f"FSP matrix shapes differ for pair {i}: student {tuple(g_s.shape)}, teacher {tuple(g_t.shape)} "
                "(batch and channel counts of student and teacher layers must match)"
            )
        total = total + w * (g_s - g_t).pow(2).mean()
    return total


# --------------------------------------------------------------------------- RKD
#: Loss weights of the RKD paper: classification (CIFAR-100 / Tiny ImageNet) and metric learning.
RKD_WEIGHTS = {
    "classification": {"distance_weight": 25.0, "angle_weight": 50.0},
    "metric_learning": {"distance_weight": 1.0, "angle_weight": 2.0},
}


def _check_embeddings(student_emb, teacher_emb, loss: str, why: str) -> None:
    """Both ``[B, D]`` with the same B, and B >= 3: fewer samples carry no relation (``why`` says which)."""
    _checks.check_tensor(student_emb, "student_emb", "[B, D]", 2, finite=False)
    _checks.check_tensor(teacher_emb, "teacher_emb", "[B, D]", 2, finite=False)
    _checks.check_same_batch(student_emb, teacher_emb, "student_emb", "teacher_emb")
    if student_emb.shape[0] < 3:
        raise ValueError(
            f"{loss} needs a batch of at least 3 samples ({why}), got student_emb with batch size "
            f"{student_emb.shape[0]} (shape {tuple(student_emb.shape)})"
        )


def _centred_gram(emb: torch.Tensor):
    """Gram matrix of the batch-centred embeddings and its diagonal (squared norms).

    Distances and angles are translation invariant; centring first keeps the
    ``|x|² + |y|² − 2x·y`` expansion from cancelling catastrophically when all embeddings
    share a large common offset.
    """
    centred = emb - emb.mean(0, keepdim=True)
    gram = centred @ centred.t()
    return gram, gram.diagonal()


def _squared_distances(gram: torch.Tensor, sq_norms: torch.Tensor) -> torch.Tensor:
    return (sq_norms.unsqueeze(1) + sq_norms.unsqueeze(0) - 2 * gram).clamp_min(0)


def _normalised_pairwise_distances(emb: torch.Tensor) -> torch.Tensor:
    """The authors' ``pdist`` — sqrt(max(d², 1e-12)), zero diagonal — divided by the mean of its positive entries."""
    eye = torch.eye(emb.shape[0], dtype=torch.bool, device=emb.device)
    dist = _squared_distances(*_centred_gram(emb)).clamp_min(1e-12).sqrt().masked_fill(eye, 0.0)
    positive = (dist > 0).sum()
    return dist / (dist.sum() / positive)


def rkd_distance_loss(student_emb, teacher_emb):
    r"""RKD distance-wise loss.

    .. math::
        \psi_D(t_i,t_j) = \frac{\|t_i-t_j\|_2}{\mu},\quad
        \mu = \frac{1}{|\{(i,j): d_{ij}>0\}|}\sum_{d_{ij}>0}\|t_i-t_j\|_2,\qquad
        \mathcal{L}_{RKD\text{-}D} = \frac{1}{B^2}\sum_{i,j} \ell_\delta\big(\psi_D(t_i,t_j),\psi_D(s_i,s_j)\big)

    with :math:`\ell_\delta` the Huber loss (``smooth_l1``, δ = 1). Embeddings ``[B, D]``;
    student and teacher ``D`` may differ.

    Paper: W. Park, D. Kim, Y. Lu, M. Cho, "Relational Knowledge Distillation", CVPR 2019
    (eq. 5–6). The paper normalises by the mean distance over the pairs of the mini-batch; the
    authors' code (and RepDistiller) divides by the mean of the **positive** entries of the
    distance matrix (the off-diagonal pairs; the diagonal zeros are excluded), clamps squared
    distances at 1e-12, and averages the Huber loss over all :math:`B^2` entries including the
    (zero) diagonal — as this function does. Weight 25 in classification, 1 in metric learning
    (:data:`RKD_WEIGHTS`).

    Needs B >= 3 (``ValueError`` otherwise): with two samples the one normalised distance is 1 for
    any embeddings, so the loss and its gradient would be 0.
    """
    _check_embeddings(student_emb, teacher_emb, "rkd_distance_loss",
                      "with 2 the one distance, divided by the mean distance, is always 1: the loss would be 0 "
                      "for any embeddings")
    with torch.no_grad():
        target = _normalised_pairwise_distances(teacher_emb.detach())
    loss = F.smooth_l1_loss(_normalised_pairwise_distances(student_emb), target)
    return _checks.finite_or_raise(loss, student_emb=student_emb, teacher_emb=teacher_emb)


def _triplet_cosines(emb: torch.Tensor) -> torch.Tensor:
    r"""``cos[i, j, k]`` = cosine of the angle at anchor ``i`` between ``e_j − e_i`` and ``e_k − e_i``.

    From the Gram matrix only (``[B, B]``, then ``[B, B, B]``), never ``[B, B, D]``:
    :math:`(e_j-e_i)\cdot(e_k-e_i) = G_{jk} - G_{ik} - G_{ij} + G_{ii}`, divided by the two
    lengths. Like ``F.normalize`` in the authors' code, a zero vector (``j == i`` or ``k == i``)
    gives cosine 0 and lengths are clamped at 1e-12.
    """
    gram, sq_norms = _centred_gram(emb)
    eye = torch.eye(emb.shape[0], dtype=torch.bool, device=emb.device)
    inv_len = torch.rsqrt(_squared_distances(gram, sq_norms).clamp_min(1e-24)).masked_fill(eye, 0.0)
    dots = (gram.unsqueeze(0) - gram.unsqueeze(1)) - (gram - sq_norms.unsqueeze(1)).unsqueeze(2)
    return dots * (inv_len.unsqueeze(2) * inv_len.unsqueeze(1))


def rkd_angle_loss(student_emb, teacher_emb):
    r"""RKD angle-wise loss.

    .. math::
        \psi_A(t_i,t_j,t_k) = \Big\langle \frac{t_j-t_i}{\|t_j-t_i\|_2},
                                          \frac{t_k-t_i}{\|t_k-t_i\|_2}\Big\rangle,\qquad
        \mathcal{L}_{RKD\text{-}A} = \frac{1}{B^3}\sum_{i,j,k}
            \ell_\delta\big(\psi_A(t_i,t_j,t_k),\psi_A(s_i,s_j,s_k)\big)

    Paper: W. Park, D. Kim, Y. Lu, M. Cho, "Relational Knowledge Distillation", CVPR 2019
    (eq. 7–8). The paper sums over triplets of distinct samples; the authors' code (and
    RepDistiller) averages ``smooth_l1`` over all :math:`B^3` index triples, where the degenerate
    ones (``j == i`` or ``k == i``: cosine 0; ``j == k``: cosine 1) agree between student and
    teacher and only dilute the mean — this function follows the code. Weight 50 in
    classification, 2 in metric learning (:data:`RKD_WEIGHTS`).

    Implementation: the reference builds the ``[B, B, D]`` tensor of difference vectors and a
    batched product (:math:`O(B^3 D)`); here the cosines come from the Gram matrix of the
    centred embeddings (:math:`O(B^2 D + B^3)`). The two agree to rounding except for exact
    duplicate embeddings in a batch (the reference gives cosine 0 for a zero difference, here
    rounding may leave a small nonzero length).

    Needs B >= 3 (``ValueError`` otherwise): two samples form no triplet of distinct samples, only
    degenerate ones whose cosines are the same for student and teacher, so the loss would be 0.
    """
    _check_embeddings(student_emb, teacher_emb, "rkd_angle_loss",
                      "an angle needs a triplet of distinct samples i, j, k; with 2 only degenerate triples exist "
                      "and the loss would be 0 for any embeddings")
    with torch.no_grad():
        target = _triplet_cosines(teacher_emb.detach())
    loss = F.smooth_l1_loss(_triplet_cosines(student_emb), target)
    return _checks.finite_or_raise(loss, student_emb=student_emb, teacher_emb=teacher_emb)


def rkd_loss(student_emb, teacher_emb, distance_weight=25.0, angle_weight=50.0):
    r"""RKD, both relational terms combined.

    .. math::
        \mathcal{L}_{RKD} = \lambda_D\,\mathcal{L}_{RKD\text{-}D} + \lambda_A\,\mathcal{L}_{RKD\text{-}A}

    Paper: W. Park, D. Kim, Y. Lu, M. Cho, "Relational Knowledge Distillation", CVPR 2019.
    Defaults λ_D = 25, λ_A = 50: the paper's weights for classification, also the defaults of
    RepDistiller's ``RKDLoss`` and mdistiller's config. For metric learning the paper uses
    λ_D = 1, λ_A = 2: ``rkd_loss(s, t, **RKD_WEIGHTS["metric_learning"])``.
    """
    distance_weight = _checks.check_positive(distance_weight, "distance_weight", allow_zero=True)
    angle_weight = _checks.check_positive(angle_weight, "angle_weight", allow_zero=True)
    return (distance_weight * rkd_distance_loss(student_emb, teacher_emb)
            + angle_weight * rkd_angle_loss(student_emb, teacher_emb))
