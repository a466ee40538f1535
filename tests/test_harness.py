"""The checker harness itself: time limits, forbidden functions, plain-number answers, gradient hints."""
import signal
import threading
import time

import pytest
import torch
import torch.nn.functional as F

from kdtools.exercises import _harness
from kdtools.exercises._harness import Case, run_checks

SOFTMAX_ALIASES = ["torch.softmax", "torch.nn.functional.softmax", "torch.Tensor.softmax", "torch.special.softmax"]


def _softmax_checks(fn, **options):
    cases = [Case("4 × 5 logits, T = 2", lambda: (torch.randn(4, 5, generator=torch.Generator().manual_seed(0),
                                                              dtype=torch.float64), 2.0), gradient=True)]
    return run_checks(fn, name="softmax", signature="softmax(logits, temperature)",
                      reference=lambda z, t: torch.softmax(z / t, dim=-1), cases=cases, **options)


def softmax_by_hand(z, t):
    e = (z / t - (z / t).max(dim=-1, keepdim=True).values).exp()
    return e / e.sum(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------- time limit
def loops_forever(z, t):
    while True:
        pass


def loops_forever_swallowing_exceptions(z, t):
    while True:
        try:
            time.sleep(0.01)
        except Exception:  # a student's catch-all must not swallow the time limit
            pass


@pytest.mark.parametrize("fn", [loops_forever, loops_forever_swallowing_exceptions])
def test_an_endless_loop_fails_after_the_time_limit_with_a_hint(fn, capsys):
    start = time.perf_counter()
    assert _softmax_checks(fn, time_limit_s=0.3).passed is False
    assert time.perf_counter() - start < 5.0
    printed = capsys.readouterr().out
    assert printed.startswith("✗ softmax: no result within 0.3 s on check 1/1")
    assert "endless loop?" in printed
    assert max(len(line) for line in printed.splitlines()[1:]) <= 90  # the book's page is narrow


def test_a_previous_timer_and_handler_are_restored():
    fired = []

    def handler(*args):
        fired.append(1)

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 30.0)
    try:
        assert _softmax_checks(loops_forever, time_limit_s=0.2).passed is False
        assert _softmax_checks(softmax_by_hand).passed is True
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25.0 < left <= 30.0  # the outer timer still runs, minus the time spent
        assert signal.getsignal(signal.SIGALRM) is handler and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_the_time_limit_also_holds_off_the_main_thread(capsys):
    results = []
    worker = threading.Thread(target=lambda: results.append(_softmax_checks(
        lambda z, t: time.sleep(3) or softmax_by_hand(z, t), time_limit_s=0.3)))
    start = time.perf_counter()
    worker.start()
    worker.join()
    assert results == [False] and time.perf_counter() - start < 2.5
    assert "no result within 0.3 s" in capsys.readouterr().out


def test_the_time_limit_must_be_positive():
    with pytest.raises(ValueError, match="time_limit_s must be > 0"):
        _softmax_checks(softmax_by_hand, time_limit_s=0)


# ----------------------------------------------------------------------------- forbidden functions
def with_torch_softmax(z, t):
    return torch.softmax(z / t, dim=-1)


def with_functional_softmax(z, t):
    return F.softmax(z / t, dim=-1)


def with_method_softmax(z, t):
    return (z / t).softmax(dim=-1)


softmax = torch.softmax  # what `from torch import softmax` binds in the student's notebook


def with_imported_softmax(z, t):
    return softmax(z / t, dim=-1)


@pytest.mark.parametrize("fn, used", [(with_torch_softmax, "torch.softmax"),
                                      (with_functional_softmax, "torch.nn.functional.softmax"),
                                      (with_method_softmax, "torch.Tensor.softmax"),
                                      (with_imported_softmax, "torch.softmax")])
def test_a_forbidden_call_fails_even_with_the_right_value(fn, used, capsys):
    assert _softmax_checks(fn).passed is True  # right value and gradient
    capsys.readouterr()
    assert _softmax_checks(fn, forbidden=SOFTMAX_ALIASES).passed is False
    printed = capsys.readouterr().out
    assert printed.startswith(f"✗ softmax: calls {used} on check 1/1")
    assert f"{used} is not allowed here" in printed


def test_forbidden_names_carry_their_own_hint_and_are_restored(capsys):
    originals = {name: getattr(torch, name) for name in ("softmax", "exp")}
    assert _softmax_checks(with_torch_softmax, forbidden={"torch.softmax": "build it from torch.exp."}) == False  # noqa: E712
    assert "Hint: build it from torch.exp." in capsys.readouterr().out
    assert all(getattr(torch, name) is fn for name, fn in originals.items())
    assert "softmax" not in torch.Tensor.__dict__ and softmax is originals["softmax"]


def test_calls_made_inside_torch_are_not_the_students():
    # F.softmax calls Tensor.softmax internally; only Tensor.softmax is forbidden here
    assert _softmax_checks(with_functional_softmax, forbidden=["torch.Tensor.softmax"]).passed is True
    assert _softmax_checks(softmax_by_hand, forbidden=SOFTMAX_ALIASES).passed is True


def test_a_misspelt_forbidden_name_is_the_checkers_error():
    with pytest.raises(ValueError, match="torch.softmaks"):
        _softmax_checks(softmax_by_hand, forbidden=["torch.softmaks"])


# ----------------------------------------------------------------------------- plain numbers
def _count_checks(fn, **options):
    cases = [Case("5 values", lambda: (torch.tensor([1.0, 2.0, 3.0, 5.0, 8.0], dtype=torch.float64),)),
             Case("3 values", lambda: (torch.tensor([2.0, 7.0, 1.0], dtype=torch.float64),))]
    return run_checks(fn, name="largest", signature="largest(x)", reference=lambda x: x.max(), cases=cases,
                      **options)


@pytest.mark.parametrize("fn", [lambda x: x.max(), lambda x: float(x.max()), lambda x: int(x.max()),
                                lambda x: x.max().item(), lambda x: x.numpy().max()])
def test_a_number_is_an_answer_where_no_gradient_is_checked(fn):
    assert _count_checks(fn).passed is True


def test_a_wrong_number_is_still_wrong(capsys):
    assert _count_checks(lambda x: float(x.min())).passed is False
    printed = capsys.readouterr().out
    assert "wrong value on check 1/2" in printed and "expected: 8" in printed and "received: 1" in printed


def test_numbers_can_be_refused_explicitly(capsys):
    assert _count_checks(lambda x: float(x.max()), numbers=False).passed is False
    assert "returned a Python number" in capsys.readouterr().out


def test_a_number_is_refused_where_the_gradient_is_checked(capsys):
    assert _softmax_checks(lambda z, t: float(softmax_by_hand(z, t)[0, 0].detach())).passed is False
    assert "returned a Python number" in capsys.readouterr().out


def test_bools_are_not_numbers(capsys):
    assert _count_checks(lambda x: True).passed is False
    assert "returned a bool" in capsys.readouterr().out


# ----------------------------------------------------------------------------- gradient hints
def nan_gradient(z, t):
    # sqrt(0) has an infinite derivative and 0 · inf = nan: the value is untouched, the gradient is not
    return softmax_by_hand(z, t) + 0.0 * torch.sqrt(z - z)


def detached_gradient(z, t):
    return softmax_by_hand(z.detach(), t) + 0.0 * z


def halved_gradient(z, t):
    p = softmax_by_hand(z, t)
    return p.detach() + 0.5 * (p - p.detach())


@pytest.mark.parametrize("fn, says, never", [
    (nan_gradient, "your gradient contains nan or inf although the value is right", "detached"),
    (detached_gradient, "no gradient flows back to the input", "nan"),
    (halved_gradient, "a step changes the gradient without changing the value", "nan or inf"),
])
def test_each_wrong_gradient_gets_its_own_hint(fn, says, never, capsys):
    assert _softmax_checks(fn).passed is False
    printed = capsys.readouterr().out
    assert "right value, wrong gradient" in printed
    hint = printed[printed.index("Hint:"):]
    assert says in hint.replace("\n  ", " ") and never not in hint, printed
    assert max(len(line) for line in hint.splitlines()) <= 90


def test_harness_default_time_limit_is_generous():
    assert _harness.TIME_LIMIT_S >= 5.0  # a correct solution on a busy laptop must never hit it
