"""CIFAR-100 as in-memory tensors, for the benchmark of the CRD and DKD papers (ResNet32x4 -> ResNet8x4).

The files are torchvision's (``cifar-100-python/train`` and ``test``, the pickled arrays of the official
archive), read here without torchvision so that tests can use a small stand-in folder of the same layout.
Nothing downloads unless asked: ``load_cifar100(download=True)`` lets torchvision fetch the archive and check its
md5. Images are normalised with the per-channel mean and standard deviation the CRD code base uses, and
:func:`random_crop_flip` is its training augmentation (4-pixel padded random crops and horizontal flips).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .data import TensorData, default_data_root

__all__ = ["CIFAR100_MEAN", "CIFAR100_STD", "CIFARNotFoundError", "load_cifar100", "random_crop_flip"]

# RepDistiller's dataset/cifar100.py (also mdistiller's): the training set's per-channel mean and std
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
_FOLDER = "cifar-100-python"
_SPLIT_SIZES = {"train": 50_000, "test": 10_000}


class CIFARNotFoundError(RuntimeError):
    """The CIFAR-100 files are missing and were not (or could not be) downloaded."""


def _read_split(folder: Path, split: str):
    with open(folder / split, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    data, labels = entry.get("data"), entry.get("fine_labels")
    if data is None or labels is None:
        raise CIFARNotFoundError(f"{folder / split} is not a CIFAR-100 split: it has no 'data' and 'fine_labels'")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != data.shape[0]:
        raise CIFARNotFoundError(f"{folder / split} holds data of shape {list(data.shape)} and {len(labels)} labels; "
                                 f"expected [N, 3072] and N labels")
    return data, labels


def load_cifar100(train: bool = True, root: str | os.PathLike | None = None, download: bool = False,
                  expected_size: Optional[int] = None) -> TensorData:
    """CIFAR-100's training (50,000) or test (10,000) split as ``TensorData``: images ``[N, 3, 32, 32]``
    normalised with :data:`CIFAR100_MEAN` / :data:`CIFAR100_STD`, fine labels ``[N]`` in 0..99.

    root: the folder that holds ``cifar-100-python/``; default ``$KDTOOLS_DATA``
    (:func:`kdtools.data.default_data_root`). download: fetch the official archive through torchvision (md5
    checked) when the files are missing; off by default, and never used by the course's tests. expected_size:
    the number of images the split must have; default the official count (50,000 or 10,000). A small stand-in
    folder of the same layout (the tests') passes its own size.
    """
    root = Path(root).expanduser() if root is not None else default_data_root()
    split = "train" if train else "test"
    folder = root / _FOLDER
    if not (folder / split).is_file():
        if not download:
            raise CIFARNotFoundError(
                f"CIFAR-100 was not found: {folder / split} is missing. Fix: put torchvision's cifar-100-python/ "
                f"folder under {root} (or set KDTOOLS_DATA), or call load_cifar100(download=True) with internet "
                f"access.")
        from torchvision.datasets import CIFAR100

        CIFAR100(str(root), train=train, download=True)
    data, labels = _read_split(folder, split)
    size = _SPLIT_SIZES[split] if expected_size is None else expected_size
    if data.shape[0] != size:
        raise CIFARNotFoundError(f"{folder / split} has {data.shape[0]} images, expected {size} (a truncated or "
                                 f"foreign file; pass expected_size for a deliberate stand-in)")
    images = torch.from_numpy(data).view(-1, 3, 32, 32).float().div_(255.0)
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    return TensorData((images - mean) / std, torch.as_tensor(labels, dtype=torch.long))


def random_crop_flip(padding: int = 4) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """The CRD code base's CIFAR augmentation for :class:`kdtools.data.TensorLoader`: pad each image by
    ``padding`` pixels of black (0 before normalisation, so ``-mean/std`` after it), crop a random 32x32 window,
    and flip it horizontally with probability 1/2. Deterministic given the loader's generator."""
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    black = (-torch.tensor(CIFAR100_MEAN) / torch.tensor(CIFAR100_STD)).view(1, 3, 1, 1)

    def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got shape {list(images.shape)}")
        b, c, h, w = images.shape
        padded = black.expand(b, c, h + 2 * padding, w + 2 * padding).clone()
        padded[:, :, padding:padding + h, padding:padding + w] = images
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen)
        flip = torch.rand(b, generator=gen) < 0.5
        rows = dy[:, None] + torch.arange(h)[None, :]                                # [B, H]
        cols = dx[:, None] + torch.arange(w)[None, :]                                # [B, W]
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        index = torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None]
        return padded[index[0], index[1], rows[:, None, :, None], cols[:, None, None, :]]

    return augment
