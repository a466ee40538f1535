"""kdtools.cifar: CIFAR-100 from torchvision's folder layout (a small stand-in here: tests never download)."""
import pickle

import numpy as np
import pytest
import torch

from kdtools.cifar import CIFAR100_MEAN, CIFAR100_STD, CIFARNotFoundError, load_cifar100, random_crop_flip
from kdtools.data import TensorLoader
from kdtools.models import build_model


def _stand_in(root, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "fine_labels": rng.integers(0, 100, n).tolist(), "coarse_labels": [0] * n}
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f)
    return folder


def test_stand_in_loads_with_the_crd_normalisation(tmp_path):
    folder = _stand_in(tmp_path)
    data = load_cifar100(train=True, root=tmp_path, expected_size=12)
    assert data.images.shape == (12, 3, 32, 32) and data.labels.dtype == torch.long
    with open(folder / "train", "rb") as f:
        raw = pickle.load(f)
    # pixel (image 3, channel 1, row 2, column 5) is byte 1 * 1024 + 2 * 32 + 5 of row 3 (channel planes, row-major)
    byte = raw["data"][3, 1024 + 2 * 32 + 5]
    assert data.images[3, 1, 2, 5].item() == pytest.approx((byte / 255 - CIFAR100_MEAN[1]) / CIFAR100_STD[1], abs=1e-6)
    assert data.labels.tolist() == raw["fine_labels"]
    assert len(load_cifar100(train=False, root=tmp_path, expected_size=5)) == 5


def test_missing_or_wrong_files_are_named(tmp_path):
    with pytest.raises(CIFARNotFoundError, match="cifar-100-python/train is missing"):
        load_cifar100(root=tmp_path)
    _stand_in(tmp_path)
    with pytest.raises(CIFARNotFoundError, match="has 12 images, expected 50000"):
        load_cifar100(root=tmp_path)


def test_a_stand_in_batch_trains_the_canonical_student(tmp_path):
    _stand_in(tmp_path)
    data = load_cifar100(root=tmp_path, expected_size=12)
    model = build_model("resnet8x4")
    loss = torch.nn.functional.cross_entropy(model(data.images), data.labels)
    loss.backward()
    assert torch.isfinite(loss) and model.head.weight.grad is not None


def test_random_crop_flip_is_a_padded_crop_or_its_mirror():
    augment = random_crop_flip(padding=4)
    images = torch.randn(16, 3, 32, 32)
    out = augment(images, torch.Generator().manual_seed(0))
    again = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and torch.equal(out, again)
    black = (-torch.tensor(CIFAR100_MEAN) / torch.tensor(CIFAR100_STD)).view(3, 1, 1)
    padded = black.expand(16, 3, 40, 40).clone()
    padded[:, :, 4:36, 4:36] = images
    for i in range(16):
        windows = [padded[i, :, y:y + 32, x:x + 32] for y in range(9) for x in range(9)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows), i
    flipped = sum(not any(torch.equal(out[i], w) for w in
                          [padded[i, :, y:y + 32, x:x + 32] for y in range(9) for x in range(9)]) for i in range(16))
    assert 0 < flipped < 16  # some images mirrored, some not


def test_random_crop_flip_in_a_loader_and_bad_input():
    augment = random_crop_flip()
    from kdtools.data import TensorData

    loader = TensorLoader(TensorData(torch.randn(8, 3, 32, 32), torch.zeros(8, dtype=torch.long)), 4,
                          shuffle=True, augment=augment)
    assert [tuple(x.shape) for x, _, _ in loader] == [(4, 3, 32, 32)] * 2
    with pytest.raises(ValueError, match="padding must be >= 0"):
        random_crop_flip(-1)
    with pytest.raises(ValueError, match=r"images must be \[B, 3, H, W\], got shape \[2, 1, 28, 28\]"):
        augment(torch.randn(2, 1, 28, 28), torch.Generator())
