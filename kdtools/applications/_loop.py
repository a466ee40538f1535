"""The epoch loop the Module 6 trainers share: shuffled mini-batches, a cosine schedule to 0, the mean loss per
epoch, and a validation score after each epoch whose best epoch's weights are kept."""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

import torch
from torch import nn


def run_epochs(model: nn.Module, n_items: int, batch_loss: Callable[[torch.Tensor], torch.Tensor],
               optimizer: torch.optim.Optimizer, *, epochs: int, batch_size: int, seed: int,
               validate: Optional[Callable[[], float]] = None, score_name: str = "score",
               lower_is_better: bool = False, stop_after: Optional[int] = None, clip_norm: Optional[float] = None,
               progress: bool = False) -> dict:
    """Train ``model`` for ``epochs`` epochs (only the first ``stop_after`` of that schedule when given) on
    ``batch_loss(indices)`` of shuffled batches of ``range(n_items)``; returns ``{"loss": [...],
    "valid_<score_name>": [...], "best_epoch", "best_state", "seconds"}``.

    The batch order comes from a generator seeded with ``seed``. ``validate()`` runs after each epoch; its score is
    rounded to 2 decimals and the weights of the best epoch are kept (ties: the later epoch). ``clip_norm`` clips
    the gradients' norm over the optimizer's parameters before each step.
    """
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * math.ceil(n_items / batch_size))
    gen = torch.Generator().manual_seed(seed)
    key = f"valid_{score_name}"
    history = {"loss": [], key: [], "best_epoch": None, "best_state": None}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    pick_best = min if lower_is_better else max
    start_time = time.perf_counter()
    for epoch in range(epochs if stop_after is None else min(stop_after, epochs)):
        model.train()
        order = torch.randperm(n_items, generator=gen)
        total = 0.0
        for start in range(0, n_items, batch_size):
            idx = order[start:start + batch_size]
            loss = batch_loss(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_norm is not None:
                nn.utils.clip_grad_norm_(params, clip_norm)
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
        history["loss"].append(round(total / n_items, 5))
        if validate is not None:
            history[key].append(round(validate(), 2))
            if history[key][-1] == pick_best(history[key]):
                history["best_epoch"] = epoch + 1
                history["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if progress:
            print(f"epoch {epoch + 1}/{epochs}: loss {history['loss'][-1]:.4f}"
                  + (f", valid {score_name} {history[key][-1]:.2f}" if validate is not None else ""))
    history["seconds"] = round(time.perf_counter() - start_time, 1)
    model.eval()
    return history
