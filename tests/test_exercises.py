"""The exercise checkers: each accepts the reference (and other correct code), rejects the typical wrong
answers with the hint aimed at that mistake, and never raises because of the student's code."""
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdtools import exercises
from kdtools.losses import kd_loss as reference_kd_loss
from kdtools.privileged import generalized_distillation_loss as reference_gd_loss
from kdtools.compression import munge_step as reference_munge_step
from kdtools.metrics import expected_calibration_error as reference_ece

# F.kl_div(reduction="mean") warns; that mistake is one of the wrong answers tested here
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")


# ----------------------------------------------------------------------------- softmax_with_temperature
def softmax_by_hand(logits, temperature):
    scaled = logits / temperature
    scaled = scaled - scaled.max(dim=-1, keepdim=True).values
    exp = scaled.exp()
    return exp / exp.sum(dim=-1, keepdim=True)


def softmax_via_logsumexp(logits, temperature):
    scaled = logits / temperature
    return (scaled - torch.logsumexp(scaled, dim=-1, keepdim=True)).exp()


def _stable_softmax(z, dim=-1):
    shifted = z - z.max(dim=dim, keepdim=True).values
    return shifted.exp() / shifted.exp().sum(dim=dim, keepdim=True)


def softmax_without_temperature(logits, temperature):
    return _stable_softmax(logits)


def softmax_times_temperature(logits, temperature):
    return _stable_softmax(logits * temperature)


def softmax_over_batch(logits, temperature):
    return _stable_softmax(logits / temperature, dim=0)


def softmax_builtin(logits, temperature):
    return torch.softmax(logits / temperature, dim=-1)


def softmax_functional(logits, temperature):
    return F.softmax(logits / temperature, dim=-1)


def softmax_tensor_method(logits, temperature):
    return (logits / temperature).softmax(dim=-1)


def softmax_via_log_softmax(logits, temperature):
    return torch.log_softmax(logits / temperature, dim=-1).exp()


def softmax_nn_module(logits, temperature):
    return torch.nn.Softmax(dim=-1)(logits / temperature)


def softmax_without_max_subtraction(logits, temperature):
    exp = torch.exp(logits / temperature)
    return exp / exp.sum(dim=-1, keepdim=True)


def softmax_minus_global_max(logits, temperature):
    scaled = logits / temperature
    exp = torch.exp(scaled - scaled.max())
    return exp / exp.sum(dim=-1, keepdim=True)


def softmax_max_without_keepdim(logits, temperature):
    scaled = logits / temperature
    exp = torch.exp(scaled - scaled.max(dim=-1).values)
    return exp / exp.sum(dim=-1, keepdim=True)


def softmax_max_pair(logits, temperature):
    scaled = logits / temperature
    exp = torch.exp(scaled - scaled.max(dim=-1, keepdim=True))
    return exp / exp.sum(dim=-1, keepdim=True)


def softmax_normalised_over_everything(logits, temperature):
    exp = torch.exp(logits / temperature)
    return exp / exp.sum()


def softmax_log_probabilities(logits, temperature):
    scaled = logits / temperature
    return scaled - scaled.logsumexp(dim=-1, keepdim=True)


def softmax_dim_1(logits, temperature):
    return _stable_softmax(logits / temperature, dim=1)


def softmax_in_place(logits, temperature):
    logits /= temperature
    logits -= logits.max(dim=-1, keepdim=True).values
    return logits.exp() / logits.exp().sum(dim=-1, keepdim=True)


def softmax_in_numpy(logits, temperature):
    scaled = logits.detach().numpy() / temperature
    exp = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    return torch.from_numpy(exp / exp.sum(axis=-1, keepdims=True))


def softmax_without_return(logits, temperature):
    _stable_softmax(logits / temperature)


# ----------------------------------------------------------------------------- kd_loss
def kd_with_kl_div(student_logits, teacher_logits, temperature):
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_p_student, p_teacher, reduction="batchmean")


def kd_with_log_target(student_logits, teacher_logits, temperature):
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)


def kd_by_hand(student_logits, teacher_logits, temperature):
    log_p_teacher = torch.log_softmax(teacher_logits / temperature, dim=-1)
    log_p_student = torch.log_softmax(student_logits / temperature, dim=-1)
    return temperature**2 * (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1).mean()


def kd_without_t2(student_logits, teacher_logits, temperature):
    return F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                    F.softmax(teacher_logits / temperature, dim=-1), reduction="batchmean")


def kd_times_t(student_logits, teacher_logits, temperature):
    return temperature * kd_without_t2(student_logits, teacher_logits, temperature)


def kd_reversed(student_logits, teacher_logits, temperature):
    return temperature**2 * F.kl_div(F.log_softmax(teacher_logits / temperature, dim=-1),
                                     F.softmax(student_logits / temperature, dim=-1), reduction="batchmean")


def kd_summed_over_batch(student_logits, teacher_logits, temperature):
    return temperature**2 * F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                                     F.softmax(teacher_logits / temperature, dim=-1), reduction="sum")


def kd_mean_over_classes(student_logits, teacher_logits, temperature):
    return temperature**2 * F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                                     F.softmax(teacher_logits / temperature, dim=-1), reduction="mean")


def kd_per_sample(student_logits, teacher_logits, temperature):
    log_p_teacher = torch.log_softmax(teacher_logits / temperature, dim=-1)
    log_p_student = torch.log_softmax(student_logits / temperature, dim=-1)
    return temperature**2 * (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)


def kd_soft_cross_entropy(student_logits, teacher_logits, temperature):
    p_teacher = torch.softmax(teacher_logits / temperature, dim=-1)
    return temperature**2 * -(p_teacher * torch.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


def kd_untempered_softmax(student_logits, teacher_logits, temperature):
    return temperature**2 * F.kl_div(F.log_softmax(student_logits, dim=-1), F.softmax(teacher_logits, dim=-1),
                                     reduction="batchmean")


def kd_teacher_not_tempered(student_logits, teacher_logits, temperature):
    return temperature**2 * F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                                     F.softmax(teacher_logits, dim=-1), reduction="batchmean")


def kd_probabilities_into_kl_div(student_logits, teacher_logits, temperature):
    return temperature**2 * F.kl_div(F.softmax(student_logits / temperature, dim=-1),
                                     F.softmax(teacher_logits / temperature, dim=-1), reduction="batchmean")


def kd_log_target_without_flag(student_logits, teacher_logits, temperature):
    return temperature**2 * F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                                     F.log_softmax(teacher_logits / temperature, dim=-1), reduction="batchmean")


def kd_log_of_softmax(student_logits, teacher_logits, temperature):
    p_teacher = torch.softmax(teacher_logits / temperature, dim=-1)
    p_student = torch.softmax(student_logits / temperature, dim=-1)
    return temperature**2 * (p_teacher * (torch.log(p_teacher) - torch.log(p_student))).sum(dim=-1).mean()


def kd_as_float(student_logits, teacher_logits, temperature):
    return kd_by_hand(student_logits, teacher_logits, temperature).item()


def kd_without_gradient(student_logits, teacher_logits, temperature):
    with torch.no_grad():
        return kd_by_hand(student_logits, teacher_logits, temperature)


def kd_wrong_signature(student_logits, teacher_logits):
    return kd_by_hand(student_logits, teacher_logits, 4.0)


def not_implemented(*args):
    raise NotImplementedError("kd_loss: replace this line with your implementation")


# ----------------------------------------------------------------------------- generalized_distillation_loss
def gd_by_hand(student_logits, labels, teacher_logits, temperature, imitation):
    soft = torch.softmax(teacher_logits / temperature, dim=-1)
    targets = (1 - imitation) * F.one_hot(labels, student_logits.shape[-1]) + imitation * soft
    return -(targets * torch.log_softmax(student_logits, dim=-1)).sum(dim=-1).mean()


def gd_two_terms(student_logits, labels, teacher_logits, temperature, imitation):
    log_q = F.log_softmax(student_logits, dim=-1)
    soft = F.softmax(teacher_logits / temperature, dim=-1)
    return (1 - imitation) * F.cross_entropy(student_logits, labels) + imitation * -(soft * log_q).sum(-1).mean()


def gd_cross_entropy_with_probabilities(student_logits, labels, teacher_logits, temperature, imitation):
    # F.cross_entropy accepts a probability target since torch 1.10
    return (1 - imitation) * F.cross_entropy(student_logits, labels) + imitation * F.cross_entropy(
        student_logits, F.softmax(teacher_logits / temperature, dim=-1))


def gd_swapped(student_logits, labels, teacher_logits, temperature, imitation):
    return gd_two_terms(student_logits, labels, teacher_logits, temperature, 1 - imitation)


def gd_teacher_not_tempered(student_logits, labels, teacher_logits, temperature, imitation):
    return gd_two_terms(student_logits, labels, teacher_logits, 1.0, imitation)


def gd_student_tempered(student_logits, labels, teacher_logits, temperature, imitation):
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    soft = F.softmax(teacher_logits / temperature, dim=-1)
    return (1 - imitation) * F.nll_loss(log_q, labels) + imitation * -(soft * log_q).sum(-1).mean()


def gd_with_t2(student_logits, labels, teacher_logits, temperature, imitation):
    log_q = F.log_softmax(student_logits, dim=-1)
    soft = F.softmax(teacher_logits / temperature, dim=-1)
    return (1 - imitation) * F.nll_loss(log_q, labels) + imitation * temperature**2 * -(soft * log_q).sum(-1).mean()


def gd_hinton(student_logits, labels, teacher_logits, temperature, imitation):
    return (1 - imitation) * F.cross_entropy(student_logits, labels) + imitation * reference_kd_loss(
        student_logits, teacher_logits, temperature)


def gd_kl(student_logits, labels, teacher_logits, temperature, imitation):
    log_q = F.log_softmax(student_logits, dim=-1)
    return (1 - imitation) * F.nll_loss(log_q, labels) + imitation * F.kl_div(
        log_q, F.softmax(teacher_logits / temperature, dim=-1), reduction="batchmean")


def gd_summed(student_logits, labels, teacher_logits, temperature, imitation):
    return student_logits.shape[0] * gd_by_hand(student_logits, labels, teacher_logits, temperature, imitation)


def gd_per_sample(student_logits, labels, teacher_logits, temperature, imitation):
    soft = torch.softmax(teacher_logits / temperature, dim=-1)
    targets = (1 - imitation) * F.one_hot(labels, student_logits.shape[-1]) + imitation * soft
    return -(targets * torch.log_softmax(student_logits, dim=-1)).sum(dim=-1)


def gd_mean_over_classes(student_logits, labels, teacher_logits, temperature, imitation):
    soft = torch.softmax(teacher_logits / temperature, dim=-1)
    targets = (1 - imitation) * F.one_hot(labels, student_logits.shape[-1]) + imitation * soft
    return -(targets * torch.log_softmax(student_logits, dim=-1)).mean()


def gd_log_of_softmax(student_logits, labels, teacher_logits, temperature, imitation):
    soft = torch.softmax(teacher_logits / temperature, dim=-1)
    targets = (1 - imitation) * F.one_hot(labels, student_logits.shape[-1]) + imitation * soft
    return -(targets * torch.log(torch.softmax(student_logits, dim=-1))).sum(dim=-1).mean()


def gd_detached(student_logits, labels, teacher_logits, temperature, imitation):
    return gd_by_hand(student_logits.detach(), labels, teacher_logits, temperature, imitation)


# ----------------------------------------------------------------------------- munge_step
def munge_with_mask_arithmetic(x, neighbour, swap, noise, s):
    sampled = neighbour + noise * (x - neighbour).abs() / s
    keep = (~swap).float()
    return keep * x + (1 - keep) * sampled


def munge_by_hand_copy(x, neighbour, swap, noise, s):
    out = x.clone()
    std = torch.abs(x - neighbour) / s
    out[swap] = neighbour[swap] + std[swap] * noise[swap]
    return out


def munge_centred_at_example(x, neighbour, swap, noise, s):
    return torch.where(swap, x + noise * (x - neighbour).abs() / s, x)


def munge_plain_swap(x, neighbour, swap, noise, s):
    return torch.where(swap, neighbour, x)


def munge_inverted_mask(x, neighbour, swap, noise, s):
    return torch.where(~swap, neighbour + noise * (x - neighbour).abs() / s, x)


def munge_every_attribute(x, neighbour, swap, noise, s):
    return neighbour + noise * (x - neighbour).abs() / s


def munge_without_s(x, neighbour, swap, noise, s):
    return torch.where(swap, neighbour + noise * (x - neighbour).abs(), x)


def munge_times_s(x, neighbour, swap, noise, s):
    return torch.where(swap, neighbour + noise * (x - neighbour).abs() * s, x)


def munge_without_abs(x, neighbour, swap, noise, s):
    return torch.where(swap, neighbour + noise * (x - neighbour) / s, x)


def munge_variance_as_scale(x, neighbour, swap, noise, s):
    return torch.where(swap, neighbour + noise * ((x - neighbour) / s) ** 2, x)


def munge_in_place(x, neighbour, swap, noise, s):
    x[swap] = neighbour[swap] + noise[swap] * (x[swap] - neighbour[swap]).abs() / s
    return x


def munge_own_noise(x, neighbour, swap, noise, s):
    return torch.where(swap, neighbour + torch.randn_like(x) * (x - neighbour).abs() / s, x)


# ----------------------------------------------------------------------------- median_latency (inference gap)
def latency_by_quantile(times_ms, warmup):
    return torch.quantile(times_ms[..., warmup:], 0.5, dim=-1)


def latency_by_sorting(times_ms, warmup):
    kept = times_ms[..., warmup:].sort(dim=-1).values
    n = kept.shape[-1]
    return (kept[..., (n - 1) // 2] + kept[..., n // 2]) / 2


def latency_mean(times_ms, warmup):
    return times_ms[..., warmup:].mean(dim=-1)


def latency_without_warmup(times_ms, warmup):
    return torch.quantile(times_ms, 0.5, dim=-1)


def latency_drops_last(times_ms, warmup):
    return torch.quantile(times_ms[..., :len(times_ms) - warmup] if times_ms.dim() == 1
                          else times_ms[..., :-warmup], 0.5, dim=-1)


def latency_torch_median(times_ms, warmup):
    return times_ms[..., warmup:].median(dim=-1).values


def latency_median_pair(times_ms, warmup):
    return times_ms[..., warmup:].median(dim=-1)


def latency_whole_tensor(times_ms, warmup):
    return times_ms[..., warmup:].flatten().quantile(0.5)


def latency_over_models(times_ms, warmup):
    return torch.quantile(times_ms[..., warmup:], 0.5, dim=0)


def latency_with_statistics(times_ms, warmup):
    # plain Python: a float for one model, a list of floats for several
    import statistics
    rows = times_ms.tolist()
    if times_ms.dim() == 1:
        return statistics.median(rows[warmup:])
    return [statistics.median(row[warmup:]) for row in rows]


def latency_with_numpy(times_ms, warmup):
    return np.median(times_ms.numpy()[..., warmup:], axis=-1)


def latency_as_float(times_ms, warmup):
    import statistics
    return statistics.median(times_ms[warmup:].tolist())


def latency_as_string(times_ms, warmup):
    return f"{float(torch.quantile(times_ms[..., warmup:], 0.5)):.3f} ms"


# ----------------------------------------------------------------------------- distillation_step (dark knowledge)
def _kd_by_hand_not_detached(student_logits, teacher_logits, temperature):
    # like a student's own kd_loss: nothing detaches the teacher's logits
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    return temperature**2 * (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean()


def _make_step(kd=_kd_by_hand_not_detached, teacher_eval=True, no_grad=True, student_train=True, zero_grad="before",
               ce_weight=lambda a: 1 - a, kd_weight=lambda a: a, result=lambda loss: loss.item(), step=True):
    def distillation_step(student, teacher, images, labels, optimizer, temperature, alpha):
        if student_train:
            student.train()
        if teacher_eval:
            teacher.eval()
        with torch.no_grad() if no_grad else torch.enable_grad():
            teacher_logits = teacher(images)
        student_logits = student(images)
        loss = ce_weight(alpha) * F.cross_entropy(student_logits, labels) \
            + kd_weight(alpha) * kd(student_logits, teacher_logits, temperature)
        if zero_grad == "before":
            optimizer.zero_grad()
        loss.backward()
        if zero_grad == "between":
            optimizer.zero_grad()
        if step:
            optimizer.step()
        return result(loss)
    return distillation_step


step_reference = _make_step()
step_with_kdtools_loss = _make_step(kd=reference_kd_loss, result=lambda loss: loss)
step_with_kl_div = _make_step(kd=lambda s, t, T: T**2 * F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1),
                                                                  reduction="batchmean"))
step_detached_teacher = _make_step(kd=lambda s, t, T: _kd_by_hand_not_detached(s, t.detach(), T), no_grad=False,
                                   result=lambda loss: float(loss.detach()))
step_without_t2 = _make_step(kd=lambda s, t, T: _kd_by_hand_not_detached(s, t, T) / T**2)
step_times_t = _make_step(kd=lambda s, t, T: _kd_by_hand_not_detached(s, t, T) / T)
step_kl_reversed = _make_step(kd=lambda s, t, T: T**2 * F.kl_div(F.log_softmax(t / T, -1), F.softmax(s / T, -1),
                                                                 reduction="batchmean"))
step_student_softmax = _make_step(kd=lambda s, t, T: T**2 * F.kl_div(F.softmax(s / T, -1), F.softmax(t / T, -1),
                                                                     reduction="batchmean"))
step_teacher_in_train_mode = _make_step(teacher_eval=False)
step_gradients_into_teacher = _make_step(no_grad=False)
step_student_in_eval_mode = _make_step(student_train=False)
step_without_zero_grad = _make_step(zero_grad="never")
step_zero_grad_between = _make_step(zero_grad="between")
step_without_optimizer_step = _make_step(step=False)
step_swapped_alpha = _make_step(ce_weight=lambda a: a, kd_weight=lambda a: 1 - a)
step_returns_nothing = _make_step(result=lambda loss: None)
step_returns_loss_per_sample = _make_step(result=lambda loss: loss.detach().repeat(3))
step_returns_double_loss = _make_step(result=lambda loss: 2 * loss.item())


# ----------------------------------------------------------------------------- distillation_objective (recipe)
def objective_reference(student_logits, teacher_logits, labels, alpha, temperature):
    return (1 - alpha) * F.cross_entropy(student_logits, labels) + \
        alpha * reference_kd_loss(student_logits, teacher_logits, temperature)


def objective_by_hand(student_logits, teacher_logits, labels, alpha, temperature):
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    p_t = F.softmax(teacher_logits / temperature, dim=-1)
    kd = temperature**2 * F.kl_div(log_p_s, p_t, reduction="batchmean")
    ce = F.nll_loss(F.log_softmax(student_logits, dim=-1), labels)
    return alpha * kd + (1 - alpha) * ce


def objective_swapped_alpha(student_logits, teacher_logits, labels, alpha, temperature):
    return alpha * F.cross_entropy(student_logits, labels) + \
        (1 - alpha) * reference_kd_loss(student_logits, teacher_logits, temperature)


def objective_without_t2(student_logits, teacher_logits, labels, alpha, temperature):
    kd = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                  F.softmax(teacher_logits / temperature, dim=-1), reduction="batchmean")
    return (1 - alpha) * F.cross_entropy(student_logits, labels) + alpha * kd


def objective_tempered_ce(student_logits, teacher_logits, labels, alpha, temperature):
    return (1 - alpha) * F.cross_entropy(student_logits / temperature, labels) + \
        alpha * reference_kd_loss(student_logits, teacher_logits, temperature)


def objective_unweighted_ce(student_logits, teacher_logits, labels, alpha, temperature):
    return F.cross_entropy(student_logits, labels) + alpha * reference_kd_loss(student_logits, teacher_logits,
                                                                               temperature)


def objective_teacher_labels(student_logits, teacher_logits, labels, alpha, temperature):
    return (1 - alpha) * F.cross_entropy(student_logits, teacher_logits.argmax(-1)) + \
        alpha * reference_kd_loss(student_logits, teacher_logits, temperature)


def objective_t2_on_both(student_logits, teacher_logits, labels, alpha, temperature):
    kd = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                  F.softmax(teacher_logits / temperature, dim=-1), reduction="batchmean")
    return temperature**2 * ((1 - alpha) * F.cross_entropy(student_logits, labels) + alpha * kd)


# ----------------------------------------------------------------------------- label_smoothing_loss (KD vs LS)
def ls_reference(logits, labels, epsilon):
    return F.cross_entropy(logits, labels, label_smoothing=epsilon)


def ls_builtin_module(logits, labels, epsilon):
    return torch.nn.CrossEntropyLoss(label_smoothing=epsilon)(logits, labels)


def ls_by_hand(logits, labels, epsilon):
    num_classes = logits.shape[-1]
    target = (1 - epsilon) * F.one_hot(labels, num_classes) + epsilon / num_classes
    return -(target * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def ls_two_terms(logits, labels, epsilon):
    log_p = torch.log_softmax(logits, dim=-1)
    return (1 - epsilon) * F.nll_loss(log_p, labels) + epsilon * (-log_p.mean(dim=-1)).mean()


def ls_over_wrong_classes(logits, labels, epsilon):
    num_classes = logits.shape[-1]
    one_hot = F.one_hot(labels, num_classes).float()
    target = (1 - epsilon) * one_hot + epsilon / (num_classes - 1) * (1 - one_hot)
    return -(target * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def ls_without_one_minus_eps(logits, labels, epsilon):
    target = F.one_hot(labels, logits.shape[-1]) + epsilon / logits.shape[-1]
    return -(target * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def ls_uniform_summed(logits, labels, epsilon):
    log_p = torch.log_softmax(logits, dim=-1)
    return (1 - epsilon) * F.nll_loss(log_p, labels) + epsilon * (-log_p.sum(dim=-1)).mean()


def ls_swapped(logits, labels, epsilon):
    target = epsilon * F.one_hot(labels, logits.shape[-1]) + (1 - epsilon) / logits.shape[-1]
    return -(target * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def ls_only_scaled(logits, labels, epsilon):
    return (1 - epsilon) * F.cross_entropy(logits, labels)


def ls_only_scaled_plus_uniform(logits, labels, epsilon):
    # the plain cross-entropy (label_smoothing=0) is allowed: only the built-in smoothing is forbidden
    return (1 - epsilon) * F.cross_entropy(logits, labels) + epsilon * (-torch.log_softmax(logits, -1).mean(-1)).mean()


def ls_summed_over_batch(logits, labels, epsilon):
    return ls_by_hand(logits, labels, epsilon) * logits.shape[0]


def ls_per_sample(logits, labels, epsilon):
    num_classes = logits.shape[-1]
    target = (1 - epsilon) * F.one_hot(labels, num_classes) + epsilon / num_classes
    return -(target * torch.log_softmax(logits, dim=-1)).sum(dim=-1)


def ls_mean_over_classes(logits, labels, epsilon):
    num_classes = logits.shape[-1]
    target = (1 - epsilon) * F.one_hot(labels, num_classes) + epsilon / num_classes
    return -(target * torch.log_softmax(logits, dim=-1)).mean()


def ls_log_of_softmax(logits, labels, epsilon):
    num_classes = logits.shape[-1]
    target = (1 - epsilon) * F.one_hot(labels, num_classes) + epsilon / num_classes
    return -(target * torch.log(torch.softmax(logits, dim=-1))).sum(dim=-1).mean()


# ----------------------------------------------------------------------------- expected_calibration_error
def ece_reference(probs, labels, n_bins):
    return reference_ece(probs, labels, n_bins)


def ece_loop(probs, labels, n_bins):
    confidence, predicted = probs.max(dim=-1)
    correct = (predicted == labels).float()
    bins = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    ece = torch.zeros(())
    for m in range(n_bins):
        in_bin = bins == m
        if in_bin.sum() > 0:
            ece += in_bin.float().mean() * (correct[in_bin].mean() - confidence[in_bin].mean()).abs()
    return ece


def ece_numpy_digitize(probs, labels, n_bins):
    probs, labels = probs.numpy(), labels.numpy()
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, n_bins + 1)
    bins = np.digitize(confidence, edges[1:-1], right=True)
    return sum(np.mean(bins == m) * abs(correct[bins == m].mean() - confidence[bins == m].mean())
               for m in range(n_bins) if np.any(bins == m))


def ece_floor_clamped(probs, labels, n_bins):
    # left-closed bins [m/M, (m+1)/M): differs from Guo et al.'s only for confidences exactly on an edge
    confidence, predicted = probs.max(dim=-1)
    correct = (predicted == labels).double()
    bins = (confidence * n_bins).long().clamp(max=n_bins - 1)
    gap = (torch.bincount(bins, correct, minlength=n_bins) - torch.bincount(bins, confidence, minlength=n_bins)).abs()
    return (gap / len(labels)).sum()  # |sum(correct) - sum(conf)| / n = |B_m|/n · |acc - conf|


def _ece_variant(probs, labels, n_bins, weighted=True, signed=False, confidence_of_label=False):
    confidence, predicted = probs.max(dim=-1)
    correct = (predicted == labels).double()
    if confidence_of_label:
        confidence = probs[torch.arange(len(labels)), labels]
    bins = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    gaps, weights = [], []
    for m in range(n_bins):
        in_bin = bins == m
        if in_bin.any():
            gap = correct[in_bin].mean() - confidence[in_bin].mean()
            gaps.append(gap if signed else gap.abs())
            weights.append(in_bin.double().mean())
    gaps, weights = torch.stack(gaps), torch.stack(weights)
    return (weights * gaps).sum() if weighted else gaps.mean()


def ece_unweighted(probs, labels, n_bins):
    return _ece_variant(probs, labels, n_bins, weighted=False)


def ece_signed(probs, labels, n_bins):
    return _ece_variant(probs, labels, n_bins, signed=True)


def ece_signed_reversed(probs, labels, n_bins):
    return -_ece_variant(probs, labels, n_bins, signed=True)


def ece_confidence_of_label(probs, labels, n_bins):
    return _ece_variant(probs, labels, n_bins, confidence_of_label=True)


def ece_divided_by_bins(probs, labels, n_bins):
    confidence, predicted = probs.max(dim=-1)
    correct = (predicted == labels).double()
    bins = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    total = sum((correct[bins == m].mean() - confidence[bins == m].mean()).abs()
                for m in range(n_bins) if (bins == m).any())
    return total / n_bins


def ece_drops_certain(probs, labels, n_bins):
    confidence, predicted = probs.max(dim=-1)
    correct = (predicted == labels).double()
    bins = (confidence * n_bins).long()  # confidence 1.0 gives bin n_bins, which the loop never visits
    return sum((bins == m).double().mean() * (correct[bins == m].mean() - confidence[bins == m].mean()).abs()
               for m in range(n_bins) if (bins == m).any())


def ece_index_overflow(probs, labels, n_bins):
    confidence, predicted = probs.max(dim=-1)
    correct = (predicted == labels).double()
    bins = (confidence * n_bins).long()
    correct_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, correct)
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, confidence)
    return ((correct_sum - conf_sum).abs() / len(labels)).sum()


def ece_percent(probs, labels, n_bins):
    return 100 * reference_ece(probs, labels, n_bins)


# ----------------------------------------------------------------------------- what every checker must do
# ----------------------------------------------------------------------------- NCKD (decoupled KD)
from kdtools.losses import dkd_terms as reference_dkd_terms  # noqa: E402


def nckd_reference(s, t, y, T):
    return reference_dkd_terms(s, t, y, T)[1]


def _target_mask(logits, y):
    return F.one_hot(y, logits.shape[1]).bool()


def nckd_with_probabilities(s, t, y, T):
    # a correct but less careful student: probabilities, renormalised by hand, target removed by masking
    mask = _target_mask(s, y)
    p_s = torch.softmax(s / T, 1).masked_fill(mask, 0.0)
    p_t = torch.softmax(t / T, 1).masked_fill(mask, 0.0)
    p_s, p_t = p_s / p_s.sum(1, keepdim=True), p_t / p_t.sum(1, keepdim=True)
    ratio = torch.where(mask, torch.ones_like(p_t), p_t / p_s.clamp_min(1e-30))
    return T**2 * (p_t * ratio.log()).sum(1)


def nckd_mdistiller_style(s, t, y, T):
    # the authors' trick: push the target logit down by 1000 before the softmax
    mask = _target_mask(s, y)
    log_p_s = F.log_softmax(s / T - 1000.0 * mask, dim=1)
    p_t = F.softmax(t / T - 1000.0 * mask, dim=1)
    return T**2 * F.kl_div(log_p_s, p_t, reduction="none").sum(1)


def nckd_without_t2(s, t, y, T):
    return nckd_mdistiller_style(s, t, y, T) / T**2


def nckd_not_renormalised(s, t, y, T):
    mask = _target_mask(s, y)
    log_p_s, log_p_t = F.log_softmax(s / T, 1), F.log_softmax(t / T, 1)
    return T**2 * (log_p_t.exp() * (log_p_t - log_p_s)).masked_fill(mask, 0.0).sum(1)


def nckd_weighted_by_teacher(s, t, y, T):
    p_target = F.softmax(t / T, 1).gather(1, y.unsqueeze(1)).squeeze(1)
    return (1 - p_target) * nckd_mdistiller_style(s, t, y, T)


def nckd_whole_kd(s, t, y, T):
    return T**2 * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="none").sum(1)


def nckd_reversed(s, t, y, T):
    return nckd_mdistiller_style(t, s, y, T)


def nckd_batch_mean(s, t, y, T):
    return nckd_mdistiller_style(s, t, y, T).mean()



# ----------------------------------------------------------------------------- bias shift (vanilla KD)
def bias_shift_reference(z, y, c, k):
    return exercises.response._bias_shift_reference(z, y, c, k)


def bias_shift_loop(z, y, c, k):
    best, best_acc = k[0], -1.0
    for shift in k:
        shifted = z.clone()
        shifted[:, c] += shift
        acc = (shifted.argmax(1) == y).double().mean().item()
        if acc > best_acc:
            best, best_acc = shift, acc
    return best


def bias_shift_class_recall(z, y, c, k):
    recalls = []
    for shift in k:
        shifted = z.clone()
        shifted[:, c] += shift
        recalls.append((shifted.argmax(1) == y)[y == c].double().mean())
    return k[int(torch.argmax(torch.stack(recalls)))]


def bias_shift_subtracted(z, y, c, k):
    return bias_shift_reference(z, y, c, -k) * -1


def bias_shift_last_tie(z, y, c, k):
    best, best_acc = k[0], -1.0
    for shift in k:
        shifted = z.clone()
        shifted[:, c] += shift
        acc = (shifted.argmax(1) == y).double().mean().item()
        if acc >= best_acc:
            best, best_acc = shift, acc
    return best


def bias_shift_returns_accuracy(z, y, c, k):
    return torch.stack([((z + shift * F.one_hot(torch.tensor(c), z.shape[1])).argmax(1) == y).double().mean()
                        for shift in k]).max()


def bias_shift_returns_index(z, y, c, k):
    return torch.stack([((z + shift * F.one_hot(torch.tensor(c), z.shape[1])).argmax(1) == y).double().mean()
                        for shift in k]).argmax()


def bias_shift_as_float(z, y, c, k):
    return float(bias_shift_reference(z, y, c, k))


def bias_shift_whole_numbers(z, y, c, k):
    # searches -10 ... 10 and ignores the candidates: right only when the answer is a whole number
    best, best_acc = None, -1.0
    for shift in range(-10, 11):
        shifted = z.clone()
        shifted[:, c] += shift
        acc = (shifted.argmax(1) == y).double().mean().item()
        if acc > best_acc:
            best, best_acc = shift, acc
    return torch.tensor(float(best), dtype=k.dtype)


def bias_shift_sorted_candidates(z, y, c, k):
    # first of the tied shifts in SORTED order, not in the given order
    return bias_shift_reference(z, y, c, k.sort().values)


def bias_shift_first_candidate(z, y, c, k):
    return k[0]


CHECKER_CASES = {
    "check_find_bias_shift": {
        # a shift is a number: without gradient checks a Python float is as good an answer as a 0-d tensor
        "correct": [bias_shift_reference, bias_shift_loop, bias_shift_as_float],
        "wrong": [
            (bias_shift_class_recall, "you maximised the accuracy on class"),
            (bias_shift_subtracted, "you subtracted the shift"),
            (bias_shift_last_tie, "return the FIRST one"),
            (bias_shift_returns_accuracy, "you returned the best accuracy"),
            (bias_shift_returns_index, "you returned the position of the best shift"),
            (bias_shift_whole_numbers, "you searched whole-number shifts"),
            (bias_shift_sorted_candidates, "return the first one in the order the candidates are given"),
            (bias_shift_first_candidate, "check 1/5"),
        ],
    },
    "check_nckd": {
        "correct": [nckd_reference, nckd_with_probabilities, nckd_mdistiller_style],
        "wrong": [
            (nckd_without_t2, "T² = 16 times too small"),
            (nckd_not_renormalised, "renormalise over the non-target classes first"),
            (nckd_weighted_by_teacher, "you returned (1 − p_t^T) · NCKD"),
            (nckd_whole_kd, "you returned the whole KD loss"),
            (nckd_reversed, "KL arguments reversed?"),
            (nckd_batch_mean, "return one value per sample"),
        ],
    },
    "check_softmax_with_temperature": {
        "correct": [softmax_by_hand, softmax_via_logsumexp],
        "wrong": [
            (softmax_builtin, "calls torch.softmax on check 1/"),
            (softmax_functional, "calls torch.nn.functional.softmax on check 1/"),
            (softmax_tensor_method, "calls torch.Tensor.softmax on check 1/"),
            (softmax_via_log_softmax, "calls torch.log_softmax on check 1/"),
            (softmax_nn_module, "calls torch.nn.Softmax on check 1/"),
            (softmax_without_temperature, "divide the logits by the temperature first"),
            (softmax_times_temperature, "you multiplied the logits by T"),
            (softmax_over_batch, "not over the batch (dim=0)"),
            (softmax_without_max_subtraction, "Subtract each row's maximum before exponentiating"),
            (softmax_minus_global_max, "not the maximum of the whole tensor"),
            (softmax_max_without_keepdim, "pass `keepdim=True`"),
            (softmax_max_pair, "returns a pair (values, indices)"),
            (softmax_normalised_over_everything, "your whole tensor sums to 1"),
            (softmax_log_probabilities, "you returned log-probabilities"),
            (softmax_dim_1, "use `dim=-1`"),
            (softmax_in_place, "changed its input in place"),
            (softmax_in_numpy, "cut off from the autograd graph"),
            (softmax_without_return, "did you forget the `return` statement?"),
            (not_implemented, "not implemented yet"),
        ],
    },
    "check_kd_loss": {
        "correct": [reference_kd_loss, kd_with_kl_div, kd_with_log_target, kd_by_hand],
        "wrong": [
            (kd_without_t2, "your value is T² = 16 times too small: did you forget the T² factor?"),
            (kd_times_t, "the factor is T², not T"),
            (kd_reversed, "KL arguments reversed?"),
            (kd_summed_over_batch, "sum over the batch instead of the mean?"),
            (kd_mean_over_classes, "averaged over the classes too?"),
            (kd_per_sample, "you returned one value per sample (shape [3])"),
            (kd_soft_cross_entropy, "you computed the cross-entropy"),
            (kd_untempered_softmax, "did you divide both logits by T before the softmax?"),
            (kd_teacher_not_tempered, "divide the teacher's logits by T as well"),
            (kd_probabilities_into_kl_div, "F.kl_div expects log-probabilities as its first argument"),
            (kd_log_target_without_flag, "or set log_target=True"),
            (kd_log_of_softmax, "Work in log space: log_softmax(z / T)"),
            (kd_as_float, "return the tensor itself (no `.item()`"),
            (kd_without_gradient, "cut off from the autograd graph"),
            (kd_wrong_signature,
             "keep the signature of the stub: kd_loss(student_logits, teacher_logits, temperature)"),
            (not_implemented, "not implemented yet"),
        ],
    },
    "check_generalized_distillation_loss": {
        "correct": [reference_gd_loss, gd_by_hand, gd_two_terms, gd_cross_entropy_with_probabilities],
        "wrong": [
            (gd_swapped, "you swapped them"),
            (gd_teacher_not_tempered, "divide the teacher's logits by T before its softmax"),
            (gd_student_tempered, "only the teacher is tempered"),
            (gd_with_t2, "your soft term is multiplied by T² = 16"),
            (gd_hinton, "Hinton et al.'s loss (student tempered too, T² factor) is not the loss of this exercise"),
            (gd_kl, "not the KL divergence"),
            (gd_summed, "Your value is B = 3 times too large"),
            (gd_per_sample, "you returned one value per sample (shape [3])"),
            (gd_mean_over_classes, "averaged over the classes too?"),
            (gd_log_of_softmax, "Use log_softmax(z_s)"),
            (gd_detached, "cut off from the autograd graph"),
            (not_implemented, "not implemented yet"),
        ],
    },
    "check_munge_step": {
        "correct": [reference_munge_step, munge_with_mask_arithmetic, munge_by_hand_copy],
        "wrong": [
            (munge_centred_at_example, "centred at the neighbour's value x', not at the example's own value"),
            (munge_plain_swap, "you used the neighbour's value but no noise"),
            (munge_inverted_mask, "the swap is inverted"),
            (munge_every_attribute, "you resampled every attribute"),
            (munge_without_s, "divide by s = 4"),
            (munge_times_s, "you multiplied by s = 4"),
            (munge_without_abs, "with the absolute value"),
            (munge_variance_as_scale, "you scaled the noise by the variance"),
            (munge_in_place, "changed its input in place"),
            (munge_own_noise, "matches none of the usual mistakes"),
            (not_implemented, "not implemented yet"),
        ],
    },
    "check_median_latency": {
        "correct": [latency_by_quantile, latency_by_sorting, latency_with_statistics, latency_with_numpy],
        "wrong": [
            (latency_mean, "you averaged the timings"),
            (latency_without_warmup, "drop them before taking the median"),
            (latency_drops_last, "the warm-up runs are the first ones, not the last"),
            (latency_torch_median, "torch.median returns the lower of the two middle values"),
            (latency_median_pair, "returned a median on check 1/4"),
            (latency_whole_tensor, "not of the whole tensor"),
            (latency_over_models, "not over dim=0 (the models)"),
            (latency_as_string, "returned a str"),
            # a number is accepted where the answer is one (checks 1, 2, 4); the [3, 7] case is not a list
            (latency_as_float, "raised TypeError on check 3/4 (3 models"),
            (not_implemented, "not implemented yet"),
        ],
    },
    "check_distillation_step": {
        "correct": [step_reference, step_with_kdtools_loss, step_with_kl_div, step_detached_teacher],
        "wrong": [
            (step_without_t2, "lacks its T² = 16 factor"),
            (step_times_t, "the factor is T² = 16"),
            (step_kl_reversed, "KL arguments reversed"),
            (step_student_softmax, "pass F.log_softmax(student_logits / T, dim=-1), not F.softmax"),
            (step_teacher_in_train_mode, "call teacher.eval() before its forward pass"),
            (step_gradients_into_teacher, "compute the teacher's logits under `with torch.no_grad():`"),
            (step_student_in_eval_mode, "call student.train()"),
            (step_without_zero_grad, "call optimizer.zero_grad() before loss.backward() in every step"),
            (step_zero_grad_between, "not between backward and step"),
            (step_without_optimizer_step, "call optimizer.step()"),
            (step_swapped_alpha, "you swapped them"),
            (step_returns_nothing, "did you forget `return loss.item()`?"),
            (step_returns_loss_per_sample, "return the loss of this batch as one number"),
            (step_returns_double_loss, "right update, wrong returned loss"),
            (not_implemented, "not implemented yet"),
        ],
    },
    "check_distillation_objective": {
        "correct": [objective_reference, objective_by_hand],
        "wrong": [
            (objective_swapped_alpha, "you swapped them"),
            (objective_without_t2, "lacks its T² = 16 factor"),
            (objective_tempered_ce, "uses the student's ordinary logits (T = 1), not z / T"),
            (objective_unweighted_ce, "weigh the cross-entropy by 1 − alpha"),
            (objective_teacher_labels, "not with the teacher's predicted classes"),
            (objective_t2_on_both, "Only the distillation term gets the T² factor"),
            (not_implemented, "not implemented yet"),
        ],
    },
    "check_label_smoothing_loss": {
        "correct": [ls_by_hand, ls_two_terms, ls_only_scaled_plus_uniform],
        "wrong": [
            (ls_reference, "you called PyTorch's built-in label smoothing"),
            (ls_builtin_module, "you called PyTorch's built-in label smoothing"),
            (ls_over_wrong_classes, "you spread epsilon over the C − 1 = 9 wrong classes"),
            (ls_without_one_minus_eps, "the one-hot part must be scaled by (1 − ε)"),
            (ls_uniform_summed, "(a mean, not a sum)"),
            (ls_swapped, "you swapped the weights"),
            (ls_only_scaled, "you only scaled the cross-entropy by (1 − ε)"),
            (ls_summed_over_batch, "Your value is B = 4 times too large"),
            (ls_per_sample, "you returned one value per sample (shape [4])"),
            (ls_mean_over_classes, "averaged over the classes too?"),
            (ls_log_of_softmax, "Use torch.log_softmax(z, dim=-1)"),
            (not_implemented, "not implemented yet"),
        ],
    },
    "check_expected_calibration_error": {
        "correct": [ece_reference, ece_loop, ece_numpy_digitize, ece_floor_clamped],
        "wrong": [
            (ece_unweighted, "weight each bin by its share of the examples"),
            (ece_signed, "take the absolute value of each bin's gap"),
            (ece_signed_reversed, "the other way round and without absolute value"),
            (ece_confidence_of_label, "not of the true class"),
            (ece_divided_by_bins, "you divided by the number of bins M = 15"),
            (ece_drops_certain, "the predictions with confidence exactly 1.0 fell out"),
            (ece_index_overflow, "clamp the bin index to n_bins − 1"),
            (ece_percent, "return the ECE as a fraction"),
            (not_implemented, "not implemented yet"),
        ],
    },
}


def _lesson_cases():
    """Module 3 and later keep each lesson's wrong-answer cases in ``tests/exercise_cases_<lesson>.py``."""
    import importlib.util
    from pathlib import Path

    cases = {}
    for path in sorted(Path(__file__).parent.glob("exercise_cases_*.py")):
        spec = importlib.util.spec_from_file_location(f"_cases_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cases.update(module.CHECKER_CASES)
    return cases


CHECKER_CASES.update(_lesson_cases())
CORRECT = [(name, fn) for name, spec in CHECKER_CASES.items() for fn in spec["correct"]]
WRONG = [(name, fn, hint) for name, spec in CHECKER_CASES.items() for fn, hint in spec["wrong"]]


def test_every_checker_is_tested_against_wrong_answers():
    assert set(CHECKER_CASES) == set(exercises.CHECKERS), "add the new checker's cases to CHECKER_CASES"
    for name, spec in CHECKER_CASES.items():
        assert spec["correct"], f"{name}: test it with the reference solution"
        assert len(spec["wrong"]) >= 2, f"{name}: test at least two plausible wrong implementations"


@pytest.mark.parametrize("checker, fn", CORRECT, ids=[f"{n}-{f.__name__}" for n, f in CORRECT])
def test_checker_accepts_a_correct_solution_in_one_line(checker, fn, capsys):
    assert exercises.CHECKERS[checker](fn).passed is True
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("✓"), printed


@pytest.mark.parametrize("checker, fn, hint", WRONG, ids=[f"{n}-{f.__name__}" for n, f, _ in WRONG])
def test_checker_rejects_a_wrong_solution_with_its_hint(checker, fn, hint, capsys):
    assert exercises.CHECKERS[checker](fn).passed is False
    printed = capsys.readouterr().out
    assert printed.startswith("✗"), printed
    assert hint in printed, printed
    # the hint names one mistake: no other mistake's hint is printed alongside it
    assert printed.count("Hint:") <= 1, printed


def test_failure_shows_the_case_and_both_values(capsys):
    exercises.check_kd_loss(kd_without_t2)
    printed = capsys.readouterr().out
    assert "check 1/6 (3 samples × 10 classes, T = 4)" in printed
    assert "expected: " in printed and "received: " in printed and "received / expected = 0.0625" in printed


def test_large_tensors_show_where_they_differ(capsys):
    exercises.check_softmax_with_temperature(softmax_without_temperature)
    assert "first difference at index [0, 0]" in capsys.readouterr().out


def test_stub_says_not_implemented_without_traceback(capsys):
    assert exercises.check_softmax_with_temperature(not_implemented).passed is False
    printed = capsys.readouterr().out
    assert "not implemented yet" in printed and "Traceback" not in printed and "check 1/" not in printed


def _raises_value_error(*args):
    raise ValueError("something went wrong")


def _exits(*args):
    sys.exit(3)


def _recurses(*args):
    return _recurses(*args)


@pytest.mark.parametrize("fn", [
    _raises_value_error, _exits, _recurses, lambda *a: "a string", lambda *a: [0.1, 0.9],
    lambda *a: torch.zeros(2, 2, 2), lambda *a: torch.tensor(1), lambda *a: torch.tensor(float("nan")),
    lambda *a: torch.ones(3, 5, dtype=torch.int64), lambda *a: object(), 42, None, "kd_loss",
])
@pytest.mark.parametrize("checker", sorted(exercises.CHECKERS))
def test_checkers_never_raise_because_of_the_student(checker, fn, capsys):
    assert exercises.CHECKERS[checker](fn).passed is False
    assert capsys.readouterr().out.startswith("✗")


def _loops_forever(*args):
    while True:
        pass


@pytest.mark.parametrize("checker", sorted(exercises.CHECKERS))
def test_checkers_stop_an_endless_loop(checker, capsys, monkeypatch):
    from kdtools.exercises import _harness

    monkeypatch.setattr(_harness, "TIME_LIMIT_S", 0.2)
    assert exercises.CHECKERS[checker](_loops_forever).passed is False
    printed = capsys.readouterr().out
    assert printed.startswith("✗") and "no result within 0.2 s on check 1/" in printed, printed


def test_error_feedback_points_at_the_students_line(capsys):
    exercises.check_softmax_with_temperature(softmax_max_without_keepdim)
    printed = capsys.readouterr().out
    assert "raised RuntimeError" in printed and "in softmax_max_without_keepdim, line" in printed


def test_passing_the_result_instead_of_the_function(capsys):
    assert exercises.check_kd_loss(torch.tensor(1.0)).passed is False
    assert "pass the function itself, without calling it: check_kd_loss(kd_loss)" in capsys.readouterr().out


def test_checkers_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    exercises.check_softmax_with_temperature(softmax_by_hand)
    exercises.check_distillation_step(step_reference)
    exercises.check_kd_loss(reference_kd_loss)
    assert torch.equal(before, torch.get_rng_state())


def test_gradients_are_checked_even_under_no_grad():
    with torch.no_grad():
        assert exercises.check_kd_loss(reference_kd_loss).passed is True
        assert exercises.check_kd_loss(kd_without_gradient).passed is False


def test_checker_output_is_deterministic(capsys):
    for _ in range(2):
        exercises.check_kd_loss(kd_reversed)
    first, second = capsys.readouterr().out.split("✗")[1:]
    assert first == second


def test_hints_are_filled_in_from_the_case():
    hint = exercises.Mistake("T² = {T2:g}, B = {B}", lambda *a: None).hint
    case = exercises.Case("x", lambda: (), params={"T2": 16.0, "B": 3})
    assert hint.format(**case.params) == "T² = 16, B = 3"


def test_checker_result_is_truthy_but_not_echoed_by_ipython(capsys):
    from IPython.core.interactiveshell import InteractiveShell
    from kdtools.exercises import CheckResult

    assert CheckResult(True) and not CheckResult(False) and CheckResult(True) == True  # noqa: E712
    shell = InteractiveShell.instance()
    shell.run_cell("from kdtools.exercises import CheckResult\nCheckResult(True)")
    assert "True" not in capsys.readouterr().out


def test_softmax_checker_restores_the_built_in_softmaxes():
    originals = (torch.softmax, F.softmax, torch.log_softmax, F.log_softmax)
    had_own_method = "softmax" in vars(torch.Tensor)
    exercises.check_softmax_with_temperature(softmax_tensor_method)
    exercises.check_softmax_with_temperature(softmax_by_hand)
    assert (torch.softmax, F.softmax, torch.log_softmax, F.log_softmax) == originals
    assert ("softmax" in vars(torch.Tensor)) == had_own_method
    assert torch.equal(torch.tensor([0.0, 0.0]).softmax(-1), torch.tensor([0.5, 0.5]))


def test_distillation_step_checker_leaves_the_callers_models_and_gradients_alone():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    with torch.no_grad():  # the check needs gradients even when the caller sits in no_grad
        assert exercises.check_distillation_step(step_reference).passed is True
    assert torch.equal(before, torch.get_rng_state())


def test_label_smoothing_checker_restores_cross_entropy(capsys):
    builtin = F.cross_entropy
    exercises.check_label_smoothing_loss(ls_reference)
    exercises.check_label_smoothing_loss(ls_by_hand)
    assert F.cross_entropy is builtin
    # the reference and the mistake models still use the built-in smoothing outside the student's call
    logits, labels = torch.randn(3, 5), torch.tensor([0, 2, 4])
    assert torch.allclose(F.cross_entropy(logits, labels, label_smoothing=0.1), ls_by_hand(logits, labels, 0.1))
