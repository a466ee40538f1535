r"""Teacher assistants (Mirzadeh, Farajtabar, Li, Levine, Matsukawa and Ghasemzadeh, AAAI 2020).

When the teacher is much larger than the student, the paper finds that distilling it *directly* can help the
student less than distilling it through an intermediate network, a **teacher assistant** (TA): the teacher
teaches the TA, the TA teaches the student (T → TA → S), possibly through several TAs (T → TA₁ → TA₂ → S).

Every link here is trained with the course's controlled objective (``kdtools.protocol``'s "CE + KD": cross-entropy
plus :math:`T^2\,\mathrm{KL}(p^t \| p^s)` at :math:`T = 4`, both with weight 1) on the same data and budget, so a
comparison changes only the chain. The authors' code trains each link with
:math:`(1-\lambda)\,\mathrm{CE} + \lambda\,T^2\,\mathrm{KL}` and searches :math:`\lambda` and :math:`T` per pair;
we keep one setting for every link, so that the chain is the only change.

:func:`distill_chain` trains one chain; :func:`assistant_study` trains, for one seed, every network the lesson
needs, reusing a TA trained once for all the students it teaches.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple, Union

import torch
from torch import nn

from .. import zoo
from ..models import ARCHITECTURES, build_model
from ..runtime import map_in_processes, seed_everything
from ..train import History, cross_entropy_term, evaluate, fit, frozen, kd_term

__all__ = ["KD_TEMPERATURE", "distill_chain", "StudyRun", "assistant_study", "run_study_jobs"]

KD_TEMPERATURE = 4.0
_OBJECTIVE = {"ce": (1.0, cross_entropy_term), "kd": (1.0, kd_term(KD_TEMPERATURE))}



def _check_chain(chain) -> None:
    if not isinstance(chain, (list, tuple)) or len(chain) < 2:
        raise ValueError(f"chain must list a teacher and at least one network to train, got {chain!r}")
    if not isinstance(chain[0], (str, nn.Module)):
        raise ValueError(f"chain[0] must be the teacher: a zoo name or an nn.Module, got {type(chain[0]).__name__}")
    for i, name in enumerate(chain[1:], start=1):
        if name not in ARCHITECTURES:
            raise ValueError(f"chain[{i}] must be an architecture of kdtools.models.ARCHITECTURES, got {name!r}")


def _train_link(architecture: str, teacher: nn.Module, train_loader, test_loader, epochs: int, seed: int,
                lr: float, **fit_options) -> Tuple[History, nn.Module]:
    seed_everything(seed)
    model = build_model(architecture)
    history = fit(model, train_loader, test_loader, epochs=epochs, lr=lr, seed=seed, teacher=teacher,
                  terms=_OBJECTIVE if teacher is not None else None, cache_teacher_logits=teacher is not None,
                  progress=False, **fit_options)
    return history, frozen(model)


def distill_chain(chain: Sequence[Union[str, nn.Module]], train_loader, test_loader, *, epochs: int, seed: int,
                  lr: float = 0.05, **fit_options) -> Tuple[List[History], List[nn.Module]]:
    """Train ``chain[1]`` from the teacher ``chain[0]`` (a zoo name or a frozen module), then ``chain[2]`` from
    the trained ``chain[1]``, and so on; every link with CE + KD (T = 4), ``epochs`` and ``lr``, seeded with
    ``seed``; ``fit_options`` (optimizer, momentum, weight_decay, schedule) go to :func:`kdtools.train.fit`.
    Returns every trained link's history and network (the last is the student). A chain of length 2 is plain
    KD; ``test_loader`` may be None (no per-epoch accuracy)."""
    _check_chain(chain)
    teacher = frozen(zoo.load(chain[0]) if isinstance(chain[0], str) else chain[0])
    histories, models = [], []
    for architecture in chain[1:]:
        history, teacher = _train_link(architecture, teacher, train_loader, test_loader, epochs, seed, lr,
                                       **fit_options)
        histories.append(history)
        models.append(teacher)
    return histories, models


@dataclass
class StudyRun:
    """One seed of the lesson: ``teacher_acc``; ``assistants[name]`` the history of each TA (trained from the
    teacher, or from another TA for names with an arrow); ``students[name]`` the student's history per route."""

    teacher_acc: float = 0.0
    assistants: Dict[str, History] = field(default_factory=dict)
    students: Dict[str, History] = field(default_factory=dict)
    seconds: float = 0.0


def assistant_study(teacher: str, student: str, assistants: Sequence[str], chains: Sequence[Tuple[str, ...]],
                    train_loader, test_loader, *, epochs: int, seed: int, lr: float = 0.05) -> StudyRun:
    """For one seed: the student trained alone (``"CE"``) and directly from ``teacher`` (``"T → S"``); each of
    ``assistants`` distilled from the teacher and then teaching the student (``"T → <TA> → S"``); and each
    multi-step ``chains`` entry (TA architectures in order, e.g. ``("cnn-8x1", "cnn-4x1")``), whose TAs after
    the first are distilled from the previous TA. Each TA is trained once and reused."""
    for name in (student, *assistants, *(a for c in chains for a in c)):
        if name not in ARCHITECTURES:
            raise ValueError(f"{name!r} is not an architecture of kdtools.models.ARCHITECTURES")
    start = time.perf_counter()
    big = frozen(zoo.load(teacher))
    run = StudyRun(teacher_acc=evaluate(big, test_loader))
    run.students["CE"], _ = _train_link(student, None, train_loader, test_loader, epochs, seed, lr)
    run.students["T → S"], _ = _train_link(student, big, train_loader, test_loader, epochs, seed, lr)
    trained: Dict[Tuple[str, ...], nn.Module] = {}

    def assistant(path: Tuple[str, ...]) -> nn.Module:  # the TA at the end of path, trained along it once
        if path not in trained:
            parent = big if len(path) == 1 else assistant(path[:-1])
            history, trained[path] = _train_link(path[-1], parent, train_loader, test_loader, epochs, seed, lr)
            run.assistants[" → ".join(path)] = history
        return trained[path]

    for path in [(a,) for a in assistants] + [tuple(c) for c in chains]:
        run.students["T → " + " → ".join(path) + " → S"], _ = _train_link(
            student, assistant(path), train_loader, test_loader, epochs, seed, lr)
    run.seconds = time.perf_counter() - start
    return run


def _study_job(job):
    seed, options = job
    torch.set_num_threads(1)
    from .. import protocol

    setting = options.pop("protocol", None) or protocol.active_protocol()
    train_loader, test_loader = protocol.loaders(setting, seed)
    return assistant_study(options.pop("teacher", setting.teacher), train_loader=train_loader,
                           test_loader=test_loader, epochs=options.pop("epochs", setting.epochs), seed=seed,
                           lr=setting.lr, **options)


def run_study_jobs(jobs: Sequence[Tuple[int, dict]], workers: int = 2) -> List[StudyRun]:
    """:func:`assistant_study` on the shared protocol's data, learning rate and epochs (and its teacher unless
    ``options["teacher"]`` is given) for ``(seed, options)`` jobs; options must give ``student``,
    ``assistants`` and ``chains``."""
    return map_in_processes(_study_job, [(s, dict(o)) for s, o in jobs], workers)
