r"""Checkers of Module 4 (relation-based knowledge): FSP, relational KD, contrastive representation distillation.

References: :func:`kdtools.losses.fsp_matrix`, :func:`kdtools.losses.rkd_angle_loss` (its angle potential) and
:func:`kdtools.losses.crd_nce_loss`. Every ``check_*`` function defined here is exported by
:mod:`kdtools.exercises` and listed in its ``CHECKERS``.
"""
from __future__ import annotations

from ._harness import Case, CheckResult, ErrorHint, Mistake, run_checks  # noqa: F401  (used by the sections)


# ---- FSP (notebooks/04_relation/fsp.ipynb)

# ---- end of FSP


# ---- Relational KD (notebooks/04_relation/relational_kd.ipynb)

# ---- end of relational KD


# ---- Contrastive representation distillation (notebooks/04_relation/contrastive_rd.ipynb)

# ---- end of contrastive representation distillation


__all__ = sorted(name for name in dir() if name.startswith("check_"))
