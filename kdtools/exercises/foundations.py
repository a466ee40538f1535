r"""Checkers of Module 1 (Foundations): the temperature softmax and the KD loss with its :math:`T^2` factor.

References: ``torch.softmax(logits / T, dim=-1)`` and :func:`kdtools.losses.kd_loss`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..losses import kd_loss as _kd_loss_reference
from ._harness import Case, CheckResult, ErrorHint, Mistake, run_checks

__all__ = ["check_softmax_with_temperature", "check_kd_loss", "check_generalized_distillation_loss", "check_munge_step",
           "check_median_latency", "check_distillation_objective"]
__all__ += ["check_label_smoothing_loss", "check_expected_calibration_error"]


def _random_logits(seed: int, *shape: int, scale: float = 3.0) -> torch.Tensor:
    # A private generator: checking a function must not move the notebook's global random state.
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# Shape and broadcasting mistakes are shared by both exercises.
_KEEPDIM_HINT = ErrorHint(
    r"must match the size of tensor",
    "a reduction such as `.max(dim=-1)` or `.sum(dim=-1)` drops that dimension; pass `keepdim=True` "
    "so the result broadcasts against the logits.")
_MAX_PAIR_HINT = ErrorHint(
    r"return_types\.max",
    "`.max(dim=...)` returns a pair (values, indices): use `.max(dim=-1, keepdim=True).values`.")
_LAST_DIM_HINT = ErrorHint(
    r"Dimension out of range",
    "use `dim=-1` (the last dimension, the classes), so the same code works for a vector [C] and a batch [B, C].")
_IN_PLACE_HINT = ErrorHint(
    r"in-place operation",
    "do not modify the input in place (`logits /= temperature`); write `scaled = logits / temperature`.")


# ----------------------------------------------------------------------------- temperature softmax
def _softmax_reference(logits, temperature):
    return torch.softmax(logits / temperature, dim=-1)


def _softmax_cases():
    return [
        Case("a batch of 3 × 5 logits, T = 2", lambda: (_random_logits(1, 3, 5), 2.0)),
        Case("4 × 10 logits at T = 1, the ordinary softmax", lambda: (_random_logits(2, 4, 10, scale=5.0), 1.0)),
        Case("2 × 4 logits at T = 0.5, sharper than the softmax", lambda: (_random_logits(3, 2, 4), 0.5)),
        Case("2 × 10 logits at T = 1000, nearly uniform", lambda: (_random_logits(4, 2, 10, scale=5.0), 1000.0)),
        Case("large logits [[1e4, 0, -1e4], [50, 100, 150]] at T = 1",
             lambda: (torch.tensor([[1e4, 0.0, -1e4], [50.0, 100.0, 150.0]]), 1.0)),
        Case("a single vector of 6 logits (shape [6]) at T = 3", lambda: (_random_logits(5, 6), 3.0)),
        Case("the gradient with respect to 4 × 6 logits at T = 4", lambda: (_random_logits(6, 4, 6), 4.0),
             gradient=True),
    ]


def _naive_softmax(z, temperature):
    exp = (z / temperature).exp()
    return exp / exp.sum(dim=-1, keepdim=True)


def _softmax_minus_global_max(z, temperature):
    scaled = z / temperature
    exp = (scaled - scaled.max()).exp()
    return exp / exp.sum(dim=-1, keepdim=True)


_SOFTMAX_MISTAKES = [
    Mistake("this is the softmax of the raw logits: divide the logits by the temperature first (z / T).",
            lambda z, t: torch.softmax(z, dim=-1)),
    Mistake("you multiplied the logits by T; divide them instead: softmax(z / T).",
            lambda z, t: torch.softmax(z * t, dim=-1)),
    Mistake("divide the logits by T before the softmax, not the probabilities after it.",
            lambda z, t: torch.softmax(z, dim=-1) / t),
    Mistake("each row must sum to 1: take the softmax over the last dimension (dim=-1, the classes), "
            "not over the batch (dim=0).",
            lambda z, t: torch.softmax(z / t, dim=0)),
    Mistake("overflow: exp(1e4) is inf in float32 and inf / inf is nan. Subtract each row's maximum before "
            "exponentiating; the result does not change.",
            _naive_softmax),
    Mistake("subtract each row's own maximum (`.max(dim=-1, keepdim=True).values`), not the maximum of the whole "
            "tensor: a row far below it underflows to 0 / 0 = nan.",
            _softmax_minus_global_max),
    Mistake("your whole tensor sums to 1, but each row should: sum over dim=-1 with keepdim=True.",
            lambda z, t: (z / t).exp() / (z / t).exp().sum()),
    Mistake("you returned log-probabilities; return the probabilities themselves.",
            lambda z, t: torch.log_softmax(z / t, dim=-1)),
]


# The exercise asks for the softmax written by hand: every built-in softmax is off limits. The modules
# are listed by their class: the student constructs them, while their forward runs inside torch.
_SOFTMAX_BY_HAND = ("divide by T, subtract each row's maximum, exponentiate with .exp() and divide by the sum "
                    "over dim=-1 (keepdim=True).")
_BUILT_IN_SOFTMAXES = {
    name: f"this exercise is to write the softmax yourself, without {name}: " + _SOFTMAX_BY_HAND
    for name in ("torch.softmax", "torch.nn.functional.softmax", "torch.special.softmax", "torch.Tensor.softmax",
                 "torch.log_softmax", "torch.nn.functional.log_softmax", "torch.special.log_softmax",
                 "torch.Tensor.log_softmax", "torch.nn.Softmax", "torch.nn.LogSoftmax")
}


def check_softmax_with_temperature(fn) -> CheckResult:
    r"""Check ``fn(logits, temperature)`` = :math:`\mathrm{softmax}(z / T)` over the last dimension.

    The function must not call a built-in softmax or log-softmax (``torch.softmax``, ``F.softmax``,
    ``x.softmax()``, ``torch.special.softmax`` and their ``log_softmax`` forms): the exercise is to write it.
    Then seven checks: batches at T = 2, 1, 0.5 and 1000, logits of ±1e4 (overflow), a single vector and the
    gradient. Prints one line and returns a truthy result when all pass; otherwise prints the failing check
    with a hint and returns a falsy one.
    """
    return run_checks(
        fn, name="softmax_with_temperature", signature="softmax_with_temperature(logits, temperature)",
        reference=_softmax_reference, cases=_softmax_cases(), mistakes=_SOFTMAX_MISTAKES,
        error_hints=[_MAX_PAIR_HINT, _KEEPDIM_HINT, _LAST_DIM_HINT, _IN_PLACE_HINT],
        nonfinite_hint="nan or inf: an exponential overflowed or a sum was 0. Subtract each row's maximum "
                       "before exponentiating.",
        covers="T = 0.5 to 1000, ±1e4 logits, gradients", forbidden=_BUILT_IN_SOFTMAXES)


# ----------------------------------------------------------------------------- KD loss
def _log_probs(z, temperature):
    return torch.log_softmax(z / temperature, dim=-1)


def _kl_per_sample(log_p, log_q):
    r""":math:`\mathrm{KL}(p \| q)` over the last axis, both given as log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def _kd_case(description, student, teacher, temperature, gradient=False):
    def make_args():
        return student(), teacher(), temperature

    batch, classes = student().shape
    params = {"T": temperature, "T2": temperature**2, "B": batch, "C": classes}
    return Case(description, make_args, params, gradient)


def _kd_cases():
    identical = _random_logits(24, 2, 5)
    confident_teacher = torch.tensor([[400.0, 0.0, -400.0, 10.0], [0.0, 400.0, 5.0, -3.0]])
    return [
        _kd_case("3 samples × 10 classes, T = 4",
                 lambda: _random_logits(20, 3, 10, scale=2.0), lambda: _random_logits(21, 3, 10, scale=4.0), 4.0),
        _kd_case("2 samples × 4 classes, T = 1",
                 lambda: _random_logits(22, 2, 4), lambda: _random_logits(23, 2, 4), 1.0),
        _kd_case("5 samples × 10 classes, T = 20 (Hinton et al.'s MNIST temperature)",
                 lambda: _random_logits(25, 5, 10, scale=5.0), lambda: _random_logits(26, 5, 10, scale=8.0), 20.0),
        _kd_case("a student identical to its teacher, T = 4: the loss must be 0",
                 lambda: identical.clone(), lambda: identical.clone(), 4.0),
        _kd_case("a very confident teacher, logits 400 apart, T = 2",
                 lambda: _random_logits(27, 2, 4), lambda: confident_teacher.clone(), 2.0),
        _kd_case("the gradient with respect to 4 × 10 student logits, T = 4",
                 lambda: _random_logits(28, 4, 10), lambda: _random_logits(29, 4, 10, scale=4.0), 4.0,
                 gradient=True),
    ]


def _kd_in_probability_space(s, t, temperature):
    p_teacher, p_student = torch.softmax(t / temperature, -1), torch.softmax(s / temperature, -1)
    return temperature**2 * (p_teacher * (p_teacher.log() - p_student.log())).sum(dim=-1).mean()


def _kd_without_log_target(s, t, temperature):
    # the teacher's log-probabilities passed as F.kl_div's target without log_target=True
    return temperature**2 * F.kl_div(_log_probs(s, temperature), _log_probs(t, temperature), reduction="batchmean")


_KD_MISTAKES = [
    Mistake("your value is T² = {T2:g} times too small: did you forget the T² factor?",
            lambda s, t, T: _kd_loss_reference(s, t, T) / T**2),
    Mistake("your value is T = {T:g} times too small: the factor is T², not T.",
            lambda s, t, T: _kd_loss_reference(s, t, T) / T),
    Mistake("KL arguments reversed? Distillation uses KL(p_teacher ‖ p_student) = Σ p_t (log p_t − log p_s). "
            "With F.kl_div(input, target), input is the student's log-probabilities and target the teacher's "
            "probabilities.",
            lambda s, t, T: T**2 * _kl_per_sample(_log_probs(s, T), _log_probs(t, T)).mean()),
    Mistake("sum over the batch instead of the mean? Your value is B = {B} times too large: average the "
            "per-sample KL over the batch (F.kl_div's reduction='batchmean').",
            lambda s, t, T: _kd_loss_reference(s, t, T, reduction="sum")),
    Mistake("averaged over the classes too? Your value is C = {C} times too small: sum the KL over the classes "
            "and average over the batch only (F.kl_div's reduction='mean' divides by B·C; use 'batchmean').",
            lambda s, t, T: _kd_loss_reference(s, t, T) / s.shape[-1]),
    Mistake("you returned one value per sample (shape [{B}]); the loss is their mean over the batch, a scalar.",
            lambda s, t, T: _kd_loss_reference(s, t, T, reduction="none")),
    Mistake("you computed the cross-entropy −Σ p_t log p_s: it exceeds the KL by the teacher's entropy. "
            "It has the same gradient, but the KL (zero when student = teacher) is Σ p_t (log p_t − log p_s).",
            lambda s, t, T: T**2 * (-(_log_probs(t, T).exp() * _log_probs(s, T)).sum(dim=-1)).mean()),
    Mistake("did you divide both logits by T before the softmax? Your value is the KL of the untempered "
            "distributions (times T²).",
            lambda s, t, T: _kd_loss_reference(s, t, 1.0) * T**2),
    Mistake("divide the teacher's logits by T as well: both distributions use the same temperature.",
            lambda s, t, T: T**2 * _kl_per_sample(_log_probs(t, 1.0), _log_probs(s, T)).mean()),
    Mistake("divide the student's logits by T as well: both distributions use the same temperature.",
            lambda s, t, T: T**2 * _kl_per_sample(_log_probs(t, T), _log_probs(s, 1.0)).mean()),
    Mistake("F.kl_div expects log-probabilities as its first argument: pass log_softmax(student_logits / T), "
            "not softmax.",
            lambda s, t, T: T**2 * F.kl_div(torch.softmax(s / T, -1), torch.softmax(t / T, -1),
                                            reduction="batchmean")),
    # before the log_target mistake: both give a nan scalar on the confident-teacher case, but only
    # the log-target mistake gives nan on the first case already, where this model is still finite
    Mistake("nan: the log of a probability that underflowed to 0 (log(softmax(z / T)) on very confident logits). "
            "Work in log space: log_softmax(z / T).",
            _kd_in_probability_space),
    Mistake("you passed the teacher's log-probabilities as F.kl_div's target: pass probabilities (softmax), "
            "or set log_target=True.",
            _kd_without_log_target),
]


def check_kd_loss(fn) -> CheckResult:
    r"""Check ``fn(student_logits, teacher_logits, temperature)`` against :func:`kdtools.losses.kd_loss`.

    That is :math:`T^2\,\mathrm{KL}(\mathrm{softmax}(z_t/T)\,\|\,\mathrm{softmax}(z_s/T))`, summed over the
    classes and averaged over the batch. Six checks: T = 4, 1 and 20, identical logits (loss 0), a very
    confident teacher (numerical stability) and the gradient with respect to the student's logits.
    """
    return run_checks(
        fn, name="kd_loss", signature="kd_loss(student_logits, teacher_logits, temperature)",
        reference=_kd_loss_reference, cases=_kd_cases(), mistakes=_KD_MISTAKES,
        error_hints=[_MAX_PAIR_HINT, _KEEPDIM_HINT, _LAST_DIM_HINT, _IN_PLACE_HINT],
        nonfinite_hint="nan or inf: probably the log of a probability that underflowed to 0. Work in log space: "
                       "log_softmax(z / T) instead of log(softmax(z / T)).",
        covers="T = 1, 4, 20, a zero loss, a confident teacher, gradients",
        atol=1e-5)


# ----------------------------------------------------------------------------- generalised distillation (LUPI)
from ..privileged import generalized_distillation_loss as _gd_loss_reference  # noqa: E402


def _gd_case(description, seed, batch, classes, temperature, imitation, gradient=False, student_scale=2.0,
             teacher_scale=4.0):
    def make_args():
        labels = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(seed + 1))
        return (_random_logits(seed, batch, classes, scale=student_scale), labels,
                _random_logits(seed + 2, batch, classes, scale=teacher_scale), temperature, imitation)

    params = {"T": temperature, "T2": temperature**2, "lam": imitation, "B": batch, "C": classes}
    return Case(description, make_args, params, gradient)


def _gd_cases():
    return [
        _gd_case("3 samples × 5 classes, T = 4, λ = 0.3", 40, 3, 5, 4.0, 0.3),
        _gd_case("4 samples × 10 classes, T = 2, λ = 0.5", 43, 4, 10, 2.0, 0.5),
        _gd_case("λ = 0: plain cross-entropy with the labels (T = 4 must not matter)", 46, 5, 10, 4.0, 0.0),
        _gd_case("λ = 1: pure imitation of the teacher at T = 10", 49, 4, 10, 10.0, 1.0),
        _gd_case("a very confident student (logits up to ±400), T = 2, λ = 0.5", 52, 3, 4, 2.0, 0.5,
                 student_scale=150.0),
        _gd_case("the gradient with respect to 4 × 10 student logits, T = 4, λ = 0.7", 55, 4, 10, 4.0, 0.7,
                 gradient=True),
    ]


def _gd_parts(s, y, t, T, lam, student_T=1.0, teacher_T=None):
    teacher_T = T if teacher_T is None else teacher_T
    log_q = torch.log_softmax(s / student_T, dim=-1)
    hard = F.nll_loss(log_q, y, reduction="none")
    soft = -(torch.softmax(t / teacher_T, dim=-1) * log_q).sum(dim=-1)
    return hard, soft


def _gd_mix(s, y, t, T, lam, reduce=torch.mean, soft_weight=None, **kw):
    hard, soft = _gd_parts(s, y, t, T, lam, **kw)
    soft_weight = lam if soft_weight is None else soft_weight
    return reduce((1 - lam) * hard + soft_weight * soft)


def _gd_kl_soft(s, y, t, T, lam):
    log_q = torch.log_softmax(s, dim=-1)
    log_p = torch.log_softmax(t / T, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return ((1 - lam) * F.nll_loss(log_q, y, reduction="none") + lam * kl).mean()


def _gd_log_of_softmax(s, y, t, T, lam):
    q = torch.softmax(s, dim=-1)
    target = (1 - lam) * F.one_hot(y, s.shape[-1]) + lam * torch.softmax(t / T, dim=-1)
    return -(target * q.log()).sum(-1).mean()


_GD_MISTAKES = [
    Mistake("λ weighs the teacher's soft labels and 1 − λ the hard labels; you swapped them.",
            lambda s, y, t, T, lam: _gd_mix(s, y, t, T, 1 - lam)),
    Mistake("divide the teacher's logits by T before its softmax: the soft labels are softmax(z_t / T).",
            lambda s, y, t, T, lam: _gd_mix(s, y, t, T, lam, teacher_T=1.0)),
    Mistake("in generalised distillation only the teacher is tempered: the student's term uses its plain "
            "softmax σ(f(x)), not softmax(z_s / T) (that is Hinton et al.'s loss).",
            lambda s, y, t, T, lam: _gd_mix(s, y, t, T, lam, student_T=T)),
    Mistake("your soft term is multiplied by T² = {T2:g} (as in Hinton et al.'s loss and the authors' code); "
            "Lopez-Paz et al.'s equation weighs it by λ only.",
            lambda s, y, t, T, lam: _gd_mix(s, y, t, T, lam, soft_weight=lam * T**2)),
    Mistake("Hinton et al.'s loss (student tempered too, T² factor) is not the loss of this exercise: use the "
            "student's plain softmax and weigh the soft term by λ.",
            lambda s, y, t, T, lam: (1 - lam) * F.cross_entropy(s, y) + lam * _kd_loss_reference(s, t, T)),
    Mistake("the soft term is a cross-entropy −Σ s log σ(z_s), not the KL divergence: the two differ by the "
            "entropy of the soft labels (same gradient, different value).",
            _gd_kl_soft),
    Mistake("sum over the batch instead of the mean? Your value is B = {B} times too large.",
            lambda s, y, t, T, lam: _gd_mix(s, y, t, T, lam, reduce=torch.sum)),
    Mistake("you returned one value per sample (shape [{B}]); the loss is their mean over the batch, a scalar.",
            lambda s, y, t, T, lam: _gd_mix(s, y, t, T, lam, reduce=lambda v: v)),
    Mistake("averaged over the classes too? Sum the cross-entropy over the classes, average over the batch only.",
            lambda s, y, t, T, lam: _gd_mix(s, y, t, T, lam) / s.shape[-1]),
    Mistake("nan or inf: log(softmax(z_s)) underflows to log 0 for confident logits. Use log_softmax(z_s).",
            _gd_log_of_softmax),
]


def check_generalized_distillation_loss(fn) -> CheckResult:
    r"""Check ``fn(student_logits, labels, teacher_logits, temperature, imitation)`` against
    :func:`kdtools.privileged.generalized_distillation_loss`.

    That is :math:`\frac1B\sum_b[(1-\lambda)\,\mathrm{CE}(y_b, \sigma(z_{s,b})) + \lambda\,\mathrm{CE}(s_b,
    \sigma(z_{s,b}))]` with :math:`s_b = \mathrm{softmax}(z_{t,b}/T)` (Lopez-Paz et al., 2016, Eq. 2). Six
    checks: two mixes, λ = 0, λ = 1, a very confident student and the gradient.
    """
    return run_checks(
        fn, name="generalized_distillation_loss",
        signature="generalized_distillation_loss(student_logits, labels, teacher_logits, temperature, imitation)",
        reference=_gd_loss_reference, cases=_gd_cases(), mistakes=_GD_MISTAKES,
        error_hints=[_KEEPDIM_HINT, _LAST_DIM_HINT, _IN_PLACE_HINT],
        nonfinite_hint="nan or inf: the log of a probability that underflowed to 0. Use log_softmax(z_s).",
        covers="two mixes, λ = 0 and 1, gradients",
        atol=1e-5)


# ----------------------------------------------------------------------------- one MUNGE step (model compression)
from ..compression import munge_step as _munge_step_reference  # noqa: E402


def _munge_case(description, seed, shape, s, swap_rate=0.5, noise_scale=1.0, same_columns=0, swap=None):
    def make_args():
        gen = torch.Generator().manual_seed(seed)
        x = 4.0 * torch.rand(shape, generator=gen)
        neighbour = 4.0 * torch.rand(shape, generator=gen)
        neighbour[..., :same_columns] = x[..., :same_columns]  # attributes where the pair agrees
        mask = torch.rand(shape, generator=gen) < swap_rate if swap is None else torch.full(shape, swap)
        noise = noise_scale * torch.randn(shape, generator=gen)
        return x, neighbour, mask, noise, s

    return Case(description, make_args, params={"s": s})


def _munge_cases():
    return [
        _munge_case("3 examples × 6 attributes, s = 4, about half of them swapped", 40, (3, 6), 4.0),
        _munge_case("5 examples × 8 attributes at s = 1, the widest Gaussians", 41, (5, 8), 1.0),
        _munge_case("nothing swapped (swap all False): the examples come back unchanged", 42, (4, 5), 2.0,
                    swap=False),
        _munge_case("everything swapped with zero noise: exactly the neighbours", 43, (2, 7), 3.0, swap=True,
                    noise_scale=0.0),
        _munge_case("the first 3 attributes equal the neighbour's: zero width, the value stays", 44, (4, 6), 2.0,
                    swap_rate=0.8, same_columns=3),
        _munge_case("one 8 × 8 digit as a row of 64 pixels, s = 10", 45, (1, 64), 10.0),
    ]


_MUNGE_MISTAKES = [
    Mistake("the Gaussian is centred at the neighbour's value x', not at the example's own value x: "
            "x' + noise · |x − x'| / s.",
            lambda x, n, m, z, s: torch.where(m, x + z * (x - n).abs() / s, x)),
    Mistake("you used the neighbour's value but no noise: a swapped attribute is drawn from N(x', (|x − x'| / s)²), "
            "i.e. x' + noise · |x − x'| / s.",
            lambda x, n, m, z, s: torch.where(m, n, x)),
    Mistake("the swap is inverted: attributes whose swap flag is True are the ones to resample; the others keep x.",
            lambda x, n, m, z, s: torch.where(m, x, n + z * (x - n).abs() / s)),
    Mistake("you resampled every attribute: only those whose swap flag is True change, the others keep x.",
            lambda x, n, m, z, s: n + z * (x - n).abs() / s),
    Mistake("the standard deviation is |x − x'| / s: divide by s = {s:g}.",
            lambda x, n, m, z, s: torch.where(m, n + z * (x - n).abs(), x)),
    Mistake("you multiplied by s = {s:g}; the standard deviation is |x − x'| / s (a larger s means narrower "
            "Gaussians).",
            lambda x, n, m, z, s: torch.where(m, n + z * (x - n).abs() * s, x)),
    Mistake("the standard deviation is |x − x'| / s, with the absolute value. Without it the sign of the noise "
            "flips where x < x' (same distribution, but not the sample this noise gives).",
            lambda x, n, m, z, s: torch.where(m, n + z * (x - n) / s, x)),
    Mistake("you scaled the noise by the variance (|x − x'| / s)²; scale it by the standard deviation "
            "|x − x'| / s.",
            lambda x, n, m, z, s: torch.where(m, n + z * ((x - n) / s) ** 2, x)),
]


def check_munge_step(fn) -> CheckResult:
    r"""Check ``fn(x, neighbour, swap, noise, s)`` against :func:`kdtools.compression.munge_step`.

    That is :math:`x'_a + \varepsilon_a |x_a - x'_a| / s` where ``swap`` is True and :math:`x_a` elsewhere.
    Six checks: s = 4, 1 and 10, nothing swapped, everything swapped without noise, and attributes where
    the example and its neighbour agree.
    """
    return run_checks(
        fn, name="munge_step", signature="munge_step(x, neighbour, swap, noise, s)",
        reference=_munge_step_reference, cases=_munge_cases(), mistakes=_MUNGE_MISTAKES,
        error_hints=[ErrorHint(r"where expected condition to be a boolean tensor|expected condition",
                               "torch.where(condition, a, b) takes the boolean swap mask as its condition."),
                     _IN_PLACE_HINT],
        covers="s = 1, 4 and 10, no swap, full swap, ties")


# ----------------------------------------------------------------------------- median latency (inference gap)
def _median_latency_reference(times_ms, warmup):
    # torch.quantile interpolates: the mean of the two middle values for an even count, like statistics.median
    return torch.quantile(times_ms[..., warmup:], 0.5, dim=-1)


def _latency_case(description, times, warmup):
    return Case(description, lambda: (torch.tensor(times, dtype=torch.float64), warmup), {"warmup": warmup})


def _median_latency_cases():
    return [
        _latency_case("10 timings of one model, a slow first call, warmup = 2 (8 timings left)",
                      [30.0, 12.0, 1.0, 1.4, 1.1, 1.2, 5.0, 1.3, 0.9, 1.25], 2),
        _latency_case("7 timings, warmup = 0 (an odd count: the middle value)",
                      [2.0, 2.5, 9.0, 2.2, 2.1, 3.0, 2.4], 0),
        _latency_case("3 models × 7 timings each (shape [3, 7]), warmup = 1",
                      [[8.0, 1.0, 1.2, 1.1, 1.6, 1.3, 1.4],
                       [20.0, 0.2, 0.25, 0.3, 0.22, 0.9, 0.21],
                       [5.0, 3.0, 3.5, 3.1, 3.3, 3.2, 4.0]], 1),
        _latency_case("a single timing left after warmup = 4", [9.0, 8.0, 7.0, 6.0, 0.5], 4),
    ]


_MEDIAN_LATENCY_MISTAKES = [
    Mistake("you averaged the timings: one slow outlier (a garbage collection, another process) pulls the "
            "mean up. Take the median, which ignores it.",
            lambda x, w: x[..., w:].mean(dim=-1)),
    Mistake("the first {warmup} timings are the warm-up (memory allocation, caches, lazy initialisation): drop "
            "them before taking the median, with times_ms[..., warmup:].",
            lambda x, w: torch.quantile(x, 0.5, dim=-1)),
    Mistake("the warm-up runs are the first ones, not the last: keep times_ms[..., warmup:], "
            "not times_ms[..., :-warmup].",
            lambda x, w: torch.quantile(x[..., :x.shape[-1] - w], 0.5, dim=-1)),
    Mistake("torch.median returns the lower of the two middle values when the count is even; the median is "
            "their mean (torch.quantile(x, 0.5, dim=-1) or statistics.median).",
            lambda x, w: x[..., w:].median(dim=-1).values),
    Mistake("you returned the fastest run (the minimum); the exercise asks for the median.",
            lambda x, w: x[..., w:].min(dim=-1).values),
    Mistake("take the median of each row (dim=-1: one model's timings), not of the whole tensor.",
            lambda x, w: torch.quantile(x[..., w:].flatten(), 0.5)),
    Mistake("take the median over the last dimension (the repeats of one model), not over dim=0 (the models).",
            lambda x, w: torch.quantile(x[..., w:], 0.5, dim=0)),
]


def _plain_values_as_tensors(fn):
    # Latencies and the ECE are statistics, not losses: a Python number, a list of numbers or a numpy result is
    # as good an answer as a tensor, so it is converted before the comparison.
    if not callable(fn):
        return fn

    def converted(*args):
        out = fn(*args)
        if isinstance(out, (float, int, np.floating, np.integer)) and not isinstance(out, bool):
            return torch.tensor(float(out), dtype=torch.float64)
        if isinstance(out, np.ndarray) and out.dtype.kind in "fiu":
            return torch.from_numpy(out.astype(np.float64))
        if isinstance(out, (list, tuple)) and out and all(
                isinstance(v, (float, int, np.floating, np.integer)) and not isinstance(v, bool) for v in out):
            return torch.tensor([float(v) for v in out], dtype=torch.float64)
        return out

    return converted


def check_median_latency(fn) -> CheckResult:
    r"""Check ``fn(times_ms, warmup)``: the median of ``times_ms[..., warmup:]`` over the last dimension.

    The median of an even number of values is the mean of the two middle ones (as in
    :func:`statistics.median`, used by :func:`kdtools.bench.cpu_latency_ms`). ``fn`` may return a tensor, a
    Python number (or a list of them, one per model) or a numpy result. Four checks: an even count with
    warm-up and an outlier, an odd count without warm-up, three models at once, one timing left.
    """
    return run_checks(
        _plain_values_as_tensors(fn), name="median_latency", signature="median_latency(times_ms, warmup)",
        reference=_median_latency_reference, cases=_median_latency_cases(), mistakes=_MEDIAN_LATENCY_MISTAKES,
        error_hints=[_LAST_DIM_HINT, _IN_PLACE_HINT],
        covers="warm-up, even and odd counts, an outlier, 3 models")


# ----------------------------------------------------------------------------- the distillation objective (recipe)
def _objective_reference(student_logits, teacher_logits, labels, alpha, temperature):
    return (1 - alpha) * F.cross_entropy(student_logits, labels) + \
        alpha * _kd_loss_reference(student_logits, teacher_logits, temperature)


def _objective_case(description, seed, batch, classes, alpha, temperature, teacher=None, gradient=False):
    def make_args():
        student = _random_logits(seed, batch, classes, scale=2.0)
        t = teacher() if teacher is not None else _random_logits(seed + 1, batch, classes, scale=5.0)
        labels = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(seed + 2))
        return student, t, labels, alpha, temperature

    return Case(description, make_args, {"alpha": alpha, "T": temperature, "T2": temperature**2}, gradient)


def _objective_cases():
    confident = torch.tensor([[300.0, 0.0, -300.0, 5.0], [0.0, 300.0, 2.0, -1.0], [1.0, 2.0, 300.0, 0.0]])
    return [
        _objective_case("4 samples × 10 classes, alpha = 0.7, T = 4", 40, 4, 10, 0.7, 4.0),
        _objective_case("alpha = 0: only the cross-entropy with the labels", 43, 3, 5, 0.0, 4.0),
        _objective_case("alpha = 1: only the distillation term, T = 2", 46, 3, 5, 1.0, 2.0),
        _objective_case("alpha = 0.5, T = 1", 49, 5, 10, 0.5, 1.0),
        _objective_case("a very confident teacher (logits 300 apart), alpha = 0.9, T = 2", 52, 3, 4, 0.9, 2.0,
                        teacher=lambda: confident.clone()),
        _objective_case("the gradient with respect to 6 × 10 student logits, alpha = 0.9, T = 4", 55, 6, 10, 0.9,
                        4.0, gradient=True),
    ]


def _ce(s, y):
    return F.cross_entropy(s, y)


_OBJECTIVE_MISTAKES = [
    Mistake("alpha weighs the distillation term and 1 − alpha the cross-entropy; you swapped them.",
            lambda s, t, y, a, T: a * _ce(s, y) + (1 - a) * _kd_loss_reference(s, t, T)),
    Mistake("the distillation term lacks its T² = {T2:g} factor (Hinton et al., section 2): without it the soft "
            "targets' gradients shrink like 1/T².",
            lambda s, t, y, a, T: (1 - a) * _ce(s, y) + a * _kd_loss_reference(s, t, T) / T**2),
    Mistake("the cross-entropy with the labels uses the student's ordinary logits (T = 1), not z / T.",
            lambda s, t, y, a, T: (1 - a) * _ce(s / T, y) + a * _kd_loss_reference(s, t, T)),
    Mistake("weigh the cross-entropy by 1 − alpha: the two weights must sum to 1.",
            lambda s, t, y, a, T: _ce(s, y) + a * _kd_loss_reference(s, t, T)),
    Mistake("KL arguments reversed? The distillation term is T² KL(p_teacher ‖ p_student).",
            lambda s, t, y, a, T: (1 - a) * _ce(s, y) + a * _kd_loss_reference(t, s, T)),
    Mistake("the cross-entropy is with the true labels, not with the teacher's predicted classes.",
            lambda s, t, y, a, T: (1 - a) * _ce(s, t.argmax(-1)) + a * _kd_loss_reference(s, t, T)),
    Mistake("did you multiply the cross-entropy by T² too? Only the distillation term gets the T² factor.",
            lambda s, t, y, a, T: T**2 * ((1 - a) * _ce(s, y) + a * _kd_loss_reference(s, t, T) / T**2)),
]


def check_distillation_objective(fn) -> CheckResult:
    r"""Check ``fn(student_logits, teacher_logits, labels, alpha, temperature)`` = Hinton et al.'s objective
    :math:`(1-\alpha)\,\mathrm{CE}(y, p^s(1)) + \alpha\,T^2\,\mathrm{KL}(p^t \| p^s)` (book notation), each term
    averaged over the batch (the default of :func:`kdtools.train.distill`). Six checks: alpha = 0.7, 0, 1
    and 0.5, T = 4, 2 and 1, a very confident teacher and the gradient.
    """
    return run_checks(
        fn, name="distillation_objective",
        signature="distillation_objective(student_logits, teacher_logits, labels, alpha, temperature)",
        reference=_objective_reference, cases=_objective_cases(), mistakes=_OBJECTIVE_MISTAKES,
        error_hints=[_KEEPDIM_HINT, _LAST_DIM_HINT, _IN_PLACE_HINT],
        nonfinite_hint="nan or inf: probably the log of a probability that underflowed to 0. Work in log space: "
                       "log_softmax(z / T) instead of log(softmax(z / T)).",
        covers="alpha = 0, 0.5, 0.7, 0.9 and 1, T = 1, 2 and 4, a very confident teacher, gradients",
        atol=1e-5)


# ----------------------------------------------------------------------------- label smoothing (KD vs LS)
def _label_smoothing_reference(logits, labels, epsilon):
    return F.cross_entropy(logits, labels, label_smoothing=epsilon)


def _ls_case(description, seed, batch, classes, epsilon, scale=3.0, logits=None, gradient=False):
    def make_args():
        z = logits() if logits is not None else _random_logits(seed, batch, classes, scale=scale)
        y = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(seed + 1))
        return z, y, epsilon

    params = {"eps": epsilon, "C": classes, "C1": classes - 1, "B": batch}
    return Case(description, make_args, params, gradient)


def _ls_cases():
    confident = torch.tensor([[500.0, 0.0, -500.0, 3.0], [-2.0, 500.0, 0.0, 1.0], [0.0, 1.0, 2.0, 500.0]])
    return [
        _ls_case("4 samples × 10 classes, epsilon = 0.1", 60, 4, 10, 0.1),
        _ls_case("epsilon = 0: the ordinary cross-entropy", 62, 3, 5, 0.0),
        _ls_case("5 samples × 4 classes, epsilon = 0.3", 64, 5, 4, 0.3),
        _ls_case("epsilon = 1: the target is the uniform distribution", 66, 3, 6, 1.0),
        _ls_case("very confident logits (500 apart), epsilon = 0.1", 68, 3, 4, 0.1, logits=lambda: confident.clone()),
        _ls_case("the gradient with respect to 6 × 10 logits, epsilon = 0.1", 70, 6, 10, 0.1, gradient=True),
    ]


def _uniform_ce(z):
    """Cross-entropy with the uniform target, per sample: the mean over the classes of -log p_k."""
    return -torch.log_softmax(z, dim=-1).mean(dim=-1)


def _hard_ce(z, y):
    return F.cross_entropy(z, y, reduction="none")


def _ls_over_wrong_classes(z, y, eps):
    one_hot = F.one_hot(y, z.shape[-1]).to(z.dtype)
    target = (1 - eps) * one_hot + eps / (z.shape[-1] - 1) * (1 - one_hot)
    return -(target * torch.log_softmax(z, dim=-1)).sum(dim=-1).mean()


_LS_MISTAKES = [
    Mistake("you spread epsilon over the C − 1 = {C1} wrong classes. Label smoothing (Szegedy et al.; "
            "Müller et al.; PyTorch's label_smoothing) mixes the one-hot target with the uniform distribution over "
            "all C classes: y_LS = (1 − ε) y + ε / C, so the true class gets 1 − ε + ε / C.",
            _ls_over_wrong_classes),
    Mistake("the one-hot part must be scaled by (1 − ε) = {eps:g} less than 1: y_LS = (1 − ε) y + ε / C, "
            "whose entries sum to 1.",
            lambda z, y, eps: (_hard_ce(z, y) + eps * _uniform_ce(z)).mean()),
    Mistake("the uniform part is ε / C per class, so average −log p_k over the classes (a mean, not a sum).",
            lambda z, y, eps: ((1 - eps) * _hard_ce(z, y) - eps * torch.log_softmax(z, -1).sum(-1)).mean()),
    Mistake("you swapped the weights: the one-hot label keeps 1 − ε and the uniform distribution gets ε.",
            lambda z, y, eps: (eps * _hard_ce(z, y) + (1 - eps) * _uniform_ce(z)).mean()),
    Mistake("you only scaled the cross-entropy by (1 − ε): the smoothed target also puts ε / C on every class, "
            "which adds ε times the cross-entropy with the uniform distribution.",
            lambda z, y, eps: ((1 - eps) * _hard_ce(z, y)).mean()),
    Mistake("sum over the batch instead of the mean? Your value is B = {B} times too large.",
            lambda z, y, eps: F.cross_entropy(z, y, label_smoothing=eps, reduction="sum")),
    Mistake("you returned one value per sample (shape [{B}]); the loss is their mean over the batch, a scalar.",
            lambda z, y, eps: F.cross_entropy(z, y, label_smoothing=eps, reduction="none")),
    Mistake("averaged over the classes too? Sum target × (−log p) over the classes, then average over the batch.",
            lambda z, y, eps: F.cross_entropy(z, y, label_smoothing=eps) / z.shape[-1]),
    Mistake("inf or nan: log(softmax(z)) underflows to log 0 on confident logits, and label smoothing puts "
            "weight ε / C on every class, so it is not multiplied by 0. Use torch.log_softmax(z, dim=-1).",
            lambda z, y, eps: -(((1 - eps) * F.one_hot(y, z.shape[-1]) + eps / z.shape[-1])
                                * torch.softmax(z, -1).log()).sum(-1).mean()),
]


class ForbiddenFunction(RuntimeError):
    """Raised inside a student's function when it calls what the exercise asks them to write themselves."""


def _forbid_builtin_label_smoothing(fn):
    # The exercise forbids F.cross_entropy's label_smoothing argument (and nn.CrossEntropyLoss's, which calls
    # it): while the student's function runs, torch.nn.functional.cross_entropy refuses a non-zero value.
    if not callable(fn):
        return fn

    def label_smoothing_loss(*args):
        builtin = F.cross_entropy

        def guarded(*call_args, **kwargs):
            smoothing = kwargs.get("label_smoothing", call_args[7] if len(call_args) > 7 else 0.0)
            if smoothing:
                raise ForbiddenFunction(f"F.cross_entropy(..., label_smoothing={smoothing!r}) was called")
            return builtin(*call_args, **kwargs)

        F.cross_entropy = guarded
        try:
            return fn(*args)
        finally:
            F.cross_entropy = builtin

    return label_smoothing_loss


def check_label_smoothing_loss(fn) -> CheckResult:
    r"""Check ``fn(logits, labels, epsilon)`` = cross-entropy with the label-smoothed target
    :math:`y^{LS} = (1-\varepsilon)\,y + \varepsilon / C`, averaged over the batch
    (``F.cross_entropy(logits, labels, label_smoothing=epsilon)``, which ``fn`` itself may not call: that is
    the function the exercise asks for). Six checks: ε = 0.1, 0, 0.3 and 1, very confident logits
    (numerical stability) and the gradient.
    """
    return run_checks(
        _forbid_builtin_label_smoothing(fn), name="label_smoothing_loss",
        signature="label_smoothing_loss(logits, labels, epsilon)",
        reference=_label_smoothing_reference, cases=_ls_cases(), mistakes=_LS_MISTAKES,
        error_hints=[ErrorHint(r"ForbiddenFunction",
                               "you called PyTorch's built-in label smoothing (F.cross_entropy or "
                               "nn.CrossEntropyLoss with label_smoothing=...), which is what this exercise asks "
                               "you to write: build the smoothed target (1 − ε)·onehot(y) + ε / C yourself and "
                               "take its cross-entropy with torch.log_softmax."),
                     _KEEPDIM_HINT, _LAST_DIM_HINT, _IN_PLACE_HINT,
                     ErrorHint(r"one_hot is only applicable to index tensor|Expected.*Long",
                               "F.one_hot needs the integer labels (dtype long), not the logits or floats.")],
        nonfinite_hint="inf or nan: the log of a probability that underflowed to 0. Use torch.log_softmax.",
        covers="ε = 0, 0.1, 0.3, 1, large logits, gradients",
        atol=1e-5)


# ----------------------------------------------------------------------------- expected calibration error

from .. import metrics as _metrics  # noqa: E402


def _ece_reference(probs, labels, n_bins):
    return torch.tensor(_metrics.expected_calibration_error(probs, labels, n_bins, logits=False),
                        dtype=torch.float64)


def _ece_inputs(seed, n, classes, scale, right=0.7):
    """Softmax probabilities and labels that agree with the argmax about a fraction ``right`` of the time."""
    gen = torch.Generator().manual_seed(seed)
    probs = torch.softmax(scale * torch.randn(n, classes, generator=gen, dtype=torch.float64), dim=-1)
    random_labels = torch.randint(0, classes, (n,), generator=gen)
    keep = torch.rand(n, generator=gen, dtype=torch.float64) < right
    return probs, torch.where(keep, probs.argmax(-1), random_labels)


def _ece_case(description, make, n_bins):
    def make_args():
        probs, labels = make()
        return probs, labels, n_bins

    return Case(description, make_args, {"M": n_bins})


def _with_certain_rows():
    probs, labels = _ece_inputs(84, 40, 5, 2.0)
    probs[:8] = F.one_hot(labels[:8], 5).to(probs.dtype)  # confidence exactly 1.0, all right
    probs[8:12] = F.one_hot((labels[8:12] + 1) % 5, 5).to(probs.dtype)  # confidence 1.0, all wrong
    return probs, labels


def _ece_cases():
    return [
        _ece_case("300 predictions over 10 classes, 15 bins", lambda: _ece_inputs(80, 300, 10, 3.0), 15),
        _ece_case("a small case: 6 predictions over 3 classes, 5 bins", lambda: _ece_inputs(82, 6, 3, 1.5), 5),
        _ece_case("40 predictions of which 12 have confidence exactly 1.0, 15 bins", _with_certain_rows, 15),
        _ece_case("always certain and always right: the ECE must be 0",
                  lambda: (torch.eye(4, dtype=torch.float64), torch.arange(4)), 15),
        _ece_case("n_bins = 1: |mean confidence − accuracy|", lambda: _ece_inputs(86, 50, 4, 2.0), 1),
        _ece_case("500 predictions over 10 classes, 10 bins", lambda: _ece_inputs(88, 500, 10, 4.0, right=0.9), 10),
    ]


def _ece_from_bins(confidence, correct, bins, n_bins, weighted=True, signed=False, divide_by_bins=False):
    total, filled = torch.zeros((), dtype=torch.float64), 0
    for m in range(n_bins):
        members = bins == m
        if not members.any():
            continue
        filled += 1
        gap = correct[members].mean() - confidence[members].mean()
        gap = gap if signed else gap.abs()
        total = total + (members.double().mean() * gap if weighted else gap)
    if divide_by_bins:
        return total / n_bins
    return total if weighted else total / max(filled, 1)


def _right_closed_bins(confidence, n_bins):
    return (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)


def _ece_mistake(weighted=True, signed=False, divide_by_bins=False, true_class=False, drop_certain=False):
    def model(probs, labels, n_bins):
        confidence, predicted = probs.max(dim=-1)
        correct = (predicted == labels).double()
        if true_class:
            confidence = probs.gather(-1, labels[:, None]).squeeze(-1)
        bins = (confidence * n_bins).floor().long() if drop_certain else _right_closed_bins(confidence, n_bins)
        return _ece_from_bins(confidence, correct, bins, n_bins, weighted, signed, divide_by_bins)

    return model


_ECE_MISTAKES = [
    Mistake("weight each bin by its share of the examples, |B_m| / n: a plain average over the bins lets a "
            "bin holding 2 predictions count as much as one holding 200.",
            _ece_mistake(weighted=False)),
    Mistake("take the absolute value of each bin's gap |acc(B_m) − conf(B_m)| before summing: otherwise "
            "over- and under-confident bins cancel.",
            _ece_mistake(signed=True)),
    Mistake("you took the gap the other way round and without absolute value: use |acc − conf| per bin.",
            lambda p, y, m: -_ece_mistake(signed=True)(p, y, m)),
    Mistake("the confidence is the probability of the *predicted* class, max_k p_k, not of the true class.",
            _ece_mistake(true_class=True)),
    Mistake("you divided by the number of bins M = {M}; the weights are |B_m| / n (examples), and empty bins "
            "simply contribute nothing.",
            _ece_mistake(weighted=False, divide_by_bins=True)),
    Mistake("the predictions with confidence exactly 1.0 fell out: floor(1.0 · M) = M is past the last bin. "
            "The bins are ((m − 1)/M, m/M], so 1.0 belongs to the last one (clamp the index to M − 1).",
            _ece_mistake(drop_certain=True)),
    Mistake("you returned a percentage; return the ECE as a fraction in [0, 1].",
            lambda p, y, m: 100 * _ece_reference(p, y, m)),
]


def check_expected_calibration_error(fn) -> CheckResult:
    r"""Check ``fn(probs, labels, n_bins)`` against :func:`kdtools.metrics.expected_calibration_error`:
    :math:`\sum_m \frac{|B_m|}{n}\,|\mathrm{acc}(B_m) - \mathrm{conf}(B_m)|` over ``n_bins`` equal-width
    confidence bins (Guo et al., 2017), as a fraction. ``fn`` may return a float or a 0-d tensor. Six checks:
    15, 5, 1 and 10 bins, confidences of exactly 1.0 and a perfectly calibrated case.
    """
    return run_checks(
        _plain_values_as_tensors(fn), name="expected_calibration_error",
        signature="expected_calibration_error(probs, labels, n_bins)",
        reference=_ece_reference, cases=_ece_cases(), mistakes=_ECE_MISTAKES,
        error_hints=[ErrorHint(r"out of bounds|out of range",
                               "floor(confidence · n_bins) is n_bins for confidence 1.0, one past the last bin: "
                               "clamp the bin index to n_bins − 1 (the last bin is closed on the right)."),
                     _MAX_PAIR_HINT, _IN_PLACE_HINT],
        covers="15, 10, 5, 1 bins, confidence 1.0")


# ----------------------------------------------------------------------------- one distillation step (dark knowledge)
from dataclasses import dataclass, field as _field  # noqa: E402
from typing import Callable, Dict, List, Tuple  # noqa: E402

from torch import nn  # noqa: E402

from . import _harness  # noqa: E402
from ._harness import _Checker, _Failure, _describe  # noqa: E402


class _TinyNet(nn.Module):
    """6 inputs -> 8 hidden units with batch norm -> 5 classes. The batch norm makes the training and
    evaluation modes compute different outputs, and updates its running statistics in training mode only."""

    def __init__(self, seed: int, scale: float = 1.0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.fc1, self.bn, self.fc2 = nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 5)
        with torch.no_grad():
            for parameter in (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias):
                parameter.copy_(scale * 0.5 * torch.randn(parameter.shape, generator=gen))
            self.bn.weight.copy_(1 + 0.2 * torch.randn(8, generator=gen))
            self.bn.bias.copy_(0.2 * torch.randn(8, generator=gen))

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


@dataclass(frozen=True)
class _StepCase:
    description: str
    seed: int
    temperature: float
    alpha: float
    steps: int = 1
    batch: int = 8
    params: Dict[str, float] = _field(default_factory=dict)


def _step_cases() -> List[_StepCase]:
    return [
        _StepCase("one step on a batch of 8, T = 4, alpha = 0.9", 90, 4.0, 0.9, params={"T": 4.0, "T2": 16.0}),
        _StepCase("two steps in a row on two batches, T = 2, alpha = 0.7", 92, 2.0, 0.7, steps=2,
                  params={"T": 2.0, "T2": 4.0}),
        _StepCase("one step with alpha = 1 (only the soft targets), T = 8", 94, 8.0, 1.0,
                  params={"T": 8.0, "T2": 64.0}),
    ]


def _distillation_step_reference(student, teacher, images, labels, optimizer, temperature, alpha, *,
                                 t_power=2, kl="teacher-first", student_train=True, zero_grad=True,
                                 swap_alpha=False, tempered_ce=False):
    """The reference step; its keyword arguments model the typical mistakes."""
    if student_train:
        student.train()
    teacher.eval()
    with torch.no_grad():
        teacher_logits = teacher(images)
    student_logits = student(images)
    if kl == "teacher-first":
        soft = _kd_loss_reference(student_logits, teacher_logits, temperature) / temperature**2
    elif kl == "student-first":
        soft = _kl_per_sample(_log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)).mean()
    else:  # "probabilities-into-kl-div": F.kl_div(softmax(z_s / T), softmax(z_t / T))
        soft = F.kl_div(torch.softmax(student_logits / temperature, -1), torch.softmax(teacher_logits / temperature, -1),
                        reduction="batchmean")
    hard = F.cross_entropy(student_logits / temperature if tempered_ce else student_logits, labels)
    weight_soft, weight_hard = (1 - alpha, alpha) if swap_alpha else (alpha, 1 - alpha)
    loss = weight_hard * hard + weight_soft * temperature**t_power * soft
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _step_mistake(**kwargs):
    return lambda *args: _distillation_step_reference(*args, **kwargs)


_STEP_MISTAKES = [
    Mistake("the soft-target term lacks its T² = {T2:g} factor: α·T²·KL(p^t ‖ p^s). Without it the soft targets' "
            "gradients are about T² times too small.", _step_mistake(t_power=0)),
    Mistake("the soft-target term is multiplied by T = {T:g}; the factor is T² = {T2:g}.", _step_mistake(t_power=1)),
    Mistake("KL arguments reversed: distillation uses KL(p^t ‖ p^s) = Σ p^t (log p^t − log p^s), the teacher's "
            "distribution first. With F.kl_div(input, target), input is the student's log-probabilities.",
            _step_mistake(kl="student-first")),
    Mistake("F.kl_div expects the student's log-probabilities as its first argument: pass "
            "F.log_softmax(student_logits / T, dim=-1), not F.softmax.",
            _step_mistake(kl="probabilities-into-kl-div")),
    Mistake("alpha weighs the soft-target term and 1 − alpha the cross-entropy; you swapped them.",
            _step_mistake(swap_alpha=True)),
    Mistake("the cross-entropy with the labels uses the student's ordinary logits (T = 1), not z^s / T.",
            _step_mistake(tempered_ce=True)),
    Mistake("the student was left in evaluation mode: call student.train() before its forward pass, so that "
            "batch norm (and dropout) behave as in training.", _step_mistake(student_train=False)),
    Mistake("the second step also used the first step's gradients: PyTorch adds new gradients to the old ones, "
            "so call optimizer.zero_grad() before loss.backward() in every step.", _step_mistake(zero_grad=False)),
]

_STEP_ERROR_HINTS = [
    ErrorHint(r"does not require grad|does not have a grad_fn",
              "the loss is cut off from the autograd graph: compute only the teacher's logits under "
              "torch.no_grad(), the student's forward pass must be recorded."),
    ErrorHint(r"backward through the graph a second time",
              "call loss.backward() once per step, on the loss of this batch."),
    ErrorHint(r"multi-target not supported|Expected.*Long|expected scalar type Long",
              "F.cross_entropy takes the logits and the integer labels (the `labels` argument)."),
]


def _state(module: nn.Module) -> Dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def _step_inputs(case: _StepCase):
    gen = torch.Generator().manual_seed(case.seed)
    images = [1.0 + 2.0 * torch.randn(case.batch, 6, generator=gen) for _ in range(case.steps)]
    labels = [torch.randint(0, 5, (case.batch,), generator=gen) for _ in range(case.steps)]
    return images, labels


def _run_step_case(step, case: _StepCase):
    """Fresh models in the modes a previous epoch may have left them (student in eval, teacher in train
    mode), ``case.steps`` calls of ``step``; returns the returned values, both models and the teacher's state."""
    student, teacher = _TinyNet(case.seed + 1), _TinyNet(case.seed + 2, scale=3.0)
    student.eval()
    teacher.train()
    teacher_before = _state(teacher)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
    temperature, alpha, returned = case.temperature, case.alpha, []
    for images, labels in zip(*_step_inputs(case)):
        returned.append(step(student, teacher, images, labels, optimizer, temperature, alpha))
    return returned, student, teacher, teacher_before


def _same_state(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], rtol=1e-4, atol=1e-6) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].double(), b[k].double(), rtol=rtol, atol=atol)
                                         for k in a)


def _largest_difference(got: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor]) -> Tuple[str, float]:
    return max(((k, float((got[k].double() - expected[k].double()).abs().max())) for k in expected
                if got[k].is_floating_point()), key=lambda item: item[1])


def _as_loss_value(value) -> Optional[float]:
    if isinstance(value, bool):
        return None
    if isinstance(value, (float, int, np.floating, np.integer)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        return float(value.detach())
    return None


def _check_one_step_case(number: int, case: _StepCase, checker: _Checker) -> None:
    header = f"✗ distillation_step: {{}} on check {number}/{len(checker.cases)} ({case.description})."
    expected_losses, expected_student, _, _ = _run_step_case(_distillation_step_reference, case)
    reference_state = _state(expected_student)
    returned, student, teacher, teacher_before = checker.call_student(
        number, Case(case.description, lambda: ()), (case,))

    if any(p.grad is not None for p in teacher.parameters()):
        raise _Failure(header.format("gradients reached the teacher"),
                       "  Hint: compute the teacher's logits under `with torch.no_grad():`. The teacher is fixed: "
                       "backpropagating into it wastes time and memory, and its gradients would pile up.")
    if not _same_state(_state(teacher), teacher_before, rtol=0, atol=0):
        raise _Failure(header.format("the teacher changed"),
                       "  Hint: the teacher's batch-norm statistics were updated because it ran in training mode: "
                       "call teacher.eval() before its forward pass (it may arrive in training mode).")
    got_state = _state(student)
    initial = _TinyNet(case.seed + 1)
    if all(torch.equal(p.detach(), q.detach()) for p, q in zip(student.parameters(), initial.parameters())):
        raise _Failure(header.format("the student's parameters did not change"),
                       "  Hint: after loss.backward(), call optimizer.step(); call optimizer.zero_grad() before "
                       "loss.backward(), not between backward and step (that erases the gradients).")
    if not _same_state(got_state, reference_state):
        where, size = _largest_difference(got_state, reference_state)
        lines = [header.format("wrong update"),
                 f"    largest difference from the reference after the step: {size:.3g} in {where}"]
        for mistake in _STEP_MISTAKES:
            try:
                _, modelled, _, _ = _run_step_case(mistake.model, case)
            except Exception:  # a mistake model may not apply to this case
                continue
            if _same_state(got_state, _state(modelled)):
                lines.append("  Hint: " + mistake.hint.format(**case.params))
                break
        else:
            lines.append("  Hint: this update matches none of the usual mistakes; compare your loss with "
                         "(1 − α)·CE(y, p^s(1)) + α·T²·KL(p^t ‖ p^s) on this small case.")
        raise _Failure(*lines)
    for k, (value, expected) in enumerate(zip(returned, expected_losses), start=1):
        got = _as_loss_value(value)
        if got is None:
            raise _Failure(header.format(f"returned {_describe(value)}" if value is not None else "returned None"),
                           "  Hint: return the loss of this batch as one number (loss.item()) or a 0-d tensor."
                           if value is not None else "  Hint: did you forget `return loss.item()`?")
        if not np.isclose(got, expected, rtol=1e-4, atol=1e-6):
            raise _Failure(header.format("right update, wrong returned loss"),
                           f"    step {k}: expected {expected:.6g}, received {got:.6g}",
                           "  Hint: return the value of the loss you backpropagated, the one computed on this "
                           "batch before the update.")


def check_distillation_step(fn) -> CheckResult:
    r"""Check ``fn(student, teacher, images, labels, optimizer, temperature, alpha)``: one SGD step of
    :math:`(1-\alpha)\,\mathrm{CE}(y, p^s(1)) + \alpha\,T^2\,\mathrm{KL}(p^t \| p^s)` that returns the loss.

    Runs it on a tiny network with batch norm (student handed over in evaluation mode, teacher in training
    mode, as a previous evaluation or fine-tuning may leave them) and compares the student's parameters and
    statistics after the step with the reference's. It also checks that no gradient reached the teacher
    and that the teacher did not change. Three checks: T = 4, two steps in a row (zeroed gradients), alpha = 1.
    """
    name = "distillation_step"
    if not callable(fn):
        print(f"✗ {name}: expected a function, got {_describe(fn)}.\n"
              f"  Hint: pass the function itself, without calling it: check_{name}({name}).")
        return CheckResult(False)
    cases = _step_cases()
    # the harness's call_student turns the student's exceptions into feedback that points at their line
    checker = _Checker(lambda case: _run_step_case(fn, case), name,
                       "distillation_step(student, teacher, images, labels, optimizer, temperature, alpha)",
                       None, cases, [], _STEP_ERROR_HINTS, "", 1e-4, 1e-6, {}, False, _harness.TIME_LIMIT_S)
    try:
        # Private random state: the models are built from fixed seeds and the notebook's stream is left alone.
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(0)
            for number, case in enumerate(cases, start=1):
                _check_one_step_case(number, case, checker)
    except _Failure as failure:
        print("\n".join(failure.lines))
        return CheckResult(False)
    except Exception as error:  # a result so unusual that comparing it failed: still feedback, not a traceback
        print(f"✗ {name}: could not check your function ({type(error).__name__}: {error}).\n"
              f"  Hint: update the student in place with the optimizer and return the loss as a number.")
        return CheckResult(False)
    print(f"✓ {name} passed all {len(cases)} checks: T = 2, 4 and 8, two steps, teacher untouched.")
    return CheckResult(True)


__all__ += ["check_distillation_step"]
