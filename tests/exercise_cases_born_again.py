"""Correct and wrong answers to the born-again exercise (notebooks/05_paradigms/born_again.ipynb), for
tests/test_exercises.py: check_bane_targets must accept the first and reject each of the second with its hint."""
import torch


# ----------------------------------------------------------------------------- correct
def mean_of_softmaxes(logits, temperature):
    return torch.softmax(logits / temperature, dim=-1).mean(dim=0)


def with_a_loop(logits, temperature):
    return sum(torch.softmax(z / temperature, dim=1) for z in logits) / len(logits)


def through_log_sum_exp(logits, temperature):
    log_p = torch.log_softmax(logits / temperature, dim=2)
    return (torch.logsumexp(log_p, dim=0) - torch.log(torch.tensor(float(len(logits))))).exp()


# ----------------------------------------------------------------------------- wrong
def softmax_of_mean_logits(logits, temperature):
    return torch.softmax(logits.mean(0) / temperature, dim=1)


def without_temperature(logits, temperature):
    return torch.softmax(logits, dim=2).mean(0)


def summed(logits, temperature):
    return torch.softmax(logits / temperature, dim=2).sum(0)


def log_probabilities(logits, temperature):
    return mean_of_softmaxes(logits, temperature).log()


def softmax_over_generations(logits, temperature):
    return torch.softmax(logits / temperature, dim=0).mean(0)


def not_implemented(logits, temperature):
    raise NotImplementedError


CHECKER_CASES = {
    "check_bane_targets": {
        "correct": [mean_of_softmaxes, with_a_loop, through_log_sum_exp],
        "wrong": [
            (softmax_of_mean_logits, "you averaged the LOGITS"),
            (without_temperature, "divide the logits by the temperature"),
            (summed, "you summed the generations' probabilities"),
            (log_probabilities, "return probabilities, not log-probabilities"),
            (softmax_over_generations, "expected"),
            (not_implemented, "not implemented yet"),
        ],
    },
}
