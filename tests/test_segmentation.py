"""kdtools.applications.segmentation: shapes, the mIoU metric against a hand count, training with and without
pixel-wise distillation, argument checks."""
import pytest
import torch

from kdtools.applications import segmentation as seg


@pytest.fixture(scope="module")
def tiny():
    return seg.make_canvases("train", 16), seg.make_canvases("valid", 8)


def test_segmenter_output_is_a_full_resolution_class_map():
    for width in (seg.STUDENT_WIDTH, seg.TEACHER_WIDTH):
        logits = seg.Segmenter(width)(torch.zeros(2, 1, 64, 64))
        assert logits.shape == (2, seg.N_CLASSES, 64, 64)
    assert sum(p.numel() for p in seg.Segmenter(seg.STUDENT_WIDTH).parameters()) < \
        sum(p.numel() for p in seg.Segmenter(seg.TEACHER_WIDTH).parameters()) / 10


def test_mean_iou_matches_a_hand_count_over_all_eleven_classes():
    masks = torch.zeros(1, 2, 2, dtype=torch.long)
    masks[0, 0, 0] = 1  # one pixel of digit 0
    predictions = torch.zeros_like(masks)
    predictions[0, 0, :] = 1  # two pixels predicted digit 0: IoU(class 1) = 1/2, IoU(background) = 2/3
    # torchmetrics' macro average skips classes absent from both predictions and targets: (1/2 + 2/3) / 2
    assert seg.mean_iou(predictions, masks) == pytest.approx(100 * (0.5 + 2 / 3) / 2, rel=1e-5)
    perfect = torch.nn.functional.one_hot(masks, seg.N_CLASSES).permute(0, 3, 1, 2).float()
    assert seg.mean_iou(perfect, masks) == pytest.approx(100.0)
    with pytest.raises(ValueError, match=r"predictions \(1, 2, 3\).*masks \(1, 2, 2\)"):
        seg.mean_iou(torch.zeros(1, 2, 3, dtype=torch.long), masks)


def test_pixel_entropy_is_log_c_for_flat_maps():
    entropy = seg.pixel_entropy(torch.zeros(1, seg.N_CLASSES, 2, 2))
    assert torch.allclose(entropy, torch.full((1, 2, 2), float(torch.log(torch.tensor(11.0)))))


def test_training_reduces_the_loss_and_keeps_the_best_validation_epoch(tiny):
    train, valid = tiny
    torch.manual_seed(0)
    model = seg.Segmenter(seg.STUDENT_WIDTH)
    history = seg.train_segmenter(model, train, epochs=3, batch_size=8, valid=valid)
    assert history["loss"][-1] < history["loss"][0]
    assert len(history["valid_mIoU"]) == 3
    assert history["valid_mIoU"][history["best_epoch"] - 1] == max(history["valid_mIoU"])
    assert set(history["best_state"]) == set(model.state_dict())


def test_distillation_changes_training_and_needs_teacher_maps(tiny):
    train, _ = tiny
    teacher_logits = seg.class_maps(seg.Segmenter(8), train.images)
    runs = [seg.train_segmenter(seg.Segmenter(seg.STUDENT_WIDTH), train, epochs=1, batch_size=8, seed=0,
                                teacher_logits=teacher_logits, kd_weight=w)["loss"][0] for w in (0.0, 1.0)]
    assert runs[0] != runs[1]
    with pytest.raises(ValueError, match="kd_weight=1.0 needs teacher_logits"):
        seg.train_segmenter(seg.Segmenter(4), train, epochs=1, kd_weight=1.0)
    with pytest.raises(ValueError, match=r"one map per training canvas \(16\).*\(3, 11, 64, 64\)"):
        seg.train_segmenter(seg.Segmenter(4), train, epochs=1, kd_weight=1.0, teacher_logits=teacher_logits[:3])
