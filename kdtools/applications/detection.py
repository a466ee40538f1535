r"""A small dense one-stage detector in the style of GFL, its training, decoding and COCO-style mAP.

The detector (:class:`DenseDetector`) sees a canvas (:mod:`kdtools.applications.canvases`) through a small CNN
whose last map (``neck``, stride 4) feeds two branches at every location of the map:

- **classification**: one logit per class (sigmoid scores, no background class), trained with GFL's Quality
  Focal Loss so that a location's score estimates the IoU of its box — the score *is* the localisation quality;
- **box**: for each of the four edges (left, top, right, bottom) a distribution over ``n_bins`` distances
  :math:`0, 1, \dots, n_{bins}-1` (in units of the stride) from the location to that edge — GFL's general
  distribution. The box is decoded from the expected distances. Localization distillation
  (:func:`kdtools.losses.localization_distillation_loss`) needs exactly these distributions.

Paper: X. Li, W. Wang, L. Wu, S. Chen, X. Hu, J. Li, J. Tang, J. Yang, "Generalized Focal Loss: Learning Qualified
and Distributed Bounding Boxes for Dense Object Detection", NeurIPS 2020. The loss (:func:`gfl_losses`) follows
the authors' ``GFLHead``: QFL with β = 2 averaged over the positives, GIoU loss (weight 2) and Distribution Focal
Loss (weight 0.25) both weighted by the detached classification score and divided by the sum of those weights.
What we simplify, for a CPU: one feature level instead of an FPN; positives by FCOS's centre sampling (locations
inside the box within 1.5 strides of its centre, plus the location nearest the centre) instead of ATSS; plain
3×3 convolutions with batch norm instead of a ResNet and GroupNorm heads.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou, generalized_box_iou_loss

from ..losses import foreground_weighted_feature_loss, localization_distillation_loss
from ._loop import run_epochs
from .canvases import DigitCanvases, make_canvases

__all__ = ["DenseDetector", "assign_targets", "gfl_losses", "decode_boxes", "detect", "mean_average_precision",
           "train_detector", "teacher_outputs", "box_mask", "run_student_jobs", "ARMS", "choose_on_validation",
           "build_detection_study", "load_study",
           "location_quality", "rank_correlation", "matched_quality", "make_canvases", "load_teacher",
           "build_detector_teacher"]

STRIDE = 4  # pixels per location of the neck map
LD_IMAGES_PER_GPU = 2  # the batch over which the authors' LD term is summed (their configs: 2 images per GPU)


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class DenseDetector(nn.Module):
    """``width`` sets every layer's channels (w, 2w, 4w); ``forward`` returns ``(class_logits, edge_logits)``:
    ``[B, n_classes, H/4, W/4]`` and ``[B, 4, n_bins, H/4, W/4]``. Named layers for hooks: ``backbone.neck``
    (the ``[B, 4w, H/4, W/4]`` map both branches read), ``cls_tower``, ``box_tower``."""

    def __init__(self, width: int = 16, n_classes: int = 10, n_bins: int = 8):
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        if not isinstance(n_bins, int) or n_bins < 2:
            raise ValueError(f"n_bins must be an int >= 2, got {n_bins!r}")
        self.width, self.n_classes, self.n_bins, self.stride = width, n_classes, n_bins, STRIDE
        w = width
        self.backbone = nn.Sequential()
        self.backbone.add_module("stage1", _conv(1, w))
        self.backbone.add_module("stage2", _conv(w, 2 * w, stride=2))
        self.backbone.add_module("stage3", _conv(2 * w, 4 * w, stride=2))
        self.backbone.add_module("neck", nn.Sequential(_conv(4 * w, 4 * w), _conv(4 * w, 4 * w)))
        self.cls_tower, self.box_tower = _conv(4 * w, 4 * w), _conv(4 * w, 4 * w)
        self.cls_out = nn.Conv2d(4 * w, n_classes, 1)
        self.box_out = nn.Conv2d(4 * w, 4 * n_bins, 1)
        nn.init.constant_(self.cls_out.bias, -math.log(99.0))  # scores start at 0.01: focal losses' prior

    @property
    def feature_channels(self) -> int:
        return 4 * self.width

    def forward(self, images: torch.Tensor):
        feat = self.backbone(images)
        cls = self.cls_out(self.cls_tower(feat))
        edges = self.box_out(self.box_tower(feat))
        b, _, h, w = edges.shape
        return cls, edges.view(b, 4, self.n_bins, h, w)


def _centres(height: int, width: int, stride: int, device=None) -> torch.Tensor:
    """``[H·W, 2]`` pixel centres (x, y) of the map's locations, row by row."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], 1).float() * stride + stride / 2


def assign_targets(boxes: torch.Tensor, labels: torch.Tensor, height: int, width: int, stride: int = STRIDE,
                   radius: float = 1.5):
    """Which object each location learns: ``(assigned [B, H·W] int64, -1 = background; target_boxes [B, H·W, 4])``.

    A location is positive for an object when its centre lies inside the object's box and within ``radius``
    strides of the box centre (FCOS's centre sampling); the location nearest each box centre is always positive,
    so thin digits (a "1") get one too. A location claimed by several objects goes to the smallest box.
    ``boxes`` ``[B, K, 4]`` xyxy pixels, ``labels`` ``[B, K]`` with -1 on padding.
    """
    if boxes.dim() != 3 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:2]:
        raise ValueError(f"boxes must be [B, K, 4] and labels [B, K], got shapes {tuple(boxes.shape)} and "
                         f"{tuple(labels.shape)}")
    centres = _centres(height, width, stride, boxes.device)  # [L, 2]
    if boxes.shape[1] == 0:  # canvases without objects: every location is background
        return (torch.full((boxes.shape[0], len(centres)), -1, dtype=torch.long, device=boxes.device),
                boxes.new_zeros(boxes.shape[0], len(centres), 4))
    cx, cy = centres[:, 0][None, :, None], centres[:, 1][None, :, None]  # [1, L, 1]
    x1, y1, x2, y2 = (boxes[..., i][:, None, :] for i in range(4))  # [B, 1, K]
    bcx, bcy = (x1 + x2) / 2, (y1 + y2) / 2
    inside = (cx >= x1) & (cx < x2) & (cy >= y1) & (cy < y2)
    near = ((cx - bcx).abs() < radius * stride) & ((cy - bcy).abs() < radius * stride)
    valid = (labels >= 0)[:, None, :]
    nearest = torch.zeros_like(inside).scatter_(1, ((cx - bcx) ** 2 + (cy - bcy) ** 2).argmin(1, keepdim=True),
                                                True)
    candidate = ((inside & near) | nearest) & valid  # [B, L, K]
    area = ((x2 - x1) * (y2 - y1)).expand_as(candidate).masked_fill(~candidate, float("inf"))
    smallest = area.argmin(2)  # [B, L]
    assigned = torch.where(candidate.any(2), smallest, torch.full_like(smallest, -1))
    target_boxes = boxes.gather(1, assigned.clamp_min(0)[..., None].expand(-1, -1, 4))
    return assigned, target_boxes


def decode_boxes(edge_logits: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """``[B, H·W, 4]`` xyxy boxes from ``[B, 4, n_bins, H, W]`` edge logits: each edge at its expected distance
    :math:`\\sum_i i\\,\\mathrm{softmax}(z)_i` strides from the location's centre."""
    b, _, n_bins, h, w = edge_logits.shape
    probs = edge_logits.softmax(2)
    bins = torch.arange(n_bins, dtype=probs.dtype, device=probs.device).view(1, 1, n_bins, 1, 1)
    dist = (probs * bins).sum(2).flatten(2).transpose(1, 2) * stride  # [B, L, 4]: left, top, right, bottom
    centres = _centres(h, w, stride, edge_logits.device).to(dist.dtype)[None]
    return torch.cat([centres - dist[..., :2], centres + dist[..., 2:]], -1)


def _distribution_focal_loss(edge_logits: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """GFL's DFL per edge: ``[N, 4]`` from logits ``[N, 4, n_bins]`` and real-valued target distances ``[N, 4]``:
    cross-entropy to the two bins around the target, weighted by closeness (their mean lands on the target)."""
    left = distances.floor().long()
    right_weight = distances - left
    log_p = edge_logits.log_softmax(-1)
    return -(log_p.gather(-1, left[..., None])[..., 0] * (1 - right_weight)
             + log_p.gather(-1, (left + 1)[..., None])[..., 0] * right_weight)


def gfl_losses(class_logits: torch.Tensor, edge_logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
               stride: int = STRIDE) -> Dict[str, torch.Tensor]:
    """GFL's three terms for a batch, with what LD and feature imitation need: ``{"qfl", "giou", "dfl",
    "positive" [B, L] bool, "quality" [P] (the detached score weights of the positives)}``.

    Quality Focal Loss (β = 2): binary cross-entropy of every class logit against the soft target "IoU of the
    predicted box with its object" (0 elsewhere), scaled by :math:`|\\sigma(z) - y|^2`, summed and divided by the
    number of positives. GIoU loss on the decoded boxes and DFL on the edges, at the positives only, each
    weighted by the positive's detached max class score and divided by the sum of those scores (GFLHead).
    """
    b, n_classes, h, w = class_logits.shape
    assigned, target_boxes = assign_targets(boxes, labels, h, w, stride)
    positive = assigned >= 0
    n_pos = max(int(positive.sum()), 1)
    logits = class_logits.flatten(2).transpose(1, 2)  # [B, L, C]
    pred_boxes = decode_boxes(edge_logits, stride)
    pos_pred, pos_target = pred_boxes[positive], target_boxes[positive]
    with torch.no_grad():
        iou = box_iou(pos_pred, pos_target).diagonal() if len(pos_pred) else pos_pred.new_zeros(0)
        quality = logits[positive].sigmoid().max(1).values
    pos_labels = labels.gather(1, assigned.clamp_min(0))[positive] if labels.shape[1] else labels.new_zeros(0)
    soft_target = torch.zeros_like(logits)
    soft_target[positive] = F.one_hot(pos_labels, n_classes).to(logits.dtype) * iou[:, None]
    scale = (logits.sigmoid() - soft_target).abs().pow(2)
    qfl = (F.binary_cross_entropy_with_logits(logits, soft_target, reduction="none") * scale).sum() / n_pos
    weight_sum = quality.sum().clamp_min(1e-6)
    giou = (generalized_box_iou_loss(pos_pred, pos_target, reduction="none") * quality).sum() / weight_sum
    centres = _centres(h, w, stride, boxes.device).expand(b, -1, -1)[positive]
    distances = torch.cat([centres - pos_target[:, :2], pos_target[:, 2:] - centres], 1) / stride
    n_bins = edge_logits.shape[2]
    distances = distances.clamp(0, n_bins - 1 - 0.01)
    pos_edges = edge_logits.flatten(3).permute(0, 3, 1, 2)[positive]  # [P, 4, n_bins]
    dfl = (_distribution_focal_loss(pos_edges, distances).mean(1) * quality).sum() / weight_sum
    return {"qfl": qfl, "giou": giou, "dfl": dfl, "positive": positive, "quality": quality}


def box_mask(boxes: torch.Tensor, labels: torch.Tensor, height: int, width: int,
             stride: int = STRIDE) -> torch.Tensor:
    """``[B, H, W]`` float mask of the map's locations whose centre lies inside an object's box (the
    foreground of feature imitation)."""
    centres = _centres(height, width, stride, boxes.device)
    cx, cy = centres[:, 0][None, :, None], centres[:, 1][None, :, None]
    x1, y1, x2, y2 = (boxes[..., i][:, None, :] for i in range(4))
    inside = (cx >= x1) & (cx < x2) & (cy >= y1) & (cy < y2) & (labels >= 0)[:, None, :]
    return inside.any(2).float().view(-1, height, width)


@torch.no_grad()
def detect(model: nn.Module, images: torch.Tensor, score_threshold: float = 0.05, nms_iou: float = 0.6,
           max_per_image: int = 100, batch_size: int = 256) -> List[Dict[str, torch.Tensor]]:
    """Detections per image as ``{"boxes", "scores", "labels"}`` (torchmetrics' format): every (location, class)
    score above ``score_threshold``, class-wise NMS at ``nms_iou``, the best ``max_per_image`` kept (GFL's test
    settings but for the 0.6 NMS IoU it shares)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        cls, edges = model(images[start:start + batch_size])
        scores = cls.flatten(2).transpose(1, 2).sigmoid()  # [B, L, C]
        boxes = decode_boxes(edges, model.stride).clamp(0, images.shape[-1])
        for s, bx in zip(scores, boxes):
            loc, label = (s > score_threshold).nonzero(as_tuple=True)
            kept_scores, kept_boxes = s[loc, label], bx[loc]
            keep = batched_nms(kept_boxes, kept_scores, label, nms_iou)[:max_per_image]
            out.append({"boxes": kept_boxes[keep], "scores": kept_scores[keep], "labels": label[keep]})
    model.train(was_training)
    return out


def mean_average_precision(detections: List[Dict[str, torch.Tensor]], canvases: DigitCanvases) -> Dict[str, float]:
    """COCO-style ``{"mAP": mAP@[.5:.95], "mAP50": mAP@.5}`` in %, computed by torchmetrics'
    ``MeanAveragePrecision`` (pycocotools underneath), so no part of the metric is ours."""
    from torchmetrics.detection import MeanAveragePrecision

    if len(detections) != len(canvases):
        raise ValueError(f"detections must have one entry per canvas, got {len(detections)} for {len(canvases)}")
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
    metric.update(detections, [canvases.targets(i) for i in range(len(canvases))])
    result = metric.compute()
    return {"mAP": 100 * float(result["map"]), "mAP50": 100 * float(result["map_50"])}



@torch.no_grad()
def location_quality(model: DenseDetector, canvases: DigitCanvases, batch_size: int = 256) -> Dict[str, torch.Tensor]:
    """Before NMS: every positive location of every object (:func:`assign_targets`) with the model's score for the
    object's class and the IoU of the box it predicts there: ``{"score", "iou", "object"}`` (``object`` numbers
    the objects across canvases), to compare classification confidence with localisation quality."""
    model.eval()
    scores, ious, objects = [], [], []
    offset = 0
    for start in range(0, len(canvases), batch_size):
        part = canvases.subset(slice(start, start + batch_size))
        cls, edges = model(part.images)
        _, _, h, w = cls.shape
        assigned, target_boxes = assign_targets(part.boxes, part.labels, h, w, model.stride)
        positive = assigned >= 0
        labels = part.labels.gather(1, assigned.clamp_min(0))
        score = cls.flatten(2).transpose(1, 2).sigmoid().gather(2, labels.clamp_min(0)[..., None])[..., 0]
        pred = decode_boxes(edges, model.stride)
        scores.append(score[positive])
        ious.append(box_iou(pred[positive], target_boxes[positive]).diagonal())
        k = part.labels.shape[1]
        index = (torch.arange(len(part))[:, None] * k + assigned)[positive]
        objects.append(index + offset)
        offset += len(part) * k
    objects = torch.unique(torch.cat(objects), return_inverse=True)[1]
    return {"score": torch.cat(scores), "iou": torch.cat(ious), "object": objects}


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two 1-D tensors (ties broken by position)."""
    if a.shape != b.shape or a.dim() != 1 or len(a) < 2:
        raise ValueError(f"a and b must be 1-D of the same length >= 2, got shapes {tuple(a.shape)}, {tuple(b.shape)}")
    ranks = [torch.empty(len(x)).index_put_((x.argsort(),), torch.arange(len(x), dtype=torch.float)) for x in (a, b)]
    ra, rb = (r - r.mean() for r in ranks)
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


@torch.no_grad()
def matched_quality(detections: List[Dict[str, torch.Tensor]], canvases: DigitCanvases, top: int = 1):
    """For every object, its best-IoU detection of the right class among each image's detections:
    ``(score [M], iou [M])`` — how confident the detector is against how well the box fits."""
    scores, ious = [], []
    for i, det in enumerate(detections):
        target = canvases.targets(i)
        for box, label in zip(target["boxes"], target["labels"]):
            same = det["labels"] == label
            if not same.any():
                continue
            iou = box_iou(box[None], det["boxes"][same])[0]
            scores.append(det["scores"][same]), ious.append(iou)
    if not scores:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(scores), torch.cat(ious)


@torch.no_grad()
def teacher_outputs(teacher: DenseDetector, images: torch.Tensor, batch_size: int = 256):
    """The frozen teacher's ``(edge_logits [N, 4, n_bins, h, w], neck [N, C, h, w])`` for ``images``, computed
    once so that a student's epochs never run the teacher again (its outputs do not change)."""
    teacher.eval()
    edges, necks = [], []
    hook = teacher.backbone.neck.register_forward_hook(lambda m, i, o: necks.append(o))
    try:
        for start in range(0, len(images), batch_size):
            edges.append(teacher(images[start:start + batch_size])[1])
    finally:
        hook.remove()
    return torch.cat(edges), torch.cat(necks)


def train_detector(model: DenseDetector, train: DigitCanvases, epochs: int = 10, batch_size: int = 32,
                   lr: float = 2e-3, seed: int = 0, teacher: Optional[DenseDetector] = None,
                   ld_weight: float = 0.0, ld_temperature: float = 10.0, fg_weight: float = 0.0,
                   bg_weight: float = 0.0, valid: Optional[DigitCanvases] = None, progress: bool = False,
                   stop_after: Optional[int] = None) -> dict:
    """Train ``model`` with GFL's losses (+ LD and/or feature imitation from ``teacher``) and return its history:
    ``{"loss": [...], "valid_mAP": [...], "best_epoch", "best_state", "seconds"}`` (with ``valid``, the mAP on it
    after every epoch and the weights of the epoch where it was highest; ``best_epoch`` counts from 1).

    LD, as the authors' ``LDHead``: ``ld_weight · localization_distillation_loss(student edges, teacher edges,
    T, weight=student's detached score, avg_factor=4)`` at the student's positive locations (their default weight
    is 0.25, T = 10). That is a *sum* over the positives of one GPU's batch of 2 images (the GFL/LD configs' 2
    images per GPU; data-parallel training averages the GPUs' gradients), so on our batches of B images it is
    divided by B/2 (``avg_factor = 4·B/2``) to keep its strength per image. Feature imitation: ``foreground_weighted_feature_loss`` between the teacher's ``neck`` map
    and the student's, passed through a 1×1 convolution (trained with the student, as FGD's align layer), with
    the mask of :func:`box_mask`. AdamW with a cosine schedule to 0; the teacher is frozen (eval mode) and run
    once over the training set (:func:`teacher_outputs`). ``stop_after``: run only the first epochs of the
    ``epochs``-epoch schedule (to replay the start of a long run exactly).
    """
    from ..runtime import seed_everything

    distill_features = fg_weight > 0 or bg_weight > 0
    if (ld_weight > 0 or distill_features) and teacher is None:
        raise ValueError(f"ld_weight={ld_weight}, fg_weight={fg_weight}, bg_weight={bg_weight} need a teacher, "
                         f"got teacher=None")
    seed_everything(seed)
    params = list(model.parameters())
    if ld_weight > 0 or distill_features:
        t_edges_all, t_neck_all = teacher_outputs(teacher, train.images)
    if distill_features:
        adapter = nn.Conv2d(model.feature_channels, teacher.feature_channels, 1)
        params += list(adapter.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    student_neck = []

    def batch_loss(idx):
        images, boxes, labels = train.images[idx], train.boxes[idx], train.labels[idx]
        student_neck.clear()
        cls, edges = model(images)
        terms = gfl_losses(cls, edges, boxes, labels, model.stride)
        loss = terms["qfl"] + 2.0 * terms["giou"] + 0.25 * terms["dfl"]
        if ld_weight > 0:
            pos = terms["positive"]
            s_pos = edges.flatten(3).permute(0, 3, 1, 2)[pos]
            t_pos = t_edges_all[idx].flatten(3).permute(0, 3, 1, 2)[pos]
            per_gpu = 4.0 * len(idx) / LD_IMAGES_PER_GPU  # their sum over 2 images' positives
            loss = loss + ld_weight * localization_distillation_loss(
                s_pos, t_pos, ld_temperature, weight=terms["quality"], avg_factor=per_gpu)
        if distill_features:
            t_neck = t_neck_all[idx]
            mask = box_mask(boxes, labels, *t_neck.shape[-2:], model.stride)
            loss = loss + foreground_weighted_feature_loss(adapter(student_neck[0]), t_neck, mask,
                                                           fg_weight, bg_weight)
        return loss

    def validate():
        return mean_average_precision(detect(model, valid.images), valid)["mAP"]

    hook = model.backbone.neck.register_forward_hook(lambda m, i, o: student_neck.append(o))
    try:
        return run_epochs(model, len(train), batch_loss, optimizer, epochs=epochs, batch_size=batch_size, seed=seed,
                          validate=validate if valid is not None else None, score_name="mAP",
                          stop_after=stop_after, progress=progress)
    finally:
        hook.remove()


def build_detector_teacher(width: int = 16, n_train: int = 6000, epochs: int = 20, batch_size: int = 32,
                           lr: float = 2e-3, seed: int = 0, n_valid: int = 500, n_test: int = 1000):
    """Zoo builder (:mod:`kdtools.zoo.artifacts`) of the lesson's teacher: a :class:`DenseDetector` of ``width``
    trained on ``n_train`` training canvases; returns ``(state_dict, info)`` with its history and test mAP."""
    train = make_canvases("train", n_train, seed=seed)
    valid = make_canvases("valid", n_valid, seed=seed)
    test = make_canvases("test", n_test, seed=seed)
    model = DenseDetector(width)
    history = train_detector(model, train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, valid=valid,
                             progress=True)
    scores = mean_average_precision(detect(model, test.images), test)
    history.pop("best_state")
    info = {"width": width, "history": history, "test_mAP": round(scores["mAP"], 2),
            "test_mAP50": round(scores["mAP50"], 2), "test_canvases": n_test,
            "parameters": sum(p.numel() for p in model.parameters())}
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, info




def load_teacher(name: str = "canvas-detector-teacher") -> DenseDetector:
    """The shipped teacher detector ``name`` (checksum verified), in eval mode."""
    from ..zoo.artifacts import load_network

    return load_network(name, lambda info: DenseDetector(info["width"]))[0]


# ---- the lesson's students (notebooks/06_applications/detection_kd.ipynb)
STUDENT_WIDTH = 4  # 11.6k parameters against the teacher's 174k
# FGD's weights (Yang et al. 2022: α = 1e-3 on a mask of 1/box-area, β = 5e-4 on a mask of 1/background-area)
# rewritten for the binary masks of box_mask: divided by the mean cells per box (17) and per background (222)
# on our canvases, so that each box, and each image's background, weighs what it weighs in FGD
FG_WEIGHT, BG_WEIGHT = 1e-3 / 17, 5e-4 / 222
AUTHORS_LD = {"ld_weight": 0.25, "ld_temperature": 10.0}  # the LD authors' GFL configs
AUTHORS_FEATURES = {"fg_weight": FG_WEIGHT, "bg_weight": BG_WEIGHT}
# the candidates a validation sweep chooses from: the authors' values and smaller ones
LD_CANDIDATES = {f"LD, λ={w:g}, T={t:g}": {"ld_weight": w, "ld_temperature": t}
                 for w in (0.25, 0.05) for t in (10.0, 1.0)}
FEATURE_CANDIDATES = {f"features, {m:g} × FGD's weights": {"fg_weight": m * FG_WEIGHT, "bg_weight": m * BG_WEIGHT}
                      for m in (1.0, 0.1)}
ARMS = {  # the authors' settings; the lesson replaces them by the validation sweep's choices
    "scratch": {},
    "LD": AUTHORS_LD,
    "feature imitation": AUTHORS_FEATURES,
    "LD + feature imitation": {**AUTHORS_LD, **AUTHORS_FEATURES},
}


def _student_job(job: dict) -> dict:
    from ..runtime import seed_everything

    torch.set_num_threads(1)
    arm, seed, options = job["arm"], job["seed"], job["options"]
    train, valid = make_canvases("train", job["n_train"]), make_canvases("valid", job["n_valid"])
    teacher = load_teacher() if options else None
    seed_everything(seed)
    model = DenseDetector(STUDENT_WIDTH)
    history = train_detector(model, train, epochs=job["epochs"], seed=seed, teacher=teacher, valid=valid,
                             **options)
    best_state = history.pop("best_state")
    result = {"arm": arm, "options": options, "seed": seed, "history": history}
    if job["n_test"]:
        test = make_canvases("test", job["n_test"])
        result["last"] = mean_average_precision(detect(model, test.images), test)
        result["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_state)
        result["best"] = mean_average_precision(detect(model, test.images), test)
    return result


def run_student_jobs(arms, seeds, n_train: int, n_valid: int, n_test: int, epochs: int,
                     workers: int = 2) -> List[dict]:
    """Train a student of :data:`STUDENT_WIDTH` for every arm and every seed, on the same ``n_train`` training
    canvases and budget, in ``workers`` processes. ``arms``: names of :data:`ARMS`, or a dict from a name of
    your own to the distillation options of :func:`train_detector` (``ld_weight``, ``ld_temperature``,
    ``fg_weight``, ``bg_weight``). Each result holds the history (with the validation mAP of every epoch) and,
    unless ``n_test`` is 0 (a validation sweep), the test mAP (``{"mAP", "mAP50"}``) at the last epoch
    (``last``) and at the epoch with the best validation mAP (``best``), and the last epoch's weights
    (``state``)."""
    from ..runtime import map_in_processes

    if not isinstance(arms, dict):
        unknown = [a for a in arms if a not in ARMS]
        if unknown:
            raise ValueError(f"arms must be keys of ARMS ({', '.join(ARMS)}) or a dict of options, got {unknown}")
        arms = {a: ARMS[a] for a in arms}
    jobs = [dict(arm=a, options=dict(o), seed=s, n_train=n_train, n_valid=n_valid, n_test=n_test, epochs=epochs)
            for a, o in arms.items() for s in seeds]
    return map_in_processes(_student_job, jobs, workers)


def choose_on_validation(runs: List[dict]) -> dict:
    """The run whose last-epoch validation mAP is highest (ties: the first), for choosing a setting by a sweep."""
    if not runs:
        raise ValueError("runs must hold at least one run, got none")
    return max(runs, key=lambda r: r["history"]["valid_mAP"][-1])


def build_detection_study(n_train: int = 2000, n_valid: int = 300, n_test: int = 1000, epochs: int = 20,
                          seeds=(0, 1, 2), workers: int = 2):
    """Zoo builder (:mod:`kdtools.zoo.artifacts`) of the lesson's long comparison, too long for the notebook:
    a validation sweep (first seed) over :data:`LD_CANDIDATES` and :data:`FEATURE_CANDIDATES`, then the four
    arms (scratch, LD and feature imitation with the chosen settings, both) for every seed. Returns the last
    epoch's weights of every arm's first-seed student (``"<arm>/<parameter>"``) and, as ``info``, every run's
    history and test mAP."""
    from ..zoo.artifacts import first_seed_states

    candidates = {**LD_CANDIDATES, **FEATURE_CANDIDATES}
    sweep = run_student_jobs(candidates, list(seeds)[:1], n_train, n_valid, 0, epochs, workers)
    chosen_ld = choose_on_validation([r for r in sweep if r["arm"] in LD_CANDIDATES])
    chosen_features = choose_on_validation([r for r in sweep if r["arm"] in FEATURE_CANDIDATES])
    arms = {"scratch": {}, "LD": chosen_ld["options"], "feature imitation": chosen_features["options"],
            "LD + feature imitation": {**chosen_ld["options"], **chosen_features["options"]}}
    runs = run_student_jobs(arms, list(seeds), n_train, n_valid, n_test, epochs, workers)
    tensors = first_seed_states(runs, seeds[0])
    info = {"sweep": sweep, "chosen": {"LD": chosen_ld["arm"], "feature imitation": chosen_features["arm"]},
            "arms": arms, "runs": runs, "n_train": n_train, "n_valid": n_valid, "n_test": n_test, "epochs": epochs,
            "seeds": list(seeds), "student_width": STUDENT_WIDTH}
    return tensors, info


def load_study(name: str = "canvas-detection-students"):
    """``(info, students)`` of the shipped comparison: its record (:func:`build_detection_study`) and the
    first seed's last-epoch student of every arm, as :class:`DenseDetector` in eval mode."""
    from ..zoo.artifacts import load_networks

    students, entry = load_networks(name, lambda info: DenseDetector(info["student_width"]))
    return entry["info"], students
