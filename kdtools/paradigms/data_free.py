"""Data-free distillation (notebooks/05_paradigms/data_free_kd.ipynb): synthesise a transfer set from a frozen
teacher, by optimising pixels (DeepInversion) or by training a generator (DAFL), then distil on it.

The four steps of the generator route: initialise a generator; train it so the teacher's activations are
strong, confident and class-balanced on its samples (:func:`kdtools.losses.dafl_losses`); transfer the
teacher's outputs on those samples to the student (KD); iterate, alternating generator and student steps.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..data import MNIST_MEAN, MNIST_STD, TensorData, TensorLoader, load_mnist
from ..losses import dafl_losses, deepinversion_bn_loss, image_prior_loss, kd_loss
from ..runtime import seed_everything
from ..train import evaluate, frozen

#: normalised value of a black (0) and a white (1) MNIST pixel: synthetic images are kept in this range
PIXEL_RANGE = ((0.0 - MNIST_MEAN) / MNIST_STD, (1.0 - MNIST_MEAN) / MNIST_STD)


def bn_layers(model: nn.Module) -> Dict[str, nn.BatchNorm2d]:
    """The model's BatchNorm layers by name, in forward order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


class BNInputs:
    """Forward pre-hooks that keep the input of every BatchNorm layer of ``model`` (what DeepInversion
    compares with the running statistics); use as a context manager, read ``.features`` after a forward."""

    def __init__(self, model: nn.Module):
        self.modules = list(bn_layers(model).values())
        if not self.modules:
            raise ValueError(f"model must contain BatchNorm layers for DeepInversion, {type(model).__name__} "
                             f"has none")
        self.features: List[Optional[torch.Tensor]] = [None] * len(self.modules)
        self._handles = []

    def __enter__(self) -> "BNInputs":
        for i, module in enumerate(self.modules):
            self._handles.append(module.register_forward_pre_hook(self._keeper(i)))
        return self

    def _keeper(self, i):
        def hook(module, inputs):
            self.features[i] = inputs[0]
        return hook

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def loss(self, layer_weights=None) -> torch.Tensor:
        return deepinversion_bn_loss(self.features, self.modules, layer_weights)


@dataclass
class InversionConfig:
    """DeepInversion's knobs for 28x28 MNIST (the authors' ImageNet values in comments)."""

    steps: int = 200             # 2k (and 20k) iterations on ImageNet
    lr: float = 0.1              # Adam, lr 0.25 (cosine-annealed for ResNet-50); here constant then cosine
    bn: float = 1.0              # --r_feature 0.01 on ImageNet (their CE weight is 1)
    first_bn_multiplier: float = 1.0  # 10 on ImageNet
    tv_l1: float = 0.0
    tv_l2: float = 1e-3          # 1e-4 on ImageNet (224x224)
    l2: float = 1e-4             # 1e-5 on ImageNet
    jitter: int = 0              # random roll by up to 30 pixels on ImageNet
    flip: bool = False           # random horizontal flip on ImageNet (a mirrored digit is not a digit)


def deepinversion(teacher: nn.Module, targets: torch.Tensor, config: InversionConfig = InversionConfig(),
                  seed: int = 0, record_every: int = 0):
    """Synthesise one image per entry of ``targets`` (class indices) from ``teacher`` alone.

    Adam on the pixels (initialised with N(0, 1) noise) minimises
    ``CE(teacher(x), targets) + bn * R_BN(x) + R_prior(x)``; pixels are clipped to the normalised
    [0, 1] range after every step. The teacher stays in eval mode (its running statistics are the target).
    Returns ``(images [N, 1, 28, 28] detached, log)`` where ``log`` holds the per-term losses every
    ``record_every`` steps and the seconds taken.
    """
    if targets.dim() != 1 or targets.numel() < 2:
        raise ValueError(f"targets must be a 1-D tensor of at least 2 class indices, got shape "
                         f"{tuple(targets.shape)}")
    if config.steps < 1:
        raise ValueError(f"config.steps must be >= 1, got {config.steps}")
    gen = seed_everything(seed)
    was_training = teacher.training
    frozen(teacher)
    images = torch.randn(len(targets), 1, 28, 28, generator=gen).requires_grad_(True)
    optimizer = torch.optim.Adam([images], lr=config.lr, betas=(0.5, 0.9))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    layer_weights = None
    log: Dict[str, list] = {"step": [], "ce": [], "bn": [], "prior": []}
    start = time.perf_counter()
    with BNInputs(teacher) as hooks:
        layer_weights = [config.first_bn_multiplier] + [1.0] * (len(hooks.modules) - 1)
        for step in range(config.steps):
            x = images
            if config.jitter:
                dx, dy = torch.randint(-config.jitter, config.jitter + 1, (2,), generator=gen).tolist()
                x = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
            if config.flip and torch.rand((), generator=gen) < 0.5:
                x = torch.flip(x, dims=(3,))
            ce = F.cross_entropy(teacher(x), targets)
            bn = hooks.loss(layer_weights)
            prior = image_prior_loss(x, tv_l1=config.tv_l1, tv_l2=config.tv_l2, l2=config.l2)
            loss = ce + config.bn * bn + prior
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                images.clamp_(*PIXEL_RANGE)
            if record_every and (step % record_every == 0 or step == config.steps - 1):
                for key, value in (("step", step), ("ce", ce.item()), ("bn", bn.item()), ("prior", prior.item())):
                    log[key].append(value)
    log["seconds"] = time.perf_counter() - start
    teacher.train(was_training)
    for p in teacher.parameters():
        p.requires_grad_(True)
    return images.detach(), log


def deepinversion_set(teacher: nn.Module, per_class: int, batch_per_class: int,
                      config: InversionConfig = InversionConfig(), seed: int = 0, progress: bool = False):
    """``per_class`` DeepInversion images of every class, synthesised in batches holding
    ``batch_per_class`` images of each class (BN statistics are matched per batch, so a batch mixes classes,
    as the authors' batches do). Returns ``(TensorData with the target classes as labels, seconds)``."""
    if per_class % batch_per_class:
        raise ValueError(f"per_class ({per_class}) must be a multiple of batch_per_class ({batch_per_class})")
    images, labels, seconds = [], [], 0.0
    for b in range(per_class // batch_per_class):
        targets = torch.arange(10).repeat(batch_per_class)
        x, log = deepinversion(teacher, targets, config, seed=seed * 1000 + b)
        images.append(x)
        labels.append(targets)
        seconds += log["seconds"]
        if progress:
            print(f"batch {b + 1}/{per_class // batch_per_class}: {log['seconds']:.0f} s", flush=True)
    return TensorData(torch.cat(images), torch.cat(labels)), seconds


class Generator(nn.Module):
    """DAFL's MNIST generator (a DCGAN-style upsampling net), narrowed for a CPU.

    z [B, latent] -> linear -> [w1, 7, 7] -> BN -> up x2 -> conv 3x3 (w1) + BN + LeakyReLU -> up x2 ->
    conv 3x3 (w2) + BN + LeakyReLU -> conv 3x3 (1) -> tanh -> BN without affine parameters.
    The authors use widths 128/64 on 32x32 images and ``BatchNorm2d(128, 0.8)`` (an eps of 0.8, a
    momentum meant); here 28x28 images, widths ``width``/``width // 2`` and the default eps.
    The last BN standardises every batch of images, as in the authors' code.
    """

    def __init__(self, latent_dim: int = 100, width: int = 32):
        super().__init__()
        if latent_dim < 1 or width < 2:
            raise ValueError(f"latent_dim must be >= 1 and width >= 2, got latent_dim={latent_dim}, width={width}")
        self.latent_dim, self.width = latent_dim, width
        self.project = nn.Linear(latent_dim, width * 7 * 7)
        self.bn0 = nn.BatchNorm2d(width)
        self.block1 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width),
                                    nn.LeakyReLU(0.2))
        self.block2 = nn.Sequential(nn.Conv2d(width, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2),
                                    nn.LeakyReLU(0.2), nn.Conv2d(width // 2, 1, 3, padding=1), nn.Tanh(),
                                    nn.BatchNorm2d(1, affine=False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.bn0(self.project(z).view(z.shape[0], self.width, 7, 7))
        x = self.block1(F.interpolate(x, scale_factor=2))
        return self.block2(F.interpolate(x, scale_factor=2))

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 500) -> torch.Tensor:
        """``n`` images from fixed latent codes (seeded), generated in training-mode batches
        (the last BN standardises each batch, as during training)."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=gen)
        was_training = self.training
        self.train()
        out = torch.cat([self(chunk) for chunk in z.split(batch_size)])
        self.train(was_training)
        return out


@dataclass
class DAFLConfig:
    """DAFL's MNIST settings (``DAFL_train.py``: batch 512, lr_G 0.2, lr_S 2e-3, 200 epochs of 120
    iterations = 24k) and the narrowed ones used here."""

    iterations: int = 1500
    batch_size: int = 256
    lr_generator: float = 0.2
    lr_student: float = 2e-3
    weights: Dict[str, float] = field(default_factory=lambda: {"one_hot": 1.0, "information_entropy": 5.0,
                                                               "activation": 0.1})
    temperature: float = 1.0     # their kdloss is KL(softmax(z_t) || softmax(z_s)), no temperature
    feature_layer: str = "embedding"
    eval_every: int = 250


def train_dafl(teacher: nn.Module, student: nn.Module, generator: Generator, config: DAFLConfig = DAFLConfig(),
               seed: int = 0, test: Optional[TensorData] = None, progress: bool = False):
    """DAFL's alternating loop: per iteration one Adam step of the generator on the weighted DAFL losses
    of the frozen teacher on a fresh batch, then one Adam step of the student on KD to the teacher on the
    same (detached) batch. Both optimisers' learning rates decay by 10x at 80 % of the iterations (the
    authors decay at epochs 80 and 160 of 200). Returns a log: per-term losses, student test accuracy every
    ``eval_every`` iterations, seconds."""
    seed_everything(seed)
    frozen(teacher)
    features = {}
    handle = dict(teacher.named_modules())[config.feature_layer].register_forward_hook(
        lambda module, inputs, output: features.__setitem__("f", output))
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_generator)
    opt_s = torch.optim.Adam(student.parameters(), lr=config.lr_student)
    milestones = [int(0.8 * config.iterations)]
    schedules = [torch.optim.lr_scheduler.MultiStepLR(opt, milestones, 0.1) for opt in (opt_g, opt_s)]
    test_loader = TensorLoader(test if test is not None else load_mnist(False), 1000)
    log: Dict[str, list] = {"iteration": [], "one_hot": [], "activation": [], "information_entropy": [],
                            "kd": [], "eval_iteration": [], "student_test_acc": []}
    start, eval_seconds = time.perf_counter(), 0.0
    try:
        for it in range(config.iterations):
            generator.train()
            student.train()
            z = torch.randn(config.batch_size, generator.latent_dim)
            images = generator(z)
            teacher_logits = teacher(images)
            terms = dafl_losses(teacher_logits, features["f"])
            loss_g = sum(config.weights[name] * value for name, value in terms.items())
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            loss_s = kd_loss(student(images.detach()), teacher_logits.detach(), temperature=config.temperature)
            opt_s.zero_grad(set_to_none=True)
            loss_s.backward()
            opt_s.step()
            for schedule in schedules:
                schedule.step()
            if it % 10 == 0:
                log["iteration"].append(it)
                for name, value in terms.items():
                    log[name].append(round(value.item(), 5))
                log["kd"].append(round(loss_s.item(), 5))
            if (it + 1) % config.eval_every == 0 or it == config.iterations - 1:
                t0 = time.perf_counter()
                acc = evaluate(student, test_loader, device="cpu")
                eval_seconds += time.perf_counter() - t0
                log["eval_iteration"].append(it + 1)
                log["student_test_acc"].append(acc)
                if progress:
                    print(f"iteration {it + 1}: student {acc:.2f} %, " + ", ".join(
                        f"{k} {v.item():.3f}" for k, v in terms.items()), flush=True)
    finally:
        handle.remove()
        for p in teacher.parameters():
            p.requires_grad_(True)
    log["seconds"] = time.perf_counter() - start - eval_seconds
    return log


# ---- transfer sets without MNIST's training images --------------------------------------------------------

def gaussian_noise_set(n: int, seed: int = 0) -> TensorData:
    """``n`` images of N(0, 1) noise in normalised space (labels are placeholders: the teacher labels)."""
    gen = torch.Generator().manual_seed(seed)
    return TensorData(torch.randn(n, 1, 28, 28, generator=gen), torch.zeros(n, dtype=torch.long))


def sklearn_digits_set() -> TensorData:
    """The 1,797 8x8 handwritten digits of scikit-learn (UCI optical digits, Alpaydin & Kaynak 1998; shipped
    inside the package), scaled from 0..16 to [0, 1], upsampled to 20x20 bilinearly, padded to 28x28 (MNIST
    centres its digits in a 20x20 box) and normalised like MNIST. A *different* data set of the same task."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False).clamp(0, 1)
    x = F.pad(x, (4, 4, 4, 4))
    return TensorData((x - MNIST_MEAN) / MNIST_STD, torch.tensor(digits.target, dtype=torch.long))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Normalised images -> uint8 pixels (0..255), for storage."""
    pixels = images * MNIST_STD + MNIST_MEAN
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8)


def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> normalised float images (the inverse of :func:`to_uint8` up to rounding)."""
    return (pixels.float() / 255.0 - MNIST_MEAN) / MNIST_STD


@torch.no_grad()
def nearest_training_images(queries: torch.Tensor, train_images: torch.Tensor, chunk: int = 5000,
                            embed: Optional[nn.Module] = None):
    """Index and Euclidean distance of each query's nearest training image, in pixel space or in the
    space of ``embed`` (e.g. the teacher's pooled features). Returns ``(indices [Q], distances [Q])``."""
    def space(x):
        return embed(x).flatten(1) if embed is not None else x.flatten(1)

    q = space(queries)
    best_d = torch.full((len(q),), float("inf"))
    best_i = torch.zeros(len(q), dtype=torch.long)
    for start in range(0, len(train_images), chunk):
        d = torch.cdist(q, space(train_images[start:start + chunk]))
        value, index = d.min(dim=1)
        better = value < best_d
        best_d[better], best_i[better] = value[better], index[better] + start
    return best_i, best_d


# ---- builders of the shipped artefacts (kdtools.zoo.artifacts recipes) ---------------------------------------

def build_dafl_generator(teacher: str = "mnist-cnn-4x3-teacher", student: str = "cnn-8x1", iterations: int = 1500,
                         batch_size: int = 128, seed: int = 0):
    """Train a DAFL generator (and its alternating student) against zoo model ``teacher``.
    Returns ``({"generator.*": float16 weights, "student.*": float16 weights}, info)``."""
    from .. import zoo
    from ..models import build_model

    seed_everything(seed)
    generator, pupil = Generator(), build_model(student)
    log = train_dafl(zoo.load(teacher), pupil, generator, DAFLConfig(iterations=iterations, batch_size=batch_size),
                     seed=seed)
    tensors = {f"generator.{k}": v.half() if v.is_floating_point() else v for k, v in generator.state_dict().items()}
    tensors.update({f"student.{k}": v.half() if v.is_floating_point() else v for k, v in pupil.state_dict().items()})
    return tensors, {"log": log, "student_test_acc": log["student_test_acc"][-1], "seconds": round(log["seconds"], 1)}


def build_deepinversion_set(teacher: str = "mnist-cnn-4x3-teacher", per_class: int = 200, batch_per_class: int = 20,
                            steps: int = 300, seed: int = 0):
    """DeepInversion images of every class from zoo model ``teacher``, as uint8 pixels and target labels."""
    from .. import zoo

    data, seconds = deepinversion_set(zoo.load(teacher), per_class, batch_per_class, InversionConfig(steps=steps),
                                      seed=seed)
    return {"images": to_uint8(data.images), "labels": data.labels}, {"seconds": round(seconds, 1)}


def split_prefixed(tensors: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """The entries of ``tensors`` whose key starts with ``prefix + '.'``, prefix removed, as float32."""
    return {k[len(prefix) + 1:]: v.float() if v.is_floating_point() else v for k, v in tensors.items()
            if k.startswith(prefix + ".")}


def load_dafl(name: str = "mnist-dafl-generator", student: str = "cnn-8x1"):
    """The shipped DAFL generator and its alternating student (float32, eval mode for the student) and the
    artefact's manifest entry."""
    from ..models import build_model
    from ..zoo.artifacts import load_artifact

    tensors, entry = load_artifact(name)
    generator, pupil = Generator(), build_model(student)
    generator.load_state_dict(split_prefixed(tensors, "generator"))
    pupil.load_state_dict(split_prefixed(tensors, "student"))
    pupil.eval()
    return generator, pupil, entry


def load_deepinversion_set(name: str = "mnist-deepinversion-set"):
    """The shipped DeepInversion images (normalised float) with their target classes, and the manifest entry."""
    from ..zoo.artifacts import load_artifact

    tensors, entry = load_artifact(name)
    return TensorData(from_uint8(tensors["images"]), tensors["labels"]), entry


# ---- the comparison: one student, one loss (KD to the teacher), different transfer images ---------------------

@dataclass(frozen=True)
class TransferStudy:
    """What every arm shares: only the transfer images change between arms."""

    teacher: str = "mnist-cnn-4x3-teacher"
    student: str = "cnn-8x1"
    images: int = 2000            # transfer images per arm (sklearn's digits have 1,797)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.05              # SGD, momentum 0.9, cosine, as the shared protocol
    temperature: float = 4.0
    test_per_class: Optional[int] = None  # None: all 10,000 MNIST test images


def _real_set(study: TransferStudy) -> TensorData:
    from ..data import stratified_subset

    train = load_mnist(True)
    return train.subset(stratified_subset(train.labels, per_class=study.images // 10, seed=0))


def _generator_set(study: TransferStudy) -> TensorData:
    generator, _, _ = load_dafl()
    return TensorData(generator.sample(study.images, seed=0), torch.zeros(study.images, dtype=torch.long))


def _deepinversion_subset(study: TransferStudy) -> TensorData:
    data, _ = load_deepinversion_set()
    return data.subset(torch.arange(min(study.images, len(data))))


#: transfer set name -> builder(study); the labels are never used (the loss is KD to the teacher only)
TRANSFER_SETS = {
    "real MNIST": _real_set,
    "DeepInversion": _deepinversion_subset,
    "DAFL generator": _generator_set,
    "Gaussian noise": lambda study: gaussian_noise_set(study.images, seed=0),
    "sklearn digits": lambda study: sklearn_digits_set(),
}


def _test_set(study: TransferStudy) -> TensorData:
    from ..data import stratified_subset

    test = load_mnist(False)
    if study.test_per_class is None:
        return test
    return test.subset(stratified_subset(test.labels, per_class=study.test_per_class, seed=0))


def distill_on(job):
    """Train ``study.student`` from ``seed`` with KD only (T = ``study.temperature``) on transfer set
    ``name``; returns its History. ``job = (name, seed, study)``, a module-level function for worker
    processes."""
    from .. import zoo
    from ..models import build_model
    from ..train import fit, kd_term

    name, seed, study = job
    torch.set_num_threads(1)
    if name not in TRANSFER_SETS:
        raise ValueError(f"unknown transfer set {name!r}; known: {', '.join(TRANSFER_SETS)}")
    with torch.random.fork_rng():
        teacher = zoo.load(study.teacher)
        transfer = TRANSFER_SETS[name](study)
    seed_everything(seed)
    student = build_model(study.student)
    return fit(student, TensorLoader(transfer, study.batch_size, shuffle=True, seed=seed),
               TensorLoader(_test_set(study), 1000), epochs=study.epochs, teacher=teacher,
               terms={"kd": (1.0, kd_term(study.temperature))}, cache_teacher_logits=True, lr=study.lr,
               seed=seed, progress=False)


def transfer_study(names, seeds, study: TransferStudy = TransferStudy(), workers: int = 2):
    """``{name: [History per seed]}`` for every transfer set in ``names``."""
    from ..runtime import map_in_processes

    jobs = [(name, seed, study) for name in names for seed in seeds]
    histories = map_in_processes(distill_on, jobs, workers)
    return {name: [h for (n, _, _), h in zip(jobs, histories) if n == name] for name in names}


@torch.no_grad()
def teacher_embedding(teacher: nn.Module, images: torch.Tensor, layer: str = "embedding") -> torch.Tensor:
    """The teacher's pooled feature vectors (a SmallCNN's ``embedding``) of ``images``, in chunks."""
    from ..features import extract

    return torch.cat([extract(teacher, [layer], chunk)[layer] for chunk in images.split(2000)])
