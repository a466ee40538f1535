r"""Semantic segmentation of the multi-digit canvases, and its distillation (lesson
``notebooks/06_applications/segmentation_kd.ipynb``).

The canvases are those of the detection lesson (:mod:`kdtools.applications.canvases`); the target is the per-pixel
class map (0 = background, ``1 + digit`` on the digit's ink), 11 classes. :class:`Segmenter` is a small
encoder-decoder (two stride-2 stages, a dilated convolution, two upsampling stages with skip connections) whose
output is a ``[B, 11, 64, 64]`` class map at the input's resolution; the teacher and the student differ only in
width. :func:`train_segmenter` trains one with pixel cross-entropy, plus ``λ_pi`` times the pixel-wise
distillation loss of Liu et al. (2019, :func:`kdtools.losses.pixelwise_kd_loss`) when given the teacher's maps.
:func:`mean_iou` is torchmetrics' ``MulticlassJaccardIndex``.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import pixelwise_kd_loss
from ._loop import run_epochs
from .canvases import DigitCanvases, make_canvases

__all__ = ["N_CLASSES", "Segmenter", "class_maps", "mean_iou", "train_segmenter", "build_segmenter_teacher",
           "load_segmenter_teacher", "make_canvases", "pixel_entropy", "TEACHER_WIDTH", "STUDENT_WIDTH"]

N_CLASSES = 11  # background + 10 digits
TEACHER_WIDTH, STUDENT_WIDTH = 16, 4


def _conv(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Segmenter(nn.Module):
    """Encoder-decoder of ``width`` channels: 64² → 32² → 16² (+ a dilated conv for context) → 32² → 64², each
    upsampling stage concatenating the encoder's map of that size (U-Net style skips), then a 1×1 classifier."""

    def __init__(self, width: int = TEACHER_WIDTH, n_classes: int = N_CLASSES):
        super().__init__()
        w = width
        self.stem = _conv(1, w)
        self.down1 = _conv(w, 2 * w, stride=2)
        self.down2 = nn.Sequential(_conv(2 * w, 4 * w, stride=2), _conv(4 * w, 4 * w, dilation=2))
        self.up1 = _conv(4 * w + 2 * w, 2 * w)
        self.up2 = _conv(2 * w + w, w)
        self.classifier = nn.Conv2d(w, n_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x64 = self.stem(images)
        x32 = self.down1(x64)
        x16 = self.down2(x32)
        y32 = self.up1(torch.cat([F.interpolate(x16, scale_factor=2.0, mode="bilinear", align_corners=False), x32], 1))
        y64 = self.up2(torch.cat([F.interpolate(y32, scale_factor=2.0, mode="bilinear", align_corners=False), x64], 1))
        return self.classifier(y64)


@torch.no_grad()
def class_maps(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``model``'s logits ``[N, C, H, W]`` on ``images``, in eval mode, batch by batch."""
    model.eval()
    return torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def mean_iou(logits_or_predictions: torch.Tensor, masks: torch.Tensor) -> float:
    """mIoU in %: torchmetrics' ``MulticlassJaccardIndex(num_classes=11, average="macro")``, i.e. for each of the
    11 classes (background included) intersection / union counted over ALL pixels of all images, then the mean of
    the 11 class IoUs. Takes logits ``[N, C, H, W]`` or predicted classes ``[N, H, W]``."""
    from torchmetrics.classification import MulticlassJaccardIndex

    predictions = logits_or_predictions
    if predictions.dim() == 4:
        predictions = predictions.argmax(1)
    if predictions.shape != masks.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and masks {tuple(masks.shape)} must match")
    metric = MulticlassJaccardIndex(num_classes=N_CLASSES, average="macro")
    return 100.0 * float(metric(predictions, masks))


def pixel_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of the per-pixel class distribution, ``[N, H, W]``."""
    log_p = logits.log_softmax(1)
    return -(log_p.exp() * log_p).sum(1)


def train_segmenter(model: Segmenter, train: DigitCanvases, epochs: int = 6, batch_size: int = 32,
                    lr: float = 3e-3, seed: int = 0, teacher_logits: Optional[torch.Tensor] = None,
                    kd_weight: float = 0.0, temperature: float = 1.0, valid: Optional[DigitCanvases] = None,
                    progress: bool = False) -> Dict:
    """Train ``model`` on ``train`` with pixel cross-entropy (mean over pixels) + ``kd_weight`` (λ_pi) ×
    :func:`pixelwise_kd_loss` against ``teacher_logits`` (the teacher's ``[N, 11, H, W]`` maps of ``train``,
    computed once), with ``reduction="mean"``: the KL averaged over the batch's pixels, like the CE (the authors'
    reduction sums over the images of a GPU's batch, so their λ_pi = 10 multiplies that mean by 10 × images per
    GPU). AdamW, cosine schedule to 0. Returns ``{"loss", "valid_mIoU", "best_epoch", "best_state",
    "seconds"}``: with ``valid``, its mIoU after each epoch and the weights of the best one (ties: the later)."""
    from ..runtime import seed_everything

    if kd_weight > 0 and teacher_logits is None:
        raise ValueError(f"kd_weight={kd_weight} needs teacher_logits, got None")
    if teacher_logits is not None and teacher_logits.shape[0] != len(train):
        raise ValueError(f"teacher_logits must hold one map per training canvas ({len(train)}), "
                         f"got shape {tuple(teacher_logits.shape)}")
    seed_everything(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)

    def batch_loss(idx):
        logits = model(train.images[idx])
        loss = F.cross_entropy(logits, train.masks[idx])
        if kd_weight > 0:
            loss = loss + kd_weight * pixelwise_kd_loss(logits, teacher_logits[idx], temperature, reduction="mean")
        return loss

    def validate():
        return mean_iou(class_maps(model, valid.images), valid.masks)

    return run_epochs(model, len(train), batch_loss, optimizer, epochs=epochs, batch_size=batch_size, seed=seed,
                      validate=validate if valid is not None else None, score_name="mIoU", progress=progress)




def build_segmenter_teacher(width: int = TEACHER_WIDTH, n_train: int = 3000, epochs: int = 10,
                            batch_size: int = 32, lr: float = 3e-3, seed: int = 0, n_valid: int = 300,
                            n_test: int = 1000):
    """Zoo builder (:mod:`kdtools.zoo.artifacts`) of the lesson's teacher: a :class:`Segmenter` of ``width``
    trained on ``n_train`` canvases, keeping its best-validation epoch; returns ``(float16 state_dict, info)``."""
    torch.set_num_threads(1)
    train, valid, test = (make_canvases(s, n, seed=seed) for s, n in
                          (("train", n_train), ("valid", n_valid), ("test", n_test)))
    model = Segmenter(width)
    history = train_segmenter(model, train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, valid=valid,
                              progress=True)
    model.load_state_dict(history.pop("best_state"))
    # scored after the float16 round trip, i.e. as shipped
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    info = {"width": width, "history": history, "test_canvases": n_test,
            "test_mIoU": round(mean_iou(class_maps(model, test.images), test.masks), 2),
            "parameters": sum(p.numel() for p in model.parameters())}
    return state, info


def load_segmenter_teacher(name: str = "canvas-segmenter-teacher") -> Segmenter:
    """The shipped teacher segmenter ``name`` (checksum verified), in float32 and eval mode."""
    from ..zoo.artifacts import load_network

    return load_network(name, lambda info: Segmenter(info["width"]))[0]
