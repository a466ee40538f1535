r"""Checkers of Module 6 (applications): detection and segmentation KD, token- vs sequence-level KD, reasoning
distillation, diffusion step distillation, streaming action anticipation and the compression trinity.

Every ``check_*`` function defined here is exported by :mod:`kdtools.exercises` and listed in its ``CHECKERS``;
each lesson keeps its checkers, references and imports inside its own block below (imports aliased with the
block's prefix, e.g. ``import torch as _det_torch``, so blocks never share a name).
"""
from __future__ import annotations

from ._harness import Case, CheckResult, ErrorHint, Mistake, run_checks  # noqa: F401  (used by the sections)



# ---- Detection KD (notebooks/06_applications/detection_kd.ipynb)
import torch as _det_torch  # noqa: E402  (this block's imports stay in this block)


def _det_reference(student_edges, teacher_edges, temperature):
    from ..losses import localization_distillation_loss
    return localization_distillation_loss(student_edges[None], teacher_edges[None], temperature)


def _det_kl(student_edges, teacher_edges, temperature, dim=-1):
    log_s = (student_edges / temperature).log_softmax(dim)
    log_t = (teacher_edges / temperature).log_softmax(dim)
    return (log_t.exp() * (log_t - log_s)).sum(dim)


def _det_args(seed, n_bins, temperature):
    gen = _det_torch.Generator().manual_seed(seed)
    return 3 * _det_torch.randn(4, n_bins, generator=gen), 3 * _det_torch.randn(4, n_bins, generator=gen), temperature


def _det_cases():
    return [
        Case("one box, 8 bins per edge, T = 10 (the authors' default)", lambda: _det_args(60, 8, 10.0),
             {"T": 10.0, "n": 8}),
        Case("one box, 17 bins per edge (GFL's reg_max = 16), T = 1", lambda: _det_args(61, 17, 1.0), {"T": 1.0, "n": 17}),
        Case("one box, 5 bins, T = 2", lambda: _det_args(62, 5, 2.0), {"T": 2.0, "n": 5}),
        Case("the gradient with respect to the student's edge logits, 8 bins, T = 10", lambda: _det_args(63, 8, 10.0),
             {"T": 10.0, "n": 8}, gradient=True),
    ]


_DET_WRONG_AXIS = ("your softmax runs over the wrong axis: each EDGE (a row of the [4, n_bins] logits) has its own\n"
                   "  distribution over the n_bins distances, so take the softmax along the last axis (dim=-1).")
_DET_FLAT = ("you flattened the four edges into ONE distribution over 4·n_bins values: LD compares four separate\n"
             "  distributions, one per edge, and averages their KLs.")
_DET_NO_T = ("divide the logits by the temperature (here T = {T}) before the softmax, and multiply the KL by T².")
_DET_NO_T2 = ("multiply by T² (here {T}²): softening by T shrinks the KL's gradients by 1/T².")
_DET_REVERSED = ("your KL is the wrong way round: LD is KL(p^t ‖ p^s), the teacher's edge distribution first.")
_DET_NO_BINS = ("divide each edge's KL by the number of bins (here {n}): the authors' loss takes the MEAN over the bins\n"
                "  of the pointwise KL terms, not their sum.")
_DET_SUM_EDGES = ("average over the four edges, don't sum them: the loss is the MEAN of the four edges' terms.")

_DET_MISTAKES = [
    Mistake(_DET_WRONG_AXIS, lambda s, t, T: T ** 2 * _det_kl(s, t, T, dim=0).mean() / s.shape[1]),
    Mistake(_DET_FLAT, lambda s, t, T: T ** 2 * _det_kl(s.flatten(), t.flatten(), T) / s.shape[1]),
    Mistake(_DET_FLAT, lambda s, t, T: T ** 2 * _det_kl(s.flatten(), t.flatten(), T) / s.numel()),
    Mistake(_DET_NO_T, lambda s, t, T: _det_kl(s, t, 1.0).mean() / s.shape[1]),
    Mistake(_DET_NO_T2, lambda s, t, T: _det_kl(s, t, T).mean() / s.shape[1]),
    Mistake(_DET_REVERSED, lambda s, t, T: T ** 2 * _det_kl(t, s, T).mean() / s.shape[1]),
    Mistake(_DET_NO_BINS, lambda s, t, T: T ** 2 * _det_kl(s, t, T).mean()),
    Mistake(_DET_SUM_EDGES, lambda s, t, T: T ** 2 * _det_kl(s, t, T).sum() / s.shape[1]),
]


def check_ld_loss(fn) -> CheckResult:
    r"""Check ``fn(student_edges, teacher_edges, temperature)`` = the localization-distillation loss of one box:
    :math:`\frac14\sum_{e=1}^{4} \frac{T^2}{n_{bins}}\,\mathrm{KL}\big(\mathrm{softmax}(z^t_e/T)\,\|\,
    \mathrm{softmax}(z^s_e/T)\big)` for edge logits ``[4, n_bins]``, a scalar.

    Four checks: 8, 17 and 5 bins at T = 10, 1 and 2, and the gradient.
    """
    return run_checks(
        fn, name="ld_loss", signature="ld_loss(student_edges, teacher_edges, temperature)",
        reference=_det_reference, cases=_det_cases(), mistakes=_DET_MISTAKES,
        error_hints=[ErrorHint(r"size of tensor|must match|dimension",
                               "both inputs are [4, n_bins]: one row of logits per edge; take the softmax of each "
                               "row (dim=-1).")],
        covers="one distribution per edge, the temperature and T², KL direction, mean over bins and edges, gradients",
        rtol=1e-4, atol=1e-6)
# ---- end of detection KD


# ---- Token- vs sequence-level KD (notebooks/06_applications/token_vs_sequence_kd.ipynb)
import torch as _g2p_torch  # noqa: E402  (this block's imports stay in this block)


def _g2p_reference(student_logits, teacher_logits, mask, temperature):
    from ..losses import token_kd_loss
    return token_kd_loss(student_logits, teacher_logits, mask=mask, temperature=temperature)


def _g2p_kl(student_logits, teacher_logits, temperature):
    log_s = (student_logits / temperature).log_softmax(-1)
    log_t = (teacher_logits / temperature).log_softmax(-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1)  # [B, L]


def _g2p_args(seed, lengths, length, vocab, temperature):
    gen = _g2p_torch.Generator().manual_seed(seed)
    batch = len(lengths)
    mask = _g2p_torch.arange(length)[None, :] < _g2p_torch.tensor(lengths)[:, None]
    return (2 * _g2p_torch.randn(batch, length, vocab, generator=gen),
            2 * _g2p_torch.randn(batch, length, vocab, generator=gen), mask, temperature)


def _g2p_cases():
    return [
        Case("3 words of 5, 2 and 7 phonemes padded to 7, 12 symbols, T = 1", lambda: _g2p_args(70, [5, 2, 7], 7, 12, 1.0),
             {"T": 1.0}),
        Case("4 words of 1, 6, 3 and 6 phonemes padded to 6, T = 2", lambda: _g2p_args(71, [1, 6, 3, 6], 6, 9, 2.0),
             {"T": 2.0}),
        Case("2 words of 8 and 3 phonemes padded to 8, 42 symbols, T = 1", lambda: _g2p_args(72, [8, 3], 8, 42, 1.0),
             {"T": 1.0}),
        Case("the gradient with respect to the student's logits, 3 words, T = 2",
             lambda: _g2p_args(73, [4, 1, 5], 5, 7, 2.0), {"T": 2.0}, gradient=True),
    ]


_G2P_PADDING = ("you counted the padding: average over the REAL tokens only (mask == True); padded positions must\n"
                "  add neither to the sum nor to the count.")
_G2P_PER_SEQUENCE = ("you averaged each word's tokens first and then the words: Kim & Rush's word-level KD is a mean\n"
                     "  over all real TOKENS of the batch (sum of the masked per-token KLs / number of real tokens),\n"
                     "  so a long word weighs more than a short one.")
_G2P_REVERSED = ("your KL is the wrong way round: word-level KD is KL(p^t ‖ p^s) at every position, the teacher's\n"
                 "  distribution first.")
_G2P_NO_T2 = ("multiply by T² (here {T}²), as in kd_loss: softening by T shrinks the KL's gradients by 1/T².")
_G2P_NO_T = ("divide both logits by the temperature (here T = {T}) before the softmax.")
_G2P_SUM = ("divide by the number of real tokens: the loss is a mean over tokens, not a sum.")


def _g2p_masked_mean(per_token, mask):
    weights = mask.to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum()


_G2P_MISTAKES = [
    Mistake(_G2P_PADDING, lambda s, t, m, T: T ** 2 * _g2p_kl(s, t, T).mean()),
    Mistake(_G2P_PADDING, lambda s, t, m, T: T ** 2 * (_g2p_kl(s, t, T) * m).sum() / m.numel()),
    Mistake(_G2P_PER_SEQUENCE, lambda s, t, m, T: T ** 2 * ((_g2p_kl(s, t, T) * m).sum(1) / m.sum(1)).mean()),
    Mistake(_G2P_REVERSED, lambda s, t, m, T: T ** 2 * _g2p_masked_mean(_g2p_kl(t, s, T), m)),
    Mistake(_G2P_NO_T2, lambda s, t, m, T: _g2p_masked_mean(_g2p_kl(s, t, T), m)),
    Mistake(_G2P_NO_T, lambda s, t, m, T: T ** 2 * _g2p_masked_mean(_g2p_kl(s, t, 1.0), m)),
    Mistake(_G2P_SUM, lambda s, t, m, T: T ** 2 * (_g2p_kl(s, t, T) * m).sum()),
]


def check_token_kd_loss(fn) -> CheckResult:
    r"""Check ``fn(student_logits, teacher_logits, mask, temperature)`` = word-level KD averaged over the real
    tokens: :math:`\frac{\sum_{b,l} m_{b,l}\,T^2\,\mathrm{KL}(p^t_{b,l}\,\|\,p^s_{b,l})}{\sum_{b,l} m_{b,l}}` for
    logits ``[B, L, V]`` and a boolean ``mask`` ``[B, L]`` (True on real tokens), a scalar.

    Four checks: words of different lengths at T = 1 and 2, and the gradient.
    """
    return run_checks(
        fn, name="token_kd_loss", signature="token_kd_loss(student_logits, teacher_logits, mask, temperature)",
        reference=_g2p_reference, cases=_g2p_cases(), mistakes=_G2P_MISTAKES,
        error_hints=[ErrorHint(r"size of tensor|must match|dimension",
                               "the logits are [B, L, V]: take the softmax over the last axis (the symbols); the "
                               "mask is [B, L], one entry per position.")],
        covers="padding masked out, the mean over real tokens, KL direction, the temperature and T², gradients",
        rtol=1e-4, atol=1e-6)
# ---- end of token- vs sequence-level KD


# ---- Segmentation KD (notebooks/06_applications/segmentation_kd.ipynb)
import torch as _seg_torch  # noqa: E402  (this block's imports stay in this block)


def _seg_reference(student_logits, teacher_logits, temperature):
    from ..losses import pixelwise_kd_loss
    return pixelwise_kd_loss(student_logits, teacher_logits, temperature)


def _seg_kl(student_logits, teacher_logits, temperature, dim=1):
    log_s = (student_logits / temperature).log_softmax(dim)
    log_t = (teacher_logits / temperature).log_softmax(dim)
    return (log_t.exp() * (log_t - log_s)).sum(dim)


def _seg_spatial_kl(student_logits, teacher_logits, temperature):
    # one distribution per (image, class) over the H·W pixels
    s, t = student_logits.flatten(2), teacher_logits.flatten(2)
    return _seg_kl(s, t, temperature, dim=-1)


def _seg_args(seed, shape, temperature):
    gen = _seg_torch.Generator().manual_seed(seed)
    return 2 * _seg_torch.randn(shape, generator=gen), 2 * _seg_torch.randn(shape, generator=gen), temperature


def _seg_cases():
    return [
        Case("2 images, 11 classes, 6×5 pixels, T = 1 (the authors' setting)", lambda: _seg_args(70, (2, 11, 6, 5), 1.0),
             {"T": 1.0, "B": 2}),
        Case("3 images, 4 classes, 5×7 pixels, T = 4", lambda: _seg_args(71, (3, 4, 5, 7), 4.0), {"T": 4.0, "B": 3}),
        Case("1 image, 3 classes, 8×8 pixels, T = 2", lambda: _seg_args(72, (1, 3, 8, 8), 2.0), {"T": 2.0, "B": 1}),
        Case("the gradient with respect to the student's logits, 2 images, T = 2",
             lambda: _seg_args(73, (2, 5, 4, 4), 2.0), {"T": 2.0, "B": 2}, gradient=True),
    ]


def _seg_pixels(x):
    return x.shape[-2] * x.shape[-1]


_SEG_SPATIAL = ("your softmax runs over the pixels, not over the classes: at EVERY pixel the C class logits\n"
                "  (dim=1 of [B, C, H, W]) make one distribution; take the softmax along dim=1.")
_SEG_BATCH_MEAN = ("you averaged over the images too: the authors' loss SUMS the per-image means, i.e. divides the\n"
                   "  sum over all pixels of the batch by H·W only, not by B·H·W (here B = {B}).")
_SEG_NO_PIXEL_MEAN = ("divide by the number of pixels H·W: the loss is each image's MEAN over its pixels, summed\n"
                      "  over the images, not the plain sum over every pixel.")
_SEG_OVER_CLASSES = ("you also divided by the number of classes (F.kl_div's reduction='mean' averages over every\n"
                     "  element): sum the KL over the classes, then divide by H·W.")
_SEG_REVERSED = "your KL is the wrong way round: pixel-wise KD is KL(p^t ‖ p^s), the teacher's distribution first."
_SEG_NO_T = "divide the logits by the temperature (here T = {T}) before the softmax, and multiply the KL by T²."
_SEG_NO_T2 = "multiply by T² (here {T}²): softening by T shrinks the KL's gradients by 1/T²."

_SEG_MISTAKES = [
    Mistake(_SEG_SPATIAL, lambda s, t, T: T ** 2 * _seg_spatial_kl(s, t, T).sum() / _seg_pixels(s)),
    Mistake(_SEG_SPATIAL, lambda s, t, T: T ** 2 * _seg_kl(s, t, T, dim=-1).sum() / _seg_pixels(s)),
    Mistake(_SEG_SPATIAL, lambda s, t, T: T ** 2 * _seg_kl(s, t, T, dim=0).sum() / _seg_pixels(s)),
    Mistake(_SEG_BATCH_MEAN, lambda s, t, T: T ** 2 * _seg_kl(s, t, T).mean()),
    Mistake(_SEG_NO_PIXEL_MEAN, lambda s, t, T: T ** 2 * _seg_kl(s, t, T).sum()),
    Mistake(_SEG_OVER_CLASSES, lambda s, t, T: T ** 2 * _seg_kl(s, t, T).sum() / _seg_pixels(s) / s.shape[1]),
    Mistake(_SEG_OVER_CLASSES, lambda s, t, T: T ** 2 * _seg_kl(s, t, T).mean() / s.shape[1]),
    Mistake(_SEG_REVERSED, lambda s, t, T: T ** 2 * _seg_kl(t, s, T).sum() / _seg_pixels(s)),
    Mistake(_SEG_NO_T, lambda s, t, T: _seg_kl(s, t, 1.0).sum() / _seg_pixels(s)),
    Mistake(_SEG_NO_T2, lambda s, t, T: _seg_kl(s, t, T).sum() / _seg_pixels(s)),
]


def check_pixelwise_kd_loss(fn) -> CheckResult:
    r"""Check ``fn(student_logits, teacher_logits, temperature)`` = the pixel-wise distillation loss with the
    authors' reduction: :math:`\sum_b \frac{1}{HW}\sum_{i} T^2\,\mathrm{KL}\big(\mathrm{softmax}_c(z^t_{b,:,i}/T)
    \,\|\,\mathrm{softmax}_c(z^s_{b,:,i}/T)\big)` for class maps ``[B, C, H, W]``, a scalar.

    Four checks: three shapes at T = 1, 4 and 2, and the gradient.
    """
    return run_checks(
        fn, name="pixelwise_kd_loss", signature="pixelwise_kd_loss(student_logits, teacher_logits, temperature)",
        reference=_seg_reference, cases=_seg_cases(), mistakes=_SEG_MISTAKES,
        error_hints=[ErrorHint(r"size of tensor|must match|dimension",
                               "both inputs are [B, C, H, W] class maps; take the softmax over the classes (dim=1) "
                               "at each pixel.")],
        covers="softmax over the classes at each pixel, KL direction, the temperature and T², "
               "mean over pixels and sum over images, gradients",
        rtol=1e-4, atol=1e-6)
# ---- end of segmentation KD


# ---- Reasoning distillation (notebooks/06_applications/reasoning_distillation.ipynb)
import torch as _rsn_torch  # noqa: E402  (this block's imports stay in this block)
import torch.nn.functional as _rsn_F  # noqa: E402


def _rsn_reference(logits, tokens, prompt_len):
    from ..applications.reasoning import sft_loss
    return sft_loss(logits, tokens, prompt_len)


def _rsn_args(seed, prompt_len, lengths, vocab):
    """Token ids 3..vocab-1 (0 is padding) of the given total lengths, padded to the longest, and random logits."""
    gen = _rsn_torch.Generator().manual_seed(seed)
    width = max(lengths)
    tokens = _rsn_torch.randint(3, vocab, (len(lengths), width), generator=gen)
    tokens[_rsn_torch.arange(width)[None, :] >= _rsn_torch.tensor(lengths)[:, None]] = 0
    return 2 * _rsn_torch.randn(len(lengths), width - 1, vocab, generator=gen), tokens, prompt_len


def _rsn_cases():
    return [
        Case("3 sequences of 9, 6 and 12 tokens, prompt of 4, 10 symbols", lambda: _rsn_args(80, 4, [9, 6, 12], 10)),
        Case("4 sequences of 7, 7, 5 and 11 tokens, prompt of 3, 17 symbols",
             lambda: _rsn_args(81, 3, [7, 7, 5, 11], 17)),
        Case("2 sequences of 14 and 8 tokens, prompt of 6, 6 symbols", lambda: _rsn_args(82, 6, [14, 8], 6)),
        Case("the gradient with respect to the logits, 3 sequences", lambda: _rsn_args(83, 4, [10, 5, 8], 9),
             gradient=True),
    ]


def _rsn_token_ce(logits, tokens):
    """Cross-entropy of every next-token prediction, [B, L-1]."""
    return _rsn_F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")


def _rsn_masked_mean(values, mask):
    return (values * mask).sum() / mask.sum()


def _rsn_positions(tokens):
    return _rsn_torch.arange(1, tokens.shape[1])[None, :]


_RSN_PROMPT = ("you trained on the prompt too: only the RESPONSE's tokens (targets at positions >= prompt_len of\n"
               "  `tokens`) count; the prompt is given, not something the student must learn to write.")
_RSN_PADDING = ("you counted the padding (token id 0): padded targets must add neither to the sum nor to the count.")
_RSN_PER_SEQUENCE = ("you averaged each sequence's tokens first and then the sequences: the loss is a mean over all\n"
                     "  response TOKENS of the batch, so a long response weighs more than a short one.")
_RSN_UNSHIFTED = ("logits[:, l] predict the NEXT token, tokens[:, l + 1]: compare the logits with tokens[:, 1:].")
_RSN_PROMPT_OFF_BY_ONE = ("the first response token is tokens[:, prompt_len], predicted by logits[:, prompt_len - 1]:\n"
                          "  your mask starts one position too late or too early.")
_RSN_SUM = "divide by the number of response tokens: the loss is a mean, not a sum."

_RSN_MISTAKES = [
    Mistake(_RSN_PROMPT, lambda z, x, P: _rsn_masked_mean(_rsn_token_ce(z, x), (x[:, 1:] != 0).float())),
    Mistake(_RSN_PADDING, lambda z, x, P: _rsn_masked_mean(_rsn_token_ce(z, x), (_rsn_positions(x) >= P).float()
                                                           .expand_as(z[..., 0]))),
    Mistake(_RSN_PER_SEQUENCE, lambda z, x, P: (
        (_rsn_token_ce(z, x) * ((_rsn_positions(x) >= P) & (x[:, 1:] != 0))).sum(1)
        / ((_rsn_positions(x) >= P) & (x[:, 1:] != 0)).sum(1)).mean()),
    Mistake(_RSN_PROMPT_OFF_BY_ONE, lambda z, x, P: _rsn_masked_mean(
        _rsn_token_ce(z, x), ((_rsn_positions(x) >= P + 1) & (x[:, 1:] != 0)).float())),
    Mistake(_RSN_PROMPT_OFF_BY_ONE, lambda z, x, P: _rsn_masked_mean(
        _rsn_token_ce(z, x), ((_rsn_positions(x) >= P - 1) & (x[:, 1:] != 0)).float())),
    Mistake(_RSN_SUM, lambda z, x, P: (_rsn_token_ce(z, x) * ((_rsn_positions(x) >= P) & (x[:, 1:] != 0))).sum()),
]


def check_sft_loss(fn) -> CheckResult:
    r"""Check ``fn(logits, tokens, prompt_len)`` = the SFT loss on the response only: the next-token cross-entropy
    :math:`-\log p^s(x_{b,l+1} \mid x_{b,\le l})` averaged over the targets ``tokens[:, 1:]`` that sit at
    positions ``>= prompt_len`` of ``tokens`` and are not padding (id 0). ``logits`` ``[B, L-1, V]`` predict
    ``tokens[:, 1:]``; ``tokens`` ``[B, L]``.

    Four checks: three batches of different lengths and prompt sizes, and the gradient.
    """
    return run_checks(
        fn, name="sft_loss", signature="sft_loss(logits, tokens, prompt_len)",
        reference=_rsn_reference, cases=_rsn_cases(), mistakes=_RSN_MISTAKES,
        error_hints=[ErrorHint(r"size of tensor|must match|dimension|shape",
                               "logits are [B, L-1, V] and predict tokens[:, 1:] ([B, L-1]); take the "
                               "cross-entropy over the last axis of the logits.")],
        covers="the prompt and the padding masked out, the shift by one, the mean over response tokens, gradients",
        rtol=1e-4, atol=1e-6)
# ---- end of reasoning distillation


# ---- Diffusion step distillation (notebooks/06_applications/diffusion_distillation.ipynb)
import math as _dif_math  # noqa: E402  (this block's imports stay in this block)
import torch as _dif_torch  # noqa: E402


def _dif_coefficients(t):
    return _dif_math.cos(0.5 * _dif_math.pi * t), _dif_math.sin(0.5 * _dif_math.pi * t)


def _dif_step_reference(z_t, v_hat, t, s):
    from ..applications.diffusion import ddim_step
    return ddim_step(z_t, v_hat, t, s)


def _dif_target_reference(z_t, z_t2, t, t2):
    from ..applications.diffusion import distillation_target
    return distillation_target(z_t, z_t2, t, t2)


def _dif_args(seed, shape, t, s):
    gen = _dif_torch.Generator().manual_seed(seed)
    return _dif_torch.randn(shape, generator=gen), _dif_torch.randn(shape, generator=gen), t, s


def _dif_step_cases():
    return [
        Case("4 points in 2-D, one step from t = 0.75 to s = 0.5", lambda: _dif_args(80, (4, 2), 0.75, 0.5)),
        Case("3 images of 196 pixels, the first step of 8: t = 1 to s = 0.875",
             lambda: _dif_args(81, (3, 196), 1.0, 0.875)),
        Case("2 points in 2-D, the last step: t = 0.25 to s = 0", lambda: _dif_args(82, (2, 2), 0.25, 0.0)),
        Case("5 points in 3-D, a big step from t = 0.9 to s = 0.1", lambda: _dif_args(83, (5, 3), 0.9, 0.1)),
    ]


def _dif_target_cases():
    return [
        Case("4 points in 2-D, teacher steps 0.75 → 0.625 → 0.5", lambda: _dif_args(84, (4, 2), 0.75, 0.5)),
        Case("3 images of 196 pixels, t = 1 → t'' = 0.75 (the first step of 4)",
             lambda: _dif_args(85, (3, 196), 1.0, 0.75)),
        Case("5 points in 3-D, t = 0.3 → t'' = 0.1", lambda: _dif_args(86, (5, 3), 0.3, 0.1)),
        Case("2 points in 2-D, the last step of 2: t = 0.5 → t'' = 0", lambda: _dif_args(87, (2, 2), 0.5, 0.0)),
    ]


def _dif_step_with(alpha_sigma, x_and_eps):
    def step(z, v, t, s):
        (a_t, s_t), (a_s, s_s) = alpha_sigma(t), alpha_sigma(s)
        x_hat, eps_hat = x_and_eps(z, v, a_t, s_t)
        return a_s * x_hat + s_s * eps_hat
    return step


def _dif_from_v(z, v, a, s):
    return a * z - s * v, s * z + a * v


def _dif_v_as_eps(z, v, a, s):
    # the ε-parameterised step: v̂ read as ε̂, x̂ = (z − σ ε̂) / α
    return (z - s * v) / a, v


def _dif_v_as_x(z, v, a, s):
    return v, (z - a * v) / s


def _dif_swapped(t):
    a, s = _dif_coefficients(t)
    return s, a


def _dif_no_half_pi(t):
    return _dif_math.cos(t), _dif_math.sin(t)


_DIF_SWAPPED = ("α and σ are swapped: α_t = cos(πt/2) is the SIGNAL's coefficient (1 at t = 0) and σ_t = sin(πt/2)\n"
                "  the noise's (1 at t = 1).")
_DIF_V_AS_EPS = ("you used the ε-parameterised step with a v-model: the network predicts v = α_t ε − σ_t x, so\n"
                 "  x̂ = α_t z_t − σ_t v̂ and ε̂ = σ_t z_t + α_t v̂ (no division by α_t, which is 0 at t = 1).")
_DIF_V_AS_X = ("you read the network's output as x̂: it is v̂; x̂ = α_t z_t − σ_t v̂.")
_DIF_REVERSED = ("you stepped the wrong way, or swapped α and σ (the two give the same result): the step goes FROM\n"
                 "  t (where z_t lives) TO the earlier time s, with α_t = cos(πt/2) the signal's coefficient; x̂ and\n"
                 "  ε̂ use α_t, σ_t, the new state α_s, σ_s.")
_DIF_NO_HALF_PI = "the cosine schedule is α_t = cos(πt/2), σ_t = sin(πt/2): t runs from 0 to 1, the angle to π/2."
_DIF_ONLY_X = ("you returned α_s x̂ only: DDIM (η = 0) puts the predicted noise back, z_s = α_s x̂ + σ_s ε̂.")

_DIF_STEP_MISTAKES = [
    Mistake(_DIF_REVERSED, _dif_step_with(_dif_swapped, _dif_from_v)),
    Mistake(_DIF_V_AS_EPS, _dif_step_with(_dif_coefficients, _dif_v_as_eps)),
    Mistake(_DIF_V_AS_X, _dif_step_with(_dif_coefficients, _dif_v_as_x)),
    Mistake(_DIF_NO_HALF_PI, _dif_step_with(_dif_no_half_pi, _dif_from_v)),
    Mistake(_DIF_ONLY_X, lambda z, v, t, s: _dif_coefficients(s)[0] * _dif_from_v(z, v, *_dif_coefficients(t))[0]),
]


def check_ddim_step(fn) -> CheckResult:
    r"""Check ``fn(z_t, v_hat, t, s)`` = one DDIM step (η = 0) of a v-prediction model from time ``t`` to
    ``s < t`` (floats) under the cosine schedule: :math:`z_s = \alpha_s \hat x + \sigma_s \hat\epsilon` with
    :math:`\hat x = \alpha_t z_t - \sigma_t \hat v`, :math:`\hat\epsilon = \sigma_t z_t + \alpha_t \hat v`.

    Four checks: an interior step, the first step from t = 1, the last step to s = 0 and a big step.
    """
    return run_checks(
        fn, name="ddim_step", signature="ddim_step(z_t, v_hat, t, s)", reference=_dif_step_reference,
        cases=_dif_step_cases(), mistakes=_DIF_STEP_MISTAKES,
        error_hints=[ErrorHint(r"must be Tensor|not Tensor|float", "t and s are Python floats: use math.cos and "
                               "math.sin (or torch.tensor(t)) for α and σ.")],
        nonfinite_hint="at t = 1, α_t = 0: don't divide by α_t; write x̂ and ε̂ with v̂ as the v-parameterisation does.",
        covers="the schedule's α and σ, x̂ and ε̂ from v̂, the direction of the step, the endpoints t = 1 and s = 0",
        rtol=1e-4, atol=1e-5)


def _dif_target_with(alpha_sigma):
    def target(z_t, z_t2, t, t2):
        (a_t, s_t), (a_2, s_2) = alpha_sigma(t), alpha_sigma(t2)
        return (z_t2 - (s_2 / s_t) * z_t) / (a_2 - (s_2 / s_t) * a_t)
    return target


def _dif_inverted_ratio(z_t, z_t2, t, t2):
    (a_t, s_t), (a_2, s_2) = _dif_coefficients(t), _dif_coefficients(t2)
    ratio = s_t / s_2 if s_2 else 0.0  # (at t'' = 0 this mistake is undefined; the model must not raise)
    return (z_t2 - ratio * z_t) / (a_2 - ratio * a_t)


def _dif_v_target(z_t, z_t2, t, t2):
    a_t, s_t = _dif_coefficients(t)
    return (a_t * z_t - _dif_target_with(_dif_coefficients)(z_t, z_t2, t, t2)) / s_t


_DIF_LANDING = ("you returned z_t'' itself, where the teacher LANDS: the student predicts x̂, so the target is the\n"
                "  x̃ whose one DDIM step from z_t lands there, x̃ = (z_t'' − (σ_t''/σ_t) z_t) / (α_t'' − (σ_t''/σ_t) α_t).")
_DIF_INVERTED = "the ratio is σ_t''/σ_t (the later time's σ over the current one's), not σ_t/σ_t''."
_DIF_V_TARGET = ("you returned the target in v-space: this function returns x̃, the clean-sample target; the v the\n"
                 "  student should output is (α_t z_t − x̃)/σ_t, but the loss here is written on x̃.")

_DIF_TARGET_MISTAKES = [
    Mistake(_DIF_SWAPPED, _dif_target_with(_dif_swapped)),
    Mistake(_DIF_LANDING, lambda z_t, z_t2, t, t2: z_t2),
    Mistake(_DIF_INVERTED, _dif_inverted_ratio),
    Mistake(_DIF_V_TARGET, _dif_v_target),
    Mistake(_DIF_NO_HALF_PI, _dif_target_with(_dif_no_half_pi)),
]


def check_distillation_target(fn) -> CheckResult:
    r"""Check ``fn(z_t, z_t2, t, t2)`` = progressive distillation's target (Salimans & Ho, Algorithm 2)
    :math:`\tilde x = (z_{t''} - \frac{\sigma_{t''}}{\sigma_t} z_t) / (\alpha_{t''} - \frac{\sigma_{t''}}{\sigma_t}
    \alpha_t)` for states ``[B, D]`` and times ``t > t2`` (floats), cosine schedule.

    Four checks: an interior pair, the first pair from t = 1, a late pair and the last pair ending at t'' = 0.
    """
    return run_checks(
        fn, name="distillation_target", signature="distillation_target(z_t, z_t2, t, t2)",
        reference=_dif_target_reference, cases=_dif_target_cases(), mistakes=_DIF_TARGET_MISTAKES,
        error_hints=[ErrorHint(r"must be Tensor|not Tensor|float", "t and t2 are Python floats: use math.cos and "
                               "math.sin (or torch.tensor(t)) for α and σ.")],
        covers="the schedule's α and σ, the ratio σ_t''/σ_t, an x-space target, t = 1 and t'' = 0",
        rtol=1e-4, atol=1e-5)
# ---- end of diffusion step distillation


# ---- Streaming action anticipation (notebooks/06_applications/streaming_anticipation.ipynb)
import math as _stm_math  # noqa: E402  (this block's imports stay in this block)

import torch as _stm_torch  # noqa: E402


def _stm_reference(latency, frame_period, n_frames):
    from ..applications.streaming import streaming_schedule
    return streaming_schedule(latency, frame_period, n_frames)


def _stm_finish_times(latency, frame_period, n_frames, pick_frame):
    """(done time, frame) of every prediction a one-at-a-time model makes; ``pick_frame(free_at, next_frame)``
    is the frame it starts on when it becomes free (times in frame periods)."""
    r, free_at, next_frame, out = latency / frame_period, 0.0, 0, []
    while True:
        frame = pick_frame(free_at, next_frame)
        if frame >= n_frames:
            return out
        start = max(free_at, float(frame))
        free_at, next_frame = start + r, frame + 1
        out.append((free_at, frame))


def _stm_in_use(events, n_frames, strict=False):
    """For each frame k, the newest frame whose event time is <= k (< k when ``strict``), -1 if none."""
    out = _stm_torch.full((n_frames,), -1, dtype=_stm_torch.long)
    for k in range(n_frames):
        ready = [frame for time, frame in events if (time < k - 1e-9 if strict else time <= k + 1e-9)]
        out[k] = max(ready) if ready else -1
    return out


def _stm_newest(free_at, next_frame):
    return max(next_frame, _stm_math.floor(free_at + 1e-9))


def _stm_newest_strictly_before(free_at, next_frame):  # a frame arriving at the very moment is not seen
    return max(next_frame, _stm_math.ceil(free_at - 1e-9) - 1)


def _stm_offline(latency, frame_period, n_frames):
    return _stm_torch.arange(n_frames)


def _stm_started(latency, frame_period, n_frames):  # the frame being worked on, not the newest finished
    events = _stm_finish_times(latency, frame_period, n_frames, _stm_newest)
    r = latency / frame_period
    return _stm_in_use([(done - r, frame) for done, frame in events], n_frames)


def _stm_strict(latency, frame_period, n_frames):
    return _stm_in_use(_stm_finish_times(latency, frame_period, n_frames, _stm_newest), n_frames, strict=True)


def _stm_pipelined(latency, frame_period, n_frames):  # every frame gets its own worker: nothing is skipped
    r = latency / frame_period
    return _stm_in_use([(k + r, k) for k in range(n_frames)], n_frames)


def _stm_queued(latency, frame_period, n_frames):  # a busy model works through every frame in order
    return _stm_in_use(_stm_finish_times(latency, frame_period, n_frames, lambda free_at, nxt: nxt), n_frames)


def _stm_late_start(latency, frame_period, n_frames):
    return _stm_in_use(_stm_finish_times(latency, frame_period, n_frames, _stm_newest_strictly_before), n_frames)


def _stm_cases():
    def args(latency, frame_period, n_frames):
        return lambda: (latency, frame_period, n_frames)

    return [
        Case("latency 25 ms, a frame every 10 ms, 12 frames", args(25.0, 10.0, 12), {"r": 25, "d": 10}),
        Case("latency 30 ms (exactly 3 frames), a frame every 10 ms, 12 frames", args(30.0, 10.0, 12),
             {"r": 30, "d": 10}),
        Case("latency 5 ms (half a frame), a frame every 10 ms, 6 frames", args(5.0, 10.0, 6), {"r": 5, "d": 10}),
        Case("latency 10 ms, a frame every 4 ms, 15 frames", args(10.0, 4.0, 15), {"r": 10, "d": 4}),
        Case("latency 0 (an instantaneous model), a frame every 10 ms, 5 frames", args(0.0, 10.0, 5),
             {"r": 0, "d": 10}),
    ]


_STM_OFFLINE = ("you returned each frame's own prediction: that is offline evaluation. A prediction started at time s\n"
                "  is only available from s + latency (here {r} ms) on; until then the previous one is in use.")
_STM_STARTED = ("you used the prediction the model is still WORKING on: the one it started last. At time t only the\n"
                "  predictions that have finished (start + {r} ms <= t) can be used.")
_STM_STRICT = ("a prediction finishing exactly when a frame arrives is available at that frame (<=, not <): here the\n"
               "  latency is {r} ms and frames arrive every {d} ms, so finish times can fall on arrivals.")
_STM_PIPELINED = ("your model starts a prediction on EVERY frame, as if it had a free worker for each: one model works\n"
                  "  on one frame at a time, so the frames arriving while it is busy are skipped.")
_STM_QUEUED = ("your model works through every frame in order, so it falls further and further behind: when it\n"
               "  becomes free it starts on the NEWEST frame that has arrived and skips the older ones.")
_STM_LATE_START = ("a frame that arrives at the very moment the model becomes free is the newest frame: start on it\n"
                   "  (the newest frame arrived at or before that moment, floor(t / frame_period)).")

_STM_MISTAKES = [
    Mistake(_STM_OFFLINE, _stm_offline),
    Mistake(_STM_STARTED, _stm_started),
    Mistake(_STM_STRICT, _stm_strict),
    Mistake(_STM_PIPELINED, _stm_pipelined),
    Mistake(_STM_QUEUED, _stm_queued),
    Mistake(_STM_LATE_START, _stm_late_start),
]


def check_prediction_in_use(fn) -> CheckResult:
    r"""Check ``fn(latency, frame_period, n_frames)`` = for each frame ``k`` (arriving at ``k * frame_period``),
    the index of the frame whose prediction is in use at that moment, -1 if none yet: an int64 tensor
    ``[n_frames]``. The model works on one frame at a time, starts on the newest arrived frame whenever it is free
    (or waits for the next one), and each output is available ``latency`` after its start.

    Five checks: latencies of 2.5, 3, 0.5 and 2.5 frame periods, and 0.
    """
    return run_checks(
        fn, name="prediction_in_use", signature="prediction_in_use(latency, frame_period, n_frames)",
        reference=_stm_reference, cases=_stm_cases(), mistakes=_STM_MISTAKES,
        error_hints=[ErrorHint(r"float.*integer|integer.*float|not iterable|cannot be interpreted",
                               "the latency and the frame period are floats (ms); convert a frame index with int() "
                               "or math.floor before using it as an index or a range bound.")],
        covers="latency, frame boundaries, skipped frames, none yet",
        rtol=0, atol=0)
# ---- end of streaming action anticipation


# ---- Compression trinity (notebooks/06_applications/compression_trinity.ipynb)
import torch as _ct_torch  # noqa: E402  (this block's imports stay in this block)


def _ct_reference(weight):
    from ..applications.compression_trinity import symmetric_int8
    q, scale = symmetric_int8(weight)
    return q.to(weight.dtype) * scale[:, None].to(weight.dtype)


def _ct_grid(weight, scale, rounding=_ct_torch.round):
    return _ct_torch.clamp(rounding(weight / scale), -128, 127) * scale


def _ct_row_scale(weight, levels=127.0):
    return (weight.abs().amax(dim=1, keepdim=True) / levels).clamp_min(1e-30)


def _ct_weights(seed, rows, columns, zero_row=None, outlier=False):
    gen = _ct_torch.Generator().manual_seed(seed)
    # rows on different scales, as in a trained layer, so one scale for the whole matrix is visibly worse
    weight = _ct_torch.randn(rows, columns, generator=gen, dtype=_ct_torch.float64)
    weight = weight * _ct_torch.logspace(-2, 0, rows, dtype=_ct_torch.float64)[:, None]
    if outlier:
        weight[0, 0] = 3.0
    if zero_row is not None:
        weight[zero_row] = 0.0
    return (weight,)


def _ct_cases():
    return [
        Case("a 6×5 weight matrix whose rows have different scales", lambda: _ct_weights(80, 6, 5)),
        Case("a 4×9 matrix with one large weight in its first row", lambda: _ct_weights(81, 4, 9, outlier=True)),
        Case("a 5×7 matrix whose third row is all zero (a pruned neuron)", lambda: _ct_weights(82, 5, 7, zero_row=2)),
    ]


_CT_PER_TENSOR = ("you used one scale for the whole matrix: quantise PER OUTPUT CHANNEL, one scale per row,\n"
                  "  s_j = max_i |W_ji| / 127 (amax over dim=1), so a row of small weights keeps its resolution.")
_CT_PER_INPUT = ("your scales run along the wrong axis: one scale per OUTPUT channel is one per ROW of W [out, in],\n"
                 "  i.e. the max over dim=1, not over dim=0.")
_CT_LEVELS = ("the largest |weight| of a row must map to ±127: divide max|W_j| by 127, not by 128 or 255 (the\n"
              "  symmetric int8 grid is -127 ... 127 around zero).")
_CT_ROUNDING = ("round to the NEAREST integer (torch.round): floor or truncation (.to(torch.int8), .int()) moves every\n"
                "  weight towards -inf or zero and biases the layer.")
_CT_NOT_DEQUANTISED = ("return the DE-quantised weights q · s (floats on the int8 grid, shape [out, in]), not the\n"
                       "  integers q themselves.")
_CT_NO_ROUNDING = ("your result is the original matrix: the weights must be rounded to the int8 grid,\n"
                   "  round(W / s) · s.")

_CT_MISTAKES = [
    Mistake(_CT_PER_TENSOR, lambda w: _ct_grid(w, w.abs().amax().clamp_min(1e-30) / 127)),
    Mistake(_CT_PER_INPUT, lambda w: _ct_grid(w, (w.abs().amax(dim=0, keepdim=True) / 127).clamp_min(1e-30))),
    Mistake(_CT_LEVELS, lambda w: _ct_grid(w, _ct_row_scale(w, 128.0))),
    Mistake(_CT_LEVELS, lambda w: _ct_grid(w, _ct_row_scale(w, 255.0))),
    Mistake(_CT_ROUNDING, lambda w: _ct_grid(w, _ct_row_scale(w), _ct_torch.floor)),
    Mistake(_CT_ROUNDING, lambda w: _ct_grid(w, _ct_row_scale(w), _ct_torch.trunc)),
    Mistake(_CT_NOT_DEQUANTISED, lambda w: _ct_torch.clamp(_ct_torch.round(w / _ct_row_scale(w)), -128, 127)),
    Mistake(_CT_NO_ROUNDING, lambda w: w.clone()),
]


def check_fake_quantize_int8(fn) -> CheckResult:
    r"""Check ``fn(weight)`` = symmetric per-output-channel int8 quantisation of a matrix ``[out, in]``, returned
    de-quantised: :math:`s_j = \max_i |W_{ji}|/127`, :math:`\hat W_{ji} = s_j\,\mathrm{clamp}(\mathrm{round}(W_{ji}/s_j),
    -128, 127)`, with an all-zero row left at zero.

    Three checks: rows on different scales, an outlier weight, a pruned (all-zero) row.
    """
    return run_checks(
        fn, name="fake_quantize_int8", signature="fake_quantize_int8(weight)",
        reference=_ct_reference, cases=_ct_cases(), mistakes=_CT_MISTAKES,
        nonfinite_hint="a row of zeros has max |W| = 0, so its scale is 0 and W / s is 0/0: give such a row any "
                       "non-zero scale (e.g. 1); its weights stay exactly 0.",
        covers="one scale per output channel, the ±127 grid, rounding to nearest, de-quantisation, pruned rows",
        rtol=1e-9, atol=1e-12)
# ---- end of compression trinity


__all__ = sorted(name for name in dir() if name.startswith("check_"))
