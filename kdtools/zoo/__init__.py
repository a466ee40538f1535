"""Pretrained models shipped with the course, so notebooks only have to load what takes long to train.

Every checkpoint in ``checkpoints/`` is listed in ``manifest.json`` with its sha256, the recipe
(architecture, data, optimiser, epochs, seed; for a student also its teacher, temperature and alpha) that
produced it, the test accuracy it reached and its per-epoch test accuracy. :func:`load` verifies the
checksum before using a file: a missing or corrupt checkpoint is reported (or re-trained with
``on_missing="train"``), never silently used.

Reproduce a checkpoint with ``python -m kdtools.zoo train NAME`` (``--out DIR`` to write it somewhere
else than the installed package); list them with ``python -m kdtools.zoo list``.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..data import sha256  # one checksum routine for data files and checkpoints
from ..models import build_model

ZOO_DIR = Path(__file__).resolve().parent
MANIFEST = ZOO_DIR / "manifest.json"
CHECKPOINTS = ZOO_DIR / "checkpoints"
REQUIRED_KEYS = ("file", "sha256")  # what verify() needs; load() also needs recipe.architecture
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
SPLIT_SEED = 1  # the permutation that holds out validation images (the omitted-digit experiment)


@dataclass(frozen=True)
class Recipe:
    """How a zoo checkpoint is trained (everything :func:`train_model` needs)."""

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
    init_from: Optional[str] = None  # continue training from this zoo checkpoint instead of a fresh init
    teacher: Optional[str] = None  # distil from this zoo model: (1 - alpha) CE + alpha T^2 KL
    temperature: Optional[float] = None
    alpha: Optional[float] = None
    validation_images: int = 0  # held out of the training set (permutation seeded with SPLIT_SEED)
    omit_class: Optional[int] = None  # removed from the transfer set (Hinton et al.'s omitted 3)
    storage: str = "float32"  # dtype of the stored weights ("float16" halves the file)
    description: str = ""
    # metric learning (kdtools.retrieval): an EmbeddingNet on `architecture` with this output dimension, trained
    # with the semi-hard triplet loss on `train_classes` only; its "test accuracy" is Recall@1 on the other classes
    embedding_dim: Optional[int] = None
    train_classes: Optional[Tuple[int, ...]] = None


def _student(kind: str, seed: int, temperature: Optional[float] = None, **overrides) -> Recipe:
    base = dict(architecture="mlp-800x2", epochs=20, lr=0.02, weight_decay=0.0, schedule="cosine", seed=seed,
                storage="float16")
    if temperature is not None:
        base.update(teacher="mnist-mlp-teacher", temperature=temperature, alpha=0.9)
    base.update(overrides)
    return Recipe(description=f"Hinton et al. (2015)'s 2x800 ReLU student without regularisation, {kind}; "
                              f"seed {seed}.", **base)


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
    # FSP (notebooks/04_relation/fsp.ipynb) compares Gram matrices channel by channel, so its teacher must
    # have the student's widths: the paper's deeper teacher of the same widths, in SmallCNN form.
    "mnist-cnn-4x3-teacher": Recipe(
        architecture="cnn-4x3", epochs=15, lr=0.05, max_shift=2, seed=0,
        description="FSP's teacher: SmallCNN with the protocol student's widths (4-8-16 channels) and three "
                    "convolutions per stage (7.9k parameters), trained like mnist-cnn-teacher on all 60k "
                    "MNIST training images with random shifts of up to 2 pixels, for 15 epochs."),
    # Not shipped (it did not fit the CPU budget): mnist-mlp-teacher continued for 50 more epochs.
    "mnist-mlp-teacher-200ep": Recipe(
        architecture="mlp-1200x2", model_kwargs={"dropout": 0.5, "input_dropout": 0.2}, epochs=50, lr=0.02,
        weight_decay=0.0, max_norm=3.5, max_shift=2, seed=1, init_from="mnist-mlp-teacher", storage="float16",
        description="mnist-mlp-teacher continued for 50 more epochs (a second cosine cycle from lr 0.02, same "
                    "dropout, max-norm and jitter), 200 epochs in all."),
}
RECIPES["mnist-embedding-teacher"] = Recipe(
    architecture="cnn-16x1", embedding_dim=64, train_classes=(0, 1, 2, 3, 4), epochs=10, lr=0.05, batch_size=64,
    seed=0, description="An embedding teacher for relational KD: a cnn-16x1 backbone, a linear 64-d embedding, "
                        "L2-normalised, trained with the semi-hard triplet loss (margin 0.2) on the 30,596 training "
                        "images of digits 0-4 only; test accuracy = Recall@1 on the test digits 5-9 (never seen).")
for _seed in (0, 1, 2):
    RECIPES[f"mnist-mlp-800x2-scratch-s{_seed}"] = _student("trained on the hard labels for 20 epochs", _seed)
    RECIPES[f"mnist-mlp-800x2-kd20-s{_seed}"] = _student(
        "distilled from mnist-mlp-teacher at T = 20, alpha = 0.9 for 20 epochs", _seed, 20.0)
    RECIPES[f"mnist-mlp-800x2-kd20-no3-s{_seed}"] = _student(
        "distilled at T = 20, alpha = 0.9 for 10 epochs on a transfer set without any 3 (5,000 training "
        "images held out for validation)", _seed, 20.0, epochs=10, validation_images=5000, omit_class=3)


class ChecksumError(RuntimeError):
    """A checkpoint file is missing or its sha256 differs from the manifest."""


class ManifestError(RuntimeError):
    """The manifest is missing, not valid JSON, or an entry lacks a required field."""


def read_manifest(path: Path = MANIFEST, missing_ok: bool = True) -> Dict[str, dict]:
    """The manifest's entries, keyed by name. A missing file is an empty zoo when ``missing_ok``;
    a file that is not a JSON object of entries raises :class:`ManifestError` naming it."""
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return {}
        raise ManifestError(f"zoo manifest {path} does not exist. Restore it from the repository "
                            f"(git checkout -- {path.name}) or re-create entries with "
                            f"`python -m kdtools.zoo train NAME`.")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"zoo manifest {path} is not valid JSON ({err}). Restore it from the repository "
                            f"(git checkout -- {path.name}).") from err
    if not isinstance(manifest, dict) or not all(isinstance(e, dict) for e in manifest.values()):
        raise ManifestError(f"zoo manifest {path} must be a JSON object of entries {{name: {{...}}}}, got "
                            f"{type(manifest).__name__}. Restore it from the repository.")
    return manifest


def available() -> Dict[str, dict]:
    """Manifest entries of the shipped checkpoints, keyed by name."""
    return read_manifest()


def _entry(name: str, manifest: Dict[str, dict], manifest_path: Path = MANIFEST) -> dict:
    if name not in manifest:
        known = sorted(set(manifest) | set(RECIPES))
        hint = (f" It has a recipe but no checkpoint in {manifest_path}: train it with "
                f"`python -m kdtools.zoo train {name}`." if name in RECIPES else "")
        raise ValueError(f"unknown zoo model {name!r}; known: {', '.join(known) or '(none)'}.{hint}")
    entry = manifest[name]
    missing = [key for key in REQUIRED_KEYS if not entry.get(key)]
    if missing:
        raise ManifestError(f"zoo manifest {manifest_path}: entry {name!r} has no {', '.join(missing)}, so its "
                            f"checkpoint cannot be verified. Re-create the entry with "
                            f"`python -m kdtools.zoo train {name}` or restore the manifest from the repository.")
    return entry


def verify(name: str, checkpoint_dir: Path = CHECKPOINTS, manifest_path: Path = MANIFEST) -> Path:
    """Path of ``name``'s checkpoint after checking it exists and matches the manifest's sha256."""
    entry = _entry(name, read_manifest(manifest_path, missing_ok=False), manifest_path)
    return check_file(Path(checkpoint_dir) / entry["file"], entry["sha256"], f"zoo checkpoint {name!r}",
                      f"python -m kdtools.zoo train {name}")


def check_file(path: Path, expected_sha256: str, what: str, rebuild: str) -> Path:
    """``path`` after checking that it exists and has ``expected_sha256``; otherwise a :class:`ChecksumError`
    naming ``what`` and the command ``rebuild`` that re-creates it (checkpoints and data-free artefacts alike)."""
    if not path.is_file():
        raise ChecksumError(f"{what} is missing: {path} does not exist. Re-create it with `{rebuild}`.")
    actual = sha256(path)
    if actual != expected_sha256:
        raise ChecksumError(f"{what} is corrupt: sha256 of {path} is {actual}, the manifest says {expected_sha256}. "
                            f"Re-create it with `{rebuild}` (or restore the file from the repository).")
    return path


def _locations(checkpoint_dir: Path, manifest_path: Path):
    # a zoo written elsewhere (`train --out DIR`) first, then the installed one
    seen = []
    for location in ((Path(checkpoint_dir), Path(manifest_path)), (CHECKPOINTS, MANIFEST)):
        if location not in seen:
            seen.append(location)
    return seen


def _find(name: str, checkpoint_dir: Path, manifest_path: Path) -> Tuple[Path, Path]:
    for ckpt, manifest in _locations(checkpoint_dir, manifest_path):
        if name in read_manifest(manifest):
            return ckpt, manifest
    return Path(checkpoint_dir), Path(manifest_path)


def load(name: str = "mnist-cnn-teacher", device=None, on_missing: str = "raise",
         checkpoint_dir: Path = CHECKPOINTS, manifest_path: Path = MANIFEST) -> nn.Module:
    """The pretrained model ``name`` in eval mode (float32), after verifying its checksum.

    on_missing: ``"raise"`` (default) reports a missing or corrupt file with :class:`ChecksumError`;
        ``"train"`` re-trains it from its recipe (minutes on a CPU) and uses the fresh weights.
    """
    if on_missing not in ("raise", "train"):
        raise ValueError(f"on_missing must be 'raise' or 'train', got {on_missing!r}")
    try:
        path = verify(name, checkpoint_dir, manifest_path)
    except ChecksumError:
        if on_missing == "raise":
            raise
        print(f"zoo: {name!r} is missing or corrupt; re-training it from its recipe")
        train_checkpoint(name, checkpoint_dir=checkpoint_dir, manifest_path=manifest_path)
        path = verify(name, checkpoint_dir, manifest_path)
    entry = _entry(name, read_manifest(manifest_path), manifest_path)
    if not isinstance(entry.get("recipe"), dict) or "architecture" not in entry["recipe"]:
        raise ManifestError(f"zoo manifest {manifest_path}: entry {name!r} has no recipe.architecture, so the "
                            f"network cannot be built. Re-create the entry with `python -m kdtools.zoo train "
                            f"{name}` or restore the manifest from the repository.")
    model = _build(entry["recipe"])
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.eval()
    if device is not None:
        model.to(device)
    return model


def _build(recipe: dict) -> nn.Module:
    """The untrained network of a recipe (as stored in the manifest)."""
    if recipe.get("embedding_dim"):
        from ..retrieval import EmbeddingNet

        return EmbeddingNet(recipe["architecture"], recipe["embedding_dim"])
    return build_model(recipe["architecture"], **recipe.get("model_kwargs", {}))


def _train_embedding_model(recipe: Recipe, epochs: int, progress: bool):
    """A metric-learning recipe: the semi-hard triplet loss on the training images of ``train_classes``;
    ``History.test_acc`` holds one number, the final Recall@1 (%) on the test images of the other classes."""
    from ..data import load_mnist
    from ..retrieval import MetricArm, class_subset, train_embedding
    from ..runtime import seed_everything

    seed_everything(recipe.seed)
    model = _build(asdict(recipe))
    run = train_embedding(model, MetricArm(triplet=1.0), class_subset(load_mnist(True), recipe.train_classes),
                          epochs=epochs, batch_size=recipe.batch_size, lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay, seed=recipe.seed, progress=progress)
    run.test_acc = [_stored_accuracy(model, recipe)[0]]
    return model, run


def history(name: str, manifest_path: Path = MANIFEST) -> Dict[str, list]:
    """Per-epoch record of the run that produced ``name`` (``test_acc`` in %, ``train_loss``)."""
    entry = _entry(name, read_manifest(manifest_path, missing_ok=False), manifest_path)
    if "history" not in entry:
        raise ManifestError(f"zoo manifest {manifest_path}: entry {name!r} was stored without its per-epoch "
                            f"history; re-create it with `python -m kdtools.zoo train {name}`.")
    return entry["history"]


def transfer_split(recipe: Recipe, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices of the transfer (training) images and of the held-out validation images of ``recipe``.

    The first ``recipe.validation_images`` positions of a permutation seeded with :data:`SPLIT_SEED` are held
    out; ``recipe.omit_class`` is then removed from the rest. Without either, all images train.
    """
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    if not recipe.validation_images:
        order = torch.arange(len(labels))
    val, rest = order[:recipe.validation_images], order[recipe.validation_images:]
    if recipe.omit_class is not None:
        rest = rest[labels[rest] != recipe.omit_class]
    return rest, val


def train_model(recipe: Recipe, epochs: Optional[int] = None, train_data=None, progress: bool = True,
                desc: str = "", checkpoint_dir: Path = CHECKPOINTS, manifest_path: Path = MANIFEST):
    """Train a model from ``recipe`` (``epochs`` overrides its budget) and return ``(model, history)``.

    The notebooks call this for short budgets of the same recipes the zoo ships long runs of.
    ``train_data``: the training set (default: all 60k MNIST training images), before the recipe's split.
    """
    from ..data import TensorLoader, load_mnist, random_shift
    from ..runtime import seed_everything
    from ..train import distill, train

    epochs = epochs or recipe.epochs
    if recipe.embedding_dim:
        return _train_embedding_model(recipe, epochs, progress)
    train_data = train_data if train_data is not None else load_mnist(True)
    transfer, _ = transfer_split(recipe, train_data.labels)
    seed_everything(recipe.seed)
    if recipe.init_from:
        ckpt, manifest = _find(recipe.init_from, checkpoint_dir, manifest_path)
        model = load(recipe.init_from, on_missing="train", checkpoint_dir=ckpt, manifest_path=manifest)
    else:
        model = build_model(recipe.architecture, **recipe.model_kwargs)
    augment = random_shift(recipe.max_shift) if recipe.max_shift else None
    train_loader = TensorLoader(train_data.subset(transfer), recipe.batch_size, shuffle=True, seed=recipe.seed,
                                augment=augment)
    test_loader = TensorLoader(load_mnist(False), 1000)
    options = dict(epochs=epochs, optimizer=recipe.optimizer, lr=recipe.lr, momentum=recipe.momentum,
                   weight_decay=recipe.weight_decay, schedule=recipe.schedule, max_norm=recipe.max_norm,
                   seed=recipe.seed, progress=progress, desc=desc)
    if recipe.teacher:
        ckpt, manifest = _find(recipe.teacher, checkpoint_dir, manifest_path)
        teacher = load(recipe.teacher, checkpoint_dir=ckpt, manifest_path=manifest)
        run = distill(model, teacher, train_loader, test_loader, alpha=recipe.alpha,
                      temperature=recipe.temperature, cache_teacher_logits=augment is None, **options)
    else:
        run = train(model, train_loader, test_loader, **options)
    return model, run


def check_writable(checkpoint_dir: Path, manifest_path: Path) -> None:
    """Raise ``PermissionError`` naming the path (and the ``--out`` fix) unless both can be written."""
    checkpoint_dir, manifest_path = Path(checkpoint_dir), Path(manifest_path)
    for directory in (checkpoint_dir, manifest_path.parent):
        probe_dir = directory
        while not probe_dir.exists():  # the first existing ancestor decides whether we can create it
            probe_dir = probe_dir.parent
        try:
            with tempfile.TemporaryFile(dir=probe_dir):
                pass
        except OSError as err:
            raise PermissionError(f"cannot write the zoo checkpoint to {directory} ({err.strerror}); choose a "
                                  f"writable folder with `python -m kdtools.zoo train NAME --out DIR`.") from err
    if manifest_path.exists() and not os.access(manifest_path, os.W_OK):
        raise PermissionError(f"cannot update the zoo manifest {manifest_path} (read-only); choose a writable "
                              f"folder with `python -m kdtools.zoo train NAME --out DIR`.")


def train_checkpoint(name: str, checkpoint_dir: Path = CHECKPOINTS, manifest_path: Path = MANIFEST,
                     epochs: Optional[int] = None, progress: bool = True) -> dict:
    """Train ``name`` from its recipe, save the checkpoint and update the manifest; returns the entry.

    The destination is checked for write access *before* training starts.
    """
    if name not in RECIPES:
        raise ValueError(f"no recipe for {name!r}; recipes: {', '.join(RECIPES)}")
    check_writable(checkpoint_dir, manifest_path)
    read_manifest(manifest_path)  # a malformed manifest is reported now, not after training
    recipe = RECIPES[name]
    epochs = epochs or recipe.epochs
    start = time.perf_counter()
    model, run = train_model(recipe, epochs, progress=progress, desc=name, checkpoint_dir=checkpoint_dir,
                             manifest_path=manifest_path)
    seconds = time.perf_counter() - start
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_dir / f"{name}.pt"
    dtype = STORAGE_DTYPES[recipe.storage]
    torch.save({k: v.detach().cpu().to(dtype) if v.is_floating_point() else v.detach().cpu()
                for k, v in model.state_dict().items()}, path)
    # the accuracy of the weights as stored (float16 rounding included), next to the trained float32 one
    stored = _build(asdict(recipe))
    stored.load_state_dict({k: v.float() for k, v in torch.load(path, weights_only=True).items()})
    stored_acc, test_images = _stored_accuracy(stored, recipe)
    entry = {
        "file": path.name,
        "sha256": sha256(path),
        "recipe": {**asdict(recipe), "epochs": epochs},
        "test_accuracy": stored_acc,
        "test_errors": round((100.0 - stored_acc) * test_images / 100),  # out of all the test images it is scored on
        "test_accuracy_before_storage": run.last_acc,
        "best_test_accuracy": run.best_acc,
        "history": {"test_acc": run.test_acc, "train_loss": [round(x, 6) for x in run.train_loss]},
        "train_seconds": round(seconds, 1),
        "trained_with": f"torch {torch.__version__}, {history_device(model)}, {platform.machine()}, "
                        f"{torch.get_num_threads()} thread(s)",
    }
    for role in ("teacher", "init_from"):
        source = getattr(recipe, role)
        if source:
            ckpt, manifest = _find(source, checkpoint_dir, manifest_path)
            entry[f"{role}_sha256"] = _entry(source, read_manifest(manifest), manifest)["sha256"]
    manifest = read_manifest(manifest_path)
    manifest[name] = entry
    Path(manifest_path).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return entry


def _stored_accuracy(model: nn.Module, recipe: Recipe) -> Tuple[float, int]:
    """Test accuracy (%) of a classifier on the 10,000 test images; for an embedding, Recall@1 (%) on the test
    images of the classes outside ``train_classes``. Returns the accuracy and the number of images scored."""
    from ..data import TensorLoader, load_mnist
    from ..train import evaluate

    if recipe.embedding_dim:
        from ..retrieval import class_subset, embed, recall_at_k

        test = class_subset(load_mnist(False), [c for c in range(10) if c not in recipe.train_classes])
        return recall_at_k(embed(model.cpu(), test.images), test.labels, ks=(1,))[1], len(test)
    return evaluate(model, TensorLoader(load_mnist(False), 1000), device="cpu"), 10_000


def history_device(model: nn.Module) -> str:
    return str(next(model.parameters()).device)
