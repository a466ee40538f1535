r"""Checkers of Module 3 (feature-based knowledge): FitNets hints, attention transfer, NST.

References: :func:`kdtools.losses.hint_loss` with :class:`kdtools.losses.ConvRegressor`,
:func:`kdtools.losses.attention_map` / :func:`kdtools.losses.at_loss` and :func:`kdtools.losses.nst_loss`.
Every ``check_*`` function defined here is exported by :mod:`kdtools.exercises` and listed in its ``CHECKERS``.
"""
from __future__ import annotations

from ._harness import Case, CheckResult, ErrorHint, Mistake, run_checks  # noqa: F401  (used by the sections)


# ---- FitNets (notebooks/03_feature/fitnets.ipynb)
# ---- end of FitNets


# ---- Attention transfer (notebooks/03_feature/attention_transfer.ipynb)
# ---- end of attention transfer


# ---- Neuron selectivity transfer (notebooks/03_feature/neuron_selectivity_transfer.ipynb)
# ---- end of neuron selectivity transfer


__all__ = sorted(name for name in dir() if name.startswith("check_"))
