"""MNIST as in-memory tensors, deterministic batch loaders and stratified subsets.

Per-sample Python transforms (PIL -> tensor -> normalise) dominate training time on a laptop
CPU, so the whole data set is decoded once into a float tensor and batches are sliced from it.
"""
from __future__ import annotations

import functools
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple

import torch

# The published normalisation constants (training-set pixel mean and std).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# The original IDX files: examples per split and the sha256 of every uncompressed file, as the README of the
# course's data folder lists them (torchvision's downloader only checks the md5 of the .gz archives).
MNIST_COUNTS = {"train": 60000, "t10k": 10000}
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_FILES = tuple(MNIST_SHA256)
_IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}  # uint8 data, 3 or 1 dimensions
_IDX_HEADER_BYTES = {"images": 16, "labels": 8}
_ITEM_BYTES = {"images": 28 * 28, "labels": 1}


class MNISTFileError(RuntimeError):
    """An MNIST file is missing, truncated, corrupt or belongs to the other split; the message says which."""


class MNISTNotFoundError(MNISTFileError):
    """The MNIST files are missing and could not (or must not) be downloaded."""


def default_data_root() -> Path:
    """``$KDTOOLS_DATA`` if set, else a per-user cache directory (``$XDG_CACHE_HOME/kdtools/data``)."""
    env = os.environ.get("KDTOOLS_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "kdtools" / "data"


def _split_files(train: bool) -> tuple:
    split = "train" if train else "t10k"
    return f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"


def _raw_dir(root: Path) -> Path:
    return root / "MNIST" / "raw"


def _missing_files(root: Path) -> list:
    return [name for name in MNIST_FILES if not (_raw_dir(root) / name).is_file()]


def _torchvision_mnist(root: Path, train: bool, download: bool):
    from torchvision.datasets import MNIST

    return MNIST(str(root), train=train, download=download)


# Hashing the 47 MB training images takes ~0.2 s: each file is hashed once per process and the verdict
# is kept for as long as its (path, size, mtime, inode) stay the same.
_VERIFIED: set = set()


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino


def sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 4 MiB blocks (also used by :mod:`kdtools.zoo` for checkpoints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_problem(path: Path) -> Optional[str]:
    """Why ``path`` is not the original MNIST file it is named after, or ``None`` if it is."""
    if not path.is_file():
        return "is missing"
    key = _file_key(path)
    if key in _VERIFIED:
        return None
    split, kind = path.name.split("-")[:2]
    other = "t10k" if split == "train" else "train"
    expected_count = MNIST_COUNTS[split]
    header_bytes, item_bytes = _IDX_HEADER_BYTES[kind], _ITEM_BYTES[kind]
    expected_size = header_bytes + expected_count * item_bytes
    size = key[1]
    with open(path, "rb") as handle:
        header = handle.read(header_bytes)
    if len(header) < header_bytes:
        return f"is truncated: {size:,} bytes, not even the {header_bytes}-byte IDX header ({expected_size:,} expected)"
    magic, count = struct.unpack(">II", header[:8])
    if magic != _IDX_MAGIC[kind]:
        hint = " (it looks gzip-compressed: unpack it with gunzip)" if header[:2] == b"\x1f\x8b" else ""
        return f"is not an IDX {kind} file: its header starts with 0x{magic:08x}, expected 0x{_IDX_MAGIC[kind]:08x}{hint}"
    if count == MNIST_COUNTS[other] and count != expected_count:
        return (f"holds {count:,} {kind}, the size of the {other!r} split, not the {expected_count:,} of {split!r}: "
                f"the train and t10k files are swapped (or one was copied over the other)")
    if count != expected_count:
        return f"holds {count:,} {kind} according to its header, expected {expected_count:,}"
    if size < expected_size:
        return f"is truncated: {size:,} bytes of {expected_size:,} (an interrupted download or copy?)"
    if size > expected_size:
        return f"has {size:,} bytes, {size - expected_size:,} more than the {expected_size:,} of the original"
    digest = sha256(path)
    if digest != MNIST_SHA256[path.name]:
        return (f"is corrupt: right size and header, but its sha256 is {digest}, not the original's "
                f"{MNIST_SHA256[path.name]}")
    _VERIFIED.add(key)
    return None


def verify_mnist(root: str | os.PathLike | None = None, train: Optional[bool] = None) -> None:
    """Check the MNIST files under ``root/MNIST/raw`` (size, IDX header, example count, sha256).

    train: ``True``/``False`` checks that split's two files only; ``None`` all four.
    Raises :class:`MNISTFileError` naming every bad file, what is wrong with it and the fix.
    A file that passed is not hashed again in this process while its size and modification time stay the same.
    """
    root = Path(root).expanduser() if root is not None else default_data_root()
    names = MNIST_FILES if train is None else _split_files(train)
    problems = [(name, _file_problem(_raw_dir(root) / name)) for name in names]
    problems = [(name, why) for name, why in problems if why is not None]
    if problems:
        listing = "\n".join(f"  {_raw_dir(root) / name} {why}" for name, why in problems)
        raise MNISTFileError(
            f"MNIST under {root} is not usable:\n{listing}\nFix: replace the files named above by the original "
            f"IDX files (delete them and load once with internet access, download=True, so torchvision fetches "
            f"and checks them; or copy them from a verified copy and compare `sha256sum` with kdtools.data."
            f"MNIST_SHA256), or point KDTOOLS_DATA at a folder that holds MNIST/raw/ with the four original files.")


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
               download: Optional[bool] = None, verify: bool = True) -> TensorData:
    """MNIST through ``torchvision.datasets.MNIST``, decoded once into normalised tensors.

    root: where ``MNIST/raw/`` lives; default :func:`default_data_root`.
    download: ``None`` downloads only when files are missing; ``False`` never downloads.
    verify: check the split's files with :func:`verify_mnist` first (hashed once per process).
    Raises :class:`MNISTFileError` (a ``RuntimeError``) naming the root and the cause: files missing and
    not downloadable, or present but truncated, corrupt or of the other split.
    Decoded tensors are cached per process; the returned object holds fresh copies.
    """
    root = (Path(root).expanduser() if root is not None else default_data_root()).resolve()
    missing = _missing_files(root)
    if missing:
        if download is False:
            raise MNISTNotFoundError(_missing_message(root, missing, "downloading is switched off"))
        try:
            _torchvision_mnist(root, train, download=True)
        except Exception as err:  # no network, a proxy, a full disk: all end the same way for the user
            raise MNISTNotFoundError(_missing_message(root, missing, f"the download failed ({type(err).__name__}: "
                                                                 f"{err})")) from err
    names = _split_files(train)
    if verify:
        verify_mnist(root, train=bool(train))
    # the file stats are part of the cache key: a replaced file is decoded again
    stamp = tuple(_file_key(_raw_dir(root) / name) for name in names)
    images, labels = _load_mnist_cached(bool(train), str(root), stamp)
    return TensorData(images.clone(), labels.clone())


@functools.lru_cache(maxsize=4)
def _load_mnist_cached(train: bool, root: str, stamp: tuple):
    ds = _torchvision_mnist(Path(root), train, download=False)
    images = ds.data.unsqueeze(1).float().div_(255.0)
    images = images.sub_(MNIST_MEAN).div_(MNIST_STD)
    return images, ds.targets.long().clone()


def _missing_message(root: Path, missing: list, why: str) -> str:
    return (f"MNIST was not found under {root}: {_raw_dir(root)} lacks {', '.join(missing)}, and {why}. "
            f"Fix: set KDTOOLS_DATA to a folder that holds MNIST/raw/ with the four original IDX files "
            f"({', '.join(MNIST_FILES)}), or run once with internet access so torchvision can download them.")


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

    ``shard=(rank, world_size)`` (distributed training): ``batch_size`` is the *global* batch; every process
    draws the same order and augmentation, and yields its contiguous slice of each global batch
    (``torch.tensor_split`` into ``world_size`` parts), so the slices in rank order are exactly the batches of
    one process without ``shard``. ``last_global_rows`` is the size of the global batch last yielded.
    """

    def __init__(self, data: TensorData, batch_size: int = 128, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                 shard: Tuple[int, int] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.augment = augment
        self.epoch = 0
        self.shard = None if shard is None else self._check_shard(shard)
        self.last_global_rows = 0

    def _check_shard(self, shard) -> Tuple[int, int]:
        if (not isinstance(shard, (tuple, list)) or len(shard) != 2
                or not all(isinstance(v, int) for v in shard) or not 0 <= shard[0] < shard[1]):
            raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard!r}")
        world = shard[1]
        if self.batch_size < world:
            raise ValueError(f"the global batch_size {self.batch_size} is smaller than world_size {world}: "
                             f"every process needs at least one example per step")
        tail = len(self.data) % self.batch_size
        if tail and not self.drop_last and tail < world:
            raise ValueError(f"the last global batch has {tail} examples ({len(self.data)} % {self.batch_size}), "
                             f"fewer than world_size {world}: pass drop_last=True or another batch_size")
        return tuple(shard)

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
            labels = self.data.labels[idx]
            self.last_global_rows = len(idx)
            if self.shard is not None:
                rank, world = self.shard
                rows = torch.tensor_split(torch.arange(len(idx)), world)[rank]
                images, labels, idx = images[rows], labels[rows], idx[rows]
            yield images, labels, idx


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


def load_fsdd(train: bool = True, root: str | os.PathLike | None = None, download: Optional[bool] = None,
              verify: bool = True) -> TensorData:
    """The Free Spoken Digit Dataset as ``[N, 1, 32, 32]`` log-mel "images", loaded like :func:`load_mnist`.

    The features, the split and the checks are documented in :mod:`kdtools.paradigms.audio`, which this
    forwards to (the audio code lives with Module 5, the only module that hears).
    """
    from .paradigms.audio import load_fsdd as _load_fsdd  # imported here: the audio module imports this one
    return _load_fsdd(train=train, root=root, download=download, verify=verify)


def load_digit_canvases(split: str = "train", n: int = 1000, seed: int = 0, root: str | os.PathLike | None = None,
                        **options):
    """Deterministic multi-digit detection and segmentation canvases built from MNIST (boxes, classes, pixel
    masks), for Module 6. Documented in :func:`kdtools.applications.canvases.make_digit_canvases`, which this
    forwards to (``options``: ``size``, ``scales``, ``max_digits``)."""
    from .applications.canvases import make_digit_canvases  # imported here: that module imports this one
    return make_digit_canvases(split, n, seed=seed, root=root, **options)
