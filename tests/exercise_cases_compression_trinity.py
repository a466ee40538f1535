"""Correct and wrong answers to the int8 exercise (notebooks/06_applications/compression_trinity.ipynb), for
tests/test_exercises.py: check_fake_quantize_int8 must accept the first and reject each of the second with its hint."""
import torch


# ----------------------------------------------------------------------------- correct
def per_row_loop(weight):
    rows = []
    for row in weight:
        scale = row.abs().max() / 127
        if scale == 0:
            rows.append(row.clone())
            continue
        rows.append(torch.clamp(torch.round(row / scale), -128, 127) * scale)
    return torch.stack(rows)


def vectorised(weight):
    scale = weight.abs().amax(dim=1, keepdim=True) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(weight / scale).clamp(-128, 127) * scale


def through_int8(weight):
    scale = (weight.abs().amax(dim=1) / 127).clamp_min(torch.finfo(weight.dtype).tiny)
    q = torch.round(weight / scale[:, None]).to(torch.int8)
    return q.to(weight.dtype) * scale[:, None]


# ----------------------------------------------------------------------------- wrong
def one_scale_for_the_matrix(weight):
    scale = weight.abs().max() / 127
    return torch.round(weight / scale) * scale


def scales_per_column(weight):
    scale = weight.abs().amax(dim=0, keepdim=True).clamp_min(1e-30) / 127
    return torch.round(weight / scale) * scale


def divided_by_128(weight):
    scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-30) / 128
    return torch.round(weight / scale).clamp(-128, 127) * scale


def truncated(weight):
    scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-30) / 127
    return (weight / scale).to(torch.int8).to(weight.dtype) * scale


def integers_returned(weight):
    scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-30) / 127
    return torch.round(weight / scale)


def zero_row_divides_by_zero(weight):
    scale = weight.abs().amax(dim=1, keepdim=True) / 127
    return torch.round(weight / scale) * scale


def not_implemented(weight):
    raise NotImplementedError


CHECKER_CASES = {
    "check_fake_quantize_int8": {
        "correct": [per_row_loop, vectorised, through_int8],
        "wrong": [
            (one_scale_for_the_matrix, "one scale for the whole matrix"),
            (scales_per_column, "wrong axis"),
            (divided_by_128, "not by 128"),
            (truncated, "round to the NEAREST"),
            (integers_returned, "DE-quantised"),
            (zero_row_divides_by_zero, "0/0"),
            (not_implemented, "NotImplementedError"),
        ],
    },
}
