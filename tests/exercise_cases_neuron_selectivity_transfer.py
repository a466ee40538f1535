"""Correct and wrong answers to the NST exercise (MMD² with the polynomial kernel); merged into
``tests/test_exercises.py``'s CHECKER_CASES."""
import torch
import torch.nn.functional as F

from kdtools.losses import nst_loss


def _unit_rows(feat):
    return F.normalize(feat.flatten(2), dim=2)


def mmd_by_hand(student_feat, teacher_feat):
    s, t = _unit_rows(student_feat), _unit_rows(teacher_feat.detach())

    def mean_k(a, b):
        return (a @ b.transpose(1, 2)).pow(2).mean(dim=(1, 2))

    return (mean_k(s, s) + mean_k(t, t) - 2 * mean_k(s, t)).mean()


def mmd_via_gram_of_positions(student_feat, teacher_feat):
    # with k = (x·y)², MMD² = ‖mean_i s_i s_iᵀ − mean_j t_j t_jᵀ‖²_F: second moments over positions
    s, t = _unit_rows(student_feat), _unit_rows(teacher_feat)
    g_s = s.transpose(1, 2) @ s / s.shape[1]
    g_t = t.transpose(1, 2) @ t / t.shape[1]
    return (g_s - g_t).pow(2).sum(dim=(1, 2)).mean()


def mmd_with_loops(student_feat, teacher_feat):
    total = 0.0
    for s_map, t_map in zip(student_feat, teacher_feat):
        s = [c.flatten() / c.flatten().norm().clamp_min(1e-12) for c in s_map]
        t = [c.flatten() / c.flatten().norm().clamp_min(1e-12) for c in t_map]
        ss = sum((a @ b) ** 2 for a in s for b in s) / len(s) ** 2
        tt = sum((a @ b) ** 2 for a in t for b in t) / len(t) ** 2
        st = sum((a @ b) ** 2 for a in s for b in t) / (len(s) * len(t))
        total = total + ss + tt - 2 * st
    return total / len(student_feat)


def _parts(student_feat, teacher_feat, normalise=True, eps=1e-12):
    if normalise:
        return F.normalize(student_feat.flatten(2), dim=2, eps=eps), F.normalize(teacher_feat.flatten(2), dim=2, eps=eps)
    return student_feat.flatten(2), teacher_feat.flatten(2)


def mmd_without_cross_term(student_feat, teacher_feat):
    s, t = _parts(student_feat, teacher_feat)
    return ((s @ s.transpose(1, 2)).pow(2).mean(dim=(1, 2)) + (t @ t.transpose(1, 2)).pow(2).mean(dim=(1, 2))).mean()


def mmd_raw_maps(student_feat, teacher_feat):
    s, t = _parts(student_feat, teacher_feat, normalise=False)
    k = lambda a, b: (a @ b.transpose(1, 2)).pow(2).mean(dim=(1, 2))  # noqa: E731
    return (k(s, s) + k(t, t) - 2 * k(s, t)).mean()


def mmd_normalised_over_channels(student_feat, teacher_feat):
    s = F.normalize(student_feat.flatten(2), dim=1)
    t = F.normalize(teacher_feat.flatten(2), dim=1)
    k = lambda a, b: (a @ b.transpose(1, 2)).pow(2).mean(dim=(1, 2))  # noqa: E731
    return (k(s, s) + k(t, t) - 2 * k(s, t)).mean()


def mmd_unbiased(student_feat, teacher_feat):
    s, t = _parts(student_feat, teacher_feat)

    def u_mean(a):
        k = (a @ a.transpose(1, 2)).pow(2)
        n = a.shape[1]
        return (k.sum(dim=(1, 2)) - k.diagonal(dim1=1, dim2=2).sum(dim=1)) / (n * (n - 1))

    return (u_mean(s) + u_mean(t) - 2 * (s @ t.transpose(1, 2)).pow(2).mean(dim=(1, 2))).mean()


def mmd_linear_kernel(student_feat, teacher_feat):
    s, t = _parts(student_feat, teacher_feat)
    return (s.mean(1) - t.mean(1)).pow(2).sum(-1).mean()


def mmd_summed_over_batch(student_feat, teacher_feat):
    return mmd_by_hand(student_feat, teacher_feat) * student_feat.shape[0]


def mmd_per_sample(student_feat, teacher_feat):
    s, t = _parts(student_feat, teacher_feat)
    k = lambda a, b: (a @ b.transpose(1, 2)).pow(2).mean(dim=(1, 2))  # noqa: E731
    return k(s, s) + k(t, t) - 2 * k(s, t)


def mmd_norm_without_guard(student_feat, teacher_feat):
    s = student_feat.flatten(2) / student_feat.flatten(2).norm(dim=2, keepdim=True)
    t = teacher_feat.flatten(2) / teacher_feat.flatten(2).norm(dim=2, keepdim=True)
    k = lambda a, b: (a @ b.transpose(1, 2)).pow(2).mean(dim=(1, 2))  # noqa: E731
    return (k(s, s) + k(t, t) - 2 * k(s, t)).mean()


def mmd_concatenated_channels(student_feat, teacher_feat):
    s, t = _parts(student_feat, teacher_feat)
    return (s @ t).sum()  # fails for C_s ≠ C_t


def mmd_calls_kdtools(student_feat, teacher_feat):
    return nst_loss(student_feat, teacher_feat)


def not_implemented(*args):
    raise NotImplementedError("nst_poly_mmd: replace this line with your implementation")


CHECKER_CASES = {
    "check_nst_poly_mmd": {
        "correct": [mmd_by_hand, mmd_via_gram_of_positions, mmd_with_loops],
        "wrong": [
            (mmd_without_cross_term, "you left out the cross term"),
            (mmd_raw_maps, "normalise EACH channel's map first"),
            (mmd_normalised_over_channels, "you normalised over the channel axis"),
            (mmd_unbiased, "UNBIASED estimator of MMD²"),
            (mmd_linear_kernel, "that is the linear kernel"),
            (mmd_summed_over_batch, "B = 2 times too large"),
            (mmd_per_sample, "return one number"),
            (mmd_norm_without_guard, "a dead ReLU) has norm 0"),
            (mmd_concatenated_channels, "compute the three Gram matrices"),
            (mmd_calls_kdtools, "calls kdtools.losses.nst_loss"),
            (not_implemented, "not implemented yet"),
        ],
    },
}
