import pytest
import torch

import kdtools
from kdtools.runtime import get_device, is_smoke, pick, run_mode, seed_everything, setup


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("", False), ("0", False), ("off", False)])
def test_smoke_flag(monkeypatch, value, expected):
    monkeypatch.setenv("KDTOOLS_SMOKE", value)
    assert is_smoke() is expected
    assert pick(full=10, smoke=1) == (1 if expected else 10)
    assert run_mode() == ("smoke" if expected else "full")


def test_unrecognised_smoke_value_is_an_error(monkeypatch):
    monkeypatch.setenv("KDTOOLS_SMOKE", "maybe")
    with pytest.raises(ValueError, match="KDTOOLS_SMOKE must be one of.*'maybe'"):
        is_smoke()


def test_seed_everything_reproduces_random_streams():
    gen = seed_everything(7)
    a = (torch.rand(3), torch.randint(0, 100, (3,), generator=gen))
    gen = seed_everything(7)
    b = (torch.rand(3), torch.randint(0, 100, (3,), generator=gen))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        seed_everything(-1)


def test_device_choice(monkeypatch):
    assert get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("KDTOOLS_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")


def test_setup_reports_mode_and_version(capsys, monkeypatch):
    monkeypatch.setenv("KDTOOLS_SMOKE", "1")
    session = setup(seed=3, device="cpu")
    out = capsys.readouterr().out
    assert session.smoke and session.mode == "smoke" and session.seed == 3
    assert f"kdtools {kdtools.__version__}" in out and "SMOKE" in out and "device cpu" in out


def _square(x):
    return x * x


def test_map_in_processes_keeps_the_jobs_order_and_equals_the_serial_map():
    from kdtools.runtime import map_in_processes
    assert map_in_processes(_square, [3, 1, 2], workers=2) == map_in_processes(_square, [3, 1, 2], workers=1) \
        == [9, 1, 4]
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        map_in_processes(_square, [1, 2], workers=0)
