"""Distillation losses of the course, one module per family of the taxonomy.

Every function takes tensors and returns a scalar tensor (unless ``reduction="none"``),
treats the teacher's inputs as constants, validates its arguments (``ValueError`` naming the
argument) and documents its equation, paper, default hyperparameters and where the authors'
code differs from the paper. ``LOSSES`` maps a method's short name to its loss function.
"""
from .contrastive import CRDLoss, CRDQueueLoss, crd_nce_loss
from .data_free import (DAFL_WEIGHTS, IMAGE_PRIOR_WEIGHTS, batch_statistics, dafl_losses, deepinversion_bn_loss,
                        image_prior_loss, total_variation)
from .dense import PIXELWISE_REDUCTIONS, pixelwise_kd_loss
from .detection import foreground_weighted_feature_loss, localization_distillation_loss
from .diffusion import SNR_WEIGHTINGS, progressive_distillation_loss
from .feature import NST_KERNELS, ConvRegressor, at_loss, attention_map, hint_loss, nst_loss
from .relation import RKD_WEIGHTS, fsp_loss, fsp_matrix, rkd_angle_loss, rkd_distance_loss, rkd_loss
from .response import dkd_loss, dkd_terms, dkd_warmup_factor, dml_loss, kd_loss
from .sequence import token_kd_loss

#: method name → loss function, for notebooks that look a method up by name
LOSSES = {
    "kd": kd_loss,
    "dkd": dkd_loss,
    "dml": dml_loss,
    "fitnets": hint_loss,
    "at": at_loss,
    "nst": nst_loss,
    "fsp": fsp_loss,
    "rkd_distance": rkd_distance_loss,
    "rkd_angle": rkd_angle_loss,
    "rkd": rkd_loss,
    "crd": crd_nce_loss,
    "token_kd": token_kd_loss,
    "ld": localization_distillation_loss,
    "fg_feature": foreground_weighted_feature_loss,
    "pixelwise_kd": pixelwise_kd_loss,
    "deepinversion_bn": deepinversion_bn_loss,
    "image_prior": image_prior_loss,
    "dafl": dafl_losses,
    "progressive_distillation": progressive_distillation_loss,
}

__all__ = [
    "LOSSES",
    # response
    "kd_loss", "dkd_terms", "dkd_loss", "dkd_warmup_factor", "dml_loss",
    # feature
    "hint_loss", "ConvRegressor", "attention_map", "at_loss", "nst_loss", "NST_KERNELS",
    # relation
    "fsp_matrix", "fsp_loss", "rkd_distance_loss", "rkd_angle_loss", "rkd_loss", "RKD_WEIGHTS",
    # contrastive
    "crd_nce_loss", "CRDLoss", "CRDQueueLoss",
    # sequence
    "token_kd_loss",
    # detection
    "localization_distillation_loss", "foreground_weighted_feature_loss",
    # dense prediction
    "pixelwise_kd_loss", "PIXELWISE_REDUCTIONS",
    # data-free
    "batch_statistics", "deepinversion_bn_loss", "total_variation", "image_prior_loss", "dafl_losses",
    "DAFL_WEIGHTS", "IMAGE_PRIOR_WEIGHTS",
    # diffusion
    "progressive_distillation_loss", "SNR_WEIGHTINGS",
]
