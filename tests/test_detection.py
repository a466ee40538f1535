"""kdtools.applications: the multi-digit canvases, target assignment, GFL's losses, decoding, mAP through
torchmetrics and the distillation terms of the detection lesson."""
import math

import pytest
import torch

from kdtools.applications import canvases, detection
from kdtools.data import load_digit_canvases


# ----------------------------------------------------------------------------- canvases
def test_canvases_are_deterministic_and_their_boxes_hold_the_ink(mnist):
    a = canvases.make_digit_canvases("train", 40, seed=3)
    b = load_digit_canvases("train", 40, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.boxes, b.boxes) and torch.equal(a.masks, b.masks)
    assert a.images.shape == (40, 1, 64, 64) and a.boxes.shape == (40, 3, 4) and a.masks.shape == (40, 64, 64)
    assert not torch.equal(a.images, canvases.make_digit_canvases("train", 40, seed=4).images)
    counts = (a.labels >= 0).sum(1)
    assert counts.min() >= 1 and counts.max() <= 3 and len(set(counts.tolist())) > 1
    for i in range(len(a)):
        target = a.targets(i)
        ink = a.images[i, 0] >= canvases.INK
        covered = torch.zeros_like(ink)
        for (x1, y1, x2, y2), label in zip(target["boxes"].long().tolist(), target["labels"].tolist()):
            crop_ink, crop_mask = ink[y1:y2, x1:x2], a.masks[i, y1:y2, x1:x2]
            # tight: ink touches all four sides of its box; the mask carries the digit's class there
            assert crop_ink[0].any() and crop_ink[-1].any() and crop_ink[:, 0].any() and crop_ink[:, -1].any()
            assert (crop_mask == label + 1).any()
            covered[y1:y2, x1:x2] = True
        assert not (ink & ~covered).any(), "ink outside every box"
        assert ((a.masks[i] > 0) <= covered).all()
        boxes = target["boxes"]
        for j in range(len(boxes)):
            for k in range(j + 1, len(boxes)):
                assert detection.box_iou(boxes[j:j + 1], boxes[k:k + 1]).item() == 0, "boxes overlap"


def test_splits_draw_on_disjoint_mnist_images(mnist):
    train, valid, test = (canvases.SPLITS[s] for s in ("train", "valid", "test"))
    assert train[0] and valid[0] and not test[0]  # valid comes from MNIST's training file, test from its test file
    assert train[2] <= valid[1]
    a, b = (canvases.make_digit_canvases(s, 10) for s in ("train", "valid"))
    assert not torch.equal(a.images, b.images)


@pytest.mark.parametrize("kwargs, match", [
    (dict(split="val"), "split must be one of"),
    (dict(n=0), "n must be a positive int"),
    (dict(scales=(4, 20)), "scales must be two ints"),
    (dict(scales=(16, 80)), "scales must be two ints"),
    (dict(max_digits=6), "do not fit without overlap"),
])
def test_canvas_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        canvases.make_digit_canvases(**kwargs)


# ----------------------------------------------------------------------------- targets and decoding
def _one_box(x1, y1, x2, y2, label=3):
    boxes = torch.zeros(1, 2, 4)
    boxes[0, 0] = torch.tensor([x1, y1, x2, y2], dtype=torch.float32)
    return boxes, torch.tensor([[label, -1]])


def test_centre_sampling_by_hand():
    boxes, labels = _one_box(10, 10, 30, 22)  # centre (20, 16); location centres are 2, 6, 10, ... (stride 4)
    assigned, target_boxes = detection.assign_targets(boxes, labels, 16, 16)
    grid = (assigned[0] == 0).view(16, 16)
    # x centres inside the box and within 6 pixels of 20: 18, 22 (14 and 26 are 6 away: not < 6); y: 14, 18
    expected = torch.zeros(16, 16, dtype=torch.bool)
    for y in (14, 18):
        for x in (18, 22):
            expected[(y - 2) // 4, (x - 2) // 4] = True
    assert torch.equal(grid, expected)
    assert (assigned[0] >= 0).sum() == 4 and torch.equal(target_boxes[0, assigned[0] == 0][0], boxes[0, 0])


def test_a_thin_digit_still_gets_its_nearest_location():
    boxes, labels = _one_box(20, 8, 21, 28)  # a 1-pixel wide "1": no location centre lies inside
    assigned, _ = detection.assign_targets(boxes, labels, 16, 16)
    assert (assigned[0] == 0).sum() == 1
    assert detection.assign_targets(boxes, torch.tensor([[-1, -1]]), 16, 16)[0].eq(-1).all()


def test_assign_targets_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"boxes must be \[B, K, 4\]"):
        detection.assign_targets(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), 16, 16)


def test_decoded_boxes_sit_at_the_expected_distances():
    n_bins = 8
    edges = torch.full((1, 4, n_bins, 2, 2), -30.0)
    edges[:, 0, 2] = edges[:, 1, 1] = edges[:, 2, 3] = 30.0  # left 2, top 1, right 3 strides
    edges[:, 3, 4] = edges[:, 3, 5] = 30.0  # bottom: half on 4, half on 5 -> 4.5 strides
    boxes = detection.decode_boxes(edges, stride=4)
    cx, cy = 2.0, 2.0  # the first location's centre
    assert torch.allclose(boxes[0, 0], torch.tensor([cx - 8, cy - 4, cx + 12, cy + 18]), atol=1e-4)


def test_distribution_focal_loss_by_hand():
    logits = torch.log(torch.tensor([[[0.1, 0.6, 0.3]]]).expand(1, 4, 3))
    target = torch.full((1, 4), 1.25)  # between bins 1 and 2, weights 0.75 and 0.25
    expected = -(0.75 * math.log(0.6) + 0.25 * math.log(0.3))
    assert torch.allclose(detection._distribution_focal_loss(logits, target), torch.full((1, 4), expected))


def test_gfl_losses_are_finite_have_gradients_and_vanish_on_empty_canvases():
    torch.manual_seed(0)
    model = detection.DenseDetector(width=2)
    images = torch.rand(2, 1, 64, 64)
    boxes = torch.tensor([[[8.0, 8, 24, 30], [40, 30, 52, 50]], [[5, 40, 20, 60], [0, 0, 0, 0]]])
    labels = torch.tensor([[1, 7], [4, -1]])
    cls, edges = model(images)
    assert cls.shape == (2, 10, 16, 16) and edges.shape == (2, 4, 8, 16, 16)
    terms = detection.gfl_losses(cls, edges, boxes, labels)
    total = terms["qfl"] + 2 * terms["giou"] + 0.25 * terms["dfl"]
    assert torch.isfinite(total) and total > 0
    total.backward()
    assert model.box_out.weight.grad.abs().sum() > 0 and model.cls_out.weight.grad.abs().sum() > 0
    assert terms["quality"].shape == (int(terms["positive"].sum()),)
    empty = detection.gfl_losses(cls.detach(), edges.detach(), boxes[:, :0], labels[:, :0])
    assert empty["giou"] == 0 and empty["dfl"] == 0 and empty["qfl"] > 0  # every score is pushed down


def test_quality_focal_loss_by_hand():
    # one location, two classes, one object of class 1 whose predicted box is exact: soft target (0, 1)
    edges = torch.full((1, 4, 8, 1, 1), -30.0)
    edges[:, :, 1] = 30.0  # every edge one stride away: the box (-2, -2, 6, 6) around the centre (2, 2)
    boxes, labels = torch.tensor([[[-2.0, -2, 6, 6]]]), torch.tensor([[1]])
    cls = torch.tensor([0.5, -1.0]).view(1, 2, 1, 1)
    terms = detection.gfl_losses(cls, edges, boxes, labels)
    s0, s1 = torch.sigmoid(torch.tensor(0.5)), torch.sigmoid(torch.tensor(-1.0))
    expected = -torch.log(1 - s0) * s0 ** 2 - torch.log(s1) * (1 - s1) ** 2
    assert torch.allclose(terms["qfl"], expected, atol=1e-5)
    assert terms["giou"].abs() < 1e-5


# ----------------------------------------------------------------------------- masks, detection, mAP
def test_box_mask_marks_locations_inside_boxes():
    boxes, labels = _one_box(10, 10, 30, 22)
    mask = detection.box_mask(boxes, labels, 16, 16)
    assert mask.shape == (1, 16, 16) and mask.sum() == 5 * 3  # x centres 10..26, y centres 10..18


def test_a_perfect_detector_scores_100_map_and_a_shifted_one_less():
    data = canvases.DigitCanvases(torch.zeros(2, 1, 64, 64), torch.tensor([[[8.0, 8, 24, 30], [40, 30, 52, 50]],
                                                                          [[5, 40, 20, 60], [0, 0, 0, 0]]]),
                                  torch.tensor([[1, 7], [4, -1]]), torch.zeros(2, 64, 64, dtype=torch.long))
    perfect = [dict(boxes=data.targets(i)["boxes"], scores=torch.ones(len(data.targets(i)["labels"])),
                    labels=data.targets(i)["labels"]) for i in range(2)]
    assert detection.mean_average_precision(perfect, data) == {"mAP": 100.0, "mAP50": 100.0}
    shifted = [dict(d, boxes=d["boxes"] + 2) for d in perfect]  # IoUs 0.60-0.66: right at .5, not at .75
    scores = detection.mean_average_precision(shifted, data)
    assert scores["mAP"] < 60 and scores["mAP50"] == 100.0
    with pytest.raises(ValueError, match="one entry per canvas"):
        detection.mean_average_precision(perfect[:1], data)
    score, iou = detection.matched_quality(shifted, data)
    assert score.shape == iou.shape == (3,) and (iou < 1).all()


def test_detect_returns_torchmetrics_dicts():
    model = detection.DenseDetector(width=2)
    out = detection.detect(model, torch.rand(3, 1, 64, 64), score_threshold=0.0, max_per_image=7)
    assert len(out) == 3 and all(len(d["boxes"]) <= 7 and set(d) == {"boxes", "scores", "labels"} for d in out)
    assert model.training  # restored


def test_detector_arguments_are_checked():
    with pytest.raises(ValueError, match="width must be a positive int"):
        detection.DenseDetector(width=0)
    with pytest.raises(ValueError, match="n_bins must be an int >= 2"):
        detection.DenseDetector(n_bins=1)


# ----------------------------------------------------------------------------- training with distillation
def _tiny_set(n=8):
    gen = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[10.0, 12, 26, 34], [36, 30, 54, 52]]).expand(n, 2, 4).clone()
    labels = torch.randint(0, 10, (n, 2), generator=gen)
    return canvases.DigitCanvases(torch.rand(n, 1, 64, 64, generator=gen), boxes, labels,
                                  torch.zeros(n, 64, 64, dtype=torch.long))


def test_training_reduces_the_loss_and_distillation_needs_a_teacher():
    data = _tiny_set()
    model = detection.DenseDetector(width=2)
    history = detection.train_detector(model, data, epochs=4, batch_size=4, lr=5e-3)
    assert len(history["loss"]) == 4 and history["loss"][-1] < history["loss"][0]
    with pytest.raises(ValueError, match="need a teacher, got teacher=None"):
        detection.train_detector(model, data, epochs=1, ld_weight=0.25)


def test_distillation_terms_pull_the_student_towards_the_teacher():
    data = _tiny_set()
    teacher = detection.DenseDetector(width=4).eval()

    def gap(**kwargs):
        student = detection.DenseDetector(width=2)
        detection.train_detector(student, data, epochs=3, batch_size=4, lr=5e-3, teacher=teacher, seed=1,
                                 **kwargs)
        with torch.no_grad():
            s, t = student(data.images)[1], teacher(data.images)[1]
        return (s.softmax(2) - t.softmax(2)).abs().mean().item()

    assert gap(ld_weight=5.0) < gap()  # LD brings the edge distributions closer than training alone
    student = detection.DenseDetector(width=2)
    history = detection.train_detector(student, data, epochs=2, batch_size=4, teacher=teacher, fg_weight=1e-3,
                                       bg_weight=5e-4)
    assert all(math.isfinite(x) for x in history["loss"])


def test_the_best_validation_epoch_is_kept():
    data = _tiny_set()
    model = detection.DenseDetector(width=2)
    history = detection.train_detector(model, data, epochs=3, batch_size=4, lr=5e-3, valid=data)
    assert len(history["valid_mAP"]) == 3
    best = history["best_epoch"]
    assert history["valid_mAP"][best - 1] == max(history["valid_mAP"])
    assert history["valid_mAP"][best:].count(max(history["valid_mAP"])) == 0  # ties go to the later epoch
    model.load_state_dict(history["best_state"])
    again = detection.mean_average_precision(detection.detect(model, data.images), data)["mAP"]
    assert round(again, 2) == history["valid_mAP"][best - 1]


def test_teacher_outputs_match_a_forward_pass():
    teacher = detection.DenseDetector(width=2).eval()
    images = torch.rand(5, 1, 64, 64)
    edges, neck = detection.teacher_outputs(teacher, images, batch_size=2)
    assert torch.allclose(edges, teacher(images)[1], atol=1e-6)
    assert torch.allclose(neck, teacher.backbone(images), atol=1e-6)


def test_location_quality_lists_every_positive_location():
    data = _tiny_set(3)
    model = detection.DenseDetector(width=2)
    quality = detection.location_quality(model, data, batch_size=2)
    positives = (detection.assign_targets(data.boxes, data.labels, 16, 16)[0] >= 0).sum()
    assert len(quality["score"]) == len(quality["iou"]) == len(quality["object"]) == positives
    assert set(quality["object"].tolist()) == set(range(6))  # 3 canvases x 2 objects, numbered in order
    assert ((quality["iou"] >= 0) & (quality["iou"] <= 1)).all() and ((quality["score"] > 0)).all()


def test_rank_correlation_by_hand():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert detection.rank_correlation(a, a * 10) == pytest.approx(1.0)
    assert detection.rank_correlation(a, -a) == pytest.approx(-1.0)
    # ranks (0,1,2,3) vs (1,0,3,2): 1 - 6*sum(d^2)/(n(n^2-1)) = 1 - 6*4/60 = 0.6
    assert detection.rank_correlation(a, torch.tensor([2.0, 1.0, 4.0, 3.0])) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="a and b must be 1-D of the same length"):
        detection.rank_correlation(a, a[:3])


def test_choose_on_validation_takes_the_best_last_epoch():
    runs = [{"arm": a, "history": {"valid_mAP": v}} for a, v in (("a", [50, 61]), ("b", [70, 60]), ("c", [40, 61]))]
    assert detection.choose_on_validation(runs)["arm"] == "a"  # last epoch counts; ties: the first
    with pytest.raises(ValueError, match="at least one run"):
        detection.choose_on_validation([])


def test_run_student_jobs_checks_arm_names():
    with pytest.raises(ValueError, match="arms must be keys of ARMS"):
        detection.run_student_jobs(["KD"], [0], 8, 4, 4, 1)


def test_the_candidates_include_the_authors_settings():
    assert detection.AUTHORS_LD in detection.LD_CANDIDATES.values()
    assert detection.AUTHORS_FEATURES in detection.FEATURE_CANDIDATES.values()
    assert detection.ARMS["LD + feature imitation"] == {**detection.AUTHORS_LD, **detection.AUTHORS_FEATURES}


def test_student_jobs_end_to_end(mnist):
    runs = detection.run_student_jobs({"scratch": {}, "LD": {"ld_weight": 0.25}}, [0], 8, 4, 4, 1, workers=1)
    assert [r["arm"] for r in runs] == ["scratch", "LD"]
    assert set(runs[0]["last"]) == {"mAP", "mAP50"} and set(runs[1]["best"]) == {"mAP", "mAP50"}
    assert "best_state" not in runs[0]["history"] and len(runs[0]["history"]["valid_mAP"]) == 1
    sweep = detection.run_student_jobs({"scratch": {}}, [0], 8, 4, 0, 1, workers=1)
    assert "last" not in sweep[0] and len(sweep[0]["history"]["valid_mAP"]) == 1


def test_the_shipped_study_loads_with_its_students():
    info, students = detection.load_study()
    assert set(students) == set(info["arms"]) == {"scratch", "LD", "feature imitation", "LD + feature imitation"}
    assert len(info["runs"]) == len(info["arms"]) * len(info["seeds"]) and len(info["seeds"]) >= 3
    assert info["chosen"]["LD"] in detection.LD_CANDIDATES
    assert info["chosen"]["feature imitation"] in detection.FEATURE_CANDIDATES
    for run in info["runs"]:
        assert len(run["history"]["valid_mAP"]) == info["epochs"] and 0 <= run["last"]["mAP"] <= 100
    cls, edges = students["LD"](torch.zeros(1, 1, 64, 64))
    assert cls.shape == (1, 10, 16, 16) and edges.shape == (1, 4, 8, 16, 16)
