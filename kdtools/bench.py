"""Size and speed of models: parameters, megabytes, multiply-accumulates, CPU latency and throughput."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Sequence

import torch
from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_size_mb(model: nn.Module) -> float:
    """Bytes of parameters and buffers (what a saved state dict holds), in MB (10^6 bytes)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


def count_macs(model: nn.Module, input_shape: Sequence[int] = (1, 1, 28, 28)) -> int:
    """Multiply-accumulates of one forward pass of a batch of ``input_shape``, counted in the
    ``nn.Linear`` and ``nn.Conv2d`` layers (they dominate; activations, norms and pooling are ignored)."""
    macs = 0

    def linear(module, inputs, output):
        nonlocal macs
        macs += output.numel() * module.in_features

    def conv(module, inputs, output):
        nonlocal macs
        kh, kw = module.kernel_size
        macs += output.numel() * (module.in_channels // module.groups) * kh * kw

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear))
        elif isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(*input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return macs


#: how :func:`median_call_ms` reads the time: wall-clock, or the CPU time the calling thread spends
CLOCKS: Dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "cpu": time.thread_time_ns}


def median_call_ms(fn: Callable, *args: Any, warmup: int = 5, repeats: int = 30, clock: str = "wall") -> float:
    """Median time in milliseconds of ``fn(*args)`` after ``warmup`` untimed calls.

    Works for any predictor (a torch model, a scikit-learn ``predict_proba``, an ensemble). Warm-up
    calls pay for allocation and cold caches; the median ignores the occasional call slowed down by
    another process.

    clock: ``"wall"`` (wall-clock time) or ``"cpu"``: the CPU time of the calling thread, which does not
    count the moments another process holds the core, so on a shared machine it stays close to what the
    call costs on a core of its own (cache and memory contention still slow it down a little). Use
    ``"cpu"`` with one torch thread: work done in other threads is not counted.
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {type(fn).__name__}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    now = CLOCKS[clock]
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(repeats):
        start = now()
        fn(*args)
        times.append((now() - start) / 1e6)
    return statistics.median(times)


@torch.inference_mode()
def interleaved_latency_ms(models: Mapping[str, nn.Module], batch_size: int = 1, rounds: int = 10,
                           calls: int = 5, warmup: int = 2, seed: int = 0,
                           input_shape: Sequence[int] = (1, 28, 28)) -> Dict[str, float]:
    """Median wall-clock time in ms of one forward pass of each model on the same random batch ``[batch_size,
    *input_shape]``, timed in ``rounds``: each round gives every model ``warmup`` untimed calls (its weights back in the
    cache, as for a model that serves requests one after another) and then ``calls`` timed ones. A change in the
    machine's load (another process, frequency scaling) then affects all models alike instead of whichever
    happened to be measured at that moment."""
    if not models:
        raise ValueError("models must name at least one model, got an empty mapping")
    if batch_size < 1 or rounds < 1 or calls < 1 or warmup < 0:
        raise ValueError(f"batch_size, rounds and calls must be >= 1 and warmup >= 0, got batch_size={batch_size}, "
                         f"rounds={rounds}, calls={calls}, warmup={warmup}")
    x = torch.randn(batch_size, *input_shape, generator=torch.Generator().manual_seed(seed))
    times: Dict[str, List[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            model.eval()
            for _ in range(warmup):
                model(x)
            for _ in range(calls):
                start = time.perf_counter()
                model(x)
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


@torch.no_grad()
def cpu_latency_ms(model: nn.Module, input_shape: Sequence[int] = (1, 1, 28, 28), warmup: int = 10,
                   repeats: int = 50, threads: int | None = None) -> float:
    """Median wall-clock time in milliseconds of one forward pass on the CPU, after ``warmup`` passes.

    threads: torch CPU threads during the measurement (default: leave the current setting).
    The model is copied to the CPU in eval mode; the original is untouched.
    """
    import copy

    cpu_model = copy.deepcopy(model).cpu().eval()
    x = torch.randn(*input_shape)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return median_call_ms(cpu_model, x, warmup=warmup, repeats=repeats)
    finally:
        torch.set_num_threads(old_threads)


def throughput(model: nn.Module, batch_size: int = 256, input_shape: Sequence[int] = (1, 28, 28), **kwargs) -> float:
    """Images per second on the CPU at ``batch_size`` (from the median batch latency)."""
    ms = cpu_latency_ms(model, (batch_size, *input_shape), **kwargs)
    return batch_size / (ms / 1e3)


def profile(model: nn.Module, input_shape: Sequence[int] = (1, 1, 28, 28), **latency_kwargs) -> dict:
    """Parameters, size (MB), MACs and batch-1 CPU latency (ms) of ``model`` in one dictionary."""
    return {
        "params": count_parameters(model),
        "size_mb": model_size_mb(model),
        "macs": count_macs(model, input_shape),
        "latency_ms": cpu_latency_ms(model, input_shape, **latency_kwargs),
    }
