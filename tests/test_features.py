import pytest
import torch
import torchvision

from kdtools.features import FeatureExtractor, extract, layer_names
from kdtools.models import SmallCNN


def test_records_named_layers_of_a_course_model():
    model = SmallCNN(8, 1).eval()
    x = torch.randn(2, 1, 28, 28)
    with FeatureExtractor(model, ["stage1", "stage3", "embedding"]) as feats:
        logits = model(x)
    assert feats["stage1"].shape == (2, 8, 14, 14)
    assert feats["stage3"].shape == (2, 32, 7, 7)
    torch.testing.assert_close(model.head(feats["embedding"]), logits)


def test_works_on_an_unmodified_torchvision_model():
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    with FeatureExtractor(model, ["layer2", "layer4.1.conv2"]) as feats:
        model(torch.randn(1, 3, 64, 64))
    assert feats["layer2"].shape == (1, 128, 8, 8)
    assert feats["layer4.1.conv2"].shape == (1, 512, 2, 2)


def test_hooks_are_removed_on_exit():
    model = SmallCNN(4, 1)
    with FeatureExtractor(model, ["stage2"]):
        assert len(model.stage2._forward_hooks) == 1
    assert len(model.stage2._forward_hooks) == 0


def test_student_features_carry_gradients_and_teacher_features_do_not():
    model = SmallCNN(4, 1)
    with FeatureExtractor(model, ["stage2"]) as live, FeatureExtractor(model, ["stage3"], detach=True) as frozen:
        model(torch.randn(2, 1, 28, 28))
    assert live["stage2"].requires_grad and not frozen["stage3"].requires_grad
    live["stage2"].pow(2).mean().backward()
    assert model.stage1.conv1.weight.grad is not None


def test_unknown_layer_lists_valid_names_and_suggests():
    model = SmallCNN(4, 1)
    with pytest.raises(ValueError, match=r"unknown layer name\(s\) \['stage4'\].*did you mean.*stage1.*Valid names: stage1") as err:
        FeatureExtractor(model, ["stage4"])
    assert "head" in str(err.value)


def test_reading_before_forward_is_a_clear_error():
    with FeatureExtractor(SmallCNN(4, 1), "stage1") as feats:
        with pytest.raises(KeyError, match="run a forward pass"):
            feats["stage1"]
        with pytest.raises(KeyError, match="not hooked"):
            feats["stage2"]


def test_extract_helper_restores_training_mode():
    model = SmallCNN(4, 1).train()
    out = extract(model, ["pool"], torch.randn(3, 1, 28, 28))
    assert out["pool"].shape == (3, 16) and model.training
    assert "stage1.conv1" in layer_names(model)
