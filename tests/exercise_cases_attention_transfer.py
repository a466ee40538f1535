"""Correct and wrong answers to the exercises of notebooks/03_feature/attention_transfer.ipynb
(merged into ``CHECKER_CASES`` by tests/test_exercises.py)."""
import torch
import torch.nn.functional as F

from kdtools.losses import at_loss as reference_at_loss
from kdtools.losses import attention_map as reference_attention_map


# ----------------------------------------------------------------------------- attention_map(feat, q)
def attention_map_reference(feat, q):
    return reference_attention_map(feat, p=q)


def attention_map_by_hand(feat, q):
    amap = (feat.abs() ** q).sum(dim=1).reshape(feat.shape[0], -1)
    return amap / amap.norm(dim=1, keepdim=True)


def attention_map_channel_mean(feat, q):
    # the authors' code averages the channels: the same map after normalisation
    return F.normalize(feat.abs().pow(q).mean(1).view(feat.size(0), -1), dim=1)


def attention_map_plain_sum(feat, q):
    return F.normalize(feat.sum(dim=1).flatten(1), dim=1)


def attention_map_abs_sum(feat, q):
    return F.normalize(feat.abs().sum(dim=1).flatten(1), dim=1)


def attention_map_unnormalised(feat, q):
    return (feat.abs() ** q).sum(dim=1).flatten(1)


def attention_map_channel_normalised(feat, q):
    powered = F.normalize(feat.abs() ** q, dim=1)
    return powered.sum(dim=1).flatten(1)


def attention_map_features_normalised_over_channels(feat, q):
    unit = feat / feat.norm(dim=1, keepdim=True)
    return F.normalize((unit.abs() ** q).sum(dim=1).flatten(1), dim=1)


def attention_map_batch_normalised(feat, q):
    amap = (feat.abs() ** q).sum(dim=1).flatten(1)
    return amap / amap.norm(dim=0, keepdim=True)


def attention_map_not_flattened(feat, q):
    amap = (feat.abs() ** q).sum(dim=1)
    return amap / amap.flatten(1).norm(dim=1).view(-1, 1, 1)


# ----------------------------------------------------------------------------- at_loss(student_feat, teacher_feat)
def _q(feat):
    return F.normalize(feat.pow(2).sum(dim=1).flatten(1), dim=1)


def at_loss_reference(student_feat, teacher_feat):
    return reference_at_loss(student_feat, teacher_feat, p=2, mode="paper")


def at_loss_by_hand(student_feat, teacher_feat):
    diff = _q(student_feat) - _q(teacher_feat.detach())
    return diff.pow(2).sum(dim=1).sqrt().mean()


def at_loss_code_form(student_feat, teacher_feat):
    return (_q(student_feat) - _q(teacher_feat)).pow(2).mean()


def at_loss_mse(student_feat, teacher_feat):
    return F.mse_loss(_q(student_feat), _q(teacher_feat))


def at_loss_squared_norm(student_feat, teacher_feat):
    return (_q(student_feat) - _q(teacher_feat)).pow(2).sum(dim=1).mean()


def at_loss_l1(student_feat, teacher_feat):
    return (_q(student_feat) - _q(teacher_feat)).abs().sum(dim=1).mean()


def at_loss_batch_sum(student_feat, teacher_feat):
    return torch.linalg.norm(_q(student_feat) - _q(teacher_feat), dim=1).sum()


def at_loss_one_norm(student_feat, teacher_feat):
    return torch.norm(_q(student_feat) - _q(teacher_feat))


def at_loss_unnormalised(student_feat, teacher_feat):
    s = student_feat.pow(2).sum(dim=1).flatten(1)
    t = teacher_feat.pow(2).sum(dim=1).flatten(1)
    return (s - t).norm(dim=1).mean()


def at_loss_channel_normalised(student_feat, teacher_feat):
    def q(feat):
        return F.normalize(F.normalize(feat.pow(2), dim=1).sum(dim=1).flatten(1), dim=1)
    return (q(student_feat) - q(teacher_feat)).norm(dim=1).mean()


def at_loss_plain_channel_sum(student_feat, teacher_feat):
    def q(feat):
        return F.normalize(feat.sum(dim=1).flatten(1), dim=1)
    return (q(student_feat) - q(teacher_feat)).norm(dim=1).mean()


CHECKER_CASES = {
    "check_attention_map": {
        "correct": [attention_map_reference, attention_map_by_hand, attention_map_channel_mean],
        "wrong": [
            (attention_map_plain_sum, "you summed the channels without the power"),
            (attention_map_abs_sum, "you summed |F_c| (q = 1) whatever q is"),
            (attention_map_unnormalised, "your map is not L2-normalised"),
            (attention_map_channel_normalised, "you normalised over the CHANNEL axis"),
            (attention_map_features_normalised_over_channels, "you normalised over the CHANNEL axis"),
            (attention_map_batch_normalised, "you normalised over the batch axis"),
            (attention_map_not_flattened, "wrong shape"),
        ],
    },
    "check_at_loss": {
        "correct": [at_loss_reference, at_loss_by_hand],
        "wrong": [
            (at_loss_code_form, "that is the authors' CODE form"),
            (at_loss_mse, "that is the authors' CODE form"),
            (at_loss_squared_norm, "you squared the distance"),
            (at_loss_l1, "you summed the absolute differences"),
            (at_loss_batch_sum, "you summed over the 3 images"),
            (at_loss_one_norm, "you took one norm over the whole batch"),
            (at_loss_unnormalised, "your attention maps are not L2-normalised"),
            (at_loss_channel_normalised, "you normalised over the CHANNEL axis"),
            (at_loss_plain_channel_sum, "you summed the channels without squaring them"),
        ],
    },
}
