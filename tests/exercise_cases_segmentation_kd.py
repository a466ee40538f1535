"""Correct and wrong answers to the pixel-wise KD exercise (notebooks/06_applications/segmentation_kd.ipynb), for
tests/test_exercises.py: check_pixelwise_kd_loss must accept the first and reject each of the second with its hint."""
import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- correct
def pixelwise_kd(student_logits, teacher_logits, temperature):
    log_s = F.log_softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    kl_per_pixel = (p_t * (p_t.log() - log_s)).sum(1)  # [B, H, W]
    height, width = kl_per_pixel.shape[-2:]
    return temperature ** 2 * kl_per_pixel.sum() / (height * width)


def with_kl_div_on_flat_pixels(student_logits, teacher_logits, temperature):
    b, c, h, w = student_logits.shape
    flat = lambda z: z.permute(0, 2, 3, 1).reshape(-1, c)  # noqa: E731
    kl = F.kl_div(F.log_softmax(flat(student_logits) / temperature, 1), F.softmax(flat(teacher_logits) / temperature, 1),
                  reduction="sum")
    return temperature ** 2 * kl / (h * w)


def image_by_image(student_logits, teacher_logits, temperature):
    total = 0.0
    for s, t in zip(student_logits, teacher_logits):
        p_t = torch.softmax(t / temperature, 0)
        total = total + (p_t * (p_t.log() - torch.log_softmax(s / temperature, 0))).sum(0).mean()
    return temperature ** 2 * total


# ----------------------------------------------------------------------------- wrong
def _kl(s, t, T, dim=1):
    p_t = F.softmax(t / T, dim)
    return (p_t * (p_t.log() - F.log_softmax(s / T, dim))).sum(dim)


def softmax_over_pixels(student_logits, teacher_logits, temperature):
    s, t = student_logits.flatten(2), teacher_logits.flatten(2)
    return temperature ** 2 * _kl(s, t, temperature, dim=-1).sum() / s.shape[-1]


def mean_over_the_batch(student_logits, teacher_logits, temperature):
    return temperature ** 2 * _kl(student_logits, teacher_logits, temperature).mean()


def plain_sum(student_logits, teacher_logits, temperature):
    return temperature ** 2 * _kl(student_logits, teacher_logits, temperature).sum()


def kl_div_mean(student_logits, teacher_logits, temperature):
    return temperature ** 2 * F.kl_div(F.log_softmax(student_logits / temperature, 1),
                                       F.softmax(teacher_logits / temperature, 1), reduction="mean")


def reversed_kl(student_logits, teacher_logits, temperature):
    kl = _kl(teacher_logits, student_logits, temperature)
    return temperature ** 2 * kl.sum() / (kl.shape[-2] * kl.shape[-1])


def without_temperature(student_logits, teacher_logits, temperature):
    kl = _kl(student_logits, teacher_logits, 1.0)
    return kl.sum() / (kl.shape[-2] * kl.shape[-1])


def without_t_squared(student_logits, teacher_logits, temperature):
    kl = _kl(student_logits, teacher_logits, temperature)
    return kl.sum() / (kl.shape[-2] * kl.shape[-1])


def not_implemented(student_logits, teacher_logits, temperature):
    raise NotImplementedError


CHECKER_CASES = {
    "check_pixelwise_kd_loss": {
        "correct": [pixelwise_kd, with_kl_div_on_flat_pixels, image_by_image],
        "wrong": [
            (softmax_over_pixels, "softmax runs over the pixels"),
            (mean_over_the_batch, "averaged over the images too"),
            (plain_sum, "divide by the number of pixels"),
            (kl_div_mean, "divided by the number of classes"),
            (reversed_kl, "wrong way round"),
            (without_temperature, "divide the logits by the temperature"),
            (without_t_squared, "multiply by T²"),
            (not_implemented, "not implemented yet"),
        ],
    },
}
