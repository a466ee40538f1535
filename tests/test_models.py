import pytest
import torch

from kdtools.models import ARCHITECTURES, CIFAR_ARCHITECTURES, MLP, CifarResNet, SmallCNN, build_model


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_returns_logits(name):
    model = build_model(name)
    if name in CIFAR_ARCHITECTURES:
        assert model(torch.randn(3, 3, 32, 32)).shape == (3, 100)
    else:
        assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def _cifar_resnet_parameters(depth, widths, classes=100):
    """Parameters of a CIFAR ResNet counted by hand: 3x3 convs without bias, BN (weight and bias), 1x1
    projection shortcuts where the width or the stride changes, and the linear head."""
    conv3, bn = (lambda cin, cout: 9 * cin * cout), (lambda c: 2 * c)
    total = conv3(3, widths[0]) + bn(widths[0])
    channels = widths[0]
    for width, stride in zip(widths[1:], (1, 2, 2)):
        for i in range((depth - 2) // 6):
            total += conv3(channels, width) + bn(width) + conv3(width, width) + bn(width)
            if i == 0 and (stride != 1 or channels != width):
                total += channels * width + bn(width)
            channels = width
    return total + channels * classes + classes


@pytest.mark.parametrize("name, depth, widths, paper_millions", [
    ("resnet8x4", 8, (32, 64, 128, 256), 1.23), ("resnet32x4", 32, (32, 64, 128, 256), 7.43),
    ("resnet56", 56, (16, 16, 32, 64), 0.86), ("resnet110", 110, (16, 16, 32, 64), 1.74),
    ("resnet20", 20, (16, 16, 32, 64), 0.28)])
def test_cifar_resnets_have_the_crd_papers_parameter_counts(name, depth, widths, paper_millions):
    count = sum(p.numel() for p in build_model(name).parameters())
    assert count == _cifar_resnet_parameters(depth, widths)
    assert round(count / 1e6, 2) == paper_millions  # the parameter column of Tian et al. (2020)


def test_resnet8x4_by_hand():
    # stem 928; stage 1 57,728; stage 2 230,144; stage 3 919,040; head 25,700
    assert sum(p.numel() for p in build_model("resnet8x4").parameters()) == 1_233_540


def test_cifar_resnet_feature_maps_through_hooks():
    from kdtools.features import FeatureExtractor

    model = build_model("resnet8x4").eval()
    with FeatureExtractor(model, ["stage1", "stage2", "stage3", "embedding"]) as features:
        model(torch.randn(2, 3, 32, 32))
    assert [tuple(features[k].shape) for k in ("stage1", "stage2", "stage3", "embedding")] == [
        (2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8), (2, 256)]


@pytest.mark.parametrize("call, match", [
    (lambda: CifarResNet(depth=10), "depth must be 6n \\+ 2"),
    (lambda: CifarResNet(depth=2), "depth must be 6n \\+ 2"),
    (lambda: CifarResNet(widths=(16, 32, 64)), "widths must be 4 positive"),
    (lambda: build_model("resnet8x4")(torch.randn(2, 1, 28, 28)), r"RGB images \[B, 3, H, W\], got shape \[2, 1, 28, 28\]"),
])
def test_cifar_resnet_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_hinton_mlp_sizes():
    # 784*1200 + 1200 + 1200*1200 + 1200 + 1200*10 + 10
    assert sum(p.numel() for p in build_model("mlp-1200x2").parameters()) == 2_395_210
    assert sum(p.numel() for p in build_model("mlp-800x2").parameters()) == 784 * 800 + 800 + 800 * 800 + 800 + 8010


def test_mlp_dropout_only_in_training():
    model = MLP((50,), dropout=0.5, input_dropout=0.2)
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(x), model(x))


def test_cnn_width_and_depth_knobs():
    small, wide, deep = SmallCNN(8, 1), SmallCNN(16, 1), SmallCNN(8, 2)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(wide) > count(small) and count(deep) > count(small)
    assert wide.head.in_features == 64 and deep.stage1.conv2.in_channels == 8


@pytest.mark.parametrize("ctor, match", [
    (lambda: build_model("resnet9000"), "unknown architecture 'resnet9000'; known: mlp-1200x2"),
    (lambda: MLP(()), "hidden must be a non-empty"),
    (lambda: MLP((10,), dropout=1.0), "dropout must be in"),
    (lambda: SmallCNN(width=0), "width and depth must be >= 1"),
])
def test_bad_arguments(ctor, match):
    with pytest.raises(ValueError, match=match):
        ctor()
