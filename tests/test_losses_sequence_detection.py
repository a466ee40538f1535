"""Token-level KD for sequences; localization distillation and foreground-weighted imitation for detectors."""
import math

import pytest
import torch

from kdtools.losses import foreground_weighted_feature_loss, localization_distillation_loss, token_kd_loss


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


# ----------------------------------------------------------------------------- token KD
def test_token_kd_hand_computed_with_mask():
    s = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [5.0, -5.0]]])  # [1, 3, 2]
    t = torch.tensor([[[math.log(3.0), 0.0], [1.0, 0.0], [-5.0, 5.0]]])
    mask = torch.tensor([[1, 1, 0]])
    expected = (kl([0.75, 0.25], [0.5, 0.5]) + 0.0) / 2  # third token is padding
    assert token_kd_loss(s, t, mask).item() == pytest.approx(expected, rel=1e-6)
    all_tokens = (kl([0.75, 0.25], [0.5, 0.5]) + kl(softmax([-5, 5]), softmax([5, -5]))) / 3
    assert token_kd_loss(s, t).item() == pytest.approx(all_tokens, rel=1e-5)


def test_token_kd_ignores_masked_tokens():
    torch.manual_seed(0)
    s = torch.randn(2, 5, 7, requires_grad=True)
    t = torch.randn(2, 5, 7)
    mask = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    base = token_kd_loss(s, t, mask)
    s2, t2 = s.detach().clone(), t.clone()
    s2[~mask] = torch.randn(int((~mask).sum()), 7) * 100
    t2[~mask] = torch.randn(int((~mask).sum()), 7) * 100
    assert torch.allclose(token_kd_loss(s2, t2, mask), base)
    base.backward()
    assert (s.grad[~mask] == 0).all()
    assert (s.grad[mask].abs().sum(-1) > 0).all()
    # the mean runs over the 4 real tokens only
    per_token = torch.stack([token_kd_loss(s[b:b + 1, l:l + 1], t[b:b + 1, l:l + 1]) for b, l in mask.nonzero().tolist()])
    assert torch.allclose(base, per_token.mean())


def test_token_kd_temperature_scaling_and_float_mask():
    torch.manual_seed(1)
    s, t = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert torch.allclose(token_kd_loss(s, t, torch.ones(2, 3), 1.0), token_kd_loss(s, t))
    # T² KL at T = 2 equals 4 × KL of the halved logits at T = 1
    assert torch.allclose(token_kd_loss(s, t, temperature=2.0), 4 * token_kd_loss(s / 2, t / 2))
    assert token_kd_loss(s, t, torch.zeros(2, 3)).item() == 0.0


@pytest.mark.parametrize("call,match", [
    (lambda: token_kd_loss(torch.randn(2, 5), torch.randn(2, 5)), r"student_logits must be a \[B, L, V\] tensor \(rank 3\), got shape \(2, 5\)"),
    (lambda: token_kd_loss(torch.randn(2, 3, 5), torch.randn(2, 3, 6)), r"class counts differ: student_logits has shape \(2, 3, 5\), teacher_logits has shape \(2, 3, 6\)"),
    (lambda: token_kd_loss(torch.randn(2, 3, 5), torch.randn(1, 3, 5)), r"batch sizes differ"),
    (lambda: token_kd_loss(torch.randn(2, 3, 5), torch.randn(2, 3, 5), torch.ones(2, 4)), r"mask must have shape \[B, L\] = \(2, 3\), got shape \(2, 4\)"),
    (lambda: token_kd_loss(torch.randn(2, 3, 5), torch.randn(2, 3, 5), torch.full((2, 3), 2.0)), r"mask values must lie in \[0, 1\]"),
    (lambda: token_kd_loss(torch.randn(2, 3, 5), torch.randn(2, 3, 5), [[1, 1, 1]]), r"mask must be a \[B, L\] torch.Tensor"),
    (lambda: token_kd_loss(torch.randn(2, 3, 5), torch.randn(2, 3, 5), temperature=0), r"temperature must be finite and > 0"),
    (lambda: token_kd_loss(torch.full((2, 3, 5), float("nan")), torch.randn(2, 3, 5)), r"student_logits contains non-finite"),
])
def test_token_kd_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- LD
def test_ld_hand_computed():
    s = torch.zeros(1, 4, 2)
    t = torch.zeros(1, 4, 2)
    t[0, 0] = torch.tensor([10 * math.log(3.0), 0.0])  # edge 0: teacher [3/4, 1/4] at T = 10
    edge0 = 100 * kl([0.75, 0.25], [0.5, 0.5]) / 2     # T² KL / n_bins
    assert localization_distillation_loss(s, t).item() == pytest.approx(edge0 / 4, rel=1e-5)


def test_ld_mean_over_boxes_and_empty():
    torch.manual_seed(2)
    s, t = torch.randn(3, 4, 9) * 3, torch.randn(3, 4, 9) * 3
    per_box = torch.stack([localization_distillation_loss(s[i:i + 1], t[i:i + 1]) for i in range(3)])
    assert torch.allclose(localization_distillation_loss(s, t), per_box.mean())
    empty = torch.zeros(0, 4, 9, requires_grad=True)
    value = localization_distillation_loss(empty, torch.zeros(0, 4, 9))
    assert value.item() == 0.0 and value.requires_grad
    assert localization_distillation_loss(t.clone(), t).item() == pytest.approx(0.0, abs=1e-6)


def test_ld_weights_and_avg_factor_hand_computed():
    # two boxes, two bins; only edge 0 of each box differs from the student's uniform [1/2, 1/2]
    s = torch.zeros(2, 4, 2, dtype=torch.float64)
    t = torch.zeros(2, 4, 2, dtype=torch.float64)
    t[0, 0] = torch.tensor([10 * math.log(3.0), 0.0])  # teacher [3/4, 1/4] at T = 10
    t[1, 0] = torch.tensor([0.0, 10 * math.log(4.0)])  # teacher [1/5, 4/5]
    l0 = 100 * kl([0.75, 0.25], [0.5, 0.5]) / 2  # T² KL / n_bins of the one informative edge
    l1 = 100 * kl([0.2, 0.8], [0.5, 0.5]) / 2
    w = torch.tensor([0.5, 2.0], dtype=torch.float64)
    # mmdet's weight_reduce_loss: mean over the N·4 = 8 weighted edge terms ...
    assert localization_distillation_loss(s, t, weight=w).item() == pytest.approx((0.5 * l0 + 2 * l1) / 8)
    # ... or their sum over avg_factor: LDHead's avg_factor = 4 is a weighted SUM over boxes, not / Σw
    head = localization_distillation_loss(s, t, weight=w, avg_factor=4.0).item()
    assert head == pytest.approx((0.5 * l0 + 2 * l1) / 4)
    assert head != pytest.approx((0.5 * l0 + 2 * l1) / 4 / w.sum().item())
    assert localization_distillation_loss(s, t, avg_factor=2.0).item() == pytest.approx((l0 + l1) / 2)


def _authors_ld(pred, soft_label, weight, avg_factor, T=10.0):
    """LDHead's loss_ld without its 0.25 loss weight, written as the authors' code computes it: edges as
    rows of [N·4, n_bins], kl_div(...).mean(1) · T², times the weight repeated over the edges, sum / avg_factor."""
    n, _, bins = pred.shape
    pred, soft_label = pred.reshape(-1, bins), soft_label.reshape(-1, bins)
    target = torch.softmax(soft_label / T, dim=1).detach()
    per_edge = torch.nn.functional.kl_div(torch.log_softmax(pred / T, dim=1), target, reduction="none").mean(1)
    per_edge = per_edge * T * T * weight[:, None].expand(-1, 4).reshape(-1)
    return per_edge.sum() / avg_factor


def test_ld_equals_the_authors_head_with_their_weight_and_avg_factor():
    gen = torch.Generator().manual_seed(5)
    s = torch.randn(7, 4, 17, generator=gen, dtype=torch.float64) * 4
    t = torch.randn(7, 4, 17, generator=gen, dtype=torch.float64) * 4
    quality = torch.rand(7, generator=gen, dtype=torch.float64)
    ours = localization_distillation_loss(s, t, 10.0, weight=quality, avg_factor=4.0)
    assert torch.allclose(ours, _authors_ld(s, t, quality, 4.0), rtol=1e-12)


def test_ld_gradcheck_with_weights():
    gen = torch.Generator().manual_seed(6)
    s = (torch.randn(3, 4, 5, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    t = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64) * 3
    w = torch.tensor([0.3, 0.0, 1.5], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: localization_distillation_loss(x, t, 2.0, weight=w, avg_factor=4.0), (s,))
    assert torch.autograd.gradcheck(lambda x: localization_distillation_loss(x, t, 2.0, weight=w), (s,))


@pytest.mark.parametrize("call,match", [
    (lambda: localization_distillation_loss(torch.randn(3, 5, 8), torch.randn(3, 5, 8)), r"student_edge_logits must be \[N, 4, n_bins\] with n_bins >= 2, got shape \(3, 5, 8\)"),
    (lambda: localization_distillation_loss(torch.randn(3, 32), torch.randn(3, 32)), r"student_edge_logits must be a \[N, 4, n_bins\] tensor \(rank 3\)"),
    (lambda: localization_distillation_loss(torch.randn(3, 4, 8), torch.randn(2, 4, 8)), r"batch sizes differ: student_edge_logits has 3"),
    (lambda: localization_distillation_loss(torch.randn(3, 4, 8), torch.randn(3, 4, 9)), r"shapes differ: student_edge_logits has shape \(3, 4, 8\)"),
    (lambda: localization_distillation_loss(torch.randn(3, 4, 8), torch.randn(3, 4, 8), temperature=-1), r"temperature must be finite and > 0"),
    (lambda: localization_distillation_loss(torch.randn(3, 4, 8), torch.randn(3, 4, 8), weight=torch.ones(2)), r"weight must have N = 3 entries"),
    (lambda: localization_distillation_loss(torch.randn(3, 4, 8), torch.randn(3, 4, 8), weight=-torch.ones(3)), r"weight must be non-negative"),
    (lambda: localization_distillation_loss(torch.randn(3, 4, 8), torch.randn(3, 4, 8), avg_factor=0), r"avg_factor must be finite and > 0, got 0"),
])
def test_ld_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- foreground-weighted imitation
def test_fg_feature_hand_computed():
    s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # [1, 1, 2, 2]
    t = torch.tensor([[[[0.0, 2.0], [1.0, 4.0]]]])  # squared errors 1, 0, 4, 0
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # only the top-left pixel is foreground
    assert foreground_weighted_feature_loss(s, t, mask, 2.0, 0.5).item() == pytest.approx(2.0 * 1 + 0.5 * 4)
    assert foreground_weighted_feature_loss(s, t, mask.bool().unsqueeze(1), 1.0, 0.0).item() == pytest.approx(1.0)


def test_fg_feature_equal_weights_is_summed_mse_over_batch():
    torch.manual_seed(3)
    s, t = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    mask = torch.rand(3, 5, 5)
    value = foreground_weighted_feature_loss(s, t, mask, 0.7, 0.7)
    assert torch.allclose(value, 0.7 * (s - t).pow(2).sum() / 3, rtol=1e-5)


@pytest.mark.parametrize("call,match", [
    (lambda: foreground_weighted_feature_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.ones(2, 4, 5), 1.0, 1.0),
     r"fg_mask must have shape \[B, H, W\] = \(2, 4, 4\) \(or \[B, 1, H, W\]\), got shape \(2, 4, 5\)"),
    (lambda: foreground_weighted_feature_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4), torch.ones(2, 4, 4), 1.0, 1.0), r"shapes differ"),
    (lambda: foreground_weighted_feature_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.full((2, 4, 4), 1.5), 1.0, 1.0), r"fg_mask values must lie in \[0, 1\]"),
    (lambda: foreground_weighted_feature_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.ones(2, 4, 4), -1.0, 1.0), r"fg_weight must be finite and >= 0"),
    (lambda: foreground_weighted_feature_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.ones(2, 4, 4), 1.0, float("nan")), r"bg_weight must be finite"),
    (lambda: foreground_weighted_feature_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 4), 1.0, 1.0), r"student_feat must be a \[B, C, H, W\] tensor \(rank 4\)"),
    (lambda: foreground_weighted_feature_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.full((2, 4, 4), float("nan")), 1.0, 1.0), r"fg_mask contains non-finite"),
])
def test_fg_feature_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
