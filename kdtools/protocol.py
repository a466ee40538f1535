"""The shared protocol on which every method of the course is compared.

One teacher/student pair, one training subset, one budget and one set of seeds, defined once
here, so the cross-method table on the results page compares like with like: Module 2 (KD, DKD)
starts it, later modules (FitNets, AT, NST, FSP, RKD, CRD, DML, BAN, TA) add rows by registering
arms with :func:`register` and calling :func:`run_seeds` unchanged.

Comparisons change one thing at a time. Every *controlled* arm trains with cross-entropy weight
:data:`CE_WEIGHT` = 1, temperature :data:`TEMPERATURE` = 4 and constant loss weights, and names the
arm it differs from and how (:class:`Arm`); verdicts are drawn only from those pairs
(:func:`controlled_pairs`, :func:`compare`). The authors' published configurations (mdistiller's KD with
CE weight 0.1, DKD with its warm-up) are registered as named arms with ``controlled=False``: they are
trained and reported, and each is one change away from a controlled arm, but no verdict rests on them.

The pair is deliberately hard for the student: a tiny CNN (``cnn-4x1``, 1.7k parameters) learns
from 100 images per class, where the teacher's knowledge matters and methods differ measurably.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
import random
import statistics
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from . import zoo
from .data import TensorData, TensorLoader, load_mnist, stratified_subset
from .features import extract
from .losses import ConvRegressor, _checks, at_loss, dkd_loss, dkd_terms, dkd_warmup_factor, hint_loss, nst_loss
from .models import build_model, input_shape
from .runtime import is_smoke, map_in_processes, seed_everything
from .train import History, Step, cross_entropy_term, fit, frozen, kd_term


@dataclass(frozen=True)
class Protocol:
    """Everything that is held fixed when methods are compared."""

    teacher: str = "mnist-cnn-teacher"   # a kdtools.zoo name
    student: str = "cnn-4x1"             # a kdtools.models.ARCHITECTURES name
    train_per_class: int = 100           # stratified subset of the 60k training images
    data_seed: int = 0                   # the subset is the same for every method and seed
    # 640 SGD steps: at 20 epochs the test curves of every arm still rose steeply; doubling the budget
    # again still helps the weakest arms, so comparisons are at a fixed budget (the lessons say so)
    epochs: int = 40
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seeds: Tuple[int, ...] = (0, 1, 2)
    # a fixed stratified 2,000-image test subset, the same for every arm: evaluating every epoch on all
    # 10,000 images would cost 3x the training itself for this tiny student; None uses the full test set
    test_per_class: Optional[int] = 200
    # "mnist" or "cifar100" (:data:`DATASET_CLASSES`); CIFAR-100 trains on random crops and flips, as its papers do
    dataset: str = "mnist"
    # the folder holding the data set (default: KDTOOLS_DATA, as every loader of the course)
    data_root: Optional[str] = None

    def smoke(self) -> "Protocol":
        """The same protocol shrunk for ``KDTOOLS_SMOKE=1``: 10 images per class, 1 epoch, 2 seeds."""
        return replace(self, train_per_class=10, epochs=1, seeds=self.seeds[:2])

    @property
    def classes(self) -> int:
        return DATASET_CLASSES[self.dataset]

    def describe(self) -> str:
        return (f"{'' if self.dataset == 'mnist' else self.dataset + ', '}"
                f"teacher {self.teacher}, student {self.student}, {self.train_per_class * self.classes} training images "
                f"({self.train_per_class}/class), {self.epochs} epochs, {self.optimizer.upper()} lr {self.lr} "
                f"{self.schedule}, batch {self.batch_size}, weight decay {self.weight_decay}, seeds {list(self.seeds)}, "
                f"test set {'all 10,000 images' if self.test_per_class is None else f'{self.test_per_class * self.classes:,} images'}")

    def __post_init__(self):
        if self.dataset not in DATASET_CLASSES:
            raise ValueError(f"dataset must be one of {', '.join(DATASET_CLASSES)}, got {self.dataset!r}")


#: the data sets a protocol can train on, and their number of classes
DATASET_CLASSES: Dict[str, int] = {"mnist": 10, "cifar100": 100}


SHARED_PROTOCOL = Protocol()


def active_protocol(protocol: Protocol = SHARED_PROTOCOL) -> Protocol:
    """``protocol``, shrunk when smoke mode is on."""
    return protocol.smoke() if is_smoke() else protocol


@dataclass
class Method:
    """A distillation method as the training loop needs it: weighted loss terms plus any hooks and
    trainable helper modules (regressors, embedding heads) the terms use.

    pretrain: an optional first stage, ``pretrain(student, teacher, train_loader, protocol, seed)``, run
        by :func:`run` before the main training (e.g. FitNets' hint stage, FSP's stage 1). Whatever budget
        it spends is on top of ``protocol.epochs``; the lesson that uses one says so.
    teacher_stage: an optional stage that trains the network the main stage distils from,
        ``teacher_stage(teacher, train_loader, protocol, seed) -> nn.Module`` (``teacher`` is the protocol's
        teacher when ``uses_teacher``, else ``None``): BAN's generation 0, TA's assistant. :func:`run` runs it
        without moving the seeded random state and distils from the (frozen) network it returns; its budget
        is on top of ``protocol.epochs``.
    """

    terms: Mapping
    student_layers: Sequence[str] = ()
    teacher_layers: Sequence[str] = ()
    extra_modules: Sequence[nn.Module] = ()
    uses_teacher: bool = True
    pretrain: Optional[Callable[..., object]] = None
    teacher_stage: Optional[Callable[..., nn.Module]] = None


MethodFactory = Callable[[Protocol], Method]

#: shared by every controlled arm, so that arms differ only in their teacher terms
CE_WEIGHT = 1.0
TEMPERATURE = 4.0


@dataclass(frozen=True)
class Arm:
    """One arm of a comparison: how to build its :class:`Method`, and what it changes relative to
    which other arm.

    build: ``protocol -> Method`` (built after seeding, so trainable helper modules are reproducible).
    baseline: the registered arm it is compared with; ``None`` only for the reference arm.
    change: the one thing that differs from ``baseline``, in words.
    controlled: True when the arm shares the CE weight, the temperature and the (absent) warm-up of
        every controlled arm, so that comparing it with its baseline changes exactly ``change``.
        Authors' configurations are registered with ``controlled=False``: they are reported next to
        the controlled arms, but no verdict is drawn from them.
    """

    build: MethodFactory
    baseline: Optional[str]
    change: str
    controlled: bool = True

    def __call__(self, protocol: Protocol) -> Method:
        return self.build(protocol)


#: arm name -> :class:`Arm`. Fill it with :func:`register`; read it with :func:`controlled_pairs`.
METHODS: Dict[str, Arm] = {}


def register(name: str, build: MethodFactory, *, baseline: Optional[str], change: str,
             controlled: bool = True) -> Arm:
    """Add an arm to :data:`METHODS` and return it.

    A later lesson registers its method as one controlled arm (CE weight :data:`CE_WEIGHT` plus its
    own term, built with :func:`with_ce`) whose baseline is an existing arm, and, if the authors'
    recipe differs, that recipe as a named arm with ``controlled=False``. For FitNets, say::

        register("CE + hint", with_ce(hint=(1.0, hint_term)), baseline="student (CE)",
                 change="adds the FitNets hint term (weight 1) on stage2")
        register("FitNets (authors' config)", fitnets_two_stage, baseline="CE + hint",
                 change="hint stage first, then KD", controlled=False)

    A term needing hooked features or a trainable regressor returns a full :class:`Method` from
    ``build`` (``student_layers``, ``teacher_layers``, ``extra_modules``); :func:`run_seeds` then
    trains every arm under the same :class:`Protocol`.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if name in METHODS:
        raise ValueError(f"an arm named {name!r} is already registered")
    if not callable(build):
        raise ValueError(f"build must be a callable protocol -> Method, got {build!r}")
    if baseline is not None and baseline not in METHODS:
        raise ValueError(f"baseline {baseline!r} of arm {name!r} is not registered; "
                         f"registered: {', '.join(METHODS)}")
    if not change.strip():
        raise ValueError(f"change of arm {name!r} is empty: say what differs from {baseline!r}")
    METHODS[name] = Arm(build, baseline, change, controlled)
    return METHODS[name]


def controlled_pairs(arms: Optional[Sequence[str]] = None) -> List[Tuple[str, str, str]]:
    """``(arm, baseline, change)`` for every controlled arm among ``arms`` (default: all registered)
    whose baseline is controlled too: the comparisons a verdict may be drawn from."""
    names = list(METHODS) if arms is None else list(arms)
    for name in names:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; registered: {', '.join(METHODS)}")
    return [(name, METHODS[name].baseline, METHODS[name].change) for name in names
            if METHODS[name].controlled and METHODS[name].baseline is not None
            and METHODS[METHODS[name].baseline].controlled]


def dkd_warmup_epochs(protocol: Protocol) -> int:
    """The authors warm DKD up linearly over 20 of 240 epochs (CIFAR-100); we keep that fraction."""
    return max(1, round(protocol.epochs * 20 / 240))


def _warmup(protocol: Protocol) -> Callable[[int], float]:
    warmup = dkd_warmup_epochs(protocol)
    # fit() counts epochs from 0, the authors from 1
    return lambda epoch: dkd_warmup_factor(epoch + 1, warmup)


def _warmed_up(weight: float, protocol: Protocol) -> Callable[[int], float]:
    ramp = _warmup(protocol)
    return lambda epoch: weight * ramp(epoch)


def kd_part(temperature: float = TEMPERATURE):
    """The KD term ``T²·KL(p^t ‖ p^s)`` (mean over the batch)."""
    return kd_term(temperature)


def tckd_part(temperature: float = TEMPERATURE):
    """DKD's target-class term TCKD alone (mean over the batch, T²-scaled)."""
    return _decoupled_part("tckd", temperature)


def nckd_part(temperature: float = TEMPERATURE):
    """DKD's non-target-class term NCKD alone, *without* KD's factor ``1 − p^t_y`` (mean, T²-scaled)."""
    return _decoupled_part("nckd", temperature)


def _decoupled_part(part: str, temperature: float):
    index = {"tckd": 0, "nckd": 1}[part]

    def term(step: Step) -> torch.Tensor:
        return dkd_terms(step.student_logits, step.teacher_logits, step.labels, temperature)[index].mean()
    return term


def with_ce(**teacher_terms) -> MethodFactory:
    """A controlled arm: cross-entropy with weight :data:`CE_WEIGHT` plus ``name=(weight, term)`` teacher
    terms, with constant weights (no warm-up). With no terms it is the student trained from scratch."""
    def build(protocol: Protocol) -> Method:
        return Method({"ce": (CE_WEIGHT, cross_entropy_term), **teacher_terms}, uses_teacher=bool(teacher_terms))
    return build


def dkd_method(alpha: float = 1.0, beta: float = 8.0, temperature: float = TEMPERATURE,
               warmup: bool = False) -> MethodFactory:
    """``CE + alpha·TCKD + beta·NCKD`` (DKD with the paper's α, β as λ_TCKD, λ_NCKD), for sweeps.
    ``warmup=True`` ramps the DKD term up as the authors do (:func:`dkd_warmup_epochs`)."""
    def build(protocol: Protocol) -> Method:
        weight = _warmed_up(1.0, protocol) if warmup else 1.0
        return Method({"ce": (CE_WEIGHT, cross_entropy_term),
                       "dkd": (weight, _dkd_term(alpha, beta, temperature))})
    return build


def _dkd_term(alpha: float, beta: float, temperature: float):
    def term(step: Step) -> torch.Tensor:
        return dkd_loss(step.student_logits, step.teacher_logits, step.labels, alpha, beta, temperature)
    return term


def _mdistiller_kd(protocol: Protocol) -> Method:
    return Method({"ce": (0.1, cross_entropy_term), "kd": (0.9, kd_part())})


# Module 2. Controlled arms: CE weight 1, T = 4, constant weights; each changes one thing.
register("student (CE)", with_ce(), baseline=None, change="reference: cross-entropy only, no teacher")
register("CE + KD", with_ce(kd=(1.0, kd_part())), baseline="student (CE)",
         change="adds the KD term T²·KL(p^t‖p^s), weight 1")
register("CE + TCKD", with_ce(tckd=(1.0, tckd_part())), baseline="student (CE)",
         change="adds TCKD alone, weight 1")
register("CE + TCKD + NCKD", with_ce(tckd=(1.0, tckd_part()), nckd=(1.0, nckd_part())), baseline="CE + KD",
         change="removes KD's factor (1 − p^t_y) in front of NCKD")
register("CE + NCKD", with_ce(nckd=(1.0, nckd_part())), baseline="CE + TCKD + NCKD",
         change="drops TCKD")
register("CE + TCKD + 8·NCKD", dkd_method(beta=8.0), baseline="CE + TCKD + NCKD",
         change="raises the NCKD weight λ_NCKD from 1 to 8")
# Authors' configurations (mdistiller, CIFAR-100): reported, not used for verdicts.
register("KD (mdistiller config)", _mdistiller_kd, baseline="CE + KD",
         change="CE weight 0.1 and KD weight 0.9 instead of 1 and 1", controlled=False)
register("DKD (authors' config)", dkd_method(beta=8.0, warmup=True), baseline="CE + TCKD + 8·NCKD",
         change="ramps the DKD term up linearly over the first 1/12 of the epochs", controlled=False)


# --------------------------------------------------------------------------- Module 3: feature-based arms
#: feature loss name -> ``loss(student_feat, teacher_feat, **options)`` of :mod:`kdtools.losses.feature`
FEATURE_LOSSES: Dict[str, Callable[..., torch.Tensor]] = {"hint": hint_loss, "at": at_loss, "nst": nst_loss}

#: the three stages of :class:`kdtools.models.SmallCNN`, matched stage to stage (student name, teacher name)
STAGE_PAIRS: Tuple[Tuple[str, str], ...] = (("stage1", "stage1"), ("stage2", "stage2"), ("stage3", "stage3"))


def layer_shapes(model: nn.Module, layers: Sequence[str], image_shape: Optional[Tuple[int, ...]] = None
                 ) -> Dict[str, Tuple[int, ...]]:
    """The ``(C, H, W)`` output shape of each named layer of ``model`` for one input image (of
    :func:`kdtools.models.input_shape` by default)."""
    outputs = extract(model, layers, torch.zeros(2, *(image_shape or input_shape(model))))
    return {name: tuple(output.shape[1:]) for name, output in outputs.items()}


def _architecture_shapes(architecture: str, layers: Sequence[str]) -> Dict[str, Tuple[int, ...]]:
    with torch.random.fork_rng():  # a throwaway model must not move the seeded random state
        return layer_shapes(build_model(architecture), layers)


def _check_pairs(pairs) -> Tuple[Tuple[str, str], ...]:
    pairs = tuple(tuple(pair) for pair in pairs)
    if not pairs or any(len(pair) != 2 or not all(isinstance(n, str) and n for n in pair) for pair in pairs):
        raise ValueError(f"pairs must be a non-empty list of (student layer, teacher layer) names, got {pairs!r}")
    return pairs


def feature_term(loss: str, pairs: Sequence[Tuple[str, str]], regressors: Optional[Sequence[nn.Module]] = None,
                 **options):
    """The term ``Σ_pairs loss(r(F^s_layer), F^t_layer)`` over hooked features, where ``r`` is the pair's
    regressor (:class:`~kdtools.losses.ConvRegressor`, FitNets) or the identity. The authors of FitNets,
    AT and NST all sum their loss over the matched layers (RepDistiller, mdistiller)."""
    _checks.check_choice(loss, "loss", FEATURE_LOSSES)
    pairs = _check_pairs(pairs)
    if regressors is not None and len(regressors) != len(pairs):
        raise ValueError(f"got {len(regressors)} regressors for {len(pairs)} layer pairs")
    fn = FEATURE_LOSSES[loss]

    def term(step: Step) -> torch.Tensor:
        total = 0.0
        for i, (student_layer, teacher_layer) in enumerate(pairs):
            student_feat, teacher_feat = step.student_features[student_layer], step.teacher_features[teacher_layer]
            if regressors is not None:
                student_feat = regressors[i](student_feat, teacher_feat.shape[-2:])
            total = total + fn(student_feat, teacher_feat, **options)
        return total
    return term


@dataclass(frozen=True)
class FeatureArm:
    """A controlled feature-based arm (see :func:`feature_method`); a plain value, so it can be sent to the
    worker processes of :func:`run_jobs`."""

    loss: str
    pairs: Tuple[Tuple[str, str], ...]
    weight: float
    kd_weight: float = 0.0
    temperature: float = TEMPERATURE
    options: Tuple[Tuple[str, object], ...] = ()

    def __call__(self, protocol: Protocol) -> Method:
        pairs, regressors = self.pairs, None
        if self.loss == "hint":
            student_shapes = _architecture_shapes(protocol.student, [s for s, _ in pairs])
            teacher_shapes = layer_shapes(_zoo_teacher(protocol.teacher), [t for _, t in pairs])
            regressors = nn.ModuleList(ConvRegressor(student_shapes[s][0], teacher_shapes[t][0]) for s, t in pairs)
        terms = {"ce": (CE_WEIGHT, cross_entropy_term),
                 self.loss: (self.weight, feature_term(self.loss, pairs, regressors, **dict(self.options)))}
        if self.kd_weight:
            terms["kd"] = (self.kd_weight, kd_part(self.temperature))
        return Method(terms, student_layers=tuple(dict.fromkeys(s for s, _ in pairs)),
                      teacher_layers=tuple(dict.fromkeys(t for _, t in pairs)),
                      extra_modules=(regressors,) if regressors is not None else ())


def feature_method(loss: str, pairs: Sequence[Tuple[str, str]], weight: float, *, kd_weight: float = 0.0,
                   temperature: float = TEMPERATURE, **options) -> FeatureArm:
    """A controlled feature-based arm: ``CE + weight·Σ_pairs loss`` (+ ``kd_weight``·KD at ``temperature``).

    loss: ``"hint"`` (FitNets; each pair gets a trainable 1×1-conv :class:`~kdtools.losses.ConvRegressor`
    from the student's channels to the teacher's), ``"at"`` or ``"nst"``; ``options`` go to the loss
    (e.g. ``mode="paper"`` for AT, ``kernel="linear"`` for NST). pairs: ``(student layer, teacher layer)``
    names for :mod:`kdtools.features` hooks, e.g. :data:`STAGE_PAIRS`.
    """
    _checks.check_choice(loss, "loss", FEATURE_LOSSES)
    return FeatureArm(loss, _check_pairs(pairs), weight, kd_weight, temperature, tuple(sorted(options.items())))


# Controlled arms with the authors' loss weights (RepDistiller / mdistiller on CIFAR-100): FitNets β = 100 on
# the middle stage, AT β = 1000 and NST 50 summed over the stages. Each lesson adds its variants in its block.

# ---- FitNets (notebooks/03_feature/fitnets.ipynb)
#: (guided layer of the student, hint layer of the teacher): the middle stage's output, as in public code
FITNETS_PAIR: Tuple[str, str] = ("stage2", "stage2")


register("CE + hint", feature_method("hint", [FITNETS_PAIR], 100.0),
         baseline="student (CE)",
         change="adds the FitNets hint term (weight 100) on stage2 through a 1×1-conv regressor")
register("CE + KD + hint", feature_method("hint", [FITNETS_PAIR], 100.0, kd_weight=1.0),
         baseline="CE + KD",
         change="adds the FitNets hint term (weight 100) on stage2 through a 1×1-conv regressor")


def hint_stage_epochs(protocol: Protocol) -> int:
    """The budget of FitNets' stage 1: a quarter of the protocol's epochs (10 of 40; 1 in smoke mode),
    spent **on top of** the protocol's epochs."""
    return max(1, protocol.epochs // 4)


class _StopForward(Exception):
    """Raised by a hook to end a forward pass at the guided layer: nothing after it is computed."""


def forward_to(model: nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    """The output of ``model``'s layer ``layer`` for ``images``, computing only the layers before it
    (so a stage that trains the student up to the guided layer touches nothing after it)."""
    modules = dict(model.named_modules())
    if not layer or layer not in modules:
        raise ValueError(f"layer must name a sub-module of {type(model).__name__}, got {layer!r}; "
                         f"valid: {', '.join(name for name in modules if name)}")
    captured = {}

    def stop(module, inputs, output):
        captured["output"] = output
        raise _StopForward

    handle = modules[layer].register_forward_hook(stop)
    try:
        model(images)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured["output"]


@torch.no_grad()
def _teacher_hints(teacher: nn.Module, layer: str, images: torch.Tensor, chunk: int = 250) -> torch.Tensor:
    return torch.cat([extract(teacher, [layer], images[i:i + chunk])[layer] for i in range(0, len(images), chunk)])


def hint_stage(student: nn.Module, teacher: nn.Module, train_loader: TensorLoader, *, guided: str, hint: str,
               epochs: int, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
               optimizer: str = "sgd", schedule: str = "cosine", held_out: Optional[torch.Tensor] = None,
               regressor: Optional[nn.Module] = None) -> Dict[str, List[float]]:
    r"""FitNets' stage 1 (Romero et al., 2015, Algorithm 1): train the student **up to the guided layer**
    and a regressor on the hint loss alone, :math:`\min_{W_{guided}, W_r} \mathrm{mean}(r(v_g) - u_h)^2`.

    The student's forward pass stops at ``guided`` (:func:`forward_to`): the layers after it, the head
    included, get no gradient and stay as initialised; BatchNorm statistics after it are not touched.
    ``regressor``: default a fresh :class:`~kdtools.losses.ConvRegressor` (1×1 conv + BN) from the guided
    layer's channels to the hint layer's. The teacher's hints of the training images are computed once.
    Returns per-epoch means ``{"train": [...]}`` of the hint loss, plus ``"held_out"`` (the hint loss on
    ``held_out`` images, student and regressor in eval mode, after each epoch) when ``held_out`` is given.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    from .train import OPTIMIZERS, SCHEDULES

    images = train_loader.data.images
    teacher_hints = _teacher_hints(teacher, hint, images)
    if regressor is None:
        with torch.no_grad():
            channels = forward_to(student, guided, images[:2]).shape[1]
        regressor = ConvRegressor(channels, teacher_hints.shape[1])
    held_out_hints = _teacher_hints(teacher, hint, held_out) if held_out is not None else None
    params = [p for m in (student, regressor) for p in m.parameters() if p.requires_grad]
    # parameters after the guided layer get no gradient, and SGD leaves a parameter without one unchanged
    opt = OPTIMIZERS[optimizer](params, lr, weight_decay, momentum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: SCHEDULES[schedule](e, epochs))
    curves: Dict[str, List[float]] = {"train": []} if held_out is None else {"train": [], "held_out": []}
    was_training = student.training
    for _ in range(epochs):
        student.train(), regressor.train()
        total, seen = 0.0, 0
        for batch_images, _labels, index in train_loader:
            target = teacher_hints[index]
            loss = hint_loss(regressor(forward_to(student, guided, batch_images), target.shape[-2:]), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, seen = total + loss.item() * len(index), seen + len(index)
        sched.step()
        curves["train"].append(total / seen)
        if held_out is not None:
            student.eval(), regressor.eval()
            with torch.no_grad():
                mapped = regressor(forward_to(student, guided, held_out), held_out_hints.shape[-2:])
                curves["held_out"].append(hint_loss(mapped, held_out_hints).item())
    student.train(was_training)
    return curves


def fitnets_two_stage(pair: Tuple[str, str] = FITNETS_PAIR, kd_weight: float = 1.0,
                      temperature: float = TEMPERATURE) -> MethodFactory:
    """FitNets as the paper trains it: stage 1 = :func:`hint_stage` on ``pair`` for
    :func:`hint_stage_epochs` epochs (on top of the protocol's), then stage 2 = the whole student on
    ``CE + kd_weight·KD`` for the protocol's epochs, the regressor discarded. The paper anneals the weight
    λ of its KD term during stage 2; here it is constant, as in the controlled *CE + KD* arm."""
    guided, hint = _check_pairs([pair])[0]

    def pretrain(student, teacher, train_loader, protocol, seed):
        return hint_stage(student, teacher, train_loader, guided=guided, hint=hint,
                          epochs=hint_stage_epochs(protocol), lr=protocol.lr, momentum=protocol.momentum,
                          weight_decay=protocol.weight_decay, optimizer=protocol.optimizer,
                          schedule=protocol.schedule)

    def build(protocol: Protocol) -> Method:
        return Method({"ce": (CE_WEIGHT, cross_entropy_term), "kd": (kd_weight, kd_part(temperature))},
                      pretrain=pretrain)
    return build


register("FitNets (two-stage)", fitnets_two_stage(), baseline="CE + KD",
         change="first trains stage1–2 and a 1×1-conv regressor on the stage2 hint alone for a quarter "
                "of the epochs more (stage 1), then the same CE + KD", controlled=False)


# ---- end of FitNets


# ---- Attention transfer (notebooks/03_feature/attention_transfer.ipynb)
#: the authors' AT weight β: attention-transfer's ``cifar.py --beta 1e+3`` adds ``β·Σ_pairs`` of the code-form loss
#: (so do RepDistiller ``-b 1000`` and mdistiller ``AT.LOSS.FEAT_WEIGHT = 1000``); CIFAR / ImageNet networks
AT_AUTHORS_WEIGHT = 1000.0
#: λ_AT chosen on a validation split of the protocol's training subset (attention_transfer.ipynb re-runs the sweep)
AT_VALIDATED_WEIGHT = 10.0
#: the weights that sweep tries (one seed each, on the validation split; never on the test set)
AT_WEIGHT_GRID: Tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)


def _pair_name(pair: Tuple[str, str]) -> str:
    return pair[0] if pair[0] == pair[1] else f"{pair[0]}→{pair[1]}"


def at_paper_weights(protocol: Protocol, pairs: Sequence[Tuple[str, str]] = STAGE_PAIRS,
                     beta: float = AT_AUTHORS_WEIGHT) -> Dict[str, float]:
    """The weight of each pair's paper-form loss in the paper's eq. (2), ``β/2 · Σ_j ‖Q^s_j − Q^t_j‖₂``,
    where the paper sets β to 10³ divided by the number of elements of the attention map and by the batch
    size: ``β/(2·H_j·W_j)`` per pair (the batch is averaged inside ``at_loss``); ``H_j·W_j`` is the size
    both maps are compared at (the smaller one)."""
    pairs = _check_pairs(pairs)
    _checks.check_positive(beta, "beta")
    student = _architecture_shapes(protocol.student, [s for s, _ in pairs])
    teacher = layer_shapes(_zoo_teacher(protocol.teacher), [t for _, t in pairs])
    return {_pair_name((s, t)): beta / (2 * min(student[s][1] * student[s][2], teacher[t][1] * teacher[t][2]))
            for s, t in pairs}


def at_paper_method(beta: float = AT_AUTHORS_WEIGHT, pairs: Sequence[Tuple[str, str]] = STAGE_PAIRS
                    ) -> MethodFactory:
    """``CE + Σ_j β/(2·H_j·W_j) · at_loss(mode="paper")``: attention transfer as the paper's eq. (2) writes
    it, one term per layer pair (named ``"at <layer>"``, so :class:`~kdtools.train.History` logs each)."""
    pairs = _check_pairs(pairs)

    def build(protocol: Protocol) -> Method:
        weights = at_paper_weights(protocol, pairs, beta)
        terms = {"ce": (CE_WEIGHT, cross_entropy_term)}
        for pair in pairs:
            terms[f"at {_pair_name(pair)}"] = (weights[_pair_name(pair)], feature_term("at", [pair], mode="paper"))
        return Method(terms, student_layers=tuple(dict.fromkeys(s for s, _ in pairs)),
                      teacher_layers=tuple(dict.fromkeys(t for _, t in pairs)))
    return build


def term_gradient_norms(student: nn.Module, teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        terms: Mapping[str, Tuple[float, Callable[[Step], torch.Tensor]]],
                        student_layers: Sequence[str] = (), teacher_layers: Sequence[str] = ()
                        ) -> Dict[str, float]:
    """``‖∇_θ (weight · term)‖₂`` over the student's parameters, for each ``name: (weight, term)`` on one batch.

    The student runs in training mode (batch statistics, as in a training step) and its parameters are
    left untouched; the teacher runs in eval mode. How hard each term pulls on the weights, side by side."""
    from .features import FeatureExtractor  # only this helper needs it: the import stays in this block

    _checks.check_tensor(images, "images", "[B, 1, H, W]", 4)
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels must have shape [{images.shape[0]}], got {tuple(labels.shape)}")
    if not terms:
        raise ValueError("terms is empty: give at least one name: (weight, term)")
    was_training = student.training
    params = [p for p in student.parameters() if p.requires_grad]
    state = {k: v.clone() for k, v in student.state_dict().items()}  # BN running statistics move in train mode
    try:
        student.train()
        teacher_features = extract(teacher, teacher_layers, images) if teacher_layers else {}
        with torch.no_grad():
            teacher_logits = teacher.eval()(images)
        norms = {}
        for name, (weight, term) in terms.items():
            hooks = FeatureExtractor(student, student_layers) if student_layers else None
            if hooks is not None:
                hooks.attach()
            try:
                logits = student(images)
                step = Step(images, labels, torch.arange(len(labels)), logits, teacher_logits,
                            hooks.outputs if hooks else {}, teacher_features)
                grads = torch.autograd.grad(weight * term(step), params, allow_unused=True)
            finally:
                if hooks is not None:
                    hooks.remove()
            norms[name] = math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))
        return norms
    finally:
        student.load_state_dict(state)
        student.train(was_training)


register("CE + AT", feature_method("at", STAGE_PAIRS, AT_AUTHORS_WEIGHT), baseline="student (CE)",
         change="adds attention transfer (authors' code form, weight 1000) on the three stages")
register("CE + KD + AT", feature_method("at", STAGE_PAIRS, AT_AUTHORS_WEIGHT, kd_weight=1.0), baseline="CE + KD",
         change="adds attention transfer (authors' code form, weight 1000) on the three stages")
register("CE + AT (paper form)", at_paper_method(AT_AUTHORS_WEIGHT), baseline="CE + AT",
         change="the paper's eq. (2): per-image L2 distance weighted β/(2·H·W) per stage, "
                "instead of β times the mean squared difference")
register(f"CE + AT, λ_AT = {AT_VALIDATED_WEIGHT:g}", feature_method("at", STAGE_PAIRS, AT_VALIDATED_WEIGHT),
         baseline="student (CE)",
         change=f"adds attention transfer (code form, weight {AT_VALIDATED_WEIGHT:g}, chosen on a validation split) "
                "on the three stages")
register(f"CE + KD + AT, λ_AT = {AT_VALIDATED_WEIGHT:g}",
         feature_method("at", STAGE_PAIRS, AT_VALIDATED_WEIGHT, kd_weight=1.0), baseline="CE + KD",
         change=f"adds attention transfer (code form, weight {AT_VALIDATED_WEIGHT:g}, chosen on a validation split) "
                "on the three stages")
# ---- end of attention transfer


# ---- Neuron selectivity transfer (notebooks/03_feature/neuron_selectivity_transfer.ipynb)
from .losses import NST_KERNELS as _NST_KERNELS  # noqa: E402  (this block's imports stay in this block)
from .losses.feature import _mean_squared_pair_distance as _nst_bandwidth  # noqa: E402

#: the authors' NST weight (RepDistiller ``-b 50``, mdistiller ``NST.LOSS.FEAT_WEIGHT = 50``, CIFAR-100)
NST_AUTHORS_WEIGHT = 50.0


def nst_method(weight: float, kernel: str = "poly", *, kd_weight: float = 0.0,
               pairs: Sequence[Tuple[str, str]] = STAGE_PAIRS) -> MethodFactory:
    """``CE + weight·Σ_pairs NST(kernel)`` (+ ``kd_weight``·KD): a controlled NST arm, for sweeps.

    Same objective and same gradients as ``feature_method("nst", pairs, weight, kernel=kernel)``, but the
    teacher-only parts of :func:`~kdtools.losses.nst_loss` (its teacher–teacher kernel mean and, for the
    Gaussian kernel, the bandwidth) are computed once per training image and looked up afterwards
    (:func:`nst_term`): they carry no gradient, and on the protocol's stage-3 maps they cost more than the
    rest of the step."""
    _checks.check_choice(kernel, "kernel", _NST_KERNELS)
    pairs = _check_pairs(pairs)

    def build(protocol: Protocol) -> Method:
        terms = {"ce": (CE_WEIGHT, cross_entropy_term), "nst": (weight, nst_term(pairs, kernel))}
        if kd_weight:
            terms["kd"] = (kd_weight, kd_part())
        return Method(terms, student_layers=tuple(dict.fromkeys(s for s, _ in pairs)),
                      teacher_layers=tuple(dict.fromkeys(t for _, t in pairs)))
    return build


@dataclass(frozen=True)
class NSTArm:
    """A picklable NST arm, ``CE + weight·Σ NST(kernel)`` (+ ``kd_weight``·KD) on :data:`STAGE_PAIRS`:
    calling it builds :func:`nst_method`'s Method, so it can be handed to :func:`run_jobs`' worker
    processes, which see only registered names and picklable callables."""

    weight: float
    kernel: str = "poly"
    kd_weight: float = 0.0

    def __post_init__(self):
        _checks.check_choice(self.kernel, "kernel", _NST_KERNELS)

    def __call__(self, protocol: Protocol) -> Method:
        return nst_method(self.weight, self.kernel, kd_weight=self.kd_weight)(protocol)


def nst_term(pairs: Sequence[Tuple[str, str]], kernel: str = "poly"):
    """``Σ_pairs nst_loss(F^s, F^t, kernel)`` with the teacher-only parts cached per training example.

    Valid when the teacher's features of an example never change during a run: a frozen teacher on
    un-augmented images, which is what :func:`run` trains with (``fit`` caches the teacher's features by
    example index on the same assumption). The cache belongs to this term, so build a new term per run.
    Pairs whose spatial sizes differ are computed by :func:`~kdtools.losses.nst_loss` itself."""
    _checks.check_choice(kernel, "kernel", _NST_KERNELS)
    pairs = _check_pairs(pairs)
    k = _NST_KERNELS[kernel]
    caches: Dict[Tuple[str, str], Dict[str, torch.Tensor]] = {}

    def teacher_parts(pair, unit_t: torch.Tensor, index: torch.Tensor):
        """Per example: the mean of k(t_j, t_j') and the Gaussian bandwidth (1.0 for the other kernels)."""
        cache = caches.setdefault(pair, {})
        if "tt" not in cache:
            cache["tt"] = torch.full((int(index.max()) + 1,), float("nan"), dtype=unit_t.dtype)
            cache["sigma2"] = torch.ones_like(cache["tt"])
        if int(index.max()) >= len(cache["tt"]):
            grow = int(index.max()) + 1 - len(cache["tt"])
            cache["tt"] = torch.cat([cache["tt"], torch.full((grow,), float("nan"), dtype=unit_t.dtype)])
            cache["sigma2"] = torch.cat([cache["sigma2"], torch.ones(grow, dtype=unit_t.dtype)])
        index_cpu = index.cpu()
        missing = torch.isnan(cache["tt"][index_cpu])
        if missing.any():
            with torch.no_grad():
                new_t = unit_t[missing.to(unit_t.device)]
                sigma2 = _nst_bandwidth(new_t) if kernel == "gaussian" else None
                cache["tt"][index_cpu[missing]] = k(new_t, new_t, sigma2).mean(dim=(1, 2)).cpu()
                if sigma2 is not None:
                    cache["sigma2"][index_cpu[missing]] = sigma2.flatten().cpu()
        tt = cache["tt"][index_cpu].to(unit_t.device)
        sigma2 = cache["sigma2"][index_cpu].to(unit_t.device).view(-1, 1, 1) if kernel == "gaussian" else None
        return tt, sigma2

    def term(step: Step) -> torch.Tensor:
        total = 0.0
        for pair in pairs:
            student_feat, teacher_feat = step.student_features[pair[0]], step.teacher_features[pair[1]]
            if student_feat.shape[-2:] != teacher_feat.shape[-2:]:
                total = total + nst_loss(student_feat, teacher_feat, kernel=kernel)
                continue
            unit_s = torch.nn.functional.normalize(student_feat.flatten(2), dim=2)
            unit_t = torch.nn.functional.normalize(teacher_feat.detach().flatten(2), dim=2)
            tt, sigma2 = teacher_parts(pair, unit_t, step.index)
            total = total + tt.mean() + k(unit_s, unit_s, sigma2).mean() - 2 * k(unit_s, unit_t, sigma2).mean()
        return total
    return term


register("CE + NST", nst_method(NST_AUTHORS_WEIGHT), baseline="student (CE)",
         change="adds NST (polynomial kernel, the authors' weight 50) on the three stages")
register("CE + KD + NST", nst_method(NST_AUTHORS_WEIGHT, kd_weight=1.0), baseline="CE + KD",
         change="adds NST (polynomial kernel, the authors' weight 50) on the three stages")
# ---- end of neuron selectivity transfer


# --------------------------------------------------------------------------- Module 4: relation-based arms
#: the pooled feature vector before the classifier of :class:`kdtools.models.SmallCNN` (a hook point):
#: the "embedding" RKD and CRD relate (the authors' code takes the penultimate features, ``feat[-1]``)
EMBEDDING_LAYER = "embedding"

# ---- FSP (notebooks/04_relation/fsp.ipynb)
from .features import FeatureExtractor as _FeatureExtractor  # noqa: E402  (this block's imports stay in this block)
from .losses import fsp_loss as _fsp_loss, fsp_matrix as _fsp_matrix  # noqa: E402

#: FSP's teacher: ``cnn-4x3``, the protocol student's widths (4-8-16) with three convolutions per stage, trained on
#: all 60k training images (``python -m kdtools.zoo train mnist-cnn-4x3-teacher``). FSP matrices are
#: channels × channels, so they compare only between layers of equal widths: the shared teacher's 32-64-128
#: channels cannot be matched with the student's 4-8-16 (the paper distils ResNet-26 into ResNet-8 of equal widths).
FSP_TEACHER = "mnist-cnn-4x3-teacher"
#: the pseudo-layer name of the network's input (the image), the first map of stage1's pair
FSP_INPUT = "input"
#: (first map, last map) of each stage, as the paper pairs the first and last feature maps of each module:
#: the input of stage k is the output of stage k-1 (the image for stage1); fsp_matrix pools the larger map
FSP_PAIRS: Tuple[Tuple[str, str], ...] = ((FSP_INPUT, "stage1"), ("stage1", "stage2"), ("stage2", "stage3"))


def fsp_protocol(protocol: Optional[Protocol] = None) -> Protocol:
    """``protocol`` (default: the active one) with FSP's teacher :data:`FSP_TEACHER` instead of the shared one;
    everything else (student, data, budget, seeds) is unchanged."""
    return replace(protocol or active_protocol(), teacher=FSP_TEACHER)


def fsp_stage_epochs(protocol: Protocol) -> int:
    """The budget of FSP's stage 1: a quarter of the protocol's epochs (10 of 40; 1 in smoke mode), spent
    **on top of** the protocol's epochs, as FitNets' hint stage (:func:`hint_stage_epochs`)."""
    return max(1, protocol.epochs // 4)


def _check_fsp_pairs(pairs) -> Tuple[Tuple[str, str], ...]:
    pairs = tuple(tuple(pair) for pair in pairs)
    if not pairs or any(len(pair) != 2 or not all(isinstance(n, str) and n for n in pair) for pair in pairs):
        raise ValueError(f"pairs must be a non-empty list of (first layer, second layer) names "
                         f"(or {FSP_INPUT!r} for the image), got {pairs!r}")
    return pairs


def _fsp_layers(model: nn.Module, pairs) -> List[str]:
    """The hooked layers of ``pairs`` (not the input), in the order the forward pass reaches them."""
    order = [name for name, _ in model.named_modules() if name]
    names = {name for pair in pairs for name in pair if name != FSP_INPUT}
    unknown = sorted(names - set(order))
    if unknown:
        raise ValueError(f"pairs name unknown layer(s) {unknown} of {type(model).__name__}; valid: "
                         f"{FSP_INPUT!r}, {', '.join(order)}")
    return sorted(names, key=order.index)


def _fsp_pair_maps(features: Mapping[str, torch.Tensor], images: torch.Tensor, pairs):
    get = lambda name: images if name == FSP_INPUT else features[name]
    return [(get(a), get(b)) for a, b in pairs]


@torch.no_grad()
def fsp_matrices(model: nn.Module, images: torch.Tensor, pairs: Sequence[Tuple[str, str]] = FSP_PAIRS
                 ) -> List[torch.Tensor]:
    """The FSP matrix ``[B, m, n]`` of each pair for ``images``, ``model`` in eval mode (for plots)."""
    pairs = _check_fsp_pairs(pairs)
    features = extract(model, _fsp_layers(model, pairs), images) if _fsp_layers(model, pairs) else {}
    return [_fsp_matrix(a, b) for a, b in _fsp_pair_maps(features, images, pairs)]


def fsp_shapes(model: nn.Module, pairs: Sequence[Tuple[str, str]] = FSP_PAIRS,
               image_shape: Optional[Tuple[int, ...]] = None) -> List[Tuple[int, int]]:
    """The ``(m, n)`` shape of each pair's FSP matrix in ``model`` (inputs of :func:`~kdtools.models.input_shape`)."""
    with torch.random.fork_rng():
        images = torch.zeros(2, *(image_shape or input_shape(model)))
        return [tuple(g.shape[1:]) for g in fsp_matrices(model, images, pairs)]


def check_fsp_compatible(student: nn.Module, teacher: nn.Module, pairs: Sequence[Tuple[str, str]] = FSP_PAIRS,
                         teacher_name: str = "the teacher") -> None:
    """Raise ``ValueError`` unless every pair's FSP matrix has the same shape in both networks."""
    student_shapes, teacher_shapes = fsp_shapes(student, pairs), fsp_shapes(teacher, pairs)
    if student_shapes != teacher_shapes:
        raise ValueError(
            f"FSP needs equal channel counts: the FSP matrices of pairs {list(pairs)} have shapes "
            f"{student_shapes} in the student but {teacher_shapes} in {teacher_name}. Use a teacher of the "
            f"student's widths, e.g. protocol.fsp_protocol(protocol) (teacher {FSP_TEACHER!r}).")


@torch.no_grad()
def _teacher_maps(teacher: nn.Module, layers: Sequence[str], images: torch.Tensor, chunk: int = 250):
    parts = [extract(teacher, layers, images[i:i + chunk]) for i in range(0, len(images), chunk)]
    return {name: torch.cat([part[name] for part in parts]) for name in layers}


def fsp_stage(student: nn.Module, teacher: nn.Module, train_loader: TensorLoader, *, epochs: int,
              pairs: Sequence[Tuple[str, str]] = FSP_PAIRS, lr: float = 0.05, momentum: float = 0.9,
              weight_decay: float = 5e-4, optimizer: str = "sgd", schedule: str = "cosine",
              held_out: Optional[torch.Tensor] = None) -> Dict[str, List[float]]:
    r"""FSP's stage 1 (Yim et al., 2017, Sec. 3.3): train the student on the FSP loss **alone**,
    :math:`\min_{W_s} \sum_i \mathrm{mean}\,(G^s_i - G^t_i)^2` over the layer pairs (:func:`~kdtools.losses.fsp_loss`,
    weights 1), starting from its random initialisation; no labels are used.

    The student's forward pass stops at the deepest layer of ``pairs`` (:func:`forward_to`): the layers after it
    (the classifier) get no gradient and stay as initialised. The teacher's maps of the training images are
    computed once. Returns per-epoch means ``{"train": [...]}`` of the FSP loss, plus ``"held_out"`` (the loss
    on ``held_out`` images, student in eval mode, after each epoch) when ``held_out`` is given.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    from .train import OPTIMIZERS, SCHEDULES

    pairs = _check_fsp_pairs(pairs)
    check_fsp_compatible(student, teacher, pairs)
    layers = _fsp_layers(student, pairs)
    teacher_layers = _fsp_layers(teacher, pairs)
    # augmented batches differ every epoch: the teacher then sees each batch, else its maps are computed once
    augmented = getattr(train_loader, "augment", None) is not None
    cached = None if augmented else _teacher_maps(teacher, teacher_layers, train_loader.data.images)
    held_out_teacher = _teacher_maps(teacher, teacher_layers, held_out) if held_out is not None else None
    params = [p for p in student.parameters() if p.requires_grad]
    opt = OPTIMIZERS[optimizer](params, lr, weight_decay, momentum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: SCHEDULES[schedule](e, epochs))

    def loss_on(batch_images, teacher_features):
        with _FeatureExtractor(student, layers) as hooks:
            forward_to(student, layers[-1], batch_images)
            student_pairs = _fsp_pair_maps(hooks.outputs, batch_images, pairs)
        return _fsp_loss(student_pairs, _fsp_pair_maps(teacher_features, batch_images, pairs))

    curves: Dict[str, List[float]] = {"train": []} if held_out is None else {"train": [], "held_out": []}
    was_training = student.training
    for _ in range(epochs):
        student.train()
        total, seen = 0.0, 0
        for batch_images, _labels, index in train_loader:
            maps = (_teacher_maps(teacher, teacher_layers, batch_images) if cached is None
                    else {name: maps[index] for name, maps in cached.items()})
            loss = loss_on(batch_images, maps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, seen = total + loss.item() * len(index), seen + len(index)
        sched.step()
        curves["train"].append(total / seen)
        if held_out is not None:
            student.eval()
            with torch.no_grad():
                curves["held_out"].append(loss_on(held_out, held_out_teacher).item())
    student.train(was_training)
    return curves


@dataclass(frozen=True)
class FSPArm:
    """FSP as the paper trains it: stage 1 = :func:`fsp_stage` for ``stage1_epochs`` (default
    :func:`fsp_stage_epochs`, on top of the protocol's epochs), then stage 2 = the whole student on
    ``CE`` (+ ``kd_weight``·KD at ``temperature``) for the protocol's epochs, from the stage-1 weights.
    The teacher must have the student's widths (:func:`fsp_protocol`), or stage 1 raises a ``ValueError``
    before training; a plain value, so it can be sent to the worker processes of :func:`run_jobs`."""

    kd_weight: float = 0.0
    stage1_epochs: Optional[int] = None
    pairs: Tuple[Tuple[str, str], ...] = FSP_PAIRS
    temperature: float = TEMPERATURE

    def __post_init__(self):
        _check_fsp_pairs(self.pairs)
        if self.stage1_epochs is not None:
            _checks.check_positive_int(self.stage1_epochs, "stage1_epochs")

    def __call__(self, protocol: Protocol) -> Method:
        epochs = self.stage1_epochs

        def pretrain(student, teacher, train_loader, protocol, seed):
            # fsp_stage first checks that the widths match (a ValueError naming fsp_protocol), before any training
            return fsp_stage(student, teacher, train_loader, pairs=self.pairs,
                             epochs=epochs or fsp_stage_epochs(protocol), lr=protocol.lr,
                             momentum=protocol.momentum, weight_decay=protocol.weight_decay,
                             optimizer=protocol.optimizer, schedule=protocol.schedule)

        terms = {"ce": (CE_WEIGHT, cross_entropy_term)}
        if self.kd_weight:
            terms["kd"] = (self.kd_weight, kd_part(self.temperature))
        return Method(terms, pretrain=pretrain)


# Run these with fsp_protocol(...): the shared teacher's widths differ from the student's (FSPArm says so).
register("FSP (two-stage)", FSPArm(), baseline="student (CE)",
         change="first trains stage1–3 on the FSP loss alone against mnist-cnn-4x3-teacher (the student's "
                "widths) for a quarter of the epochs more (stage 1), then the same CE", controlled=False)
register("FSP (two-stage) + KD", FSPArm(kd_weight=1.0), baseline="CE + KD",
         change="first trains stage1–3 on the FSP loss alone against mnist-cnn-4x3-teacher (the student's "
                "widths) for a quarter of the epochs more (stage 1), then the same CE + KD", controlled=False)
# ---- end of FSP


# ---- Relational KD (notebooks/04_relation/relational_kd.ipynb)
from .losses import RKD_WEIGHTS as _RKD_WEIGHTS  # noqa: E402  (this block's imports stay in this block)
from .losses import rkd_angle_loss as _rkd_angle_loss  # noqa: E402
from .losses import rkd_distance_loss as _rkd_distance_loss  # noqa: E402

#: the RKD paper's classification weights λ_D = 25, λ_A = 50 (also RepDistiller's and mdistiller's defaults)
RKD_AUTHORS_WEIGHTS: Tuple[float, float] = (_RKD_WEIGHTS["classification"]["distance_weight"],
                                            _RKD_WEIGHTS["classification"]["angle_weight"])


def rkd_terms(distance_weight: float, angle_weight: float, layer: str = EMBEDDING_LAYER) -> Dict[str, tuple]:
    """``{"rkd-d": (λ_D, term), "rkd-a": (λ_A, term)}`` on the hooked ``layer`` of student and teacher (two terms,
    so :class:`~kdtools.train.History` logs each); a zero weight leaves its term out."""
    def distance(step: Step) -> torch.Tensor:
        return _rkd_distance_loss(step.student_features[layer], step.teacher_features[layer])

    def angle(step: Step) -> torch.Tensor:
        return _rkd_angle_loss(step.student_features[layer], step.teacher_features[layer])
    terms = {}
    if distance_weight:
        terms["rkd-d"] = (_checks.check_positive(distance_weight, "distance_weight"), distance)
    if angle_weight:
        terms["rkd-a"] = (_checks.check_positive(angle_weight, "angle_weight"), angle)
    if not terms:
        raise ValueError("distance_weight and angle_weight are both 0: an RKD arm needs at least one of them")
    return terms


@dataclass(frozen=True)
class RKDArm:
    """A controlled RKD arm, ``CE + λ_D·RKD-D + λ_A·RKD-A`` (+ ``kd_weight``·KD) on the pooled embedding
    (:data:`EMBEDDING_LAYER`, ``[B, 4C]``: 16-d for ``cnn-4x1``, 128-d for the teacher; RKD compares
    relations, so the dimensions may differ). A plain value, so :func:`run_jobs` can send it to a worker."""

    distance_weight: float = RKD_AUTHORS_WEIGHTS[0]
    angle_weight: float = RKD_AUTHORS_WEIGHTS[1]
    kd_weight: float = 0.0
    layer: str = EMBEDDING_LAYER

    def __call__(self, protocol: Protocol) -> Method:
        terms = {"ce": (CE_WEIGHT, cross_entropy_term), **rkd_terms(self.distance_weight, self.angle_weight,
                                                                    self.layer)}
        if self.kd_weight:
            terms["kd"] = (self.kd_weight, kd_part())
        return Method(terms, student_layers=(self.layer,), teacher_layers=(self.layer,))


#: the scales of the authors' weights (λ_D, λ_A) = (25, 50) that relational_kd.ipynb tries on a validation split
RKD_SCALE_GRID: Tuple[float, ...] = (1.0, 0.1, 0.01)
#: (λ_D, λ_A) chosen on that validation split (one seed; the notebook re-runs the sweep): a tenth of the authors'
RKD_VALIDATED_WEIGHTS: Tuple[float, float] = (2.5, 5.0)
#: the names of the two validated arms (without and with KD)
RKD_VALIDATED_ARMS: Tuple[str, str] = (
    f"CE + RKD, λ_D = {RKD_VALIDATED_WEIGHTS[0]:g}, λ_A = {RKD_VALIDATED_WEIGHTS[1]:g}",
    f"CE + KD + RKD, λ_D = {RKD_VALIDATED_WEIGHTS[0]:g}, λ_A = {RKD_VALIDATED_WEIGHTS[1]:g}")

register("CE + RKD", RKDArm(), baseline="student (CE)",
         change="adds RKD-D (weight 25) and RKD-A (weight 50), the authors' weights, on the pooled embedding")
register("CE + KD + RKD", RKDArm(kd_weight=1.0), baseline="CE + KD",
         change="adds RKD-D (weight 25) and RKD-A (weight 50), the authors' weights, on the pooled embedding")
register(RKD_VALIDATED_ARMS[0], RKDArm(*RKD_VALIDATED_WEIGHTS), baseline="student (CE)",
         change="adds RKD-D (weight 2.5) and RKD-A (weight 5), a tenth of the authors' weights, chosen on a "
                "validation split, on the pooled embedding")
register(RKD_VALIDATED_ARMS[1], RKDArm(*RKD_VALIDATED_WEIGHTS, kd_weight=1.0), baseline="CE + KD",
         change="adds RKD-D (weight 2.5) and RKD-A (weight 5), a tenth of the authors' weights, chosen on a "
                "validation split, on the pooled embedding")
# ---- end of relational KD


# ---- Contrastive representation distillation (notebooks/04_relation/contrastive_rd.ipynb)
from .losses import CRDLoss as _CRDLoss  # noqa: E402  (this block's imports stay in this block)

#: the authors' CRD settings (RepDistiller ``--beta 0.8 --nce_t 0.07 --feat_dim 128 --nce_m 0.5``, CIFAR-100)
CRD_AUTHORS_WEIGHT = 0.8
CRD_TEMPERATURE = 0.07
CRD_FEAT_DIM = 128
CRD_MOMENTUM = 0.5
#: the authors draw 16,384 negatives per sample from CIFAR-100's 50,000 training images: about a third
CRD_PAPER_NEGATIVES, CRD_PAPER_DATA = 16384, 50000
CRD_PAPER_FRACTION = CRD_PAPER_NEGATIVES / CRD_PAPER_DATA
#: the fractions of the training set the notebook's sweep of N tries (on a validation split)
CRD_FRACTION_GRID: Tuple[float, ...] = (1 / 64, 1 / 16, CRD_PAPER_FRACTION, 1.0)
#: the fraction that sweep chose (best mean last-epoch validation accuracy over two seeds; contrastive_rd.ipynb
#: re-runs the sweep and prints its choice next to this value)
CRD_VALIDATED_FRACTION = 1.0
#: the protocol's teacher plus two MLPs of the zoo (other architectures, trained on all 60k images), each
#: hooked at its penultimate representation: the ensemble of the notebook's ensemble distillation
CRD_ENSEMBLE: Tuple[Tuple[str, str], ...] = (("mnist-cnn-teacher", EMBEDDING_LAYER), ("mnist-mlp-teacher", "net.act2"),
                                             ("mnist-mlp-800x2-scratch-s0", "net.act2"))


def crd_negatives(n_data: int, fraction: float = CRD_PAPER_FRACTION) -> int:
    """The number N of negatives per sample for a training set of ``n_data`` images: the same fraction of the
    data set as the paper's 16,384 of 50,000 (rounded, at least 1)."""
    _checks.check_positive_int(n_data, "n_data")
    _checks.check_positive(fraction, "fraction")
    return max(1, round(fraction * n_data))


def _flat_size(shape: Tuple[int, ...]) -> int:
    return math.prod(shape)


def crd_term(loss: "_CRDLoss", student_layer: str, teacher_layer: Optional[str] = None,
             teacher_features: Optional[Callable[[Step], torch.Tensor]] = None):
    """The term ``loss(F^s, F^t, step.index)``: CRD (:class:`~kdtools.losses.CRDLoss`, memory banks indexed by
    the batch's data-set positions) between the student's hooked layer ``student_layer`` and either the
    teacher's hooked layer ``teacher_layer`` or ``teacher_features(step)`` (any function of the step, e.g. a
    second teacher, :class:`ZooTeacherFeatures`). Uses no labels and nothing of the shared protocol, so it
    serves any student/teacher pair whose loader yields indices 0..n_data-1. Put ``loss`` in
    ``Method.extra_modules`` (its projection heads are trained) and the layers in ``student_layers`` /
    ``teacher_layers``."""
    if (teacher_layer is None) == (teacher_features is None):
        raise ValueError("give exactly one of teacher_layer (a hooked layer of the teacher) and teacher_features "
                         f"(a function of the step); got teacher_layer={teacher_layer!r}, "
                         f"teacher_features={teacher_features!r}")

    def term(step: Step) -> torch.Tensor:
        teacher_feat = (step.teacher_features[teacher_layer] if teacher_layer is not None
                        else teacher_features(step))
        return loss(step.student_features[student_layer], teacher_feat, step.index)
    return term


class ZooTeacherFeatures:
    """``step -> [B, ...]`` features of a frozen zoo model's layer for the step's images, computed once per
    training example (by ``step.index``) and looked up afterwards: a second (third, ...) teacher for
    :func:`crd_term` that :func:`fit` does not run. Valid on un-augmented data, like ``fit``'s own teacher
    cache; build one per run."""

    def __init__(self, name: str, layer: str):
        self.name, self.layer = name, layer
        self._cache: Optional[torch.Tensor] = None
        self._known: Optional[torch.Tensor] = None

    def __call__(self, step: Step) -> torch.Tensor:
        index = step.index.cpu().long()
        size = int(index.max()) + 1
        if self._known is None or size > len(self._known):
            grow = size - (0 if self._known is None else len(self._known))
            known = torch.zeros(grow, dtype=torch.bool)
            self._known = known if self._known is None else torch.cat([self._known, known])
        missing = ~self._known[index]
        if missing.any():
            model = _zoo_teacher(self.name).to(step.images.device).eval()
            with torch.no_grad():
                new = extract(model, [self.layer], step.images[missing.to(step.images.device)])[self.layer]
            new = new.detach().cpu()
            if self._cache is None:
                self._cache = torch.zeros(size, *new.shape[1:], dtype=new.dtype)
            if len(self._cache) < size:
                pad = torch.zeros(size - len(self._cache), *self._cache.shape[1:], dtype=self._cache.dtype)
                self._cache = torch.cat([self._cache, pad])
            self._cache[index[missing]] = new
            self._known[index[missing]] = True
        return self._cache[index].to(step.images.device)


@dataclass(frozen=True)
class CRDArm:
    """A picklable CRD arm: ``CE + weight·Σ_teachers CRD(student_layer, teacher's layer)`` (+ ``kd_weight``·KD),
    ready for :func:`run_jobs`.

    teachers: ``(zoo name, layer)`` pairs; the first must be the protocol's teacher (its features come from
        ``fit``'s hooks and cache), the others are run by :class:`ZooTeacherFeatures`. Each teacher gets its
        own :class:`~kdtools.losses.CRDLoss` (own heads, own memory banks) and its own term ``"crd <name>"``
        (just ``"crd"`` for a single teacher); the terms are summed, each with ``weight``.
    negative_fraction: N = :func:`crd_negatives` (``n_data``, this fraction), with ``n_data`` the size of the
        training set the run actually uses (:func:`run_validation` holds some of it out): the memory banks
        are sized to that set before training (``Method.pretrain``, which trains nothing).
    """

    weight: float = CRD_AUTHORS_WEIGHT
    kd_weight: float = 0.0
    negative_fraction: float = CRD_PAPER_FRACTION
    student_layer: str = EMBEDDING_LAYER
    teachers: Optional[Tuple[Tuple[str, str], ...]] = None  # None: the protocol's teacher, at EMBEDDING_LAYER
    temperature: float = CRD_TEMPERATURE
    feat_dim: int = CRD_FEAT_DIM
    momentum: float = CRD_MOMENTUM

    def __post_init__(self):
        _checks.check_positive(self.weight, "weight")
        _checks.check_positive(self.negative_fraction, "negative_fraction")
        if self.teachers is not None and (not self.teachers or any(len(t) != 2 for t in self.teachers)):
            raise ValueError(f"teachers must be a non-empty tuple of (zoo name, layer) pairs, got {self.teachers!r}")

    def __call__(self, protocol: Protocol) -> Method:
        teachers = self.teachers or ((protocol.teacher, EMBEDDING_LAYER),)
        if teachers[0][0] != protocol.teacher:
            raise ValueError(f"the first of teachers must be the protocol's teacher {protocol.teacher!r}, "
                             f"got {teachers[0][0]!r}")
        student_dim = _flat_size(_architecture_shapes(protocol.student, [self.student_layer])[self.student_layer])
        n_data = protocol.train_per_class * protocol.classes
        terms = {"ce": (CE_WEIGHT, cross_entropy_term)}
        losses = []
        for i, (name, layer) in enumerate(teachers):
            teacher_dim = _flat_size(layer_shapes(_zoo_teacher(name), [layer])[layer])
            loss = _CRDLoss(student_dim, teacher_dim, n_data, feat_dim=self.feat_dim,
                            n_negatives=crd_negatives(n_data, self.negative_fraction),
                            temperature=self.temperature, momentum=self.momentum)
            source = {"teacher_layer": layer} if i == 0 else {"teacher_features": ZooTeacherFeatures(name, layer)}
            key = "crd" if len(teachers) == 1 else f"crd {name}"
            terms[key] = (self.weight, crd_term(loss, self.student_layer, **source))
            losses.append(loss)
        if self.kd_weight:
            terms["kd"] = (self.kd_weight, kd_part())

        def size_memory(student, teacher, train_loader, protocol, seed):
            for loss in losses:
                fit_memory(loss, len(train_loader.data), self.negative_fraction)

        return Method(terms, student_layers=(self.student_layer,), teacher_layers=(teachers[0][1],),
                      extra_modules=tuple(losses), pretrain=size_memory)


def fit_memory(loss: "_CRDLoss", n_data: int, negative_fraction: float = CRD_PAPER_FRACTION) -> None:
    """Resize ``loss``'s memory banks to ``n_data`` rows (fresh, drawn as :class:`~kdtools.losses.CRDLoss`
    draws them) and set its N to :func:`crd_negatives` (``n_data``, ``negative_fraction``). Nothing happens
    when the banks already have ``n_data`` rows and N is right (the random state is then untouched)."""
    n_negatives = crd_negatives(n_data, negative_fraction)
    if loss.n_data == n_data and loss.n_negatives == n_negatives:
        return
    fresh = _CRDLoss(loss.student_dim, loss.teacher_dim, n_data, feat_dim=loss.feat_dim,
                     n_negatives=n_negatives).to(loss.memory_student.device)
    loss.n_data, loss.n_negatives = n_data, n_negatives
    loss.memory_student, loss.memory_teacher = fresh.memory_student, fresh.memory_teacher
    loss.z_student.fill_(-1.0), loss.z_teacher.fill_(-1.0)


def run_keeping_method(method: Union[str, MethodFactory], seed: int, protocol: Optional[Protocol] = None):
    """:func:`run` that also returns the :class:`Method` it built: ``(History, student, Method)``, e.g. to
    inspect a trained CRD loss's heads and memory banks. Like :func:`run_jobs`' runs, it trains with one thread
    (restored afterwards), so it gives the numbers :func:`run_jobs` gives for the same arm and seed on any CPU."""
    built: List[Method] = []

    def factory(p: Protocol) -> Method:
        built.append(_factory(method)(p))
        return built[-1]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        history, student = run(factory, seed, protocol, return_model=True)
    finally:
        torch.set_num_threads(threads)
    return history, student, built[0]


register("CE + CRD", CRDArm(), baseline="student (CE)",
         change="adds CRD (β = 0.8, τ = 0.07, 128-d heads, N = a third of the training set) on the embedding")
register("CE + KD + CRD", CRDArm(kd_weight=1.0), baseline="CE + KD",
         change="adds CRD (β = 0.8, τ = 0.07, 128-d heads, N = a third of the training set) on the embedding")
register("CE + CRD, N = M", CRDArm(negative_fraction=CRD_VALIDATED_FRACTION), baseline="CE + CRD",
         change="draws N = M negatives per sample (as many as the training set has images; chosen on a "
                "validation split) instead of a third of M")
register("CE + CRD, 2 teachers", CRDArm(teachers=CRD_ENSEMBLE[:2]), baseline="CE + CRD",
         change="adds a second CRD term (β = 0.8) to the embedding of mnist-mlp-teacher (act2)")
register("CE + CRD, 3 teachers", CRDArm(teachers=CRD_ENSEMBLE), baseline="CE + CRD, 2 teachers",
         change="adds a third CRD term (β = 0.8) to the embedding of mnist-mlp-800x2-scratch-s0 (act2)")
# ---- end of contrastive representation distillation


# --------------------------------------------------------------------------- Module 5: paradigms
# Arms of Module 5 that fit the shared protocol (a student trained against the shared teacher's data and budget),
# so the cross-method table gets their rows; the lessons' own machinery lives in kdtools.paradigms.

# ---- Deep mutual learning (notebooks/05_paradigms/deep_mutual_learning.ipynb)
from .models import ARCHITECTURES as _ARCHITECTURES  # noqa: E402  (this block's imports stay in this block)
from .paradigms.mutual import cohort_losses as _cohort_losses  # noqa: E402
from .losses import dml_loss as _dml_loss  # noqa: E402


class PeerLogits:
    """The peer's logits on the current batch, computed once per training step and shared by the terms that use
    them: one forward pass per step, so the peer's BatchNorm statistics move once per step, as the student's do."""

    def __init__(self, peer: nn.Module):
        self.peer = peer
        self._step: Optional[Step] = None
        self._logits: Optional[torch.Tensor] = None

    def __call__(self, step: Step) -> torch.Tensor:
        if step is not self._step:  # fit() builds one Step per batch and hands it to every term
            self._step, self._logits = step, self.peer(step.images)
        return self._logits


def dml_terms(peer_logits: Callable[[Step], torch.Tensor], temperature: float = 1.0) -> Dict[str, tuple]:
    """A cohort of two as :func:`~kdtools.train.fit` terms (Zhang et al., CVPR 2018, eq. 3–4): the student's
    ``"ce"`` and ``"dml"`` = :func:`~kdtools.losses.dml_loss` (its KL to the peer's detached prediction) sum to its
    row of :func:`~kdtools.paradigms.mutual.cohort_losses`; ``"peer"`` is the peer's row (its CE plus its KL to the
    student's detached prediction), so each loss trains its own network only. All weights are 1, as in the paper."""
    def mimicry(step: Step) -> torch.Tensor:
        return _dml_loss(step.student_logits, peer_logits(step), temperature)

    def peer_loss(step: Step) -> torch.Tensor:
        return _cohort_losses(torch.stack([step.student_logits, peer_logits(step)]), step.labels, temperature)[1]
    return {"ce": (CE_WEIGHT, cross_entropy_term), "dml": (1.0, mimicry), "peer": (1.0, peer_loss)}


@dataclass(frozen=True)
class DMLArm:
    """Deep mutual learning on the shared protocol: the student and one peer (``peer``, default the protocol's
    student architecture) train together from scratch, simultaneously, each against the other's detached
    prediction (:func:`dml_terms`, at the paper's ``temperature`` T = 1); no pre-trained teacher. The peer is an
    ``extra_modules`` entry (optimised, switched to train mode and checkpointed with the student), drawn from the
    seeded random state right after the student, so it starts from other weights than the student but the same
    ones at every run of the seed. The accuracy reported is the student's. The lesson's :func:`kdtools.paradigms.
    mutual.train_cohort` differs in its loop only: plain SGD momentum and a per-step cosine schedule, each peer
    initialised from its own seed. A plain value, so :func:`run_jobs` can send it to a worker."""

    temperature: float = 1.0
    peer: Optional[str] = None

    def __post_init__(self):
        _checks.check_positive(self.temperature, "temperature")
        if self.peer is not None and self.peer not in _ARCHITECTURES:
            raise ValueError(f"peer must be None (the protocol's student) or an architecture of "
                             f"kdtools.models.ARCHITECTURES, got {self.peer!r}")

    def __call__(self, protocol: Protocol) -> Method:
        peer = build_model(self.peer or protocol.student)
        return Method(dml_terms(PeerLogits(peer), self.temperature), extra_modules=(peer,), uses_teacher=False)


register("DML (2 peers)", DMLArm(), baseline="student (CE)",
         change="trains a second cnn-4x1 alongside from scratch (on top of the budget) and adds the KL to its "
                "prediction, KL(p^peer‖p^s), weight 1, at the paper's T = 1 (the controlled arms use T = 4)",
         controlled=False)
# ---- end of deep mutual learning


# ---- Born-again networks (notebooks/05_paradigms/born_again.ipynb)
from .paradigms import born_again as _born_again  # noqa: E402  (this block's imports stay in this block)

#: BAN's generation 0 trains from seed ``seed + BAN_GENERATION0_SEED_OFFSET``: never the main stage's seed, so
#: generation 1 does not start from its teacher's initial weights (the lesson seeds generation k with 100·seed + k)
BAN_GENERATION0_SEED_OFFSET = 1000


def ban_generation0(teacher: Optional[nn.Module], train_loader, protocol: Protocol, seed: int) -> nn.Module:
    """BAN's generation 0, a ``Method.teacher_stage``: the protocol's student architecture trained on the labels
    alone (the *student (CE)* arm) with the protocol's data, budget, optimiser and schedule, from seed
    ``seed +`` :data:`BAN_GENERATION0_SEED_OFFSET`; returned frozen. ``teacher`` is ignored (BAN has none). Runs
    without moving the random state (:func:`kept_random_state`) or ``train_loader`` (:func:`stage_loader`)."""
    _checks.check_positive_int(seed, "seed", minimum=0)
    with kept_random_state():
        _, generation0 = _train("student (CE)", seed + BAN_GENERATION0_SEED_OFFSET, protocol,
                                (stage_loader(train_loader), None))
    return frozen(generation0)


@dataclass(frozen=True)
class BANArm:
    """Born-again networks, generation 1, on the shared protocol: a ``teacher_stage`` trains generation 0
    (:func:`ban_generation0`, on top of the budget), then the student, the same architecture initialised afresh,
    trains on the born-again objective (:func:`kdtools.paradigms.born_again.objective`: CE + KL to generation 0,
    weights 1, at the paper's ``temperature`` T = 1). No shared teacher. A plain value, for :func:`run_jobs`."""

    temperature: float = _born_again.BAN_TEMPERATURE

    def __post_init__(self):
        _checks.check_positive(self.temperature, "temperature")

    def __call__(self, protocol: Protocol) -> Method:
        return Method(_born_again.objective(self.temperature), uses_teacher=False, teacher_stage=ban_generation0)


register("BAN (generation 1)", BANArm(), baseline="student (CE)",
         change="adds the KL to a teacher that is a cnn-4x1 trained by CE on the same images (generation 0, its "
                "training on top of the budget), weight 1, at the paper's T = 1 (the controlled arms use T = 4)",
         controlled=False)
# ---- end of born-again networks


# ---- Teacher assistants (notebooks/05_paradigms/teacher_assistant.ipynb)
from .paradigms import assistants as _assistants  # noqa: E402  (this block's imports stay in this block)

#: the assistant of the registered TA arm: the lesson's best route (T → cnn-8x1 → S) went through it
TA_ASSISTANT = "cnn-8x1"


def train_assistant(teacher: nn.Module, train_loader, protocol: Protocol, seed: int, *,
                    assistant: str = TA_ASSISTANT) -> nn.Module:
    """A ``Method.teacher_stage``: the teacher assistant ``assistant`` distilled from ``teacher`` (the protocol's)
    by :func:`kdtools.paradigms.assistants.distill_chain` (CE + KD at T = 4, weights 1) with the protocol's data,
    budget, optimiser and schedule, from seed ``seed``; returned frozen. Runs without moving the random state
    (:func:`kept_random_state`) or ``train_loader`` (:func:`stage_loader`)."""
    if not isinstance(teacher, nn.Module):
        raise ValueError(f"teacher must be the network the assistant is distilled from (an nn.Module), "
                         f"got {type(teacher).__name__}")
    if assistant not in _ARCHITECTURES:
        raise ValueError(f"assistant must be an architecture of kdtools.models.ARCHITECTURES, got {assistant!r}")
    _checks.check_positive_int(seed, "seed", minimum=0)
    with kept_random_state():
        _, (trained,) = _assistants.distill_chain(
            [teacher, assistant], stage_loader(train_loader), None, epochs=protocol.epochs, seed=seed,
            lr=protocol.lr, optimizer=protocol.optimizer, momentum=protocol.momentum,
            weight_decay=protocol.weight_decay, schedule=protocol.schedule)
    return frozen(trained)


@dataclass(frozen=True)
class TAArm:
    """Teacher-assistant KD on the shared protocol (T → TA → S): a ``teacher_stage`` distils ``assistant`` from the
    protocol's teacher (:func:`train_assistant`, on top of the budget), then the student trains on *CE + KD*'s
    terms (CE + T²·KL, T = 4 = the assistants' link temperature, weights 1) from the assistant instead of the
    teacher. A plain value, for :func:`run_jobs`."""

    assistant: str = TA_ASSISTANT

    def __post_init__(self):
        if self.assistant not in _ARCHITECTURES:
            raise ValueError(f"assistant must be an architecture of kdtools.models.ARCHITECTURES, "
                             f"got {self.assistant!r}")

    def __call__(self, protocol: Protocol) -> Method:
        return Method({"ce": (CE_WEIGHT, cross_entropy_term), "kd": (1.0, kd_part())}, uses_teacher=True,
                      teacher_stage=functools.partial(train_assistant, assistant=self.assistant))


register(f"TA (via {TA_ASSISTANT})", TAArm(), baseline="CE + KD",
         change=f"the student distils from a {TA_ASSISTANT} assistant (itself CE + KD from the teacher, its "
                f"training on top of the budget) instead of from the teacher")
# ---- end of teacher assistants


def _load_split(dataset: str, train: bool, root: Optional[str]):
    if dataset == "cifar100":
        from .cifar import load_cifar100
        return load_cifar100(train, root)
    return load_mnist(train, root)


@functools.lru_cache(maxsize=4)
def _protocol_data(train_per_class: int, data_seed: int, test_per_class: Optional[int], dataset: str = "mnist",
                   data_root: Optional[str] = None):
    # every method and seed of a notebook uses the same subsets: decode and select them once
    train = _load_split(dataset, True, data_root)
    train = train.subset(stratified_subset(train.labels, per_class=train_per_class, seed=data_seed))
    test = _load_split(dataset, False, data_root)
    if test_per_class is not None:
        test = test.subset(stratified_subset(test.labels, per_class=test_per_class, seed=data_seed))
    return train, test


def protocol_data(protocol: Protocol):
    """``(train, test)`` :class:`~kdtools.data.TensorData` of the protocol (its subsets, decoded once per process)."""
    return _protocol_data(protocol.train_per_class, protocol.data_seed, protocol.test_per_class, protocol.dataset,
                          protocol.data_root)


def loaders(protocol: Protocol, seed: int, shard: Optional[Tuple[int, int]] = None
            ) -> Tuple[TensorLoader, TensorLoader]:
    """The protocol's training subset (fixed by ``data_seed``) shuffled by ``seed``, and the test set. CIFAR-100
    is augmented with :func:`kdtools.cifar.random_crop_flip`. ``shard=(rank, world_size)``: this process's
    slice of every global batch (distributed training; :class:`~kdtools.data.TensorLoader`)."""
    train, test = protocol_data(protocol)
    augment = None
    if protocol.dataset == "cifar100":
        from .cifar import random_crop_flip
        augment = random_crop_flip()
    return (TensorLoader(train, protocol.batch_size, shuffle=True, seed=seed, augment=augment, shard=shard),
            TensorLoader(test, 1000))


def test_images(protocol: Protocol) -> int:
    """The size of the protocol's test set."""
    return 10_000 if protocol.test_per_class is None else protocol.test_per_class * protocol.classes


@functools.lru_cache(maxsize=2)
def _zoo_teacher(name: str) -> nn.Module:
    # building the network before its weights are loaded draws random numbers: loading must not move the
    # seeded state, or a regressor built after it would depend on whether the teacher was loaded before
    with torch.random.fork_rng():
        if name.endswith(".pt"):  # a network the runner trained and saved (python -m kdtools.run --save-model)
            return load_trained(name)
        return zoo.load(name)


def load_trained(path: str) -> nn.Module:
    """A network saved by ``python -m kdtools.run --save-model`` (``{"architecture", "state_dict"}``), in eval
    mode: e.g. a CIFAR-100 teacher trained with ``--method ce --student resnet32x4``."""
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no trained network at {path!r}: train one with `python -m kdtools.run --method "
                                f"ce --student ARCH --save-model` or name a kdtools.zoo model")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or "architecture" not in saved or "state_dict" not in saved:
        raise ValueError(f"{path!r} is not a network saved by kdtools.run (expected the keys architecture and "
                         f"state_dict)")
    model = build_model(saved["architecture"], **saved.get("options", {}))
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def run(method: Union[str, MethodFactory], seed: int, protocol: Optional[Protocol] = None,
        teacher: Optional[nn.Module] = None, device=None, progress: bool = False, return_model: bool = False):
    """Train the protocol's student with ``method`` (a registered arm's name, or any
    ``protocol -> Method`` callable) from seed ``seed``; returns its History (and the trained
    student, with ``return_model=True``). The teacher (default: the protocol's, loaded from the zoo
    once per process) must be frozen: its logits on the training subset are computed once per process."""
    protocol = protocol or active_protocol()
    history, student = _train(method, seed, protocol, loaders(protocol, seed), teacher, device, progress)
    return (history, student) if return_model else history


def _train(method, seed: int, protocol: Protocol, data: Tuple[TensorLoader, TensorLoader],
           teacher: Optional[nn.Module] = None, device=None, progress: bool = False, built: Optional[list] = None,
           **fit_options):
    """The one training run behind :func:`run`, :func:`run_validation` and ``python -m kdtools.run``:
    ``(History, student)``. ``fit_options`` go to :func:`~kdtools.train.fit` (``distributed``, ``checkpoint``,
    ``resume``, ``desc``); ``built``, a list, receives the :class:`Method` built for the run."""
    factory = _factory(method)
    seed_everything(seed)
    student = build_model(protocol.student)
    spec = factory(protocol)  # built after seeding: its trainable modules are reproducible too
    if built is not None:
        built.append(spec)
    if spec.uses_teacher and teacher is None:
        teacher = _zoo_teacher(protocol.teacher)
    train_loader, test_loader = data
    if spec.teacher_stage is not None:
        with kept_random_state():
            teacher = frozen(spec.teacher_stage(teacher if spec.uses_teacher else None, train_loader, protocol, seed))
    distils = spec.uses_teacher or spec.teacher_stage is not None
    if spec.pretrain is not None:
        # a distributed run's stage before the epochs runs in full on every rank (the same result everywhere),
        # and leaves the loader's epoch counter where one process would
        whole = _unsharded(train_loader)
        spec.pretrain(student, teacher, whole, protocol, seed)
        train_loader.epoch = whole.epoch
    history = fit(student, train_loader, test_loader, epochs=protocol.epochs, terms=spec.terms,
                  teacher=teacher if distils else None, student_layers=spec.student_layers,
                  teacher_layers=spec.teacher_layers, extra_modules=spec.extra_modules,
                  optimizer=protocol.optimizer, lr=protocol.lr, momentum=protocol.momentum,
                  weight_decay=protocol.weight_decay, schedule=protocol.schedule,
                  cache_teacher_logits=distils and train_loader.augment is None, device=device, seed=seed,
                  progress=progress, **fit_options)
    return history, student


@contextlib.contextmanager
def kept_random_state():
    """Run a block (a teacher stage) without moving the random state of Python, NumPy or torch: the stage may seed
    and draw as it likes, and whatever runs after it draws what it would have drawn without it."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng():
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def stage_loader(train_loader):
    """A copy of ``train_loader`` for a teacher stage: it shuffles the same data in the same order, and iterating it
    does not advance the original, whose epoch counter picks each epoch's order for the main stage. A distributed
    loader's copy yields whole global batches: every rank trains the same teacher in full."""
    whole = copy.copy(train_loader)
    if getattr(whole, "shard", None) is not None:
        whole.shard = None
    return whole


def _unsharded(loader):
    """``loader`` itself, or a copy of a distributed loader that yields whole global batches."""
    return loader if getattr(loader, "shard", None) is None else stage_loader(loader)


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
    return [run(method, seed, protocol, teacher=teacher, **kwargs) for seed in protocol.seeds]


# --------------------------------------------------------------------------- choosing without the test set
def validation_split(protocol: Protocol, val_per_class: Optional[int] = None) -> Tuple["TensorData", "TensorData"]:
    """The protocol's training subset split into (fit, validation): ``val_per_class`` images of each class
    (default: a fifth of ``train_per_class``, at least 1) are held out, stratified and fixed by
    ``data_seed``. The test set is not touched."""
    if val_per_class is None:
        val_per_class = max(1, protocol.train_per_class // 5)
    _checks.check_positive_int(val_per_class, "val_per_class")
    if val_per_class >= protocol.train_per_class:
        raise ValueError(f"val_per_class must be < train_per_class = {protocol.train_per_class}, "
                         f"got {val_per_class}")
    train, _ = _protocol_data(protocol.train_per_class, protocol.data_seed, protocol.test_per_class)
    held_out = stratified_subset(train.labels, per_class=val_per_class, seed=protocol.data_seed + 1)
    kept = torch.ones(len(train), dtype=torch.bool)
    kept[held_out] = False
    return train.subset(torch.nonzero(kept).flatten()), train.subset(held_out)


def run_validation(method: Union[str, MethodFactory], seed: int, protocol: Optional[Protocol] = None,
                   val_per_class: Optional[int] = None, teacher: Optional[nn.Module] = None) -> History:
    """Like :func:`run`, but trains on the training subset minus a held-out validation part
    (:func:`validation_split`) and reports accuracy on that part in ``History.test_acc``: for choosing
    hyper-parameters without looking at the test set. Same optimiser, schedule and number of epochs."""
    protocol = protocol or active_protocol()
    fit_data, validation = validation_split(protocol, val_per_class)
    data = (TensorLoader(fit_data, protocol.batch_size, shuffle=True, seed=seed), TensorLoader(validation, 1000))
    return _train(method, seed, protocol, data, teacher)[0]


# --------------------------------------------------------------------------- several runs on both cores
def _run_job(job):
    method, seed, protocol = job
    torch.set_num_threads(1)
    history, student = run(method, seed, protocol, return_model=True)
    return history, {name: tensor.cpu() for name, tensor in student.state_dict().items()}


def _validation_job(job):
    method, seed, protocol = job
    torch.set_num_threads(1)
    return run_validation(method, seed, protocol)


def _in_processes(work: Callable, jobs: Sequence[tuple], workers: int) -> list:
    jobs = [tuple(job) for job in jobs]
    for method, _, _ in jobs:
        _factory(method)  # an unknown arm fails here, not in a worker
    return map_in_processes(work, jobs, workers)


def run_jobs(jobs: Sequence[Tuple[Union[str, MethodFactory], int, Protocol]], workers: int = 2):
    """``[(History, student state_dict)]`` for ``(arm, seed, protocol)`` jobs, in the jobs' order, run in
    ``workers`` processes (one thread each; ``workers=1`` runs them here). Every run seeds itself, so
    the results do not depend on ``workers``. Arms are registered names or picklable callables (such as
    :class:`NSTArm`): the workers import :mod:`kdtools` afresh."""
    return _in_processes(_run_job, jobs, workers)


def run_validation_jobs(jobs: Sequence[Tuple[Union[str, MethodFactory], int, Protocol]], workers: int = 2
                        ) -> List[History]:
    """:func:`run_validation` for ``(arm, seed, protocol)`` jobs, like :func:`run_jobs`."""
    return _in_processes(_validation_job, jobs, workers)


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


@dataclass(frozen=True)
class Comparison:
    """Arm ``a`` minus arm ``b`` in mean test accuracy (points), last and best epoch.

    A difference counts as *clear* only when it exceeds twice its standard error,
    ``2·sqrt(s_a²/n_a + s_b²/n_b)`` from the seeds' sample stds; otherwise it is inside the seeds'
    spread. With three seeds per arm this is a rough screen, not a significance test.
    """

    a: str
    b: str
    last_diff: float
    last_margin: float
    best_diff: float
    best_margin: float

    @property
    def last_clear(self) -> bool:
        return abs(self.last_diff) > self.last_margin

    @property
    def best_clear(self) -> bool:
        return abs(self.best_diff) > self.best_margin

    @property
    def verdict(self) -> str:
        if not (self.last_clear and self.best_clear and (self.last_diff > 0) == (self.best_diff > 0)):
            return "inside the seeds' spread"
        return "clearly better" if self.last_diff > 0 else "clearly worse"

    def __str__(self) -> str:
        return (f"{self.last_diff:+.2f} ± {self.last_margin:.2f} last, {self.best_diff:+.2f} ± {self.best_margin:.2f} "
                f"best: {self.verdict}")


def compare(a: str, b: str, summaries: Mapping[str, Summary]) -> Comparison:
    """:class:`Comparison` of arm ``a`` with arm ``b`` from their :class:`Summary` over seeds."""
    for name in (a, b):
        if name not in summaries:
            raise ValueError(f"no summary for arm {name!r}; summarised: {', '.join(summaries)}")
    sa, sb = summaries[a], summaries[b]
    if min(sa.n, sb.n) < 2:
        raise ValueError(f"comparing {a!r} (n={sa.n}) with {b!r} (n={sb.n}) needs >= 2 seeds each")

    def margin(std_a: float, std_b: float) -> float:
        return 2 * math.sqrt(std_a ** 2 / sa.n + std_b ** 2 / sb.n)

    return Comparison(a, b, sa.last_mean - sb.last_mean, margin(sa.last_std, sb.last_std),
                      sa.best_mean - sb.best_mean, margin(sa.best_std, sb.best_std))


LAST_EPOCH, BEST_EPOCH = "test accuracy, last epoch (%)", "test accuracy, best epoch (%)"


def record(recorder, method: str, histories: Sequence[History], protocol: Optional[Protocol] = None,
           setting: Optional[str] = None, *, teacher: Optional[str] = None, student: Optional[str] = None) -> None:
    """Write one last-epoch and one best-epoch test-accuracy row per seed, tagged with the protocol's
    pair, the test-set size and ``setting`` (default: the protocol's training set and budget).

    teacher / student: override the pair's names, for arms outside the registry (``"-"`` for no teacher, e.g.
    mutual learning); rows of another student than the protocol's are not marked as shared-protocol rows."""
    protocol = protocol or active_protocol()
    if len(histories) != len(protocol.seeds):
        raise ValueError(f"got {len(histories)} histories for the protocol's {len(protocol.seeds)} seeds")
    uses_teacher = _factory(method)(protocol).uses_teacher if method in METHODS else True
    teacher = teacher if teacher is not None else (protocol.teacher if uses_teacher else "-")
    student = student or protocol.student
    shared = {"protocol": "shared"} if student == protocol.student else {}
    setting = setting or (f"shared protocol: {protocol.train_per_class * 10} training images, "
                          f"{protocol.epochs} epochs")
    for seed, history in zip(protocol.seeds, histories):
        for metric, value in ((LAST_EPOCH, history.last_acc), (BEST_EPOCH, history.best_acc)):
            recorder.record(method, metric, value, teacher=teacher, student=student, seed=seed,
                            epochs=history.epochs, test_images=test_images(protocol), setting=setting, **shared)
