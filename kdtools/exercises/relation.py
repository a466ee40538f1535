r"""Checkers of Module 4 (relation-based knowledge): FSP, relational KD, contrastive representation distillation.

References: :func:`kdtools.losses.fsp_matrix`, :func:`kdtools.losses.rkd_angle_loss` (its angle potential) and
:func:`kdtools.losses.crd_nce_loss`. Every ``check_*`` function defined here is exported by
:mod:`kdtools.exercises` and listed in its ``CHECKERS``.
"""
from __future__ import annotations

from ._harness import Case, CheckResult, ErrorHint, Mistake, run_checks  # noqa: F401  (used by the sections)


# ---- FSP (notebooks/04_relation/fsp.ipynb)

# ---- end of FSP


# ---- Relational KD (notebooks/04_relation/relational_kd.ipynb)
import torch as _torch  # noqa: E402  (this block's imports stay in this block)
import torch.nn.functional as _F  # noqa: E402


def _angle_potential(emb, vertex: str = "j", normalise: bool = True, zero_degenerate: bool = True,
                     flip: bool = False):
    """The potential with the vertex at index ``vertex`` of ``[i, j, k]``; the switches model mistakes."""
    # unit[v, a] = (e_a - e_v)/|e_a - e_v|: from vertex v towards a (0 when a == v, as F.normalize gives)
    towards = emb.unsqueeze(0) - emb.unsqueeze(1)
    unit = _F.normalize(towards, p=2, dim=2) if normalise else towards
    cos = _torch.einsum("vad,vbd->vab", unit, unit)  # [vertex, a, b]
    if flip:  # one side taken the wrong way round: e_j - e_i instead of e_i - e_j
        cos = -cos
    layout = {"j": "jik->ijk", "i": "ijk->ijk", "k": "kij->ijk"}[vertex]
    cos = _torch.einsum(layout, cos)
    if zero_degenerate:
        n = emb.shape[0]
        idx = _torch.arange(n)
        distinct = ((idx[:, None, None] != idx[None, :, None]) & (idx[None, :, None] != idx[None, None, :])
                    & (idx[:, None, None] != idx[None, None, :]))
        cos = cos * distinct.to(cos.dtype)
    return cos


def _rkd_embeddings(seed, batch, dim, scale=1.0):
    def make_args():
        return (scale * _torch.randn(batch, dim, generator=_torch.Generator().manual_seed(seed), dtype=_torch.float64),)
    return make_args


_RKD_ANGLE_MISTAKES = [
    Mistake("your angle is at the wrong vertex: entry [i, j, k] is ψ_A(t_i, t_j, t_k), the angle AT t_j between "
            "e^{{ij}} = (t_i − t_j)/‖t_i − t_j‖ and e^{{kj}} = (t_k − t_j)/‖t_k − t_j‖ (the paper's eq. 7). You put "
            "the vertex first, as the authors' code stores it (their [j, i, k] is the paper's [i, j, k]).",
            lambda emb: _angle_potential(emb, vertex="i")),
    Mistake("your angle is at the wrong vertex: you put it at t_k (the last index). Entry [i, j, k] is the angle "
            "AT t_j, between the unit vectors from t_j to t_i and from t_j to t_k.",
            lambda emb: _angle_potential(emb, vertex="k")),
    Mistake("you took the dot product of the raw difference vectors: normalise each of t_i − t_j and t_k − t_j "
            "to unit length first (F.normalize(..., dim=-1)), so that the entry is a cosine in [−1, 1].",
            lambda emb: _angle_potential(emb, normalise=False)),
    Mistake("one of your two vectors points the wrong way (e.g. t_j − t_i with t_k − t_j): both must start at "
            "the vertex t_j, e^{{ij}} ∝ t_i − t_j and e^{{kj}} ∝ t_k − t_j; reversing one flips every cosine's sign.",
            lambda emb: _angle_potential(emb, flip=True)),
    Mistake("your degenerate entries are not 0: whenever two of i, j, k are equal there is no triangle (i = k "
            "gives cos 0 = 1, i = j or k = j a zero vector). Set every entry with a repeated index to 0, so "
            "that they add nothing to the sum over the B(B−1)(B−2) genuine triangles.",
            lambda emb: _angle_potential(emb, zero_degenerate=False)),
]

_RKD_ANGLE_ERRORS = [
    ErrorHint(r"out of memory|can't allocate", "the [B, B, B] result is all you need: build the [B, B, D] "
              "difference vectors once and take one batched product (torch.einsum or torch.bmm)."),
    ErrorHint(r"TimeLimit|time", "compute all B³ cosines at once with broadcasting, without a Python loop over "
              "the triplets."),
]


def check_rkd_angle_potential(fn) -> CheckResult:
    r"""Check ``fn(emb)`` = the RKD angle potential of a batch, ``emb`` ``[B, D]`` → ``[B, B, B]``:

    .. math::
        A_{ijk} = \psi_A(t_i, t_j, t_k) = \langle e^{ij}, e^{kj}\rangle,\qquad
        e^{ij} = \frac{t_i - t_j}{\lVert t_i - t_j\rVert_2}

    (the cosine of the angle at vertex :math:`t_j`, the paper's eq. 7) for distinct ``i, j, k``, and 0 for
    every degenerate triple (two indices equal). Cases in float64 (distinct embeddings), one with the gradient
    with respect to ``emb``.
    """
    return run_checks(
        fn, name="rkd_angle_potential", signature="rkd_angle_potential(emb)",
        reference=_angle_potential,
        cases=[Case("4 samples in 3 dimensions", _rkd_embeddings(90, 4, 3)),
               Case("6 samples in 8 dimensions, far from the origin", _rkd_embeddings(91, 6, 8, scale=10.0)),
               Case("5 samples in 2 dimensions", _rkd_embeddings(92, 5, 2)),
               Case("3 samples in 16 dimensions: one triangle, 6 ordered triples", _rkd_embeddings(93, 3, 16)),
               Case("the gradient with respect to 5 samples in 4 dimensions", _rkd_embeddings(94, 5, 4), gradient=True),
               Case("a batch of 48 in 16 dimensions (110,592 triples)", _rkd_embeddings(95, 48, 16))],
        mistakes=_RKD_ANGLE_MISTAKES, error_hints=_RKD_ANGLE_ERRORS,
        nonfinite_hint="a degenerate triple divides a zero vector by its zero length: F.normalize (which "
                       "divides by max(‖v‖, ε)) gives 0 instead of nan, then set those entries to 0.",
        covers="the vertex, unit vectors, their direction, degenerate triples, a batch of 48",
        rtol=1e-6, atol=1e-9)
# ---- end of relational KD


# ---- Contrastive representation distillation (notebooks/04_relation/contrastive_rd.ipynb)

# ---- end of contrastive representation distillation


__all__ = sorted(name for name in dir() if name.startswith("check_"))
