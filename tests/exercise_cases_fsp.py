"""Correct and wrong answers to the FSP exercise (notebooks/04_relation/fsp.ipynb), for tests/test_exercises.py:
check_fsp_matrix must accept the first and reject each of the second with its hint."""
import torch


# ----------------------------------------------------------------------------- correct
def fsp_with_bmm(feat_a, feat_b):
    a, b = feat_a.flatten(2), feat_b.flatten(2)
    return torch.bmm(a, b.transpose(1, 2)) / a.shape[-1]


def fsp_with_einsum(feat_a, feat_b):
    h, w = feat_a.shape[-2:]
    return torch.einsum("bihw,bjhw->bij", feat_a, feat_b) / (h * w)


def fsp_with_matmul_and_mean(feat_a, feat_b):
    # the mean over positions of the outer products of the channel vectors
    a = feat_a.flatten(2).transpose(1, 2)  # [B, hw, m]
    b = feat_b.flatten(2).transpose(1, 2)  # [B, hw, n]
    return (a.unsqueeze(-1) * b.unsqueeze(-2)).mean(dim=1)


def fsp_with_a_loop_over_the_batch(feat_a, feat_b):
    return torch.stack([a.flatten(1) @ b.flatten(1).T / a[0].numel() for a, b in zip(feat_a, feat_b)])


# ----------------------------------------------------------------------------- wrong
def fsp_without_dividing(feat_a, feat_b):
    return torch.bmm(feat_a.flatten(2), feat_b.flatten(2).transpose(1, 2))


def fsp_transposed(feat_a, feat_b):
    return fsp_with_bmm(feat_b, feat_a)


def fsp_einsum_transposed(feat_a, feat_b):
    return torch.einsum("bihw,bjhw->bji", feat_a, feat_b) / (feat_a.shape[-2] * feat_a.shape[-1])


def fsp_summed_over_the_batch(feat_a, feat_b):
    return torch.einsum("bihw,bjhw->ij", feat_a, feat_b) / (feat_a.shape[-2] * feat_a.shape[-1])


def fsp_averaged_over_the_batch_and_broadcast(feat_a, feat_b):
    return fsp_with_bmm(feat_a, feat_b).mean(0, keepdim=True).expand(len(feat_a), -1, -1)


def fsp_einsum_contracting_the_batch(feat_a, feat_b):
    return torch.einsum("bihw,cjhw->bij", feat_a, feat_b) / (feat_a.shape[-2] * feat_a.shape[-1])


def fsp_second_map_reshaped(feat_a, feat_b):
    b = feat_b.reshape(len(feat_b), -1, feat_b.shape[1])  # [B, hw, n], but the entries are scrambled
    return torch.bmm(feat_a.flatten(2), b) / b.shape[1]


def fsp_divided_by_the_batch_too(feat_a, feat_b):
    return fsp_with_bmm(feat_a, feat_b) / len(feat_a)


def fsp_with_kdtools(feat_a, feat_b):
    from kdtools.losses import fsp_matrix
    return fsp_matrix(feat_a, feat_b)


def fsp_second_map_not_transposed(feat_a, feat_b):
    return torch.bmm(feat_a.flatten(2), feat_b.flatten(2)) / feat_a[0, 0].numel()


def fsp_not_implemented(feat_a, feat_b):
    raise NotImplementedError


CHECKER_CASES = {
    "check_fsp_matrix": {
        "correct": [fsp_with_bmm, fsp_with_einsum, fsp_with_matmul_and_mean, fsp_with_a_loop_over_the_batch],
        "wrong": [
            (fsp_without_dividing, "without dividing"),
            (fsp_transposed, "your G is transposed"),
            (fsp_einsum_transposed, "your G is transposed"),
            (fsp_summed_over_the_batch, "you summed or averaged over the batch"),
            (fsp_averaged_over_the_batch_and_broadcast, "you summed or averaged over the batch"),
            (fsp_einsum_contracting_the_batch, "the OTHER images' maps"),
            (fsp_second_map_reshaped, "scrambles"),
            (fsp_divided_by_the_batch_too, "divided by the batch size too"),
            (fsp_with_kdtools, "write the FSP matrix yourself"),
            (fsp_second_map_not_transposed, "the inner dimensions must both be the h·w positions"),
            (fsp_not_implemented, "not implemented yet"),
        ],
    },
}
