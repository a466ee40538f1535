import pytest
import torch

from kdtools.models import ARCHITECTURES, MLP, SmallCNN, build_model


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_returns_logits(name):
    model = build_model(name)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


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
