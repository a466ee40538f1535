"""Correct and wrong answers to the RKD angle-potential exercise (notebooks/04_relation/relational_kd.ipynb), for
tests/test_exercises.py: check_rkd_angle_potential must accept the first and reject each of the second with its hint."""
import torch
import torch.nn.functional as F


def _distinct(n):
    i = torch.arange(n)
    return (i[:, None, None] != i[None, :, None]) & (i[None, :, None] != i[None, None, :]) & (i[:, None, None] != i[None, None, :])


# ----------------------------------------------------------------------------- correct
def potential_with_einsum(emb):
    unit = F.normalize(emb.unsqueeze(1) - emb.unsqueeze(0), dim=2)  # unit[a, b] ∝ e_a − e_b
    cos = torch.einsum("ijd,kjd->ijk", unit, unit)
    return cos * _distinct(len(emb))


def potential_with_bmm_as_in_the_authors_code(emb):
    td = emb.unsqueeze(0) - emb.unsqueeze(1)            # td[j, i] = e_i − e_j: from the vertex j
    norm_td = F.normalize(td, p=2, dim=2)
    code = torch.bmm(norm_td, norm_td.transpose(1, 2))  # code[j, i, k]: vertex first
    return code.permute(1, 0, 2).masked_fill(~_distinct(len(emb)), 0.0)


def potential_from_the_gram_matrix(emb):
    g = emb @ emb.t()
    sq = g.diagonal()
    # (e_i − e_j)·(e_k − e_j) = G_ik − G_ij − G_jk + G_jj
    dots = g[:, None, :] - g[:, :, None] - g[None, :, :] + sq[None, :, None]
    length = (sq[:, None] + sq[None, :] - 2 * g).clamp_min(1e-30).sqrt()  # length[i, j] = ‖e_i − e_j‖
    cos = dots / (length[:, :, None] * length.t()[None, :, :])
    return torch.where(_distinct(len(emb)), cos, torch.zeros(()))


# ----------------------------------------------------------------------------- wrong
def potential_vertex_first_like_the_code(emb):
    unit = F.normalize(emb.unsqueeze(0) - emb.unsqueeze(1), dim=2)  # unit[i, j] ∝ e_j − e_i
    return torch.bmm(unit, unit.transpose(1, 2)) * _distinct(len(emb))


def potential_vertex_last(emb):
    unit = F.normalize(emb.unsqueeze(0) - emb.unsqueeze(1), dim=2)  # unit[k, a] ∝ e_a − e_k
    return torch.einsum("kid,kjd->ijk", unit, unit) * _distinct(len(emb))


def potential_unnormalised(emb):
    diff = emb.unsqueeze(1) - emb.unsqueeze(0)
    return torch.einsum("ijd,kjd->ijk", diff, diff) * _distinct(len(emb))


def potential_one_vector_reversed(emb):
    unit = F.normalize(emb.unsqueeze(1) - emb.unsqueeze(0), dim=2)
    return -torch.einsum("ijd,kjd->ijk", unit, unit) * _distinct(len(emb))


def potential_with_degenerate_entries(emb):
    unit = F.normalize(emb.unsqueeze(1) - emb.unsqueeze(0), dim=2)
    return torch.einsum("ijd,kjd->ijk", unit, unit)


def potential_dividing_by_zero_lengths(emb):
    diff = emb.unsqueeze(1) - emb.unsqueeze(0)
    unit = diff / diff.norm(dim=2, keepdim=True)
    return torch.einsum("ijd,kjd->ijk", unit, unit) * _distinct(len(emb))


def potential_not_implemented(emb):
    raise NotImplementedError


CHECKER_CASES = {
    "check_rkd_angle_potential": {
        "correct": [potential_with_einsum, potential_with_bmm_as_in_the_authors_code, potential_from_the_gram_matrix],
        "wrong": [
            (potential_vertex_first_like_the_code, "You put the vertex first"),
            (potential_vertex_last, "you put it at t_k"),
            (potential_unnormalised, "dot product of the raw difference vectors"),
            (potential_one_vector_reversed, "points the wrong way"),
            (potential_with_degenerate_entries, "your degenerate entries are not 0"),
            (potential_dividing_by_zero_lengths, "F.normalize"),
            (potential_not_implemented, "not implemented yet"),
        ],
    },
}
