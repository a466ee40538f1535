"""Correct and wrong answers to the FitNets exercise (notebooks/03_feature/fitnets.ipynb), for
tests/test_exercises.py: check_fitnets_hint must accept the first and reject each of the second with its hint."""
import torch
import torch.nn.functional as F

from kdtools.features import FeatureExtractor, extract


def _maps(student, teacher, images, guided="stage2.bn1", hint="stage2.bn2"):
    with FeatureExtractor(student, [guided]) as student_features:
        student(images)
    return student_features[guided], extract(teacher, [hint], images)[hint]


# ----------------------------------------------------------------------------- correct
def hint_with_hooks_and_einsum(student, teacher, images, weight):
    guided, hint = _maps(student, teacher, images)
    return (torch.einsum("ts,bshw->bthw", weight, guided) - hint).pow(2).mean()


def hint_with_conv2d_and_mse(student, teacher, images, weight):
    guided, hint = _maps(student, teacher, images)
    return F.mse_loss(F.conv2d(guided, weight[:, :, None, None]), hint.detach())


def hint_with_a_conv_module(student, teacher, images, weight):
    regressor = torch.nn.Conv2d(weight.shape[1], weight.shape[0], kernel_size=1, bias=False)
    with torch.no_grad():
        regressor.weight.copy_(weight[:, :, None, None])
    guided, hint = _maps(student, teacher, images)
    return torch.nn.MSELoss()(regressor(guided), hint)


# ----------------------------------------------------------------------------- wrong
def hint_summed(student, teacher, images, weight):
    guided, hint = _maps(student, teacher, images)
    return (torch.einsum("ts,bshw->bthw", weight, guided) - hint).pow(2).sum()


def hint_half_sum_as_in_the_paper(student, teacher, images, weight):
    guided, hint = _maps(student, teacher, images)
    return 0.5 * (torch.einsum("ts,bshw->bthw", weight, guided) - hint).pow(2).sum()


def hint_after_the_student_relu(student, teacher, images, weight):
    guided, hint = _maps(student, teacher, images, guided="stage2.relu1")
    return (torch.einsum("ts,bshw->bthw", weight, guided) - hint).pow(2).mean()


def hint_relu_applied_to_the_student_map(student, teacher, images, weight):
    guided, hint = _maps(student, teacher, images)
    return (torch.einsum("ts,bshw->bthw", weight, torch.relu(guided)) - hint).pow(2).mean()


def hint_after_both_relus(student, teacher, images, weight):
    guided, hint = _maps(student, teacher, images, guided="stage2.relu1", hint="stage2.relu2")
    return (torch.einsum("ts,bshw->bthw", weight, guided) - hint).pow(2).mean()


def hint_on_whole_stages(student, teacher, images, weight):
    guided, hint = _maps(student, teacher, images, guided="stage2", hint="stage2")
    return (torch.einsum("ts,bshw->bthw", weight, guided) - hint).pow(2).mean()


def hint_teacher_projected_to_student(student, teacher, images, weight):
    guided, hint = _maps(student, teacher, images)
    return (guided - torch.einsum("ts,bthw->bshw", weight, hint)).pow(2).mean()


def hint_without_regressor(student, teacher, images, weight):
    guided, hint = _maps(student, teacher, images)
    return (guided - hint).pow(2).mean()


def hint_first_teacher_channels(student, teacher, images, weight):
    guided, hint = _maps(student, teacher, images)
    return (guided - hint[:, :guided.shape[1]]).pow(2).mean()


def hint_weight_used_the_wrong_way_round(student, teacher, images, weight):
    guided, hint = _maps(student, teacher, images)
    return (torch.einsum("st,bshw->bthw", weight, guided) - hint).pow(2).mean()


def hint_not_implemented(student, teacher, images, weight):
    raise NotImplementedError


CHECKER_CASES = {
    "check_fitnets_hint": {
        "correct": [hint_with_hooks_and_einsum, hint_with_conv2d_and_mse, hint_with_a_conv_module],
        "wrong": [
            (hint_summed, "you summed the squared differences"),
            (hint_half_sum_as_in_the_paper, "the paper's ½‖u_h − r(v_g)‖²"),
            (hint_after_the_student_relu, "you matched after the student's ReLU"),
            (hint_relu_applied_to_the_student_map, "you matched after the student's ReLU"),
            (hint_after_both_relus, "you hooked both networks after their ReLUs"),
            (hint_on_whole_stages, "you hooked the whole stages"),
            (hint_teacher_projected_to_student, "you projected the teacher into the student's space"),
            (hint_without_regressor, "apply the regressor"),
            (hint_first_teacher_channels, "teacher's first C_s channels"),
            (hint_weight_used_the_wrong_way_round, "W has shape [C_t, C_s]"),
            (hint_not_implemented, "not implemented yet"),
        ],
    },
}
