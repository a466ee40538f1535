"""Shipped artefacts that are not classifiers (a generator's weights, a synthesised data set).

They live next to the classifier checkpoints (``checkpoints/``) but in their own manifest,
``artifacts.json``: each entry has the file's sha256, the recipe (a builder function of the course, by its
import path, and its keyword arguments) that produced it, what the builder reported (``info``) and the
seconds it took. :func:`load_artifact` verifies the checksum before returning the tensors.

Reproduce an artefact with ``python -m kdtools.zoo.artifacts train NAME [--out DIR]``; list them with
``python -m kdtools.zoo.artifacts list``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from . import CHECKPOINTS, ZOO_DIR, ManifestError, check_file, check_writable, read_manifest
from ..data import sha256

ARTIFACT_MANIFEST = ZOO_DIR / "artifacts.json"


@dataclass(frozen=True)
class ArtifactRecipe:
    """``builder`` ("package.module:function") is called with ``kwargs`` and returns
    ``(tensors: Dict[str, Tensor], info: dict)``; the tensors are saved as they are returned."""

    builder: str
    kwargs: Dict = field(default_factory=dict)
    description: str = ""


ARTIFACT_RECIPES: Dict[str, ArtifactRecipe] = {
    "mnist-dafl-generator": ArtifactRecipe(
        builder="kdtools.paradigms.data_free:build_dafl_generator",
        kwargs=dict(teacher="mnist-cnn-4x3-teacher", student="cnn-8x1", iterations=1500, batch_size=128, seed=0),
        description="DAFL (Chen et al. 2019) generator trained against mnist-cnn-4x3-teacher without any MNIST "
                    "training image, alternating with a cnn-8x1 student distilled on its samples; float16."),
    "mnist-deepinversion-set": ArtifactRecipe(
        builder="kdtools.paradigms.data_free:build_deepinversion_set",
        kwargs=dict(teacher="mnist-cnn-4x3-teacher", per_class=200, batch_per_class=20, steps=300, seed=0),
        description="2,000 DeepInversion (Yin et al. 2020) images, 200 per class, synthesised from "
                    "mnist-cnn-4x3-teacher alone (300 Adam steps per batch of 200), stored as uint8 pixels."),
    "canvas-detector-teacher": ArtifactRecipe(
        builder="kdtools.applications.detection:build_detector_teacher",
        kwargs=dict(width=16, n_train=4000, epochs=12, batch_size=32, lr=2e-3, seed=0),
        description="Module 6's detection teacher: a GFL-style DenseDetector of width 16 (174k parameters) "
                    "trained for 12 epochs on 4,000 multi-digit MNIST canvases (kdtools.applications.detection)."),
    "canvas-detection-students": ArtifactRecipe(
        builder="kdtools.applications.detection:build_detection_study",
        kwargs=dict(n_train=2000, n_valid=300, n_test=1000, epochs=20, seeds=[0, 1, 2], workers=2),
        description="The detection lesson's comparison: a one-seed validation sweep of LD and feature-imitation "
                    "weights, then width-4 students from scratch, + LD, + feature imitation and + both (chosen "
                    "settings), 3 seeds, 20 epochs on 2,000 canvases, distilled from canvas-detector-teacher; "
                    "stores every run's history and test mAP and the first seed's students."),
    "canvas-segmenter-teacher": ArtifactRecipe(
        builder="kdtools.applications.segmentation:build_segmenter_teacher",
        kwargs=dict(width=16, n_train=1500, epochs=8, batch_size=32, lr=3e-3, seed=0),
        description="Module 6's segmentation teacher: an encoder-decoder Segmenter of width 16 (95k parameters, "
                    "stored in float16) trained for 8 epochs on 1,500 multi-digit MNIST canvases, best "
                    "validation epoch kept (kdtools.applications.segmentation)."),
    "cmudict-g2p-teacher": ArtifactRecipe(
        builder="kdtools.applications.g2p:build_g2p_teacher",
        kwargs=dict(hidden=256, n_train=40_000, epochs=12, lr=3e-3, seed=0),
        description="Module 6's grapheme-to-phoneme teacher: a GRU encoder-decoder with attention (256 units) "
                    "trained on every pronunciation of 40,000 CMU dictionary training words "
                    "(kdtools.applications.g2p)."),
    "cmudict-g2p-students": ArtifactRecipe(
        builder="kdtools.applications.g2p:build_g2p_study",
        kwargs=dict(n_train=10_000, n_valid=500, n_test=2000, epochs=12, seeds=[0, 1, 2], alphas=[0.5, 0.9],
                    beam=5, workers=2),
        description="The token- vs sequence-level KD comparison: 64-unit students trained on references, with "
                    "word-level KD (weight chosen on validation), on the teacher's beam outputs (sequence-level "
                    "KD), and both; 3 seeds, 12 epochs on 10,000 words; every run's record and the first seed's "
                    "students."),
    "addition-trace-teacher": ArtifactRecipe(
        builder="kdtools.applications.reasoning:build_reasoning_teacher",
        kwargs=dict(n_train=12_000, epochs=10, lr=2e-3, seed=0, n_valid=500),
        description="Module 6's reasoning teacher: a 3-layer decoder-only TinyLM (d = 96) trained with SFT on the "
                    "step-by-step traces of 12,000 five-digit additions (carry chains <= 2), best validation epoch "
                    "kept (kdtools.applications.reasoning)."),
    "addition-trace-students": ArtifactRecipe(
        builder="kdtools.applications.reasoning:build_reasoning_study",
        kwargs=dict(n_train=6000, k=4, temperature=1.0, n_valid=300, n_test=1000, epochs=12, seeds=[0, 1, 2],
                    kd_weight=0.5, sample_seed=0, arms=["answers only", "answers only, 3x epochs",
                                                       "all sampled traces", "rejection-sampled traces"],
                    workers=2),
        description="The reasoning-distillation comparison: 4 teacher samples per training problem at "
                    "temperature 1, verified; 2-layer TinyLM students (d = 64) trained with SFT on answers only "
                    "(12 and 36 epochs), on all sampled traces and on rejection-sampled traces; 3 seeds, 6,000 "
                    "problems; the samples, every run's record and the first seed's students (float16)."),
    "addition-trace-kd-students": ArtifactRecipe(
        builder="kdtools.applications.reasoning:build_reasoning_kd_arm",
        kwargs=dict(study="addition-trace-students", arm="rejection-sampled + token KD", workers=2),
        description="One more arm of the reasoning comparison, on the same teacher samples and settings: students "
                    "trained on the rejection-sampled traces with (1 - 0.5) SFT + 0.5 token-level KD "
                    "(kdtools.losses.token_kd_loss, T = 1) from addition-trace-teacher; 3 seeds."),
    "gaussians-diffusion-study": ArtifactRecipe(
        builder="kdtools.applications.diffusion:build_points_study",
        kwargs=dict(seeds=[0, 1, 2], n_train=8192, hidden=128, depth=2, teacher_epochs=60, round_epochs=8,
                    start_steps=64, batch_size=256, n_eval=4000, lr=2e-3),
        description="The diffusion lesson's 2-D study: per seed, a v-prediction MLP on 8 Gaussians (60 epochs of "
                    "8,192 points), progressive distillation 64 -> 32 -> ... -> 1 DDIM steps (8 epochs per "
                    "round) and the sliced Wasserstein distance of every sampler; 3 seeds, the first seed's "
                    "networks in float16 (kdtools.applications.diffusion)."),
    "mnist-diffusion-teacher": ArtifactRecipe(
        builder="kdtools.applications.diffusion:build_digit_teacher",
        kwargs=dict(size=14, hidden=384, depth=2, epochs=40, batch_size=128, lr=1e-3, seed=0),
        description="The diffusion lesson's digit model: a v-prediction MLP (384 units, 2 residual blocks) on "
                    "all 60,000 MNIST training digits average-pooled to 14x14, 40 epochs; float16."),
    "mnist-diffusion-students": ArtifactRecipe(
        builder="kdtools.applications.diffusion:build_digit_study",
        kwargs=dict(teacher="mnist-diffusion-teacher", seeds=[0, 1, 2], start_steps=64, round_epochs=2,
                    batch_size=128, lr=1e-3, n_eval=1000, n_reference=5000, keep_student=4, grid=16),
        description="Progressive distillation of mnist-diffusion-teacher from 64 DDIM steps to 1 (2 epochs per "
                    "round), 3 seeds; Frechet distances in mnist-cnn-teacher's embedding for the teacher's DDIM "
                    "and every student, sample grids from shared noise, the first seed's 4-step student."),
    "stream-anticipation-teacher": ArtifactRecipe(
        builder="kdtools.applications.streaming:build_stream_teacher",
        kwargs=dict(n_train=120_000, n_valid=3000, epochs=2, lr=3e-3, seed=0),
        description="Module 6's streaming-anticipation teacher: a 2-layer GRU anticipator of 128 units over the "
                    "last 48 frames (159k parameters), 4 horizon heads, trained for 2 epochs on a 120,000-frame "
                    "synthetic procedural stream (on 20,000 frames it overfits after 2 epochs), best validation "
                    "epoch kept (kdtools.applications.streaming)."),
    "stream-anticipation-students": ArtifactRecipe(
        builder="kdtools.applications.streaming:build_stream_study",
        kwargs=dict(n_train=20_000, n_valid=3000, n_test=6000, epochs=12, lr=3e-3, alpha=0.9, temperature=4.0,
                    seeds=[0, 1, 2], workers=2),
        description="The streaming lesson's comparison: 16-unit GRU anticipators over the last 8 frames trained "
                    "from scratch and with KD (alpha 0.9, T 4) from stream-anticipation-teacher, 3 seeds, 12 "
                    "epochs; every run's history, test accuracies and student."),
}


def _builder(recipe: ArtifactRecipe):
    module, _, function = recipe.builder.partition(":")
    return getattr(importlib.import_module(module), function)


def _entry(name: str, manifest_path: Path) -> dict:
    manifest = read_manifest(manifest_path, missing_ok=False)
    if name not in manifest:
        hint = (f" It has a recipe: build it with `python -m kdtools.zoo.artifacts train {name}`."
                if name in ARTIFACT_RECIPES else "")
        raise ValueError(f"unknown zoo artefact {name!r}; known: {', '.join(sorted(manifest)) or '(none)'}.{hint}")
    entry = manifest[name]
    if not entry.get("file") or not entry.get("sha256"):
        raise ManifestError(f"artefact manifest {manifest_path}: entry {name!r} has no file or sha256; "
                            f"re-create it with `python -m kdtools.zoo.artifacts train {name}`.")
    return entry


def load_artifact(name: str, checkpoint_dir: Path = CHECKPOINTS,
                  manifest_path: Path = ARTIFACT_MANIFEST) -> Tuple[Dict[str, torch.Tensor], dict]:
    """``(tensors, entry)`` of artefact ``name`` after checking its sha256 against the manifest."""
    entry = _entry(name, Path(manifest_path))
    path = check_file(Path(checkpoint_dir) / entry["file"], entry["sha256"], f"zoo artefact {name!r}",
                      f"python -m kdtools.zoo.artifacts train {name}")
    return torch.load(path, map_location="cpu", weights_only=True), entry


def load_network(name: str, build, checkpoint_dir: Path = CHECKPOINTS, manifest_path: Path = ARTIFACT_MANIFEST):
    """``(model, entry)``: ``build(entry["info"])`` with artefact ``name``'s weights (float16 ones as float32), in
    eval mode."""
    state, entry = load_artifact(name, checkpoint_dir, manifest_path)
    model = build(entry["info"])
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval(), entry


def grouped_states(states: Dict[str, Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Several networks' state dicts as one artefact's tensors, ``"<group>/<parameter>"``; undone by
    :func:`load_networks`."""
    return {f"{group}/{k}": v for group, state in states.items() for k, v in state.items()}


def first_seed_states(runs: List[dict], seed: int, dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
    """The tensors of a comparison artefact: every run's ``"state"`` is popped (weights never go into the JSON
    record), and the runs of ``seed`` are kept, one group per ``run["arm"]`` (see :func:`grouped_states`),
    converted to ``dtype`` when given (e.g. ``torch.float16`` to halve the file)."""
    states = {}
    for run in runs:
        state = run.pop("state")
        if run["seed"] == seed:
            states[run["arm"]] = state if dtype is None else {k: v.to(dtype) for k, v in state.items()}
    return grouped_states(states)


def load_networks(name: str, build, checkpoint_dir: Path = CHECKPOINTS, manifest_path: Path = ARTIFACT_MANIFEST):
    """``({group: model}, entry)`` for an artefact saved with :func:`grouped_states`: ``build(entry["info"])`` per
    group, with that group's weights, in eval mode."""
    tensors, entry = load_artifact(name, checkpoint_dir, manifest_path)
    states: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        group, parameter = key.split("/", 1)
        states.setdefault(group, {})[parameter] = value
    models = {}
    for group, state in states.items():
        models[group] = build(entry["info"])
        models[group].load_state_dict(state)
        models[group].eval()
    return models, entry


def store_artifact(name: str, tensors: Dict[str, torch.Tensor], info: dict, seconds: float,
                   checkpoint_dir: Path = CHECKPOINTS, manifest_path: Path = ARTIFACT_MANIFEST) -> dict:
    """Save what ``ARTIFACT_RECIPES[name]``'s builder returned and record it in the manifest."""
    if name not in ARTIFACT_RECIPES:
        raise ValueError(f"no artefact recipe for {name!r}; recipes: {', '.join(ARTIFACT_RECIPES)}")
    checkpoint_dir, manifest_path = Path(checkpoint_dir), Path(manifest_path)
    check_writable(checkpoint_dir, manifest_path)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_dir / f"{name}.pt"
    torch.save({k: v.detach().cpu() for k, v in tensors.items()}, path)
    manifest = read_manifest(manifest_path)
    manifest[name] = {
        "file": path.name,
        "sha256": sha256(path),
        "recipe": asdict(ARTIFACT_RECIPES[name]),
        "info": info,
        "train_seconds": round(seconds, 1),
        "trained_with": f"torch {torch.__version__}, cpu, {platform.machine()}, "
                        f"{torch.get_num_threads()} thread(s)",
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest[name]


def train_artifact(name: str, checkpoint_dir: Path = CHECKPOINTS, manifest_path: Path = ARTIFACT_MANIFEST,
                   **overrides) -> dict:
    """Run ``name``'s builder (``overrides`` replace recipe kwargs, e.g. for a quick try) and store the result."""
    if name not in ARTIFACT_RECIPES:
        raise ValueError(f"no artefact recipe for {name!r}; recipes: {', '.join(ARTIFACT_RECIPES)}")
    check_writable(checkpoint_dir, manifest_path)
    recipe = ARTIFACT_RECIPES[name]
    start = time.perf_counter()
    tensors, info = _builder(recipe)(**{**recipe.kwargs, **overrides})
    return store_artifact(name, tensors, info, time.perf_counter() - start, checkpoint_dir, manifest_path)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m kdtools.zoo.artifacts", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="shipped artefacts")
    train = sub.add_parser("train", help="re-build an artefact from its recipe and update the manifest")
    train.add_argument("name", choices=sorted(ARTIFACT_RECIPES))
    train.add_argument("--out", type=Path, default=None, help="write into DIR (and DIR/artifacts.json)")
    args = parser.parse_args()
    if args.command == "list":
        for name, entry in read_manifest(ARTIFACT_MANIFEST).items():
            print(f"{name}: {entry['recipe']['description']}")
        return 0
    checkpoint_dir, manifest = (args.out, args.out / "artifacts.json") if args.out else (CHECKPOINTS,
                                                                                        ARTIFACT_MANIFEST)
    torch.set_num_threads(1)
    entry = train_artifact(args.name, checkpoint_dir, manifest)
    print(f"{args.name}: sha256 {entry['sha256']}, {entry['train_seconds']} s -> {checkpoint_dir / entry['file']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
