r"""Born-again networks (Furlanello, Lipton, Tschannen, Itti and Anandkumar, ICML 2018): a network taught by its twin.

Generation 0 is trained on the labels alone. Generation :math:`k \ge 1`, the *same* architecture initialised
afresh, is trained on the labels and on the predictions of generation :math:`k-1`, which is frozen:

.. math::
    \mathcal L_k = \mathrm{CE}\big(y, p^{(k)}\big) + \mathrm{KL}\big(p^{(k-1)} \,\|\, p^{(k)}\big),
    \qquad p = \mathrm{softmax}(z) \quad (T = 1).

The paper trains born-again students with the "dual goals of predicting the correct labels and matching the
output distribution of the teacher", at temperature 1, which is this objective with equal weights
(:func:`kdtools.losses.kd_loss` at :math:`T = 1` is the KL term). Its variants CWTM (cross-entropy weighted by the
teacher's confidence) and DKPP (the teacher's non-argmax probabilities permuted) are not implemented here.

The **born-again network ensemble** (BANE) averages the *probabilities* of generations :math:`1..K`
(:class:`ProbabilityEnsemble`); :func:`train_generations` also distils that ensemble into one more network of the
same architecture (same objective, the ensemble in the teacher's place): BANE's accuracy at the cost of one
network at test time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..models import build_model
from ..runtime import map_in_processes, seed_everything
from ..train import History, cross_entropy_term, evaluate, fit, frozen, kd_term

__all__ = ["BAN_TEMPERATURE", "objective", "ProbabilityEnsemble", "GenerationsRun", "train_generations",
           "run_generation_jobs"]

BAN_TEMPERATURE = 1.0


def objective(temperature: float = BAN_TEMPERATURE) -> dict:
    """The born-again objective as :func:`kdtools.train.fit` terms: cross-entropy plus the KL term (both weight 1),
    at the paper's :data:`BAN_TEMPERATURE` unless ``temperature`` says otherwise (the shared protocol's BAN arm
    uses it too)."""
    return {"ce": (1.0, cross_entropy_term), "kd": (1.0, kd_term(temperature))}


class ProbabilityEnsemble(nn.Module):
    """The mean of several frozen networks' probabilities, returned as log-probabilities, i.e. logits whose
    softmax (at T = 1) is exactly the average distribution: a teacher for :func:`kdtools.train.fit`."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("members must hold at least one network, got none")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).softmax(1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()


@dataclass
class GenerationsRun:
    """One seed's chain: ``histories[k]`` is generation k's (0 = labels only); ``ensemble_acc[k]`` the test
    accuracy of BANE over generations 1..k (``None`` for k = 0); ``bane_student`` the network distilled from the
    ensemble of all generations."""

    histories: List[History] = field(default_factory=list)
    ensemble_acc: List[Optional[float]] = field(default_factory=list)
    bane_student: Optional[History] = None
    seconds: float = 0.0



def train_generations(architecture: str, n_generations: int, train_loader, test_loader, *, epochs: int, seed: int,
                      lr: float = 0.05, distil_ensemble: bool = True, **fit_options) -> Tuple[GenerationsRun, list]:
    """Train generation 0 on the labels and generations 1..``n_generations`` each from the previous one (see the
    module's objective), all of ``architecture`` with the same optimiser and ``epochs``; generation k is
    initialised from seed ``seed * 100 + k``. Returns the :class:`GenerationsRun` and the trained networks."""
    if not isinstance(n_generations, int) or n_generations < 1:
        raise ValueError(f"n_generations must be an int >= 1 (born-again generations after generation 0), "
                         f"got {n_generations!r}")
    start = time.perf_counter()
    run, models = GenerationsRun(), []
    terms = objective()
    for k in range(n_generations + 1):
        seed_everything(seed * 100 + k)
        model = build_model(architecture)
        teacher = models[-1] if models else None
        history = fit(model, train_loader, test_loader, epochs=epochs, lr=lr, seed=seed * 100 + k,
                      teacher=teacher, terms=terms if teacher is not None else None,
                      cache_teacher_logits=teacher is not None, progress=False, **fit_options)
        models.append(frozen(model))
        run.histories.append(history)
        run.ensemble_acc.append(evaluate(ProbabilityEnsemble(models[1:]), test_loader) if k else None)
    if distil_ensemble:
        seed_everything(seed * 100 + n_generations + 1)
        student = build_model(architecture)
        run.bane_student = fit(student, train_loader, test_loader, epochs=epochs, lr=lr,
                               seed=seed * 100 + n_generations + 1, teacher=ProbabilityEnsemble(models[1:]),
                               terms=terms, cache_teacher_logits=True, progress=False, **fit_options)
        models.append(frozen(student))
    run.seconds = time.perf_counter() - start
    return run, models


def _generation_job(job):
    n_generations, seed, options = job
    torch.set_num_threads(1)
    from .. import protocol

    setting = options.pop("protocol", None) or protocol.active_protocol()
    train_loader, test_loader = protocol.loaders(setting, seed)
    run, _ = train_generations(options.pop("architecture", setting.student), n_generations, train_loader,
                               test_loader, epochs=options.pop("epochs", setting.epochs), seed=seed, lr=setting.lr,
                               **options)
    return run


def run_generation_jobs(jobs: Sequence[Tuple[int, int, dict]], workers: int = 2) -> List[GenerationsRun]:
    """:func:`train_generations` on the shared protocol's data, student, learning rate and epochs (``options``
    may set ``architecture`` and ``epochs``) for ``(n_generations, seed, options)`` jobs, in processes."""
    return map_in_processes(_generation_job, [(n, s, dict(o)) for n, s, o in jobs], workers)
