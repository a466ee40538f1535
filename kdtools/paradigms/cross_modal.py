r"""Cross-modal distillation: an image teacher teaches an audio student through paired data, with no audio labels.

The setting of the lesson ``notebooks/05_paradigms/cross_modal.ipynb`` (AV-MNIST style): every spoken-digit
recording of FSDD (:mod:`kdtools.paradigms.audio`) is paired with one MNIST image of the same digit
(:func:`~kdtools.paradigms.audio.paired_mnist_indices`); training recordings with training images, test
recordings with test images. The image teacher (the zoo's ``mnist-cnn-teacher``) is run once on the paired
training images; its logits and pooled embedding become per-recording tables that the audio student's loss terms
look up by the batch's data-set positions (``Step.index``), exactly as a teacher cache would.

Label-free arms never see a recording's digit: the student's training set carries the *teacher's* hard
predictions as its labels, so even a term that read ``step.labels`` could not leak the truth. The arms
(:data:`ARMS`):

- ``"audio labels (CE)"``: the reference, cross-entropy on the recordings' true digits;
- ``"teacher's hard labels (CE)"``: cross-entropy on the teacher's argmax on the paired image;
- ``"teacher's soft labels (KD)"``: :math:`T^2\,\mathrm{KL}(p^t_T \,\|\, p^s_T)` with the image teacher's
  :math:`p^t` on the paired image (Gupta et al. 2016 transfer the teacher's mid-level features instead; SoundNet,
  Aytar et al. 2016, uses exactly this KL from visual networks to a sound network on unlabelled video);
- ``"KD + CRD"``: plus CRD (:class:`~kdtools.losses.CRDLoss` through :func:`kdtools.protocol.crd_term`) between
  the student's embedding and the teacher's embedding of the paired image, CRD's own cross-modal use (Tian et
  al. 2020, §4.3), at the authors' weight 0.8 with the memory bank sized to the training set.

- ``"CRD only (probe)"``: CRD alone trains the embedding and gives the classifier no signal; the CRD paper reads
  its cross-modal representations out with a linear probe on labelled data. Ours stays label-free: the head is a
  linear probe trained at the same time on the *detached* embedding with the teacher's hard predictions
  (:func:`probe_term`), so the encoder learns from CRD alone and the test accuracy exists at every epoch.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch

from .. import zoo
from ..data import TensorData, TensorLoader, load_mnist
from ..features import FeatureExtractor
from ..losses import CRDLoss, kd_loss
from ..models import build_model
from ..runtime import map_in_processes, seed_everything
from ..train import History, Step, cross_entropy_term, fit
from .audio import load_fsdd, paired_mnist_indices

TEACHER = "mnist-cnn-teacher"
STUDENT = "cnn-8x1"
EMBEDDING_LAYER = "embedding"
TEMPERATURE = 4.0
CRD_WEIGHT = 0.8  # the CRD authors' weight (their CIFAR-100 configuration), not tuned here
PAIR_SEED = 0
# Chosen on a validation split of the training recordings (takes 5-9 held out), labelled CE, cnn-8x1, 20 epochs:
# learning rate 0.01 / 0.05 / 0.1 reached 63 / 93 / 97 % validation accuracy (validation_lr_sweep() reproduces it).
LR = 0.1
EPOCHS = 20

__all__ = ["TEACHER", "STUDENT", "TEMPERATURE", "PairedData", "paired_data", "teacher_outputs", "ARMS",
           "label_free_kd_loss", "probe_term", "train_audio_student", "validation_lr_sweep", "run_arm_jobs", "AudioTeacher", "train_audio_teacher",
           "train_image_student", "run_reverse_jobs"]


@dataclass
class PairedData:
    """Audio splits, the MNIST images paired with them (same order), and the image teacher's outputs on the
    paired training images: ``teacher_logits`` ``[N, 10]``, ``teacher_embedding`` ``[N, D]``."""

    audio_train: TensorData
    audio_test: TensorData
    image_train: TensorData
    image_test: TensorData
    teacher_logits: torch.Tensor
    teacher_embedding: torch.Tensor

    @property
    def teacher_labels(self) -> torch.Tensor:
        return self.teacher_logits.argmax(1)


def teacher_outputs(teacher: torch.nn.Module, images: torch.Tensor, chunk: int = 500
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The frozen teacher's logits and hooked embedding for ``images``, in chunks, without gradients."""
    teacher.eval()
    logits, embeddings = [], []
    with torch.no_grad():
        with FeatureExtractor(teacher, [EMBEDDING_LAYER], detach=True) as features:
            for start in range(0, len(images), chunk):
                logits.append(teacher(images[start:start + chunk]))  # one pass gives both
                embeddings.append(features[EMBEDDING_LAYER])
    return torch.cat(logits), torch.cat(embeddings)


@functools.lru_cache(maxsize=2)
def _paired(pair_seed: int) -> PairedData:
    audio_train, audio_test = load_fsdd(train=True), load_fsdd(train=False)
    mnist_train, mnist_test = load_mnist(train=True), load_mnist(train=False)
    image_train = mnist_train.subset(paired_mnist_indices(audio_train.labels, mnist_train.labels, pair_seed))
    image_test = mnist_test.subset(paired_mnist_indices(audio_test.labels, mnist_test.labels, pair_seed))
    logits, embedding = teacher_outputs(zoo.load(TEACHER), image_train.images)
    return PairedData(audio_train, audio_test, image_train, image_test, logits, embedding)


def paired_data(pair_seed: int = PAIR_SEED) -> PairedData:
    """The lesson's paired data set (built once per process and pair seed; tensors are shared, do not edit)."""
    if not isinstance(pair_seed, int) or pair_seed < 0:
        raise ValueError(f"pair_seed must be a non-negative int, got {pair_seed!r}")
    return _paired(pair_seed)


def label_free_kd_loss(student_logits: torch.Tensor, teacher_logits_table: torch.Tensor, index: torch.Tensor,
                       temperature: float = TEMPERATURE) -> torch.Tensor:
    r"""KD from a teacher that saw the *paired* input: :math:`T^2\,\mathrm{KL}(p^t_T \,\|\, p^s_T)`, batch mean,
    with the teacher's logits looked up as ``teacher_logits_table[index]`` (``index``: the batch's positions in
    the training set). No label enters. ``student_logits`` ``[B, C]``, ``teacher_logits_table`` ``[N, C]``,
    ``index`` ``[B]`` integers in ``[0, N)``."""
    if teacher_logits_table.dim() != 2:
        raise ValueError(f"teacher_logits_table must be [N, C], got shape {tuple(teacher_logits_table.shape)}")
    if index.dim() != 1 or index.dtype.is_floating_point or len(index) != len(student_logits):
        raise ValueError(f"index must be [B] integers with B = len(student_logits) = {len(student_logits)}, "
                         f"got shape {tuple(index.shape)} and dtype {index.dtype}")
    if len(index) and (int(index.min()) < 0 or int(index.max()) >= len(teacher_logits_table)):
        raise ValueError(f"index must lie in [0, {len(teacher_logits_table)}), got values in "
                         f"[{int(index.min())}, {int(index.max())}]")
    return kd_loss(student_logits, teacher_logits_table[index.to(teacher_logits_table.device)], temperature)


@dataclass(frozen=True)
class _Arm:
    """How one arm trains: which labels its training set carries and which terms it minimises."""

    labels: str  # "true" or "teacher"
    kd: bool = False
    ce: bool = False
    crd: bool = False
    probe: bool = False  # train the head alone on the detached embedding (the encoder's signal is CRD only)


def probe_term(head: torch.nn.Module, layer: str = EMBEDDING_LAYER):
    """The term ``CE(head(F.detach()), step.labels)`` on the hooked ``layer``: a linear probe trained alongside
    the encoder, whose gradient reaches ``head`` only (``step.labels`` are the teacher's hard predictions in the
    label-free arms)."""
    def term(step: Step) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(head(step.student_features[layer].detach()), step.labels)
    return term


ARMS: Dict[str, _Arm] = {
    "audio labels (CE)": _Arm("true", ce=True),
    "teacher's hard labels (CE)": _Arm("teacher", ce=True),
    "teacher's soft labels (KD)": _Arm("teacher", kd=True),
    "KD + CRD": _Arm("teacher", kd=True, crd=True),
    "CRD only (probe)": _Arm("teacher", crd=True, probe=True),
}


def _arm(name: str) -> _Arm:
    if name not in ARMS:
        raise ValueError(f"arm must be one of {list(ARMS)}, got {name!r}")
    return ARMS[name]


def train_audio_student(arm: str, seed: int, epochs: int, *, train_subset: int = None, batch_size: int = 64,
                        lr: float = LR, pair_seed: int = PAIR_SEED, progress: bool = False) -> History:
    """Train :data:`STUDENT` on the training recordings as ``arm`` says; test accuracy on the 300 test
    recordings after every epoch. ``train_subset``: the first recordings of a fixed random order (smoke runs)."""
    spec = _arm(arm)
    data = paired_data(pair_seed)
    labels = data.audio_train.labels if spec.labels == "true" else data.teacher_labels
    train = TensorData(data.audio_train.images, labels)
    logits_table, embedding_table = data.teacher_logits, data.teacher_embedding
    if train_subset is not None:
        keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(1234))[:train_subset]
        train = train.subset(keep)
        logits_table, embedding_table = logits_table[keep], embedding_table[keep]
    seed_everything(seed)
    student = build_model(STUDENT)
    terms, extra, layers = {}, [], ()
    if spec.ce:
        terms["ce"] = (1.0, cross_entropy_term)
    if spec.kd:
        terms["kd"] = (1.0, lambda step: label_free_kd_loss(step.student_logits, logits_table, step.index))
    if spec.crd:
        from ..protocol import crd_negatives, crd_term
        student_dim = student.head.in_features
        crd = CRDLoss(student_dim, embedding_table.shape[1], len(train), n_negatives=crd_negatives(len(train)))
        terms["crd"] = (CRD_WEIGHT, crd_term(crd, EMBEDDING_LAYER,
                                             teacher_features=lambda step: embedding_table[step.index]))
        extra, layers = [crd], (EMBEDDING_LAYER,)
    if spec.probe:
        terms["probe"] = (1.0, probe_term(student.head))
        layers = (EMBEDDING_LAYER,)
    return fit(student, TensorLoader(train, batch_size, shuffle=True, seed=seed),
               TensorLoader(data.audio_test, 300), epochs=epochs, terms=terms, extra_modules=extra,
               student_layers=layers, lr=lr, seed=seed, progress=progress)


def validation_lr_sweep(lrs: Sequence[float] = (0.01, 0.05, 0.1), epochs: int = EPOCHS, seed: int = 0
                        ) -> Dict[float, History]:
    """How :data:`LR` was chosen: the labelled audio student trained on takes 10-49 of the training recordings
    for each learning rate, validated on takes 5-9 (the test takes 0-4 are never used)."""
    from .audio import list_recordings
    data = paired_data()
    held_out = torch.tensor([r.take < 10 for r in list_recordings(True)])
    fit_part = TensorData(data.audio_train.images[~held_out], data.audio_train.labels[~held_out])
    validation = TensorData(data.audio_train.images[held_out], data.audio_train.labels[held_out])
    histories = {}
    for lr in lrs:
        seed_everything(seed)
        histories[lr] = fit(build_model(STUDENT), TensorLoader(fit_part, 64, shuffle=True, seed=seed),
                            TensorLoader(validation, 500), epochs=epochs, lr=lr, seed=seed, progress=False)
    return histories


def _arm_job(job):
    arm, seed, epochs, options = job
    torch.set_num_threads(1)
    return train_audio_student(arm, seed, epochs, **options)


def run_arm_jobs(jobs: Sequence[Tuple[str, int, int, dict]], workers: int = 2) -> List[History]:
    """Histories of ``(arm, seed, epochs, options)`` jobs, in order, in ``workers`` processes (one thread each;
    every run seeds itself, so the results do not depend on ``workers``)."""
    jobs = [tuple(job) for job in jobs]
    for job in jobs:
        _arm(job[0])
    return map_in_processes(_arm_job, jobs, workers)


# ----------------------------------------------------------------------------- the reverse direction
AUDIO_TEACHER_EPOCHS = 20


@dataclass
class AudioTeacher:
    """The teacher of the reverse direction: a cnn-16x1 trained on the labelled training recordings (seed 0),
    its logits on those recordings (the soft targets an image student learns from) and its test accuracy."""

    logits: torch.Tensor
    test_accuracy: float
    seconds: float


def train_audio_teacher(epochs: int = AUDIO_TEACHER_EPOCHS, pair_seed: int = PAIR_SEED) -> AudioTeacher:
    """Train :class:`AudioTeacher` (this process, seeded, one thread like the arms' runs, so the teacher does
    not depend on the CPU's thread count; a few seconds per epoch)."""
    start = time.perf_counter()
    data = paired_data(pair_seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seed_everything(0)
        teacher = build_model("cnn-16x1")
        history = fit(teacher, TensorLoader(data.audio_train, 64, shuffle=True, seed=0),
                      TensorLoader(data.audio_test, 300), epochs=epochs, lr=LR, seed=0, progress=False)
        logits, _ = teacher_outputs(teacher, data.audio_train.images)
    finally:
        torch.set_num_threads(threads)
    return AudioTeacher(logits, history.last_acc, time.perf_counter() - start)


REVERSE_SOURCES = ("image labels (CE)", "audio teacher (KD)")


def train_image_student(source: str, seed: int, epochs: int, *, audio_logits: torch.Tensor = None,
                        test_images: int = 2000, pair_seed: int = PAIR_SEED) -> History:
    """Train an image :data:`STUDENT` on the MNIST images paired with the training recordings, from
    ``source`` = ``"image labels (CE)"`` (the images' true digits) or ``"audio teacher (KD)"`` (only the soft
    targets ``audio_logits`` ``[N, C]`` of an audio network on the paired recordings,
    :attr:`AudioTeacher.logits`). Test: the first ``test_images`` MNIST test images."""
    if source not in REVERSE_SOURCES:
        raise ValueError(f"source must be one of {list(REVERSE_SOURCES)}, got {source!r}")
    data = paired_data(pair_seed)
    if source == "image labels (CE)":
        train, terms = data.image_train, {"ce": (1.0, cross_entropy_term)}
    else:
        if audio_logits is None or tuple(audio_logits.shape) != (len(data.image_train), 10):
            raise ValueError(f"audio_logits must be [{len(data.image_train)}, 10] (AudioTeacher.logits), got "
                             f"{None if audio_logits is None else tuple(audio_logits.shape)}")
        train = TensorData(data.image_train.images, audio_logits.argmax(1))
        terms = {"kd": (1.0, lambda step: label_free_kd_loss(step.student_logits, audio_logits, step.index))}
    test = load_mnist(train=False)
    test = test.subset(torch.arange(min(test_images, len(test))))
    seed_everything(seed)
    student = build_model(STUDENT)
    return fit(student, TensorLoader(train, 64, shuffle=True, seed=seed), TensorLoader(test, 1000),
               epochs=epochs, terms=terms, lr=LR, seed=seed, progress=False)


def _reverse_job(job):
    source, seed, epochs, options = job
    torch.set_num_threads(1)
    return train_image_student(source, seed, epochs, **options)


def run_reverse_jobs(jobs: Sequence[Tuple[str, int, int, dict]], workers: int = 2) -> List[History]:
    """:func:`train_image_student` for ``(source, seed, epochs, options)`` jobs, in order, in processes."""
    jobs = [tuple(job) for job in jobs]
    for job in jobs:
        if job[0] not in REVERSE_SOURCES:
            raise ValueError(f"source must be one of {list(REVERSE_SOURCES)}, got {job[0]!r}")
    return map_in_processes(_reverse_job, jobs, workers)
