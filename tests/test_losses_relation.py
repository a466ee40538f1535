"""Relation-based losses: FSP, RKD distance / angle / combined."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from kdtools.losses import RKD_WEIGHTS, fsp_loss, fsp_matrix, rkd_angle_loss, rkd_distance_loss, rkd_loss


# ----------------------------------------------------------------------------- FSP
def test_fsp_matrix_hand_computed():
    a = torch.tensor([[[[1.0, 2.0]]]])                  # [1, 1, 1, 2]
    b = torch.tensor([[[[3.0, 4.0]], [[5.0, 6.0]]]])    # [1, 2, 1, 2]
    g = fsp_matrix(a, b)
    assert g.shape == (1, 1, 2)  # first layer's channels first
    assert torch.allclose(g, torch.tensor([[[(3 + 8) / 2, (5 + 12) / 2]]]))


def test_fsp_matrix_equals_naive_sum_and_pools_larger_map():
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(2, 4, 4, 4, dtype=torch.float64)
    a_small = F.avg_pool2d(a, 2)
    naive = torch.zeros(2, 3, 4, dtype=torch.float64)
    for n, i, j in itertools.product(range(2), range(3), range(4)):
        naive[n, i, j] = (a_small[n, i] * b[n, j]).sum() / 16
    assert torch.allclose(fsp_matrix(a, b), naive, rtol=1e-12)


def test_fsp_loss_weighted_sum_of_mean_squared_differences():
    torch.manual_seed(1)
    s = [(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)), (torch.randn(2, 5, 4, 4), torch.randn(2, 2, 2, 2))]
    t = [(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)), (torch.randn(2, 5, 4, 4), torch.randn(2, 2, 2, 2))]
    parts = [(fsp_matrix(*ps) - fsp_matrix(*pt)).pow(2).mean() for ps, pt in zip(s, t)]
    assert torch.allclose(fsp_loss(s, t), parts[0] + parts[1])
    assert torch.allclose(fsp_loss(s, t, weights=[0.5, 2.0]), 0.5 * parts[0] + 2.0 * parts[1])
    assert fsp_loss(s, s).item() == 0.0


@pytest.mark.parametrize("call,match", [
    (lambda: fsp_loss([(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))], []), r"teacher_pairs must be a non-empty list"),
    (lambda: fsp_loss([(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))] * 2, [(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))]),
     r"list lengths differ: student_pairs has 2 entries, teacher_pairs has 1"),
    (lambda: fsp_loss([(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))], [(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))], weights=[1.0, 2.0]),
     r"list lengths differ: student_pairs has 1 entries, weights has 2"),
    (lambda: fsp_loss([(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))], [(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))], weights=[-1.0]),
     r"weights\[0\] must be finite and >= 0, got -1.0"),
    (lambda: fsp_loss([(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))], [(torch.randn(2, 4, 4, 4), torch.randn(2, 3, 4, 4))]),
     r"FSP matrix shapes differ for pair 0: student \(2, 3, 3\), teacher \(2, 4, 3\)"),
    (lambda: fsp_loss([torch.randn(2, 3, 4, 4)], [(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))]), r"student_pairs\[0\] must be a \(feat_a, feat_b\) pair"),
    (lambda: fsp_matrix(torch.randn(2, 3, 4, 4), torch.randn(3, 3, 4, 4)), r"batch sizes differ: feat_a has 2"),
    (lambda: fsp_matrix(torch.randn(2, 3, 4), torch.randn(2, 3, 4, 4)), r"feat_a must be a \[B, C, H, W\] tensor \(rank 4\), got shape \(2, 3, 4\)"),
    (lambda: fsp_matrix(torch.randn(2, 3, 4, 4), torch.full((2, 3, 4, 4), float("nan"))), r"feat_b contains non-finite"),
])
def test_fsp_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- RKD
def huber(x):
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def test_rkd_distance_hand_computed():
    student = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # distances 3, 4, 5 → mean 4
    teacher = torch.tensor([[0.0], [1.0], [2.0]])                 # distances 1, 2, 1 → mean 4/3
    # normalised: student (0,1)=0.75 (0,2)=1.0 (1,2)=1.25; teacher 0.75, 1.5, 0.75
    expected = 2 * (huber(0.0) + huber(0.5) + huber(0.5)) / 9  # each pair twice, B² = 9 entries
    assert rkd_distance_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def naive_rkd_angle(student, teacher):
    """The reference formulation: [B, B, D] difference vectors, normalised, batched products."""
    def cosines(e):
        diff = e.unsqueeze(0) - e.unsqueeze(1)            # diff[i, j] = e_j - e_i
        unit = F.normalize(diff, p=2, dim=2)
        return torch.bmm(unit, unit.transpose(1, 2)).flatten()
    return F.smooth_l1_loss(cosines(student), cosines(teacher.detach()))


def test_rkd_angle_hand_computed():
    # student: right angle at vertex 0 of a right isoceles triangle; teacher: equilateral triangle
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    # non-degenerate triples (i, j, k distinct): 6 of them, cosines of the vertex angles
    cos_s = {0: 0.0, 1: math.cos(math.pi / 4), 2: math.cos(math.pi / 4)}
    cos_t = {0: 0.5, 1: 0.5, 2: 0.5}
    expected = sum(2 * huber(cos_s[i] - cos_t[i]) for i in range(3)) / 27
    assert rkd_angle_loss(student, teacher).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_rkd_angle_equals_reference_formulation(dtype, tol):
    torch.manual_seed(0)
    s = torch.randn(12, 7, dtype=dtype) + 3.0  # a common offset: centring must handle it
    t = torch.randn(12, 9, dtype=dtype) * 10
    ours = rkd_angle_loss(s, t)
    ref = naive_rkd_angle(s, t)
    assert torch.allclose(ours, ref, rtol=tol, atol=tol)
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    rkd_angle_loss(s1, t).backward()
    naive_rkd_angle(s2, t).backward()
    assert torch.allclose(s1.grad, s2.grad, rtol=1e-3 if dtype == torch.float32 else 1e-8, atol=tol)


def test_two_samples_carry_no_relation_so_both_rkd_losses_refuse_them():
    # what B = 2 would give: 0 for any embeddings (one normalised distance = 1; only degenerate triples)
    s, t = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64) * 9
    assert naive_rkd_angle(s, t).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"^rkd_angle_loss needs a batch of at least 3 samples \(an angle needs a "
                                         r"triplet of distinct samples"):
        rkd_angle_loss(s, t)
    with pytest.raises(ValueError, match=r"^rkd_distance_loss needs a batch of at least 3 samples \(with 2 the one "
                                         r"distance"):
        rkd_distance_loss(s, t)
    # three samples form one triangle: the hand-computed test above uses exactly that


def test_rkd_distance_equals_reference_formulation():
    torch.manual_seed(1)
    s, t = torch.randn(10, 5, dtype=torch.float64), torch.randn(10, 8, dtype=torch.float64)

    def normalised(e):
        d = (e.unsqueeze(0) - e.unsqueeze(1)).norm(dim=2)
        return d / d[d > 0].mean()

    assert torch.allclose(rkd_distance_loss(s, t), F.smooth_l1_loss(normalised(s), normalised(t)), rtol=1e-10)


def test_rkd_invariances_and_zero_at_match():
    torch.manual_seed(2)
    t = torch.randn(8, 6, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    s = 3.0 * t @ rotation + 5.0  # scaled, rotated, shifted copy: same relations
    assert rkd_distance_loss(s, t).item() < 1e-12
    assert rkd_angle_loss(s, t).item() < 1e-12
    other = torch.randn(8, 6, dtype=torch.float64)
    assert rkd_distance_loss(other, t) > 0 and rkd_angle_loss(other, t) > 0


def test_rkd_combined_weights():
    torch.manual_seed(3)
    s, t = torch.randn(6, 4), torch.randn(6, 5)
    d, a = rkd_distance_loss(s, t), rkd_angle_loss(s, t)
    assert torch.allclose(rkd_loss(s, t), 25 * d + 50 * a)
    assert torch.allclose(rkd_loss(s, t, **RKD_WEIGHTS["metric_learning"]), 1 * d + 2 * a)
    assert RKD_WEIGHTS["classification"] == {"distance_weight": 25.0, "angle_weight": 50.0}


@pytest.mark.parametrize("fn", [rkd_distance_loss, rkd_angle_loss, rkd_loss])
@pytest.mark.parametrize("args,match", [
    ((torch.randn(4, 3, 2), torch.randn(4, 3)), r"student_emb must be a \[B, D\] tensor \(rank 2\), got shape \(4, 3, 2\)"),
    ((torch.randn(4, 3), torch.randn(5, 3)), r"batch sizes differ: student_emb has 4 .* teacher_emb has 5"),
    ((torch.randn(1, 3), torch.randn(1, 3)), r"needs a batch of at least 3 samples .* batch size 1"),
    ((torch.randn(2, 3), torch.randn(2, 5)), r"needs a batch of at least 3 samples .* batch size 2 \(shape \(2, 3\)\)"),
    ((torch.randn(4, 3), torch.full((4, 3), float("nan"))), r"teacher_emb contains non-finite"),
])
def test_rkd_bad_input(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


def test_rkd_loss_bad_weight():
    with pytest.raises(ValueError, match=r"angle_weight must be finite and >= 0, got -1"):
        rkd_loss(torch.randn(4, 3), torch.randn(4, 3), angle_weight=-1)
