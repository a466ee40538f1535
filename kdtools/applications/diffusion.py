r"""A small v-prediction diffusion model, the deterministic DDIM sampler, progressive distillation of a 2N-step
sampler into N steps, and sample-quality distances (sliced Wasserstein for 2-D points, a Fréchet distance in a
zoo classifier's embedding for digits).

Conventions (Salimans & Ho, "Progressive Distillation for Fast Sampling of Diffusion Models", ICLR 2022):
continuous time :math:`t \in [0, 1]`, the cosine schedule :math:`\alpha_t = \cos(\pi t / 2)`,
:math:`\sigma_t = \sin(\pi t / 2)` (variance preserving, :math:`\alpha_t^2 + \sigma_t^2 = 1`), noisy samples
:math:`z_t = \alpha_t x + \sigma_t \epsilon`, and networks that predict :math:`v = \alpha_t \epsilon - \sigma_t x`,
from which :math:`\hat x = \alpha_t z_t - \sigma_t \hat v` and :math:`\hat\epsilon = \sigma_t z_t + \alpha_t \hat v`.
The DDIM step (η = 0) from t to s < t is :math:`z_s = \alpha_s \hat x + \sigma_s \hat\epsilon`.

Where we differ from the paper: the authors' code clips the log-SNR to [−20, 20] (so t = 0 and t = 1 are never
reached exactly) and uses U-Nets; here the schedule is exact and the networks are small MLPs with sinusoidal
time features; base models are trained with the plain v-space MSE (the paper's "SNR+1" weighting) and every
distillation round with the paper's truncated-SNR weighting; samples are clamped to the data range only at the end.
"""
from __future__ import annotations

import math
import time
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.diffusion import SNR_WEIGHTINGS, progressive_distillation_loss
from ._loop import run_epochs

__all__ = ["alpha_sigma", "v_from_x_eps", "x_from_v", "eps_from_v", "v_from_x", "ddim_step",
           "distillation_target", "Denoiser", "ddim_sample", "train_diffusion", "distill_round", "distill_chain",
           "eight_gaussians", "sliced_wasserstein", "load_digits", "digit_embedding", "frechet_distance",
           "train_points_run", "build_points_study", "build_digit_teacher", "build_digit_study", "load_digit_teacher",
           "load_digit_study", "load_points_study"]


def _as_time(t, name: str = "t") -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.get_default_dtype()) if not torch.is_tensor(t) else t
    if t.numel() and (bool((t < 0).any()) or bool((t > 1).any())):
        raise ValueError(f"{name} must lie in [0, 1], got values in [{float(t.min()):.4g}, {float(t.max()):.4g}]")
    return t


def alpha_sigma(t):
    r""":math:`(\alpha_t, \sigma_t) = (\cos(\pi t/2), \sin(\pi t/2))` for ``t`` in [0, 1] (a tensor or a float)."""
    t = _as_time(t)
    return torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)


def _per_example(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` (a scalar or ``[B]``) shaped to broadcast against ``like`` ``[B, ...]``."""
    if t.dim() == 0:
        return t.to(like.dtype)
    if t.shape != like.shape[:1]:
        raise ValueError(f"t must be a scalar or have shape [B] = {tuple(like.shape[:1])}, got {tuple(t.shape)}")
    return t.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def _coefficients(t, like):
    alpha, sigma = alpha_sigma(t)
    return _per_example(alpha, like), _per_example(sigma, like)


def v_from_x_eps(x: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
    r"""The v-target :math:`v = \alpha_t \epsilon - \sigma_t x`."""
    if x.shape != eps.shape:
        raise ValueError(f"x and eps must have the same shape, got {tuple(x.shape)} and {tuple(eps.shape)}")
    alpha, sigma = _coefficients(t, x)
    return alpha * eps - sigma * x


def x_from_v(z: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
    r""":math:`\hat x = \alpha_t z_t - \sigma_t \hat v`."""
    alpha, sigma = _coefficients(t, z)
    return alpha * z - sigma * v


def eps_from_v(z: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
    r""":math:`\hat\epsilon = \sigma_t z_t + \alpha_t \hat v`."""
    alpha, sigma = _coefficients(t, z)
    return sigma * z + alpha * v


def v_from_x(z: torch.Tensor, x: torch.Tensor, t) -> torch.Tensor:
    r""":math:`\hat v = (\alpha_t z_t - \hat x) / \sigma_t` (undefined at t = 0, where :math:`\sigma_t = 0`)."""
    alpha, sigma = _coefficients(t, z)
    if bool((sigma == 0).any()):
        raise ValueError("t must be > 0 in v_from_x: at t = 0, σ_t = 0 and v is not determined by z_t and x")
    return (alpha * z - x) / sigma


def _check_order(t, s, first: str, second: str):
    t, s = _as_time(t, first), _as_time(s, second)
    if bool((s >= t).any()):
        raise ValueError(f"{second} must be earlier than {first} (sampling runs from t = 1 down to 0), got "
                         f"{first} = {t.tolist()} and {second} = {s.tolist()}")
    return t, s


def ddim_step(z_t: torch.Tensor, v_hat: torch.Tensor, t, s) -> torch.Tensor:
    r"""One deterministic DDIM step (η = 0) of a v-prediction model from time ``t`` to ``s < t``:
    :math:`z_s = \alpha_s \hat x + \sigma_s \hat\epsilon` with :math:`\hat x`, :math:`\hat\epsilon` from
    :math:`\hat v` (no division, so t = 1 and s = 0 are fine)."""
    if z_t.shape != v_hat.shape:
        raise ValueError(f"z_t and v_hat must have the same shape, got {tuple(z_t.shape)} and {tuple(v_hat.shape)}")
    t, s = _check_order(t, s, "t", "s")
    alpha_s, sigma_s = _coefficients(s, z_t)
    return alpha_s * x_from_v(z_t, v_hat, t) + sigma_s * eps_from_v(z_t, v_hat, t)


def distillation_target(z_t: torch.Tensor, z_t2: torch.Tensor, t, t2) -> torch.Tensor:
    r"""Algorithm 2's target :math:`\tilde x = \dfrac{z_{t''} - (\sigma_{t''}/\sigma_t)\, z_t}
    {\alpha_{t''} - (\sigma_{t''}/\sigma_t)\, \alpha_t}`: the clean sample whose DDIM step from ``z_t`` (at ``t``)
    lands exactly on ``z_t2`` (at ``t2 < t``), where two teacher steps landed.

    Computed as :math:`(\sigma_t z_{t''} - \sigma_{t''} z_t) / \sin(\pi (t - t'') / 2)`, the same fraction
    multiplied by :math:`\sigma_t` (its denominator is :math:`\alpha_{t''}\sigma_t - \sigma_{t''}\alpha_t`)."""
    if z_t.shape != z_t2.shape:
        raise ValueError(f"z_t and z_t2 must have the same shape, got {tuple(z_t.shape)} and {tuple(z_t2.shape)}")
    t, t2 = _check_order(t, t2, "t", "t2")
    _, sigma_t = _coefficients(t, z_t)
    _, sigma_t2 = _coefficients(t2, z_t)
    gap = torch.sin(0.5 * math.pi * (_per_example(t, z_t) - _per_example(t2, z_t)))
    return (sigma_t * z_t2 - sigma_t2 * z_t) / gap


class Denoiser(nn.Module):
    r"""An MLP that predicts :math:`\hat v(z_t, t)` for flat data ``[B, dim]``: sinusoidal features of t
    (frequencies :math:`\pi, 2\pi, \dots, 2^{F-1}\pi`), an input layer on :math:`[z_t; \phi(t)]`, ``depth``
    residual blocks each told t again, and a linear output."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 2, frequencies: int = 8):
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth), ("frequencies", frequencies)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.dim, self.hidden, self.depth, self.frequencies = dim, hidden, depth, frequencies
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(frequencies), persistent=False)
        self.input = nn.Linear(dim + 2 * frequencies, hidden)
        self.blocks = nn.ModuleList(nn.ModuleDict({"time": nn.Linear(2 * frequencies, hidden),
                                                   "inner": nn.Linear(hidden, hidden),
                                                   "outer": nn.Linear(hidden, hidden)}) for _ in range(depth))
        self.output = nn.Linear(hidden, dim)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"z must have shape [B, {self.dim}], got {tuple(z.shape)}")
        t = t.expand(z.shape[0]) if t.dim() == 0 else t
        angles = t[:, None].to(z.dtype) * self.freqs
        phi = torch.cat([angles.sin(), angles.cos()], 1)
        h = self.input(torch.cat([z, phi], 1))
        for block in self.blocks:
            h = h + block["outer"](F.silu(block["inner"](F.silu(h)) + block["time"](phi)))
        return self.output(F.silu(h))


@torch.no_grad()
def ddim_sample(model: nn.Module, noise: torch.Tensor, steps: int, trajectory: bool = False):
    """DDIM (η = 0) with ``steps`` equal steps from t = 1 (``noise``) to t = 0; the samples, or with
    ``trajectory`` the list of all ``steps + 1`` states."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    z, states = noise, [noise]
    for i in range(steps, 0, -1):
        t, s = torch.tensor(i / steps), torch.tensor((i - 1) / steps)
        z = ddim_step(z, model(z, t), t, s)
        states.append(z)
    return states if trajectory else z


def _noisy(x, gen):
    t = torch.rand(x.shape[0], generator=gen)
    eps = torch.randn(x.shape, generator=gen)
    alpha, sigma = _coefficients(t, x)
    return t, eps, alpha * x + sigma * eps


def train_diffusion(model: Denoiser, data: torch.Tensor, *, epochs: int, batch_size: int = 256, lr: float = 2e-3,
                    seed: int = 0, stop_after: Optional[int] = None) -> dict:
    r"""Train a base model with the v-space MSE (the paper's "SNR+1" weighting) at t ~ U(0, 1); Adam with a
    cosine schedule to 0 (:func:`~kdtools.applications._loop.run_epochs`); returns the history plus
    ``optimizer_steps``."""
    gen = torch.Generator().manual_seed(seed + 1000)

    def batch_loss(idx):
        x = data[idx]
        t, eps, z = _noisy(x, gen)
        return (model(z, t) - v_from_x_eps(x, eps, t)).pow(2).mean()

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = run_epochs(model, len(data), batch_loss, optimizer, epochs=epochs, batch_size=batch_size, seed=seed,
                         stop_after=stop_after)
    history["optimizer_steps"] = len(history["loss"]) * math.ceil(len(data) / batch_size)
    return history


def distill_round(teacher: nn.Module, student: nn.Module, data: torch.Tensor, student_steps: int, *, epochs: int,
                  batch_size: int = 256, lr: float = 2e-3, seed: int = 0, weighting: str = "truncated_snr",
                  stop_after: Optional[int] = None) -> dict:
    r"""One round of progressive distillation (Algorithm 2): ``student`` (initialise it from ``teacher``) learns
    to take in ONE step from :math:`t = i/N` to :math:`t'' = t - 1/N` what the teacher does in two DDIM steps
    (:math:`t \to t' = t - 0.5/N \to t''`), for ``N = student_steps`` and :math:`i \sim U\{1, \dots, N\}`."""
    if not isinstance(student_steps, int) or student_steps < 1:
        raise ValueError(f"student_steps must be a positive int, got {student_steps!r}")
    if weighting not in SNR_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {sorted(SNR_WEIGHTINGS)}, got {weighting!r}")
    gen = torch.Generator().manual_seed(seed + 2000)
    teacher.eval()
    n = student_steps

    def batch_loss(idx):
        x = data[idx]
        i = torch.randint(1, n + 1, (len(idx),), generator=gen)
        t, t1, t2 = i / n, (i - 0.5) / n, (i - 1.0) / n
        eps = torch.randn(x.shape, generator=gen)
        alpha, sigma = _coefficients(t, x)
        z_t = alpha * x + sigma * eps
        with torch.no_grad():
            z_t1 = ddim_step(z_t, teacher(z_t, t), t, t1)
            z_t2 = ddim_step(z_t1, teacher(z_t1, t1), t1, t2)
            target = distillation_target(z_t, z_t2, t, t2)
        return progressive_distillation_loss(x_from_v(z_t, student(z_t, t), t), target, t, weighting)

    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    history = run_epochs(student, len(data), batch_loss, optimizer, epochs=epochs, batch_size=batch_size,
                         seed=seed, stop_after=stop_after)
    history["optimizer_steps"] = len(history["loss"]) * math.ceil(len(data) / batch_size)
    return history


def _copy(model: Denoiser) -> Denoiser:
    clone = Denoiser(model.dim, model.hidden, model.depth, model.frequencies)
    clone.load_state_dict(model.state_dict())
    return clone


def distill_chain(teacher: Denoiser, data: torch.Tensor, start_steps: int, final_steps: int = 1, *, epochs: int,
                  batch_size: int = 256, lr: float = 2e-3, seed: int = 0, progress: bool = False):
    """Progressive distillation from ``start_steps`` (the teacher's DDIM) down to ``final_steps``, halving each
    round, each student initialised from the previous model; ``({steps: student}, [round history, ...])``."""
    if start_steps < 2 or start_steps & (start_steps - 1) or final_steps < 1 or start_steps % final_steps:
        raise ValueError(f"start_steps must be a power of two >= 2 and final_steps a divisor of it, got "
                         f"start_steps={start_steps!r}, final_steps={final_steps!r}")
    students, rounds, current = {}, [], teacher
    steps = start_steps // 2
    while steps >= final_steps:
        student = _copy(current)
        history = distill_round(current, student, data, steps, epochs=epochs, batch_size=batch_size, lr=lr,
                                seed=seed + steps)
        history.pop("best_state", None)
        history["student_steps"] = steps
        rounds.append(history)
        if progress:
            print(f"{2 * steps} -> {steps} steps: loss {history['loss'][0]:.4f} -> {history['loss'][-1]:.4f}, "
                  f"{history['seconds']} s", flush=True)
        students[steps] = student.eval()
        current = student
        steps //= 2
    return students, rounds


# ---- data and distances
def eight_gaussians(n: int, seed: int = 0, radius: float = 1.0, std: float = 0.08) -> torch.Tensor:
    """``[n, 2]`` points from 8 Gaussians (std ``std``) centred on a circle of ``radius``; mixture component and
    noise come from a generator seeded with ``seed``."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    gen = torch.Generator().manual_seed(seed)
    angles = 2 * math.pi * torch.randint(0, 8, (n,), generator=gen) / 8
    centres = radius * torch.stack([angles.cos(), angles.sin()], 1)
    return centres + std * torch.randn(n, 2, generator=gen)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 64) -> float:
    """Sliced 1-Wasserstein distance between two equally sized sets of 2-D points: the mean over ``projections``
    evenly spaced directions of the 1-D W1 distance (mean gap between sorted projections). Deterministic."""
    if a.dim() != 2 or a.shape != b.shape or a.shape[1] != 2:
        raise ValueError(f"a and b must both have shape [n, 2], got {tuple(a.shape)} and {tuple(b.shape)}")
    angles = torch.arange(projections, dtype=torch.float64) * math.pi / projections
    directions = torch.stack([angles.cos(), angles.sin()], 1)
    pa, pb = (a.double() @ directions.T).sort(0).values, (b.double() @ directions.T).sort(0).values
    return float((pa - pb).abs().mean())


def load_digits(train: bool = True, size: int = 14) -> torch.Tensor:
    """MNIST (``kdtools.data``, never downloaded here) average-pooled to ``size`` × ``size``, scaled to [−1, 1]
    and flattened: ``[N, size²]``."""
    from ..data import load_mnist, MNIST_MEAN, MNIST_STD

    if size not in (7, 14, 28):
        raise ValueError(f"size must be 7, 14 or 28, got {size!r}")
    images = load_mnist(train=train, download=False).images * MNIST_STD + MNIST_MEAN
    images = F.avg_pool2d(images, 28 // size) if size < 28 else images
    return (2 * images - 1).flatten(1)


def digit_embedding(classifier: nn.Module, digits: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The classifier's pooled embedding (its ``embedding`` layer, read by a forward hook) of flat digits in
    [−1, 1], clamped, upsampled bilinearly to 28 × 28 and normalised as MNIST; float64 ``[N, features]``."""
    from ..data import MNIST_MEAN, MNIST_STD
    from ..features import FeatureExtractor

    side = int(round(math.sqrt(digits.shape[1])))
    if digits.dim() != 2 or side * side != digits.shape[1]:
        raise ValueError(f"digits must have shape [N, side²], got {tuple(digits.shape)}")
    out = []
    classifier.eval()
    with torch.no_grad(), FeatureExtractor(classifier, ["embedding"]) as features:
        for start in range(0, len(digits), batch_size):
            images = (digits[start:start + batch_size].clamp(-1, 1) + 1) / 2
            images = images.reshape(-1, 1, side, side)
            if side != 28:
                images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
            classifier((images - MNIST_MEAN) / MNIST_STD)
            out.append(features["embedding"].double())
    return torch.cat(out)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    r"""Fréchet distance between Gaussians fitted to two sets of embeddings:
    :math:`\lVert\mu_a-\mu_b\rVert^2 + \mathrm{tr}(C_a + C_b - 2 (C_a^{1/2} C_b C_a^{1/2})^{1/2})` (float64,
    symmetric square roots by eigendecomposition)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be [n, d] with the same d, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)

    def sqrtm(m):
        values, vectors = torch.linalg.eigh((m + m.T) / 2)
        return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T

    root_a = sqrtm(cov_a)
    cross = sqrtm(root_a @ cov_b @ root_a)
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(cov_a + cov_b - 2 * cross))


# ---- the lesson's shipped runs (kdtools.zoo.artifacts)
def _sample_counts(start_steps: int) -> List[int]:
    return [2 ** k for k in range(int(math.log2(start_steps)) + 1)]


def train_points_run(seed: int, n_train: int, hidden: int, depth: int, teacher_epochs: int, round_epochs: int,
                     start_steps: int, batch_size: int, n_eval: int, lr: float) -> dict:
    """One seed of the 2-D study: the base model, its distillation chain and every sampler's sliced Wasserstein
    distance to ``n_eval`` held-out points (``"floor"``: fresh data against the same points); the networks'
    states under ``"states"``."""
    torch.manual_seed(seed)
    data = eight_gaussians(n_train, seed=seed)
    teacher = Denoiser(2, hidden, depth)
    start = time.perf_counter()
    history = train_diffusion(teacher, data, epochs=teacher_epochs, batch_size=batch_size, lr=lr, seed=seed)
    history.pop("best_state", None)
    students, rounds = distill_chain(teacher, data, start_steps, epochs=round_epochs, batch_size=batch_size,
                                     lr=lr, seed=seed)
    reference = eight_gaussians(n_eval, seed=10_000 + seed)
    noise = torch.randn(n_eval, 2, generator=torch.Generator().manual_seed(20_000 + seed))
    quality = {"teacher": {str(n): sliced_wasserstein(ddim_sample(teacher, noise, n), reference)
                           for n in _sample_counts(start_steps)},
               "student": {str(n): sliced_wasserstein(ddim_sample(s, noise, n), reference)
                           for n, s in students.items()},
               "floor": sliced_wasserstein(eight_gaussians(n_eval, seed=30_000 + seed), reference)}
    return {"seed": seed, "teacher_history": history, "rounds": rounds, "quality": quality,
            "seconds": round(time.perf_counter() - start, 1),
            "states": {"teacher": teacher.state_dict(), **{f"student-{n}": s.state_dict()
                                                            for n, s in students.items()}}}


def build_points_study(seeds: Sequence[int] = (0, 1, 2), n_train: int = 8192, hidden: int = 128, depth: int = 2,
                       teacher_epochs: int = 60, round_epochs: int = 8, start_steps: int = 64,
                       batch_size: int = 256, n_eval: int = 4000, lr: float = 2e-3):
    """Zoo builder: for each seed, a base model on 8 Gaussians, the distillation chain ``start_steps`` → 1 and the
    sliced Wasserstein distance of every sampler (teacher DDIM at 1, 2, 4, ... steps; each student) to held-out
    points (computed with the float32 networks); stores the first seed's networks in float16 and every run's
    record."""
    torch.set_num_threads(1)
    config = dict(n_train=n_train, hidden=hidden, depth=depth, teacher_epochs=teacher_epochs,
                  round_epochs=round_epochs, start_steps=start_steps, batch_size=batch_size, n_eval=n_eval, lr=lr)
    runs = [train_points_run(seed, **config) for seed in seeds]
    tensors = {f"{group}/{k}": v for group, state in runs[0]["states"].items() for k, v in _half(state).items()}
    for run in runs:
        run.pop("states")
    return tensors, {**config, "seeds": list(seeds), "runs": runs}


def load_points_study(name: str = "gaussians-diffusion-study"):
    """``(networks {"teacher"|"student-N": Denoiser}, info)`` of the shipped 2-D study."""
    from ..zoo.artifacts import load_networks

    models, entry = load_networks(name, lambda info: Denoiser(2, info["hidden"], info["depth"]))
    return models, entry["info"]


def _half(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone().half() if v.is_floating_point() else v.detach().clone() for k, v in state.items()}


def build_digit_teacher(size: int = 14, hidden: int = 384, depth: int = 2, epochs: int = 30, batch_size: int = 128,
                        lr: float = 1e-3, seed: int = 0):
    """Zoo builder: the base v-prediction model of ``size`` × ``size`` MNIST digits (all 60,000 training images),
    stored in float16 (sampling below uses the stored, rounded weights)."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    data = load_digits(True, size)
    model = Denoiser(size * size, hidden, depth)
    history = train_diffusion(model, data, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    history.pop("best_state", None)
    info = {"size": size, "hidden": hidden, "depth": depth, "history": history, "seed": seed, "lr": lr,
            "batch_size": batch_size, "train_images": len(data),
            "parameters": sum(p.numel() for p in model.parameters())}
    return _half(model.state_dict()), info


def _digit_model(info) -> Denoiser:
    return Denoiser(info["size"] ** 2, info["hidden"], info["depth"])


def load_digit_teacher(name: str = "mnist-diffusion-teacher"):
    """``(teacher Denoiser, info)`` of the shipped digit base model (checksum verified)."""
    from ..zoo.artifacts import load_network

    model, entry = load_network(name, _digit_model)
    return model, entry["info"]


def build_digit_study(teacher: str = "mnist-diffusion-teacher", seeds: Sequence[int] = (0, 1, 2),
                      start_steps: int = 64, round_epochs: int = 2, batch_size: int = 128, lr: float = 1e-3,
                      n_eval: int = 1000, n_reference: int = 5000, keep_student: int = 4, grid: int = 16):
    """Zoo builder: the distillation chain ``start_steps`` → 1 of the shipped digit teacher for each seed, with
    Fréchet distances in ``mnist-cnn-teacher``'s embedding of ``n_eval`` samples (fixed noise per seed) to
    ``n_reference`` training digits, the test-vs-train floor, ``grid`` samples of each sampler from the same
    noise (uint8), and the first seed's ``keep_student``-step student (float16)."""
    from .. import zoo

    torch.set_num_threads(1)
    base, teacher_info = load_digit_teacher(teacher)
    size = teacher_info["size"]
    data = load_digits(True, size)
    classifier = zoo.load("mnist-cnn-teacher")
    gen = torch.Generator().manual_seed(0)
    reference = digit_embedding(classifier, data[torch.randperm(len(data), generator=gen)[:n_reference]])
    floor = frechet_distance(digit_embedding(classifier, load_digits(False, size)[:n_eval]), reference)

    def to_uint8(samples):
        return ((samples[:grid].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)

    runs, grids, kept = [], {}, {}
    for seed in seeds:
        start = time.perf_counter()
        students, rounds = distill_chain(base, data, start_steps, epochs=round_epochs, batch_size=batch_size, lr=lr,
                                         seed=seed, progress=True)
        noise = torch.randn(n_eval, size * size, generator=torch.Generator().manual_seed(20_000 + seed))
        quality = {"teacher": {}, "student": {}}
        for kind, samplers in (("teacher", {n: base for n in _sample_counts(start_steps)}), ("student", students)):
            for n, model in samplers.items():
                samples = ddim_sample(model, noise, n)
                quality[kind][str(n)] = frechet_distance(digit_embedding(classifier, samples), reference)
                if seed == seeds[0]:
                    grids[f"{kind}-{n}"] = to_uint8(samples)
        if seed == seeds[0]:
            kept = _half(students[keep_student].state_dict())
        runs.append({"seed": seed, "rounds": rounds, "quality": quality,
                     "seconds": round(time.perf_counter() - start, 1)})
        print(f"seed {seed}: {runs[-1]['seconds']} s; FD {quality}", flush=True)
    tensors = {**{f"grid/{k}": v for k, v in grids.items()}, **{f"student/{k}": v for k, v in kept.items()}}
    info = {"teacher": teacher, "size": size, "hidden": teacher_info["hidden"], "depth": teacher_info["depth"],
            "seeds": list(seeds), "start_steps": start_steps, "round_epochs": round_epochs,
            "batch_size": batch_size, "lr": lr, "n_eval": n_eval, "n_reference": n_reference, "floor": floor,
            "keep_student": keep_student, "runs": runs}
    return tensors, info


def load_digit_study(name: str = "mnist-diffusion-students"):
    """``(grids {"teacher-N"|"student-N": uint8 [grid, size²]}, kept student Denoiser, info)``."""
    from ..zoo.artifacts import load_artifact

    tensors, entry = load_artifact(name)
    info = entry["info"]
    grids = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("grid/")}
    student = _digit_model(info)
    student.load_state_dict({k.split("/", 1)[1]: v.float() for k, v in tensors.items() if k.startswith("student/")})
    return grids, student.eval(), info
