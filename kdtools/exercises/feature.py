r"""Checkers of Module 3 (feature-based knowledge): FitNets hints, attention transfer, NST.

References: :func:`kdtools.losses.hint_loss` with :class:`kdtools.losses.ConvRegressor`,
:func:`kdtools.losses.attention_map` / :func:`kdtools.losses.at_loss` and :func:`kdtools.losses.nst_loss`.
Every ``check_*`` function defined here is exported by :mod:`kdtools.exercises` and listed in its ``CHECKERS``.
"""
from __future__ import annotations

from ._harness import Case, CheckResult, ErrorHint, Mistake, run_checks  # noqa: F401  (used by the sections)


# ---- FitNets (notebooks/03_feature/fitnets.ipynb)
# ---- end of FitNets


# ---- Attention transfer (notebooks/03_feature/attention_transfer.ipynb)
import torch as _torch  # noqa: E402
import torch.nn.functional as _F  # noqa: E402

from ..losses import at_loss as _at_loss_reference  # noqa: E402
from ..losses import attention_map as _attention_map_reference  # noqa: E402


def _at_random_map(seed, shape, relu=False, scale=1.0):
    feat = scale * _torch.randn(*shape, generator=_torch.Generator().manual_seed(seed))
    return feat.clamp_min(0) if relu else feat


def _at_map_case(description, seed, shape, q, relu=False, gradient=False):
    return Case(description, lambda: (_at_random_map(seed, shape, relu), q), {"q": q}, gradient)


def _at_attention_map_cases():
    return [
        _at_map_case("2 images × 3 channels × 4×5 positions, signed values, q = 2", 60, (2, 3, 4, 5), 2),
        _at_map_case("the same shape with q = 1: the absolute values matter", 61, (2, 3, 4, 5), 1),
        _at_map_case("q = 4", 62, (2, 3, 4, 5), 4),
        _at_map_case("post-ReLU features, 1 image × 8 channels × 7×7 positions, q = 2", 63, (1, 8, 7, 7), 2, relu=True),
        _at_map_case("the gradient with respect to a 2 × 4 × 3×3 feature map, q = 2", 64, (2, 4, 3, 3), 2, gradient=True),
    ]


def _at_powered(feat, q):
    return feat.abs().pow(q)


_AT_NO_POWER = ("you summed the channels without the power: the map is the sum of SQUARES (q = {q}),\n"
             "  A = Σ_c |F_c|^q, not Σ_c F_c.")
_AT_ABS_ONLY = ("you summed |F_c| (q = 1) whatever q is: raise each |F_c| to the power q = {q} before summing.")
_AT_NO_NORM = ("your map is not L2-normalised: divide each image's flattened map by its L2 norm over the\n"
            "  H·W positions (F.normalize(..., dim=1) on the [B, H*W] map).")
_AT_CHANNEL_NORM = ("you normalised over the CHANNEL axis: the attention map is normalised over the spatial\n"
                 "  positions, one norm per image, after summing over the channels.")
_AT_BATCH_NORM = ("you normalised over the batch axis (dim=0): each image's map gets its own L2 norm over its\n"
               "  H·W positions (dim=1 of the [B, H*W] map).")

_ATTENTION_MAP_MISTAKES = [
    Mistake(_AT_NO_POWER, lambda feat, q: _F.normalize(feat.sum(1).flatten(1), dim=1)),
    Mistake(_AT_ABS_ONLY, lambda feat, q: _F.normalize(feat.abs().sum(1).flatten(1), dim=1)),
    Mistake(_AT_NO_NORM, lambda feat, q: _at_powered(feat, q).sum(1).flatten(1)),
    Mistake(_AT_NO_NORM, lambda feat, q: _at_powered(feat, q).mean(1).flatten(1)),
    Mistake(_AT_CHANNEL_NORM, lambda feat, q: _F.normalize(_at_powered(feat, q), dim=1).sum(1).flatten(1)),
    Mistake(_AT_CHANNEL_NORM, lambda feat, q: _F.normalize(_F.normalize(_at_powered(feat, q), dim=1).sum(1).flatten(1),
                                                        dim=1)),
    Mistake(_AT_CHANNEL_NORM, lambda feat, q: _F.normalize(_at_powered(_F.normalize(feat, dim=1), q).sum(1).flatten(1),
                                                        dim=1)),
    Mistake(_AT_BATCH_NORM, lambda feat, q: _F.normalize(_at_powered(feat, q).sum(1).flatten(1), dim=0)),
]


def check_attention_map(fn) -> CheckResult:
    r"""Check ``fn(feat, q)`` against :func:`kdtools.losses.attention_map`: for ``feat`` ``[B, C, H, W]``,
    :math:`Q = \mathrm{vec}(\sum_c |F_c|^q) / \|\mathrm{vec}(\sum_c |F_c|^q)\|_2`, shape ``[B, H*W]``.
    Five checks: q = 2, 1 and 4 on signed features, post-ReLU features, the gradient."""
    return run_checks(
        fn, name="attention_map", signature="attention_map(feat, q)",
        reference=lambda feat, q: _attention_map_reference(feat, p=q), cases=_at_attention_map_cases(),
        mistakes=_ATTENTION_MAP_MISTAKES,
        error_hints=[ErrorHint(r"normalize|dim", "normalise the flattened [B, H*W] map along dim=1.")],
        nonfinite_hint="nan or inf: an all-zero map divided by its norm 0? F.normalize guards against that.",
        covers="q = 1, 2, 4, signed and post-ReLU features, gradients", atol=1e-6)


def _at_pair_case(description, seed, batch, student_channels, teacher_channels, size, relu=False, gradient=False,
               same_attention=False):
    def make_args():
        student = _at_random_map(seed, (batch, student_channels, size, size), relu)
        if same_attention:  # the teacher's channels are copies of the student's: identical attention maps
            teacher = student.repeat(1, teacher_channels // student_channels, 1, 1)
        else:
            teacher = _at_random_map(seed + 1, (batch, teacher_channels, size, size), relu, scale=3.0)
        return student, teacher

    return Case(description, make_args, {"B": batch, "HW": size * size}, gradient)


def _at_loss_cases():
    return [
        _at_pair_case("3 images, student 4 × 5×5, teacher 16 × 5×5, signed features", 70, 3, 4, 16, 5),
        _at_pair_case("post-ReLU features, 2 images, student 8 × 7×7, teacher 64 × 7×7", 72, 2, 8, 64, 7, relu=True),
        _at_pair_case("the same attention (teacher channels copy the student's): loss 0", 74, 2, 4, 8, 4,
                   same_attention=True),
        _at_pair_case("the gradient with respect to the student's 2 × 4 × 6×6 map", 76, 2, 4, 16, 6, gradient=True),
    ]


def _at_maps(student, teacher, attention=lambda f: _attention_map_reference(f, p=2)):
    return attention(student), attention(teacher.detach())


def _at_unnormalised(feat):
    return feat.pow(2).sum(1).flatten(1)


def _at_channel_normalised(feat):
    return _F.normalize(_F.normalize(feat.pow(2), dim=1).sum(1).flatten(1), dim=1)


_AT_LOSS_MISTAKES = [
    Mistake("that is the authors' CODE form, the mean of the squared differences over batch and\n"
            "  positions; the paper's equation takes the L2 norm (not squared) of Q^s − Q^t per image.",
            lambda s, t: (lambda qs, qt: (qs - qt).pow(2).mean())(*_at_maps(s, t))),
    Mistake("you squared the distance: the paper's loss is the L2 norm ‖Q^s − Q^t‖₂ itself (a square root\n"
            "  of the sum of squares), averaged over the {B} images.",
            lambda s, t: (lambda qs, qt: (qs - qt).pow(2).sum(1).mean())(*_at_maps(s, t))),
    Mistake("you summed the absolute differences (an L1 distance): the L2 norm is the square root of the\n"
            "  sum of SQUARED differences.",
            lambda s, t: (lambda qs, qt: (qs - qt).abs().sum(1).mean())(*_at_maps(s, t))),
    Mistake("you summed over the {B} images: average the per-image distances instead.",
            lambda s, t: (lambda qs, qt: (qs - qt).norm(dim=1).sum())(*_at_maps(s, t))),
    Mistake("you took one norm over the whole batch: compute ‖Q^s − Q^t‖₂ per image (dim=1), then average.",
            lambda s, t: (lambda qs, qt: (qs - qt).norm())(*_at_maps(s, t))),
    Mistake("your attention maps are not L2-normalised: divide each image's map by its norm over the H·W\n"
            "  positions before comparing; otherwise the loss depends on the scale of the features.",
            lambda s, t: (lambda qs, qt: (qs - qt).norm(dim=1).mean())(*_at_maps(s, t, _at_unnormalised))),
    Mistake("you normalised over the CHANNEL axis: sum |F_c|² over the channels first, then normalise the\n"
            "  map over its H·W positions.",
            lambda s, t: (lambda qs, qt: (qs - qt).norm(dim=1).mean())(*_at_maps(s, t, _at_channel_normalised))),
    Mistake("you summed the channels without squaring them (Σ_c F_c): the map is the sum of squares Σ_c F_c².",
            lambda s, t: (lambda qs, qt: (qs - qt).norm(dim=1).mean())(
                *_at_maps(s, t, lambda f: _F.normalize(f.sum(1).flatten(1), dim=1)))),
]


def check_at_loss(fn) -> CheckResult:
    r"""Check ``fn(student_feat, teacher_feat)`` against ``kdtools.losses.at_loss(..., p=2, mode="paper")``:
    the paper's distance for one layer pair, :math:`\frac1B\sum_b \|Q^s_b - Q^t_b\|_2` with
    :math:`Q = \mathrm{vec}(\sum_c F_c^2)/\|\cdot\|_2`; channel counts differ, spatial sizes agree.
    Four checks: signed and post-ReLU features, identical attention (loss 0), the gradient."""
    return run_checks(
        fn, name="at_loss", signature="at_loss(student_feat, teacher_feat)",
        reference=lambda s, t: _at_loss_reference(s, t, p=2, mode="paper"), cases=_at_loss_cases(),
        mistakes=_AT_LOSS_MISTAKES,
        error_hints=[ErrorHint(r"size of tensor a \(\d+\) must match|shapes cannot be multiplied",
                               "the two networks have different channel counts: sum over the channels first, "
                               "then compare the [B, H*W] maps.")],
        nonfinite_hint="nan: a norm of an all-zero vector? Normalise with F.normalize (it guards against 0).",
        covers="signed and post-ReLU features, equal maps, gradients", atol=1e-6)
# ---- end of attention transfer


# ---- Neuron selectivity transfer (notebooks/03_feature/neuron_selectivity_transfer.ipynb)
# ---- end of neuron selectivity transfer


__all__ = sorted(name for name in dir() if name.startswith("check_"))
