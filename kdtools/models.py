"""Teacher and student networks of the course (MNIST, and the CIFAR ResNets of the CRD/DKD benchmarks).
Every model is a plain ``nn.Module`` that returns logits.

Intermediate features are read with :mod:`kdtools.features` (forward hooks on named layers), so
nothing here returns features or needs editing for a distillation method.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple, Union

import torch
from torch import nn


class MLP(nn.Module):
    """Fully connected ReLU network on flattened 28x28 images, as in Hinton et al. (2015).

    hidden: widths of the hidden layers, e.g. ``(1200, 1200)`` for the paper's teacher.
    dropout: dropout on every hidden layer (the paper's teacher used dropout).
    input_dropout: dropout on the input pixels (Hinton et al. 2012 used 0.2).
    Layers are named ``fc1, fc2, ..., head`` and activations ``act1, act2, ...`` for hooks.
    """

    def __init__(self, hidden: Sequence[int] = (800, 800), num_classes: int = 10, dropout: float = 0.0,
                 input_dropout: float = 0.0, in_features: int = 28 * 28):
        super().__init__()
        if len(hidden) == 0 or any(h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {list(hidden)}")
        for name, p in (("dropout", dropout), ("input_dropout", input_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        self.hidden = tuple(hidden)
        layers: Dict[str, nn.Module] = {"flatten": nn.Flatten()}
        if input_dropout > 0:
            layers["input_drop"] = nn.Dropout(input_dropout)
        width = in_features
        for i, h in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(width, h)
            layers[f"act{i}"] = nn.ReLU()
            if dropout > 0:
                layers[f"drop{i}"] = nn.Dropout(dropout)
            width = h
        layers["head"] = nn.Linear(width, num_classes)
        self.net = nn.Sequential()
        for name, module in layers.items():
            self.net.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """A small VGG-style CNN for 28x28 inputs with width and depth knobs.

    width: channels of the first stage; stage ``s`` has ``width * 2**s`` channels.
    depth: conv layers per stage (each 3x3 + BatchNorm + ReLU); there are three stages, the
        first two end with 2x2 max-pooling (28 -> 14 -> 7).
    Named blocks ``stage1, stage2, stage3`` (feature maps for feature-based KD), ``pool``
    (global average) and ``head`` (linear classifier); ``embedding`` is the pooled vector.
    """

    def __init__(self, width: int = 16, depth: int = 1, num_classes: int = 10, in_channels: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be >= 1, got width={width}, depth={depth}")
        self.width, self.depth = width, depth
        channels = in_channels
        for stage in range(3):
            out = width * 2 ** stage
            block = nn.Sequential()
            for i in range(depth):
                block.add_module(f"conv{i + 1}", nn.Conv2d(channels, out, 3, padding=1, bias=False))
                block.add_module(f"bn{i + 1}", nn.BatchNorm2d(out))
                block.add_module(f"relu{i + 1}", nn.ReLU(inplace=False))
                channels = out
            if stage < 2:
                block.add_module("pool", nn.MaxPool2d(2))
            self.add_module(f"stage{stage + 1}", block)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embedding = nn.Identity()  # a named hook point for the pooled feature vector
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.head(self.drop(self.embedding(self.pool(x))))


class BasicBlock(nn.Module):
    """The two-convolution residual block of He et al. (2016): 3x3 conv, BN, ReLU, 3x3 conv, BN, plus the input
    (through a 1x1 conv and BN when the width or the resolution changes), then ReLU. Named ``conv1, bn1, conv2,
    bn2, shortcut, relu``; hook ``bn2`` for the pre-activation feature some methods (e.g. OFD) distil."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(channels))
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNets of the CRD code base (RepDistiller's ``models/resnet.py``) and mdistiller, on 32x32 RGB
    inputs: a 3x3 stem of ``widths[0]`` channels, three stages of ``(depth - 2) / 6`` basic blocks with
    ``widths[1:]`` channels (strides 1, 2, 2: 32 -> 16 -> 8 pixels), global average pooling and a linear head.

    ``resnet8x4`` / ``resnet32x4`` (widths 32-64-128-256) are the benchmark's canonical student / teacher pair;
    with 100 classes they have 1.23 M and 7.43 M parameters, as the CRD paper lists. Initialisation as theirs:
    Kaiming normal (fan-out) for convolutions, BN weights 1 and biases 0, PyTorch's default for the head.
    Named parts ``stem, stage1, stage2, stage3, pool, embedding, head`` for hooks (``stage3`` gives the 8x8
    feature map, ``embedding`` the pooled vector), the names :class:`SmallCNN` uses, so every method of
    :mod:`kdtools.protocol` hooks the same layer names on both families.
    Where theirs differs: a fixed ``AvgPool2d(8)`` instead of global average pooling (the same on 32x32 inputs),
    ``forward(x, is_feat=True)`` returning features (here: hooks, :mod:`kdtools.features`), the names
    ``layer1-3`` and ``fc`` (here ``stage1-3`` and ``head``), and 10 classes by default (here 100, the
    benchmark's).
    """

    input_shape = (3, 32, 32)

    def __init__(self, depth: int = 32, widths: Sequence[int] = (16, 16, 32, 64), num_classes: int = 100):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 56, 110, ...), got {depth}")
        if len(widths) != 4 or any(w < 1 for w in widths):
            raise ValueError(f"widths must be 4 positive channel counts (stem, stage 1, 2, 3), got {list(widths)}")
        blocks = (depth - 2) // 6
        self.depth, self.widths = depth, tuple(widths)
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=False))
        channels = widths[0]
        for stage, (width, stride) in enumerate(zip(widths[1:], (1, 2, 2)), start=1):
            layers = []
            for i in range(blocks):
                layers.append(BasicBlock(channels, width, stride if i == 0 else 1))
                channels = width
            self.add_module(f"stage{stage}", nn.Sequential(*layers))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embedding = nn.Identity()  # a named hook point for the pooled feature vector
        self.head = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be a batch of RGB images [B, 3, H, W], got shape {list(x.shape)}")
        return self.head(self.embedding(self.pool(self.stage3(self.stage2(self.stage1(self.stem(x)))))))


# Named architectures used across the course; notebooks and the zoo build models by name.
ARCHITECTURES: Dict[str, Callable[..., nn.Module]] = {
    "mlp-1200x2": lambda **kw: MLP((1200, 1200), **kw),   # Hinton et al. (2015) teacher
    "mlp-800x2": lambda **kw: MLP((800, 800), **kw),      # Hinton et al. (2015) student
    "mlp-300x2": lambda **kw: MLP((300, 300), **kw),
    "mlp-100x2": lambda **kw: MLP((100, 100), **kw),
    "mlp-30x2": lambda **kw: MLP((30, 30), **kw),
    "mlp-256x1": lambda **kw: MLP((256,), **kw),          # LUPI's student on the 7x7 view (in_features=49)
    "mlp-64x1": lambda **kw: MLP((64,), **kw),            # model compression's mimic student
    "cnn-32x2": lambda **kw: SmallCNN(width=32, depth=2, **kw),  # the course's CNN teacher
    "cnn-16x1": lambda **kw: SmallCNN(width=16, depth=1, **kw),
    "cnn-8x1": lambda **kw: SmallCNN(width=8, depth=1, **kw),
    "cnn-4x1": lambda **kw: SmallCNN(width=4, depth=1, **kw),   # the shared protocol's student
    "cnn-4x3": lambda **kw: SmallCNN(width=4, depth=3, **kw),   # thinner and deeper than cnn-32x2 (FitNets)
    "cnn-2x1": lambda **kw: SmallCNN(width=2, depth=1, **kw),   # the teacher-assistant lesson's very small student
    # CIFAR-100 benchmark of CRD / DKD (32x32 RGB): the plain family and the 4x wider pair
    **{f"resnet{d}": (lambda d: lambda **kw: CifarResNet(d, (16, 16, 32, 64), **kw))(d) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": lambda **kw: CifarResNet(8, (32, 64, 128, 256), **kw),    # the canonical student
    "resnet32x4": lambda **kw: CifarResNet(32, (32, 64, 128, 256), **kw),  # the canonical teacher
}


#: the architectures of :data:`ARCHITECTURES` that take 32x32 RGB images (CIFAR) and default to 100 classes;
#: every other one takes 28x28 single-channel images (MNIST) and defaults to 10
CIFAR_ARCHITECTURES = frozenset(name for name in ARCHITECTURES if name.startswith("resnet"))


def input_shape(model: Union[str, nn.Module]) -> Tuple[int, int, int]:
    """The ``(C, H, W)`` of one input image of ``model`` (an architecture name or a network): 32x32 RGB for
    the CIFAR ResNets, a 28x28 MNIST digit otherwise."""
    if isinstance(model, str):
        return (3, 32, 32) if model in CIFAR_ARCHITECTURES else (1, 28, 28)
    return tuple(getattr(model, "input_shape", (1, 28, 28)))


def build_model(name: str, **kwargs) -> nn.Module:
    """Build one of :data:`ARCHITECTURES` by name, e.g. ``build_model("mlp-800x2", dropout=0.2)``."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](**kwargs)
