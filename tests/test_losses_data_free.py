"""Data-free losses: DeepInversion's BN statistics loss and image priors, DAFL's three generator losses."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdtools.losses import (LOSSES, batch_statistics, dafl_losses, deepinversion_bn_loss, image_prior_loss,
                            total_variation)


def _bn(channels, mean, var):
    bn = nn.BatchNorm2d(channels)
    bn.running_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    bn.running_var.copy_(torch.as_tensor(var, dtype=torch.float32))
    return bn


def test_registered():
    assert LOSSES["deepinversion_bn"] is deepinversion_bn_loss
    assert LOSSES["dafl"] is dafl_losses


def test_bn_loss_hand_computed():
    # one channel, values 0, 2 over a batch of two 1x1 maps: mean 1, biased variance 1 (unbiased would be 2)
    x = torch.tensor([0.0, 2.0]).view(2, 1, 1, 1)
    bn = _bn(1, [4.0], [5.0])
    # |5 - 1| + |4 - 1| = 7
    assert deepinversion_bn_loss([x], [bn]).item() == pytest.approx(7.0)
    # two channels: norms, not squared norms: sqrt(3^2 + 4^2) = 5 for the means
    x2 = torch.zeros(2, 2, 1, 1)
    bn2 = _bn(2, [3.0, 4.0], [0.0, 0.0])
    assert deepinversion_bn_loss([x2], [bn2]).item() == pytest.approx(5.0)


def test_bn_loss_sums_layers_with_weights():
    x = torch.tensor([0.0, 2.0]).view(2, 1, 1, 1)
    bn = _bn(1, [4.0], [5.0])
    assert deepinversion_bn_loss([x, x], [bn, bn]).item() == pytest.approx(14.0)
    assert deepinversion_bn_loss([x, x], [bn, bn], layer_weights=[10.0, 1.0]).item() == pytest.approx(77.0)


def test_bn_loss_zero_when_batch_statistics_equal_running_ones():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5) * 2 + 1
    mean, var = batch_statistics(x)
    bn = _bn(3, mean, var)
    assert deepinversion_bn_loss([x], [bn]).item() == pytest.approx(0.0, abs=1e-5)


def test_bn_loss_matches_a_trained_bn_in_train_mode():
    # a BN with momentum 1 stores exactly the batch's mean and (unbiased!) variance; the loss uses the biased one
    torch.manual_seed(1)
    x = torch.randn(4, 2, 3, 3)
    bn = nn.BatchNorm2d(2, momentum=1.0)
    bn(x)
    n = 4 * 3 * 3
    _, biased = batch_statistics(x)
    expected = torch.linalg.vector_norm(biased * n / (n - 1) - biased).item()
    assert deepinversion_bn_loss([x], [bn]).item() == pytest.approx(expected, rel=1e-5)


def test_bn_loss_gradcheck():
    torch.manual_seed(2)
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    bn = _bn(3, [0.1, -0.2, 0.3], [0.5, 2.0, 1.5]).double()
    assert torch.autograd.gradcheck(lambda f: deepinversion_bn_loss([f], [bn]), (x,))


def test_bn_loss_bad_input():
    bn = _bn(2, [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="features\\[0\\] has 3 channels"):
        deepinversion_bn_loss([torch.zeros(2, 3, 1, 1)], [bn])
    with pytest.raises(ValueError, match="B >= 2"):
        deepinversion_bn_loss([torch.zeros(1, 2, 1, 1)], [bn])
    with pytest.raises(ValueError, match="list lengths differ"):
        deepinversion_bn_loss([torch.zeros(2, 2, 1, 1)], [bn, bn])
    with pytest.raises(ValueError, match="BatchNorm"):
        deepinversion_bn_loss([torch.zeros(2, 2, 1, 1)], [nn.Conv2d(2, 2, 1)])
    with pytest.raises(ValueError, match="empty"):
        deepinversion_bn_loss([], [])


def test_total_variation_hand_computed():
    # 2x2 image [[0, 1], [2, 3]]: right diffs -1,-1; down -2,-2; anti-diagonal (2 - 1) = 1; diagonal 0 - 3 = -3
    img = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    tv_l1, tv_l2 = total_variation(img)
    assert tv_l1.item() == pytest.approx(1 + 2 + 1 + 3)
    assert tv_l2.item() == pytest.approx(math.sqrt(2) + math.sqrt(8) + 1 + 3)
    assert total_variation(torch.ones(3, 1, 4, 4))[1].item() == 0.0


def test_image_prior_weights_and_l2():
    img = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    assert image_prior_loss(img, tv_l1=0, tv_l2=0, l2=1).item() == pytest.approx(math.sqrt(14))
    tv_l1, tv_l2 = total_variation(img)
    value = image_prior_loss(img, tv_l1=0.5, tv_l2=0.25, l2=0.0).item()
    assert value == pytest.approx(0.5 * tv_l1.item() + 0.25 * tv_l2.item())
    # the l2 term averages the per-image norms over the batch
    two = torch.cat([img, torch.zeros_like(img)])
    assert image_prior_loss(two, tv_l1=0, tv_l2=0, l2=1).item() == pytest.approx(math.sqrt(14) / 2)


def test_image_prior_gradcheck_and_bad_input():
    torch.manual_seed(3)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda im: image_prior_loss(im, tv_l1=0.3, tv_l2=0.2, l2=0.1), (x,))
    with pytest.raises(ValueError, match="images must be a"):
        image_prior_loss(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="tv_l2"):
        image_prior_loss(torch.zeros(1, 1, 4, 4), tv_l2=-1.0)
    with pytest.raises(ValueError, match="at least 2x2"):
        image_prior_loss(torch.zeros(1, 1, 1, 4))


def test_dafl_hand_computed():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    features = torch.tensor([[1.0, -3.0], [0.0, 2.0]])
    terms = dafl_losses(logits, features)
    ce = (F.cross_entropy(logits[:1], torch.tensor([0])) + F.cross_entropy(logits[1:], torch.tensor([1]))) / 2
    assert terms["one_hot"].item() == pytest.approx(ce.item())
    assert terms["activation"].item() == pytest.approx(-(1 + 3 + 0 + 2) / 4)
    p = F.softmax(logits, 1).mean(0)
    assert terms["information_entropy"].item() == pytest.approx((p * torch.log10(p)).sum().item())


def test_dafl_identities():
    # a balanced batch of confident predictions: entropy term at its minimum -log10(C)
    logits = torch.eye(4) * 50
    terms = dafl_losses(logits, torch.randn(4, 3))
    assert terms["information_entropy"].item() == pytest.approx(-math.log10(4), abs=1e-6)
    assert terms["one_hot"].item() == pytest.approx(0.0, abs=1e-6)
    # a collapsed batch (every sample the same class) has zero mean-prediction entropy
    collapsed = dafl_losses(torch.tensor([[50.0, 0.0]] * 3), torch.ones(3, 2))
    assert collapsed["information_entropy"].item() == pytest.approx(0.0, abs=1e-6)


def test_dafl_gradcheck_and_bad_input():
    torch.manual_seed(4)
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    features = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    for name in ("one_hot", "activation", "information_entropy"):
        assert torch.autograd.gradcheck(lambda z, f: dafl_losses(z, f)[name], (logits, features))
    with pytest.raises(ValueError, match="teacher_logits"):
        dafl_losses(torch.zeros(3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="batch sizes differ"):
        dafl_losses(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="teacher_features"):
        dafl_losses(torch.zeros(3, 2), torch.zeros(3))
