"""Response-based losses: KD, DKD (+ warm-up), DML."""
import math

import pytest
import torch
import torch.nn.functional as F

from kdtools.losses import dkd_loss, dkd_terms, dkd_warmup_factor, dml_loss, kd_loss


# ----------------------------------------------------------------------------- references
def mdistiller_dkd_reference(logits_student, logits_teacher, target, alpha, beta, temperature):
    """mdistiller's published dkd_loss formula, re-written from its equations: masked sums of
    softmax probabilities, torch.log of them, and the -1000 gt-mask trick for the NCKD part."""
    gt = F.one_hot(target, logits_student.shape[1]).to(logits_student.dtype)
    other = 1 - gt
    p_s = F.softmax(logits_student / temperature, dim=1)
    p_t = F.softmax(logits_teacher / temperature, dim=1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * other).sum(1)], dim=1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * other).sum(1)], dim=1)
    batch = target.shape[0]
    tckd = (b_t * (torch.log(b_t) - torch.log(b_s))).sum() * temperature**2 / batch
    q_t = F.softmax(logits_teacher / temperature - 1000.0 * gt, dim=1)
    log_q_s = F.log_softmax(logits_student / temperature - 1000.0 * gt, dim=1)
    nckd = torch.xlogy(q_t, q_t).sum() - (q_t * log_q_s).sum()
    nckd = nckd * temperature**2 / batch
    return alpha * tckd + beta * nckd


def naive_kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def softmax_list(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    return [v / sum(e) for v in e]


# ----------------------------------------------------------------------------- KD
def test_kd_hand_computed_value():
    # teacher probabilities [3/4, 1/4] at T = 2, student uniform
    teacher = torch.tensor([[2 * math.log(3.0), 0.0]])
    student = torch.zeros(1, 2)
    expected = 4 * (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert kd_loss(student, teacher, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_kd_reductions():
    torch.manual_seed(0)
    s, t = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    per = torch.tensor([
        16 * naive_kl(softmax_list((t[i] / 4).tolist()), softmax_list((s[i] / 4).tolist())) for i in range(5)
    ], dtype=torch.float64)
    assert torch.allclose(kd_loss(s, t, reduction="none"), per, rtol=1e-10)
    assert torch.allclose(kd_loss(s, t), per.mean(), rtol=1e-10)
    assert torch.allclose(kd_loss(s, t, reduction="sum"), per.sum(), rtol=1e-10)


def test_kd_is_zero_iff_distributions_are_equal():
    torch.manual_seed(0)
    t = torch.randn(6, 10, dtype=torch.float64)
    shift = torch.randn(6, 1, dtype=torch.float64) * 5  # same softmax, different logits
    assert kd_loss(t + shift, t, reduction="none").abs().max() < 1e-12
    different = t.clone()
    different[:, 0] += 0.01  # a tiny change of one class per row
    assert (kd_loss(different, t, reduction="none") > 0).all()
    assert (kd_loss(t[:, torch.randperm(10)], t, reduction="none") > 0).all()


def test_kd_finite_for_huge_logits():
    s = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    t = torch.tensor([[-1e4, 1e4, 0.0]])
    loss = kd_loss(s, t, temperature=1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    assert loss.item() == pytest.approx(2e4, rel=1e-5)  # KL = z_t1 - z_s1 in the limit


# ----------------------------------------------------------------------------- DKD
def test_dkd_terms_hand_computed():
    s = [1.0, 0.5, -1.0]
    t = [2.0, -0.5, 0.5]
    target = 1
    p_s, p_t = softmax_list(s), softmax_list(t)
    b_s, b_t = [p_s[1], 1 - p_s[1]], [p_t[1], 1 - p_t[1]]
    hat_s = [p_s[0] / b_s[1], p_s[2] / b_s[1]]
    hat_t = [p_t[0] / b_t[1], p_t[2] / b_t[1]]
    tckd, nckd, weight = dkd_terms(torch.tensor([s]), torch.tensor([t]), torch.tensor([target]), temperature=1.0)
    assert tckd.item() == pytest.approx(naive_kl(b_t, b_s), rel=1e-5)
    assert nckd.item() == pytest.approx(naive_kl(hat_t, hat_s), rel=1e-5)
    assert weight.item() == pytest.approx(1 - p_t[1], rel=1e-6)
    loss = dkd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([target]), alpha=2.0, beta=3.0, temperature=1.0)
    assert loss.item() == pytest.approx(2 * naive_kl(b_t, b_s) + 3 * naive_kl(hat_t, hat_s), rel=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_decomposition_identity(dtype, tol, temperature):
    torch.manual_seed(1)
    s = (torch.randn(32, 100) * 3).to(dtype)
    t = (torch.randn(32, 100) * 3).to(dtype)
    y = torch.randint(0, 100, (32,))
    tckd, nckd, weight = dkd_terms(s, t, y, temperature)
    kd = kd_loss(s, t, temperature, reduction="none")
    assert tckd.shape == nckd.shape == weight.shape == (32,)
    assert torch.allclose(kd, tckd + weight * nckd, rtol=tol, atol=tol)


def test_dkd_matches_mdistiller_formula_on_ordinary_logits():
    torch.manual_seed(2)
    s = torch.randn(16, 100, dtype=torch.float64) * 2
    t = torch.randn(16, 100, dtype=torch.float64) * 2
    y = torch.randint(0, 100, (16,))
    for alpha, beta, temperature in [(1.0, 8.0, 4.0), (0.5, 0.5, 1.0), (1.0, 2.0, 2.0)]:
        ours = dkd_loss(s, t, y, alpha, beta, temperature)
        ref = mdistiller_dkd_reference(s, t, y, alpha, beta, temperature)
        assert torch.allclose(ours, ref, rtol=1e-10), (alpha, beta, temperature)
    # and in float32, as used in training
    ours32 = dkd_loss(s.float(), t.float(), y)
    assert torch.allclose(ours32.double(), mdistiller_dkd_reference(s, t, y, 1.0, 8.0, 4.0), rtol=1e-5)


def test_dkd_gradient_matches_mdistiller_formula():
    torch.manual_seed(3)
    s1 = (torch.randn(8, 10, dtype=torch.float64) * 2).requires_grad_()
    s2 = s1.detach().clone().requires_grad_()
    t = torch.randn(8, 10, dtype=torch.float64)
    y = torch.randint(0, 10, (8,))
    dkd_loss(s1, t, y).backward()
    mdistiller_dkd_reference(s2, t, y, 1.0, 8.0, 4.0).backward()
    assert torch.allclose(s1.grad, s2.grad, rtol=1e-8, atol=1e-12)


def test_dkd_finite_on_huge_float32_logits_where_reference_is_nan():
    torch.manual_seed(4)
    s = (torch.sign(torch.randn(8, 10)) * 1e4).requires_grad_()
    t = torch.sign(torch.randn(8, 10)) * 1e4
    y = torch.randint(0, 10, (8,))
    loss = dkd_loss(s, t, y)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(s.grad).all()
    # the value is right, not just finite: the same computation in float64
    assert torch.allclose(loss.double(), dkd_loss(s.detach().double(), t.double(), y), rtol=1e-4)
    # ... whereas the published formula breaks down on these logits
    assert not torch.isfinite(mdistiller_dkd_reference(s.detach(), t, y, 1.0, 8.0, 4.0))


def test_dkd_warmup_factor():
    assert dkd_warmup_factor(1) == pytest.approx(1 / 20)
    assert dkd_warmup_factor(10) == pytest.approx(0.5)
    assert dkd_warmup_factor(20) == 1.0
    assert dkd_warmup_factor(200) == 1.0
    assert dkd_warmup_factor(0, warmup_epochs=1) == 0.0
    with pytest.raises(ValueError, match="epoch"):
        dkd_warmup_factor(-1)
    with pytest.raises(ValueError, match="warmup_epochs"):
        dkd_warmup_factor(3, warmup_epochs=0)


# ----------------------------------------------------------------------------- DML
def test_dml_hand_computed_and_peer_gets_no_gradient():
    logits = torch.tensor([[0.0, 0.0]], requires_grad=True)
    peer = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    loss = dml_loss(logits, peer)
    assert loss.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6)
    loss.backward()
    assert peer.grad is None
    assert logits.grad.abs().sum() > 0
    # gradient of KL(p_peer || p) wrt the logits is p - p_peer
    assert torch.allclose(logits.grad, torch.tensor([[0.5 - 0.75, 0.5 - 0.25]]), atol=1e-6)


def test_dml_is_asymmetric_kl():
    torch.manual_seed(5)
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    assert torch.allclose(dml_loss(a, b), kd_loss(a, b, temperature=1.0))
    assert not torch.allclose(dml_loss(a, b), dml_loss(b, a))


# ----------------------------------------------------------------------------- input checking
S, T_, Y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 4])
NAN = torch.tensor([[float("nan"), 0.0, 0, 0, 0]] * 4)


@pytest.mark.parametrize("call,match", [
    (lambda: kd_loss(torch.randn(5), T_), r"student_logits must be a \[B, C\] tensor \(rank 2\), got shape \(5,\)"),
    (lambda: kd_loss(S, torch.randn(4, 5, 1)), r"teacher_logits must be a \[B, C\] tensor .*got shape \(4, 5, 1\)"),
    (lambda: kd_loss(S, torch.randn(3, 5)), r"batch sizes differ: student_logits has 4 .* teacher_logits has 3"),
    (lambda: kd_loss(S, torch.randn(4, 6)), r"class counts differ: student_logits has shape \(4, 5\), teacher_logits has shape \(4, 6\)"),
    (lambda: kd_loss(S, T_, temperature=0), r"temperature must be finite and > 0, got 0"),
    (lambda: kd_loss(S, T_, temperature=-2.0), r"temperature must be finite and > 0, got -2.0"),
    (lambda: kd_loss(S, T_, temperature=float("inf")), r"temperature must be finite"),
    (lambda: kd_loss(S, T_, reduction="mean"), r"unknown reduction 'mean'"),
    (lambda: kd_loss(NAN, T_), r"student_logits contains non-finite values"),
    (lambda: kd_loss(S, NAN * 0 + float("inf")), r"teacher_logits contains non-finite values"),
    (lambda: kd_loss(S.long(), T_), r"student_logits must be a floating-point tensor, got dtype torch.int64"),
    (lambda: dkd_loss(S, T_, torch.tensor([0, 1, 2, 5])), r"target values must lie in \[0, 5\), got min 0 and max 5"),
    (lambda: dkd_loss(S, T_, torch.tensor([0, -1, 2, 3])), r"target values must lie in \[0, 5\), got min -1"),
    (lambda: dkd_loss(S, T_, Y.float()), r"target must have an integer dtype .*got dtype torch.float32"),
    (lambda: dkd_loss(S, T_, Y[:3]), r"batch sizes differ: target has 3 entries, the logits have 4 rows"),
    (lambda: dkd_loss(S, T_, Y.view(4, 1)), r"target must be a \[B\] tensor \(rank 1\), got shape \(4, 1\)"),
    (lambda: dkd_loss(S, T_, Y, temperature=0.0), r"temperature must be finite and > 0"),
    (lambda: dkd_loss(S, T_, Y, alpha=-1.0), r"alpha must be finite and >= 0, got -1.0"),
    (lambda: dkd_loss(S, T_, Y, beta=float("nan")), r"beta must be finite and >= 0"),
    (lambda: dkd_terms(S[:, :1], T_[:, :1], torch.zeros(4, dtype=torch.long)), r"DKD needs at least 2 classes"),
    (lambda: dkd_terms(S, torch.randn(4, 3), Y), r"class counts differ"),
    (lambda: dml_loss(S, torch.randn(2, 5)), r"batch sizes differ: logits has 4 .* peer_logits has 2"),
    (lambda: dml_loss(S, torch.randn(4, 2)), r"class counts differ"),
    (lambda: dml_loss(S, T_, temperature=0), r"temperature must be finite and > 0"),
    (lambda: dml_loss(torch.randn(4), T_), r"logits must be a \[B, C\] tensor"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
