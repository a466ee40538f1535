"""kdtools.recipes: the 240-epoch CIFAR-100 recipe of the CRD / DKD code bases."""
import pytest

from kdtools.models import CIFAR_ARCHITECTURES
from kdtools.recipes import CRD_CIFAR100


@pytest.mark.parametrize("epoch, lr", [(1, 0.05), (150, 0.05), (151, 0.005), (180, 0.005), (181, 0.0005),
                                       (210, 0.0005), (211, 0.00005), (240, 0.00005)])
def test_step_schedule_as_in_the_crd_code(epoch, lr):
    assert CRD_CIFAR100.lr_at(epoch) == pytest.approx(lr, rel=1e-12)


def test_recipe_names_the_canonical_pair_and_its_optimiser():
    r = CRD_CIFAR100
    assert (r.teacher, r.student) == ("resnet32x4", "resnet8x4")
    assert {r.teacher, r.student} <= CIFAR_ARCHITECTURES
    assert (r.epochs, r.batch_size, r.momentum, r.weight_decay) == (240, 64, 0.9, 5e-4)


@pytest.mark.parametrize("epoch", [0, 241, -3])
def test_epochs_outside_the_recipe_are_named(epoch):
    with pytest.raises(ValueError, match=f"epoch must be in 1..240, got {epoch}"):
        CRD_CIFAR100.lr_at(epoch)
