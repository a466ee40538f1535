"""Training recipes of the published benchmarks, as data, so a runner (and a reader) takes them from one place.

:data:`CRD_CIFAR100` is the 240-epoch CIFAR-100 recipe that the CRD code base (RepDistiller's
``train_student.py`` defaults) and mdistiller's CIFAR-100 configs share for the ResNet32x4 -> ResNet8x4 pair:
SGD with momentum 0.9, weight decay 5e-4, batches of 64, learning rate 0.05 divided by 10 after epochs 150, 180
and 210. (Both code bases lower the rate to 0.01 for MobileNet and ShuffleNet students.) The CRD code keeps the
checkpoint of the epoch with the best *test* accuracy as its "best"; the course reports last-epoch accuracy and
chooses nothing on the test set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

__all__ = ["CifarRecipe", "CRD_CIFAR100"]


@dataclass(frozen=True)
class CifarRecipe:
    """Optimiser and schedule of a CIFAR distillation benchmark (epochs are numbered from 1, as in the CRD code)."""

    teacher: str = "resnet32x4"
    student: str = "resnet8x4"
    epochs: int = 240
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay_epochs: Tuple[int, ...] = (150, 180, 210)
    lr_decay_rate: float = 0.1
    augmentation: str = "random crop (4-pixel padding) and horizontal flip (kdtools.cifar.random_crop_flip)"

    def lr_at(self, epoch: int) -> float:
        """The learning rate of 1-based ``epoch``: ``lr · rate^k`` with ``k`` the number of decay epochs strictly
        before it (RepDistiller's ``adjust_learning_rate``: epoch 151 is the first at 0.005)."""
        if not 1 <= epoch <= self.epochs:
            raise ValueError(f"epoch must be in 1..{self.epochs}, got {epoch}")
        steps = sum(epoch > boundary for boundary in self.lr_decay_epochs)
        return self.lr * self.lr_decay_rate ** steps


#: ResNet32x4 -> ResNet8x4 on CIFAR-100 for 240 epochs (CRD, ICLR 2020; DKD, CVPR 2022)
CRD_CIFAR100 = CifarRecipe()
