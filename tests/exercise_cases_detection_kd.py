"""Correct and wrong answers to the LD exercise (notebooks/06_applications/detection_kd.ipynb), for
tests/test_exercises.py: check_ld_loss must accept the first and reject each of the second with its hint."""
import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- correct
def ld_loss(student_edges, teacher_edges, temperature):
    log_s = F.log_softmax(student_edges / temperature, dim=-1)
    p_t = F.softmax(teacher_edges / temperature, dim=-1)
    kl_per_edge = (p_t * (p_t.log() - log_s)).sum(-1)
    return temperature ** 2 * kl_per_edge.mean() / student_edges.shape[-1]


def with_kl_div(student_edges, teacher_edges, temperature):
    pointwise = F.kl_div(F.log_softmax(student_edges / temperature, 1), F.softmax(teacher_edges / temperature, 1),
                         reduction="none")
    return pointwise.mean() * temperature ** 2  # the mean over all 4 x n_bins terms: over bins, then edges


def edge_by_edge(student_edges, teacher_edges, temperature):
    total = 0.0
    for s, t in zip(student_edges, teacher_edges):
        p_t = torch.softmax(t / temperature, 0)
        total = total + (p_t * (p_t.log() - torch.log_softmax(s / temperature, 0))).sum() / len(s)
    return temperature ** 2 * total / 4


# ----------------------------------------------------------------------------- wrong
def _kl(s, t, T, dim=-1):
    log_s, log_t = (s / T).log_softmax(dim), (t / T).log_softmax(dim)
    return (log_t.exp() * (log_t - log_s)).sum(dim)


def softmax_over_edges(s, t, T):
    return T ** 2 * _kl(s, t, T, dim=0).mean() / s.shape[1]


def one_flat_distribution(s, t, T):
    return T ** 2 * _kl(s.flatten(), t.flatten(), T) / s.shape[1]


def no_temperature(s, t, T):
    return _kl(s, t, 1.0).mean() / s.shape[1]


def reversed_kl(s, t, T):
    return T ** 2 * _kl(t, s, T).mean() / s.shape[1]


def summed_over_bins(s, t, T):
    return T ** 2 * _kl(s, t, T).mean()


def summed_over_edges(s, t, T):
    return T ** 2 * _kl(s, t, T).sum() / s.shape[1]


def not_implemented(s, t, T):
    raise NotImplementedError


CHECKER_CASES = {
    "check_ld_loss": {
        "correct": [ld_loss, with_kl_div, edge_by_edge],
        "wrong": [
            (softmax_over_edges, "softmax runs over the wrong axis"),
            (one_flat_distribution, "flattened the four edges into ONE distribution"),
            (no_temperature, "divide the logits by the temperature"),
            (reversed_kl, "wrong way round"),
            (summed_over_bins, "divide each edge's KL by the number of bins"),
            (summed_over_edges, "average over the four edges"),
            (not_implemented, "not implemented yet"),
        ],
    },
}
