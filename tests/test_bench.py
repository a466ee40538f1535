import pytest
from torch import nn

from kdtools.bench import count_macs, count_parameters, cpu_latency_ms, model_size_mb, profile, throughput


def test_macs_counted_by_hand():
    linear = nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10))
    assert count_macs(linear) == 784 * 100 + 100 * 10
    conv = nn.Conv2d(1, 4, 3, padding=1)  # 28*28 outputs per channel, 9 MACs each
    assert count_macs(conv) == 4 * 28 * 28 * 9
    assert count_macs(linear, (5, 1, 28, 28)) == 5 * (784 * 100 + 100 * 10)


def test_parameters_and_size():
    model = nn.Sequential(nn.Linear(10, 5), nn.BatchNorm1d(5))
    assert count_parameters(model) == 55 + 10
    # 65 float32 parameters + 11 buffers (running mean/var float32, num_batches_tracked int64)
    assert model_size_mb(model) == pytest.approx((65 * 4 + 10 * 4 + 8) / 1e6)
    model[0].weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 15


def test_latency_and_throughput_are_positive_and_leave_model_alone():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).train()
    ms = cpu_latency_ms(model, warmup=2, repeats=5)
    assert ms > 0 and model.training
    assert throughput(model, batch_size=8, warmup=1, repeats=3) > 0
    stats = profile(model, warmup=1, repeats=3)
    assert set(stats) == {"params", "size_mb", "macs", "latency_ms"} and stats["macs"] == 7840
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        cpu_latency_ms(model, repeats=0)


def test_median_call_ms_cpu_clock_counts_work_not_sleep():
    import time as _time

    from kdtools.bench import median_call_ms

    assert median_call_ms(_time.sleep, 0.01, warmup=0, repeats=3, clock="cpu") < 5
    assert median_call_ms(_time.sleep, 0.01, warmup=0, repeats=3, clock="wall") >= 9
    with pytest.raises(ValueError, match="clock must be one of"):
        median_call_ms(_time.sleep, 0.0, clock="gpu")
