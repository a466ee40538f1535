r"""Multi-digit canvases built from MNIST: the detection and segmentation data of Module 6.

Each canvas is a ``size × size`` black image holding 1 to ``max_digits`` MNIST digits, each resized to a side
drawn uniformly from ``scales`` and pasted at a random place where its box overlaps no other digit's box. The
targets are, per digit, its class and its **tight** box (the smallest axis-aligned box holding the resized digit's
ink, pixels ≥ ``INK``), as ``(x1, y1, x2, y2)`` pixel coordinates with ``x2, y2`` exclusive (a box of width
``x2 − x1``), and a per-pixel class map (0 = background, ``1 + digit`` on the digit's ink) for segmentation.

Everything is deterministic: each split draws its digits from its own part of MNIST (``train``: training images
0–49,999; ``valid``: 50,000–59,999; ``test``: the MNIST test set) with a generator seeded by the split's name
and ``seed``, so the same call gives the same canvases on every machine, and no test digit is ever seen in
training.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import MNIST_MEAN, MNIST_STD, load_mnist

__all__ = ["DigitCanvases", "make_digit_canvases", "make_canvases", "INK", "SPLITS"]

INK = 0.3  # intensity in [0, 1] above which a resized digit's pixel is ink (its box and its mask)
# which MNIST images each split may use, and the seed offset that makes the splits' draws independent
SPLITS = {"train": (True, 0, 50_000, 0), "valid": (True, 50_000, 60_000, 1), "test": (False, 0, 10_000, 2)}


@dataclass
class DigitCanvases:
    """Canvases with their targets, all tensors, padded to ``max_digits`` objects per canvas.

    images: ``[N, 1, S, S]`` float in [0, 1] (not normalised; black background = 0).
    boxes: ``[N, K, 4]`` float ``(x1, y1, x2, y2)`` in pixels; padding rows are 0.
    labels: ``[N, K]`` int64 digit classes, ``-1`` on padding rows.
    masks: ``[N, S, S]`` int64 pixel classes: 0 background, ``1 + digit`` on ink.
    """

    images: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, indices) -> "DigitCanvases":
        return DigitCanvases(self.images[indices], self.boxes[indices], self.labels[indices], self.masks[indices])

    def targets(self, i: int) -> dict:
        """Canvas ``i``'s objects in the format of torchvision and torchmetrics: ``{"boxes", "labels"}``."""
        keep = self.labels[i] >= 0
        return {"boxes": self.boxes[i][keep], "labels": self.labels[i][keep]}


def _check_args(split, n, size, scales, max_digits):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not (isinstance(max_digits, int) and max_digits >= 1):
        raise ValueError(f"max_digits must be a positive int, got {max_digits!r}")
    low, high = scales
    if not (isinstance(low, int) and isinstance(high, int) and 8 <= low <= high <= size):
        raise ValueError(f"scales must be two ints with 8 <= low <= high <= size = {size}, got {scales!r}")
    if high * max_digits > 2 * size:
        raise ValueError(f"{max_digits} digits of side up to {high} do not fit without overlap on a {size}-pixel "
                         f"canvas; lower max_digits or scales, got scales={scales!r}, size={size}")


def make_digit_canvases(split: str = "train", n: int = 1000, size: int = 64, scales=(16, 36), max_digits: int = 3,
                        seed: int = 0, root=None) -> DigitCanvases:
    """``n`` canvases of ``split`` ('train', 'valid' or 'test'); see the module docstring for what they hold.

    The number of digits per canvas is uniform in 1..``max_digits``; a digit that finds no free place in 50
    tries is left out (rare with the defaults); the first always fits, so a canvas holds at least one digit.
    The default digit sides, 16–36 pixels, give ink boxes of about 11–26 pixels on the 64-pixel canvas.
    Results are cached per process.
    """
    _check_args(split, n, size, tuple(scales), max_digits)
    made = _make_cached(split, n, size, tuple(scales), max_digits, seed, None if root is None else str(root))
    return DigitCanvases(*(t.clone() for t in made))


def make_canvases(split: str, n: int, seed: int = 0) -> DigitCanvases:
    """The canvases of Module 6's detection and segmentation lessons: :func:`make_digit_canvases` with its defaults
    (64×64 pixels, 1–3 digits of sides 16–36 pixels)."""
    return make_digit_canvases(split, n, seed=seed)


@functools.lru_cache(maxsize=8)
def _make_cached(split, n, size, scales, max_digits, seed, root):
    train, start, stop, offset = SPLITS[split]
    mnist = load_mnist(train=train, root=root)
    pool_images = mnist.images[start:stop].mul(MNIST_STD).add(MNIST_MEAN).clamp(0, 1)  # back to [0, 1] ink
    pool_labels = mnist.labels[start:stop]
    gen = torch.Generator().manual_seed(10_007 * seed + 101 * offset + 17)
    images = torch.zeros(n, 1, size, size)
    boxes = torch.zeros(n, max_digits, 4)
    labels = torch.full((n, max_digits), -1, dtype=torch.long)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        wanted = int(torch.randint(1, max_digits + 1, (1,), generator=gen))
        placed = []
        for _ in range(wanted):
            pick = int(torch.randint(len(pool_labels), (1,), generator=gen))
            side = int(torch.randint(scales[0], scales[1] + 1, (1,), generator=gen))
            digit = F.interpolate(pool_images[pick][None], size=(side, side), mode="bilinear",
                                  align_corners=False, antialias=True)[0, 0]
            ink = digit >= INK
            rows, cols = ink.any(1).nonzero().flatten(), ink.any(0).nonzero().flatten()
            if len(rows) == 0:
                continue
            top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            digit, ink = digit[top:bottom, left:right], ink[top:bottom, left:right]
            height, width = digit.shape
            for _ in range(50):
                y = int(torch.randint(size - height + 1, (1,), generator=gen))
                x = int(torch.randint(size - width + 1, (1,), generator=gen))
                box = (x, y, x + width, y + height)
                if all(_disjoint(box, other) for other in placed):
                    break
            else:
                continue
            k = len(placed)
            placed.append(box)
            region = images[i, 0, y:y + height, x:x + width]
            torch.maximum(region, digit, out=region)
            masks[i, y:y + height, x:x + width][ink] = 1 + int(pool_labels[pick])
            boxes[i, k] = torch.tensor(box, dtype=torch.float32)
            labels[i, k] = pool_labels[pick]
    return images, boxes, labels, masks


def _disjoint(a, b) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
