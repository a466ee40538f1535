r"""Checkers of Module 4 (relation-based knowledge): FSP, relational KD, contrastive representation distillation.

References: :func:`kdtools.losses.fsp_matrix`, :func:`kdtools.losses.rkd_angle_loss` (its angle potential) and
:func:`kdtools.losses.crd_nce_loss`. Every ``check_*`` function defined here is exported by
:mod:`kdtools.exercises` and listed in its ``CHECKERS``.
"""
from __future__ import annotations

from ._harness import Case, CheckResult, ErrorHint, Mistake, run_checks  # noqa: F401  (used by the sections)


# ---- FSP (notebooks/04_relation/fsp.ipynb)
import torch as _fsp_torch  # noqa: E402  (this block's imports stay in this block)

from ..losses import fsp_matrix as _fsp_reference  # noqa: E402


def _fsp_maps(seed, batch, m, n, size, relu=False):
    gen = _fsp_torch.Generator().manual_seed(seed)
    a = _fsp_torch.randn(batch, m, *size, generator=gen)
    b = _fsp_torch.randn(batch, n, *size, generator=gen) + 0.5  # an offset, so that the batch sums do not cancel
    return (a.clamp_min(0), b.clamp_min(0)) if relu else (a, b)


def _fsp_case(description, seed, batch, m, n, size, relu=False, gradient=False):
    return Case(description, lambda: _fsp_maps(seed, batch, m, n, size, relu),
                {"m": m, "n": n, "hw": size[0] * size[1]}, gradient)


def _fsp_cases():
    return [
        _fsp_case("3 images, m = 2 and n = 5 channels, 4×3 positions", 70, 3, 2, 5, (4, 3)),
        _fsp_case("m = n = 3 channels, so a transposed G has the right shape", 71, 2, 3, 3, (5, 5)),
        _fsp_case("post-ReLU maps of the student's stage2 → stage3 sizes, 4 images × 8 → 16 channels × 7×7",
                  72, 4, 8, 16, (7, 7), relu=True),
        _fsp_case("the gradient with respect to feat_a, 2 images × 3 → 4 channels × 3×3", 73, 2, 3, 4, (3, 3),
                  gradient=True),
    ]


def _rows(feat):
    return feat.flatten(2)  # [B, C, h*w]


_FSP_NO_HW = ("you summed over the h·w positions without dividing: G is the MEAN over the positions,\n"
              "  G_ij = (1/(h·w)) Σ_s,t F1_s,t,i · F2_s,t,j (here h·w = {hw}).")
_FSP_TRANSPOSED = ("your G is transposed: its rows must index the channels of the FIRST map (m = {m}) and its\n"
                   "  columns those of the second (n = {n}), shape [B, m, n]: F1 [B, m, h·w] @ F2ᵀ [B, h·w, n].")
_FSP_BATCH = ("you summed or averaged over the batch: each image has its own FSP matrix, so keep the batch\n"
              "  axis, [B, m, n] (torch.bmm, or 'b' on both sides of the einsum: 'bihw,bjhw->bij').")
_FSP_CROSS = ("you multiplied each image's map with the OTHER images' maps: the einsum contracts the second\n"
              "  map's batch axis. Use the same batch letter for both maps and keep it in the output: "
              "'bihw,bjhw->bij'.")
_FSP_RESHAPE = ("you reshaped the second map from [B, n, h, w] to [B, h·w, n] with view/reshape, which scrambles\n"
                "  its entries: flatten it to [B, n, h·w] first and then transpose it (.transpose(1, 2)).")
_FSP_BATCH_MEAN = ("you divided by the batch size too: each image's G is divided by h·w = {hw} only.")

_FSP_MISTAKES = [
    Mistake(_FSP_NO_HW, lambda a, b: _fsp_torch.bmm(_rows(a), _rows(b).transpose(1, 2))),
    Mistake(_FSP_TRANSPOSED, lambda a, b: _fsp_reference(a, b).transpose(1, 2)),
    Mistake(_FSP_TRANSPOSED, lambda a, b: _fsp_torch.bmm(_rows(b), _rows(a).transpose(1, 2))),
    Mistake(_FSP_BATCH, lambda a, b: _fsp_reference(a, b).sum(0)),
    Mistake(_FSP_BATCH, lambda a, b: _fsp_reference(a, b).mean(0)),
    Mistake(_FSP_BATCH, lambda a, b: _fsp_reference(a, b).sum(0, keepdim=True).expand(len(a), -1, -1)),
    Mistake(_FSP_BATCH, lambda a, b: _fsp_reference(a, b).mean(0, keepdim=True).expand(len(a), -1, -1)),
    Mistake(_FSP_CROSS, lambda a, b: _fsp_torch.einsum("bihw,cjhw->bij", a, b) / (a.shape[-2] * a.shape[-1])),
    Mistake(_FSP_CROSS, lambda a, b: _fsp_torch.einsum("bihw,cjhw->cij", a, b) / (a.shape[-2] * a.shape[-1])),
    Mistake(_FSP_RESHAPE, lambda a, b: _fsp_torch.bmm(_rows(a), b.reshape(len(b), -1, b.shape[1]))
            / (a.shape[-2] * a.shape[-1])),
    Mistake(_FSP_BATCH_MEAN, lambda a, b: _fsp_reference(a, b) / len(a)),
]

_FSP_FORBIDDEN = {name: "write the FSP matrix yourself: kdtools' fsp_matrix is the reference this checker "
                        "compares with." for name in ("kdtools.losses.fsp_matrix", "kdtools.losses.relation.fsp_matrix")}


def check_fsp_matrix(fn) -> CheckResult:
    r"""Check ``fn(feat_a, feat_b)`` = the FSP matrix of two maps of the same spatial size:
    :math:`G_{ij} = \frac{1}{hw}\sum_{s,t} F^a_{s,t,i} F^b_{s,t,j}` for ``feat_a`` ``[B, m, h, w]`` and ``feat_b``
    ``[B, n, h, w]``, one ``[m, n]`` matrix per image, shape ``[B, m, n]``.

    Four checks: m ≠ n, m = n (a transposed G has the right shape), post-ReLU stage sizes, the gradient.
    """
    return run_checks(
        fn, name="fsp_matrix", signature="fsp_matrix(feat_a, feat_b)", reference=_fsp_reference,
        cases=_fsp_cases(), mistakes=_FSP_MISTAKES, forbidden=_FSP_FORBIDDEN,
        error_hints=[ErrorHint(r"mat1 and mat2|batch1|batch2|size of tensor|must match|Expected size",
                               "the inner dimensions must both be the h·w positions: multiply F1 flattened to "
                               "[B, m, h·w] with F2 flattened to [B, n, h·w] and transposed to [B, h·w, n].")],
        covers="1/(h·w), [B, m, n], one G per image, gradients",
        rtol=1e-4, atol=1e-6)
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
        covers="vertex, normalising, direction, degenerate, B = 48",
        rtol=1e-6, atol=1e-9)
# ---- end of relational KD


# ---- Contrastive representation distillation (notebooks/04_relation/contrastive_rd.ipynb)
import torch as _torch  # noqa: E402  (this lesson's checker builds its cases with torch)


def _crd_scores(pos_logits, neg_logits):
    return _torch.cat([pos_logits[:, None], neg_logits], dim=1).exp()


def _crd_nce_reference(pos_logits, neg_logits, n_data):
    from ..losses import crd_nce_loss  # imported late: the losses package is the reference, not the student's tool
    return crd_nce_loss(_crd_scores(pos_logits, neg_logits), n_data)


def _crd_nce_variant(pos_logits, neg_logits, n_data, noise=None, negatives="sum", batch="mean", neg_log="1-h",
                     sign=-1.0):
    """The NCE loss with one part changed; ``noise`` is the constant added to e^l (default N/M)."""
    n = neg_logits.shape[1]
    noise = n / n_data if noise is None else noise(n, n_data)
    log_h = lambda l: l - _torch.log(l.exp() + noise)
    log_not_h = lambda l: _torch.log(_torch.as_tensor(noise, dtype=l.dtype)) - _torch.log(l.exp() + noise)
    neg = (log_not_h if neg_log == "1-h" else log_h)(neg_logits)
    neg = neg.sum(1) if negatives == "sum" else neg.mean(1)
    per_sample = log_h(pos_logits) + neg
    return sign * (per_sample.mean() if batch == "mean" else per_sample.sum())


def _crd_infonce(pos_logits, neg_logits, n_data):
    logits = _torch.cat([pos_logits[:, None], neg_logits], dim=1)
    return -_torch.log_softmax(logits, dim=1)[:, 0].mean()


def _crd_case(description, seed, batch, negatives, n_data, scale, gradient=False):
    def make_args():
        gen = _torch.Generator().manual_seed(seed)
        pos = scale * (0.5 + 0.5 * _torch.rand(batch, generator=gen, dtype=_torch.float64))
        neg = scale * (2 * _torch.rand(batch, negatives, generator=gen, dtype=_torch.float64) - 1)
        return pos, neg, n_data
    return Case(description, make_args, {"N": negatives, "M": n_data, "B": batch}, gradient)


_CRD_NCE_MISTAKES = [
    Mistake("your value has the opposite sign: the critic's objective E[log h] + N·E[log(1 − h)] is\n"
            "  MAXIMISED; the loss to minimise is its negative.",
            lambda p, n, m: _crd_nce_variant(p, n, m, sign=1.0)),
    Mistake("for a negative pair the critic should answer 'not a pair': its term is log(1 − h), not log h\n"
            "  (1 − h = (N/M) / (e^l + N/M)).",
            lambda p, n, m: _crd_nce_variant(p, n, m, neg_log="h")),
    Mistake("your critic lacks the constant N/M = {N}/{M}: h = e^l / (e^l + N/M), not the sigmoid\n"
            "  e^l / (e^l + 1). N/M is N times the noise probability 1/M of a uniformly drawn sample.",
            lambda p, n, m: _crd_nce_variant(p, n, m, noise=lambda k, d: 1.0)),
    Mistake("your constant is 1/M: the critic adds N/M = {N}/{M} (N negatives, each drawn with\n"
            "  probability 1/M).",
            lambda p, n, m: _crd_nce_variant(p, n, m, noise=lambda k, d: 1.0 / d)),
    Mistake("your constant is N: the critic adds N/M = {N}/{M}, N divided by the data-set size M.",
            lambda p, n, m: _crd_nce_variant(p, n, m, noise=lambda k, d: float(k))),
    Mistake("your constant is M/N: the critic adds N/M = {N}/{M} (it grows with the number of negatives).",
            lambda p, n, m: _crd_nce_variant(p, n, m, noise=lambda k, d: d / k)),
    Mistake("you counted the positive among the N negatives: N = neg_logits.shape[1] = {N}, so the\n"
            "  constant is {N}/{M}, not (N + 1)/M.",
            lambda p, n, m: _crd_nce_variant(p, n, m, noise=lambda k, d: (k + 1) / d)),
    Mistake("you AVERAGED the {N} negative terms: the objective has N·E[log(1 − h)], i.e. the SUM of\n"
            "  log(1 − h) over each sample's negatives.",
            lambda p, n, m: _crd_nce_variant(p, n, m, negatives="mean")),
    Mistake("you summed over the batch: average the per-sample terms over the {B} samples.",
            lambda p, n, m: _crd_nce_variant(p, n, m, batch="sum")),
    Mistake("that is the InfoNCE loss (a softmax over the positive and the negatives); CRD's NCE treats each\n"
            "  pair as a binary 'pair or not' decision with the critic h = e^l / (e^l + N/M).",
            _crd_infonce),
]


def check_crd_nce(fn) -> CheckResult:
    r"""Check ``fn(pos_logits, neg_logits, n_data)`` = CRD's NCE loss for one batch, against
    :func:`kdtools.losses.crd_nce_loss` on the scores :math:`e^{l}`:

    .. math::
        h(l) = \frac{e^{l}}{e^{l} + N/M},\qquad
        \mathcal L = -\frac1B\sum_b\Big[\log h(l^+_b) + \sum_{k=1}^{N}\log\big(1 - h(l^-_{b,k})\big)\Big]

    with ``pos_logits`` :math:`l^+` ``[B]``, ``neg_logits`` :math:`l^-` ``[B, N]`` (logits
    :math:`z^{t\top} z^s/\tau`) and ``n_data`` :math:`M`. Four checks: generic logits, N = M, logits as large as
    τ = 0.07 makes them, the gradient with respect to the positive logits."""
    return run_checks(
        fn, name="crd_nce", signature="nce_loss(pos_logits, neg_logits, n_data)",
        reference=_crd_nce_reference,
        cases=[_crd_case("3 samples, N = 5 negatives, M = 40", 90, 3, 5, 40, 3.0),
               _crd_case("2 samples, N = M = 8: every sample drawn once on average", 91, 2, 8, 8, 2.0),
               _crd_case("unit vectors at τ = 0.07: logits up to ±14.3; 4 samples, N = 328, M = 1,000", 92, 4,
                         328, 1000, 1 / 0.07),
               _crd_case("the gradient with respect to the positive logits", 93, 3, 6, 50, 2.0, gradient=True)],
        mistakes=_CRD_NCE_MISTAKES,
        error_hints=[ErrorHint(r"size of tensor a \(\d+\) must match|must match the size",
                               "pos_logits is [B] and neg_logits [B, N]: add a column axis to the positives "
                               "(pos_logits[:, None]) where you combine them.")],
        nonfinite_hint="nan or inf: exp of a large logit? In float64 e^14.3 is fine; log of 0 is not.",
        covers="N/M, Σ log(1 − h), batch mean, large logits, gradients",
        rtol=1e-4, atol=1e-6)
# ---- end of contrastive representation distillation


__all__ = sorted(name for name in dir() if name.startswith("check_"))
