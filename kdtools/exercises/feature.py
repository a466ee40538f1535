r"""Checkers of Module 3 (feature-based knowledge): FitNets hints, attention transfer, NST.

References: :func:`kdtools.losses.hint_loss` with :class:`kdtools.losses.ConvRegressor`,
:func:`kdtools.losses.attention_map` / :func:`kdtools.losses.at_loss` and :func:`kdtools.losses.nst_loss`.
Every ``check_*`` function defined here is exported by :mod:`kdtools.exercises` and listed in its ``CHECKERS``.
"""
from __future__ import annotations

from ._harness import Case, CheckResult, ErrorHint, Mistake, run_checks  # noqa: F401  (used by the sections)


# ---- FitNets (notebooks/03_feature/fitnets.ipynb)
import torch as _torch

#: the exercise's hook points: both just before a ReLU (after the last BatchNorm of stage 2), both 14×14
FITNETS_GUIDED, FITNETS_HINT = "stage2.bn1", "stage2.bn2"


def _fitnets_hooked(student, teacher, images, guided=FITNETS_GUIDED, hint=FITNETS_HINT):
    from ..features import extract

    return extract(student, [guided], images)[guided], extract(teacher, [hint], images)[hint]


def _project(feat, weight):
    return _torch.einsum("os,bshw->bohw", weight, feat)


def _fitnets_hint_reference(student, teacher, images, weight, guided=FITNETS_GUIDED, hint=FITNETS_HINT,
                            reduce="mean"):
    s, t = _fitnets_hooked(student, teacher, images, guided, hint)
    diff = _project(s, weight) - t
    return {"mean": diff.pow(2).mean(), "sum": diff.pow(2).sum(), "half": 0.5 * diff.pow(2).sum()}[reduce]


def _fitnets_teacher_to_student(student, teacher, images, weight):
    s, t = _fitnets_hooked(student, teacher, images)
    return (s - _project(t, weight.T)).pow(2).mean()


def _fitnets_no_regressor(student, teacher, images, weight):
    s, t = _fitnets_hooked(student, teacher, images)
    return (s - t[:, :s.shape[1]]).pow(2).mean()


def _fitnets_case(description, seed, batch):
    def make_args():
        from ..models import build_model

        gen = _torch.Generator().manual_seed(seed)
        with _torch.random.fork_rng():
            _torch.manual_seed(seed)
            student, teacher = build_model("cnn-4x1"), build_model("cnn-32x2")
        for model in (student, teacher):
            for module in model.modules():  # trained-looking BatchNorms, so that BN's output is not the conv's
                if isinstance(module, _torch.nn.BatchNorm2d):
                    module.running_mean.copy_(_torch.randn(module.num_features, generator=gen) * 0.3)
                    module.running_var.copy_(_torch.rand(module.num_features, generator=gen) + 0.5)
                    module.weight.data.copy_(_torch.rand(module.num_features, generator=gen) + 0.5)
                    module.bias.data.copy_(_torch.randn(module.num_features, generator=gen) * 0.2)
            model.eval()
        images = _torch.rand(batch, 1, 28, 28, generator=gen)
        weight = _torch.randn(64, 8, generator=gen) / 8 ** 0.5
        return student, teacher, images, weight
    return Case(description, make_args)


_FITNETS_MISTAKES = [
    Mistake("you summed the squared differences: take their mean over all B·C_t·H·W entries (the lesson's "
            "hint_loss, nn.MSELoss), so that the hint's weight does not depend on the map's size.",
            lambda *args: _fitnets_hint_reference(*args, reduce="sum")),
    Mistake("that is the paper's ½‖u_h − r(v_g)‖², a sum: take the mean over all entries instead.",
            lambda *args: _fitnets_hint_reference(*args, reduce="half")),
    Mistake("you matched after the student's ReLU (stage2.relu1): the teacher's hint point stage2.bn2 is "
            "before its ReLU and has negative values a rectified student map can never reach. Hook the "
            "student's stage2.bn1.",
            lambda *args: _fitnets_hint_reference(*args, guided="stage2.relu1")),
    Mistake("you hooked both networks after their ReLUs (stage2.relu1 / stage2.relu2): the exercise "
            "matches the pre-ReLU maps stage2.bn1 and stage2.bn2.",
            lambda *args: _fitnets_hint_reference(*args, guided="stage2.relu1", hint="stage2.relu2")),
    Mistake("you hooked the whole stages (their pooled, post-ReLU outputs): hook stage2.bn1 in the student "
            "and stage2.bn2 in the teacher.",
            lambda *args: _fitnets_hint_reference(*args, guided="stage2", hint="stage2")),
    Mistake("you projected the teacher into the student's space (Wᵀ applied to the teacher's map). The "
            "regressor maps the STUDENT's C_s channels to the teacher's C_t: r(v) = W v with W of shape "
            "[C_t, C_s]; the teacher's hint is the fixed target.",
            _fitnets_teacher_to_student),
    Mistake("you compared the student's map with the teacher's first C_s channels: map the student's map "
            "through the regressor W first (a 1×1 convolution, C_s → C_t channels).",
            _fitnets_no_regressor),
]

_FITNETS_ERRORS = [
    ErrorHint(r"size of tensor a \(8\) must match the size of tensor b \(64\)|"
              r"size of tensor a \(64\) must match the size of tensor b \(8\)",
              "the student's map has C_s = 8 channels and the teacher's C_t = 64: apply the regressor "
              "r(v) = W v (W is [C_t, C_s]) to the student's map before comparing."),
    ErrorHint(r"einsum|mat1 and mat2|shapes cannot be multiplied|expected input.*channels",
              "W has shape [C_t, C_s] = [64, 8]: it maps the student's 8 channels to the teacher's 64, "
              "e.g. torch.einsum('ts,bshw->bthw', weight, student_map)."),
    ErrorHint(r"unknown layer name", "hook the student's 'stage2.bn1' and the teacher's 'stage2.bn2'."),
]


def check_fitnets_hint(fn) -> CheckResult:
    r"""Check ``fn(student, teacher, images, weight)`` = the FitNets hint loss
    :math:`\mathrm{mean}\big((W v_g - u_h)^2\big)` between the student's guided map :math:`v_g` at
    ``stage2.bn1`` ([B, 8, 14, 14] in ``cnn-4x1``) mapped by the 1×1 regressor ``weight`` [C_t, C_s], and
    the teacher's hint :math:`u_h` at ``stage2.bn2`` ([B, 64, 14, 14] in ``cnn-32x2``), both pre-ReLU.

    Two checks: randomly initialised networks with trained-looking BatchNorms, batches of 4 and 3.
    """
    return run_checks(
        fn, name="fitnets_hint", signature="fitnets_hint(student, teacher, images, weight)",
        reference=_fitnets_hint_reference,
        cases=[_fitnets_case("cnn-4x1 student, cnn-32x2 teacher, 4 images", 0, 4),
               _fitnets_case("other weights, 3 images", 1, 3)],
        mistakes=_FITNETS_MISTAKES, error_hints=_FITNETS_ERRORS,
        covers="pre-ReLU hook points, the regressor's direction, the mean", rtol=1e-4, atol=1e-6)
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
import torch  # noqa: E402  (this lesson's checker builds its cases with torch)


def _nst_reference(student_feat, teacher_feat):
    from ..losses import nst_loss  # imported late: the losses package is the reference, not the student's tool
    return nst_loss(student_feat, teacher_feat, kernel="poly")


def _channel_vectors(feat, normalise="channel"):
    flat = feat.flatten(2)  # [B, C, HW]: one row per channel map
    if normalise == "channel":
        return flat / flat.norm(dim=2, keepdim=True).clamp_min(1e-12)
    if normalise == "position":  # over the channel axis: each position's C-vector has norm 1
        return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if normalise == "sample":  # the whole [C, HW] map of a sample at once
        return flat / flat.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return flat


def _gram_means(s, t, power=2, unbiased=False):
    """The three kernel means of the MMD² per sample: (student-student, teacher-teacher, cross)."""
    def mean_kernel(a, b, same):
        k = torch.bmm(a, b.transpose(1, 2)).pow(power)
        if not (same and unbiased):
            return k.mean(dim=(1, 2))
        n = k.shape[1]
        return (k.sum(dim=(1, 2)) - k.diagonal(dim1=1, dim2=2).sum(dim=1)) / (n * (n - 1))
    return mean_kernel(s, s, True), mean_kernel(t, t, True), mean_kernel(s, t, False)


def _nst_variant(student_feat, teacher_feat, normalise="channel", power=2, unbiased=False, cross=2.0,
                 reduce="mean"):
    ss, tt, st = _gram_means(_channel_vectors(student_feat, normalise), _channel_vectors(teacher_feat, normalise),
                             power, unbiased)
    per_sample = ss + tt - cross * st
    return {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduce]


def _nst_features(seed, batch, student_channels, teacher_channels, size, dead_channel=False, signed=False,
                  dtype=torch.float64):
    def make_args():
        gen = torch.Generator().manual_seed(seed)
        student = torch.randn(batch, student_channels, *size, generator=gen, dtype=dtype)
        teacher = torch.randn(batch, teacher_channels, *size, generator=gen, dtype=dtype)
        if not signed:  # post-ReLU maps, as the hooked stages of the course's CNNs give
            student, teacher = student.relu(), teacher.relu()
        if dead_channel:  # a ReLU channel that is zero everywhere on the first image
            student[0, 1] = 0.0
        return student, teacher
    return make_args


def _nst_cases():
    return [
        Case("2 samples, 3 student vs 5 teacher channels of 4×4 post-ReLU maps", _nst_features(80, 2, 3, 5, (4, 4)),
             {"B": 2, "Cs": 3, "Ct": 5}),
        Case("4 samples, 8 vs 16 channels of 7×7 maps, signed values (pre-ReLU)",
             _nst_features(81, 4, 8, 16, (7, 7), signed=True), {"B": 4, "Cs": 8, "Ct": 16}),
        Case("3 samples, 4 vs 6 channels of 5×3 maps; one student channel is zero everywhere (a dead ReLU)",
             _nst_features(82, 3, 4, 6, (5, 3), dead_channel=True), {"B": 3, "Cs": 4, "Ct": 6}),
        Case("a single channel each (1 sample, 6×6 maps)", _nst_features(83, 1, 1, 1, (6, 6)),
             {"B": 1, "Cs": 1, "Ct": 1}),
        Case("the gradient with respect to 3 samples × 4 student channels of 5×5 maps (7 teacher channels)",
             _nst_features(84, 3, 4, 7, (5, 5)), {"B": 3, "Cs": 4, "Ct": 7}, gradient=True),
    ]


_NST_MISTAKES = [
    Mistake("you left out the cross term −2·mean k(f̂ˢ_i, f̂ᵗ_j): without it the loss does not compare the student "
            "with the teacher at all (it is smallest when each set is spread out, whatever the other one does).",
            lambda s, t: _nst_variant(s, t, cross=0.0)),
    Mistake("the cross term counts twice: MMD² = mean k(s, s) + mean k(t, t) − 2·mean k(s, t).",
            lambda s, t: _nst_variant(s, t, cross=1.0)),
    Mistake("normalise EACH channel's map first: f̂_c = f_c / ‖f_c‖₂ over its H·W positions (flatten to "
            "[B, C, H·W] and divide every row by its norm). You used the raw activations, so the loss depends on "
            "the scale of the features instead of the shape of each channel's map.",
            lambda s, t: _nst_variant(s, t, normalise="none")),
    Mistake("you normalised over the channel axis (each position's vector of C values). NST normalises each "
            "channel's spatial map: the norm is taken over the H·W positions of one channel (dim=2 of "
            "[B, C, H·W]).",
            lambda s, t: _nst_variant(s, t, normalise="position")),
    Mistake("you normalised each sample's whole [C, H·W] map at once; normalise each channel's map on its own "
            "(one norm per channel, over its H·W positions).",
            lambda s, t: _nst_variant(s, t, normalise="sample")),
    Mistake("you dropped the i = j terms of the student–student and teacher–teacher sums and divided by "
            "C(C − 1): that is the UNBIASED estimator of MMD² (a U-statistic). NST, like the authors' code, uses "
            "the biased V-statistic: average k over ALL C² pairs, i = j included (here k(f̂_i, f̂_i) = 1). The two "
            "differ by a term of order 1/C, large for a student with {Cs} channels; the V-statistic is never "
            "negative, the U-statistic can be.",
            lambda s, t: _nst_variant(s, t, unbiased=True)),
    Mistake("that is the linear kernel k(x, y) = xᵀy; the polynomial kernel of NST squares it: k(x, y) = (xᵀy)².",
            lambda s, t: _nst_variant(s, t, power=1)),
    Mistake("your value is B = {B} times too large: average over the batch, do not sum.",
            lambda s, t: _nst_variant(s, t, reduce="sum")),
    Mistake("return one number (the mean over the batch), not one value per sample.",
            lambda s, t: _nst_variant(s, t, reduce="none")),
]

_NST_FORBIDDEN = {name: "write MMD² yourself: kdtools' nst_loss is the reference this checker compares with."
                  for name in ("kdtools.losses.nst_loss", "kdtools.losses.feature.nst_loss")}


def check_nst_poly_mmd(fn) -> CheckResult:
    r"""Check ``fn(student_feat, teacher_feat)``: NST's squared MMD with the polynomial kernel
    :math:`k(x, y) = (x^\top y)^2` between the L2-normalised channel maps of ``[B, C_s, H, W]`` and
    ``[B, C_t, H, W]`` features, the biased (V-statistic) estimator, averaged over the batch.

    Five checks: post-ReLU and signed maps, C_s ≠ C_t, a dead (all-zero) channel, one channel each, and the
    gradient with respect to the student's features.
    """
    return run_checks(
        fn, name="nst_poly_mmd", signature="nst_poly_mmd(student_feat, teacher_feat)",
        reference=_nst_reference, cases=_nst_cases(), mistakes=_NST_MISTAKES, forbidden=_NST_FORBIDDEN,
        error_hints=[ErrorHint(r"size of tensor|must match|mat1 and mat2|batch1|batch2|bmm",
                               "the two sets have different numbers of channels (C_s ≠ C_t): compute the three "
                               "Gram matrices [B, C_s, C_s], [B, C_t, C_t] and [B, C_s, C_t] separately, e.g. "
                               "torch.bmm(a, b.transpose(1, 2)).")],
        nonfinite_hint="nan or inf: a channel whose map is zero everywhere (a dead ReLU) has norm 0. Divide by "
                       "norm.clamp_min(1e-12), as F.normalize does, so that its normalised map is 0.",
        covers="unequal channel counts, a dead channel, gradients", atol=1e-8)


# ---- end of neuron selectivity transfer


__all__ = sorted(name for name in dir() if name.startswith("check_"))
