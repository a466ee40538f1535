"""Linear CKA (kdtools.metrics.linear_cka): hand-computed values and the invariances that define it."""
import numpy as np
import pytest
import torch

from kdtools.metrics import linear_cka


def _cka_by_hand(x, y):
    # the HSIC form: tr(K H L H) / sqrt(tr(K H K H) tr(L H L H)) with linear kernels K = XXᵀ, L = YYᵀ
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def test_matches_a_hand_computed_value():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    y = np.array([[1.0], [2.0], [0.0], [1.0]])
    # centred: x = [[0,-.5],[-1,.5],[0,.5],[1,-.5]], y = [[0],[1],[-1],[0]]
    # yᵀx = [-1, 0] -> ‖·‖² = 1; ‖xᵀx‖_F = ‖[[2,-1],[-1,1]]‖_F = sqrt(7); ‖yᵀy‖_F = 2
    assert linear_cka(x, y) == pytest.approx(1 / (2 * np.sqrt(7)), abs=1e-12)


def test_agrees_with_the_hsic_form_on_random_features():
    gen = np.random.default_rng(0)
    x, y = gen.normal(size=(30, 7)), gen.normal(size=(30, 4))
    assert linear_cka(x, y) == pytest.approx(_cka_by_hand(x, y), rel=1e-10)


def test_identity_rotation_and_scale_give_one():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=gen)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.0 * x @ rotation + 5.0) == pytest.approx(1.0, abs=1e-6)


def test_not_invariant_to_a_general_linear_map():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200, 4, generator=gen)
    stretched = x * torch.tensor([10.0, 1.0, 1.0, 1.0])
    assert linear_cka(x, stretched) < 0.7


def test_symmetric_bounded_and_flattens_feature_maps():
    gen = torch.Generator().manual_seed(2)
    maps, other = torch.randn(20, 3, 4, 4, generator=gen), torch.randn(20, 5, 2, 2, generator=gen)
    value = linear_cka(maps, other)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(linear_cka(other, maps), rel=1e-12)
    assert value == pytest.approx(linear_cka(maps.flatten(1), other.flatten(1)), rel=1e-12)


def test_independent_features_score_low():
    gen = torch.Generator().manual_seed(3)
    assert linear_cka(torch.randn(5000, 2, generator=gen), torch.randn(5000, 2, generator=gen)) < 0.01


@pytest.mark.parametrize("x, y, message", [
    (torch.zeros(5, 3), torch.zeros(4, 3), "same examples"),
    (torch.randn(5), torch.randn(5, 2), "features_x must have shape"),
    (torch.randn(1, 3), torch.randn(1, 3), "n >= 2"),
    (torch.ones(5, 3), torch.randn(5, 2), "constant"),
    (torch.randn(5, 3), torch.full((5, 2), float("nan")), "features_y contains nan"),
])
def test_bad_input_names_the_argument(x, y, message):
    with pytest.raises(ValueError, match=message):
        linear_cka(x, y)


def test_wide_features_with_few_examples_match_the_hsic_form():
    # more features than examples: the norms are computed from the n×n Gram matrices instead
    gen = np.random.default_rng(4)
    x, y = gen.normal(size=(12, 40)), gen.normal(size=(12, 3))
    assert linear_cka(x, y) == pytest.approx(_cka_by_hand(x, y), rel=1e-10)
    assert linear_cka(y, x) == pytest.approx(_cka_by_hand(x, y), rel=1e-10)
