"""Correct and wrong answers to the data-free exercise (notebooks/05_paradigms/data_free_kd.ipynb), for
tests/test_exercises.py: check_bn_statistics_loss must accept the first and reject each of the second with its
hint."""
import torch


# ----------------------------------------------------------------------------- correct
def with_torch_var(features, running_mean, running_var):
    dims = (0, 2, 3)
    return (torch.linalg.vector_norm(features.var(dims, unbiased=False) - running_var)
            + torch.linalg.vector_norm(features.mean(dims) - running_mean))


def channels_first(features, running_mean, running_var):
    flat = features.transpose(0, 1).reshape(features.shape[1], -1)
    mean = flat.mean(1)
    var = ((flat - mean[:, None]) ** 2).mean(1)
    return torch.norm(running_var - var, 2) + torch.norm(running_mean - mean, 2)


# ----------------------------------------------------------------------------- wrong
def unbiased_variance(features, running_mean, running_var):
    dims = (0, 2, 3)
    return (torch.linalg.vector_norm(features.var(dims) - running_var)
            + torch.linalg.vector_norm(features.mean(dims) - running_mean))


def squared_norms(features, running_mean, running_var):
    dims = (0, 2, 3)
    return (((features.var(dims, unbiased=False) - running_var) ** 2).sum()
            + ((features.mean(dims) - running_mean) ** 2).sum())


def per_image_statistics(features, running_mean, running_var):
    var = features.var((2, 3), unbiased=False).mean(0)
    mean = features.mean((2, 3)).mean(0)
    return torch.linalg.vector_norm(var - running_var) + torch.linalg.vector_norm(mean - running_mean)


def standard_deviations(features, running_mean, running_var):
    dims = (0, 2, 3)
    return (torch.linalg.vector_norm(features.std(dims, unbiased=False) - running_var.sqrt())
            + torch.linalg.vector_norm(features.mean(dims) - running_mean))


def means_only(features, running_mean, running_var):
    return torch.linalg.vector_norm(features.mean((0, 2, 3)) - running_mean)


def batch_statistics_as_targets(features, running_mean, running_var):
    # compares the batch with itself: always zero
    dims = (0, 2, 3)
    mean, var = features.mean(dims), features.var(dims, unbiased=False)
    return torch.linalg.vector_norm(var - var.detach()) + torch.linalg.vector_norm(mean - mean.detach())


def not_implemented(features, running_mean, running_var):
    raise NotImplementedError


CHECKER_CASES = {
    "check_bn_statistics_loss": {
        "correct": [with_torch_var, channels_first],
        "wrong": [
            (unbiased_variance, "BIASED variance"),
            (squared_norms, "not its square"),
            (per_image_statistics, "per CHANNEL"),
            (standard_deviations, "compare VARIANCES"),
            (means_only, "two terms"),
            (batch_statistics_as_targets, "expected"),
            (not_implemented, "not implemented yet"),
        ],
    },
}
