"""CRD: NCE objective, memory banks (momentum update, Z, per-sample negatives) and the queue variant."""
import math

import pytest
import torch
import torch.nn.functional as F

from kdtools.losses import CRDLoss, CRDQueueLoss, crd_nce_loss


def test_crd_nce_hand_computed():
    scores = torch.tensor([[1.0, 0.5, 0.25], [2.0, 1.0, 0.5]])
    n_data = 4  # K = 2 negatives → K·Pn = 0.5
    eps = 1e-7
    expected = 0.0
    for row in scores.tolist():
        expected += math.log(row[0] / (row[0] + 0.5 + eps))
        expected += sum(math.log(0.5 / (p + 0.5 + eps)) for p in row[1:])
    assert crd_nce_loss(scores, n_data).item() == pytest.approx(-expected / 2, rel=1e-6)


def test_crd_nce_decreases_when_positive_dominates():
    weak = torch.tensor([[1e-3] + [1e-3] * 8])
    strong = torch.tensor([[1.0] + [1e-6] * 8])
    assert crd_nce_loss(strong, 1000) < crd_nce_loss(weak, 1000)


@pytest.mark.parametrize("call,match", [
    (lambda: crd_nce_loss(torch.rand(4) + 0.1, 10), r"scores must be a \[B, K\+1\] tensor \(rank 2\), got shape \(4,\)"),
    (lambda: crd_nce_loss(torch.rand(4, 1) + 0.1, 10), r"scores must have the positive plus at least one negative column"),
    (lambda: crd_nce_loss(torch.tensor([[1.0, -0.5]]), 10), r"scores must be positive"),
    (lambda: crd_nce_loss(torch.tensor([[1.0, float("inf")]]), 10), r"scores contains non-finite"),
    (lambda: crd_nce_loss(torch.rand(2, 3) + 0.1, 0), r"n_data must be an integer >= 1, got 0"),
    (lambda: crd_nce_loss(torch.rand(2, 3) + 0.1, 2.5), r"n_data must be an integer >= 1, got 2.5"),
])
def test_crd_nce_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- memory bank module
def make_crd(**kw):
    torch.manual_seed(0)
    args = dict(student_dim=6, teacher_dim=5, n_data=20, feat_dim=4, n_negatives=7)
    args.update(kw)
    return CRDLoss(**args)


def test_crd_memory_initialisation_and_sampling():
    crd = make_crd()
    bound = 1 / math.sqrt(4 / 3)
    for bank in (crd.memory_student, crd.memory_teacher):
        assert bank.shape == (20, 4)
        assert bank.abs().max() <= bound
    assert crd.z_student.item() == -1 and crd.z_teacher.item() == -1
    index = torch.tensor([3, 3, 11, 19])
    torch.manual_seed(1)
    contrast = crd.sample_contrast_index(index)
    assert contrast.shape == (4, 8) and contrast.dtype == torch.int64
    assert torch.equal(contrast[:, 0], index)  # the positive is column 0, per sample
    assert contrast.min() >= 0 and contrast.max() < 20
    assert not torch.equal(contrast[0, 1:], contrast[1, 1:])  # negatives drawn per sample


def test_crd_negatives_are_uniform_and_may_hit_the_positive():
    """The authors' fallback sampler draws uniformly over the data set, positive not excluded."""
    crd = make_crd(n_data=5, n_negatives=4000)
    torch.manual_seed(2)
    contrast = crd.sample_contrast_index(torch.tensor([0, 1]))
    negatives = contrast[:, 1:]
    counts = torch.bincount(negatives.flatten(), minlength=5).float()
    expected = negatives.numel() / 5
    assert ((counts - expected).abs() / expected).max() < 0.08
    assert (negatives[0] == 0).any() and (negatives[1] == 1).any()


def test_crd_forward_scores_z_and_momentum_update():
    crd = make_crd()
    torch.manual_seed(3)
    fs, ft = torch.randn(3, 6), torch.randn(3, 5)
    index = torch.tensor([2, 9, 15])
    contrast = torch.stack([torch.cat([index[i:i + 1], torch.randint(0, 20, (7,))]) for i in range(3)])
    old_s, old_t = crd.memory_student.clone(), crd.memory_teacher.clone()

    loss = crd(fs, ft, index, contrast)

    v_s = F.normalize(crd.embed_student.linear(fs), dim=1)
    v_t = F.normalize(crd.embed_teacher.linear(ft), dim=1)
    raw_s = torch.exp(torch.einsum("bkd,bd->bk", old_t[contrast], v_s) / 0.07)
    raw_t = torch.exp(torch.einsum("bkd,bd->bk", old_s[contrast], v_t) / 0.07)
    # Z is fixed on the first batch: mean score times n_data
    assert crd.z_student.item() == pytest.approx(raw_s.mean().item() * 20, rel=1e-5)
    assert crd.z_teacher.item() == pytest.approx(raw_t.mean().item() * 20, rel=1e-5)
    expected = crd_nce_loss(raw_s / crd.z_student, 20) + crd_nce_loss(raw_t / crd.z_teacher, 20)
    assert torch.allclose(loss, expected, rtol=1e-5)

    # banks: rows of the batch = normalize(0.5·old + 0.5·new); every other row unchanged
    assert torch.allclose(crd.memory_student[index], F.normalize(0.5 * old_s[index] + 0.5 * v_s.detach(), dim=1), atol=1e-6)
    assert torch.allclose(crd.memory_teacher[index], F.normalize(0.5 * old_t[index] + 0.5 * v_t.detach(), dim=1), atol=1e-6)
    others = torch.ones(20, dtype=torch.bool)
    others[index] = False
    assert torch.equal(crd.memory_student[others], old_s[others])
    assert torch.equal(crd.memory_teacher[others], old_t[others])

    # a second batch keeps Z and applies the momentum again
    z = crd.z_student.item()
    mem_before = crd.memory_student.clone()
    crd(fs * 2, ft, index)
    assert crd.z_student.item() == z
    assert not torch.equal(crd.memory_student[index], mem_before[index])


def test_crd_momentum_zero_replaces_rows():
    crd = make_crd(momentum=0.0)
    fs, ft = torch.randn(2, 6), torch.randn(2, 5)
    index = torch.tensor([0, 5])
    crd(fs, ft, index)
    assert torch.allclose(crd.memory_student[index], F.normalize(crd.embed_student.linear(fs), dim=1), atol=1e-6)


def test_crd_trains_heads_not_teacher_features():
    crd = make_crd()
    fs = torch.randn(3, 6, requires_grad=True)
    ft = torch.randn(3, 5, requires_grad=True)
    crd(fs, ft, torch.tensor([1, 2, 3])).backward()
    assert ft.grad is None
    assert fs.grad.abs().sum() > 0
    assert crd.embed_teacher.linear.weight.grad.abs().sum() > 0  # the teacher's head is learned


def test_crd_follows_module_device_and_dtype():
    crd = make_crd().double()
    loss = crd(torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64), torch.tensor([0, 1, 2]))
    assert loss.dtype == torch.float64
    assert crd.memory_student.dtype == torch.float64


@pytest.mark.parametrize("call,match", [
    (lambda c: c(torch.randn(3, 7), torch.randn(3, 5), torch.tensor([0, 1, 2])), r"student_feat must be \[B, 6\] \(or flatten to it\), got shape \(3, 7\)"),
    (lambda c: c(torch.randn(3, 6), torch.randn(3, 4), torch.tensor([0, 1, 2])), r"teacher_feat must be \[B, 5\]"),
    (lambda c: c(torch.randn(3, 6), torch.randn(2, 5), torch.tensor([0, 1, 2])), r"batch sizes differ: student_feat has 3"),
    (lambda c: c(torch.randn(3, 6), torch.randn(3, 5), torch.tensor([0, 1])), r"batch sizes differ: index has 2 entries"),
    (lambda c: c(torch.randn(3, 6), torch.randn(3, 5), torch.tensor([0, 1, 20])), r"index values must lie in \[0, 20\), got min 0 and max 20"),
    (lambda c: c(torch.randn(3, 6), torch.randn(3, 5), torch.tensor([0.0, 1.0, 2.0])), r"index must have an integer dtype"),
    (lambda c: c(torch.randn(3, 6), torch.randn(3, 5), torch.tensor([0, 1, 2]), torch.zeros(3, 4, dtype=torch.long)),
     r"contrast_index\[:, 0\] must equal index"),
    (lambda c: c(torch.randn(3, 6), torch.randn(3, 5), torch.tensor([0, 1, 2]), torch.tensor([[0, 1], [1, 2], [2, 25]])),
     r"contrast_index values must lie in \[0, 20\)"),
    (lambda c: c(torch.randn(3, 6), torch.randn(3, 5), torch.tensor([0, 1, 2]), torch.zeros(2, 4, dtype=torch.long)),
     r"contrast_index must be \[B=3, K\+1\] with K >= 1, got shape \(2, 4\)"),
    (lambda c: c(torch.randn(3, 6), torch.full((3, 5), float("nan")), torch.tensor([0, 1, 2])), r"teacher_feat contains non-finite"),
])
def test_crd_module_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(make_crd())


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=0.0), r"temperature must be finite and > 0"),
    (dict(momentum=1.0), r"momentum must lie in \[0, 1\)"),
    (dict(n_data=0), r"n_data must be an integer >= 1"),
    (dict(n_negatives=0), r"n_negatives must be an integer >= 1"),
])
def test_crd_module_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_crd(**kwargs)


# ----------------------------------------------------------------------------- queue variant
def test_queue_is_fifo_and_wraps_around():
    q = CRDQueueLoss(6, 5, feat_dim=3, queue_size=5)
    batches = [torch.full((2, 3), float(i)) + torch.arange(2).view(2, 1) * 0.5 for i in range(3)]
    for b in batches:
        q.enqueue(b)
    # six rows e0..e5 went in: e5 overwrote slot 0; slots 1-4 hold e1..e4
    rows = torch.cat(batches)
    assert torch.equal(q.queue, torch.cat([rows[5:6], rows[1:5]]))
    assert q.queue_ptr.item() == 1
    q.enqueue(torch.full((7, 3), 9.0))  # more than the queue holds: the last five remain
    assert torch.equal(q.queue, torch.full((5, 3), 9.0))


def test_queue_forward_is_infonce_against_previous_queue_then_enqueues_teacher():
    torch.manual_seed(4)
    q = CRDQueueLoss(6, 5, feat_dim=4, queue_size=8, temperature=0.5)
    fs, ft = torch.randn(3, 6), torch.randn(3, 5)
    old_queue = q.queue.clone()
    loss = q(fs, ft)
    v_s = F.normalize(q.embed_student.linear(fs), dim=1)
    v_t = F.normalize(q.embed_teacher.linear(ft), dim=1)
    expected = 0.0
    for b in range(3):
        logits = torch.cat([(v_s[b] * v_t[b]).sum().view(1), old_queue @ v_s[b]]) / 0.5
        expected += -(logits[0] - torch.logsumexp(logits, 0))
    assert torch.allclose(loss, expected / 3, rtol=1e-5)
    assert torch.allclose(q.queue[:3], v_t.detach(), atol=1e-6)
    assert torch.equal(q.queue[3:], old_queue[3:])
    assert q.queue_ptr.item() == 3


def test_queue_bad_input():
    q = CRDQueueLoss(6, 5, feat_dim=4, queue_size=8)
    with pytest.raises(ValueError, match=r"student_feat must be \[B, 6\]"):
        q(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"batch sizes differ"):
        q(torch.randn(3, 6), torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"queue_size must be an integer >= 1"):
        CRDQueueLoss(6, 5, queue_size=0)


@pytest.mark.parametrize("n_data", [20, 200])  # 3·(7+1) = 24 sampled entries: >= 20 rows (whole-bank product), < 200
def test_crd_scores_equal_the_gathered_product_on_both_paths(n_data):
    torch.manual_seed(5)
    crd = CRDLoss(6, 5, n_data, feat_dim=4, n_negatives=7).double()
    fs = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([2, 9, 15])
    contrast = torch.cat([index[:, None], torch.randint(0, n_data, (3, 7))], dim=1)
    anchor = lambda: F.normalize(crd.embed_student.linear(fs), dim=1)
    scores = crd._scores(anchor(), crd.memory_teacher, contrast, torch.tensor(1.0, dtype=torch.float64))
    expected = torch.exp(torch.einsum("bkd,bd->bk", crd.memory_teacher[contrast], anchor()) / 0.07)
    assert torch.allclose(scores, expected, rtol=1e-12)
    grad, = torch.autograd.grad(scores.log().sum(), fs)
    expected_grad, = torch.autograd.grad(expected.log().sum(), fs)
    assert torch.allclose(grad, expected_grad, rtol=1e-10)
