"""Correct and wrong answers to the diffusion-distillation exercises
(notebooks/06_applications/diffusion_distillation.ipynb), for tests/test_exercises.py: each checker must accept
the correct answers and reject each wrong one with its hint."""
import math

import torch


def _coefficients(t):
    return math.cos(math.pi * t / 2), math.sin(math.pi * t / 2)


# ----------------------------------------------------------------------------- ddim_step: correct
def step_through_x_and_eps(z_t, v_hat, t, s):
    (alpha_t, sigma_t), (alpha_s, sigma_s) = _coefficients(t), _coefficients(s)
    x_hat = alpha_t * z_t - sigma_t * v_hat
    eps_hat = sigma_t * z_t + alpha_t * v_hat
    return alpha_s * x_hat + sigma_s * eps_hat


def step_in_ddim_form(z_t, v_hat, t, s):
    # Song et al.'s form: z_s = α_s x̂ + (σ_s/σ_t)(z_t − α_t x̂); t > s >= 0 so σ_t > 0
    (alpha_t, sigma_t), (alpha_s, sigma_s) = _coefficients(t), _coefficients(s)
    x_hat = alpha_t * z_t - sigma_t * v_hat
    return alpha_s * x_hat + (sigma_s / sigma_t) * (z_t - alpha_t * x_hat)


def step_as_a_rotation(z_t, v_hat, t, s):
    # with φ = π(t − s)/2 the step rotates (z, v) by φ: z_s = cos φ z_t − sin φ v̂
    angle = torch.tensor(math.pi * (t - s) / 2)
    return torch.cos(angle) * z_t - torch.sin(angle) * v_hat


# ----------------------------------------------------------------------------- ddim_step: wrong
def step_swapped(z_t, v_hat, t, s):
    (sigma_t, alpha_t), (sigma_s, alpha_s) = _coefficients(t), _coefficients(s)
    x_hat, eps_hat = alpha_t * z_t - sigma_t * v_hat, sigma_t * z_t + alpha_t * v_hat
    return alpha_s * x_hat + sigma_s * eps_hat


def step_eps_model(z_t, v_hat, t, s):
    (alpha_t, sigma_t), (alpha_s, sigma_s) = _coefficients(t), _coefficients(s)
    x_hat = (z_t - sigma_t * v_hat) / alpha_t
    return alpha_s * x_hat + sigma_s * v_hat


def step_reversed(z_t, v_hat, t, s):
    return step_through_x_and_eps(z_t, v_hat, s, t)


def step_only_x(z_t, v_hat, t, s):
    alpha_t, sigma_t = _coefficients(t)
    return _coefficients(s)[0] * (alpha_t * z_t - sigma_t * v_hat)


def step_not_implemented(z_t, v_hat, t, s):
    raise NotImplementedError


# ----------------------------------------------------------------------------- distillation_target: correct
def target_as_in_algorithm_2(z_t, z_t2, t, t2):
    (alpha_t, sigma_t), (alpha_2, sigma_2) = _coefficients(t), _coefficients(t2)
    ratio = sigma_2 / sigma_t
    return (z_t2 - ratio * z_t) / (alpha_2 - ratio * alpha_t)


def target_by_solving_the_step(z_t, z_t2, t, t2):
    # z_t2 = α_2 x + σ_2 (z_t − α_t x)/σ_t is linear in x: solve it
    (alpha_t, sigma_t), (alpha_2, sigma_2) = _coefficients(t), _coefficients(t2)
    return (sigma_t * z_t2 - sigma_2 * z_t) / (alpha_2 * sigma_t - sigma_2 * alpha_t)


# ----------------------------------------------------------------------------- distillation_target: wrong
def target_swapped(z_t, z_t2, t, t2):
    (sigma_t, alpha_t), (sigma_2, alpha_2) = _coefficients(t), _coefficients(t2)
    ratio = sigma_2 / sigma_t
    return (z_t2 - ratio * z_t) / (alpha_2 - ratio * alpha_t)


def target_landing_point(z_t, z_t2, t, t2):
    return z_t2.clone()


def target_inverted_ratio(z_t, z_t2, t, t2):
    (alpha_t, sigma_t), (alpha_2, sigma_2) = _coefficients(t), _coefficients(t2)
    ratio = sigma_t / sigma_2 if sigma_2 else 0.0
    return (z_t2 - ratio * z_t) / (alpha_2 - ratio * alpha_t)


def target_in_v_space(z_t, z_t2, t, t2):
    alpha_t, sigma_t = _coefficients(t)
    return (alpha_t * z_t - target_as_in_algorithm_2(z_t, z_t2, t, t2)) / sigma_t


CHECKER_CASES = {
    "check_ddim_step": {
        "correct": [step_through_x_and_eps, step_in_ddim_form, step_as_a_rotation],
        "wrong": [
            (step_swapped, "or swapped α and σ"),
            (step_eps_model, "ε-parameterised step with a v-model"),
            (step_reversed, "you stepped the wrong way"),
            (step_only_x, "puts the predicted noise back"),
            (step_not_implemented, "not implemented yet"),
        ],
    },
    "check_distillation_target": {
        "correct": [target_as_in_algorithm_2, target_by_solving_the_step],
        "wrong": [
            (target_swapped, "α and σ are swapped"),
            (target_landing_point, "you returned z_t'' itself"),
            (target_inverted_ratio, "the ratio is σ_t''/σ_t"),
            (target_in_v_space, "you returned the target in v-space"),
            (step_not_implemented, "not implemented yet"),
        ],
    },
}
