"""``python -m kdtools.run``: train any method of the course, on one process or many, and record every run.

    python -m kdtools.run --method dkd --seeds 0 1 2                       # the shared MNIST protocol
    python -m kdtools.run --method crd --dataset cifar100 --teacher T.pt   # the CRD / DKD papers' recipe
    torchrun --nproc_per_node=8 -m kdtools.run --method kd --dataset cifar100 --teacher T.pt

Every method is an arm of :data:`kdtools.protocol.METHODS`, the registry the notebooks use: :data:`RUNNER_METHODS`
only says which arm a method name (case-insensitive) runs, with the authors' settings, and where ours differ.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from . import distributed as dist_tools
from . import protocol as _protocol
from .models import build_model
from .protocol import Protocol
from .runtime import get_device
from .train import History

DATASETS: Tuple[str, ...] = tuple(_protocol.DATASET_CLASSES)  # ("mnist", "cifar100")


@dataclass(frozen=True)
class RunnerMethod:
    """What ``--method NAME`` runs.

    arm: the :data:`kdtools.protocol.METHODS` arm (its terms, hooks and stages are defined there, once).
    authors: the authors' published setting this arm reproduces, with its source.
    differs: where our arm differs from that setting ("" when it does not).
    mnist_protocol: an adjustment of the shared MNIST protocol the arm needs (FSP's teacher of matching widths).
    needs_teacher: False for methods that distil from no pretrained teacher (CE, DML, BAN).
    datasets: the data sets it runs on; ``why_not`` says why not on the others.
    """

    arm: str
    authors: str
    differs: str = ""
    mnist_protocol: Optional[Callable[[Protocol], Protocol]] = None
    needs_teacher: bool = True
    datasets: Tuple[str, ...] = DATASETS
    why_not: str = ""


#: method name (lower case) -> :class:`RunnerMethod`
RUNNER_METHODS: Dict[str, RunnerMethod] = {
    "ce": RunnerMethod(
        "student (CE)", "cross-entropy only (the papers' 'student' row)", needs_teacher=False),
    "kd": RunnerMethod(
        "KD (mdistiller config)", "0.1·CE + 0.9·T²·KL, T = 4 (RepDistiller -r 0.1 -a 0.9; mdistiller KD)"),
    "dkd": RunnerMethod(
        "DKD (authors' config)",
        "CE + TCKD + 8·NCKD, T = 4, DKD ramped up over the first 20 of 240 epochs (mdistiller DKD, res32x4/res8x4)",
        "the warm-up keeps the authors' fraction of the budget: 20/240 of the epochs (3 of the MNIST protocol's 40)"),
    "fitnets": RunnerMethod(
        "CE + hint", "CE + 100·hint on the middle stage through a regressor, one stage (RepDistiller -b 100, "
                     "mdistiller FitNet)",
        "a 1×1-conv regressor (mdistiller's ConvReg is a 3×3 conv with BN); the paper's two stages are the arm "
        "'FitNets (two-stage)'"),
    "at": RunnerMethod(
        "CE + AT", "CE + 1000·Σ_stages AT, the code's squared-mean form (RepDistiller -b 1000, mdistiller AT)",
        "summed over the three stages' outputs (RepDistiller: every feature map but the first and last)"),
    "nst": RunnerMethod(
        "CE + NST", "CE + 50·Σ_stages NST, polynomial kernel (RepDistiller -b 50)"),
    "fsp": RunnerMethod(
        "FSP (two-stage)", "FSP stage on the stages' flow matrices, then CE alone (RepDistiller's init stage, -b 0)",
        "the first stage lasts a quarter of the epochs on top of the budget (RepDistiller: 30 epochs); on MNIST "
        "the teacher is mnist-cnn-4x3-teacher, whose widths match the student's",
        mnist_protocol=_protocol.fsp_protocol),
    "rkd": RunnerMethod(
        "CE + RKD", "CE + 25·RKD-D + 50·RKD-A on the pooled embedding (RepDistiller -b 1, mdistiller RKD)"),
    "crd": RunnerMethod(
        "CE + CRD", "CE + 0.8·CRD, τ = 0.07, 128-d heads, momentum 0.5, 16,384 of 50,000 negatives "
                    "(RepDistiller -b 0.8)",
        "N keeps the authors' fraction of the training set (a third); negatives are drawn uniformly "
        "(RepDistiller's CIFAR loader draws them from other classes)"),
    "dml": RunnerMethod(
        "DML (2 peers)", "two peers of one architecture from scratch, each CE + KL(p_peer ‖ p), T = 1 (Zhang et al. "
                         "2018, Algorithm 1)",
        "both peers update from one forward pass (the paper updates them one after the other)", needs_teacher=False),
    "ban": RunnerMethod(
        "BAN (generation 1)", "generation 0 of the student's architecture trained by CE, then generation 1 "
                              "from it with CE + KL, T = 1 (Furlanello et al. 2018)",
        "one generation (the paper trains several and ensembles them); generation 0 is on top of the budget",
        needs_teacher=False),
    "ta": RunnerMethod(
        f"TA (via {_protocol.TA_ASSISTANT})",
        "teacher → assistant → student, each link (1 − λ)·CE + λ·T²·KL with λ and T searched per pair "
        "(Mirzadeh et al. 2020)",
        f"every link CE + T²·KL with weights 1, T = 4; the assistant ({_protocol.TA_ASSISTANT}) is trained on top "
        "of the budget", datasets=("mnist",),
        why_not="its assistant is an MNIST network and its stage caches the teacher's logits, which CIFAR-100's "
                "augmentation forbids"),
}


def resolve_method(name: str) -> Tuple[str, RunnerMethod]:
    """``(canonical name, RunnerMethod)`` for a method name in any case; a ValueError lists the known ones."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in RUNNER_METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(RUNNER_METHODS)}")
    return key, RUNNER_METHODS[key]


# --------------------------------------------------------------------------- the protocol of a run
def build_protocol(method: str, dataset: str = "mnist", *, epochs: Optional[int] = None,
                   teacher: Optional[str] = None, student: Optional[str] = None,
                   train_per_class: Optional[int] = None, test_per_class: Optional[int] = None,
                   batch_size: Optional[int] = None, lr: Optional[float] = None,
                   data_root: Optional[str] = None) -> Protocol:
    """The :class:`~kdtools.protocol.Protocol` ``--method`` trains under on ``dataset``, with any overrides.

    mnist: the shared protocol of the course (shrunk under ``KDTOOLS_SMOKE=1``), adjusted as the method needs.
    cifar100: :data:`kdtools.recipes.CRD_CIFAR100` (ResNet8x4 student, 240 epochs, batch 64, SGD 0.05 with
    classical momentum, x0.1 after epochs 150, 180, 210, weight decay 5e-4, random crops and flips); the
    teacher is a network saved by ``--save-model`` (no CIFAR-100 teacher ships with the course).
    """
    key, spec = resolve_method(method)
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if dataset not in spec.datasets:
        raise ValueError(f"method {key!r} runs on {', '.join(spec.datasets)} only, not {dataset!r}: {spec.why_not}")
    if dataset == "mnist":
        protocol = _protocol.active_protocol()
        if spec.mnist_protocol is not None:
            protocol = spec.mnist_protocol(protocol)
    else:
        from .recipes import CRD_CIFAR100 as recipe
        protocol = Protocol(teacher=teacher or "", student=recipe.student, train_per_class=500, test_per_class=100,
                            epochs=recipe.epochs, batch_size=recipe.batch_size, optimizer="sgd-classical",
                            lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                            schedule="crd-steps", dataset="cifar100")
        if spec.needs_teacher and not teacher:
            raise ValueError(f"--method {key} on cifar100 needs --teacher PATH: a network saved by `python -m "
                             f"kdtools.run --method ce --dataset cifar100 --student {recipe.teacher} --save-model`")
    overrides = {"epochs": epochs, "teacher": teacher, "student": student, "train_per_class": train_per_class,
                 "test_per_class": test_per_class, "batch_size": batch_size, "lr": lr, "data_root": data_root}
    return replace(protocol, **{name: value for name, value in overrides.items() if value is not None})


# --------------------------------------------------------------------------- one run, recorded and resumable
RECORD_FORMAT = "kdtools.run/1"


def record_path(out: Path, method: str, seed: int) -> Path:
    return Path(out) / f"{method}-seed{seed}.json"


def checkpoint_path(out: Path, method: str, seed: int) -> Path:
    return Path(out) / f"{method}-seed{seed}.ckpt.pt"


def model_path(out: Path, method: str, seed: int) -> Path:
    return Path(out) / f"{method}-seed{seed}.pt"


def run_config(method: str, protocol: Protocol, world: int) -> dict:
    """What a record's ``config`` holds: the protocol, the arm, and how the global batch is split."""
    key, spec = resolve_method(method)
    train, test = _protocol.protocol_data(protocol)
    config = {name: (list(value) if isinstance(value, tuple) else value)
              for name, value in asdict(protocol).items() if name not in ("seeds", "data_root")}
    config.update(arm=spec.arm, world_size=world, global_batch=protocol.batch_size,
                  per_rank_batch=protocol.batch_size / world, train_images=len(train), test_images=len(test))
    return config


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record(method: str, seed: int, config: dict, history, *, complete: bool, wall: float, started: str,
            student_parameters: int, extra_parameters: int, device: str) -> dict:
    logged = history.to_dict()
    return {"format": RECORD_FORMAT, "method": method, "arm": config["arm"], "dataset": config["dataset"],
            "seed": seed, "complete": complete, "config": config, "test_acc": logged["test_acc"],
            "train_loss": logged["train_loss"], "term_loss": logged["term_loss"],
            "epoch_seconds": logged["epoch_seconds"], "last_acc": history.last_acc if history.test_acc else None,
            "best_acc": history.best_acc if history.test_acc else None, "best_epoch": history.best_epoch,
            # everything outside the epochs: stages (FitNets, FSP, BAN, TA), the teacher's cache, set-up
            "stage_seconds": max(0.0, wall - sum(logged["epoch_seconds"])), "wall_seconds": wall,
            "student_parameters": student_parameters, "extra_parameters": extra_parameters,
            "torch": torch.__version__, "device": device, "threads": torch.get_num_threads(),
            "started": started, "finished": _now() if complete else None}


def _trainable(modules) -> int:
    return sum(p.numel() for module in modules for p in module.parameters() if p.requires_grad)


def count_student_parameters(protocol: Protocol) -> int:
    """The trainable parameters of the protocol's student (built aside: the seeded random state does not move)."""
    with torch.random.fork_rng():
        return _trainable([build_model(protocol.student)])


def read_record(path: Path) -> Optional[dict]:
    """The record at ``path``, or None if there is none."""
    path = Path(path)
    if not path.exists():
        return None
    return json.loads(path.read_text())


class _Paused(Exception):
    """Raised by the checkpoint of a run told to stop after some epochs (``--stop-after-epochs``)."""


def run_one(method: str, seed: int, protocol: Protocol, out: Path, *, progress: bool = True,
            save_model: bool = False, device=None, stop_after: Optional[int] = None) -> dict:
    """Train ``method`` from ``seed`` under ``protocol``, in this process or as one rank of a ``torchrun`` group,
    and return its record (``out/<method>-seed<seed>.json``, written by rank 0 after every epoch).

    A complete record with the same config is returned without training. A run killed mid-way continues from
    ``out/<method>-seed<seed>.ckpt.pt`` (rank 0 saves it after every epoch; stages before the epochs, such as
    FitNets' or BAN's, are re-run, deterministically) and ends as the uninterrupted run would.
    ``stop_after``: train at most this many epochs in this call and return the incomplete record (a long run
    split over sessions of limited length; the next call continues it).
    """
    method, spec = resolve_method(method)
    out = Path(out)
    world, rank = dist_tools.world_size(), dist_tools.rank()
    config = run_config(method, protocol, world)
    path, saved_path = record_path(out, method, seed), checkpoint_path(out, method, seed)
    main = rank == 0
    # rank 0 alone reads the folder (on several nodes only its node needs it) and tells every rank what to do
    decision = dist_tools.broadcast_object(_decide(path, saved_path, config) if main else None)
    if decision[0] == "error":
        raise ValueError(decision[1])
    if decision[0] == "done":
        return decision[1]
    resume = decision[1]
    started = resume["started"] if resume else _now()
    before = resume["wall_seconds"] if resume else 0.0
    clock = time.perf_counter()
    built: list = []
    device = torch.device(device) if device is not None else get_device()

    student_parameters = count_student_parameters(protocol)

    def checkpoint(epochs_done: int, state) -> None:
        if main:
            wall = before + time.perf_counter() - clock
            snapshot = state()
            torch.save({**snapshot, "config": config, "started": started, "wall_seconds": wall},
                       str(saved_path) + ".tmp")
            os.replace(str(saved_path) + ".tmp", saved_path)
            _write_json(path, _record(method, seed, config, History.from_dict(snapshot["history"]), complete=False,
                                      wall=wall, started=started, student_parameters=student_parameters,
                                      extra_parameters=_trainable(built[0].extra_modules), device=str(device)))
        trained_now = epochs_done - (resume["epochs_done"] if resume else 0)
        if stop_after is not None and trained_now >= stop_after and epochs_done < protocol.epochs:
            raise _Paused

    train_loader, test_loader = _protocol.loaders(protocol, seed, shard=(rank, world) if world > 1 else None)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    try:
        history, student = _protocol._train(
            spec.arm, seed, protocol, (train_loader, test_loader if main else None), device=device,
            progress=progress and main, built=built, distributed=world > 1, checkpoint=checkpoint,
            resume=resume, desc=f"{method} seed {seed}")
    except _Paused:
        dist_tools.barrier()
        return read_record(path) if main else {}
    wall = before + time.perf_counter() - clock
    record = _record(method, seed, config, history, complete=True, wall=wall, started=started,
                     student_parameters=student_parameters, extra_parameters=_trainable(built[0].extra_modules),
                     device=str(device))
    if main:
        if save_model:
            torch.save({"architecture": protocol.student, "state_dict": student.state_dict()},
                       model_path(out, method, seed))
        _write_json(path, record)
        saved_path.unlink(missing_ok=True)
    dist_tools.barrier()
    return record


def _decide(path: Path, saved_path: Path, config: dict) -> tuple:
    """``("done", record)``, ``("resume", checkpoint)``, ``("fresh", None)`` or ``("error", message)``."""
    existing = read_record(path)
    if existing is not None and existing.get("complete"):
        if _comparable(existing["config"]) != _comparable(config):
            return ("error", f"{path} holds a complete run with another config; delete it or choose another --out.\n"
                             f"  recorded: {_comparable(existing['config'])}\n  now:      {_comparable(config)}")
        return ("done", existing)
    if not saved_path.exists():
        return ("fresh", None)
    saved = torch.load(saved_path, map_location="cpu", weights_only=True)
    if _comparable(saved["config"]) != _comparable(config):
        return ("error", f"{saved_path} is the checkpoint of a run with another config; delete it to start over")
    return ("resume", saved)


def _comparable(config: dict) -> dict:
    # the world size may change between a killed run and its continuation; nothing else may
    return {k: v for k, v in config.items() if k not in ("world_size", "per_rank_batch")}


# --------------------------------------------------------------------------- the command line
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kdtools.run", description="Train methods of the course and record every run as JSON.",
        epilog="Methods: " + ", ".join(RUNNER_METHODS) + ". Several processes: torchrun --nproc_per_node=K -m "
               "kdtools.run ... (the batch size stays global; see the README's 'Going further').")
    parser.add_argument("--method", nargs="+", required=True, help="method name(s), any case")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the protocol's (0 1 2)")
    parser.add_argument("--dataset", default="mnist", type=str.lower, choices=DATASETS)
    parser.add_argument("--epochs", type=int, help="override the protocol's epochs")
    parser.add_argument("--out", help="folder of the records (default results/runs/<dataset>)")
    parser.add_argument("--teacher", help="a kdtools.zoo name or a .pt file saved by --save-model")
    parser.add_argument("--student", help="an architecture of kdtools.models.ARCHITECTURES")
    parser.add_argument("--batch-size", type=int, help="the GLOBAL batch (split over the processes)")
    parser.add_argument("--lr", type=float, help="override the learning rate (for the global batch)")
    parser.add_argument("--train-per-class", type=int, help="training images per class (a stratified subset)")
    parser.add_argument("--test-per-class", type=int, help="test images per class (a stratified subset)")
    parser.add_argument("--data-root", help="the data folder (default: KDTOOLS_DATA)")
    parser.add_argument("--download", action="store_true",
                        help="cifar100: fetch the official archive through torchvision first (md5 checked)")
    parser.add_argument("--threads", type=int, help="torch threads per process")
    parser.add_argument("--backend", choices=("gloo", "nccl"), help="default: nccl with CUDA, else gloo")
    parser.add_argument("--device", help="default: cuda:LOCAL_RANK if CUDA is available, else cpu")
    parser.add_argument("--save-model", action="store_true", help="save the trained student as <method>-seed<k>.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--stop-after-epochs", type=int, metavar="N",
                        help="train at most N epochs of each run, then stop; the next call continues from there")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        methods = [resolve_method(name)[0] for name in args.method]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    launch = dist_tools.init_from_env(args.backend)
    device = args.device or (f"cuda:{launch.local_rank}" if torch.cuda.is_available() else "cpu")
    out = Path(args.out or Path("results") / "runs" / args.dataset)
    try:
        if args.download and args.dataset == "cifar100":
            if launch.local_rank == 0:  # one download per node (its own disk); on a shared disk download first
                from .cifar import load_cifar100
                for train in (True, False):
                    load_cifar100(train, args.data_root, download=True)
            dist_tools.barrier()
        for method in methods:
            protocol = build_protocol(method, args.dataset, epochs=args.epochs, teacher=args.teacher,
                                      student=args.student, train_per_class=args.train_per_class,
                                      test_per_class=args.test_per_class, batch_size=args.batch_size, lr=args.lr,
                                      data_root=args.data_root)
            if launch.rank == 0:
                print(f"{method} ({RUNNER_METHODS[method].arm}): {protocol.describe()}; the student has "
                      f"{count_student_parameters(protocol):,} parameters; {launch.world_size} process(es), global batch {protocol.batch_size}",
                      flush=True)
            for seed in (args.seeds if args.seeds is not None else protocol.seeds):
                record = run_one(method, seed, protocol, out, progress=not args.no_progress,
                                 save_model=args.save_model, device=device, stop_after=args.stop_after_epochs)
                if launch.rank == 0 and not record["complete"]:
                    print(f"{method} seed {seed}: paused after epoch {len(record['test_acc'])} of "
                          f"{protocol.epochs} -> {checkpoint_path(out, method, seed)}", flush=True)
                elif launch.rank == 0:
                    print(f"{method} seed {seed}: last {record['last_acc']:.2f} %, best {record['best_acc']:.2f} % "
                          f"(epoch {record['best_epoch']}), {record['wall_seconds']:.1f} s "
                          f"-> {record_path(out, method, seed)}", flush=True)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        dist_tools.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
