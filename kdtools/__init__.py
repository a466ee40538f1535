"""kdtools — the shared library of the KD Companion course on knowledge distillation.

The package mirrors the course's taxonomy: :mod:`kdtools.losses` (one module per family of
knowledge: response, feature, relation, contrastive, sequence, detection), plus the shared
machinery every notebook uses: :mod:`~kdtools.data`, :mod:`~kdtools.models`,
:mod:`~kdtools.features`, :mod:`~kdtools.train`, :mod:`~kdtools.zoo`, :mod:`~kdtools.results` and
:mod:`~kdtools.bench`. Code that only one module of the course needs lives in that module's subpackage
(:mod:`kdtools.paradigms` for Module 5: spoken-digit audio, peers, synthesis, generations, assistants).
"""
__version__ = "0.1.0"

from .runtime import Session, get_device, is_smoke, pick, run_mode, seed_everything, setup  # noqa: E402

__all__ = ["__version__", "Session", "get_device", "is_smoke", "pick", "run_mode", "seed_everything", "setup"]
