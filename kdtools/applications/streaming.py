r"""Streaming action anticipation: a stream of observations with procedural action sequences, anticipators
that look at a window of the past, and offline vs streaming evaluation on a simulated clock.

**The stream.** A fixed *world* (seeded) holds ``n_actions`` action classes, each with a prototype vector, and
``n_recipes`` procedures ("recipes"): scripts of ``steps`` actions from that vocabulary, with no action twice in a
row. A stream strings recipes together, each chosen uniformly at random; every step lasts a random number of
frames (uniform in ``[min_duration, max_duration]``) and, with probability ``skip``, a step is left out (the
occasional variation of a real procedure). Frame :math:`k` shows the observation
:math:`x_k = \mu_{a_k} + \sigma\,\epsilon_k` of its *current* action :math:`a_k` only, with Gaussian noise;
what comes next must be inferred from the sequence so far. This stands in for the procedural activities of
egocentric video (EPIC-KITCHENS' cooking): the next action depends on the procedure and on how far it has got,
and a model that sees more of the past can know more of the future.

**The task.** At frame :math:`k`, from the frames up to :math:`k`, predict the action at frame
:math:`k + \tau_a` for every anticipation horizon :math:`\tau_a` in ``horizons`` (in frames). An
:class:`Anticipator` is a GRU over the last ``window`` frames with one classifier head per horizon.

**The clock** (:func:`streaming_schedule`). Frame :math:`k` arrives at time :math:`k\Delta`. A model that needs
:math:`r` seconds per prediction starts, whenever it is free, on the newest frame that has arrived (it skips the
frames that arrived while it was busy) or, if it has processed that one already, waits for the next frame; its
output for frame :math:`j` started at :math:`s_j` is available from :math:`s_j + r` on. At time :math:`t` the
prediction in use is the newest one available (one finishing exactly at :math:`t` counts). Offline evaluation
uses frame :math:`k`'s own prediction at time :math:`k\Delta`; streaming evaluation uses the prediction in use,
made from an older frame, so it anticipates further ahead than :math:`\tau_a`.

Paper: A. Furnari, G. M. Farinella, "Streaming egocentric action anticipation: An evaluation scheme and
approach", CVIU 234, 2023 (and M. Li, Y.-X. Wang, D. Ramanan, "Towards Streaming Perception", ECCV 2020, for the
streaming evaluation of perception). Their models process video; ours process synthetic feature vectors, and the
latencies are measured on the CPU that runs the lesson.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..bench import median_call_ms
from ._loop import run_epochs

__all__ = ["World", "make_world", "make_stream", "Anticipator", "make_windows", "horizon_targets",
           "train_anticipator", "predict_stream", "streaming_schedule", "anticipation_accuracy",
           "effective_horizons", "median_cpu_ms", "build_stream_teacher", "load_stream_teacher", "build_stream_study",
           "load_stream_study", "STREAM_ARMS", "HORIZONS", "TEACHER", "STUDENT", "SPLIT_SEEDS"]

HORIZONS = (1, 2, 4, 8)  # anticipation horizons tau_a, in frames
TEACHER = dict(hidden=128, layers=2, window=48)  # the heavy anticipator: wide, deep, long memory
STUDENT = dict(hidden=16, layers=1, window=8)  # the light one: narrow and short-sighted
SPLIT_SEEDS = {"train": 1, "valid": 2, "test": 3}  # stream seeds; the world itself always uses seed 0
STREAM_ARMS = ("scratch", "KD")


@dataclass(frozen=True)
class World:
    """The fixed part of the generator: action prototypes ``[n_actions, dim]`` and the recipes (tuples of
    action ids)."""

    prototypes: torch.Tensor
    recipes: Tuple[Tuple[int, ...], ...]

    @property
    def n_actions(self) -> int:
        return self.prototypes.shape[0]

    @property
    def dim(self) -> int:
        return self.prototypes.shape[1]


def make_world(n_actions: int = 8, n_recipes: int = 6, steps: int = 8, dim: int = 16, seed: int = 0) -> World:
    """Action prototypes (standard normal) and ``n_recipes`` random recipes of ``steps`` actions each, no action
    twice in a row; deterministic in ``seed``."""
    for name, value, low in (("n_actions", n_actions, 2), ("n_recipes", n_recipes, 1), ("steps", steps, 2),
                             ("dim", dim, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(n_actions, dim, generator=gen)
    recipes = []
    for _ in range(n_recipes):
        script = [int(torch.randint(n_actions, (1,), generator=gen))]
        while len(script) < steps:
            step = int(torch.randint(n_actions - 1, (1,), generator=gen))
            script.append(step + (step >= script[-1]))  # any action but the previous one
        recipes.append(tuple(script))
    return World(prototypes, tuple(recipes))


def make_stream(n_frames: int, seed: int, world: Optional[World] = None, noise: float = 1.5,
                min_duration: int = 3, max_duration: int = 8,
                skip: float = 0.1) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(observations [n_frames, dim] float32, actions [n_frames] int64)``: recipes of ``world`` (default
    :func:`make_world`) one after another, see the module's docstring. Deterministic in ``seed``."""
    if not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive int, got {n_frames!r}")
    if not (isinstance(min_duration, int) and isinstance(max_duration, int) and 1 <= min_duration <= max_duration):
        raise ValueError(f"durations must be ints with 1 <= min_duration <= max_duration, got "
                         f"min_duration={min_duration!r}, max_duration={max_duration!r}")
    if not 0 <= skip < 1 or noise < 0:
        raise ValueError(f"skip must be in [0, 1) and noise >= 0, got skip={skip!r}, noise={noise!r}")
    world = world or make_world()
    gen = torch.Generator().manual_seed(seed)
    actions = []
    while len(actions) < n_frames:
        recipe = world.recipes[int(torch.randint(len(world.recipes), (1,), generator=gen))]
        for action in recipe:
            if float(torch.rand((), generator=gen)) < skip:
                continue
            duration = int(torch.randint(min_duration, max_duration + 1, (1,), generator=gen))
            actions += [action] * duration
    actions = torch.tensor(actions[:n_frames])
    observations = world.prototypes[actions] + noise * torch.randn(n_frames, world.dim, generator=gen)
    return observations.float(), actions


class Anticipator(nn.Module):
    """A GRU over the last ``window`` observations; its final state feeds one linear head per horizon.
    ``forward(windows [B, window, dim])`` returns logits ``[B, len(horizons), n_actions]``."""

    def __init__(self, dim: int, n_actions: int, horizons: Sequence[int] = HORIZONS, hidden: int = 16,
                 layers: int = 1, window: int = 8):
        super().__init__()
        for name, value in (("dim", dim), ("n_actions", n_actions), ("hidden", hidden), ("layers", layers),
                            ("window", window)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.horizons, self.window, self.n_actions = tuple(_check_horizons(horizons)), window, n_actions
        self.gru = nn.GRU(dim, hidden, num_layers=layers, batch_first=True)
        self.heads = nn.Linear(hidden, len(self.horizons) * n_actions)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        if windows.dim() != 3 or windows.shape[1] != self.window:
            raise ValueError(f"windows must be [B, {self.window}, dim], got {list(windows.shape)}")
        states, _ = self.gru(windows)
        return self.heads(states[:, -1]).view(len(windows), len(self.horizons), self.n_actions)


def _check_horizons(horizons) -> list:
    horizons = list(horizons)
    if not horizons or any(not isinstance(h, int) or h < 0 for h in horizons):
        raise ValueError(f"horizons must be a non-empty list of ints >= 0 (frames), got {horizons!r}")
    return horizons


def make_windows(observations: torch.Tensor, ends: torch.Tensor, window: int) -> torch.Tensor:
    """``[len(ends), window, dim]``: the ``window`` frames up to and including each frame of ``ends``; frames
    before the stream's start are zeros."""
    if observations.dim() != 2:
        raise ValueError(f"observations must be [n_frames, dim], got {list(observations.shape)}")
    ends = torch.as_tensor(ends)
    if len(ends) and (int(ends.min()) < 0 or int(ends.max()) >= len(observations)):
        raise ValueError(f"ends must index frames 0..{len(observations) - 1}, got {int(ends.min())}.."
                         f"{int(ends.max())}")
    padded = torch.cat([observations.new_zeros(window - 1, observations.shape[1]), observations])
    return padded[ends[:, None] + torch.arange(window)]  # padded row e + i is frame e - window + 1 + i


def horizon_targets(actions: torch.Tensor, ends: torch.Tensor, horizons: Sequence[int]) -> torch.Tensor:
    """``[len(ends), len(horizons)]``: the action at frame ``end + tau`` for each horizon ``tau``."""
    horizons = torch.tensor(_check_horizons(horizons))
    ends = torch.as_tensor(ends)
    if len(ends) and int(ends.max()) + int(horizons.max()) >= len(actions):
        raise ValueError(f"the last end ({int(ends.max())}) plus the longest horizon ({int(horizons.max())}) "
                         f"must be a frame of the stream (< {len(actions)})")
    return actions[ends[:, None] + horizons[None, :]]


def evaluation_frames(n_frames: int, horizons: Sequence[int] = HORIZONS, warmup: int = 64) -> torch.Tensor:
    """The frames scored: from ``warmup`` on (every model's window is full and the clock has settled) to the
    last frame whose longest-horizon target is in the stream."""
    return torch.arange(warmup, n_frames - max(_check_horizons(horizons)))


@torch.no_grad()
def predict_stream(model: Anticipator, observations: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits ``[n_frames, H, n_actions]`` of ``model`` at every frame (what it would output, started there)."""
    model.eval()
    ends = torch.arange(len(observations))
    return torch.cat([model(make_windows(observations, ends[i:i + batch_size], model.window))
                      for i in range(0, len(ends), batch_size)])


def train_anticipator(model: Anticipator, observations: torch.Tensor, actions: torch.Tensor, *, epochs: int = 10,
                      batch_size: int = 128, lr: float = 3e-3, seed: int = 0,
                      teacher_logits: Optional[torch.Tensor] = None, alpha: float = 0.0, temperature: float = 4.0,
                      valid: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                      stop_after: Optional[int] = None) -> dict:
    r"""Train on every frame of the stream whose longest-horizon target exists; returns the history of
    :func:`kdtools.applications._loop.run_epochs` (``valid_accuracy``: mean offline accuracy over the horizons on
    ``valid`` = (observations, actions), in %).

    Loss per frame and horizon: :math:`(1-\alpha)\,\mathrm{CE}(z^s, y) + \alpha\,T^2\,\mathrm{KL}(p^t\|p^s)`
    (:func:`kdtools.losses.kd_loss`), averaged over frames and horizons; ``teacher_logits`` ``[n_frames, H, C]``
    are the teacher's outputs on the same frames (:func:`predict_stream`; the teacher is fixed, so they are
    computed once). Adam, cosine schedule to 0.
    """
    from ..losses import kd_loss
    from ..runtime import seed_everything

    if alpha > 0 and teacher_logits is None:
        raise ValueError(f"alpha={alpha} needs teacher_logits, got None")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if teacher_logits is not None and teacher_logits.shape[:2] != (len(observations), len(model.horizons)):
        raise ValueError(f"teacher_logits must be [{len(observations)}, {len(model.horizons)}, C], got "
                         f"{list(teacher_logits.shape)}")
    seed_everything(seed)
    ends = torch.arange(len(observations) - max(model.horizons))
    targets = horizon_targets(actions, ends, model.horizons)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    n_classes = model.n_actions

    def batch_loss(idx):
        logits = model(make_windows(observations, ends[idx], model.window)).reshape(-1, n_classes)
        loss = F.cross_entropy(logits, targets[idx].reshape(-1))
        if alpha > 0:
            soft = kd_loss(logits, teacher_logits[ends[idx]].reshape(-1, n_classes), temperature)
            loss = (1 - alpha) * loss + alpha * soft
        return loss

    def mean_valid_accuracy():
        frames = evaluation_frames(len(valid[0]), model.horizons)
        offline = predict_stream(model, valid[0]).argmax(-1)
        return sum(anticipation_accuracy(offline, valid[1], model.horizons, frames).values()) / len(model.horizons)

    return run_epochs(model, len(ends), batch_loss, optimizer, epochs=epochs, batch_size=batch_size, seed=seed,
                      validate=None if valid is None else mean_valid_accuracy, score_name="accuracy",
                      stop_after=stop_after)


def streaming_schedule(latency: float, frame_period: float, n_frames: int) -> torch.Tensor:
    """``[n_frames]`` int64: for each frame ``k``, the frame whose prediction is in use when frame ``k`` arrives
    (time ``k * frame_period``), or -1 if no prediction has finished yet. See the module's docstring for the
    clock's rules; ``latency`` and ``frame_period`` in the same unit.

    Times are compared with a tolerance of 1e-9 frame periods, so that e.g. a latency of exactly 3 frame periods
    finishes *at* the arrival of the third frame after, not just after it.
    """
    if not (isinstance(latency, (int, float)) and math.isfinite(latency) and latency >= 0):
        raise ValueError(f"latency must be a finite number >= 0, got {latency!r}")
    if not (isinstance(frame_period, (int, float)) and math.isfinite(frame_period) and frame_period > 0):
        raise ValueError(f"frame_period must be a finite number > 0, got {frame_period!r}")
    if not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive int, got {n_frames!r}")
    r = latency / frame_period  # everything below in frame periods: frame k arrives at time k
    eps = 1e-9
    done_at, frames = [], []
    free_at, next_frame = 0.0, 0
    while True:
        newest = math.floor(free_at + eps)  # the newest frame that has arrived when the model is free
        frame = max(next_frame, newest)
        if frame >= n_frames:
            break
        start = max(free_at, float(frame))
        free_at, next_frame = start + r, frame + 1
        done_at.append(free_at)
        frames.append(frame)
    in_use = torch.full((n_frames,), -1, dtype=torch.long)
    latest, i = -1, 0
    for k in range(n_frames):
        while i < len(done_at) and done_at[i] <= k + eps:
            latest, i = frames[i], i + 1
        in_use[k] = latest
    return in_use


def anticipation_accuracy(predictions: torch.Tensor, actions: torch.Tensor, horizons: Sequence[int],
                          frames: torch.Tensor, in_use: Optional[torch.Tensor] = None) -> Dict[int, float]:
    """``{tau: accuracy in %}``: at each frame ``k`` of ``frames``, is the predicted class for horizon ``tau``
    equal to the action at ``k + tau``? ``predictions`` ``[n_frames, H]`` are each frame's predicted classes;
    offline evaluation (``in_use=None``) scores frame ``k``'s own prediction, streaming evaluation the
    prediction of frame ``in_use[k]`` (:func:`streaming_schedule`; -1, no prediction yet, counts as wrong)."""
    horizons = _check_horizons(horizons)
    if predictions.dim() != 2 or predictions.shape[1] != len(horizons):
        raise ValueError(f"predictions must be [n_frames, {len(horizons)}] (one class per horizon), got "
                         f"{list(predictions.shape)}")
    frames = torch.as_tensor(frames)
    source = frames if in_use is None else in_use[frames]
    targets = horizon_targets(actions, frames, horizons)
    chosen = predictions[source.clamp(min=0)]
    correct = (chosen == targets) & (source >= 0)[:, None]
    return {tau: 100 * correct[:, h].double().mean().item() for h, tau in enumerate(horizons)}


def effective_horizons(in_use: torch.Tensor, frames: torch.Tensor, tau: int) -> torch.Tensor:
    """How far ahead, in frames, each prediction in use actually looks: ``tau + (k - in_use[k])``."""
    frames = torch.as_tensor(frames)
    return tau + frames - in_use[frames]


def median_cpu_ms(fn, *args, warmup: int = 10, repeats: int = 100) -> float:
    """Median CPU time in milliseconds that the calling thread spends in ``fn(*args)``, after ``warmup`` calls:
    :func:`kdtools.bench.median_call_ms` with ``clock="cpu"`` (see there why the clock of this lesson counts CPU
    time, not wall-clock time)."""
    return median_call_ms(fn, *args, warmup=warmup, repeats=repeats, clock="cpu")


# ---------------------------------------------------------------------------------------------- zoo builders
def _streams(n_train: int, n_valid: int, n_test: int):
    return {split: make_stream(n, SPLIT_SEEDS[split]) for split, n in
            (("train", n_train), ("valid", n_valid), ("test", n_test)) if n}


def _new(config: dict) -> Anticipator:
    world = make_world()
    return Anticipator(world.dim, world.n_actions, HORIZONS, **config)


def build_stream_teacher(n_train: int = 120_000, n_valid: int = 3000, epochs: int = 2, lr: float = 3e-3,
                         seed: int = 0):
    """Zoo builder of the lesson's teacher (:data:`TEACHER`), best validation epoch kept."""
    from ..runtime import seed_everything

    torch.set_num_threads(1)
    data = _streams(n_train, n_valid, 0)
    seed_everything(seed)  # the initial weights too depend on the seed
    model = _new(TEACHER)
    history = train_anticipator(model, *data["train"], epochs=epochs, lr=lr, seed=seed, valid=data["valid"])
    model.load_state_dict(history.pop("best_state"))
    info = dict(history=history, n_train=n_train, n_valid=n_valid, config=TEACHER, horizons=list(HORIZONS))
    return {k: v.clone() for k, v in model.state_dict().items()}, info


def load_stream_teacher(name: str = "stream-anticipation-teacher") -> Anticipator:
    from ..zoo.artifacts import load_network

    return load_network(name, lambda info: _new(info["config"]))[0]


def _student_job(job: dict) -> dict:
    from ..runtime import seed_everything

    torch.set_num_threads(1)
    data = _streams(job["n_train"], job["n_valid"], job["n_test"])
    teacher_logits = predict_stream(load_stream_teacher(), data["train"][0]) if job["alpha"] > 0 else None
    seed_everything(job["seed"])  # the initial weights depend on the seed only, not on what ran before
    model = _new(STUDENT)
    history = train_anticipator(model, *data["train"], epochs=job["epochs"], lr=job["lr"], seed=job["seed"],
                                teacher_logits=teacher_logits, alpha=job["alpha"], temperature=job["temperature"],
                                valid=data["valid"])
    test_obs, test_actions = data["test"]
    frames = evaluation_frames(len(test_obs))
    last = anticipation_accuracy(predict_stream(model, test_obs).argmax(-1), test_actions, HORIZONS, frames)
    best_state = history.pop("best_state")
    best_model = _new(STUDENT)
    best_model.load_state_dict(best_state)
    best = anticipation_accuracy(predict_stream(best_model, test_obs).argmax(-1), test_actions, HORIZONS, frames)
    return dict(arm=job["arm"], seed=job["seed"], alpha=job["alpha"], history=history,
                last={str(k): round(v, 2) for k, v in last.items()},
                best={str(k): round(v, 2) for k, v in best.items()},
                state={k: v.clone() for k, v in model.state_dict().items()})


def build_stream_study(n_train: int = 20_000, n_valid: int = 3000, n_test: int = 6000, epochs: int = 12,
                       lr: float = 3e-3, alpha: float = 0.9, temperature: float = 4.0, seeds=(0, 1, 2),
                       workers: int = 2):
    """Zoo builder of the lesson's comparison: :data:`STUDENT` anticipators from scratch and with KD from the
    teacher (α, T fixed in advance), every seed; returns every run's student (last epoch) and, as ``info``,
    every run's history and test accuracies (last and best validation epoch)."""
    from ..runtime import map_in_processes
    from ..zoo.artifacts import grouped_states

    common = dict(n_train=n_train, n_valid=n_valid, n_test=n_test, epochs=epochs, lr=lr, temperature=temperature)
    jobs = [dict(common, arm=arm, seed=s, alpha=alpha if arm == "KD" else 0.0) for arm in STREAM_ARMS
            for s in seeds]
    runs = map_in_processes(_student_job, jobs, workers)
    states = {f"{r['arm']}-seed{r['seed']}": r.pop("state") for r in runs}  # 2k parameters each: keep them all
    info = dict(runs=runs, config=STUDENT, horizons=list(HORIZONS), seeds=list(seeds), alpha=alpha, **common)
    return grouped_states(states), info


def load_stream_study(name: str = "stream-anticipation-students"):
    """``(info, students)``: the shipped comparison's record and every run's student (last epoch), keyed
    ``(arm, seed)``."""
    from ..zoo.artifacts import load_networks

    students, entry = load_networks(name, lambda info: _new(info["config"]))
    return entry["info"], {(arm, int(seed)): model for key, model in students.items()
                           for arm, seed in [key.split("-seed")]}
