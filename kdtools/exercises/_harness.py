"""The machinery every checker shares: run a student's function on fixed cases, compare it with the
reference, and explain a failure instead of raising.

A checker is a list of :class:`Case` objects (inputs), a reference function, and a list of
:class:`Mistake` objects: models of the typical wrong implementations. When the student's result
differs from the reference, the checker evaluates every mistake model on the failing case and, if
one reproduces the student's result, prints that mistake's hint. A hint is therefore only shown
when the student's output is exactly what that mistake produces.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import math
import os
import re
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["Case", "Mistake", "ErrorHint", "run_checks"]


@dataclass(frozen=True)
class Case:
    """One input on which the student's function must agree with the reference.

    ``make_args`` builds fresh tensors for every call, so a function that edits its inputs in place
    cannot change what the reference or the mistake models see. ``params`` fill the ``{placeholders}``
    of the hints (e.g. ``{T}``). With ``gradient=True`` the first argument requires grad and the
    gradient of the student's output with respect to it must match the reference's too.
    """

    description: str
    make_args: Callable[[], tuple]
    params: Mapping[str, Any] = field(default_factory=dict)
    gradient: bool = False


@dataclass(frozen=True)
class Mistake:
    """A typical wrong implementation: ``model`` computes what it returns, ``hint`` names it."""

    hint: str
    model: Callable[..., Any]


@dataclass(frozen=True)
class ErrorHint:
    """A hint for an exception whose ``"TypeName: message"`` matches the regular expression ``pattern``."""

    pattern: str
    hint: str


# How long the student's function may run on one case; the cases are small, so a correct solution needs
# milliseconds. run_checks(time_limit_s=...) overrides it for one checker.
TIME_LIMIT_S = 10.0

_TORCH_DIR = os.path.dirname(torch.__file__)


class _TimeLimit(BaseException):
    """Raised inside the student's code when its time is up. A BaseException, like KeyboardInterrupt, so
    that an ``except Exception`` in the student's code cannot swallow it."""


def _call_with_time_limit(fn: Callable, args: tuple, seconds: float):
    """``fn(*args)``, interrupted with :class:`_TimeLimit` after ``seconds``.

    On the main thread of a Unix process (a notebook cell, pytest) a SIGALRM timer interrupts the
    student's Python code, so an endless loop really stops; a previous timer (e.g. pytest-timeout's) is
    restored afterwards. Elsewhere the call runs in a daemon thread and the checker stops waiting for it
    (the thread itself cannot be stopped and runs on in the background).
    A single long C call (one huge torch operation) is only interrupted when it returns.
    """
    if not math.isfinite(seconds):
        return fn(*args)
    if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
        armed = [True]

        def on_alarm(signum, frame):
            if armed[0]:
                raise _TimeLimit()

        previous_handler = signal.signal(signal.SIGALRM, on_alarm)
        previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
        start = time.monotonic()
        try:
            result = fn(*args)
            armed[0] = False
            return result
        finally:
            armed[0] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_handler)
            if previous_delay:
                left = max(previous_delay - (time.monotonic() - start), 1e-3)
                signal.setitimer(signal.ITIMER_REAL, left, previous_interval)
    outcome = {}

    def target():
        try:
            outcome["value"] = fn(*args)
        except BaseException as error:  # handed to the caller's thread below
            outcome["error"] = error

    worker = threading.Thread(target=target, daemon=True, name="kdtools-checked-call")
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _TimeLimit()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _resolve(name: str):
    """``"torch.nn.functional.softmax"`` -> (the object that holds it, attribute name)."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:-1]:
            owner = getattr(owner, part)
        if hasattr(owner, parts[-1]):
            return owner, parts[-1]
        break
    raise ValueError(f"forbidden names must be importable attributes such as 'torch.softmax', got {name!r}")


@contextlib.contextmanager
def _watching(names: Sequence[str], student_globals: Optional[dict]):
    """Record, in the yielded list, every forbidden function the student's code calls.

    The named attributes are replaced by recording wrappers for the duration of the call, and so are the
    student's global names bound to the same functions (``from torch import softmax``). Calls made from
    inside torch itself (e.g. ``F.softmax`` calling ``Tensor.softmax``) are not the student's and are not
    recorded. The wrappers still compute the real result, so the student's code runs as written.
    """
    called: List[str] = []
    restore = []

    def recording(name, original):
        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            if not sys._getframe(1).f_code.co_filename.startswith(_TORCH_DIR):
                called.append(name)
            return original(*args, **kwargs)

        return wrapper

    try:
        for name in names:
            owner, attribute = _resolve(name)
            original = getattr(owner, attribute)
            wrapper = recording(name, original)
            restore.append((owner, attribute, owner.__dict__.get(attribute, _MISSING)
                            if isinstance(owner, type) else original))
            setattr(owner, attribute, wrapper)
            for key, value in list((student_globals or {}).items()):
                if value is original:
                    restore.append((student_globals, key, value))
                    student_globals[key] = wrapper
        yield called
    finally:
        for owner, attribute, original in reversed(restore):
            if isinstance(owner, dict):
                owner[attribute] = original
            elif original is _MISSING:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, original)


_MISSING = object()


class _Failure(Exception):
    """Internal: ends the run of a checker with the lines to print (never leaves :func:`run_checks`)."""

    def __init__(self, *lines: str):
        super().__init__(lines)
        self.lines = [line for line in lines if line]


def _format_number(value: float) -> str:
    return f"{value:.6g}"


def _describe(value: Any) -> str:
    """A short, readable rendering of a result for the feedback (never the whole of a large tensor)."""
    if isinstance(value, torch.Tensor):
        shape = list(value.shape)
        flat = value.detach().double().flatten()
        if flat.numel() == 1:
            number = _format_number(flat.item())
            return number if value.dim() == 0 else f"{number} (a tensor of shape {shape})"
        if flat.numel() <= 12:
            rows = value.detach().double().reshape(-1, shape[-1]) if value.dim() > 0 else flat
            text = ", ".join("[" + ", ".join(f"{v:.4g}" for v in row.tolist()) + "]" for row in rows)
            return text if value.dim() == 1 else f"[{text}]"
        head = ", ".join(f"{v:.4g}" for v in flat[:4].tolist())
        return f"a tensor of shape {shape} starting [{head}, ...]"
    if isinstance(value, np.ndarray):
        return f"a numpy array of shape {list(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _close(a: Any, b: torch.Tensor, rtol: float, atol: float) -> bool:
    """Same shape and values; NaN equals NaN so that a mistake model producing NaN can be recognised."""
    if not isinstance(a, torch.Tensor) or tuple(a.shape) != tuple(b.shape):
        return False
    return bool(torch.allclose(a.detach().double(), b.detach().double(), rtol=rtol, atol=atol, equal_nan=True))


def _first_difference(got: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> Optional[str]:
    """For tensors too large to print: where the first disagreement is."""
    g, e = got.detach().double(), expected.detach().double()
    bad = ~torch.isclose(g, e, rtol=rtol, atol=atol)
    if expected.numel() <= 12 or not bad.any():
        return None
    index = tuple(int(i) for i in torch.nonzero(bad)[0])
    return f"    first difference at index {list(index)}: expected {_format_number(e[index].item())}, " \
           f"received {_format_number(g[index].item())}"


def _clone_args(args: tuple) -> tuple:
    return tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)


def _with_grad(args: tuple) -> tuple:
    first, *rest = args
    return (first.detach().clone().requires_grad_(True), *rest)


def _gradient(output: torch.Tensor, wrt: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    # A weighted sum: the plain sum of a softmax is constant, so its gradient would be 0 for any code.
    (grad,) = torch.autograd.grad((output * weights).sum(), wrt, allow_unused=True)
    return torch.zeros_like(wrt) if grad is None else grad


def _gradient_hint(got: torch.Tensor, expected: torch.Tensor) -> str:
    """Why a right value can have a wrong gradient, told apart by what the wrong gradient looks like."""
    if not bool(torch.isfinite(got).all()) and bool(torch.isfinite(expected).all()):
        return ("your gradient contains nan or inf although the value is right: a step that is\n"
                "  harmless forwards breaks the backward pass, e.g. sqrt, log or x ** 0.5 at 0, or a\n"
                "  torch.where whose discarded branch is inf or nan (its gradient still flows back:\n"
                "  make the input safe first).")
    if not bool(got.any()) and bool(expected.any()):
        return ("no gradient flows back to the input although the value is right: part of your\n"
                "  computation is detached from the graph (`.detach()`, `.item()`, `.numpy()`,\n"
                "  `torch.tensor(...)` of an intermediate result, or `torch.no_grad()`).")
    return ("the value is right but its gradient is not: a step changes the gradient without\n"
            "  changing the value, e.g. rounding, an argmax or one-hot built from the input, clamping,\n"
            "  an in-place edit, or `.detach()` on a part that does not cancel out.")


class _Checker:
    def __init__(self, fn, name, signature, reference, cases, mistakes, error_hints, nonfinite_hint, rtol, atol,
                 forbidden, numbers, time_limit_s):
        self.fn, self.name, self.signature = fn, name, signature
        self.reference, self.cases, self.mistakes = reference, cases, mistakes
        self.error_hints, self.nonfinite_hint = error_hints, nonfinite_hint
        self.rtol, self.atol = rtol, atol
        self.forbidden, self.numbers, self.time_limit_s = forbidden, numbers, time_limit_s

    def header(self, number: int, case: Case, problem: str) -> str:
        return f"✗ {self.name}: {problem} on check {number}/{len(self.cases)} ({case.description})."

    def hint(self, text: str, case: Case) -> str:
        return "  Hint: " + text.format(**case.params)

    def call_student(self, number: int, case: Case, args: tuple):
        try:
            with _watching(list(self.forbidden), getattr(self.fn, "__globals__", None)) as called:
                got = _call_with_time_limit(self.fn, args, self.time_limit_s)
        except _TimeLimit:
            raise _Failure(self.header(number, case, f"no result within {self.time_limit_s:g} s"),
                           "  Hint: an endless loop? Every `while` condition must become False (or the loop\n"
                           "  break), and no loop may restart its own counter. These cases are small: a\n"
                           "  correct solution takes milliseconds.")
        except NotImplementedError:
            raise _Failure(f"✗ {self.name}: not implemented yet. Replace the `raise NotImplementedError(...)` "
                           f"line with your code, run that cell, then run this check again.")
        except (Exception, SystemExit) as error:
            message = f"{type(error).__name__}: {error}".strip()
            lines = [self.header(number, case, f"raised {type(error).__name__}"), f"    {message[:300]}"]
            # The innermost frame of the student's code, not of this file (a wrong signature fails right here).
            frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename != __file__]
            if frames:
                where = frames[-1]
                lines.append(f"    (in {where.name}, line {where.lineno}: {(where.line or '').strip()[:100]})")
            for known in self.error_hints:
                if re.search(known.pattern, message):
                    lines.append(self.hint(known.hint, case))
                    break
            else:
                if isinstance(error, TypeError) and "argument" in message:
                    lines.append(self.hint(f"keep the signature of the stub: {self.signature}.", case))
                else:
                    lines.append("  Hint: call your function on these inputs yourself to see the full traceback.")
            raise _Failure(*lines)
        if called:
            used = called[0]
            hint = self.forbidden[used] or f"the exercise asks you to write this yourself: {used} is not allowed here."
            raise _Failure(self.header(number, case, f"calls {used}"), self.hint(hint, case))
        return got

    def diagnose(self, got: Any, case: Case) -> Optional[str]:
        for mistake in self.mistakes:
            try:
                with torch.no_grad():
                    modelled = mistake.model(*case.make_args())
            except Exception:  # a mistake model may not apply to every case (e.g. a broadcasting error)
                continue
            if _close(got, modelled, self.rtol, self.atol):
                return self.hint(mistake.hint, case)
        return None

    def check_result(self, number: int, case: Case, got: Any, expected: torch.Tensor) -> Any:
        if got is None:
            raise _Failure(self.header(number, case, "returned None"),
                           "  Hint: did you forget the `return` statement?")
        is_number = isinstance(got, (float, int, np.floating, np.integer)) and not isinstance(got, bool)
        if is_number and self.numbers and expected.dim() == 0:
            # the answer is a number and no gradient is checked: 3.5 and tensor(3.5) are the same answer
            got = torch.tensor(float(got) if isinstance(got, (float, np.floating)) else int(got),
                               dtype=expected.dtype)
        elif is_number:
            raise _Failure(self.header(number, case, f"returned a Python number ({_describe(got)})"),
                           "  Hint: return the tensor itself (no `.item()` or `float(...)`): a number carries "
                           "no gradient, so nothing could be trained with it.")
        if isinstance(got, np.ndarray):
            raise _Failure(self.header(number, case, "returned a numpy array"),
                           "  Hint: stay in torch (torch.exp, torch.log, ...) and return a tensor, so that "
                           "gradients can flow through your function.")
        if not isinstance(got, torch.Tensor):
            raise _Failure(self.header(number, case, f"returned a {type(got).__name__}"),
                           f"    received: {_describe(got)}", "  Hint: return a torch.Tensor.")
        if tuple(got.shape) != tuple(expected.shape):
            lines = [self.header(number, case, "wrong shape"),
                     f"    expected shape: {list(expected.shape)}", f"    received shape: {list(got.shape)}"]
            lines.append(self.diagnose(got, case) or "  Hint: check which dimensions you sum, average or "
                                                        "index over: the result must have the expected shape.")
            raise _Failure(*lines)
        if _close(got, expected, self.rtol, self.atol) and bool(torch.isfinite(got).all()) == bool(
                torch.isfinite(expected).all()):
            return got
        lines = [self.header(number, case, "wrong value"),
                 f"    expected: {_describe(expected)}", f"    received: {_describe(got)}",
                 _first_difference(got, expected, self.rtol, self.atol)]
        if got.numel() == 1 and expected.item() != 0 and bool(torch.isfinite(got).all()):
            lines.append(f"    received / expected = {_format_number(got.item() / expected.item())}")
        hint = self.diagnose(got, case)
        if hint is None and not bool(torch.isfinite(got.detach()).all()) and self.nonfinite_hint:
            hint = self.hint(self.nonfinite_hint, case)
        lines.append(hint or "  Hint: this result matches none of the usual mistakes; compute your "
                             "intermediate values on this small case and compare them with the formula.")
        raise _Failure(*lines)

    def check_gradient(self, number: int, case: Case, args: tuple, got: torch.Tensor,
                       ref_args: tuple, expected: torch.Tensor) -> None:
        if not got.requires_grad:
            raise _Failure(self.header(number, case, "no gradient reaches the input"),
                           "  Hint: your result is cut off from the autograd graph. Avoid `.item()`, `.detach()`, "
                           "`.numpy()`, `torch.tensor(...)` on intermediate results and `torch.no_grad()`.")
        weights = torch.randn(expected.shape, generator=torch.Generator().manual_seed(0), dtype=expected.dtype)
        try:
            got_grad = _gradient(got, args[0], weights)
        except Exception as error:
            raise _Failure(self.header(number, case, "backward pass failed"), f"    {type(error).__name__}: {error}",
                           "  Hint: compute the result with differentiable torch operations only.")
        expected_grad = _gradient(expected, ref_args[0], weights)
        if not _close(got_grad, expected_grad, self.rtol, self.atol):
            raise _Failure(self.header(number, case, "right value, wrong gradient"),
                           f"    expected gradient: {_describe(expected_grad)}",
                           f"    received gradient: {_describe(got_grad)}",
                           _first_difference(got_grad, expected_grad, self.rtol, self.atol),
                           "  Hint: " + _gradient_hint(got_grad, expected_grad))

    def run_case(self, number: int, case: Case) -> None:
        args = case.make_args()
        ref_args = case.make_args()
        if case.gradient:
            args, ref_args = _with_grad(args), _with_grad(ref_args)
        originals = _clone_args(args)
        expected = self.reference(*ref_args)
        got = self.call_student(number, case, args)
        for arg, original in zip(args, originals):
            if isinstance(arg, torch.Tensor) and not torch.equal(arg.detach(), original):
                raise _Failure(self.header(number, case, "changed its input in place"),
                               "  Hint: an in-place operation (`x /= T`, `x -= m`, `x.exp_()`) overwrote the "
                               "caller's tensor; write `scaled = x / T` instead.")
        got = self.check_result(number, case, got, expected.detach())
        if case.gradient:
            self.check_gradient(number, case, args, got, ref_args, expected)


class CheckResult:
    """What a checker returns: truthy when every check passed.

    A checker call is usually the last line of a notebook cell; a plain ``True`` there would be shown
    under the ✓ line, so the result displays nothing in IPython and its ``repr`` is for scripts.
    """

    __slots__ = ("passed",)

    def __init__(self, passed: bool):
        self.passed = bool(passed)

    def __bool__(self) -> bool:
        return self.passed

    def __eq__(self, other: Any) -> bool:
        return self.passed == (other.passed if isinstance(other, CheckResult) else other)

    def __hash__(self) -> int:
        return hash(self.passed)

    def __repr__(self) -> str:
        return f"CheckResult(passed={self.passed})"

    def _ipython_display_(self) -> None:  # the ✓/✗ lines already said it
        pass


PASSED, FAILED = CheckResult(True), CheckResult(False)


def run_checks(fn: Any, *, name: str, signature: str, reference: Callable, cases: Sequence[Case],
               mistakes: Sequence[Mistake] = (), error_hints: Sequence[ErrorHint] = (),
               nonfinite_hint: str = "", covers: str = "", rtol: float = 1e-4, atol: float = 1e-6,
               forbidden: Union[Sequence[str], Mapping[str, str]] = (), numbers: Optional[bool] = None,
               time_limit_s: Optional[float] = None) -> CheckResult:
    """Check ``fn`` against ``reference`` on every case; print one line on success, a diagnosis on failure.

    Returns a :class:`CheckResult`, truthy if every case passes. It never raises because of ``fn``:
    exceptions, wrong types, wrong shapes, forbidden calls and endless loops become feedback. Stops at the
    first failing case, whose description, expected and received values and hint are printed.

    forbidden: functions the exercise asks the student not to use, as importable names (e.g.
        ``["torch.softmax", "torch.nn.functional.softmax", "torch.Tensor.softmax"]``: list every alias),
        or a mapping from each name to its hint. A call from the student's code fails the check.
    numbers: accept a Python number where the answer is a 0-d tensor. ``None`` (default): accept it when
        no case checks a gradient, since a number then answers the exercise as well as a tensor does.
    time_limit_s: how long ``fn`` may run on one case (default :data:`TIME_LIMIT_S`); ``math.inf``: no limit.
    """
    if not callable(fn):
        print(f"✗ {name}: expected a function, got {_describe(fn)}.\n"
              f"  Hint: pass the function itself, without calling it: check_{name}({name}).")
        return FAILED
    if not isinstance(forbidden, Mapping):
        forbidden = {used: "" for used in forbidden}
    for used in forbidden:
        _resolve(used)  # a misspelt name is the checker's bug: say so now, not on the student's first call
    if numbers is None:
        numbers = not any(case.gradient for case in cases)
    limit = TIME_LIMIT_S if time_limit_s is None else time_limit_s
    if not limit > 0:
        raise ValueError(f"time_limit_s must be > 0 (math.inf for no limit), got {time_limit_s!r}")
    checker = _Checker(fn, name, signature, reference, cases, mistakes, error_hints, nonfinite_hint, rtol, atol,
                       dict(forbidden), numbers, limit)
    try:
        # Gradients are part of the checks even if the caller sits inside torch.no_grad().
        with torch.enable_grad():
            for number, case in enumerate(cases, start=1):
                checker.run_case(number, case)
    except _Failure as failure:
        print("\n".join(failure.lines))
        return FAILED
    except Exception as error:  # a result so unusual that comparing it failed: still feedback, not a traceback
        print(f"✗ {name}: could not check your result ({type(error).__name__}: {error}).\n"
              f"  Hint: return a torch.Tensor computed from the inputs, as described in the exercise.")
        return FAILED
    print(f"✓ {name} passed all {len(cases)} checks" + (f": {covers}." if covers else "."))
    return PASSED
