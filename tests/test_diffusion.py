"""kdtools.applications.diffusion and kdtools.losses.diffusion: schedule, parameterisations, the DDIM step, the
progressive-distillation target and loss, and the sample distances."""
import math

import pytest
import torch

from kdtools.applications import diffusion as D
from kdtools.losses import LOSSES, progressive_distillation_loss


def _batch(seed, shape=(5, 3)):
    gen = torch.Generator().manual_seed(seed)
    x, eps = torch.randn(shape, generator=gen, dtype=torch.float64), torch.randn(shape, generator=gen,
                                                                                 dtype=torch.float64)
    t = torch.rand(shape[0], generator=gen, dtype=torch.float64) * 0.9 + 0.05
    return x, eps, t


def test_schedule_endpoints_and_variance_preserving():
    alpha, sigma = D.alpha_sigma(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    assert alpha[0] == 1 and sigma[0] == 0
    assert abs(float(alpha[2])) < 1e-15 and sigma[2] == 1
    assert torch.allclose(alpha[1], torch.tensor(math.sqrt(0.5), dtype=torch.float64))
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    a, s = D.alpha_sigma(t)
    assert torch.allclose(a ** 2 + s ** 2, torch.ones_like(t))
    assert bool((a[1:] < a[:-1]).all())  # the signal decreases monotonically


def test_conversions_between_v_eps_and_x():
    x, eps, t = _batch(0)
    alpha, sigma = (c[:, None] for c in D.alpha_sigma(t))
    z = alpha * x + sigma * eps
    v = D.v_from_x_eps(x, eps, t)
    assert torch.allclose(v, alpha * eps - sigma * x)
    assert torch.allclose(D.x_from_v(z, v, t), x)
    assert torch.allclose(D.eps_from_v(z, v, t), eps)
    assert torch.allclose(D.v_from_x(z, x, t), v)


def test_ddim_step_matches_its_closed_form():
    x, eps, t = _batch(1)
    s = t - 0.03
    v_hat = torch.randn_like(x)
    z = torch.randn_like(x)
    at, st = (c[:, None] for c in D.alpha_sigma(t))
    a_s, s_s = (c[:, None] for c in D.alpha_sigma(s))
    x_hat = at * z - st * v_hat
    eps_hat = (z - at * x_hat) / st  # DDIM's ε from x̂, as in Song et al. eq. 12 with η = 0
    expected = a_s * x_hat + (s_s / st) * (z - at * x_hat)
    assert torch.allclose(D.ddim_step(z, v_hat, t, s), expected)
    assert torch.allclose(expected, a_s * x_hat + s_s * eps_hat)


def test_ddim_with_the_true_v_recovers_the_noisy_trajectory():
    # with the exact v of one (x, ε) pair, DDIM moves z_t to z_s = α_s x + σ_s ε exactly
    x, eps, t = _batch(2)
    s = t / 3
    at, st = (c[:, None] for c in D.alpha_sigma(t))
    a_s, s_s = (c[:, None] for c in D.alpha_sigma(s))
    z_t = at * x + st * eps
    assert torch.allclose(D.ddim_step(z_t, D.v_from_x_eps(x, eps, t), t, s), a_s * x + s_s * eps)


def test_distillation_target_is_the_algorithm_2_fraction_and_one_step_lands_on_two():
    x, eps, t = _batch(3)
    z_t = torch.randn_like(x)
    z_t2 = torch.randn_like(x)
    t2 = t - 0.04
    at, st = (c[:, None] for c in D.alpha_sigma(t))
    a2, s2 = (c[:, None] for c in D.alpha_sigma(t2))
    target = D.distillation_target(z_t, z_t2, t, t2)
    assert torch.allclose(target, (z_t2 - (s2 / st) * z_t) / (a2 - (s2 / st) * at))
    # the defining property: one DDIM step that predicts x̃ from z_t lands exactly on z_t''
    v_student = D.v_from_x(z_t, target, t)
    assert torch.allclose(D.ddim_step(z_t, v_student, t, t2), z_t2)


def test_one_student_step_equals_two_teacher_steps_with_a_network():
    torch.manual_seed(0)
    teacher = D.Denoiser(3, 16, 1).double()
    z_t = torch.randn(4, 3, dtype=torch.float64)
    t, t1, t2 = (torch.full((4,), v, dtype=torch.float64) for v in (0.75, 0.625, 0.5))
    z_t1 = D.ddim_step(z_t, teacher(z_t, t), t, t1)
    z_t2 = D.ddim_step(z_t1, teacher(z_t1, t1), t1, t2)
    target = D.distillation_target(z_t, z_t2, t, t2)
    assert torch.allclose(D.ddim_step(z_t, D.v_from_x(z_t, target, t), t, t2), z_t2)
    # and it is not simply the teacher's own one-step prediction
    assert not torch.allclose(D.ddim_step(z_t, teacher(z_t, t), t, t2), z_t2)


def test_last_round_target_is_the_teachers_end_point():
    # t'' = 0: σ = 0, so x̃ = z_0, whatever z_t was
    z_t, z_0 = torch.randn(2, 4), torch.randn(2, 4)
    assert torch.allclose(D.distillation_target(z_t, z_0, torch.full((2,), 0.5), torch.zeros(2)), z_0, atol=1e-6)


def test_sampler_runs_the_requested_steps():
    torch.manual_seed(0)
    model = D.Denoiser(2, 8, 1)
    noise = torch.randn(6, 2)
    states = D.ddim_sample(model, noise, 4, trajectory=True)
    assert len(states) == 5 and torch.equal(states[0], noise)
    assert torch.equal(states[-1], D.ddim_sample(model, noise, 4))


def test_loss_weightings_hand_computed():
    x_pred = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    x_target = torch.tensor([[0.0, 0.0], [3.0, 1.0]])
    t = torch.tensor([1 / 3, 2 / 3])  # SNR = cot²(π/6) = 3 and cot²(π/3) = 1/3
    errors = torch.tensor([2.5, 5.0])  # mean squared error per example
    truncated = (torch.tensor([3.0, 1.0]) * errors).mean()
    snr1 = (torch.tensor([4.0, 4 / 3]) * errors).mean()
    assert torch.allclose(progressive_distillation_loss(x_pred, x_target, t), truncated)
    assert torch.allclose(progressive_distillation_loss(x_pred, x_target, t, "snr+1"), snr1)
    assert LOSSES["progressive_distillation"] is progressive_distillation_loss


def test_snr_plus_one_weighting_is_the_v_space_mse():
    x, eps, t = _batch(4)
    alpha, sigma = (c[:, None] for c in D.alpha_sigma(t))
    z = alpha * x + sigma * eps
    v_hat = torch.randn_like(x)
    loss = progressive_distillation_loss(D.x_from_v(z, v_hat, t), x, t, "snr+1")
    assert torch.allclose(loss, (v_hat - D.v_from_x_eps(x, eps, t)).pow(2).mean())
    truncated = progressive_distillation_loss(D.x_from_v(z, v_hat, t), x, t)
    weights = torch.maximum(alpha ** 2, sigma ** 2)
    assert torch.allclose(truncated, (weights * (v_hat - D.v_from_x_eps(x, eps, t)).pow(2)).mean())


def test_loss_gradcheck_float64():
    x, eps, t = _batch(5)
    pred = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: progressive_distillation_loss(p, eps, t), (pred,))
    assert torch.autograd.gradcheck(lambda p: progressive_distillation_loss(p, eps, t, "snr+1"), (pred,))


def test_target_gradcheck_and_ddim_gradcheck_float64():
    x, eps, t = _batch(6)
    z = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: D.distillation_target(a, b, t, t - 0.01),
                                    (z, eps.clone().requires_grad_(True)))
    assert torch.autograd.gradcheck(lambda a, b: D.ddim_step(a, b, t, t / 2), (z, eps.clone().requires_grad_(True)))


@pytest.mark.parametrize("call, words", [
    (lambda: D.alpha_sigma(1.5), "t must lie in [0, 1]"),
    (lambda: D.ddim_step(torch.zeros(2, 3), torch.zeros(2, 3), 0.3, 0.5), "s must be earlier than t"),
    (lambda: D.ddim_step(torch.zeros(2, 3), torch.zeros(2, 4), 0.5, 0.3), "z_t and v_hat must have the same shape"),
    (lambda: D.distillation_target(torch.zeros(2, 3), torch.zeros(2, 3), 0.5, 0.5), "t2 must be earlier than t"),
    (lambda: D.x_from_v(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3) / 2), "t must be a scalar or have shape"),
    (lambda: D.v_from_x(torch.zeros(2, 3), torch.zeros(2, 3), 0.0), "t must be > 0"),
    (lambda: D.ddim_sample(D.Denoiser(3, 4, 1), torch.zeros(2, 3), 0), "steps must be a positive int"),
    (lambda: D.Denoiser(3, 4, 1)(torch.zeros(2, 5), torch.zeros(2)), "z must have shape [B, 3]"),
    (lambda: D.distill_chain(D.Denoiser(2, 4, 1), torch.zeros(8, 2), 6, epochs=1), "start_steps must be a power"),
    (lambda: D.sliced_wasserstein(torch.zeros(4, 2), torch.zeros(5, 2)), "a and b must both have shape"),
    (lambda: progressive_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2)), "t must lie in"),
    (lambda: progressive_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2), "snr"),
     "weighting must be one of"),
    (lambda: progressive_distillation_loss(torch.zeros(2, 3), torch.zeros(3, 3), torch.ones(2)),
     "x_pred and x_target must have the same shape"),
])
def test_bad_input_names_the_argument(call, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        call()


def test_distances():
    a = D.eight_gaussians(500, seed=0)
    assert D.sliced_wasserstein(a, a) == 0
    assert abs(D.sliced_wasserstein(a, a + torch.tensor([0.3, 0.0])) - 0.3 * 2 / math.pi) < 0.02  # E|cos θ| = 2/π
    e = torch.randn(400, 3, dtype=torch.float64)
    assert abs(D.frechet_distance(e, e)) < 1e-9
    shifted = D.frechet_distance(e, e + torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64))
    assert abs(shifted - 9.0) < 1e-6  # same covariance: only the means' squared distance remains


def test_a_short_distillation_round_lowers_its_loss_and_replays_exactly():
    torch.manual_seed(0)
    data = D.eight_gaussians(512, seed=0)
    teacher = D.Denoiser(2, 32, 1)
    D.train_diffusion(teacher, data, epochs=3, batch_size=64, seed=0)
    histories = []
    for _ in range(2):
        student = D.Denoiser(2, 32, 1)
        student.load_state_dict(teacher.state_dict())
        histories.append(D.distill_round(teacher, student, data, 4, epochs=3, batch_size=64, seed=0))
    assert histories[0]["loss"] == histories[1]["loss"]
    assert histories[0]["optimizer_steps"] == 24


@pytest.mark.parametrize("which", ["x_pred", "x_target"])
def test_loss_names_a_non_finite_input(which):
    inputs = {"x_pred": torch.zeros(2, 3), "x_target": torch.ones(2, 3)}
    inputs[which][1, 2] = float("nan")
    with pytest.raises(ValueError, match=f"{which} contains non-finite values"):
        progressive_distillation_loss(inputs["x_pred"], inputs["x_target"], torch.full((2,), 0.5))
