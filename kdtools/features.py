"""Read intermediate activations of any ``nn.Module`` by layer name, through forward hooks.

Feature-based distillation needs the student's and the teacher's hidden representations. Following
torchdistill, we never edit a model class to return them: we hook the named sub-modules, so a
torchvision model works unchanged::

    with FeatureExtractor(model, ["stage2", "stage3"]) as features:
        logits = model(x)
    features["stage2"]          # the output of model.stage2 in that forward pass
"""
from __future__ import annotations

import difflib
from typing import Dict, Iterable, List

import torch
from torch import nn


def layer_names(model: nn.Module) -> List[str]:
    """Every hookable sub-module name of ``model`` (the names ``model.named_modules()`` gives)."""
    return [name for name, _ in model.named_modules() if name]


class FeatureExtractor:
    """Context manager that records the outputs of the named layers at every forward pass.

    layers: names from :func:`layer_names`, e.g. ``"layer3"`` or ``"layer3.1.conv2"``.
    detach: store detached outputs (for a frozen teacher); keep ``False`` for a student so the
        features carry gradients into the distillation loss.
    The mapping holds the last forward pass's outputs; hooks are removed on exit.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], detach: bool = False):
        if isinstance(layers, str):
            layers = [layers]
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("layers must name at least one layer, got an empty list")
        modules = dict(model.named_modules())
        unknown = [name for name in self.layers if name not in modules or not name]
        if unknown:
            valid = layer_names(model)
            hints = {name: difflib.get_close_matches(name, valid, n=3) for name in unknown}
            hint_text = "; ".join(f"{n!r}: did you mean {', '.join(map(repr, h))}?" for n, h in hints.items() if h)
            raise ValueError(f"unknown layer name(s) {unknown} for {type(model).__name__}. "
                             f"{hint_text + '. ' if hint_text else ''}Valid names: {', '.join(valid)}")
        self.model = model
        self.detach = detach
        self.outputs: Dict[str, torch.Tensor] = {}
        self._handles: list = []
        self._modules = {name: modules[name] for name in self.layers}

    def _hook(self, name: str):
        def record(module, inputs, output):
            self.outputs[name] = output.detach() if self.detach else output
        return record

    def __enter__(self) -> "FeatureExtractor":
        self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def attach(self) -> None:
        if not self._handles:
            self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self._modules.items()]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clear(self) -> None:
        self.outputs = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.layers:
            raise KeyError(f"{name!r} is not hooked; hooked layers: {self.layers}")
        if name not in self.outputs:
            raise KeyError(f"no output recorded for {name!r} yet: run a forward pass inside the `with` block")
        return self.outputs[name]

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __contains__(self, name) -> bool:
        return name in self.outputs

    def values(self) -> List[torch.Tensor]:
        """The recorded outputs in the order the layers were named."""
        return [self[name] for name in self.layers]


@torch.no_grad()
def extract(model: nn.Module, layers: Iterable[str], x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """One-shot convenience: run ``model(x)`` in eval mode and return the named layers' outputs."""
    was_training = model.training
    model.eval()
    try:
        with FeatureExtractor(model, layers, detach=True) as features:
            model(x)
            return {name: features[name] for name in features.layers}
    finally:
        model.train(was_training)
