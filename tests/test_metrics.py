"""kdtools.metrics: accuracy, reliability curves and the expected calibration error of Guo et al. (2017)."""
import math

import numpy as np
import pytest
import torch

from kdtools.metrics import (accuracy, bin_index, confidence_and_correct, expected_calibration_error,
                             reliability_curve, to_probabilities)


def two_class(confidences, correct):
    """Probabilities [N, 2] whose argmax is class 0 with the given confidence, and labels right or wrong."""
    conf = torch.tensor(confidences, dtype=torch.float64)
    probs = torch.stack([conf, 1 - conf], dim=1)
    labels = torch.tensor([0 if ok else 1 for ok in correct])
    return probs, labels


def test_ece_by_hand_two_bins():
    # n_bins = 2: bin [0, 0.5] is empty, bin (0.5, 1] holds all four:
    # mean confidence (0.6 + 0.7 + 0.8 + 0.9) / 4 = 0.75, accuracy 2/4, ECE = |0.5 - 0.75|.
    probs, labels = two_class([0.6, 0.7, 0.8, 0.9], [True, False, True, False])
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.25)


def test_ece_by_hand_three_bins_weighted_by_size():
    # n_bins = 10. Bin (0.5, 0.6]: 0.55, 0.55 both right -> |1 - 0.55| = 0.45, weight 2/5.
    # Bin (0.8, 0.9]: 0.9, 0.85, 0.85 with one right -> conf 0.8667, acc 1/3, gap 0.5333, weight 3/5.
    probs, labels = two_class([0.55, 0.55, 0.9, 0.85, 0.85], [True, True, False, True, False])
    expected = 2 / 5 * 0.45 + 3 / 5 * abs(1 / 3 - (0.9 + 0.85 + 0.85) / 3)
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(expected)
    # an unweighted mean over the two filled bins would be (0.45 + 0.5333) / 2 = 0.4917: not what we return
    assert expected_calibration_error(probs, labels, n_bins=10) != pytest.approx((0.45 + 0.5333333) / 2)


def test_perfectly_calibrated_predictions_give_zero():
    # In each bin the accuracy equals the mean confidence: 4 at 0.75 with 3 right, 5 at 0.6 with 3 right.
    probs, labels = two_class([0.75] * 4 + [0.6] * 5, [True, True, True, False, True, True, True, False, False])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # confident and always right is calibrated too
    assert expected_calibration_error(torch.eye(3), torch.arange(3)) == 0.0


def test_always_certain_and_half_wrong_gives_one_half():
    probs = torch.eye(4)
    labels = torch.tensor([0, 1, 0, 0])  # rows 2 and 3 are wrong
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5)


def test_one_bin_is_the_gap_between_mean_confidence_and_accuracy():
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(50, 5, generator=gen)
    labels = torch.randint(0, 5, (50,), generator=gen)
    confidence, correct = confidence_and_correct(logits, labels)
    assert expected_calibration_error(logits, labels, n_bins=1) == pytest.approx(
        abs(confidence.mean().item() - correct.mean().item()))


def test_bins_are_right_closed_with_zero_and_one_in_the_end_bins():
    confidence = torch.tensor([0.0, 0.1, 0.2, 0.2000001, 0.5, 0.99, 1.0], dtype=torch.float64)
    assert bin_index(confidence, 5).tolist() == [0, 0, 0, 1, 2, 4, 4]
    assert bin_index(confidence, 1).tolist() == [0] * 7


def test_confidence_one_lands_in_the_last_bin_and_is_counted():
    probs, labels = two_class([1.0, 1.0, 0.55], [True, False, True])
    curve = reliability_curve(probs, labels, n_bins=15)
    assert curve.count.sum() == 3 and curve.count[-1] == 2
    assert curve.accuracy[-1] == 0.5 and curve.confidence[-1] == 1.0


def test_confidence_exactly_on_an_edge_goes_to_the_lower_bin():
    # 0.5 is the edge between bins 1 and 2 of n_bins = 2; Guo et al.'s bins ((m-1)/M, m/M] put it in bin 1
    probs, labels = two_class([0.5, 0.75], [False, True])
    curve = reliability_curve(probs, labels, n_bins=2)
    assert curve.count.tolist() == [1, 1]
    # bin 1: confidence 0.5, accuracy 0; bin 2: confidence 0.75, accuracy 1 -> ECE = (0.5 + 0.25) / 2
    assert curve.ece == pytest.approx(0.375)


def test_reliability_curve_marks_empty_bins_with_nan():
    probs, labels = two_class([0.95, 0.97], [True, True])
    curve = reliability_curve(probs, labels, n_bins=15)
    assert curve.edges.shape == (16,) and curve.edges[0] == 0.0 and curve.edges[-1] == 1.0
    assert curve.centers[0] == pytest.approx(1 / 30)
    filled = curve.count > 0
    assert filled.sum() == 1 and np.isnan(curve.accuracy[~filled]).all() and np.isnan(curve.confidence[~filled]).all()
    assert curve.confidence[filled][0] == pytest.approx(0.96)
    assert curve.ece == pytest.approx(0.04)


def test_logits_and_probabilities_give_the_same_result():
    gen = torch.Generator().manual_seed(1)
    logits = 4 * torch.randn(200, 10, generator=gen)
    labels = torch.randint(0, 10, (200,), generator=gen)
    probs = torch.softmax(logits, dim=1)
    ece = expected_calibration_error(logits, labels)
    assert 0.0 < ece < 1.0
    assert expected_calibration_error(probs, labels) == pytest.approx(ece)
    assert expected_calibration_error(probs.numpy(), labels.numpy()) == pytest.approx(ece)
    assert expected_calibration_error(logits, labels, logits=True) == pytest.approx(ece)


def test_auto_detection_and_the_explicit_switch():
    uniform = torch.full((2, 4), 0.25)
    assert torch.allclose(to_probabilities(uniform), uniform.double())  # rows sum to 1: probabilities
    # the same numbers read as logits are equal logits, i.e. also uniform; a row that does not sum to 1
    # is read as logits
    assert torch.allclose(to_probabilities(torch.tensor([[0.2, 0.2]])), torch.tensor([[0.5, 0.5]]).double())
    assert torch.allclose(to_probabilities(torch.tensor([[0.9, 0.1]]), logits=True),
                          torch.softmax(torch.tensor([[0.9, 0.1]]).double(), 1))


def test_accuracy_in_percent():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [1.0, 2.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1, 0])) == 50.0
    assert accuracy(logits, [0, 1, 0, 1]) == 100.0


def test_ece_does_not_depend_on_the_order_of_examples():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(64, 3, generator=gen) * 2
    labels = torch.randint(0, 3, (64,), generator=gen)
    perm = torch.randperm(64, generator=gen)
    assert expected_calibration_error(logits[perm], labels[perm]) == pytest.approx(
        expected_calibration_error(logits, labels))
    assert math.isfinite(expected_calibration_error(logits, labels, n_bins=1000))


@pytest.mark.parametrize("probs, labels, n_bins, match", [
    (torch.rand(5), torch.zeros(5, dtype=torch.long), 15, r"shape \[N, C\].*got shape \(5,\)"),
    (torch.rand(0, 3), torch.zeros(0, dtype=torch.long), 15, r"got shape \(0, 3\)"),
    (torch.rand(4, 1), torch.zeros(4, dtype=torch.long), 15, r"C >= 2, got shape \(4, 1\)"),
    (torch.rand(4, 3), torch.zeros(5, dtype=torch.long), 15, r"labels must have shape \[4\].*got shape \(5,\)"),
    (torch.rand(4, 3), torch.zeros(4, 1, dtype=torch.long), 15, r"labels must have shape \[4\]"),
    (torch.rand(4, 3), torch.tensor([0, 1, 3, 0]), 15, r"labels must lie in \[0, 2\], got values from 0 to 3"),
    (torch.rand(4, 3), torch.tensor([0, -1, 2, 0]), 15, r"got values from -1 to 2"),
    (torch.rand(4, 3), torch.tensor([0.0, 1.0, 2.0, 0.0]), 15, "labels must be integers"),
    (torch.tensor([[0.5, float("nan")], [1.0, 0.0]]), torch.tensor([0, 1]), 15, "must be finite, got 1 nan"),
    (torch.rand(4, 3), torch.zeros(4, dtype=torch.long), 0, "n_bins must be a positive int, got 0"),
    (torch.rand(4, 3), torch.zeros(4, dtype=torch.long), 2.5, "n_bins must be a positive int, got 2.5"),
    (torch.rand(4, 3), torch.zeros(4, dtype=torch.long), True, "n_bins must be a positive int, got True"),
])
def test_bad_input_raises_value_error_naming_the_argument(probs, labels, n_bins, match):
    with pytest.raises(ValueError, match=match):
        expected_calibration_error(probs, labels, n_bins=n_bins)


def test_logits_false_rejects_something_that_is_not_a_probability_matrix():
    with pytest.raises(ValueError, match="logits=False but probs_or_logits is not a probability matrix"):
        expected_calibration_error(torch.tensor([[2.0, -1.0]]), torch.tensor([0]), logits=False)
