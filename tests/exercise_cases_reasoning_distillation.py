"""Correct and wrong answers to the reasoning-distillation exercise
(notebooks/06_applications/reasoning_distillation.ipynb), for tests/test_exercises.py: check_sft_loss must accept
the first and reject each of the second with its hint."""
import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- correct
def with_a_boolean_mask(logits, tokens, prompt_len):
    targets = tokens[:, 1:]
    positions = torch.arange(1, tokens.shape[1])[None, :]
    keep = (positions >= prompt_len) & (targets != 0)
    return F.cross_entropy(logits[keep], targets[keep])


def with_ignore_index(logits, tokens, prompt_len):
    targets = tokens[:, 1:].clone()
    targets[:, :prompt_len - 1] = -100  # the prompt's targets
    targets[targets == 0] = -100  # padding
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def with_log_softmax(logits, tokens, prompt_len):
    log_p = logits.log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    weights = ((torch.arange(1, tokens.shape[1])[None, :] >= prompt_len) & (tokens[:, 1:] != 0)).float()
    return -(log_p * weights).sum() / weights.sum()


# ----------------------------------------------------------------------------- wrong
def prompt_counted(logits, tokens, prompt_len):
    targets = tokens[:, 1:]
    keep = targets != 0
    return F.cross_entropy(logits[keep], targets[keep])


def padding_counted(logits, tokens, prompt_len):
    return F.cross_entropy(logits[:, prompt_len - 1:].reshape(-1, logits.shape[-1]),
                           tokens[:, prompt_len:].reshape(-1))


def per_sequence_mean(logits, tokens, prompt_len):
    return torch.stack([with_a_boolean_mask(logits[i:i + 1], tokens[i:i + 1], prompt_len)
                        for i in range(len(tokens))]).mean()


def mask_one_late(logits, tokens, prompt_len):
    return with_a_boolean_mask(logits, tokens, prompt_len + 1)


def summed(logits, tokens, prompt_len):
    targets = tokens[:, 1:]
    keep = (torch.arange(1, tokens.shape[1])[None, :] >= prompt_len) & (targets != 0)
    return F.cross_entropy(logits[keep], targets[keep], reduction="sum")


def not_shifted(logits, tokens, prompt_len):
    targets = tokens[:, :-1]
    keep = (torch.arange(tokens.shape[1] - 1)[None, :] >= prompt_len) & (targets != 0)
    return F.cross_entropy(logits[keep], targets[keep])


def not_implemented(logits, tokens, prompt_len):
    raise NotImplementedError


CHECKER_CASES = {
    "check_sft_loss": {
        "correct": [with_a_boolean_mask, with_ignore_index, with_log_softmax],
        "wrong": [
            (prompt_counted, "you trained on the prompt too"),
            (padding_counted, "you counted the padding"),
            (per_sequence_mean, "you averaged each sequence's tokens first"),
            (mask_one_late, "your mask starts one position too late"),
            (summed, "divide by the number of response tokens"),
            (not_shifted, "expected"),
            (not_implemented, "not implemented yet"),
        ],
    },
}
