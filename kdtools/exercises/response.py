r"""Checkers of Module 2 (response-based knowledge): the non-target-class term of Decoupled KD.

Reference: :func:`kdtools.losses.dkd_terms` (its second output).
"""
from __future__ import annotations

import torch

from ..losses import dkd_terms as _dkd_terms
from ._harness import Case, CheckResult, ErrorHint, Mistake, run_checks

__all__ = ["check_nckd", "check_find_bias_shift"]


def _nckd_reference(student_logits, teacher_logits, target, temperature):
    return _dkd_terms(student_logits, teacher_logits, target, temperature)[1]


def _logits(seed: int, batch: int, classes: int, scale: float) -> torch.Tensor:
    # a private generator: checking must not move the notebook's random state
    return scale * torch.randn(batch, classes, generator=torch.Generator().manual_seed(seed))


def _case(description, seed, batch, classes, temperature, gradient=False, teacher_scale=4.0, confident=False):
    def make_args():
        target = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(seed + 7))
        student = _logits(seed, batch, classes, 2.0)
        teacher = _logits(seed + 1, batch, classes, teacher_scale)
        if confident:  # the teacher is very sure of the target: p_t ~ 1, yet NCKD is well defined
            teacher[torch.arange(batch), target] += 60.0
        return student, teacher, target, temperature

    return Case(description, make_args, {"T": temperature, "T2": temperature**2, "B": batch}, gradient)


def _cases():
    return [
        _case("3 samples × 6 classes, T = 4", 60, 3, 6, 4.0),
        _case("5 samples × 10 classes, T = 1", 62, 5, 10, 1.0),
        _case("4 samples × 10 classes, T = 2, a teacher that is almost one-hot on the target", 64, 4, 10, 2.0,
              confident=True),
        _case("the gradient with respect to 4 × 10 student logits, T = 4", 66, 4, 10, 4.0, gradient=True),
    ]


def _mask(logits, target):
    return torch.zeros_like(logits, dtype=torch.bool).scatter_(1, target.unsqueeze(1), True)


def _non_target_log_probs(logits, target, temperature, renormalise=True):
    log_p = torch.log_softmax(logits / temperature, dim=-1)
    if renormalise:
        masked = log_p.masked_fill(_mask(logits, target), float("-inf"))
        log_p = log_p - torch.logsumexp(masked, dim=-1, keepdim=True)
    return log_p


def _kl_non_target(log_p, log_q, mask):
    return (log_p.exp() * (log_p - log_q)).masked_fill(mask, 0.0).sum(dim=-1)


def _nckd_variant(s, t, y, T, renormalise=True, t2=True, reverse=False):
    mask = _mask(s, y)
    log_s = _non_target_log_probs(s, y, T, renormalise)
    log_t = _non_target_log_probs(t, y, T, renormalise)
    kl = _kl_non_target(log_s, log_t, mask) if reverse else _kl_non_target(log_t, log_s, mask)
    return (T**2 if t2 else 1.0) * kl


def _full_kd(s, t, y, T):
    log_s, log_t = torch.log_softmax(s / T, -1), torch.log_softmax(t / T, -1)
    return T**2 * (log_t.exp() * (log_t - log_s)).sum(-1)


def _coupled(s, t, y, T):
    tckd, nckd, weight = _dkd_terms(s, t, y, T)
    return weight * nckd


_MISTAKES = [
    Mistake("your value is T² = {T2:g} times too small: did you forget the T² factor?",
            lambda s, t, y, T: _nckd_variant(s, t, y, T, t2=False)),
    Mistake("renormalise over the non-target classes first: p̂_j = p_j / (1 − p_t) for j ≠ t. Without it you "
            "computed Σ_{{j≠t}} p_j log(p_j^T / p_j^S) of the raw probabilities.",
            lambda s, t, y, T: _nckd_variant(s, t, y, T, renormalise=False)),
    Mistake("you returned (1 − p_t^T) · NCKD, the term as KD weighs it. NCKD itself is not multiplied by the "
            "teacher's non-target mass: that coupling is exactly what DKD removes.",
            _coupled),
    Mistake("you returned the whole KD loss: leave out the target class (mask it) and renormalise the rest.",
            _full_kd),
    Mistake("KL arguments reversed? NCKD = KL(p̂_teacher ‖ p̂_student) = Σ p̂_t (log p̂_t − log p̂_s).",
            lambda s, t, y, T: _nckd_variant(s, t, y, T, reverse=True)),
    Mistake("return one value per sample (shape [{B}]), not their mean over the batch.",
            lambda s, t, y, T: _nckd_reference(s, t, y, T).mean()),
    Mistake("divide both logits by T before the softmax (your value is the T = 1 divergence times T²).",
            lambda s, t, y, T: T**2 * _nckd_reference(s, t, y, 1.0)),
]

_GATHER_HINT = ErrorHint(r"gather|scatter|index",
                         "index the target class with a boolean mask built by "
                         "`torch.zeros_like(logits, dtype=torch.bool).scatter_(1, target.unsqueeze(1), True)`.")


def check_nckd(fn) -> CheckResult:
    r"""Check ``fn(student_logits, teacher_logits, target, temperature)`` = per-sample
    :math:`T^2\,\mathrm{KL}(\hat p^{T}\,\|\,\hat p^{S})` over the non-target classes, shape ``[B]``.

    Four checks: T = 4, 1, a nearly one-hot teacher (p_t ≈ 1) at T = 2, and the gradient.
    """
    return run_checks(
        fn, name="nckd", signature="nckd(student_logits, teacher_logits, target, temperature)",
        reference=_nckd_reference, cases=_cases(), mistakes=_MISTAKES, error_hints=[_GATHER_HINT],
        nonfinite_hint="nan or inf: log(1 − p_t) or log(p̂) of a probability that rounded to 0. Work with "
                       "log_softmax and logsumexp over the non-target classes.",
        covers="T = 1, 2 and 4, a nearly one-hot teacher, gradients", atol=1e-5)


# ----------------------------------------------------------------------------- bias shift (vanilla KD)
def _bias_shift_reference(logits, labels, cls, candidates):
    # accuracy for every candidate at once: [K, N] predictions
    shifted = logits.unsqueeze(0) + candidates.reshape(-1, 1, 1) * torch.nn.functional.one_hot(
        torch.tensor(cls), logits.shape[1]).to(logits.dtype)
    accuracy = (shifted.argmax(dim=-1) == labels).to(torch.float64).mean(dim=-1)
    return candidates[int(torch.argmax(accuracy))]  # torch.argmax returns the first maximum


def _shift_accuracies(logits, labels, cls, candidates, sign=1.0, column=True, metric="all"):
    accs = []
    for c in candidates:
        z = logits.clone()
        if column:
            z[:, cls] += sign * c
        else:
            z[cls] += sign * c
        correct = z.argmax(-1) == labels
        if metric == "class":
            correct = correct[labels == cls]
        accs.append(correct.double().mean())
    return torch.stack(accs)


def _bias_shift_case(description, seed, n, classes, cls, candidates, deficit):
    def make_args():
        gen = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, classes, (n,), generator=gen)
        logits = 2.0 * torch.randn(n, classes, generator=gen, dtype=torch.float64)
        logits += 3.0 * torch.nn.functional.one_hot(labels, classes)
        logits[:, cls] -= deficit  # a class the model has learned to under-predict
        return logits, labels, cls, torch.tensor(candidates, dtype=torch.float64)

    return Case(description, make_args, {"cls": cls})


def _tied_case(candidates, description):
    def make_args():
        # the shifts 1.4, 2.1 and 2.8 all make the 4 examples right; 0, 0.7 and 4.2 make 2 or 3 of them right
        logits = torch.tensor([[0.0, 1.0, 0.5], [0.0, 1.0, -0.2], [0.0, 1.0, -2.5], [3.0, 0.0, 0.0]],
                              dtype=torch.float64)
        labels = torch.tensor([2, 2, 1, 0])
        return logits, labels, 2, torch.tensor(candidates, dtype=torch.float64)

    return Case(description, make_args, {"cls": 2})


def _bias_shift_cases():
    return [
        _bias_shift_case("300 examples × 5 classes, class 2 under-predicted by 3, candidates −2, −1.65, … 6.4",
                         70, 300, 5, 2, [round(-2.0 + 0.35 * k, 2) for k in range(25)], 3.0),
        _bias_shift_case("500 examples × 10 classes, class 3 under-predicted by 5, candidates 0.15, 0.55, … 7.75",
                         71, 500, 10, 3, [round(0.15 + 0.4 * k, 2) for k in range(20)], 5.0),
        _tied_case([0.0, 0.7, 1.4, 2.1, 2.8, 4.2], "4 examples where the shifts 1.4, 2.1 and 2.8 tie: return the "
                   "first of them, 1.4"),
        _tied_case([4.2, 2.8, 0.7, 1.4, 0.0, 2.1], "the same 4 examples with the candidates in another order: "
                   "the first tied one in the given order is 2.8"),
        _bias_shift_case("200 examples × 4 classes, a well calibrated class 0: the best shift is near 0",
                         72, 200, 4, 0, [-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0], 0.0),
    ]


def _whole_number_search(logits, labels, cls, candidates):
    # the best whole-number shift in [-10, 10], ignoring the candidates
    whole = torch.arange(-10.0, 11.0, dtype=candidates.dtype)
    return _pick(whole, _shift_accuracies(logits, labels, cls, whole))


def _smallest_tied(logits, labels, cls, candidates):
    ordered = candidates.sort().values
    return _pick(ordered, _shift_accuracies(logits, labels, cls, ordered))


def _pick(candidates, accuracies, last=False):
    if last:
        return candidates[len(accuracies) - 1 - int(torch.argmax(accuracies.flip(0)))]
    return candidates[int(torch.argmax(accuracies))]


_BIAS_SHIFT_MISTAKES = [
    Mistake("you maximised the accuracy on class {cls} alone: its recall only grows with the shift, while the "
            "other classes lose examples to it. Choose the shift that maximises the accuracy over ALL examples.",
            lambda z, y, c, k: _pick(k, _shift_accuracies(z, y, c, k, metric="class"))),
    Mistake("you subtracted the shift: raise the logit of class {cls}, logits[:, {cls}] + shift.",
            lambda z, y, c, k: _pick(k, _shift_accuracies(z, y, c, k, sign=-1.0))),
    Mistake("you shifted row {cls} (one example) instead of column {cls} (the logit of class {cls} of every "
            "example): use logits[:, {cls}].",
            lambda z, y, c, k: _pick(k, _shift_accuracies(z, y, c, k, column=False))),
    Mistake("among equally good shifts return the FIRST one (torch.argmax does; `>=` in a loop keeps the last).",
            lambda z, y, c, k: _pick(k, _shift_accuracies(z, y, c, k), last=True)),
    Mistake("you searched whole-number shifts; try exactly the given candidates (they need not be whole "
            "numbers) and return one of them.", _whole_number_search),
    Mistake("among equally good shifts you returned the smallest; return the first one in the order the "
            "candidates are given (do not sort them).", _smallest_tied),
    Mistake("you returned the best accuracy; return the shift that achieves it (candidates[best]).",
            lambda z, y, c, k: _shift_accuracies(z, y, c, k).max()),
    Mistake("you returned the position of the best shift; return the shift itself, candidates[position].",
            lambda z, y, c, k: torch.argmax(_shift_accuracies(z, y, c, k))),
]


def check_find_bias_shift(fn) -> CheckResult:
    r"""Check ``fn(logits, labels, cls, candidates)``: the candidate :math:`b` maximising the accuracy of
    :math:`\arg\max_j (z_j + b\,[j = \mathrm{cls}])` over all examples (the first one if several tie),
    returned as a 0-d tensor (``candidates[i]``).

    Hinton et al. (2015), section 3: a student distilled without any 3s learns too low a bias for class 3;
    raising it by an amount chosen on held-out data recovers most test 3s. Five checks: two
    under-predicted classes with candidates that are not whole numbers, a three-way tie (candidates sorted
    and unsorted), a class that needs no shift.
    """
    return run_checks(
        fn, name="find_bias_shift", signature="find_bias_shift(logits, labels, cls, candidates)",
        reference=_bias_shift_reference, cases=_bias_shift_cases(), mistakes=_BIAS_SHIFT_MISTAKES,
        covers="two skewed classes, two ties, one calibrated class", atol=1e-9)
