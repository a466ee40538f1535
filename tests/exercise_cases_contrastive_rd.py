"""Correct and wrong answers to the CRD exercise (notebooks/04_relation/contrastive_rd.ipynb), for
tests/test_exercises.py: check_crd_nce must accept the first and reject each of the second with its hint."""
import math

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- correct
def nce_with_the_critic(pos_logits, neg_logits, n_data):
    noise = neg_logits.shape[1] / n_data
    h_pos = pos_logits.exp() / (pos_logits.exp() + noise)
    h_neg = neg_logits.exp() / (neg_logits.exp() + noise)
    return -(torch.log(h_pos) + torch.log(1 - h_neg).sum(dim=1)).mean()


def nce_in_log_space(pos_logits, neg_logits, n_data):
    log_noise = math.log(neg_logits.shape[1] / n_data)
    log_h = pos_logits - torch.logaddexp(pos_logits, torch.full_like(pos_logits, log_noise))
    log_not_h = log_noise - torch.logaddexp(neg_logits, torch.full_like(neg_logits, log_noise))
    return -(log_h.sum() + log_not_h.sum()) / pos_logits.shape[0]


def nce_with_softplus(pos_logits, neg_logits, n_data):
    # log h(l) = -softplus(log(N/M) - l) and log(1 - h(l)) = -softplus(l - log(N/M))
    shift = math.log(neg_logits.shape[1] / n_data)
    return (F.softplus(shift - pos_logits) + F.softplus(neg_logits - shift).sum(1)).mean()


# ----------------------------------------------------------------------------- wrong
def _critic(logits, noise):
    return logits.exp() / (logits.exp() + noise)


def nce_sign_flipped(pos_logits, neg_logits, n_data):
    noise = neg_logits.shape[1] / n_data
    return (torch.log(_critic(pos_logits, noise)) + torch.log(1 - _critic(neg_logits, noise)).sum(1)).mean()


def nce_log_h_for_negatives(pos_logits, neg_logits, n_data):
    noise = neg_logits.shape[1] / n_data
    return -(torch.log(_critic(pos_logits, noise)) + torch.log(_critic(neg_logits, noise)).sum(1)).mean()


def nce_without_n_over_m(pos_logits, neg_logits, n_data):
    return -(F.logsigmoid(pos_logits) + F.logsigmoid(-neg_logits).sum(1)).mean()


def nce_with_one_over_m(pos_logits, neg_logits, n_data):
    noise = 1 / n_data
    return -(torch.log(_critic(pos_logits, noise)) + torch.log(1 - _critic(neg_logits, noise)).sum(1)).mean()


def nce_with_n(pos_logits, neg_logits, n_data):
    noise = neg_logits.shape[1]
    return -(torch.log(_critic(pos_logits, noise)) + torch.log(1 - _critic(neg_logits, noise)).sum(1)).mean()


def nce_with_m_over_n(pos_logits, neg_logits, n_data):
    noise = n_data / neg_logits.shape[1]
    return -(torch.log(_critic(pos_logits, noise)) + torch.log(1 - _critic(neg_logits, noise)).sum(1)).mean()


def nce_counting_the_positive(pos_logits, neg_logits, n_data):
    noise = (neg_logits.shape[1] + 1) / n_data
    return -(torch.log(_critic(pos_logits, noise)) + torch.log(1 - _critic(neg_logits, noise)).sum(1)).mean()


def nce_averaging_negatives(pos_logits, neg_logits, n_data):
    noise = neg_logits.shape[1] / n_data
    return -(torch.log(_critic(pos_logits, noise)) + torch.log(1 - _critic(neg_logits, noise)).mean(1)).mean()


def nce_summed_over_batch(pos_logits, neg_logits, n_data):
    noise = neg_logits.shape[1] / n_data
    return -(torch.log(_critic(pos_logits, noise)) + torch.log(1 - _critic(neg_logits, noise)).sum(1)).sum()


def nce_as_infonce(pos_logits, neg_logits, n_data):
    return F.cross_entropy(torch.cat([pos_logits[:, None], neg_logits], 1),
                           torch.zeros(len(pos_logits), dtype=torch.long))


def nce_not_implemented(pos_logits, neg_logits, n_data):
    raise NotImplementedError("nce_loss: replace this line with your implementation")


CHECKER_CASES = {
    "check_crd_nce": {
        "correct": [nce_with_the_critic, nce_in_log_space, nce_with_softplus],
        "wrong": [
            (nce_sign_flipped, "opposite sign"),
            (nce_log_h_for_negatives, "log(1 − h), not log h"),
            (nce_without_n_over_m, "lacks the constant N/M"),
            (nce_with_one_over_m, "your constant is 1/M"),
            (nce_with_n, "your constant is N:"),
            (nce_with_m_over_n, "your constant is M/N"),
            (nce_counting_the_positive, "counted the positive"),
            (nce_averaging_negatives, "AVERAGED"),
            (nce_summed_over_batch, "summed over the batch"),
            (nce_as_infonce, "InfoNCE"),
            (nce_not_implemented, "not implemented yet"),
        ],
    },
}
