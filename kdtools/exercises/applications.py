r"""Checkers of Module 6 (applications): detection and segmentation KD, token- vs sequence-level KD.

Every ``check_*`` function defined here is exported by :mod:`kdtools.exercises` and listed in its ``CHECKERS``;
each lesson keeps its checkers, references and imports inside its own block below (imports aliased with the
block's prefix, e.g. ``import torch as _det_torch``, so blocks never share a name).
"""
from __future__ import annotations

from ._harness import Case, CheckResult, ErrorHint, Mistake, run_checks  # noqa: F401  (used by the sections)



# ---- Detection KD (notebooks/06_applications/detection_kd.ipynb)


# ---- Token- vs sequence-level KD (notebooks/06_applications/token_vs_sequence_kd.ipynb)


__all__ = sorted(name for name in dir() if name.startswith("check_"))
