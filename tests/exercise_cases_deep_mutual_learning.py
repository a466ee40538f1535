"""Correct and wrong answers to the DML exercise (notebooks/05_paradigms/deep_mutual_learning.ipynb), for
tests/test_exercises.py: check_dml_losses must accept the first and reject each of the second with its hint."""
import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- correct
def with_kl_div(logits, labels):
    k = logits.shape[0]
    losses = []
    for i in range(k):
        log_p = F.log_softmax(logits[i], dim=1)
        mimicry = sum(F.kl_div(log_p, F.softmax(logits[j].detach(), dim=1), reduction="batchmean")
                      for j in range(k) if j != i)
        losses.append(F.cross_entropy(logits[i], labels) + mimicry / (k - 1))
    return torch.stack(losses)


def vectorised(logits, labels):
    k, b, c = logits.shape
    log_p = logits.log_softmax(2)
    target = log_p.detach()
    # kl[l, i] = mean over the batch of KL(p_l || p_i)
    kl = (target.exp().unsqueeze(1) * (target.unsqueeze(1) - log_p.unsqueeze(0))).sum(3).mean(2)
    ce = F.cross_entropy(logits.reshape(k * b, c), labels.repeat(k), reduction="none").reshape(k, b).mean(1)
    return ce + (kl.sum(0) - kl.diagonal()) / (k - 1)


# ----------------------------------------------------------------------------- wrong
def reversed_kl(logits, labels):
    k = logits.shape[0]
    out = []
    for i in range(k):
        p_i = F.softmax(logits[i], dim=1)
        mimicry = sum(F.kl_div(F.log_softmax(logits[j].detach(), dim=1), p_i, reduction="batchmean")
                      for j in range(k) if j != i)
        out.append(F.cross_entropy(logits[i], labels) + mimicry / (k - 1))
    return torch.stack(out)


def summed_over_peers(logits, labels):
    k = logits.shape[0]
    return torch.stack([F.cross_entropy(logits[i], labels) + sum(
        F.kl_div(F.log_softmax(logits[i], 1), F.softmax(logits[j].detach(), 1), reduction="batchmean")
        for j in range(k) if j != i) for i in range(k)])


def ce_only(logits, labels):
    return torch.stack([F.cross_entropy(z, labels) for z in logits])


def without_ce(logits, labels):
    return with_kl_div(logits, labels) - ce_only(logits, labels)


def peers_not_detached(logits, labels):
    k = logits.shape[0]
    return torch.stack([F.cross_entropy(logits[i], labels) + sum(
        F.kl_div(F.log_softmax(logits[i], 1), F.softmax(logits[j], 1), reduction="batchmean")
        for j in range(k) if j != i) / (k - 1) for i in range(k)])


def with_kdtools(logits, labels):
    from kdtools.losses import dml_loss
    k = logits.shape[0]
    return torch.stack([F.cross_entropy(logits[i], labels) + sum(dml_loss(logits[i], logits[j]) for j in range(k)
                                                                 if j != i) / (k - 1) for i in range(k)])


def a_python_list(logits, labels):
    return list(with_kl_div(logits, labels))


def not_implemented(logits, labels):
    raise NotImplementedError


CHECKER_CASES = {
    "check_dml_losses": {
        "correct": [with_kl_div, vectorised],
        "wrong": [
            (reversed_kl, "the wrong way round"),
            (summed_over_peers, "you summed the KL terms over the other peers"),
            (without_ce, "each peer also learns from the labels"),
            (ce_only, "expected"),
            (peers_not_detached, "right value, wrong gradient"),
            (with_kdtools, "write the cohort's losses yourself"),
            (not_implemented, "not implemented yet"),
        ],
    },
}
