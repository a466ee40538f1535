r"""Model compression in the sense of Buciluǎ, Caruana & Niculescu-Mizil (2006): MUNGE synthetic data,
the fraction of a teacher's improvement a student retains, and size and speed of arbitrary predictors.

The recipe of the paper has three steps: train a large, accurate model (there: an ensemble selected
from thousands of models); label a large *transfer set* with it; train a small neural network to
mimic those labels. When no unlabelled data exists, the transfer set is made up with **MUNGE**
(:func:`munge`), which perturbs each training example towards its nearest neighbour so that the
synthetic points stay on the data's manifold.

Nothing here imports scikit-learn: nearest neighbours come from :func:`torch.cdist`, and
:func:`count_stored_values` and :func:`latency_ms` work on any Python object or callable.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import numpy as np
import torch

from .bench import median_call_ms

__all__ = ["nearest_neighbours", "munge_step", "munge", "retained_fraction", "count_stored_values", "latency_ms"]


def _as_matrix(x: Any, name: str) -> torch.Tensor:
    """``x`` as a 2-D floating-point tensor [N, D] (a numpy array is converted, a float tensor kept)."""
    tensor = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D] of examples × attributes, got shape {list(tensor.shape)}")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.get_default_dtype())
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must hold finite values only, got nan or inf")
    return tensor


def nearest_neighbours(x: torch.Tensor, chunk_size: int = 2048) -> torch.Tensor:
    r"""Index of each row's nearest *other* row in Euclidean distance: ``j(i) = argmin_{j ≠ i} ‖x_i − x_j‖``.

    x: ``[N, D]`` with N ≥ 2. Returns a LongTensor ``[N]``. Ties go to the lowest index, so exact
    duplicates are each other's neighbours (at distance 0). Distances are computed in chunks of
    ``chunk_size`` rows, so memory stays at ``chunk_size × N`` floats.
    """
    x = _as_matrix(x, "x")
    if x.shape[0] < 2:
        raise ValueError(f"x needs at least 2 rows to have a nearest neighbour, got shape {list(x.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out = torch.empty(x.shape[0], dtype=torch.long)
    for start in range(0, x.shape[0], chunk_size):
        rows = x[start:start + chunk_size]
        # squared distances from the expansion are not exact; cdist's default switches to it above 25 rows
        distances = torch.cdist(rows, x, compute_mode="donot_use_mm_for_euclid_dist")
        own = torch.arange(start, start + rows.shape[0])
        distances[torch.arange(rows.shape[0]), own] = math.inf
        out[start:start + rows.shape[0]] = distances.argmin(dim=1)
    return out


def munge_step(x: torch.Tensor, neighbour: torch.Tensor, swap: torch.Tensor, noise: torch.Tensor,
               s: float) -> torch.Tensor:
    r"""One MUNGE perturbation of examples ``x`` towards their ``neighbour``\ s, with the randomness given.

    For every continuous attribute :math:`a` whose ``swap`` flag is set, the new value is drawn from a
    normal distribution centred at the neighbour's value with standard deviation :math:`|x_a - x'_a| / s`:

    .. math::
        \tilde x_a = \begin{cases} x'_a + \varepsilon_a\,|x_a - x'_a| / s & \text{if swap}_a \\
                                   x_a & \text{otherwise,} \end{cases}
        \qquad \varepsilon_a \sim \mathcal N(0, 1) \text{ given as } \texttt{noise}.

    x, neighbour, noise: float tensors of the same shape; swap: a boolean tensor of that shape;
    s > 0. Attributes where ``x`` and its neighbour agree stay put whatever the draw.
    """
    if not isinstance(s, numbers.Real) or isinstance(s, bool) or not s > 0 or not math.isfinite(s):
        raise ValueError(f"s must be a finite number > 0, got {s!r}")
    for name, t in (("neighbour", neighbour), ("swap", swap), ("noise", noise)):
        if tuple(t.shape) != tuple(x.shape):
            raise ValueError(f"{name} must have the shape of x {list(x.shape)}, got {list(t.shape)}")
    if swap.dtype != torch.bool:
        raise ValueError(f"swap must be a boolean tensor, got dtype {swap.dtype}")
    sampled = neighbour + noise * (x - neighbour).abs() / s
    return torch.where(swap, sampled, x)


def munge(x: Any, n_copies: int = 1, p: float = 0.5, s: float = 1.0, seed: int = 0) -> torch.Tensor:
    r"""MUNGE synthetic examples (Buciluǎ, Caruana & Niculescu-Mizil, 2006, Algorithm 1) for continuous attributes.

    For each of ``n_copies`` passes over the training set, every example :math:`e` is paired with its
    nearest neighbour :math:`e'` (Euclidean distance, :func:`nearest_neighbours`) and each attribute
    :math:`a` is, with probability ``p``, replaced by a draw from
    :math:`\mathcal N\big(e'_a,\; (|e_a - e'_a| / s)^2\big)` (:func:`munge_step`); otherwise it keeps
    :math:`e_a`. Returns only the synthetic examples, ``[n_copies · N, D]``, copy by copy in the order of
    ``x``; the transfer set of the paper is the original data plus these, labelled by the teacher.

    Parameters, as in the paper: ``n_copies`` is the size multiplier :math:`k`, ``p`` the swap
    probability, ``s`` the local-variance parameter (larger ``s``, narrower Gaussians; ``p = 0`` returns
    copies of ``x``). The paper treats ``p`` and ``s`` as parameters to choose per problem.

    One simplification: the paper's loop swaps attributes *in both* :math:`e` and :math:`e'` and works
    on the set as it is being modified; here every example is perturbed towards its neighbour in the
    original data, independently. Each synthetic point is still drawn from the same local
    distribution, and the result does not depend on the order of the examples. Nominal attributes
    (a plain value swap in the paper) are not supported: encode them numerically first.

    x: ``[N, D]`` array or tensor with N ≥ 2; seed: seeds a private generator (the global random
    state is untouched), so equal arguments give equal data.
    """
    x = _as_matrix(x, "x")
    if not isinstance(n_copies, numbers.Integral) or isinstance(n_copies, bool) or n_copies < 1:
        raise ValueError(f"n_copies must be an int >= 1, got {n_copies!r}")
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    if not isinstance(s, numbers.Real) or isinstance(s, bool) or not s > 0 or not math.isfinite(s):
        raise ValueError(f"s must be a finite number > 0, got {s!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    neighbour = x[nearest_neighbours(x)]
    generator = torch.Generator().manual_seed(int(seed))
    copies = []
    for _ in range(int(n_copies)):
        swap = torch.rand(x.shape, generator=generator, dtype=x.dtype) < p
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        copies.append(munge_step(x, neighbour, swap, noise, float(s)))
    return torch.cat(copies)


def retained_fraction(student: Any, scratch: Any, teacher: Any) -> Any:
    r"""The fraction of the teacher's improvement over the scratch-trained student that the distilled student keeps.

    .. math::
        r = \frac{\mathrm{acc}_{student} - \mathrm{acc}_{scratch}}{\mathrm{acc}_{teacher} - \mathrm{acc}_{scratch}}

    1 means the student matches the teacher, 0 that distillation gained nothing over training the
    same network on the labels, a negative value that it did worse. Works on numbers, numpy arrays or
    tensors (element-wise, e.g. one value per seed). Raises ``ValueError`` where the teacher's accuracy
    equals the scratch student's (the fraction is undefined).
    """
    gap = teacher - scratch
    if bool(np.any(np.asarray(gap == 0))):
        raise ValueError(f"teacher and scratch accuracies must differ (the fraction is undefined), got "
                         f"teacher={teacher!r}, scratch={scratch!r}")
    return (student - scratch) / gap


def count_stored_values(obj: Any) -> int:
    r"""How many numbers a fitted model stores: every element of every numpy array and torch tensor
    reachable from ``obj`` through its attributes (``__dict__`` or ``__getstate__``), lists, tuples and dicts.

    Scalar attributes and strings are not counted; a structured numpy array (e.g. the node table of
    a scikit-learn decision tree) counts each field of each record. An object reached twice counts
    once. This is the analogue of :func:`kdtools.bench.count_parameters` for models that are not
    ``nn.Module``\ s (k-NN stores its training set, an SVM its support vectors, a forest its nodes).
    """
    seen: set = set()
    alive: list = []  # states built by __getstate__ are temporary: keep them so that no id is reused

    def walk(item: Any) -> int:
        if id(item) in seen or item is None or isinstance(item, (str, bytes, numbers.Number, type)):
            return 0
        seen.add(id(item))
        alive.append(item)
        if isinstance(item, torch.Tensor):
            return item.numel()
        if isinstance(item, np.ndarray):
            if item.dtype.fields:
                return item.size * len(item.dtype.fields)
            if item.dtype == object:
                return sum(walk(element) for element in item.flat)
            return item.size
        if isinstance(item, dict):
            return sum(walk(value) for value in item.values())
        if isinstance(item, (list, tuple, set, frozenset)):
            return sum(walk(value) for value in item)
        state = None
        if hasattr(item, "__getstate__"):
            try:
                state = item.__getstate__()
            except TypeError:
                state = None
        if state is None or state is item:
            state = getattr(item, "__dict__", None)
        return walk(state) if isinstance(state, (dict, list, tuple)) else 0

    return walk(obj)


def latency_ms(fn: Callable, *args: Any, warmup: int = 5, repeats: int = 30) -> float:
    """Median wall-clock time in milliseconds of ``fn(*args)`` after ``warmup`` calls: the analogue of
    :func:`kdtools.bench.cpu_latency_ms` for any predictor (see :func:`kdtools.bench.median_call_ms`)."""
    return median_call_ms(fn, *args, warmup=warmup, repeats=repeats)
