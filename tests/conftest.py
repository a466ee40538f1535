"""Shared fixtures. Tests never use the network: real-MNIST tests read KDTOOLS_DATA (CI sets it) or the
user cache, and are skipped, with one reason, where neither holds MNIST."""
from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ["pytester"]  # tests/test_data.py runs the suite's conftest in a fresh session


def write_idx_mnist(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict:
    """Write a tiny MNIST in the original IDX format under ``root/MNIST/raw``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())
        arrays[split] = (images, labels)
    return arrays


def expect_files_of(monkeypatch, root: Path, n_train: int, n_test: int) -> None:
    """Make kdtools.data verify against the files under ``root`` (their counts and sha256) instead of MNIST's."""
    from kdtools import data

    raw = root / "MNIST" / "raw"
    monkeypatch.setattr(data, "MNIST_COUNTS", {"train": n_train, "t10k": n_test})
    monkeypatch.setattr(data, "MNIST_SHA256", {name: hashlib.sha256((raw / name).read_bytes()).hexdigest()
                                               for name in data.MNIST_FILES})


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """A 20 + 10 image MNIST in IDX format, which kdtools.data verifies as if it were the original."""
    arrays = write_idx_mnist(tmp_path)
    expect_files_of(monkeypatch, tmp_path, 20, 10)
    return tmp_path, arrays


MNIST_SKIP_REASON = ("real MNIST not found (tests never download): set KDTOOLS_DATA to a folder with "
                     "MNIST/raw/, e.g. KDTOOLS_DATA=../shared/data")


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST (train, test) as TensorData, from KDTOOLS_DATA or the user cache; never downloaded.

    Without KDTOOLS_DATA and without a cached copy, every test that needs it is skipped with one reason;
    with KDTOOLS_DATA set, missing or bad files fail with the cause that load_mnist reports.
    """
    from kdtools.data import load_mnist

    return load_mnist(True, download=False), load_mnist(False, download=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that needs the real MNIST where there is none (no KDTOOLS_DATA, no cached copy) is skipped,
    all of them under one reason, whether it uses the ``mnist`` fixture or calls load_mnist itself."""
    outcome = yield
    report = outcome.get_result()
    from kdtools.data import MNISTNotFoundError

    if (call.excinfo is not None and call.excinfo.errisinstance(MNISTNotFoundError)
            and not os.environ.get("KDTOOLS_DATA")):
        report.outcome = "skipped"
        report.longrepr = (__file__, 0, f"Skipped: {MNIST_SKIP_REASON}")


def _is_loopback(host) -> bool:
    if host is None or host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to reach another machine fails at once, loudly, instead of waiting for DNS or a timeout."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host.decode() if isinstance(host, bytes) else host):
            raise OSError(f"tests must not use the network (tried to resolve {host!r})")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise OSError(f"tests must not use the network (tried to connect to {address!r})")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    # results written by a test go to its own folder, never into the repository
    monkeypatch.setenv("KDTOOLS_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("KDTOOLS_SMOKE", raising=False)
    torch.set_num_threads(max(1, torch.get_num_threads()))
