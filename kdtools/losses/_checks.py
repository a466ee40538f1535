"""Argument validation shared by the loss functions (private).

Every check raises ``ValueError`` whose message names the argument and shows what it
received, so that a student sees ``student_logits must be a [B, C] tensor, got shape
(4, 3, 2)`` instead of a broadcasting error from deep inside torch.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Iterable, Mapping, Sequence

import torch

_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def shape_of(x: torch.Tensor) -> tuple:
    return tuple(x.shape)


def check_tensor(
    x, name: str, layout: str, ndim: int | None = None, allow_empty: bool = False, finite: bool = True
) -> torch.Tensor:
    """A floating-point tensor of rank ``ndim`` (``layout`` documents the axes), finite unless
    ``finite=False`` — then the caller defers that test to :func:`finite_or_raise`."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a {layout} torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(
            f"{name} must be a {layout} tensor (rank {ndim}), got shape {shape_of(x)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        if allow_empty:
            return x
        raise ValueError(f"{name} must not be empty, got shape {shape_of(x)}")
    if finite and not all_finite(x):
        raise_non_finite(x, name)
    return x


def raise_non_finite(x: torch.Tensor, name: str):
    raise ValueError(f"{name} contains non-finite values (nan or inf); shape {shape_of(x)}")


def finite_or_raise(result, **inputs: torch.Tensor):
    """Return ``result`` (a tensor or a tuple of tensors); if it is not finite, name the input that is not.

    A NaN or an infinity in any input of the losses propagates to their result, so scanning the
    (possibly large) inputs only when the result is not finite gives the same ``ValueError`` as
    checking them first, without an extra pass over every feature map on the normal path.
    A non-finite result from finite inputs (an overflow) is returned as it is.
    """
    outputs = result if isinstance(result, tuple) else (result,)
    if all(bool(torch.isfinite(out.detach()).all()) for out in outputs):
        return result
    for name, x in inputs.items():
        if not all_finite(x):
            raise_non_finite(x, name)
    return result


def all_finite(x: torch.Tensor) -> bool:
    """True when every entry is finite.

    Fast path: one reduction (a NaN or an infinity makes the sum non-finite). Only when the sum
    is not finite — a bad entry, or a sum of huge finite values that overflowed — is the
    elementwise ``isfinite`` test run to tell the two apart.
    """
    x = x.detach()
    if bool(torch.isfinite(x.sum())):
        return True
    return bool(torch.isfinite(x).all())


def check_same_batch(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"batch sizes differ: {name_a} has {a.shape[0]} (shape {shape_of(a)}), "
            f"{name_b} has {b.shape[0]} (shape {shape_of(b)})"
        )


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str, what: str = "shapes") -> None:
    if a.shape != b.shape:
        check_same_batch(a, b, name_a, name_b)
        raise ValueError(f"{what} differ: {name_a} has shape {shape_of(a)}, {name_b} has shape {shape_of(b)}")


def check_positive(value, name: str, allow_zero: bool = False) -> float:
    """A finite real number > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    bad = value < 0 if allow_zero else value <= 0
    if bad or not math.isfinite(value):
        relation = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {relation}, got {value!r}")
    return value


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(value, name: str, options: Mapping | Iterable) -> None:
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of {sorted(options)}")


def check_integer_tensor(x, name: str, layout: str, ndim: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a {layout} integer torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must be a {layout} tensor (rank {ndim}), got shape {shape_of(x)}")
    if x.dtype not in _INTEGER_DTYPES:
        raise ValueError(f"{name} must have an integer dtype (e.g. torch.int64), got dtype {x.dtype}")
    return x


def check_index_range(x: torch.Tensor, name: str, upper: int) -> None:
    """Every entry of the integer tensor ``x`` lies in ``[0, upper)``."""
    if x.numel() == 0:
        return
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi >= upper:
        raise ValueError(f"{name} values must lie in [0, {upper}), got min {lo} and max {hi}")


def check_targets(target, batch: int, num_classes: int, name: str = "target") -> torch.Tensor:
    check_integer_tensor(target, name, "[B]", 1)
    if target.shape[0] != batch:
        raise ValueError(f"batch sizes differ: {name} has {target.shape[0]} entries, the logits have {batch} rows")
    check_index_range(target, name, num_classes)
    return target


def check_logit_pair(student, teacher, layout: str = "[B, C]", ndim: int = 2,
                     names=("student_logits", "teacher_logits"), finite: bool = True):
    """Student and teacher logits of the same shape; class counts must agree."""
    check_tensor(student, names[0], layout, ndim, finite=finite)
    check_tensor(teacher, names[1], layout, ndim, finite=finite)
    check_same_batch(student, teacher, *names)
    if student.shape != teacher.shape:
        raise ValueError(
            f"class counts differ: {names[0]} has shape {shape_of(student)}, "
            f"{names[1]} has shape {shape_of(teacher)}"
        )


def check_same_length(a: Sequence, b: Sequence, name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"list lengths differ: {name_a} has {len(a)} entries, {name_b} has {len(b)}")


def check_mask_values(mask: torch.Tensor, name: str) -> None:
    """A bool mask, or a numeric one whose entries lie in [0, 1]."""
    if mask.dtype == torch.bool:
        return
    if mask.is_floating_point() and not all_finite(mask):
        raise ValueError(f"{name} contains non-finite values; shape {shape_of(mask)}")
    if mask.numel() and (float(mask.min()) < 0 or float(mask.max()) > 1):
        raise ValueError(
            f"{name} values must lie in [0, 1], got min {float(mask.min())} and max {float(mask.max())}"
        )
