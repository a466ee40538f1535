"""kdtools.privileged: the degraded view, the generalised-distillation loss and the power-law fit."""
import math

import pytest
import torch
import torch.nn.functional as F

from kdtools.privileged import (PowerLawFit, degrade, fit_power_law, generalized_distillation_loss,
                                generalized_distillation_targets, privileged_term)
from kdtools.train import Step


# ----------------------------------------------------------------------------- degrade
def test_degrade_averages_blocks_by_hand():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    # 2x2 blocks: (0+1+4+5)/4 = 2.5, (2+3+6+7)/4 = 4.5, (8+9+12+13)/4 = 10.5, (10+11+14+15)/4 = 12.5
    assert torch.equal(degrade(image, factor=2), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    assert torch.equal(degrade(image, factor=4), torch.tensor([[[[7.5]]]]))
    assert torch.equal(degrade(image, factor=1), image)


def test_degrade_mnist_shape_and_noise_level():
    images = torch.zeros(200, 1, 28, 28)
    noisy = degrade(images, factor=4, noise_std=0.5, seed=3)
    assert noisy.shape == (200, 1, 7, 7)
    assert abs(noisy.std().item() - 0.5) < 0.02 and abs(noisy.mean().item()) < 0.02


def test_degrade_is_reproducible_and_leaves_global_rng_alone():
    images = torch.rand(5, 1, 28, 28)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = degrade(images, 4, 0.3, seed=7)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a, degrade(images, 4, 0.3, seed=7))
    assert not torch.equal(a, degrade(images, 4, 0.3, seed=8))


@pytest.mark.parametrize("kwargs, message", [
    ({"images": torch.zeros(1, 28, 28)}, "images must be a tensor of shape"),
    ({"factor": 5}, "factor=5 must divide the image size, got images of 28x28"),
    ({"factor": 0}, "factor must be an int >= 1, got 0"),
    ({"factor": 2.0}, "factor must be an int >= 1, got 2.0"),
    ({"noise_std": -0.1}, "noise_std must be a finite number >= 0, got -0.1"),
    ({"noise_std": float("nan")}, "noise_std must be a finite number >= 0"),
])
def test_degrade_rejects_bad_arguments(kwargs, message):
    arguments = {"images": torch.zeros(2, 1, 28, 28), **kwargs}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        degrade(**arguments)


# ----------------------------------------------------------------------------- generalised distillation
def test_targets_mix_labels_and_tempered_teacher_by_hand():
    # teacher logits (0, ln 3) at T = 1: softmax = (1/4, 3/4); label 0, lambda = 0.5 -> (5/8, 3/8)
    targets = generalized_distillation_targets(torch.tensor([0]), torch.tensor([[0.0, math.log(3.0)]]), 1.0, 0.5)
    assert torch.allclose(targets, torch.tensor([[0.625, 0.375]]))
    # T = 2 halves the logits: softmax(0, ln 3 / 2) = (1, sqrt 3) / (1 + sqrt 3)
    targets = generalized_distillation_targets(torch.tensor([1]), torch.tensor([[0.0, math.log(3.0)]]), 2.0, 1.0)
    r3 = math.sqrt(3.0)
    assert torch.allclose(targets, torch.tensor([[1 / (1 + r3), r3 / (1 + r3)]]))


def test_loss_by_hand():
    # student logits (0, 0): log softmax = (-ln 2, -ln 2), so any target gives ln 2 per sample
    student = torch.zeros(2, 2)
    teacher = torch.tensor([[5.0, -5.0], [0.0, 1.0]])
    assert torch.allclose(generalized_distillation_loss(student, torch.tensor([0, 1]), teacher, 3.0, 0.4),
                          torch.tensor(math.log(2.0)))
    # student (0, ln 3): log softmax = (ln 1/4, ln 3/4); target (5/8, 3/8) from the case above
    student = torch.tensor([[0.0, math.log(3.0)]])
    expected = -(0.625 * math.log(0.25) + 0.375 * math.log(0.75))
    loss = generalized_distillation_loss(student, torch.tensor([0]), torch.tensor([[0.0, math.log(3.0)]]), 1.0, 0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_imitation_zero_is_cross_entropy_and_one_ignores_labels():
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 10, generator=gen), 4 * torch.randn(6, 10, generator=gen)
    labels = torch.arange(6)
    assert torch.allclose(generalized_distillation_loss(student, labels, teacher, 4.0, 0.0),
                          F.cross_entropy(student, labels))
    assert torch.allclose(generalized_distillation_loss(student, labels, teacher, 4.0, 1.0),
                          generalized_distillation_loss(student, labels.flip(0), teacher, 4.0, 1.0))


def test_loss_is_stable_for_confident_logits_and_detaches_the_teacher():
    student = torch.tensor([[400.0, -400.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[-300.0, 300.0, 0.0]], requires_grad=True)
    loss = generalized_distillation_loss(student, torch.tensor([0]), teacher, 2.0, 0.5)
    assert torch.isfinite(loss)
    loss.backward()
    assert teacher.grad is None and torch.isfinite(student.grad).all()


@pytest.mark.parametrize("change, message", [
    ({"student_logits": torch.zeros(3)}, r"student_logits must have shape \[B, C\], got \(3,\)"),
    ({"teacher_logits": torch.zeros(3, 4)}, r"teacher_logits must have the student's shape \(3, 5\), got \(3, 4\)"),
    ({"labels": torch.tensor([0.0, 1.0, 2.0])}, "labels must be integer class indices of shape"),
    ({"labels": torch.tensor([0, 1, 5])}, r"labels must lie in \[0, 4\], got values from 0 to 5"),
    ({"temperature": 0.0}, "temperature must be a finite number > 0, got 0.0"),
    ({"imitation": 1.5}, r"imitation must be in \[0, 1\], got 1.5"),
])
def test_loss_rejects_bad_arguments(change, message):
    arguments = {"student_logits": torch.zeros(3, 5), "labels": torch.tensor([0, 1, 2]),
                 "teacher_logits": torch.zeros(3, 5), "temperature": 2.0, "imitation": 0.5, **change}
    with pytest.raises(ValueError, match=message):
        generalized_distillation_loss(**arguments)


def test_privileged_term_looks_up_the_teacher_by_index():
    table = torch.tensor([[10.0, 0.0], [0.0, 10.0], [0.0, 0.0]])
    term = privileged_term(table, temperature=1.0, imitation=1.0)
    student = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    step = Step(images=torch.zeros(2, 1, 7, 7), labels=torch.tensor([0, 0]), index=torch.tensor([2, 0]),
                student_logits=student)
    expected = generalized_distillation_loss(student, step.labels, table[[2, 0]], 1.0, 1.0)
    assert torch.allclose(term(step), expected)
    with pytest.raises(ValueError, match=r"teacher_logits must be a tensor of shape \[N, C\]"):
        privileged_term(torch.zeros(4))
    with pytest.raises(ValueError, match="imitation must be in"):
        privileged_term(table, imitation=-0.1)


# ----------------------------------------------------------------------------- power-law fit
def test_fit_exact_power_law():
    fit = fit_power_law([1, 10, 100], [1.0, 0.1, 0.01])
    assert fit.slope == pytest.approx(-1.0) and fit.prefactor == pytest.approx(1.0)
    assert fit.slope_se == pytest.approx(0.0, abs=1e-12) and fit.points == 3
    fit = fit_power_law([100, 400, 1600], [0.3 * 100 ** -0.5, 0.3 * 400 ** -0.5, 0.3 * 1600 ** -0.5])
    assert fit.slope == pytest.approx(-0.5) and fit.prefactor == pytest.approx(0.3)
    assert torch.allclose(fit.predict([100, 10_000]), torch.tensor([0.03, 0.003], dtype=torch.float64))


def test_fit_slope_and_standard_error_by_hand():
    # in log10 units: u = (0, 1, 2), v = (0, -1, -1.5); ubar = 1, vbar = -5/6, Sxx = 2, Sxy = -3/2
    # slope -3/4, intercept -1/12, residuals (1, -2, 1)/12, RSS = 1/24, SE = sqrt(RSS / 1 / Sxx) = sqrt(1/48)
    fit = fit_power_law([1, 10, 100], [1.0, 0.1, 10 ** -1.5])
    assert fit.slope == pytest.approx(-0.75)
    assert fit.prefactor == pytest.approx(10 ** (-1 / 12))
    assert fit.slope_se == pytest.approx(math.sqrt(1 / 48))


def test_fit_accepts_seeds_at_the_same_n_and_two_points_have_no_se():
    fit = fit_power_law([10, 10, 100, 100], [0.2, 0.2, 0.02, 0.02])
    assert fit.slope == pytest.approx(-1.0) and fit.points == 4
    assert math.isnan(fit_power_law([10, 100], [0.2, 0.05]).slope_se)
    assert "slope -1.000 ± 0.000 (SE, 4 points)" == str(fit)
    assert isinstance(fit, PowerLawFit)


@pytest.mark.parametrize("n, error, message", [
    ([1, 2, 3], [0.1, 0.2], "n and error must have the same length, got 3 and 2"),
    ([10, 10, 10], [0.1, 0.2, 0.3], "need at least two distinct n"),
    ([10], [0.1], "need at least two distinct n"),
    ([10, 100, 0], [0.1, 0.2, 0.3], "n must be finite and > 0"),
    ([10, 100], [0.1, 0.0], "error must be finite and > 0"),
    ([10, 100], [0.1, float("inf")], "error must be finite and > 0"),
])
def test_fit_rejects_bad_input(n, error, message):
    with pytest.raises(ValueError, match=message):
        fit_power_law(n, error)
