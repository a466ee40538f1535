r"""The compression trinity: distillation, pruning and quantisation of one student, alone and combined.

Each tool removes something different, which is why industry stacks them:

- **distillation** (Hinton et al., 2015) chooses a smaller *architecture* and trains it on the teacher's soft
  targets; it is the only one of the three that needs training from the start;
- **pruning** removes *weights* of a trained network. Unstructured magnitude pruning (Han et al., 2016) zeroes
  the smallest weights anywhere; the matrix keeps its shape, so a dense file and dense kernels are no smaller or
  faster unless the zeros are stored and skipped. Structured pruning (Li et al., 2017) removes whole neurons,
  and the layers become genuinely smaller (:func:`shrink_mlp`);
- **quantisation** stores each weight in fewer *bits*: int8 with one scale per output channel
  (Jacob et al., 2018). Dynamic quantisation converts the weights once and the activations on the fly; static
  quantisation also fixes the activations' scales from a calibration set.

Pruning is done with :mod:`torch.nn.utils.prune` and quantisation with PyTorch's eager-mode
:mod:`torch.ao.quantization` (``quantize_dynamic``, ``prepare``/``convert``). PyTorch 2.10 deprecated the
latter in favour of ``torchao``; it still works in the torch this course pins, and the functions here silence
only that deprecation warning.

Everything works on the course's :class:`~kdtools.models.MLP` (``net.fc1, net.act1, ..., net.head``) and,
where stated, on any ``nn.Sequential`` of ``Linear`` and ``ReLU`` layers.
"""
from __future__ import annotations

import copy
import gzip
import io
import warnings
from contextlib import contextmanager
from typing import Callable, Dict, Iterable, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from ..bench import cpu_latency_ms, interleaved_latency_ms  # noqa: F401  (re-exported: the lesson calls it here)
from ..data import TensorData, TensorLoader, stratified_subset
from ..losses import kd_loss
from ..models import MLP
from ..train import evaluate
from ._loop import run_epochs

__all__ = ["linear_layers", "weight_sparsity", "magnitude_prune", "neuron_prune", "make_permanent",
           "shrink_mlp", "quantize_dynamic_int8", "quantize_static_int8", "file_bytes", "finetune",
           "finetune_split", "FINETUNE_LOSSES", "measure", "interleaved_latency_ms", "symmetric_int8"]


def linear_layers(model: nn.Module) -> List[Tuple[str, nn.Linear]]:
    """``(name, module)`` of every ``nn.Linear`` of ``model``, in registration (= forward, for an MLP) order."""
    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not layers:
        raise ValueError(f"model must contain nn.Linear layers, got a {type(model).__name__} without any")
    return layers


def _weight(module: nn.Module) -> torch.Tensor:
    """The weight a layer computes with, for a float, pruned or int8 (quantised) linear layer."""
    weight = module.weight() if callable(getattr(module, "weight", None)) else module.weight
    return weight.dequantize() if weight.is_quantized else weight


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of the weights of all linear layers (float, pruned or int8) that are exactly zero."""
    zeros = total = 0
    for _, module in model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__.startswith(("Linear", "QuantizedLinear")):
            if not hasattr(module, "weight"):
                continue
            weight = _weight(module)
            zeros += int((weight == 0).sum())
            total += weight.numel()
    if total == 0:
        raise ValueError(f"model must contain linear layers, got a {type(model).__name__} without any")
    return zeros / total


def _check_fraction(value: float, name: str, high_inclusive: bool = False) -> None:
    ok = 0.0 <= value <= 1.0 if high_inclusive else 0.0 <= value < 1.0
    if not ok:
        bound = "[0, 1]" if high_inclusive else "[0, 1)"
        raise ValueError(f"{name} must be in {bound}, got {value!r}")


def magnitude_prune(model: nn.Module, sparsity: float) -> nn.Module:
    r"""Global unstructured magnitude pruning (Han et al., 2016): zero the ``sparsity`` fraction of all linear
    weights with the smallest ``|w|``, ranked across layers together (biases are kept).

    One threshold for the whole network lets layers with many redundant weights (the first layer of an MNIST
    MLP sees mostly blank pixels) give up more than small ones. The zeros are masks that
    :mod:`torch.nn.utils.prune` re-applies at every forward pass, so fine-tuning keeps them at zero; call
    :func:`make_permanent` afterwards. Works on any model with ``nn.Linear`` layers; modifies it in place and
    returns it.
    """
    _check_fraction(sparsity, "sparsity")
    parameters = [(module, "weight") for _, module in linear_layers(model)]
    prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=float(sparsity))
    return model


def _hidden_pairs(model: MLP) -> List[Tuple[nn.Linear, nn.Linear]]:
    """(layer producing a hidden width, layer consuming it) for every hidden layer of an MLP."""
    if not isinstance(model, MLP):
        raise ValueError(f"model must be a kdtools.models.MLP (net.fc1, ..., net.head), got {type(model).__name__}")
    layers = [module for _, module in linear_layers(model)]
    return list(zip(layers[:-1], layers[1:]))


def neuron_prune(model: MLP, fraction: float) -> MLP:
    r"""Structured pruning of hidden neurons: in every hidden layer, remove the ``fraction`` of neurons whose
    incoming weight vector (a row of ``W``) has the smallest L2 norm (``prune.ln_structured`` with ``n=2,
    dim=0``; Li et al. (2017) rank convolution filters the same way with the L1 norm).

    ``ln_structured`` masks only the weight; a neuron with zero weights but a bias ``b`` would still output the
    constant ``ReLU(b)``, so the same rows of the bias are masked too. Then a removed neuron outputs exactly 0
    and :func:`shrink_mlp` can delete it without changing a single prediction. The output layer keeps its 10
    units. Modifies ``model`` in place and returns it.
    """
    _check_fraction(fraction, "fraction")
    for producer, _ in _hidden_pairs(model):
        prune.ln_structured(producer, "weight", amount=float(fraction), n=2, dim=0)
        row_kept = producer.weight_mask.abs().sum(dim=1) > 0
        prune.custom_from_mask(producer, "bias", row_kept.to(producer.bias.dtype))
    return model


def _has_masks(model: nn.Module) -> bool:
    return any(isinstance(hook, prune.BasePruningMethod)
               for _, module in model.named_modules() for hook in module._forward_pre_hooks.values())


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every pruning mask of ``model`` into its tensor (``prune.remove``), so the zeros are plain weights
    and the state dict has no ``*_orig`` / ``*_mask`` entries. In place; returns ``model``."""
    for _, module in model.named_modules():
        for name in [hook._tensor_name for hook in list(module._forward_pre_hooks.values())
                     if isinstance(hook, prune.BasePruningMethod)]:
            prune.remove(module, name)
    return model


@torch.no_grad()
def shrink_mlp(model: MLP) -> MLP:
    r"""A smaller :class:`~kdtools.models.MLP` without the hidden neurons whose incoming weights and bias are all
    zero (after :func:`neuron_prune` and :func:`make_permanent`): row ``j`` of a layer and column ``j`` of the
    next are deleted together.

    Such a neuron outputs ``ReLU(0) = 0``, so the smaller network computes the same function; what changes is
    the matrix sizes, hence the file and the time. Raises ``ValueError`` if a layer still carries pruning masks
    (call :func:`make_permanent` first) or would be left with no neuron.
    """
    pairs = _hidden_pairs(model)
    if _has_masks(model):
        raise ValueError("model still carries pruning masks: call make_permanent(model) before shrink_mlp")
    keeps = []
    for i, (producer, _) in enumerate(pairs, start=1):
        keep = (producer.weight != 0).any(dim=1) | (producer.bias != 0)
        if not bool(keep.any()):
            raise ValueError(f"hidden layer {i} has no neuron left (all {producer.out_features} are zero)")
        keeps.append(keep.nonzero().squeeze(1))
    layers = [module for _, module in linear_layers(model)]
    small = MLP(hidden=[len(k) for k in keeps], num_classes=layers[-1].out_features,
                in_features=layers[0].in_features)
    small_layers = [module for _, module in linear_layers(small)]
    rows = keeps + [torch.arange(layers[-1].out_features)]
    columns = [torch.arange(layers[0].in_features)] + keeps
    for source, target, row, column in zip(layers, small_layers, rows, columns):
        target.weight.copy_(source.weight[row][:, column])
        target.bias.copy_(source.bias[row])
    return small.eval()


@contextmanager
def _quiet_deprecation():
    # torch >= 2.10 warns that torch.ao.quantization will move to torchao; the API still works here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")
        warnings.filterwarnings("ignore", module=r"torch\.ao\.")  # the observers' own deprecation notices
        yield


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantisation of every ``nn.Linear`` (``torch.ao.quantization.quantize_dynamic``): weights
    stored as int8 once (one scale per matrix, the default dynamic qconfig), activations quantised batch by batch
    at run time from their observed range. Returns a new model (CPU only)."""
    linear_layers(model)  # raises on a model without linear layers
    with _quiet_deprecation():
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear},
                                                      dtype=torch.qint8)


def _linear_relu_pairs(model: nn.Module) -> List[List[str]]:
    """Names of every ``Linear`` directly followed by a ``ReLU`` in an ``nn.Sequential`` (fused for int8)."""
    pairs = []
    for prefix, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (name_a, a), (name_b, b) in zip(children, children[1:]):
                if isinstance(a, nn.Linear) and isinstance(b, nn.ReLU):
                    pairs.append([f"{prefix}.{name_a}" if prefix else name_a, f"{prefix}.{name_b}" if prefix else name_b])
    return pairs


@torch.no_grad()
def quantize_static_int8(model: nn.Module, calibration_images: torch.Tensor, engine: str = "x86") -> nn.Module:
    """Static (post-training) int8 quantisation in eager mode: ``Linear`` + ``ReLU`` pairs fused, observers
    inserted with the engine's default qconfig (weights int8 per output channel, activations uint8 per tensor),
    activation ranges recorded on ``calibration_images``, then converted. Input and output stay float
    (``QuantWrapper``). Returns a new model (CPU only).

    engine: a backend of ``torch.backends.quantized.supported_engines`` (``"x86"`` on Intel/AMD, ``"qnnpack"``
    on ARM). PyTorch runs int8 kernels with one engine per process, so this sets
    ``torch.backends.quantized.engine`` for the whole process, as its own quantisation tutorials do.
    """
    linear_layers(model)
    if engine not in torch.backends.quantized.supported_engines:
        raise ValueError(f"engine must be one of {torch.backends.quantized.supported_engines}, got {engine!r}")
    if not isinstance(calibration_images, torch.Tensor) or calibration_images.dim() < 2 or len(calibration_images) == 0:
        shape = list(calibration_images.shape) if isinstance(calibration_images, torch.Tensor) else type(calibration_images).__name__
        raise ValueError(f"calibration_images must be a non-empty batch of inputs [N, ...], got {shape}")
    torch.backends.quantized.engine = engine
    with _quiet_deprecation():
        float_model = copy.deepcopy(model).cpu().eval()
        fused = torch.ao.quantization.fuse_modules(float_model, _linear_relu_pairs(float_model))
        wrapped = torch.ao.quantization.QuantWrapper(fused).eval()
        wrapped.qconfig = torch.ao.quantization.get_default_qconfig(engine)
        torch.ao.quantization.prepare(wrapped, inplace=True)
        for chunk in calibration_images.split(1000):
            wrapped(chunk)
        return torch.ao.quantization.convert(wrapped, inplace=True)


def _plain_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """``model.state_dict()`` with each pruned tensor's ``X_orig`` and ``X_mask`` replaced by the ``X`` it
    computes with, i.e. what :func:`make_permanent` would leave (without touching the model)."""
    state = model.state_dict()
    plain = {}
    for key, value in state.items():
        if key.endswith("_mask") and key[:-5] + "_orig" in state:
            continue
        if key.endswith("_orig") and key[:-5] + "_mask" in state:
            plain[key[:-5]] = value * state[key[:-5] + "_mask"]
        else:
            plain[key] = value
    return plain


def file_bytes(model: nn.Module, compress: bool = False) -> int:
    """Bytes of ``torch.save(model.state_dict())``, the file one would ship; with ``compress=True``, after gzip
    (at its default level, 6), which is where the zeros of unstructured pruning turn into savings for a dense
    file."""
    buffer = io.BytesIO()
    torch.save(_plain_state_dict(model), buffer)
    data = buffer.getvalue()
    return len(gzip.compress(data, compresslevel=6, mtime=0)) if compress else len(data)


def symmetric_int8(weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Symmetric per-output-channel int8 quantisation of a weight matrix ``[out, in]``, the textbook rule
    (Jacob et al., 2018): ``s_j = max_i |W_ji| / 127``, ``q = clamp(round(W / s), -128, 127)``; returns ``(q, s)``
    with ``q`` int8 ``[out, in]`` and ``s`` float ``[out]``. ``q * s[:, None]`` reconstructs ``W`` to within
    ``s_j / 2`` per entry, and zeros stay exactly zero (pruned weights remain pruned); an all-zero row gets
    ``s_j = 1`` (any scale represents it exactly).

    PyTorch's per-channel symmetric observer (the static qconfig's weights) divides by 127.5 instead,
    ``(127 − (−128)) / 2``, and lets the largest weight round to 128 before the clamp to 127: its grid is a
    hair finer and the largest weight of each row is clipped by at most half a step.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        shape = list(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a floating-point matrix [out, in], got {shape}")
    scale = weight.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(weight / scale[:, None]), -128, 127).to(torch.int8)
    return q, scale


def _ce(student_logits, labels, teacher_logits, alpha, temperature):
    return F.cross_entropy(student_logits, labels)


def _ce_and_kd(student_logits, labels, teacher_logits, alpha, temperature):
    return ((1.0 - alpha) * F.cross_entropy(student_logits, labels)
            + alpha * kd_loss(student_logits, teacher_logits, temperature))


#: fine-tuning objective → its loss ``(student_logits, labels, teacher_logits, alpha, temperature)``
FINETUNE_LOSSES: Dict[str, Callable] = {"ce": _ce, "kd": _ce_and_kd}


def finetune_split(labels: torch.Tensor, train_per_class: int, valid_per_class: int,
                   seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Disjoint, class-balanced indices ``(train, valid)`` into a training set: ``train_per_class`` images of
    each class to fine-tune on and ``valid_per_class`` others to choose the epoch on (sorted)."""
    if train_per_class < 1 or valid_per_class < 1:
        raise ValueError(f"train_per_class and valid_per_class must be >= 1, got {train_per_class} and "
                         f"{valid_per_class}")
    both = stratified_subset(labels, per_class=train_per_class + valid_per_class, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    train, valid = [], []
    for cls in torch.unique(labels[both]):
        members = both[labels[both] == cls]
        members = members[torch.randperm(len(members), generator=gen)]
        train.append(members[:train_per_class])
        valid.append(members[train_per_class:])
    return torch.cat(train).sort().values, torch.cat(valid).sort().values


def finetune(model: nn.Module, train: TensorData, valid: TensorData | None = None, *, objective: str,
             teacher: nn.Module | None = None, epochs: int = 2, lr: float = 0.01, batch_size: int = 128,
             alpha: float = 0.9, temperature: float = 20.0, seed: int = 0,
             stop_after: int | None = None) -> dict:
    """Fine-tune a (pruned) ``model`` in place with ``objective`` ``"ce"`` (the hard labels) or ``"kd"``
    (``(1 − α)·CE + α·T²·KL(p^t‖p^s)`` from ``teacher``, whose logits are computed once): SGD with Nesterov
    momentum 0.9, a cosine schedule from ``lr`` to 0, no weight decay, so pruned weights stay exactly zero (their
    masks are re-applied at every forward pass). Validation accuracy after each epoch on ``valid``; returns the
    history of :func:`kdtools.applications._loop.run_epochs` (``valid_accuracy``, ``best_epoch``,
    ``best_state``, ``seconds``). The model ends with its LAST epoch's weights."""
    if objective not in FINETUNE_LOSSES:
        raise ValueError(f"objective must be one of {sorted(FINETUNE_LOSSES)}, got {objective!r}")
    if objective == "kd" and teacher is None:
        raise ValueError("objective='kd' needs a teacher, got teacher=None")
    loss_fn = FINETUNE_LOSSES[objective]
    teacher_logits = None
    if objective == "kd":
        with torch.no_grad():
            teacher_logits = torch.cat([teacher.eval()(chunk) for chunk in train.images.split(1000)])
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)

    def batch_loss(idx):
        return loss_fn(model(train.images[idx]), train.labels[idx],
                       None if teacher_logits is None else teacher_logits[idx], alpha, temperature)

    validate = None if valid is None else (lambda: evaluate(model, TensorLoader(valid, 1000), device="cpu"))
    return run_epochs(model, len(train), batch_loss, optimizer, epochs=epochs, batch_size=batch_size, seed=seed,
                      validate=validate, score_name="accuracy", stop_after=stop_after)


def measure(model: nn.Module, test_loader, batch_sizes: Iterable[int] = (1, 256), repeats: int = 30,
            gzip_size: bool = False) -> Dict[str, float]:
    """Test accuracy (%), weight sparsity, file bytes (and, with ``gzip_size``, gzipped bytes: a second or two
    per model) and median CPU latency (ms, with the current number of torch threads; ``min(10, repeats)``
    untimed calls first) at each batch size, for a float, pruned or quantised model."""
    row = {"accuracy": evaluate(model, test_loader, device="cpu"), "sparsity": weight_sparsity(model),
           "bytes": file_bytes(model)}
    if gzip_size:
        row["gzip_bytes"] = file_bytes(model, compress=True)
    for batch in batch_sizes:
        row[f"latency_b{batch}_ms"] = cpu_latency_ms(model, (batch, 1, 28, 28), warmup=min(10, repeats),
                                                     repeats=repeats)
    return row
