"""Spatial alignment of two feature maps (private)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pool_to_common_size(a: torch.Tensor, b: torch.Tensor):
    """Average-pool whichever of two ``[B, C, H, W]`` maps is larger to the smaller size.

    The authors' code (AT, NST, FSP in RepDistiller) pools the larger map with
    ``adaptive_avg_pool2d`` to ``(H, H)`` of the smaller one, assuming square maps; here
    each spatial axis is pooled to the minimum of the two, which is the same on square maps.
    """
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    if tuple(a.shape[-2:]) != size:
        a = F.adaptive_avg_pool2d(a, size)
    if tuple(b.shape[-2:]) != size:
        b = F.adaptive_avg_pool2d(b, size)
    return a, b
