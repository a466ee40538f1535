"""``python -m kdtools.run``: train any method of the course, on one process or many, and record every run.

    python -m kdtools.run --method dkd --seeds 0 1 2                       # the shared MNIST protocol
    python -m kdtools.run --method crd --dataset cifar100 --teacher T.pt   # the CRD / DKD papers' recipe
    torchrun --nproc_per_node=8 -m kdtools.run --method kd --dataset cifar100 --teacher T.pt

Every method is an arm of :data:`kdtools.protocol.METHODS`, the registry the notebooks use: :data:`RUNNER_METHODS`
only says which arm a method name (case-insensitive) runs, with the authors' settings, and where ours differ.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from . import protocol as _protocol
from .protocol import Protocol

DATASETS: Tuple[str, ...] = ("mnist", "cifar100")


@dataclass(frozen=True)
class RunnerMethod:
    """What ``--method NAME`` runs.

    arm: the :data:`kdtools.protocol.METHODS` arm (its terms, hooks and stages are defined there, once).
    authors: the authors' published setting this arm reproduces, with its source.
    differs: where our arm differs from that setting ("" when it does not).
    mnist_protocol: an adjustment of the shared MNIST protocol the arm needs (FSP's teacher of matching widths).
    """

    arm: str
    authors: str
    differs: str = ""
    mnist_protocol: Optional[Callable[[Protocol], Protocol]] = None


#: method name (lower case) -> :class:`RunnerMethod`
RUNNER_METHODS: Dict[str, RunnerMethod] = {
    "ce": RunnerMethod(
        "student (CE)", "cross-entropy only (the papers' 'student' row)"),
    "kd": RunnerMethod(
        "KD (mdistiller config)", "0.1·CE + 0.9·T²·KL, T = 4 (RepDistiller -r 0.1 -a 0.9; mdistiller KD)"),
    "dkd": RunnerMethod(
        "DKD (authors' config)",
        "CE + TCKD + 8·NCKD, T = 4, DKD ramped up over the first 20 of 240 epochs (mdistiller DKD, res32x4/res8x4)",
        "the warm-up keeps the authors' fraction of the budget: 20/240 of the epochs (3 of the MNIST protocol's 40)"),
    "fitnets": RunnerMethod(
        "CE + hint", "CE + 100·hint on the middle stage through a regressor, one stage (RepDistiller -b 100, "
                     "mdistiller FitNet)",
        "a 1×1-conv regressor (mdistiller's ConvReg is a 3×3 conv with BN); the paper's two stages are the arm "
        "'FitNets (two-stage)'"),
    "at": RunnerMethod(
        "CE + AT", "CE + 1000·Σ_stages AT, the code's squared-mean form (RepDistiller -b 1000, mdistiller AT)",
        "summed over the three stages' outputs (RepDistiller: every feature map but the first and last)"),
    "nst": RunnerMethod(
        "CE + NST", "CE + 50·Σ_stages NST, polynomial kernel (RepDistiller -b 50)"),
    "fsp": RunnerMethod(
        "FSP (two-stage)", "FSP stage on the stages' flow matrices, then CE alone (RepDistiller's init stage, -b 0)",
        "the first stage lasts a quarter of the epochs on top of the budget (RepDistiller: 30 epochs); on MNIST "
        "the teacher is mnist-cnn-4x3-teacher, whose widths match the student's",
        mnist_protocol=lambda protocol: _protocol.fsp_protocol(protocol)),
    "rkd": RunnerMethod(
        "CE + RKD", "CE + 25·RKD-D + 50·RKD-A on the pooled embedding (RepDistiller -b 1, mdistiller RKD)"),
    "crd": RunnerMethod(
        "CE + CRD", "CE + 0.8·CRD, τ = 0.07, 128-d heads, momentum 0.5, 16,384 of 50,000 negatives "
                    "(RepDistiller -b 0.8)",
        "N keeps the authors' fraction of the training set (a third); negatives are drawn uniformly "
        "(RepDistiller's CIFAR loader draws them from other classes)"),
}


def method_names() -> Tuple[str, ...]:
    """The names ``--method`` accepts."""
    return tuple(RUNNER_METHODS)


def resolve_method(name: str) -> Tuple[str, RunnerMethod]:
    """``(canonical name, RunnerMethod)`` for a method name in any case; a ValueError lists the known ones."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in RUNNER_METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(RUNNER_METHODS)}")
    return key, RUNNER_METHODS[key]
