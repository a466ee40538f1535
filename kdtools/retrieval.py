r"""Metric learning on MNIST: embedding networks, a triplet loss with semi-hard mining, and Recall@K.

The setting of the RKD paper's main experiments (Park et al., CVPR 2019), in miniature: an embedding
network is trained on some classes (digits 0–4, :data:`SEEN_CLASSES`) and evaluated by nearest-neighbour
retrieval on classes it never saw (digits 5–9 of the test set, :data:`UNSEEN_CLASSES`), as CUB-200 and Cars
are split into training and test classes.

- :class:`EmbeddingNet`: a :class:`~kdtools.models.SmallCNN` backbone without its classifier, a linear
  projection to ``dim`` dimensions, and (by default) L2 normalisation.
- :func:`triplet_semihard_loss`: the triplet loss with FaceNet's semi-hard negatives.
- :func:`recall_at_k`: the retrieval metric of the metric-learning literature.
- :func:`train_embedding` / :func:`run_student_jobs`: train an embedding network (a teacher with the
  triplet loss, or a student with any weighted mix of triplet and RKD) and measure its Recall@K.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .losses import _checks, rkd_angle_loss, rkd_distance_loss
from .runtime import map_in_processes

__all__ = [
    "SEEN_CLASSES", "UNSEEN_CLASSES", "RECALL_KS", "TRIPLET_MARGIN", "EmbeddingNet",
    "pairwise_distances", "triplet_semihard_loss", "recall_at_k", "embed", "class_subset",
    "MetricArm", "MetricRun", "train_embedding", "run_student_jobs",
]

#: the classes embedding networks are trained on, and the disjoint classes retrieval is evaluated on
SEEN_CLASSES: Tuple[int, ...] = (0, 1, 2, 3, 4)
UNSEEN_CLASSES: Tuple[int, ...] = (5, 6, 7, 8, 9)
#: the K of Recall@K reported by the RKD paper (and most metric-learning papers)
RECALL_KS: Tuple[int, ...] = (1, 2, 4, 8)
#: the triplet margin of the RKD paper's teachers (on L2-normalised embeddings)
TRIPLET_MARGIN = 0.2


class EmbeddingNet(nn.Module):
    """An embedding network: a :class:`~kdtools.models.SmallCNN` backbone (its classifier removed), a
    linear ``projection`` to ``dim`` dimensions and, with ``normalize=True``, L2 normalisation.

    The RKD paper's embedding networks are built the same way (an ImageNet backbone, its pooled
    features, a linear embedding layer; the teacher's output L2-normalised). Hook points: ``backbone.
    embedding`` (the pooled backbone features) and ``projection`` (the embedding before normalisation).
    """

    def __init__(self, architecture: str = "cnn-4x1", dim: int = 64, normalize: bool = True):
        super().__init__()
        from .models import SmallCNN, build_model

        _checks.check_positive_int(dim, "dim")
        backbone = build_model(architecture)
        if not isinstance(backbone, SmallCNN):
            raise ValueError(f"architecture must name a SmallCNN (cnn-*), got {architecture!r}")
        features = backbone.head.in_features
        backbone.head = nn.Identity()
        self.architecture, self.dim, self.normalize = architecture, dim, normalize
        self.backbone = backbone
        self.projection = nn.Linear(features, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = self.projection(self.backbone(x))
        return F.normalize(embedding, dim=1) if self.normalize else embedding

    def extra_repr(self) -> str:
        return f"architecture={self.architecture!r}, dim={self.dim}, normalize={self.normalize}"


def _check_embeddings_and_labels(embeddings, labels, name: str = "embeddings") -> None:
    _checks.check_tensor(embeddings, name, "[N, D]", 2)
    _checks.check_integer_tensor(labels, "labels", "[N]", 1)
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"labels must have one entry per row of {name}: got labels of shape "
                         f"{tuple(labels.shape)} for {name} of shape {tuple(embeddings.shape)}")


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    r"""Euclidean distances ``[N, N]`` between the rows of ``embeddings`` ``[N, D]``,
    :math:`\sqrt{\max(\|e_i-e_j\|^2, 10^{-12})}` off the diagonal and exactly 0 on it (the clamp keeps the
    gradient finite for coinciding embeddings, as the RKD authors' ``pdist`` does)."""
    _checks.check_tensor(embeddings, "embeddings", "[N, D]", 2)
    centred = embeddings - embeddings.mean(0, keepdim=True)  # distances are translation invariant
    gram = centred @ centred.t()
    sq = gram.diagonal()
    squared = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * gram).clamp_min(1e-12)
    eye = torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
    return squared.sqrt().masked_fill(eye, 0.0)


def triplet_semihard_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = TRIPLET_MARGIN
                          ) -> torch.Tensor:
    r"""Triplet loss with semi-hard negative mining, averaged over all anchor–positive pairs of the batch.

    .. math::
        \mathcal L = \frac{1}{|P|}\sum_{(a,p)\in P} \max\big(0,\; d(a,p) - d(a,n^*(a,p)) + m\big)

    with :math:`P` the ordered pairs :math:`a \ne p` of the same label, :math:`d` the Euclidean
    distance and :math:`n^*(a,p)` the **semi-hard** negative: among the samples of another label
    farther from the anchor than the positive (:math:`d(a,n) > d(a,p)`), the closest one; if there is
    none, the farthest negative of all.

    Paper: F. Schroff, D. Kalenichenko, J. Philbin, "FaceNet: A Unified Embedding for Face Recognition
    and Clustering", CVPR 2015 (eq. 1 and §3.2, semi-hard negatives :math:`d(a,p) < d(a,n)`; the paper
    uses squared distances and picks negatives within the margin). This function follows TensorFlow's
    ``triplet_semihard_loss`` (Euclidean distances, the fallback to the farthest negative), the
    reference implementation most metric-learning code copies. The RKD paper trains its teachers with a
    triplet loss (margin 0.2 on L2-normalised embeddings) but samples triplets by distance-weighted sampling
    (Wu et al., 2017) instead.

    ``embeddings`` ``[B, D]``, ``labels`` ``[B]`` integer; the batch needs at least one pair of the same
    label and one sample of another label (``ValueError`` otherwise).
    """
    _check_embeddings_and_labels(embeddings, labels)
    margin = _checks.check_positive(margin, "margin", allow_zero=True)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive_pairs = same & ~eye
    if not positive_pairs.any():
        raise ValueError(f"triplet_semihard_loss needs two samples of one label in the batch, got labels "
                         f"{labels.tolist()[:20]}{' ...' if len(labels) > 20 else ''} (all distinct)")
    if same.all():
        raise ValueError(f"triplet_semihard_loss needs a sample of another label as a negative, got only "
                         f"label {int(labels[0])} in a batch of {len(labels)}")
    dist = pairwise_distances(embeddings)
    negative = ~same
    # [a, p, n]: is n a negative of a farther from a than p is?
    farther = negative.unsqueeze(1) & (dist.unsqueeze(1) > dist.unsqueeze(2))
    inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
    closest_farther = torch.where(farther, dist.unsqueeze(1), inf).amin(dim=2)
    farthest_negative = torch.where(negative, dist, -inf).amax(dim=1, keepdim=True).expand_as(dist)
    chosen = torch.where(farther.any(dim=2), closest_farther, farthest_negative)
    hinge = (dist - chosen + margin).clamp_min(0)
    loss = hinge[positive_pairs].mean()
    return _checks.finite_or_raise(loss, embeddings=embeddings)


@torch.no_grad()
def recall_at_k(embeddings: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = RECALL_KS,
                chunk: int = 1024) -> Dict[int, float]:
    r"""Recall@K in percent by nearest-neighbour retrieval within one set, for each K in ``ks``.

    .. math::
        \mathrm{R@K} = \frac{100}{N}\sum_{q=1}^{N}
            \mathbb 1\big[\exists\, j \in \mathrm{NN}_K(q) : y_j = y_q\big]

    where :math:`\mathrm{NN}_K(q)` are the K samples closest to query :math:`q` in Euclidean distance,
    the query itself excluded. Every sample is a query and the rest of the set is the gallery: the
    protocol of the RKD paper (and of Song et al., 2016, whose CUB-200 / Cars-196 splits it uses).
    Recall@1 is the leave-one-out accuracy of the 1-nearest-neighbour classifier.
    """
    _check_embeddings_and_labels(embeddings, labels)
    ks = sorted({_checks.check_positive_int(k, "ks entry") for k in ks})
    if not ks:
        raise ValueError("ks must hold at least one K")
    if ks[-1] >= len(labels):
        raise ValueError(f"every K must be smaller than the number of samples ({len(labels)}), got ks={ks}")
    emb = embeddings.double()
    sq = emb.pow(2).sum(1)
    hits = {k: 0 for k in ks}
    for start in range(0, len(labels), chunk):
        rows = slice(start, start + chunk)
        dist = sq[rows].unsqueeze(1) + sq.unsqueeze(0) - 2 * emb[rows] @ emb.t()
        dist[torch.arange(dist.shape[0]), torch.arange(start, start + dist.shape[0])] = float("inf")
        nearest = dist.topk(ks[-1], dim=1, largest=False).indices
        match = labels[nearest] == labels[rows].unsqueeze(1)
        for k in ks:
            hits[k] += int(match[:, :k].any(dim=1).sum())
    return {k: 100.0 * hits[k] / len(labels) for k in ks}


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """``model(images)`` in eval mode, in chunks, on the CPU."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        return torch.cat([model(images[i:i + chunk].to(device)).float().cpu()
                          for i in range(0, len(images), chunk)])
    finally:
        model.train(was_training)


def class_subset(data, classes: Sequence[int], per_class: Optional[int] = None, seed: int = 0):
    """The images of ``data`` (a :class:`~kdtools.data.TensorData`) whose label is in ``classes``, labels
    kept; ``per_class`` keeps a stratified random subset of that many images of each class."""
    from .data import stratified_subset

    classes = sorted(set(int(c) for c in classes))
    if not classes:
        raise ValueError("classes must name at least one class")
    keep = torch.isin(data.labels, torch.tensor(classes))
    if not keep.any():
        raise ValueError(f"no image has a label in classes={classes}")
    subset = data.subset(torch.nonzero(keep).flatten())
    if per_class is not None:
        subset = subset.subset(stratified_subset(subset.labels, per_class=per_class, seed=seed))
    return subset


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class MetricArm:
    """How an embedding network is trained: ``triplet·L_triplet + distance·L_RKD-D + angle·L_RKD-A``.

    A plain value, so it can be sent to worker processes. The RKD terms need a teacher; the paper's
    metric-learning weights are ``distance=1, angle=2`` (:data:`kdtools.losses.RKD_WEIGHTS`).
    """

    triplet: float = 0.0
    distance: float = 0.0
    angle: float = 0.0
    margin: float = TRIPLET_MARGIN

    def __post_init__(self):
        for name in ("triplet", "distance", "angle"):
            _checks.check_positive(getattr(self, name), name, allow_zero=True)
        if not (self.triplet or self.distance or self.angle):
            raise ValueError("a MetricArm needs at least one positive weight (triplet, distance or angle)")

    @property
    def uses_teacher(self) -> bool:
        return bool(self.distance or self.angle)

    def terms(self) -> Dict[str, tuple]:
        margin = self.margin
        terms = {}
        if self.triplet:
            terms["triplet"] = (self.triplet, lambda step: triplet_semihard_loss(step.student_logits, step.labels,
                                                                                  margin))
        if self.distance:
            terms["rkd-d"] = (self.distance, lambda step: rkd_distance_loss(step.student_logits, step.teacher_logits))
        if self.angle:
            terms["rkd-a"] = (self.angle, lambda step: rkd_angle_loss(step.student_logits, step.teacher_logits))
        return terms


@dataclass
class MetricRun:
    """A trained embedding network's Recall@K (%) on the evaluation set, and its per-epoch training losses."""

    recall: Dict[int, float]
    term_loss: Dict[str, List[float]]
    seconds: float


def train_embedding(model: nn.Module, arm: MetricArm, train_data, *, epochs: int, teacher: Optional[nn.Module] = None,
                    batch_size: int = 64, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
                    seed: int = 0, progress: bool = False):
    """Train ``model`` (an :class:`EmbeddingNet`) on ``train_data`` with ``arm``'s loss terms, with
    :func:`kdtools.train.fit` (SGD with Nesterov momentum, cosine schedule); the teacher's embeddings of the
    training images are computed once. Batches are shuffled by ``seed``; the last incomplete batch is
    dropped (the relational terms need whole batches). Returns :class:`~kdtools.train.History`."""
    from .data import TensorLoader
    from .train import fit

    if arm.uses_teacher and teacher is None:
        raise ValueError(f"arm {arm} has RKD terms: pass the teacher")
    loader = TensorLoader(train_data, batch_size, shuffle=True, seed=seed, drop_last=True)
    return fit(model, loader, None, epochs=epochs, terms=arm.terms(), teacher=teacher if arm.uses_teacher else None,
               lr=lr, momentum=momentum, weight_decay=weight_decay, schedule="cosine",
               cache_teacher_logits=arm.uses_teacher, seed=seed, progress=progress)


def _student_job(job) -> MetricRun:
    import time

    from . import zoo
    from .data import load_mnist
    from .runtime import seed_everything

    torch.set_num_threads(1)
    arm, dim, seed, setting = job
    start = time.perf_counter()
    train = class_subset(load_mnist(True), SEEN_CLASSES, setting.get("train_per_class"), setting.get("data_seed", 0))
    test = class_subset(load_mnist(False), UNSEEN_CLASSES, setting.get("test_per_class"), setting.get("data_seed", 0))
    teacher = zoo.load(setting["teacher"]) if arm.uses_teacher else None
    seed_everything(seed)
    student = EmbeddingNet(setting["student"], dim)
    history = train_embedding(student, arm, train, epochs=setting["epochs"], teacher=teacher, seed=seed)
    recall = recall_at_k(embed(student, test.images), test.labels)
    return MetricRun(recall, history.term_loss, time.perf_counter() - start)


def run_student_jobs(jobs: Sequence[Tuple[MetricArm, int, int, dict]], workers: int = 2) -> List[MetricRun]:
    """Train one embedding student per job ``(arm, dim, seed, setting)`` and return its :class:`MetricRun`,
    in the jobs' order, in ``workers`` processes (one thread each; every run seeds itself, so the results do
    not depend on ``workers``). ``setting``: ``teacher`` (zoo name), ``student`` (architecture), ``epochs``,
    and optionally ``train_per_class`` / ``test_per_class`` (stratified subsets of the seen training and the
    unseen test classes) and ``data_seed``."""
    jobs = [tuple(job) for job in jobs]
    for job in jobs:
        if len(job) != 4 or not isinstance(job[0], MetricArm):
            raise ValueError(f"each job must be (MetricArm, dim, seed, setting), got {job!r}")
    return map_in_processes(_student_job, jobs, workers)
