r"""Deep mutual learning (Zhang, Xiang, Hospedales and Lu, CVPR 2018): peers that teach each other from scratch.

A cohort of :math:`K` networks trains on the same batches; peer :math:`k` minimises

.. math::
    \mathcal L_k = \mathrm{CE}\big(y, p_k\big) + \frac{1}{K-1}\sum_{l \ne k} \mathrm{KL}\big(p_l \,\|\, p_k\big),

with :math:`p = \mathrm{softmax}(z)` (the paper's :math:`T = 1`; the KL term is
:func:`kdtools.losses.dml_loss`, the peer's prediction a constant). Nobody is pre-trained: the targets are the
other peers' current predictions.

**Update order.** The paper's Algorithm 1 updates the peers one after the other within a batch, recomputing the
predictions after each update. :func:`cohort_losses` and :func:`train_cohort` update every peer from *one* forward
pass, each against the others' detached predictions of that pass (the simultaneous variant), which costs one
forward pass per peer and batch instead of :math:`K` and makes the result independent of the peers' order.
``mutual=False`` trains the same cohort with the KL terms switched off: :math:`K` independent networks on the same
batches, the paper's baseline.

Diagnostics per epoch on the test set (:class:`CohortHistory`): each peer's accuracy, the ensemble's (the mean of
the peers' probabilities), the share of images on which two peers' predicted classes differ (averaged over pairs),
the mean KL between peers, and the mean entropy of the peers' predictions (the paper argues DML finds wider minima
with higher-entropy, less over-confident predictions).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..data import TensorData, TensorLoader
from ..losses import dml_loss
from ..models import build_model
from ..runtime import map_in_processes, seed_everything
from ..train import History

__all__ = ["cohort_losses", "CohortHistory", "train_cohort", "cohort_diagnostics", "run_cohort_jobs"]


def _check_logits(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise ValueError(f"logits must be [K, B, C] (the K peers' logits for one batch), got "
                         f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
    if logits.shape[0] < 1:
        raise ValueError("logits must hold at least one peer, got K = 0")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[1]:
        raise ValueError(f"labels must be [B] with B = {logits.shape[1]}, got shape {tuple(labels.shape)}")


def cohort_losses(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                  mutual: bool = True) -> torch.Tensor:
    r"""Every peer's loss :math:`\mathcal L_k = \mathrm{CE}(y, p_k) + \frac{1}{K-1}\sum_{l\ne k}
    \mathrm{KL}(p_l \| p_k)` for one batch, shape ``[K]``; ``logits`` ``[K, B, C]``, ``labels`` ``[B]``.

    Peer :math:`l`'s prediction is a constant in peer :math:`k`'s loss (:func:`~kdtools.losses.dml_loss` detaches
    it), so ``cohort_losses(...).sum()`` back-propagates each loss into its own peer only. A cohort of one, or
    ``mutual=False``, leaves the cross-entropies alone.
    """
    _check_logits(logits, labels)
    k = logits.shape[0]
    losses = []
    for i in range(k):
        loss = F.cross_entropy(logits[i], labels)
        if mutual and k > 1:
            loss = loss + sum(dml_loss(logits[i], logits[j], temperature) for j in range(k) if j != i) / (k - 1)
        losses.append(loss)
    return torch.stack(losses)


@dataclass
class CohortHistory:
    """Per-epoch test diagnostics of a cohort (accuracies in percent)."""

    peer_acc: List[List[float]] = field(default_factory=list)  # [peer][epoch]
    ensemble_acc: List[float] = field(default_factory=list)
    disagreement: List[float] = field(default_factory=list)  # % of test images, mean over pairs of peers
    peer_kl: List[float] = field(default_factory=list)  # mean KL(p_l || p_k) over ordered pairs, nats
    entropy: List[float] = field(default_factory=list)  # mean entropy of the peers' predictions, nats
    seconds: float = 0.0

    def peer(self, k: int) -> History:
        """Peer ``k``'s test accuracies as a :class:`~kdtools.train.History` (for ``protocol.summarize``)."""
        return History(test_acc=list(self.peer_acc[k]))

    def ensemble(self) -> History:
        """The ensemble's test accuracies as a :class:`~kdtools.train.History`."""
        return History(test_acc=list(self.ensemble_acc))


def cohort_diagnostics(probs: torch.Tensor, labels: torch.Tensor) -> Dict[str, float]:
    """Accuracy of every peer and of the ensemble, disagreement, mean KL between peers and mean entropy, for
    ``probs`` ``[K, N, C]`` (the peers' probabilities on N images) and ``labels`` ``[N]``."""
    if probs.dim() != 3 or labels.shape != probs.shape[1:2]:
        raise ValueError(f"probs must be [K, N, C] and labels [N]; got {tuple(probs.shape)} and "
                         f"{tuple(labels.shape)}")
    k = probs.shape[0]
    predictions = probs.argmax(2)
    log_p = probs.clamp_min(1e-12).log()
    pairs = list(itertools.combinations(range(k), 2))
    ordered = [(a, b) for a in range(k) for b in range(k) if a != b]
    return {
        "peer_acc": [100.0 * (p == labels).float().mean().item() for p in predictions],
        "ensemble_acc": 100.0 * (probs.mean(0).argmax(1) == labels).float().mean().item(),
        "disagreement": (100.0 * sum((predictions[a] != predictions[b]).float().mean().item() for a, b in pairs)
                         / len(pairs)) if pairs else 0.0,
        "peer_kl": (sum((probs[a] * (log_p[a] - log_p[b])).sum(1).mean().item() for a, b in ordered)
                    / len(ordered)) if ordered else 0.0,
        "entropy": -(probs * log_p).sum(2).mean().item(),
    }


def _probabilities(models, images: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([torch.cat([m(images[i:i + chunk]).softmax(1) for i in range(0, len(images), chunk)])
                            for m in models])


def train_cohort(architectures: Sequence[str], train: TensorData, test: TensorData, *, epochs: int, seed: int,
                 mutual: bool = True, lr: float = 0.05, batch_size: int = 64, momentum: float = 0.9,
                 weight_decay: float = 5e-4, temperature: float = 1.0) -> Tuple[CohortHistory, list]:
    """Train a cohort of ``architectures`` (names of :data:`kdtools.models.ARCHITECTURES`) together on ``train``
    (SGD with momentum and a cosine schedule per peer, every peer on the same batches) and return its
    :class:`CohortHistory` on ``test`` and the trained peers. Peer ``k`` is initialised from seed
    ``seed * 100 + k``, so a peer's initial weights do not depend on the cohort's size or on ``mutual``."""
    if not architectures:
        raise ValueError("architectures must name at least one network, got an empty sequence")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    start = time.perf_counter()
    peers = []
    for k, name in enumerate(architectures):
        seed_everything(seed * 100 + k)
        peers.append(build_model(name))
    optimizers = [torch.optim.SGD(p.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
                  for p in peers]
    steps = epochs * -(-len(train) // batch_size)
    schedules = [torch.optim.lr_scheduler.CosineAnnealingLR(o, steps) for o in optimizers]
    loader = TensorLoader(train, batch_size, shuffle=True, seed=seed)
    history = CohortHistory(peer_acc=[[] for _ in peers])
    for _ in range(epochs):
        for p in peers:
            p.train()
        for images, labels, _ in loader:
            logits = torch.stack([p(images) for p in peers])
            loss = cohort_losses(logits, labels, temperature, mutual).sum()
            for o in optimizers:
                o.zero_grad()
            loss.backward()
            for o, s in zip(optimizers, schedules):
                o.step()
                s.step()
        for p in peers:
            p.eval()
        stats = cohort_diagnostics(_probabilities(peers, test.images), test.labels)
        for k, acc in enumerate(stats["peer_acc"]):
            history.peer_acc[k].append(acc)
        for key in ("ensemble_acc", "disagreement", "peer_kl", "entropy"):
            getattr(history, key).append(stats[key])
    history.seconds = time.perf_counter() - start
    return history, peers


def _cohort_job(job):
    architectures, seed, mutual, options = job
    torch.set_num_threads(1)
    from .. import protocol

    setting = options.pop("protocol", None) or protocol.active_protocol()
    train_loader, test_loader = protocol.loaders(setting, seed)
    history, _ = train_cohort(tuple(architectures), train_loader.data, test_loader.data, seed=seed, mutual=mutual,
                              epochs=options.pop("epochs", setting.epochs), lr=setting.lr,
                              batch_size=setting.batch_size, **options)
    return history


def run_cohort_jobs(jobs: Sequence[Tuple[Sequence[str], int, bool, dict]], workers: int = 2) -> List[CohortHistory]:
    """:func:`train_cohort` on the shared protocol's data (:func:`kdtools.protocol.loaders`; its learning rate,
    batch and, unless ``options["epochs"]`` says otherwise, epochs) for ``(architectures, seed, mutual, options)``
    jobs, in order, in ``workers`` processes (one thread each)."""
    jobs = [(tuple(a), s, m, dict(o)) for a, s, m, o in jobs]
    for architectures, *_ in jobs:
        if not architectures:
            raise ValueError("each job's architectures must name at least one network")
    return map_in_processes(_cohort_job, jobs, workers)
