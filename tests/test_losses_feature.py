"""Feature-based losses: FitNets hint + regressor, Attention Transfer, NST."""
import math

import pytest
import torch
import torch.nn.functional as F

from kdtools.losses import NST_KERNELS, ConvRegressor, at_loss, attention_map, hint_loss, nst_loss


# ----------------------------------------------------------------------------- FitNets
def test_hint_loss_hand_computed():
    s = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # [1, 2, 1, 2]
    t = torch.tensor([[[[0.0, 2.0]], [[5.0, 4.0]]]])
    assert hint_loss(s, t).item() == pytest.approx((1 + 0 + 4 + 0) / 4)


def test_conv_regressor_shapes_and_layers():
    torch.manual_seed(0)
    reg = ConvRegressor(8, 16)
    assert isinstance(reg.conv, torch.nn.Conv2d) and reg.conv.kernel_size == (1, 1)
    assert isinstance(reg.bn, torch.nn.BatchNorm2d)
    x = torch.randn(2, 8, 8, 8)
    assert reg(x).shape == (2, 16, 8, 8)
    assert reg(x, (4, 4)).shape == (2, 16, 4, 4)     # larger student: pooled
    assert reg(x, (16, 16)).shape == (2, 16, 16, 16)  # smaller student: upsampled
    t = torch.randn(2, 16, 4, 4)
    loss = hint_loss(reg(x, t.shape[-2:]), t)
    loss.backward()
    assert reg.conv.weight.grad.abs().sum() > 0


def test_conv_regressor_plain_is_a_pooled_1x1_conv():
    torch.manual_seed(0)
    reg = ConvRegressor(3, 2, batch_norm=False)
    x = torch.randn(1, 3, 4, 4)
    pooled = F.avg_pool2d(x, 2)  # [1, 3, 2, 2]
    expected = torch.einsum("oc,bchw->bohw", reg.conv.weight[:, :, 0, 0], pooled) + reg.conv.bias.view(1, 2, 1, 1)
    assert torch.allclose(reg(x, (2, 2)), expected, atol=1e-6)
    relu = ConvRegressor(3, 2, batch_norm=False, relu=True)
    assert (relu(x) >= 0).all()


@pytest.mark.parametrize("call,match", [
    (lambda: hint_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)), r"shapes differ: student_feat has shape \(2, 3, 4, 4\), teacher_feat has shape \(2, 5, 4, 4\)"),
    (lambda: hint_loss(torch.randn(2, 3, 4, 4), torch.randn(3, 3, 4, 4)), r"batch sizes differ"),
    (lambda: hint_loss(torch.randn(2, 3, 4, 4), torch.full((2, 3, 4, 4), float("nan"))), r"teacher_feat contains non-finite"),
    (lambda: hint_loss(torch.randn(3), torch.randn(3)), r"student_feat must have a batch axis"),
    (lambda: ConvRegressor(4, 8)(torch.randn(2, 5, 3, 3)), r"student_feat must have 4 channels, got shape \(2, 5, 3, 3\)"),
    (lambda: ConvRegressor(4, 8)(torch.randn(2, 4, 3)), r"student_feat must be a \[B, C, H, W\] tensor \(rank 4\)"),
    (lambda: ConvRegressor(0, 8), r"student_channels must be an integer >= 1, got 0"),
    (lambda: ConvRegressor(4, 8)(torch.randn(1, 4, 3, 3), (3,)), r"output_size must be \(H, W\)"),
])
def test_fitnets_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- AT
def test_attention_map_hand_computed():
    feat = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # channels [1, 2] and [3, 0]
    expected = torch.tensor([[10.0, 4.0]]) / math.sqrt(116.0)
    assert torch.allclose(attention_map(feat), expected)
    assert attention_map(feat).shape == (1, 2)
    # p = 1 uses absolute values: |−1| + |3| etc.
    neg = torch.tensor([[[[-1.0, 2.0]], [[3.0, 0.0]]]])
    assert torch.allclose(attention_map(neg, p=1), torch.tensor([[4.0, 2.0]]) / math.sqrt(20.0))


def test_at_loss_code_and_paper_modes_hand_computed():
    s = torch.tensor([[[[1.0, 0.0]]]])  # Q_s = [1, 0]
    t = torch.tensor([[[[0.0, 2.0]]]])  # Q_t = [0, 1]
    assert at_loss(s, t).item() == pytest.approx((1 + 1) / 2)           # mean of squares
    assert at_loss(s, t, mode="paper").item() == pytest.approx(math.sqrt(2.0))  # L2 norm


def test_at_loss_equals_naive_formula_and_pools_larger_map():
    torch.manual_seed(0)
    s, t = torch.randn(3, 4, 8, 8), torch.randn(3, 6, 4, 4)
    s_pooled = F.avg_pool2d(s, 2)

    def q(f):
        a = f.pow(2).sum(1).flatten(1)
        return a / a.norm(dim=1, keepdim=True)

    assert torch.allclose(at_loss(s, t), (q(s_pooled) - q(t)).pow(2).mean(), atol=1e-7)
    assert torch.allclose(at_loss(t, s), (q(t) - q(s_pooled)).pow(2).mean(), atol=1e-7)


def test_at_scale_invariance():
    torch.manual_seed(1)
    s, t = torch.randn(2, 3, 5, 5, dtype=torch.float64), torch.randn(2, 4, 5, 5, dtype=torch.float64)
    for mode in ("code", "paper"):
        base = at_loss(s, t, mode=mode)
        assert base > 0
        assert torch.allclose(at_loss(7.5 * s, 0.01 * t, mode=mode), base, rtol=1e-10)
    assert torch.allclose(attention_map(-3 * s), attention_map(s), rtol=1e-12)


@pytest.mark.parametrize("call,match", [
    (lambda: at_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4, 4)), r"student_feat must be a \[B, C, H, W\] tensor \(rank 4\), got shape \(2, 3, 4\)"),
    (lambda: at_loss(torch.randn(2, 3, 4, 4), torch.randn(3, 3, 4, 4)), r"batch sizes differ: student_feat has 2"),
    (lambda: at_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), mode="both"), r"unknown mode 'both'"),
    (lambda: at_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), p=0), r"p must be finite and > 0"),
    (lambda: attention_map(torch.randn(2, 3)), r"feat must be a \[B, C, H, W\] tensor"),
    (lambda: at_loss(torch.randn(2, 3, 4, 4), torch.full((2, 3, 4, 4), float("inf"))), r"teacher_feat contains non-finite"),
])
def test_at_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- NST
def naive_nst(fs, ft, kernel):
    """Direct loops over channel pairs, written from the MMD equation."""
    total = 0.0
    for b in range(fs.shape[0]):
        s = [v / v.norm() for v in fs[b].flatten(1)]
        t = [v / v.norm() for v in ft[b].flatten(1)]
        mean_k = lambda xs, ys: sum(kernel(x, y) for x in xs for y in ys) / (len(xs) * len(ys))
        total += mean_k(s, s) + mean_k(t, t) - 2 * mean_k(s, t)
    return total / fs.shape[0]


def test_nst_poly_hand_computed_tiny():
    # student channels e1, e2 (orthogonal); teacher channels both e1
    s = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])
    t = torch.tensor([[[[3.0, 0.0]], [[5.0, 0.0]]]])
    # k_ss = mean([1, 0, 0, 1]) = 0.5; k_tt = 1; k_st = mean([1, 1, 0, 0]) = 0.5
    assert nst_loss(s, t).item() == pytest.approx(0.5 + 1 - 2 * 0.5)


@pytest.mark.parametrize("kernel", ["poly", "linear"])
def test_nst_equals_naive_pairwise_formula(kernel):
    torch.manual_seed(0)
    fs, ft = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 5, 4, 4, dtype=torch.float64)
    k = {"poly": lambda x, y: (x @ y) ** 2, "linear": lambda x, y: x @ y}[kernel]
    assert torch.allclose(nst_loss(fs, ft, kernel), naive_nst(fs, ft, k), rtol=1e-10)


def test_nst_gaussian_equals_naive_with_teacher_bandwidth():
    torch.manual_seed(1)
    fs, ft = torch.randn(1, 3, 3, 3, dtype=torch.float64), torch.randn(1, 4, 3, 3, dtype=torch.float64)
    t_hat = [v / v.norm() for v in ft[0].flatten(1)]
    sigma2 = sum(((x - y) ** 2).sum() for x in t_hat for y in t_hat) / len(t_hat) ** 2
    k = lambda x, y: torch.exp(-((x - y) ** 2).sum() / (2 * sigma2))
    assert torch.allclose(nst_loss(fs, ft, "gaussian"), naive_nst(fs, ft, k), rtol=1e-10)


def test_nst_linear_kernel_identity():
    torch.manual_seed(2)
    fs, ft = torch.randn(4, 6, 5, 5, dtype=torch.float64), torch.randn(4, 9, 5, 5, dtype=torch.float64)
    mean_s = F.normalize(fs.flatten(2), dim=2).mean(1)
    mean_t = F.normalize(ft.flatten(2), dim=2).mean(1)
    expected = (mean_s - mean_t).pow(2).sum(1).mean()
    assert torch.allclose(nst_loss(fs, ft, kernel="linear"), expected, rtol=1e-10)


def test_nst_zero_for_identical_maps_and_pools_larger_map():
    torch.manual_seed(3)
    f = torch.randn(2, 4, 4, 4)
    for kernel in NST_KERNELS:
        assert abs(nst_loss(f, f.clone(), kernel).item()) < 1e-6
    big = torch.randn(2, 4, 8, 8)
    assert torch.allclose(nst_loss(big, f), nst_loss(F.avg_pool2d(big, 2), f))


@pytest.mark.parametrize("call,match", [
    (lambda: nst_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), kernel="rbf"), r"unknown kernel 'rbf'; expected one of \['gaussian', 'linear', 'poly'\]"),
    (lambda: nst_loss(torch.randn(2, 3, 16), torch.randn(2, 3, 4, 4)), r"student_feat must be a \[B, C, H, W\] tensor \(rank 4\), got shape \(2, 3, 16\)"),
    (lambda: nst_loss(torch.randn(2, 3, 4, 4), torch.randn(4, 3, 4, 4)), r"batch sizes differ"),
    (lambda: nst_loss(torch.randn(2, 3, 4, 4), torch.full((2, 3, 4, 4), float("nan"))), r"teacher_feat contains non-finite"),
])
def test_nst_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_at_paper_mode_gradient_is_finite_at_a_perfect_match():
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = at_loss(s, 2.0 * s.detach(), mode="paper")  # same attention map: the norm is 0
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(s.grad).all()
