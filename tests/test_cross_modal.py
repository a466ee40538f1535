"""kdtools.paradigms.cross_modal: the label-free KD loss, the arms' training signals, the reverse direction."""
import pytest
import torch

from kdtools.losses import kd_loss
from kdtools.paradigms import audio
from kdtools.paradigms import cross_modal as xm

needs_fsdd = pytest.mark.skipif(not (audio.recordings_dir() / "0_jackson_0.wav").is_file(),
                                reason="FSDD is not under KDTOOLS_DATA")


def test_label_free_kd_loss_is_kd_on_the_paired_rows_of_the_table():
    gen = torch.Generator().manual_seed(0)
    student, table = torch.randn(5, 10, generator=gen), torch.randn(20, 10, generator=gen)
    index = torch.tensor([7, 0, 19, 7, 3])
    expected = kd_loss(student, table[index], 4.0)
    assert torch.allclose(xm.label_free_kd_loss(student, table, index, 4.0), expected)
    # by hand for one row at T = 1: KL(p^t || p^s) = sum p^t (log p^t - log p^s)
    p_t, log_p_s = table[3].softmax(0), student[:1].log_softmax(1)[0]
    by_hand = (p_t * (p_t.log() - log_p_s)).sum()
    assert torch.allclose(xm.label_free_kd_loss(student[:1], table, torch.tensor([3]), 1.0), by_hand, atol=1e-6)


def test_label_free_kd_loss_gradient_in_float64():
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    table = torch.randn(9, 6, generator=gen, dtype=torch.float64)
    index = torch.tensor([8, 1, 1, 4])
    assert torch.autograd.gradcheck(lambda s: xm.label_free_kd_loss(s, table, index, 2.0), (student,))


@pytest.mark.parametrize("table, index, match", [
    (torch.zeros(10), torch.tensor([0, 1]), "teacher_logits_table must be \\[N, C\\], got shape \\(10,\\)"),
    (torch.zeros(10, 10), torch.tensor([0]), "index must be \\[B\\] integers with B = len\\(student_logits\\) = 2"),
    (torch.zeros(10, 10), torch.tensor([0.0, 1.0]), "dtype torch.float32"),
    (torch.zeros(10, 10), torch.tensor([0, 10]), "index must lie in \\[0, 10\\), got values in \\[0, 10\\]"),
])
def test_label_free_kd_loss_names_bad_arguments(table, index, match):
    with pytest.raises(ValueError, match=match):
        xm.label_free_kd_loss(torch.zeros(2, 10), table, index)


def test_every_label_free_arm_trains_on_the_teachers_labels_and_unknown_names_fail():
    assert [a for a, spec in xm.ARMS.items() if spec.labels == "true"] == ["audio labels (CE)"]
    assert all(spec.ce or spec.kd or spec.probe for spec in xm.ARMS.values())  # every arm trains the head
    with pytest.raises(ValueError, match="arm must be one of"):
        xm.train_audio_student("CRD", 0, 1)
    with pytest.raises(ValueError, match="source must be one of"):
        xm.train_image_student("audio labels", 0, 1)


@needs_fsdd
def test_paired_data_pairs_same_digits_and_the_label_free_student_never_sees_a_label(monkeypatch):
    data = xm.paired_data()
    assert len(data.audio_train) == len(data.image_train) == len(data.teacher_logits) == 2700
    assert torch.equal(data.audio_train.labels, data.image_train.labels)
    assert torch.equal(data.audio_test.labels, data.image_test.labels)
    seen = []
    real_fit = xm.fit

    def spying_fit(model, loader, *args, **kwargs):
        seen.append(loader.data.labels.clone())
        return real_fit(model, loader, *args, **kwargs)

    monkeypatch.setattr(xm, "fit", spying_fit)
    history = xm.train_audio_student("teacher's soft labels (KD)", 0, 1, train_subset=64)
    assert history.epochs == 1 and 0 <= history.last_acc <= 100
    keep = torch.randperm(2700, generator=torch.Generator().manual_seed(1234))[:64]
    assert torch.equal(seen[0], data.teacher_labels[keep])
    with pytest.raises(ValueError, match="audio_logits must be \\[2700, 10\\]"):
        xm.train_image_student("audio teacher (KD)", 0, 1, audio_logits=torch.zeros(3, 10))


def test_probe_term_trains_the_head_only_on_the_detached_embedding():
    torch.manual_seed(0)
    head = torch.nn.Linear(6, 3)
    embedding = torch.randn(4, 6, requires_grad=True)
    labels = torch.tensor([0, 2, 1, 2])
    step = xm.Step(images=torch.zeros(4, 1), labels=labels, index=torch.arange(4),
                   student_logits=torch.zeros(4, 3), student_features={"embedding": embedding})
    loss = xm.probe_term(head)(step)
    # by hand: CE of the head's logits on the embedding with the given labels
    logits = embedding.detach() @ head.weight.detach().T + head.bias.detach()
    expected = -(logits.log_softmax(1)[torch.arange(4), labels]).mean()
    assert torch.allclose(loss, expected)
    loss.backward()
    assert embedding.grad is None and head.weight.grad is not None and head.weight.grad.abs().sum() > 0
