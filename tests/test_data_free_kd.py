"""kdtools.paradigms.data_free (DeepInversion, DAFL, transfer sets) and kdtools.zoo.artifacts."""
import pytest
import torch

from kdtools.data import MNIST_MEAN, MNIST_STD
from kdtools.losses import batch_statistics
from kdtools.models import build_model
from kdtools.paradigms import data_free as df
from kdtools.zoo import ChecksumError
from kdtools.zoo import artifacts


def _bn_net():
    torch.manual_seed(0)
    net = build_model("cnn-4x1")
    net.train()
    with torch.no_grad():  # give the running statistics something to hold
        for _ in range(3):
            net(torch.randn(16, 1, 28, 28) * 0.5 + 0.2)
    return net.eval()


def test_bn_inputs_are_the_conv_outputs():
    net = _bn_net()
    x = torch.randn(4, 1, 28, 28)
    conv_out = {}
    handle = net.stage1.conv1.register_forward_hook(lambda m, i, o: conv_out.__setitem__("c", o))
    with df.BNInputs(net) as hooks:
        net(x)
    handle.remove()
    assert len(hooks.features) == len(df.bn_layers(net)) == 3
    assert torch.equal(hooks.features[0], conv_out["c"])
    with pytest.raises(ValueError, match="BatchNorm"):
        df.BNInputs(build_model("mlp-30x2"))


def test_bn_loss_is_zero_when_the_running_statistics_are_the_batch_ones():
    net = _bn_net()
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad(), df.BNInputs(net) as hooks:
        net(x)
        assert hooks.loss().item() > 0.1
        for feature, bn in zip(hooks.features, hooks.modules):
            mean, var = batch_statistics(feature)  # the biased variance, what the loss compares with
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
        assert hooks.loss().item() == pytest.approx(0.0, abs=1e-5)
        layer = hooks.modules[0]
        layer.running_var.mul_((8 * 28 * 28) / (8 * 28 * 28 - 1))  # the unbiased variance is not a match
        assert hooks.loss().item() > 0


def test_deepinversion_lowers_its_losses_and_stays_in_pixel_range():
    net = _bn_net()
    targets = torch.arange(4).repeat(2)
    images, log = df.deepinversion(net, targets, df.InversionConfig(steps=30, lr=0.1), seed=0, record_every=29)
    assert images.shape == (8, 1, 28, 28) and not images.requires_grad
    assert images.min() >= df.PIXEL_RANGE[0] - 1e-6 and images.max() <= df.PIXEL_RANGE[1] + 1e-6
    assert log["ce"][-1] < log["ce"][0] and log["bn"][-1] < log["bn"][0]
    assert all(p.requires_grad for p in net.parameters()) and not net.training
    again, _ = df.deepinversion(net, targets, df.InversionConfig(steps=30, lr=0.1), seed=0)
    assert torch.equal(images, again)
    with pytest.raises(ValueError, match="targets"):
        df.deepinversion(net, torch.tensor([1]))
    with pytest.raises(ValueError, match="multiple"):
        df.deepinversion_set(net, per_class=3, batch_per_class=2)


def test_generator_shapes_and_standardised_output():
    g = df.Generator(latent_dim=8, width=4)
    x = g.sample(10, seed=1)
    assert x.shape == (10, 1, 28, 28)
    assert x.mean().abs() < 1e-4 and (x.var(unbiased=False) - 1).abs() < 1e-2
    assert torch.equal(x, g.sample(10, seed=1))
    with pytest.raises(ValueError, match="width"):
        df.Generator(width=1)


def test_dafl_loop_updates_generator_and_student():
    net = _bn_net()
    g, s = df.Generator(latent_dim=8, width=4), build_model("cnn-4x1")
    g0 = [p.clone() for p in g.parameters()]
    s0 = [p.clone() for p in s.parameters()]
    test = df.gaussian_noise_set(20)
    log = df.train_dafl(net, s, g, df.DAFLConfig(iterations=2, batch_size=6, eval_every=2), seed=0, test=test)
    assert log["eval_iteration"] == [2] and len(log["one_hot"]) == 1 and log["seconds"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(g0, g.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(s0, s.parameters()))
    assert all(p.grad is None or p.requires_grad for p in net.parameters())


def test_uint8_round_trip_and_sklearn_digits():
    x = (torch.rand(3, 1, 28, 28) - MNIST_MEAN) / MNIST_STD
    assert torch.allclose(df.from_uint8(df.to_uint8(x)), x, atol=0.5 / 255 / MNIST_STD + 1e-6)
    digits = df.sklearn_digits_set()
    assert digits.images.shape == (1797, 1, 28, 28)
    pixels = digits.images * MNIST_STD + MNIST_MEAN
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert pixels[:, :, :4].abs().max() < 1e-6  # the border is black, as in MNIST
    assert sorted(digits.labels.unique().tolist()) == list(range(10))


def test_nearest_training_images_finds_a_copy():
    pool = torch.randn(50, 1, 4, 4)
    queries = torch.stack([pool[7], pool[42] + 0.01])
    index, distance = df.nearest_training_images(queries, pool, chunk=8)
    assert index.tolist() == [7, 42] and distance[0] == pytest.approx(0.0, abs=1e-3)
    index, _ = df.nearest_training_images(queries, pool, chunk=8, embed=lambda x: 2 * x.flatten(1))
    assert index.tolist() == [7, 42]


def test_unknown_transfer_set_is_named():
    with pytest.raises(ValueError, match="unknown transfer set 'photos'"):
        df.distill_on(("photos", 0, df.TransferStudy()))


def test_artifact_store_load_and_corruption(tmp_path):
    manifest = tmp_path / "artifacts.json"
    tensors = {"images": torch.arange(6, dtype=torch.uint8).view(2, 3), "labels": torch.tensor([0, 1])}
    entry = artifacts.store_artifact("mnist-deepinversion-set", tensors, {"seconds": 1.0}, 2.0, tmp_path, manifest)
    loaded, stored = artifacts.load_artifact("mnist-deepinversion-set", tmp_path, manifest)
    assert torch.equal(loaded["images"], tensors["images"]) and stored["sha256"] == entry["sha256"]
    assert stored["recipe"]["builder"].endswith(":build_deepinversion_set")
    path = tmp_path / entry["file"]
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match="corrupt"):
        artifacts.load_artifact("mnist-deepinversion-set", tmp_path, manifest)
    path.unlink()
    with pytest.raises(ChecksumError, match="missing"):
        artifacts.load_artifact("mnist-deepinversion-set", tmp_path, manifest)
    with pytest.raises(ValueError, match="unknown zoo artefact"):
        artifacts.load_artifact("mnist-dafl-generator", tmp_path, manifest)
    with pytest.raises(ValueError, match="no artefact recipe"):
        artifacts.store_artifact("nothing", tensors, {}, 0.0, tmp_path, manifest)


def test_train_artifact_runs_the_recipe_builder(tmp_path):
    entry = artifacts.train_artifact("mnist-deepinversion-set", tmp_path, tmp_path / "artifacts.json",
                                     per_class=1, batch_per_class=1, steps=2)
    data, _ = artifacts.load_artifact("mnist-deepinversion-set", tmp_path, tmp_path / "artifacts.json")
    assert data["images"].shape == (10, 1, 28, 28) and data["images"].dtype == torch.uint8
    assert entry["info"]["seconds"] >= 0


def test_shipped_artifacts_verify():
    for name in artifacts.ARTIFACT_RECIPES:
        tensors, entry = artifacts.load_artifact(name)
        assert entry["recipe"] == artifacts.asdict(artifacts.ARTIFACT_RECIPES[name])
    data, _ = df.load_deepinversion_set()
    assert data.images.shape[1:] == (1, 28, 28) and len(data) == len(data.labels)
    generator, student, _ = df.load_dafl()
    assert generator.sample(4).shape == (4, 1, 28, 28) and not student.training
