"""The shared protocol on which every method of the course is compared.

One teacher/student pair, one training subset, one budget and one set of seeds, defined once
here, so the cross-method table on the results page compares like with like: Module 2 (KD, DKD)
starts it, later modules (FitNets, AT, NST, FSP, RKD, CRD, DML, BAN, TA) add rows by registering a
:class:`Method` in :data:`METHODS` and calling :func:`run_seeds` unchanged.

The pair is deliberately hard for the student: a tiny CNN (``cnn-4x1``, 1.7k parameters) learns
from 100 images per class, where the teacher's knowledge matters and methods differ measurably.
"""
from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import zoo
from .data import TensorLoader, load_mnist, stratified_subset
from .losses import dkd_loss, dkd_terms, dkd_warmup_factor
from .models import build_model
from .runtime import is_smoke, seed_everything
from .train import History, Step, cross_entropy_term, fit, kd_term


@dataclass(frozen=True)
class Protocol:
    """Everything that is held fixed when methods are compared."""

    teacher: str = "mnist-cnn-teacher"   # a kdtools.zoo name
    student: str = "cnn-4x1"             # a kdtools.models.ARCHITECTURES name
    train_per_class: int = 100           # stratified subset of the 60k training images
    data_seed: int = 0                   # the subset is the same for every method and seed
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seeds: Tuple[int, ...] = (0, 1, 2)
    # a fixed stratified 3,000-image test subset: evaluating every epoch on all 10,000 images would
    # cost more than the training itself for this tiny student; None uses the full test set
    test_per_class: Optional[int] = 300

    def smoke(self) -> "Protocol":
        """The same protocol shrunk for ``KDTOOLS_SMOKE=1``: 10 images per class, 1 epoch, 2 seeds."""
        return replace(self, train_per_class=10, epochs=1, seeds=self.seeds[:2])

    def describe(self) -> str:
        return (f"teacher {self.teacher}, student {self.student}, {self.train_per_class * 10} training images "
                f"({self.train_per_class}/class), {self.epochs} epochs, {self.optimizer.upper()} lr {self.lr} "
                f"{self.schedule}, batch {self.batch_size}, weight decay {self.weight_decay}, seeds {list(self.seeds)}, "
                f"test set {'all 10,000 images' if self.test_per_class is None else f'{self.test_per_class * 10:,} images'}")


SHARED_PROTOCOL = Protocol()


def active_protocol(protocol: Protocol = SHARED_PROTOCOL) -> Protocol:
    """``protocol``, shrunk when smoke mode is on."""
    return protocol.smoke() if is_smoke() else protocol


@dataclass
class Method:
    """A distillation method as the training loop needs it: weighted loss terms plus any hooks and
    trainable helper modules (regressors, embedding heads) the terms use."""

    terms: Mapping
    student_layers: Sequence[str] = ()
    teacher_layers: Sequence[str] = ()
    extra_modules: Sequence[nn.Module] = ()
    uses_teacher: bool = True


MethodFactory = Callable[[Protocol], Method]


def dkd_warmup_epochs(protocol: Protocol) -> int:
    """The authors warm DKD up linearly over 20 of 240 epochs (CIFAR-100); we keep that fraction."""
    return max(1, round(protocol.epochs * 20 / 240))


def _dkd_term(alpha: float, beta: float, temperature: float):
    def term(step: Step) -> torch.Tensor:
        return dkd_loss(step.student_logits, step.teacher_logits, step.labels, alpha, beta, temperature)
    return term


def _decoupled_part(part: str, temperature: float):
    """Mean TCKD or NCKD alone (each T²-scaled, as in :func:`kdtools.losses.dkd_terms`)."""
    index = {"tckd": 0, "nckd": 1}[part]

    def term(step: Step) -> torch.Tensor:
        return dkd_terms(step.student_logits, step.teacher_logits, step.labels, temperature)[index].mean()
    return term


def _warmup(protocol: Protocol) -> Callable[[int], float]:
    warmup = dkd_warmup_epochs(protocol)
    # fit() counts epochs from 0, the authors from 1
    return lambda epoch: dkd_warmup_factor(epoch + 1, warmup)


#: method name -> factory. CE weights, T and the KD weights follow mdistiller's CIFAR-100 configs
#: (KD: CE 0.1 + KD 0.9 at T = 4; DKD: CE 1 + warm-up x (alpha TCKD + beta NCKD), alpha 1, beta 8, T 4).
METHODS: Dict[str, MethodFactory] = {
    "student (CE)": lambda p: Method({"ce": (1.0, cross_entropy_term)}, uses_teacher=False),
    "KD": lambda p: Method({"ce": (0.1, cross_entropy_term), "kd": (0.9, kd_term(4.0))}),
    "TCKD": lambda p: Method({"ce": (1.0, cross_entropy_term), "tckd": (_warmup(p), _decoupled_part("tckd", 4.0))}),
    "NCKD": lambda p: Method({"ce": (1.0, cross_entropy_term), "nckd": (_warmup(p), _scaled(_decoupled_part("nckd", 4.0), 8.0))}),
    "DKD": lambda p: Method({"ce": (1.0, cross_entropy_term), "dkd": (_warmup(p), _dkd_term(1.0, 8.0, 4.0))}),
}


def _scaled(term, factor: float):
    return lambda step: factor * term(step)


def dkd_method(alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> MethodFactory:
    """DKD with other hyperparameters (for sweeps), same warm-up and CE weight as ``METHODS["DKD"]``."""
    return lambda p: Method({"ce": (1.0, cross_entropy_term),
                             "dkd": (_warmup(p), _dkd_term(alpha, beta, temperature))})


@functools.lru_cache(maxsize=4)
def _protocol_data(train_per_class: int, data_seed: int, test_per_class: Optional[int]):
    # every method and seed of a notebook uses the same subsets: decode and select them once
    train = load_mnist(True)
    train = train.subset(stratified_subset(train.labels, per_class=train_per_class, seed=data_seed))
    test = load_mnist(False)
    if test_per_class is not None:
        test = test.subset(stratified_subset(test.labels, per_class=test_per_class, seed=data_seed))
    return train, test


def loaders(protocol: Protocol, seed: int) -> Tuple[TensorLoader, TensorLoader]:
    """The protocol's training subset (fixed by ``data_seed``) shuffled by ``seed``, and the test set."""
    train, test = _protocol_data(protocol.train_per_class, protocol.data_seed, protocol.test_per_class)
    return TensorLoader(train, protocol.batch_size, shuffle=True, seed=seed), TensorLoader(test, 1000)


def run(method: Union[str, MethodFactory], seed: int, protocol: Optional[Protocol] = None,
        teacher: Optional[nn.Module] = None, device=None, progress: bool = False, return_model: bool = False):
    """Train the protocol's student with ``method`` from seed ``seed``; returns its History
    (and the trained student, with ``return_model=True``)."""
    protocol = protocol or active_protocol()
    factory = _factory(method)
    seed_everything(seed)
    student = build_model(protocol.student)
    spec = factory(protocol)  # built after seeding: its trainable modules are reproducible too
    if spec.uses_teacher and teacher is None:
        teacher = zoo.load(protocol.teacher)
    train_loader, test_loader = loaders(protocol, seed)
    history = fit(student, train_loader, test_loader, epochs=protocol.epochs, terms=spec.terms,
               teacher=teacher if spec.uses_teacher else None, student_layers=spec.student_layers,
               teacher_layers=spec.teacher_layers, extra_modules=spec.extra_modules,
               optimizer=protocol.optimizer, lr=protocol.lr, momentum=protocol.momentum,
               weight_decay=protocol.weight_decay, schedule=protocol.schedule,
               cache_teacher_logits=spec.uses_teacher and not spec.teacher_layers,
               device=device, seed=seed, progress=progress)
    return (history, student) if return_model else history


def _factory(method: Union[str, MethodFactory]) -> MethodFactory:
    if callable(method):
        return method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; registered: {', '.join(METHODS)}")
    return METHODS[method]


def run_seeds(method: Union[str, MethodFactory], protocol: Optional[Protocol] = None,
              teacher: Optional[nn.Module] = None, **kwargs) -> List[History]:
    """One History per seed of the protocol."""
    protocol = protocol or active_protocol()
    if teacher is None and _factory(method)(protocol).uses_teacher:
        teacher = zoo.load(protocol.teacher)
    return [run(method, seed, protocol, teacher=teacher, **kwargs) for seed in protocol.seeds]


@dataclass(frozen=True)
class Summary:
    """Last-epoch and best-epoch test accuracy over seeds (mean and sample std; std is 0 for one seed)."""

    last_mean: float
    last_std: float
    best_mean: float
    best_std: float
    n: int

    def __str__(self) -> str:
        return (f"last {self.last_mean:.2f} ± {self.last_std:.2f}, best {self.best_mean:.2f} ± {self.best_std:.2f} "
                f"(n={self.n})")


def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(histories: Sequence[History]) -> Summary:
    if not histories:
        raise ValueError("histories is empty: nothing to summarise")
    last = _mean_std([h.last_acc for h in histories])
    best = _mean_std([h.best_acc for h in histories])
    return Summary(last[0], last[1], best[0], best[1], len(histories))


def record(recorder, method: str, histories: Sequence[History], protocol: Optional[Protocol] = None) -> None:
    """Write one ``last_acc`` and one ``best_acc`` row per seed, tagged with the protocol's pair."""
    protocol = protocol or active_protocol()
    if len(histories) != len(protocol.seeds):
        raise ValueError(f"got {len(histories)} histories for the protocol's {len(protocol.seeds)} seeds")
    uses_teacher = method not in METHODS or METHODS[method](protocol).uses_teacher
    for seed, history in zip(protocol.seeds, histories):
        for metric, value in (("last_acc", history.last_acc), ("best_acc", history.best_acc)):
            recorder.record(method, metric, value, teacher=protocol.teacher if uses_teacher else "-",
                            student=protocol.student,
                            seed=seed, epochs=history.epochs, protocol="shared")
