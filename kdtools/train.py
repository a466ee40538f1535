"""One training loop for the whole course: train a model, or distil a student from a teacher.

A distillation objective is a weighted sum of *loss terms*. A term is any function of a
:class:`Step` (the batch, the student's and teacher's logits and hooked features) that returns a
scalar, so every method of the course plugs into the same loop::

    history = distill(student, teacher, train_loader, test_loader, epochs=5,
                      terms={"ce": (0.1, cross_entropy_term), "kd": (0.9, kd_term(temperature=4.0))})

The teacher is always in eval mode and runs under ``torch.no_grad()``.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import itertools
import math
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed as dist_tools
from .distributed import all_reduce_sum
from .features import FeatureExtractor
from .runtime import get_device


@dataclass
class Step:
    """Everything a loss term may need for one batch."""

    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    student_logits: torch.Tensor
    teacher_logits: Optional[torch.Tensor] = None
    student_features: Dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_features: Dict[str, torch.Tensor] = field(default_factory=dict)
    epoch: int = 0


LossTerm = Callable[[Step], torch.Tensor]
Weight = Union[float, Callable[[int], float]]  # a constant, or a function of the (0-based) epoch


def frozen(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with every parameter's ``requires_grad`` off: a teacher that training cannot
    change, even by accident (returned for chaining)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def cross_entropy_term(step: Step) -> torch.Tensor:
    """Cross-entropy of the student's logits with the hard labels."""
    return F.cross_entropy(step.student_logits, step.labels)


def kd_term(temperature: float = 4.0) -> LossTerm:
    """Hinton et al.'s soft-target term, ``T^2 KL(p_t^T || p_s^T)``, via :func:`kdtools.losses.kd_loss`."""
    from .losses import kd_loss

    def term(step: Step) -> torch.Tensor:
        if step.teacher_logits is None:
            raise ValueError("kd_term needs a teacher: pass teacher=... to distill()")
        return kd_loss(step.student_logits, step.teacher_logits, temperature=temperature)

    return term


@dataclass
class History:
    """Per-epoch record of a run. Accuracies are test accuracies in percent."""

    train_loss: List[float] = field(default_factory=list)
    term_loss: Dict[str, List[float]] = field(default_factory=dict)
    test_acc: List[float] = field(default_factory=list)
    epoch_seconds: List[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        """Epochs recorded: of training losses, or of test accuracies for a history built from those alone."""
        return max(len(self.train_loss), len(self.test_acc))

    @property
    def last_acc(self) -> float:
        return self.test_acc[-1] if self.test_acc else float("nan")

    @property
    def best_acc(self) -> float:
        return max(self.test_acc) if self.test_acc else float("nan")

    @property
    def best_epoch(self) -> int:
        """1-based epoch of the best test accuracy (the first one, on ties)."""
        return self.test_acc.index(self.best_acc) + 1 if self.test_acc else 0

    @classmethod
    def from_dict(cls, logged: Mapping) -> "History":
        """The History that :meth:`to_dict` wrote (the derived last/best entries are ignored)."""
        return cls(list(logged["train_loss"]), {name: list(v) for name, v in logged["term_loss"].items()},
                   list(logged["test_acc"]), list(logged["epoch_seconds"]))

    def to_dict(self) -> dict:
        return {"train_loss": self.train_loss, "term_loss": self.term_loss, "test_acc": self.test_acc,
                "epoch_seconds": self.epoch_seconds, "last_acc": self.last_acc, "best_acc": self.best_acc,
                "best_epoch": self.best_epoch}

    def __repr__(self) -> str:
        return (f"History(epochs={self.epochs}, last_acc={self.last_acc:.2f}, best_acc={self.best_acc:.2f} "
                f"@ epoch {self.best_epoch})")


def _move(batch, device):
    return tuple(t.to(device, non_blocking=True) for t in batch)


#: evaluation runs a convolutional network on chunks of this many images: on a CPU, chunks of 64 keep its
#: activations in cache and run the 10,000 test images through the course's CNN teacher twice as fast as
#: chunks of 1,000, with identical outputs (BatchNorm is in eval mode, so no output depends on the chunk).
#: MLPs are faster on whole batches (one large matrix product), so they are not chunked.
EVAL_CHUNK = 64


def forward_in_chunks(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model(images)``, computed :data:`EVAL_CHUNK` images at a time on a CPU when ``model`` has a
    convolution (the model should be in eval mode)."""
    if images.device.type != "cpu" or images.shape[0] <= EVAL_CHUNK or not _has_conv(model):
        return model(images)
    return torch.cat([model(chunk) for chunk in images.split(EVAL_CHUNK)])


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer; the CPU for a model with neither (e.g. one
    quantised to int8 by ``torch.ao.quantization``, whose weights are packed outside ``parameters()``)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


@torch.no_grad()
def predict_logits(model: nn.Module, loader, device=None) -> torch.Tensor:
    """Logits of ``model`` (eval mode) on every batch of ``loader``, concatenated in loader order, on the CPU."""
    device = device or model_device(model)
    was_training = model.training
    model.eval()
    try:
        return torch.cat([forward_in_chunks(model, images.to(device)).float().cpu() for images, *_ in loader])
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device=None) -> float:
    """Accuracy in percent of ``model`` (eval mode) on ``loader``."""
    device = device or model_device(model)
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for images, labels, *_ in loader:
            pred = forward_in_chunks(model, images.to(device)).argmax(dim=1).cpu()
            correct += (pred == labels).sum().item()
            total += labels.numel()
    finally:
        model.train(was_training)
    return 100.0 * correct / max(total, 1)


OPTIMIZERS: Dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params, lr, weight_decay, momentum: torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0),
    # classical (heavy-ball) momentum, as the CRD and DKD code bases train on CIFAR-100
    "sgd-classical": lambda params, lr, weight_decay, momentum: torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay),
    "adam": lambda params, lr, weight_decay, momentum: torch.optim.Adam(params, lr=lr, weight_decay=weight_decay),
    "adamw": lambda params, lr, weight_decay, momentum: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay),
}

SCHEDULES: Dict[str, Callable[[int, int], float]] = {
    # multiplier of the base learning rate at (0-based) epoch e of n
    "constant": lambda e, n: 1.0,
    "cosine": lambda e, n: 0.5 * (1.0 + math.cos(math.pi * e / n)),
    # the CRD / DKD CIFAR-100 recipe (kdtools.recipes.CRD_CIFAR100): x0.1 after epochs 150, 180 and 210 of 240,
    # i.e. after 5/8, 3/4 and 7/8 of any budget (1-based epoch e + 1 past a boundary)
    "crd-steps": lambda e, n: 0.1 ** sum(e + 1 > round(n * b / 240) for b in (150, 180, 210)),
}


def _normalise_terms(terms) -> Dict[str, Tuple[Weight, LossTerm]]:
    if not terms:
        raise ValueError("terms must hold at least one loss term, got none")
    out = {}
    for name, spec in terms.items():
        if callable(spec):
            weight, fn = 1.0, spec
        elif isinstance(spec, (tuple, list)) and len(spec) == 2:
            weight, fn = spec
        else:
            weight, fn = None, None
        if not callable(fn) or not (callable(weight) or isinstance(weight, (int, float))):
            raise ValueError(f"terms[{name!r}] must be a callable or (weight, callable), got {spec!r}")
        out[name] = (weight, fn)
    return out


def _weight_at(weight: Weight, epoch: int) -> float:
    return float(weight(epoch)) if callable(weight) else float(weight)


class NonFiniteLossError(FloatingPointError):
    """The training loss became nan or inf; the message names the epoch, the step and every term's value."""


def _nonfinite_message(epoch: int, step: int, steps: Optional[int], loss: float,
                       terms: Mapping[str, Tuple[float, float]], lr: float) -> str:
    of = f" of {steps}" if steps else ""
    listing = ", ".join(f"{name} = {value:.6g} (weight {weight:g})" for name, (weight, value) in terms.items())
    culprits = [name for name, (weight, value) in terms.items() if not math.isfinite(value)]
    blame = (f"The term(s) {', '.join(culprits)} returned a non-finite value" if culprits else
             "Every term is finite but their weighted sum is not (an infinite or nan weight?)")
    return (f"training stopped: the loss is {loss:.6g} at epoch {epoch + 1}, step {step}{of}\n"
            f"  terms: {listing}\n"
            f"  {blame}; the model keeps the weights of the previous step.\n"
            f"  Usual causes: a learning rate too high for this model and loss (lr is {lr:g} at this step:\n"
            f"  try 10 times smaller), a term that takes the log of 0 or divides by 0, or nan/inf in the inputs.")


def fit(model: nn.Module, train_loader, test_loader=None, *, epochs: int,
        terms: Optional[Mapping[str, Union[LossTerm, Tuple[Weight, LossTerm]]]] = None,
        teacher: Optional[nn.Module] = None, student_layers: Sequence[str] = (), teacher_layers: Sequence[str] = (),
        extra_modules: Iterable[nn.Module] = (), optimizer: str = "sgd", lr: float = 0.05, momentum: float = 0.9,
        weight_decay: float = 5e-4, schedule: Union[str, Callable[[int, int], float]] = "cosine",
        max_norm: Optional[float] = None, cache_teacher_logits: bool = False, device=None,
        seed: Optional[int] = None, progress: bool = True, desc: str = "", distributed: bool = False,
        checkpoint: Optional[Callable[[int, Callable[[], dict]], None]] = None,
        resume: Optional[Mapping] = None) -> History:
    """Train ``model`` for ``epochs`` on a weighted sum of loss terms and return its :class:`History`.

    terms: ``{name: (weight, term)}`` (or ``{name: term}`` for weight 1); a weight may be a function of
        the 0-based epoch (e.g. DKD's warm-up). Default: cross-entropy only.
    teacher: frozen network whose logits (and ``teacher_layers`` features) the terms may use.
    student_layers / teacher_layers: layer names hooked with :class:`FeatureExtractor`.
    extra_modules: trainable modules used inside terms (regressors, embedding heads); they are
        optimised with the model and put in train/eval mode with it.
    max_norm: after every step, rescale each unit's incoming weight vector (a row of every
        ``nn.Linear`` weight of ``model``) to an L2 norm of at most ``max_norm``: the weight constraint
        of Srivastava et al. (2014) that Hinton et al. (2015) used for their dropout-trained MNIST nets.
    cache_teacher_logits: compute the teacher's logits (and its ``teacher_layers`` features) once for
        the whole training set and look them up by example index, instead of a teacher forward pass
        every step. Valid only without augmentation; the features of every training image are kept in
        memory (e.g. 25 MB for a 32×14×14 map of 1,000 images), so cache small training sets only.
    seed: re-seeds torch before training (dropout, initialisation of lazily built parts).
    schedule: a name of :data:`SCHEDULES` or a function ``(0-based epoch, epochs) -> multiplier of lr``.
    distributed: train with ``DistributedDataParallel`` inside the process group ``torchrun`` started
        (:mod:`kdtools.distributed`). ``train_loader`` must be a :class:`~kdtools.data.TensorLoader` with
        ``shard=(rank, world_size)``, whose ``batch_size`` is the global batch. ``model``'s and
        ``extra_modules``' ``BatchNorm2d`` layers become :class:`~kdtools.distributed.GlobalBatchNorm` (in
        place), each rank's loss is weighted by its share of the global batch and the logged losses are
        global means, so the run equals one process with the same global batch, up to float rounding.
        Evaluate on one rank only (pass ``test_loader`` there, ``None`` elsewhere).
    checkpoint: ``checkpoint(epochs_done, state)`` after every epoch; ``state()`` returns everything
        ``resume`` needs (weights, optimiser, schedule, history, random state, the loader's epoch).
    resume: such a state: training continues after its last epoch and ends as the uninterrupted run would.

    Raises :class:`NonFiniteLossError` (a ``FloatingPointError``) at the first step whose loss is nan or
    inf, before that step's update, naming the epoch, the step and every term's value.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    if not callable(schedule) and schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}, or a function "
                         f"(epoch, epochs) -> multiplier")
    if max_norm is not None and not max_norm > 0:
        raise ValueError(f"max_norm must be a positive number or None, got {max_norm!r}")
    if teacher_layers and teacher is None:
        raise ValueError(f"teacher_layers={list(teacher_layers)} given but no teacher")
    terms = _normalise_terms(terms or {"ce": (1.0, cross_entropy_term)})
    if seed is not None:
        torch.manual_seed(seed)
    device = torch.device(device) if device is not None else get_device()
    extra_modules = list(extra_modules)
    model.to(device)
    for module in extra_modules:
        module.to(device)
    constrained = [m.weight for m in model.modules() if isinstance(m, nn.Linear)] if max_norm else []
    forward, world = model, 1
    if distributed:
        forward, world = _data_parallel(model, extra_modules, train_loader, device)
    params = [p for m in [model, *extra_modules] for p in m.parameters() if p.requires_grad]
    opt = OPTIMIZERS[optimizer](params, lr, weight_decay, momentum)
    multiplier = schedule if callable(schedule) else SCHEDULES[schedule]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: multiplier(e, epochs))

    cache = None
    if teacher is not None:
        teacher.to(device).eval()  # its forward runs under no_grad, so its parameters stay untouched
        if cache_teacher_logits:
            cache = _memoized_teacher_cache(teacher, train_loader, teacher_layers, device)

    from tqdm.auto import tqdm

    history = History(term_loss={name: [] for name in terms})
    first_epoch = 0
    if resume is not None:
        first_epoch, history = _restore(resume, model, extra_modules, opt, sched, set(terms), train_loader, epochs)

    def state() -> dict:
        return _state(epoch + 1, model, extra_modules, opt, sched, history, train_loader)

    student_hooks = FeatureExtractor(model, student_layers) if student_layers else None
    teacher_hooks = FeatureExtractor(teacher, teacher_layers, detach=True) if teacher_layers and cache is None else None
    bar = tqdm(range(first_epoch, epochs), desc=desc or "epochs", disable=not progress, leave=True,
               initial=first_epoch, total=epochs)
    try:
        for hooks in (student_hooks, teacher_hooks):
            if hooks is not None:
                hooks.attach()
        for epoch in bar:
            start = time.perf_counter()
            model.train()
            for module in extra_modules:
                module.train()
            weights = {name: _weight_at(w, epoch) for name, (w, _) in terms.items()}
            sums = {name: 0.0 for name in terms}
            total, seen = 0.0, 0
            for step_number, batch in enumerate(train_loader, start=1):
                images, labels, index = _move(batch, device)
                teacher_logits, teacher_features = None, {}
                if cache is not None:
                    teacher_logits = cache[0][index]
                    teacher_features = {name: features[index] for name, features in cache[1].items()}
                elif teacher is not None:
                    with torch.no_grad():
                        teacher_logits = teacher(images)
                    teacher_features = teacher_hooks.outputs if teacher_hooks else {}
                logits = forward(images)
                step = Step(images, labels, index, logits, teacher_logits,
                            student_hooks.outputs if student_hooks else {}, teacher_features, epoch)
                values = {name: fn(step) for name, (_, fn) in terms.items()}
                loss = sum(weights[name] * value for name, value in values.items())
                loss_value = loss.item()
                if not math.isfinite(loss_value):  # stop before a nan/inf gradient reaches the weights
                    raise NonFiniteLossError(_nonfinite_message(
                        epoch, step_number, len(train_loader) if hasattr(train_loader, "__len__") else None,
                        loss_value, {name: (weights[name], value.item()) for name, value in values.items()},
                        opt.param_groups[0]["lr"]))
                opt.zero_grad(set_to_none=True)
                if world > 1:  # DDP averages the ranks' gradients: weight each by its share of the global batch
                    (loss * (labels.shape[0] * world / train_loader.last_global_rows)).backward()
                else:
                    loss.backward()
                opt.step()
                if constrained:
                    with torch.no_grad():
                        for weight in constrained:
                            weight.copy_(torch.renorm(weight, p=2, dim=0, maxnorm=max_norm))
                n = labels.shape[0]
                seen += n
                total += loss_value * n
                for name, value in values.items():
                    sums[name] += value.item() * n
            sched.step()
            if world > 1:  # log global means, as one process would
                summed = all_reduce_sum(torch.tensor([total, seen, *sums.values()], dtype=torch.float64,
                                                     device=device)).tolist()
                total, seen, sums = summed[0], summed[1], dict(zip(sums, summed[2:]))
            history.train_loss.append(total / seen)
            for name in terms:
                history.term_loss[name].append(sums[name] / seen)
            if test_loader is not None:
                history.test_acc.append(evaluate(model, test_loader, device))
            history.epoch_seconds.append(time.perf_counter() - start)
            bar.set_postfix(loss=f"{history.train_loss[-1]:.4f}",
                            acc=f"{history.last_acc:.2f}" if history.test_acc else "-")
            if checkpoint is not None:
                checkpoint(epoch + 1, state)
    finally:
        for hooks in (student_hooks, teacher_hooks):
            if hooks is not None:
                hooks.remove()
        bar.close()
    model.eval()
    return history


class _Trainable(nn.Module):
    """The model and the trainable helpers of its loss terms as one module, for DistributedDataParallel; its
    forward is the model's (the helpers run inside the terms, and DDP still averages their gradients)."""

    def __init__(self, model: nn.Module, extra_modules: Sequence[nn.Module]):
        super().__init__()
        self.model, self.extras = model, nn.ModuleList(extra_modules)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def _data_parallel(model: nn.Module, extra_modules: Sequence[nn.Module], train_loader, device):
    """``(forward, world_size)`` for :func:`fit`'s ``distributed=True``."""
    world = dist_tools.world_size()
    shard = getattr(train_loader, "shard", None)
    if world > 1 and shard != (dist_tools.rank(), world):
        raise ValueError(f"distributed=True needs a TensorLoader with shard=(rank, world_size) = "
                         f"({dist_tools.rank()}, {world}), got shard={shard!r}")
    if world == 1:
        return model, 1
    for module in [model, *extra_modules]:
        dist_tools.global_batch_norm(module)
        module.to(device)
    # each rank updates CRD's memory banks with every rank's rows itself, and GlobalBatchNorm keeps the running
    # statistics equal: no buffer broadcast at every step (the option's name changed in torch 2.14)
    ddp = torch.nn.parallel.DistributedDataParallel
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
               else {"broadcast_buffers": False})
    wrapped = ddp(_Trainable(model, extra_modules), **no_sync,
                  device_ids=[torch.cuda.current_device() if device.index is None else device.index]
                  if device.type == "cuda" else None)
    return wrapped, world


def _state(epochs_done: int, model, extra_modules, opt, sched, history: History, train_loader) -> dict:
    return {"epochs_done": epochs_done, "model": model.state_dict(),
            "extra_modules": [m.state_dict() for m in extra_modules], "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "history": history.to_dict(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "loader_epoch": getattr(train_loader, "epoch", None)}


def _restore(state: Mapping, model, extra_modules, opt, sched, terms: set, train_loader, epochs: int
             ) -> Tuple[int, History]:
    done = state.get("epochs_done")
    if not isinstance(done, int) or not 0 < done <= epochs:
        raise ValueError(f"resume state has epochs_done={done!r}; expected 1..{epochs} (epochs)")
    if len(state["extra_modules"]) != len(extra_modules):
        raise ValueError(f"resume state holds {len(state['extra_modules'])} extra modules, the run has "
                         f"{len(extra_modules)}: it comes from another method")
    model.load_state_dict(state["model"])
    for module, saved in zip(extra_modules, state["extra_modules"]):
        module.load_state_dict(saved)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    history = History.from_dict(state["history"])
    if set(history.term_loss) != terms:
        raise ValueError(f"resume state logs the terms {sorted(history.term_loss)}, the run has {sorted(terms)}: "
                         f"it comes from another method")
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if state["loader_epoch"] is not None:
        train_loader.epoch = state["loader_epoch"]
    return done, history


# Runs that share a frozen teacher and a training set (the seeds and arms of a lesson) share its outputs:
# teacher -> {(weights digest, data digest, layers, device): cache}, the most recent few kept.
_TEACHER_CACHES: "weakref.WeakKeyDictionary[nn.Module, Dict[tuple, tuple]]" = weakref.WeakKeyDictionary()
_CACHES_PER_TEACHER = 2


def _digest(tensors: Iterable[torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _memoized_teacher_cache(teacher, train_loader, teacher_layers, device):
    """:func:`_teacher_cache`, computed once per process for the same teacher weights, data and layers."""
    data = getattr(train_loader, "data", None)
    if data is None or getattr(train_loader, "augment", None) is not None:
        return _teacher_cache(teacher, train_loader, teacher_layers, device)  # raises the right error
    key = (_digest(teacher.state_dict().values()), _digest([data.images]), tuple(teacher_layers), str(device))
    caches = _TEACHER_CACHES.setdefault(teacher, {})
    if key not in caches:
        while len(caches) >= _CACHES_PER_TEACHER:
            caches.pop(next(iter(caches)))
        caches[key] = _teacher_cache(teacher, train_loader, teacher_layers, device)
    return caches[key]


@torch.no_grad()
def _teacher_cache(teacher, train_loader, teacher_layers, device) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """The teacher's logits and ``teacher_layers`` features for every example of the loader's dataset."""
    if getattr(train_loader, "augment", None) is not None:
        raise ValueError("cache_teacher_logits=True needs un-augmented data: the loader applies "
                         f"{train_loader.augment!r}, so the teacher must see every augmented batch")
    data = getattr(train_loader, "data", None)
    if data is None:
        raise ValueError("cache_teacher_logits=True needs a kdtools TensorLoader (it indexes examples)")
    logits, features = [], {name: [] for name in teacher_layers}
    with FeatureExtractor(teacher, teacher_layers, detach=True) if teacher_layers else contextlib.nullcontext({}) as hooks:
        chunk = EVAL_CHUNK if _has_conv(teacher) else 1000  # one chunk per forward: hooks keep the last one's output
        for i in range(0, len(data), chunk):
            logits.append(teacher(data.images[i:i + chunk].to(device)))
            for name in teacher_layers:
                features[name].append(hooks[name])
    return torch.cat(logits), {name: torch.cat(chunks) for name, chunks in features.items()}


def train(model: nn.Module, train_loader, test_loader=None, *, epochs: int, **options) -> History:
    """Train ``model`` with cross-entropy on the hard labels (see :func:`fit` for the options)."""
    return fit(model, train_loader, test_loader, epochs=epochs, **options)


def distill(student: nn.Module, teacher: nn.Module, train_loader, test_loader=None, *, epochs: int,
            terms=None, alpha: float = 0.9, temperature: float = 4.0, **options) -> History:
    """Distil ``student`` from ``teacher``. Default terms: Hinton et al.'s objective
    ``(1 - alpha) * CE + alpha * T^2 KL(p_t^T || p_s^T)``; pass ``terms`` for any other method."""
    if terms is None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        terms = {"ce": (1.0 - alpha, cross_entropy_term), "kd": (alpha, kd_term(temperature))}
    return fit(student, train_loader, test_loader, epochs=epochs, terms=terms, teacher=teacher, **options)
