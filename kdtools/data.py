"""MNIST as in-memory tensors, deterministic batch loaders and stratified subsets.

Per-sample Python transforms (PIL -> tensor -> normalise) dominate training time on a laptop
CPU, so the whole data set is decoded once into a float tensor and batches are sliced from it.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

# The published normalisation constants (training-set pixel mean and std).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def default_data_root() -> Path:
    """``$KDTOOLS_DATA`` if set, else a per-user cache directory (``$XDG_CACHE_HOME/kdtools/data``)."""
    env = os.environ.get("KDTOOLS_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "kdtools" / "data"


def _has_raw_files(root: Path) -> bool:
    raw = root / "MNIST" / "raw"
    return all((raw / name).is_file() for name in MNIST_FILES)


def _torchvision_mnist(root: Path, train: bool, download: bool):
    from torchvision.datasets import MNIST

    return MNIST(str(root), train=train, download=download)


@dataclass
class TensorData:
    """A data set held as tensors: ``images`` ``[N, 1, 28, 28]`` float (normalised), ``labels`` ``[N]`` int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"images and labels must have the same length, got {self.images.shape[0]} "
                             f"and {self.labels.shape[0]}")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, indices: torch.Tensor) -> "TensorData":
        return TensorData(self.images[indices], self.labels[indices])

    def to(self, device) -> "TensorData":
        return TensorData(self.images.to(device), self.labels.to(device))


def load_mnist(train: bool = True, root: str | os.PathLike | None = None,
               download: Optional[bool] = None) -> TensorData:
    """MNIST through ``torchvision.datasets.MNIST``, decoded once into normalised tensors.

    root: where ``MNIST/raw/`` lives; default :func:`default_data_root`.
    download: ``None`` downloads only when the files are missing; ``False`` never downloads.
    Raises one ``RuntimeError`` naming the root when the files are missing and cannot be fetched.
    Decoded tensors are cached per process; the returned object holds fresh copies.
    """
    root = Path(root).expanduser() if root is not None else default_data_root()
    images, labels = _load_mnist_cached(bool(train), str(root.resolve()), download)
    return TensorData(images.clone(), labels.clone())


@functools.lru_cache(maxsize=4)
def _load_mnist_cached(train: bool, root: str, download: Optional[bool]):
    root = Path(root)
    if download is None:
        download = not _has_raw_files(root)
    try:
        ds = _torchvision_mnist(root, train, download=False)
    except RuntimeError:
        ds = None
    if ds is None and download:
        try:
            ds = _torchvision_mnist(root, train, download=True)
        except Exception as err:  # no network, a proxy, a full disk: all end the same way for the user
            raise RuntimeError(_missing_message(root, f"the download failed ({type(err).__name__}: {err})")) from err
    if ds is None:
        raise RuntimeError(_missing_message(root, "downloading is switched off"))
    images = ds.data.unsqueeze(1).float().div_(255.0)
    images = images.sub_(MNIST_MEAN).div_(MNIST_STD)
    return images, ds.targets.long().clone()


def _missing_message(root: Path, why: str) -> str:
    return (f"MNIST was not found under {root} (looked for {root / 'MNIST' / 'raw'}/{{{', '.join(MNIST_FILES)}}}) "
            f"and {why}. Fix: set KDTOOLS_DATA to a folder that holds MNIST/raw/ with the four original IDX files, "
            f"or run once with internet access so torchvision can download them.")


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation, back to pixel intensities in [0, 1] (for plotting)."""
    return images * MNIST_STD + MNIST_MEAN


def stratified_subset(labels: torch.Tensor, per_class: int | None = None, fraction: float | None = None,
                      seed: int = 0) -> torch.Tensor:
    """Indices of a class-balanced random subset: ``per_class`` examples of each class, or ``fraction`` of each.

    The result is sorted so that the subset keeps the original order of the data set.
    """
    if (per_class is None) == (fraction is None):
        raise ValueError(f"give exactly one of per_class and fraction, got per_class={per_class!r}, "
                         f"fraction={fraction!r}")
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class!r}")
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        take = per_class if per_class is not None else max(1, round(fraction * len(members)))
        if take > len(members):
            raise ValueError(f"per_class={per_class} but class {int(cls)} has only {len(members)} examples")
        chosen.append(members[torch.randperm(len(members), generator=gen)[:take]])
    return torch.cat(chosen).sort().values


Batch = tuple  # (images, labels, indices)


class TensorLoader:
    """Batches sliced from in-memory tensors; yields ``(images, labels, indices)``.

    ``indices`` are positions in the data set, so per-example caches (e.g. teacher logits) can be
    looked up. Shuffling uses its own generator seeded with ``seed + epoch``, which makes every epoch's
    order reproducible and independent of any other random call. ``augment`` (e.g. :func:`random_shift`)
    is applied to each batch with a generator derived from the same seed.
    """

    def __init__(self, data: TensorData, batch_size: int = 128, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.augment = augment
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.data)
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        self.epoch += 1
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            images = self.data.images[idx]
            if self.augment is not None:
                images = self.augment(images, gen)
            yield images, self.data.labels[idx], idx


def random_shift(max_shift: int = 2) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Augmentation of Hinton et al. (2015): translate each image by up to ``max_shift`` pixels.

    Shifted-in pixels take the background value (the minimum of the batch, i.e. normalised black).
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")

    def shift(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if max_shift == 0:
            return images
        b, _, h, w = images.shape
        pad = max_shift
        background = images.amin()
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), value=float(background))
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None, :])  # [B, H]
        cols = (dx[:, None] + torch.arange(w)[None, :])  # [B, W]
        bidx = torch.arange(b)[:, None, None]
        return padded[bidx, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)

    return shift


def mnist_loaders(batch_size: int = 128, seed: int = 0, train_subset: int | None = None,
                  test_subset: int | None = None, augment=None, root=None):
    """Train and test :class:`TensorLoader` s on MNIST; ``*_subset`` = examples per class (stratified)."""
    train, test = load_mnist(True, root), load_mnist(False, root)
    if train_subset is not None:
        train = train.subset(stratified_subset(train.labels, per_class=train_subset, seed=seed))
    if test_subset is not None:
        test = test.subset(stratified_subset(test.labels, per_class=test_subset, seed=seed))
    return (TensorLoader(train, batch_size, shuffle=True, seed=seed, augment=augment),
            TensorLoader(test, 1000, shuffle=False))
