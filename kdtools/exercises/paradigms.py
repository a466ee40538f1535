r"""Checkers of Module 5 (paradigms): cross-modal KD, deep mutual learning, data-free KD, born-again networks,
teacher assistants.

Every ``check_*`` function defined here is exported by :mod:`kdtools.exercises` and listed in its ``CHECKERS``;
each lesson keeps its checkers, references and imports inside its own block below (imports aliased with the
block's prefix, e.g. ``import torch as _dml_torch``, so blocks never share a name).
"""
from __future__ import annotations

from ._harness import Case, CheckResult, ErrorHint, Mistake, run_checks  # noqa: F401  (used by the sections)

# ---- Cross-modal KD (notebooks/05_paradigms/cross_modal.ipynb)
# (this lesson's checkers go here)
# ---- end of cross-modal KD


# ---- Deep mutual learning (notebooks/05_paradigms/deep_mutual_learning.ipynb)
# (this lesson's checkers go here)
# ---- end of deep mutual learning


# ---- Data-free KD (notebooks/05_paradigms/data_free_kd.ipynb)
# (this lesson's checkers go here)
# ---- end of data-free KD


# ---- Born-again networks (notebooks/05_paradigms/born_again.ipynb)
# (this lesson's checkers go here)
# ---- end of born-again networks


# ---- Teacher assistants (notebooks/05_paradigms/teacher_assistant.ipynb)
# (this lesson's checkers go here)
# ---- end of teacher assistants


__all__ = sorted(name for name in dir() if name.startswith("check_"))
