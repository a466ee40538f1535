"""The few collective operations the course's training needs when ``torchrun`` starts several processes.

Every function works unchanged in a single process (no process group): it then returns its input, so the code
that calls it is the same on one CPU, one GPU or many. The process group is created by :func:`init_from_env`,
from the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ...): NCCL when
CUDA is available, Gloo otherwise.

The batch of a distributed step is *global*: :class:`~kdtools.data.TensorLoader` with ``shard=(rank, world)``
gives each process a contiguous slice of the same global batch, so that the ranks' slices, gathered in rank order,
are exactly the batch a single process would see (:func:`gather_rows`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on the process that logs, writes records and saves checkpoints (rank 0, or the only one)."""
    return rank() == 0


@dataclass(frozen=True)
class Launch:
    """Where this process stands: its global rank, the number of processes, its rank on this node, the backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_from_env(backend: Optional[str] = None) -> Launch:
    """Join the process group ``torchrun`` describes in the environment (nothing to do for a plain ``python``
    start or a group of one). ``backend``: ``"gloo"`` or ``"nccl"``; default NCCL with CUDA, else Gloo."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Launch()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Launch(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def shutdown() -> None:
    _GROUPS.clear()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


#: the default group's identity -> a second group of the same processes for the collectives of this module
_GROUPS: dict = {}


def _group():
    """A process group of its own for this module's collectives. They run inside the forward and backward passes
    (batch norm's statistics, CRD's memory banks) while DistributedDataParallel averages gradients
    asynchronously on the default group; sharing one Gloo group, the two can deadlock (seen with torch 2.3).
    Created on first use, at the same point of the same code on every rank."""
    key = id(dist.group.WORLD)
    if key not in _GROUPS:
        _GROUPS.clear()
        _GROUPS[key] = dist.new_group(backend=dist.get_backend())
    return _GROUPS[key]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every process (any picklable object; ``obj`` itself in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_group())
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over the processes (a new tensor; ``tensor`` itself in a single process)."""
    if not is_distributed():
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, group=_group())
    return total


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``[n_r, ...]`` rows, concatenated in rank order (``n_r`` may differ by process). Not
    differentiable: for indices and detached embeddings (CRD's memory bank)."""
    if not is_distributed():
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device), group=_group())
    longest = int(max(int(s) for s in sizes))
    padded = torch.zeros(longest, *tensor.shape[1:], dtype=tensor.dtype, device=tensor.device)
    padded[:tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous(), group=_group())
    return torch.cat([part[:int(size)] for part, size in zip(parts, sizes)])


def row_offset(rows: int, device=None) -> int:
    """Where this process's ``rows`` rows start in :func:`gather_rows`' result (``device``: where the collective
    runs, a CUDA device with NCCL)."""
    if not is_distributed():
        return 0
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([rows], device=device), group=_group())
    return int(sum(int(s) for s in sizes[:rank()]))


class _SummedAcrossRanks(torch.autograd.Function):
    """``all_reduce(SUM)`` with its gradient: the gradient of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, tensor):
        total = tensor.clone()
        dist.all_reduce(total, group=_group())
        return total

    @staticmethod
    def backward(ctx, grad):
        total = grad.clone()
        dist.all_reduce(total, group=_group())
        return total


class GlobalBatchNorm(nn.BatchNorm2d):
    """A ``BatchNorm2d`` whose training statistics are those of the **global** batch (all ranks' slices), so a
    network trained on K processes with K slices equals one trained on one process with the whole batch.

    ``torch.nn.SyncBatchNorm`` does the same on GPUs only; this one uses two differentiable all-reduces
    (sums and sums of squares) and works with Gloo on CPUs too. Outside a process group, or in eval mode, it is
    exactly ``BatchNorm2d``. Running statistics use the global mean and the unbiased global variance, as
    ``BatchNorm2d`` does for one process.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        if x.dim() != 4:
            raise ValueError(f"GlobalBatchNorm expects [B, C, H, W], got shape {list(x.shape)}")
        count = torch.tensor([float(x.shape[0] * x.shape[2] * x.shape[3])], dtype=x.dtype, device=x.device)
        sums = _SummedAcrossRanks.apply(torch.cat([x.sum((0, 2, 3)), count]))
        channels = x.shape[1]
        n = sums[-1]
        mean = sums[:channels] / n
        # two passes (mean, then squared deviations), as BatchNorm computes the variance: E[x²] − E[x]² loses
        # digits when the mean is large next to the spread
        centred = x - mean.view(1, channels, 1, 1)
        var = _SummedAcrossRanks.apply((centred * centred).sum((0, 2, 3))) / n  # biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * (n / (n - 1)).detach()
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        shape = (1, channels, 1, 1)
        out = centred / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def global_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm2d`` replaced (in place, weights and statistics kept) by
    :class:`GlobalBatchNorm`; returns ``module`` (a lone BatchNorm2d is returned replaced)."""
    def convert(bn: nn.BatchNorm2d) -> GlobalBatchNorm:
        new = GlobalBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        new.load_state_dict(bn.state_dict())
        new.train(bn.training)
        return new.to(next(bn.buffers(), torch.empty(0)).device)

    if type(module) is nn.BatchNorm2d:
        return convert(module)
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            setattr(module, name, convert(child))
        else:
            global_batch_norm(child)
    return module


def rank_shares(rows: int, world: int) -> List[int]:
    """How :class:`~kdtools.data.TensorLoader` splits a global batch of ``rows`` over ``world`` ranks
    (``torch.tensor_split``: the first ``rows % world`` ranks get one more)."""
    return [rows // world + (1 if r < rows % world else 0) for r in range(world)]
