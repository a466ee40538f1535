"""kdtools.compression: MUNGE (Buciluǎ et al., 2006), retained fraction, stored values, latency."""
import math

import numpy as np
import pytest
import torch

from kdtools.compression import (count_stored_values, latency_ms, munge, munge_step, nearest_neighbours,
                                 retained_fraction)

# Four points on a line: 0 and 1 are each other's neighbours, 10's is 11 and 11's is 10.
LINE = torch.tensor([[0.0, 0.0], [1.0, 2.0], [10.0, 10.0], [11.0, 13.0]])


def test_nearest_neighbours_by_hand():
    assert nearest_neighbours(LINE).tolist() == [1, 0, 3, 2]


def test_nearest_neighbours_never_picks_the_example_itself_even_with_duplicates():
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    assert nearest_neighbours(x).tolist() == [1, 0, 0]  # ties go to the lowest index


def test_nearest_neighbours_in_chunks_matches_one_chunk():
    x = torch.randn(50, 7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(nearest_neighbours(x, chunk_size=7), nearest_neighbours(x))


def test_munge_step_by_hand():
    x = torch.tensor([[0.0, 4.0, 2.0]])
    neighbour = torch.tensor([[2.0, 0.0, 2.0]])
    swap = torch.tensor([[True, True, False]])
    noise = torch.tensor([[1.0, -0.5, 3.0]])
    # attribute 0: 2 + 1 * |0 - 2| / 2 = 3; attribute 1: 0 - 0.5 * 4 / 2 = -1; attribute 2 not swapped
    assert munge_step(x, neighbour, swap, noise, s=2.0).tolist() == [[3.0, -1.0, 2.0]]


def test_munge_is_deterministic_with_a_seed_and_leaves_the_global_state_alone():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = munge(LINE, n_copies=3, p=0.5, s=2.0, seed=7)
    assert torch.equal(before, torch.get_rng_state())
    assert torch.equal(a, munge(LINE, n_copies=3, p=0.5, s=2.0, seed=7))
    assert not torch.equal(a, munge(LINE, n_copies=3, p=0.5, s=2.0, seed=8))


def test_munge_shape_and_copy_order():
    out = munge(LINE, n_copies=3, p=0.0, seed=0)
    assert out.shape == (12, 2)
    assert torch.equal(out, LINE.repeat(3, 1))


def test_munge_p0_returns_copies_of_the_originals():
    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(munge(x, n_copies=2, p=0.0, s=0.5, seed=3), torch.cat([x, x]))


def test_munge_accepts_numpy_integers_and_returns_floats():
    out = munge(np.array([[0, 0], [1, 2], [10, 10]]), n_copies=1, p=0.0)
    assert out.dtype == torch.get_default_dtype() and out.tolist() == [[0, 0], [1, 2], [10, 10]]


def test_munge_p1_huge_s_gives_the_neighbours():
    # p = 1 swaps every attribute; with s = 1e9 the Gaussians are points at the neighbour's values
    out = munge(LINE, n_copies=1, p=1.0, s=1e9, seed=0)
    assert torch.allclose(out, LINE[[1, 0, 3, 2]], atol=1e-6)


def test_munge_values_come_from_the_neighbourhood():
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(2))
    neighbour = x[nearest_neighbours(x)]
    s = 4.0
    out = munge(x, n_copies=5, p=0.5, s=s, seed=0).reshape(5, 200, 6)
    unchanged = out == x
    # every changed attribute lies within 6 standard deviations |x - x'| / s of the neighbour's value
    distance = (out - neighbour).abs()
    assert bool((unchanged | (distance <= 6 * (x - neighbour).abs() / s + 1e-6)).all())
    # about half of the attributes are swapped
    assert 0.45 < 1 - unchanged.float().mean().item() < 0.55
    # swapped values sit around the neighbour's value, not the example's
    changed = ~unchanged
    assert (out - neighbour).abs()[changed].mean() < 0.5 * (out - x).abs()[changed].mean()


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_copies=0), "n_copies must be an int >= 1, got 0"),
    (dict(n_copies=1.5), "n_copies must be an int >= 1, got 1.5"),
    (dict(p=1.5), "p must be a probability in [0, 1], got 1.5"),
    (dict(p=-0.1), "p must be a probability in [0, 1], got -0.1"),
    (dict(s=0.0), "s must be a finite number > 0, got 0.0"),
    (dict(s=math.inf), "s must be a finite number > 0, got inf"),
    (dict(seed=-1), "seed must be a non-negative int, got -1"),
])
def test_munge_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        munge(LINE, **kwargs)


def test_munge_rejects_bad_data():
    with pytest.raises(ValueError, match=r"x must be a 2-D array .* got shape \[4\]"):
        munge(torch.arange(4.0))
    with pytest.raises(ValueError, match=r"at least 2 rows .* got shape \[1, 3\]"):
        munge(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="finite values only"):
        munge(torch.tensor([[0.0, math.nan], [1.0, 1.0]]))


def test_munge_step_rejects_bad_input():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"noise must have the shape of x \[2, 3\], got \[3\]"):
        munge_step(x, x, x > 0, torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="swap must be a boolean tensor, got dtype torch.float32"):
        munge_step(x, x, torch.zeros(2, 3), x, 1.0)
    with pytest.raises(ValueError, match="s must be a finite number > 0, got -1"):
        munge_step(x, x, x > 0, x, -1)


def test_retained_fraction_by_hand_and_per_seed():
    assert retained_fraction(97.0, 95.0, 99.0) == pytest.approx(0.5)
    assert retained_fraction(94.0, 95.0, 99.0) == pytest.approx(-0.25)
    per_seed = retained_fraction(torch.tensor([96.0, 98.0]), torch.tensor([95.0, 94.0]), 99.0)
    assert torch.allclose(per_seed, torch.tensor([0.25, 0.8]))


def test_retained_fraction_undefined_without_a_gap():
    with pytest.raises(ValueError, match="teacher and scratch accuracies must differ"):
        retained_fraction(97.0, 95.0, 95.0)
    with pytest.raises(ValueError, match="must differ"):
        retained_fraction(np.array([96.0, 97.0]), np.array([95.0, 99.0]), 99.0)


class _Fitted:
    def __init__(self):
        self.coef_ = np.zeros((3, 4))          # 12
        self.classes_ = [0, 1, 2]              # plain ints: not counted
        self.nodes = np.zeros(5, dtype=[("left", "i8"), ("threshold", "f8")])  # 5 records × 2 fields
        self.members = [torch.zeros(7), {"bias": np.ones(2)}]  # 7 + 2
        self.alias = self.coef_                # the same array again: counted once
        self.name = "model"


class _WithState:
    def __getstate__(self):
        return {"weights": np.zeros(6)}


def test_count_stored_values_by_hand():
    assert count_stored_values(_Fitted()) == 12 + 10 + 7 + 2
    assert count_stored_values([_WithState(), _WithState()]) == 12
    assert count_stored_values(torch.nn.Linear(3, 2)) == 8


def test_latency_ms_is_a_positive_median():
    assert latency_ms(lambda: sum(range(1000)), repeats=5) > 0
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        latency_ms(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="fn must be callable, got int"):
        latency_ms(3)
