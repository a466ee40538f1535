"""Pretrained teachers shipped with the course, so notebooks only have to train students.

Every checkpoint in ``checkpoints/`` is listed in ``manifest.json`` with its sha256, the recipe
(architecture, data, optimiser, epochs, seed) that produced it and the test accuracy it reached.
:func:`load` verifies the checksum before using a file: a missing or corrupt checkpoint is
reported (or re-trained with ``on_missing="train"``), never silently used.

Reproduce a checkpoint with ``python -m kdtools.zoo train NAME``; list them with ``python -m kdtools.zoo list``.
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import nn

from ..models import build_model

ZOO_DIR = Path(__file__).resolve().parent
MANIFEST = ZOO_DIR / "manifest.json"
CHECKPOINTS = ZOO_DIR / "checkpoints"


@dataclass(frozen=True)
class Recipe:
    """How a zoo checkpoint is trained (everything :func:`train_checkpoint` needs)."""

    architecture: str
    model_kwargs: Dict = field(default_factory=dict)
    epochs: int = 5
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    batch_size: int = 128
    max_norm: Optional[float] = None  # max-norm weight constraint on every linear unit (see kdtools.train.fit)
    max_shift: int = 0  # random translation of up to this many pixels (Hinton et al.'s jitter)
    seed: int = 0
    description: str = ""


RECIPES: Dict[str, Recipe] = {
    "mnist-cnn-teacher": Recipe(
        architecture="cnn-32x2", epochs=6, lr=0.05, max_shift=2, seed=0,
        description="The course's default teacher: a 6-conv VGG-style CNN (288k parameters) trained on all "
                    "60k MNIST training images with random shifts of up to 2 pixels."),
    "mnist-mlp-teacher": Recipe(
        architecture="mlp-1200x2", model_kwargs={"dropout": 0.5, "input_dropout": 0.2}, epochs=150, lr=0.05,
        weight_decay=0.0, max_norm=3.5, max_shift=2, seed=0,
        description="Hinton et al. (2015)'s MNIST teacher: a 784-1200-1200-10 ReLU MLP with dropout (0.2 on the "
                    "input, 0.5 on the hidden layers) and a max-norm weight constraint (3.5), trained on all 60k "
                    "training images jittered by up to 2 pixels."),
}


class ChecksumError(RuntimeError):
    """A checkpoint file is missing or its sha256 differs from the manifest."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: Path = MANIFEST) -> Dict[str, dict]:
    return json.loads(path.read_text()) if path.is_file() else {}


def available() -> Dict[str, dict]:
    """Manifest entries of the shipped checkpoints, keyed by name."""
    return read_manifest()


def _entry(name: str, manifest: Dict[str, dict]) -> dict:
    if name not in manifest:
        known = sorted(set(manifest) | set(RECIPES))
        raise ValueError(f"unknown zoo model {name!r}; known: {', '.join(known) or '(none)'}")
    return manifest[name]


def verify(name: str, checkpoint_dir: Path = CHECKPOINTS, manifest_path: Path = MANIFEST) -> Path:
    """Path of ``name``'s checkpoint after checking it exists and matches the manifest's sha256."""
    entry = _entry(name, read_manifest(manifest_path))
    path = Path(checkpoint_dir) / entry["file"]
    if not path.is_file():
        raise ChecksumError(f"zoo checkpoint {name!r} is missing: {path} does not exist. "
                            f"Re-create it with `python -m kdtools.zoo train {name}`.")
    actual = sha256(path)
    if actual != entry["sha256"]:
        raise ChecksumError(f"zoo checkpoint {name!r} is corrupt: sha256 of {path} is {actual}, the manifest "
                            f"says {entry['sha256']}. Re-create it with `python -m kdtools.zoo train {name}` "
                            f"(or restore the file from the repository).")
    return path


def load(name: str = "mnist-cnn-teacher", device=None, on_missing: str = "raise",
         checkpoint_dir: Path = CHECKPOINTS, manifest_path: Path = MANIFEST) -> nn.Module:
    """The pretrained model ``name`` in eval mode, after verifying its checksum.

    on_missing: ``"raise"`` (default) reports a missing or corrupt file with :class:`ChecksumError`;
        ``"train"`` re-trains it from its recipe (minutes on a CPU) and uses the fresh weights.
    """
    if on_missing not in ("raise", "train"):
        raise ValueError(f"on_missing must be 'raise' or 'train', got {on_missing!r}")
    manifest = read_manifest(manifest_path)
    try:
        path = verify(name, checkpoint_dir, manifest_path)
    except ChecksumError:
        if on_missing == "raise":
            raise
        print(f"zoo: {name!r} is missing or corrupt; re-training it from its recipe")
        train_checkpoint(name, checkpoint_dir=checkpoint_dir, manifest_path=manifest_path)
        manifest = read_manifest(manifest_path)
        path = verify(name, checkpoint_dir, manifest_path)
    entry = _entry(name, manifest)
    model = build_model(entry["recipe"]["architecture"], **entry["recipe"].get("model_kwargs", {}))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    if device is not None:
        model.to(device)
    return model


def train_checkpoint(name: str, checkpoint_dir: Path = CHECKPOINTS, manifest_path: Path = MANIFEST,
                     epochs: Optional[int] = None, progress: bool = True) -> dict:
    """Train ``name`` from its recipe, save the checkpoint and update the manifest; returns the entry."""
    from ..data import TensorLoader, load_mnist, random_shift
    from ..runtime import seed_everything
    from ..train import train

    if name not in RECIPES:
        raise ValueError(f"no recipe for {name!r}; recipes: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    epochs = epochs or recipe.epochs
    seed_everything(recipe.seed)
    model = build_model(recipe.architecture, **recipe.model_kwargs)
    augment = random_shift(recipe.max_shift) if recipe.max_shift else None
    train_loader = TensorLoader(load_mnist(True), recipe.batch_size, shuffle=True, seed=recipe.seed, augment=augment)
    test_loader = TensorLoader(load_mnist(False), 1000)
    start = time.perf_counter()
    history = train(model, train_loader, test_loader, epochs=epochs, optimizer=recipe.optimizer, lr=recipe.lr,
                    momentum=recipe.momentum, weight_decay=recipe.weight_decay, schedule=recipe.schedule,
                    max_norm=recipe.max_norm, seed=recipe.seed, progress=progress, desc=name)
    seconds = time.perf_counter() - start
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_dir / f"{name}.pt"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    entry = {
        "file": path.name,
        "sha256": sha256(path),
        "recipe": {**asdict(recipe), "epochs": epochs},
        "test_accuracy": history.last_acc,
        "test_errors": round((100.0 - history.last_acc) * 100),  # out of the 10,000 test images
        "best_test_accuracy": history.best_acc,
        "train_seconds": round(seconds, 1),
        "trained_with": f"torch {torch.__version__}, {history_device(model)}, {platform.machine()}",
    }
    manifest = read_manifest(manifest_path)
    manifest[name] = entry
    Path(manifest_path).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return entry


def history_device(model: nn.Module) -> str:
    return str(next(model.parameters()).device)
