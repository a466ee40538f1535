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
# ---- end of attention transfer


# ---- Neuron selectivity transfer (notebooks/03_feature/neuron_selectivity_transfer.ipynb)
# ---- end of neuron selectivity transfer


__all__ = sorted(name for name in dir() if name.startswith("check_"))
