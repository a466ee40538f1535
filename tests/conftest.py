"""Shared fixtures. Tests never download: real-MNIST tests read KDTOOLS_DATA (CI sets it)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.fixture
def tiny_mnist(tmp_path):
    arrays = write_idx_mnist(tmp_path)
    return tmp_path, arrays


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST (train, test) as TensorData, from KDTOOLS_DATA or the user cache."""
    from kdtools.data import load_mnist

    return load_mnist(True), load_mnist(False)


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    # results written by a test go to its own folder, never into the repository
    monkeypatch.setenv("KDTOOLS_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("KDTOOLS_SMOKE", raising=False)
    torch.set_num_threads(max(1, torch.get_num_threads()))
