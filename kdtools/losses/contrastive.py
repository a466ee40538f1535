r"""Contrastive distillation: CRD's NCE objective, its memory-bank module and a queue variant.

Embeddings are ``[B, D]`` (higher-rank features are flattened). Everything is created on the
device/dtype of the inputs or of the module's buffers; nothing is hard-coded to CUDA.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks
from ..distributed import all_reduce_sum, gather_rows, is_distributed, row_offset

__all__ = ["crd_nce_loss", "CRDLoss", "CRDQueueLoss"]

#: the constant the authors add to every denominator of the NCE terms
_NCE_EPS = 1e-7


def crd_nce_loss(scores, n_data):
    r"""The NCE objective of CRD (eq. 18) on ``[B, K+1]`` scores, positive pair in column 0.

    With :math:`P_0` the positive score, :math:`P_k` (k = 1..K) the negatives' and the uniform
    noise distribution :math:`P_n = 1/M` (:math:`M` = ``n_data``):

    .. math::
        \mathcal{L}_{NCE} = -\frac{1}{B}\sum_{b}\Big[\log\frac{P_{b,0}}{P_{b,0} + K P_n + \epsilon}
            + \sum_{k=1}^{K}\log\frac{K P_n}{P_{b,k} + K P_n + \epsilon}\Big],\quad \epsilon = 10^{-7}

    Paper: Y. Tian, D. Krishnan, P. Isola, "Contrastive Representation Distillation", ICLR 2020.
    Eq. 18 writes the critic :math:`h(T,S)=\frac{e^{g_T(t)'g_S(s)/\tau}}{e^{g_T(t)'g_S(s)/\tau}+N/M}`;
    the authors' code (``ContrastLoss`` in RepDistiller) feeds scores
    :math:`P=e^{v\cdot m/\tau}/Z` normalised by a constant :math:`Z` estimated once on the first
    batch (:class:`CRDLoss`), uses the constant noise :math:`P_n = 1/n_{data}`, and adds
    :math:`\epsilon`; this function is that code's formula.

    Args:
        scores: ``[B, K+1]`` positive scores (K >= 1).
        n_data: the number of training samples :math:`M`.
    """
    _checks.check_tensor(scores, "scores", "[B, K+1]", 2)
    if scores.shape[1] < 2:
        raise ValueError(
            f"scores must have the positive plus at least one negative column, got shape {tuple(scores.shape)}"
        )
    smallest = float(scores.detach().min())
    if smallest <= 0:
        raise ValueError(f"scores must be positive (exp(v.m/T)/Z), got min {smallest}")
    n_data = _checks.check_positive_int(n_data, "n_data")
    noise = (scores.shape[1] - 1) / n_data  # K * Pn
    log_d1 = torch.log(scores[:, 0] / (scores[:, 0] + noise + _NCE_EPS))
    log_d0 = torch.log(noise / (scores[:, 1:] + noise + _NCE_EPS))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


class _EmbedHead(nn.Module):
    """Linear projection followed by L2 normalisation (CRD's ``Embed``)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x):
        return F.normalize(self.linear(x.flatten(1)), dim=1)


def _check_features(student_feat, teacher_feat, student_dim, teacher_dim):
    for feat, name, dim in ((student_feat, "student_feat", student_dim), (teacher_feat, "teacher_feat", teacher_dim)):
        _checks.check_tensor(feat, name, "[B, D]")
        if feat.dim() < 2 or feat[0].numel() != dim:
            raise ValueError(f"{name} must be [B, {dim}] (or flatten to it), got shape {tuple(feat.shape)}")
    _checks.check_same_batch(student_feat, teacher_feat, "student_feat", "teacher_feat")


class CRDLoss(nn.Module):
    r"""Contrastive Representation Distillation with two momentum memory banks.

    Student and teacher features are projected by linear heads to ``feat_dim`` and
    L2-normalised (:math:`v^s, v^t`). Two memory banks ``[n_data, feat_dim]`` hold one
    embedding per training sample: ``memory_student`` (past :math:`v^s`) and ``memory_teacher``
    (past :math:`v^t`). For each sample, ``n_negatives`` indices are drawn, column 0 holding
    the sample's own index, and

    .. math::
        P^{s}_{b,k} = \frac{\exp(v^s_b\cdot m^{t}_{j_{b,k}}/\tau)}{Z_s},\qquad
        P^{t}_{b,k} = \frac{\exp(v^t_b\cdot m^{s}_{j_{b,k}}/\tau)}{Z_t},\qquad
        \mathcal{L} = \mathcal{L}_{NCE}(P^{s}) + \mathcal{L}_{NCE}(P^{t})

    (:func:`crd_nce_loss`): the student is the anchor with positives/negatives from the teacher
    bank, and symmetrically. After the scores, each bank row of the batch is updated
    :math:`m_i \leftarrow \mathrm{normalize}(\mu\,m_i + (1-\mu)\,v_i)`.

    Paper: Y. Tian, D. Krishnan, P. Isola, "Contrastive Representation Distillation", ICLR 2020.
    Authors' defaults (RepDistiller): ``feat_dim=128``, ``nce_k=16384`` negatives (here 4096 by
    default, for laptop memory), τ = 0.07, momentum 0.5, loss weight β = 0.8 (mdistiller: the same).

    Where the authors' code differs from the paper: the scores are normalised by constants
    :math:`Z = \overline{\exp(\cdot)}\cdot n_{data}` fixed on the first batch (buffers
    ``z_student``/``z_teacher``, -1 until set), the noise is the constant :math:`1/n_{data}`, the
    critic compares with momentum-averaged bank entries rather than the current network's
    embeddings, both directions are summed, and the memory banks start as uniform noise in
    :math:`[-\sqrt{3/d}, \sqrt{3/d}]` (not normalised). When ``contrast_index`` is not given the
    negatives are drawn uniformly over the data set per sample (the memory's own fallback sampler,
    so a negative may coincide with the positive); RepDistiller's CIFAR data loader (``mode="exact"``)
    instead passes ``contrast_index`` with negatives drawn from other classes only. The teacher's
    features are detached, but its projection head is trained, as in the paper.

    Distributed training (``torchrun``, :mod:`kdtools.distributed`): each rank holds a full copy of both banks
    and sees its slice of the global batch. The batch's indices and detached embeddings are all-gathered, so
    every rank writes every rank's rows and the copies stay equal; the negatives are drawn for the gathered
    global batch with the same random draw on every rank (each keeps its rows) and Z from the scores of all
    ranks, so the run equals one process with the whole batch (tested with two Gloo processes).

    Args:
        student_dim, teacher_dim: feature sizes (features are flattened to ``[B, dim]``).
        n_data: number of training samples (rows of the memory banks; ``index`` values).
    """

    def __init__(self, student_dim, teacher_dim, n_data, feat_dim=128, n_negatives=4096,
                 temperature=0.07, momentum=0.5):
        super().__init__()
        self.student_dim = _checks.check_positive_int(student_dim, "student_dim")
        self.teacher_dim = _checks.check_positive_int(teacher_dim, "teacher_dim")
        self.n_data = _checks.check_positive_int(n_data, "n_data")
        self.feat_dim = _checks.check_positive_int(feat_dim, "feat_dim")
        self.n_negatives = _checks.check_positive_int(n_negatives, "n_negatives")
        self.temperature = _checks.check_positive(temperature, "temperature")
        self.momentum = _checks.check_positive(momentum, "momentum", allow_zero=True)
        if self.momentum >= 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        self.embed_student = _EmbedHead(student_dim, feat_dim)
        self.embed_teacher = _EmbedHead(teacher_dim, feat_dim)
        bound = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("memory_student", torch.rand(n_data, feat_dim) * (2 * bound) - bound)
        self.register_buffer("memory_teacher", torch.rand(n_data, feat_dim) * (2 * bound) - bound)
        self.register_buffer("z_student", torch.tensor(-1.0))
        self.register_buffer("z_teacher", torch.tensor(-1.0))

    def sample_contrast_index(self, index: torch.Tensor) -> torch.Tensor:
        """``[B, n_negatives + 1]`` indices: column 0 = ``index``, the rest uniform over ``[0, n_data)``, per sample."""
        contrast = torch.randint(0, self.n_data, (index.shape[0], self.n_negatives + 1), device=index.device)
        contrast[:, 0] = index
        return contrast

    def _check_indices(self, index, contrast_index, batch):
        _checks.check_integer_tensor(index, "index", "[B]", 1)
        if index.shape[0] != batch:
            raise ValueError(f"batch sizes differ: index has {index.shape[0]} entries, the features have {batch} rows")
        _checks.check_index_range(index, "index", self.n_data)
        if contrast_index is None:
            return
        _checks.check_integer_tensor(contrast_index, "contrast_index", "[B, K+1]", 2)
        if contrast_index.shape[0] != batch or contrast_index.shape[1] < 2:
            raise ValueError(
                f"contrast_index must be [B={batch}, K+1] with K >= 1, got shape {tuple(contrast_index.shape)}"
            )
        _checks.check_index_range(contrast_index, "contrast_index", self.n_data)
        if not bool((contrast_index[:, 0] == index).all()):
            raise ValueError("contrast_index[:, 0] must equal index (the positive is column 0)")

    def _scores(self, anchor, memory, contrast_index, z_buffer):
        if contrast_index.numel() >= memory.shape[0]:
            # as many sampled entries as bank rows (small data sets): one matrix product with the whole bank,
            # then pick the sampled columns. The same numbers as the gathered product below, but on a CPU
            # torch.bmm with a single output column is ~20 times slower (B = 64, K = 328, n_data = 1,000)
            # a copy: the bank is updated in place after the scores, and autograd still needs these values
            dots = (anchor @ memory.to(anchor.dtype, copy=True).t()).gather(1, contrast_index)
        else:
            bank = memory[contrast_index].to(anchor.dtype)  # [B, K+1, feat_dim], a constant
            dots = torch.bmm(bank, anchor.unsqueeze(2)).squeeze(2)
        scores = torch.exp(dots / self.temperature)
        if float(z_buffer) < 0 and not is_distributed():  # the authors fix Z on the first batch
            z_buffer.fill_(float(scores.detach().mean()) * self.n_data)
        elif float(z_buffer) < 0:  # ... the global first batch: every rank's scores
            moments = all_reduce_sum(torch.stack([scores.detach().sum().double(),
                                                  torch.tensor(float(scores.numel()), dtype=torch.float64,
                                                               device=scores.device)]))
            z_buffer.fill_(float(moments[0] / moments[1]) * self.n_data)
        return scores / z_buffer.to(anchor.dtype)

    @torch.no_grad()
    def _update_memory(self, memory, index, embeddings):
        mixed = memory[index] * self.momentum + embeddings.detach().to(memory.dtype) * (1 - self.momentum)
        memory.index_copy_(0, index, F.normalize(mixed, dim=1))

    def forward(self, student_feat, teacher_feat, index, contrast_index=None):
        """``index``: ``[B]`` data-set indices of the batch; ``contrast_index``: optional ``[B, K+1]``."""
        _check_features(student_feat, teacher_feat, self.student_dim, self.teacher_dim)
        self._check_indices(index, contrast_index, student_feat.shape[0])
        index = index.long()
        # in a process group every rank sees its slice of the global batch; the banks stay one global bank:
        # negatives are drawn for the gathered global batch (the same draw on every rank) and every rank writes
        # every rank's rows, so the banks equal those of one process with the whole batch
        global_index = gather_rows(index)
        if contrast_index is None:
            offset = row_offset(index.shape[0], index.device)
            contrast_index = self.sample_contrast_index(global_index)[offset:offset + index.shape[0]]
        else:
            contrast_index = contrast_index.long()
        v_s = self.embed_student(student_feat)
        v_t = self.embed_teacher(teacher_feat.detach())
        scores_s = self._scores(v_s, self.memory_teacher, contrast_index, self.z_student)
        scores_t = self._scores(v_t, self.memory_student, contrast_index, self.z_teacher)
        self._update_memory(self.memory_student, global_index, gather_rows(v_s.detach()))
        self._update_memory(self.memory_teacher, global_index, gather_rows(v_t.detach()))
        return crd_nce_loss(scores_s, self.n_data) + crd_nce_loss(scores_t, self.n_data)


class CRDQueueLoss(nn.Module):
    r"""Queue variant of CRD for data sets too large for a full memory bank.

    Instead of ``[n_data, feat_dim]`` banks, a fixed-size FIFO ``queue`` ``[queue_size, feat_dim]``
    holds the most recent teacher embeddings (MoCo-style; K. He et al., "Momentum Contrast for
    Unsupervised Visual Representation Learning", CVPR 2020). The student embedding is the anchor,
    the teacher embedding of the same input the positive, the queue the negatives:

    .. math::
        \mathcal{L} = -\frac{1}{B}\sum_b \log
            \frac{\exp(v^s_b\cdot v^t_b/\tau)}{\exp(v^s_b\cdot v^t_b/\tau) + \sum_{k=1}^{K}\exp(v^s_b\cdot q_k/\tau)}

    after which the batch's teacher embeddings (detached) replace the oldest queue entries.
    This is the InfoNCE form (softmax over the positive and K negatives) used with queues, not
    the NCE of :func:`crd_nce_loss`, which needs the data-set size for its noise constant.
    Not part of the CRD authors' code: a course-side variant.
    Only the student→teacher direction is used. The queue starts with random unit vectors.
    Queue entries come from older versions of the (trained) teacher head, i.e. they are stale
    by up to ``queue_size / B`` steps.
    """

    def __init__(self, student_dim, teacher_dim, feat_dim=128, queue_size=16384, temperature=0.07):
        super().__init__()
        self.student_dim = _checks.check_positive_int(student_dim, "student_dim")
        self.teacher_dim = _checks.check_positive_int(teacher_dim, "teacher_dim")
        self.feat_dim = _checks.check_positive_int(feat_dim, "feat_dim")
        self.queue_size = _checks.check_positive_int(queue_size, "queue_size")
        self.temperature = _checks.check_positive(temperature, "temperature")
        self.embed_student = _EmbedHead(student_dim, feat_dim)
        self.embed_teacher = _EmbedHead(teacher_dim, feat_dim)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, feat_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, embeddings: torch.Tensor) -> None:
        """Write ``embeddings`` ``[n, feat_dim]`` over the oldest entries (FIFO, wrapping around)."""
        embeddings = embeddings.detach()[-self.queue_size:]
        slots = (self.queue_ptr + torch.arange(embeddings.shape[0], device=self.queue.device)) % self.queue_size
        self.queue[slots] = embeddings.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + embeddings.shape[0]) % self.queue_size)

    def forward(self, student_feat, teacher_feat):
        _check_features(student_feat, teacher_feat, self.student_dim, self.teacher_dim)
        v_s = self.embed_student(student_feat)
        v_t = self.embed_teacher(teacher_feat.detach())
        positive = (v_s * v_t).sum(1, keepdim=True)
        # a copy: the queue is overwritten below but autograd still needs these values
        negatives = v_s @ self.queue.to(v_s.dtype, copy=True).t()
        logits = torch.cat([positive, negatives], dim=1) / self.temperature
        loss = -F.log_softmax(logits, dim=1)[:, 0].mean()
        self.enqueue(v_t)
        return loss
