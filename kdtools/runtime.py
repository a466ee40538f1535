"""Seeds, devices and smoke mode: the run-time switches every notebook shares.

Smoke mode (``KDTOOLS_SMOKE=1``) runs each notebook on tiny subsets for one epoch so that
nbval can execute the whole course in CI; full mode reproduces the numbers the book shows.
"""
from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def is_smoke() -> bool:
    """True when ``KDTOOLS_SMOKE`` asks for the small, fast run used by CI."""
    raw = os.environ.get("KDTOOLS_SMOKE", "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"KDTOOLS_SMOKE must be one of {sorted(_TRUE | _FALSE)}, got {raw!r}")


def pick(full: T, smoke: T) -> T:
    """Return ``smoke`` in smoke mode and ``full`` otherwise, e.g. ``epochs = pick(full=10, smoke=1)``."""
    return smoke if is_smoke() else full


def run_mode() -> str:
    """``"smoke"`` or ``"full"``; stored with every recorded result."""
    return "smoke" if is_smoke() else "full"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) and return a torch Generator seeded the same way.

    Use the returned generator for anything that must not depend on how much random state
    earlier cells consumed (shuffling, subsets).
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """The fastest device available: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` (or the environment variable ``KDTOOLS_DEVICE``) forces one, e.g. ``"cpu"``.
    """
    choice = prefer or os.environ.get("KDTOOLS_DEVICE")
    if choice:
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def in_colab() -> bool:
    return "google.colab" in sys.modules


@dataclass(frozen=True)
class Session:
    """What :func:`setup` decided; notebooks read ``device``, ``smoke`` and ``seed`` from it."""

    seed: int
    device: torch.device
    smoke: bool
    version: str

    @property
    def mode(self) -> str:
        return "smoke" if self.smoke else "full"


def setup(seed: int = 0, device: str | None = None, verbose: bool = True) -> Session:
    """The first call of every notebook: seed everything, choose the device, report the mode."""
    from . import __version__

    seed_everything(seed)
    session = Session(seed=seed, device=get_device(device), smoke=is_smoke(), version=__version__)
    if verbose:
        print(f"kdtools {session.version} | torch {torch.__version__} | device {session.device} | "
              f"seed {seed} | {'SMOKE mode (tiny subsets, 1 epoch)' if session.smoke else 'full mode'}")
        if in_colab() and session.device.type == "cpu":
            print("Tip: Runtime > Change runtime type > GPU makes the training cells several times faster.")
    return session


def map_in_processes(work, jobs, workers: int = 2) -> list:
    """``[work(job) for job in jobs]``, in ``workers`` spawned processes when there are two or more jobs.

    ``work`` must be a module-level function and the jobs picklable; each job should seed itself and use one
    thread (``torch.set_num_threads(1)``) so that its result does not depend on ``workers``. Results come back
    in the jobs' order; ``workers=1`` runs everything in this process (what a debugger wants).
    """
    jobs = list(jobs)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or len(jobs) < 2:
        return [work(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(work, jobs))
