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

# ---- end of relational KD


# ---- Contrastive representation distillation (notebooks/04_relation/contrastive_rd.ipynb)

# ---- end of contrastive representation distillation


__all__ = sorted(name for name in dir() if name.startswith("check_"))
