"""pixelwise_kd_loss (Liu et al. 2019): hand-computed values, the authors' reduction, identity with kd_loss on the
flattened pixels, gradcheck in float64, bad input."""
import math

import pytest
import torch
import torch.nn.functional as F

from kdtools.losses import kd_loss, pixelwise_kd_loss


def _maps(seed, shape=(2, 3, 4, 5), dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(shape, generator=gen, dtype=dtype), 2 * torch.randn(shape, generator=gen, dtype=dtype)


def test_hand_computed_one_pixel_two_classes():
    # one image, one pixel, two classes: teacher logits (0, 0) → p^t = (½, ½); student (log 3, 0) → p^s = (¾, ¼)
    student = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1)
    teacher = torch.zeros(1, 2, 1, 1)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # = ½ log(4/3) ≈ 0.1438
    assert pixelwise_kd_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_hand_computed_reduction_sums_images_and_averages_pixels():
    # two images of 1×2 pixels; only image 0, pixel 0 differs from its teacher, by the value above
    student = torch.zeros(2, 2, 1, 2)
    student[0, 0, 0, 0] = math.log(3.0)
    teacher = torch.zeros(2, 2, 1, 2)
    kl = 0.5 * math.log(4.0 / 3.0)
    assert pixelwise_kd_loss(student, teacher).item() == pytest.approx(kl / 2, rel=1e-6)  # Σ_b / (H·W = 2)
    assert pixelwise_kd_loss(student, teacher, reduction="mean").item() == pytest.approx(kl / 4, rel=1e-6)
    per_pixel = pixelwise_kd_loss(student, teacher, reduction="none")
    assert per_pixel.shape == (2, 1, 2)
    assert per_pixel[0, 0, 0].item() == pytest.approx(kl, rel=1e-6)
    assert per_pixel.sum().item() == pytest.approx(kl, rel=1e-6)


def test_matches_the_authors_criterion_up_to_the_teachers_entropy():
    # CriterionPixelWise: sum(-p^t · log_softmax(z^s)) over every pixel of the batch, divided by W·H
    student, teacher = _maps(0)
    n, c, h, w = student.shape
    p_t = F.softmax(teacher.permute(0, 2, 3, 1).reshape(-1, c), dim=1)
    cross_entropy = (-p_t * F.log_softmax(student.permute(0, 2, 3, 1).reshape(-1, c), dim=1)).sum() / w / h
    entropy = (-p_t * p_t.log()).sum() / w / h
    assert pixelwise_kd_loss(student, teacher).item() == pytest.approx((cross_entropy - entropy).item(), rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_mean_reduction_is_kd_loss_on_flattened_pixels(temperature):
    student, teacher = _maps(1)
    flat = lambda z: z.movedim(1, -1).reshape(-1, z.shape[1])  # noqa: E731
    expected = kd_loss(flat(student), flat(teacher), temperature=temperature, reduction="batchmean")
    got = pixelwise_kd_loss(student, teacher, temperature=temperature, reduction="mean")
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    authors = pixelwise_kd_loss(student, teacher, temperature=temperature)
    assert authors.item() == pytest.approx(student.shape[0] * got.item(), rel=1e-5)


def test_zero_at_a_perfect_match_and_softmax_over_classes():
    student, _ = _maps(2)
    assert pixelwise_kd_loss(student, student.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # adding a constant to every class at a pixel changes nothing (softmax over the class axis, not over space)
    shifted = student + torch.randn(2, 1, 4, 5)
    assert pixelwise_kd_loss(shifted, student).item() == pytest.approx(0.0, abs=1e-5)


def test_teacher_is_detached_and_gradcheck_float64():
    student, teacher = _maps(3, shape=(2, 3, 2, 3), dtype=torch.float64)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    pixelwise_kd_loss(student, teacher, temperature=2.0).backward()
    assert teacher.grad is None and student.grad is not None
    for reduction in ("authors", "mean"):
        assert torch.autograd.gradcheck(
            lambda s: pixelwise_kd_loss(s, teacher.detach(), temperature=2.0, reduction=reduction),
            (student.detach().clone().requires_grad_(True),))


@pytest.mark.parametrize("student, teacher, kwargs, message", [
    (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), {}, r"student_logits must be a \[B, C, H, W\].*\(2, 3, 4\)"),
    (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 8, 8), {}, r"class-map shapes.*\(2, 3, 4, 4\).*\(2, 3, 8, 8\)"),
    (torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 4, 4), {}, r"teacher_logits has shape \(2, 5, 4, 4\)"),
    (torch.zeros(2, 3, 4, 4), torch.zeros(3, 3, 4, 4), {}, r"batch sizes differ"),
    (torch.zeros(2, 3, 4, 4, dtype=torch.long), torch.zeros(2, 3, 4, 4), {}, r"student_logits.*floating"),
    (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), {"temperature": 0.0}, r"temperature.*> 0.*0\.0"),
    (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), {"reduction": "sum"}, r"reduction 'sum'.*authors"),
    (torch.full((2, 3, 4, 4), float("nan")), torch.zeros(2, 3, 4, 4), {}, r"student_logits contains non-finite"),
])
def test_bad_input_raises_value_error_naming_the_argument(student, teacher, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pixelwise_kd_loss(student, teacher, **kwargs)
