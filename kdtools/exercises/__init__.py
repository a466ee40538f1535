"""Checkers for the exercises at the end of every notebook.

``check_<name>(fn)`` runs the student's function on fixed cases (shapes, edge cases, gradients), compares
it with the course's reference implementation and prints one line on success, or the failing case, the
expected and received values and a hint aimed at the likely mistake. It returns a truthy or falsy
:class:`CheckResult` (which a notebook does not echo) and never raises because of the student's code, so graders and tests can call it too::

    from kdtools import exercises
    exercises.check_kd_loss(kd_loss)

Checkers live in one module per course module (``foundations`` for Module 1, ...) and are built with
:func:`~kdtools.exercises._harness.run_checks`; see ``book/exercises.md`` for how to add one.
"""
from ._harness import Case, CheckResult, ErrorHint, Mistake, run_checks
from .foundations import check_distillation_step, check_kd_loss, check_softmax_with_temperature
from .foundations import check_generalized_distillation_loss
from .foundations import check_munge_step
from .foundations import check_distillation_objective, check_median_latency
from .foundations import check_expected_calibration_error, check_label_smoothing_loss
from .response import check_find_bias_shift, check_nckd

# Every checker of the course; tests/test_exercises.py requires wrong-answer tests for each of them.
CHECKERS = {
    "check_softmax_with_temperature": check_softmax_with_temperature,
    "check_kd_loss": check_kd_loss,
    "check_distillation_step": check_distillation_step,
    "check_generalized_distillation_loss": check_generalized_distillation_loss,
    "check_munge_step": check_munge_step,
    "check_median_latency": check_median_latency,
    "check_distillation_objective": check_distillation_objective,
    "check_label_smoothing_loss": check_label_smoothing_loss,
    "check_expected_calibration_error": check_expected_calibration_error,
    "check_nckd": check_nckd,
    "check_find_bias_shift": check_find_bias_shift,
}
# Module 3 and later: every check_* function a module defines is exported (each lesson adds its own)
from . import feature as _feature  # noqa: E402
from . import relation as _relation  # noqa: E402
from . import paradigms as _paradigms  # noqa: E402
from . import applications as _applications  # noqa: E402

for _module in (_feature, _relation, _paradigms, _applications):
    for _name in _module.__all__:
        globals()[_name] = CHECKERS[_name] = getattr(_module, _name)

__all__ = ["CHECKERS", "Case", "CheckResult", "ErrorHint", "Mistake", "run_checks", *CHECKERS]
