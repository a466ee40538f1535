import json
import shutil
import time

import pytest
import torch

from kdtools import zoo
from kdtools.data import TensorLoader
from kdtools.train import evaluate


def test_every_shipped_checkpoint_verifies_and_has_a_recipe():
    manifest = zoo.available()
    assert "mnist-cnn-teacher" in manifest
    for name, entry in manifest.items():
        assert zoo.verify(name).is_file()
        assert name in zoo.RECIPES and entry["recipe"]["architecture"] == zoo.RECIPES[name].architecture
        for key in ("sha256", "test_accuracy", "train_seconds", "trained_with"):
            assert key in entry


def test_teacher_loads_fast_and_reaches_its_recorded_accuracy(mnist):
    start = time.perf_counter()
    teacher = zoo.load("mnist-cnn-teacher", device="cpu")
    assert time.perf_counter() - start < 1.0
    assert not teacher.training
    accuracy = evaluate(teacher, TensorLoader(mnist[1], 1000), device="cpu")
    assert accuracy == pytest.approx(zoo.available()["mnist-cnn-teacher"]["test_accuracy"], abs=1e-9)
    assert accuracy > 99.0


@pytest.fixture
def copied_zoo(tmp_path):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    entry = zoo.available()["mnist-cnn-teacher"]
    shutil.copy(zoo.CHECKPOINTS / entry["file"], ckpt / entry["file"])
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"mnist-cnn-teacher": entry}))
    return ckpt, manifest, ckpt / entry["file"]


def test_checksum_mismatch_is_detected(copied_zoo):
    ckpt, manifest, path = copied_zoo
    zoo.load("mnist-cnn-teacher", checkpoint_dir=ckpt, manifest_path=manifest)  # intact copy loads
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # flip one byte inside the weights
    path.write_bytes(bytes(raw))
    with pytest.raises(zoo.ChecksumError, match="corrupt.*python -m kdtools.zoo train mnist-cnn-teacher"):
        zoo.load("mnist-cnn-teacher", checkpoint_dir=ckpt, manifest_path=manifest)


def test_missing_file_is_reported(copied_zoo):
    ckpt, manifest, path = copied_zoo
    path.unlink()
    with pytest.raises(zoo.ChecksumError, match="missing"):
        zoo.load("mnist-cnn-teacher", checkpoint_dir=ckpt, manifest_path=manifest)


def test_missing_file_can_be_retrained_from_its_recipe(tmp_path, monkeypatch, mnist):
    # a cheap stand-in recipe so the test takes seconds; the mechanism is the same for the real teacher
    monkeypatch.setitem(zoo.RECIPES, "tiny", zoo.Recipe(architecture="mlp-30x2", epochs=1, lr=0.05, seed=0))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"tiny": {"file": "tiny.pt", "sha256": "0" * 64, "recipe": {}}}))
    model = zoo.load("tiny", checkpoint_dir=tmp_path, manifest_path=manifest, on_missing="train")
    entry = json.loads(manifest.read_text())["tiny"]
    assert entry["sha256"] == zoo.sha256(tmp_path / "tiny.pt") and entry["test_accuracy"] > 80
    assert isinstance(model, torch.nn.Module) and not model.training


def test_unknown_name_and_bad_option():
    with pytest.raises(ValueError, match="unknown zoo model 'nope'; known: .*mnist-cnn-teacher"):
        zoo.load("nope")
    with pytest.raises(ValueError, match="on_missing must be"):
        zoo.load("mnist-cnn-teacher", on_missing="ignore")
