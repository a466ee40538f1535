"""Correct and wrong answers to the word-level KD exercise (notebooks/06_applications/token_vs_sequence_kd.ipynb),
for tests/test_exercises.py: check_token_kd_loss must accept the first and reject each of the second with its
hint."""
import torch.nn.functional as F


# ----------------------------------------------------------------------------- correct
def token_kd_loss(student_logits, teacher_logits, mask, temperature):
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    per_token = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return temperature ** 2 * per_token[mask].mean()


def with_kl_div(student_logits, teacher_logits, mask, temperature):
    pointwise = F.kl_div(F.log_softmax(student_logits / temperature, -1), F.softmax(teacher_logits / temperature, -1),
                         reduction="none").sum(-1)
    weights = mask.float()
    return temperature ** 2 * (pointwise * weights).sum() / weights.sum()


def selecting_real_tokens_first(student_logits, teacher_logits, mask, temperature):
    s, t = student_logits[mask] / temperature, teacher_logits[mask] / temperature  # [N_real, V]
    return temperature ** 2 * F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="batchmean",
                                       log_target=True)


# ----------------------------------------------------------------------------- wrong
def _kl(s, t, T):
    log_s, log_t = (s / T).log_softmax(-1), (t / T).log_softmax(-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1)


def padding_counted(s, t, m, T):
    return T ** 2 * _kl(s, t, T).mean()


def per_sequence_mean(s, t, m, T):
    return T ** 2 * ((_kl(s, t, T) * m).sum(1) / m.sum(1)).mean()


def reversed_kl(s, t, m, T):
    return T ** 2 * _kl(t, s, T)[m].mean()


def no_t_squared(s, t, m, T):
    return _kl(s, t, T)[m].mean()


def summed(s, t, m, T):
    return T ** 2 * _kl(s, t, T)[m].sum()


def not_implemented(s, t, m, T):
    raise NotImplementedError


CHECKER_CASES = {
    "check_token_kd_loss": {
        "correct": [token_kd_loss, with_kl_div, selecting_real_tokens_first],
        "wrong": [
            (padding_counted, "you counted the padding"),
            (per_sequence_mean, "averaged each word's tokens first"),
            (reversed_kl, "wrong way round"),
            (no_t_squared, "multiply by T²"),
            (summed, "divide by the number of real tokens"),
            (not_implemented, "not implemented yet"),
        ],
    },
}
