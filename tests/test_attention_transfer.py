"""The attention-transfer additions to kdtools.protocol: the paper-form arm and its per-pair weights, the
validated-weight arms, term_gradient_norms, and the validation split they choose the weight on."""
import math

import pytest
import torch
import torch.nn.functional as F

from kdtools import protocol
from kdtools.losses import at_loss, kd_loss
from kdtools.models import build_model
from kdtools.protocol import METHODS, SHARED_PROTOCOL, Protocol

TINY = Protocol(train_per_class=5, epochs=2, seeds=(0, 1), test_per_class=20)
SHAPES = {"stage1": (14, 14), "stage2": (7, 7), "stage3": (7, 7)}


def _feature_step(seed=0, batch=3):
    g = torch.Generator().manual_seed(seed)
    student = {name: torch.randn(batch, 4 * 2 ** i, *SHAPES[name], generator=g) for i, name in enumerate(SHAPES)}
    teacher = {name: torch.randn(batch, 32 * 2 ** i, *SHAPES[name], generator=g) for i, name in enumerate(SHAPES)}
    return protocol.Step(torch.zeros(batch, 1, 28, 28), torch.randint(0, 10, (batch,), generator=g),
                         torch.arange(batch), 3 * torch.randn(batch, 10, generator=g),
                         5 * torch.randn(batch, 10, generator=g), student, teacher)


def _objective(method, step):
    return sum(weight * term(step) for weight, term in method.terms.values())


def test_paper_weights_are_beta_over_twice_the_map_size():
    weights = protocol.at_paper_weights(SHARED_PROTOCOL)
    assert weights == pytest.approx({"stage1": 1000 / (2 * 196), "stage2": 1000 / 98, "stage3": 1000 / 98})
    assert protocol.at_paper_weights(SHARED_PROTOCOL, [("stage1", "stage2")], beta=10.0) == \
        pytest.approx({"stage1→stage2": 10 / 98})  # compared at the smaller map's size
    with pytest.raises(ValueError, match="beta"):
        protocol.at_paper_weights(SHARED_PROTOCOL, beta=0.0)


def test_paper_form_arm_is_the_papers_equation_per_stage():
    method = METHODS["CE + AT (paper form)"](SHARED_PROTOCOL)
    assert set(method.terms) == {"ce", "at stage1", "at stage2", "at stage3"}
    assert method.student_layers == method.teacher_layers == ("stage1", "stage2", "stage3")
    step = _feature_step()
    expected = F.cross_entropy(step.student_logits, step.labels)
    for name, (h, w) in SHAPES.items():
        q_s = F.normalize(step.student_features[name].pow(2).sum(1).flatten(1), dim=1)
        q_t = F.normalize(step.teacher_features[name].pow(2).sum(1).flatten(1), dim=1)
        expected = expected + 1000 / (2 * h * w) * (q_s - q_t).norm(dim=1).mean()  # β/2 · ‖·‖₂, β = 10³/(HW·B)
    torch.testing.assert_close(_objective(method, step), expected)
    arm = METHODS["CE + AT (paper form)"]
    assert arm.baseline == "CE + AT" and arm.controlled


def test_validated_weight_arms_and_the_authors_arms():
    weight = protocol.AT_VALIDATED_WEIGHT
    assert weight in protocol.AT_WEIGHT_GRID and protocol.AT_AUTHORS_WEIGHT in protocol.AT_WEIGHT_GRID
    step = _feature_step(1)
    ce = F.cross_entropy(step.student_logits, step.labels)
    at_sum = sum(at_loss(step.student_features[n], step.teacher_features[n]) for n in SHAPES)
    kd = kd_loss(step.student_logits, step.teacher_logits, temperature=4.0)
    cases = {f"CE + AT, λ_AT = {weight:g}": (ce + weight * at_sum, "student (CE)"),
             f"CE + KD + AT, λ_AT = {weight:g}": (ce + weight * at_sum + kd, "CE + KD"),
             "CE + AT": (ce + 1000 * at_sum, "student (CE)"), "CE + KD + AT": (ce + 1000 * at_sum + kd, "CE + KD")}
    for name, (expected, baseline) in cases.items():
        torch.testing.assert_close(_objective(METHODS[name](SHARED_PROTOCOL), step), expected, msg=name)
        assert METHODS[name].baseline == baseline and METHODS[name].controlled, name
        assert (name, baseline, METHODS[name].change) in protocol.controlled_pairs([name]), name


def test_term_gradient_norms_match_autograd_scale_linearly_and_leave_the_student_alone():
    torch.manual_seed(0)
    student, teacher = build_model("cnn-4x1"), build_model("cnn-8x1").eval()
    images, labels = torch.randn(6, 1, 28, 28), torch.arange(6)
    layers = ["stage2"]
    at_term = protocol.feature_term("at", [("stage2", "stage2")])
    before = {k: v.clone() for k, v in student.state_dict().items()}
    norms = protocol.term_gradient_norms(student, teacher, images, labels,
                                         {"ce": (1.0, protocol.cross_entropy_term), "at": (1.0, at_term),
                                          "3·at": (3.0, at_term)}, layers, layers)
    for key, value in student.state_dict().items():  # weights and BatchNorm running statistics unchanged
        assert torch.equal(value, before[key]), key
    student.train()
    grads = torch.autograd.grad(F.cross_entropy(student(images), labels), list(student.parameters()))
    assert norms["ce"] == pytest.approx(math.sqrt(sum(float(g.pow(2).sum()) for g in grads)), rel=1e-5)
    assert norms["3·at"] == pytest.approx(3 * norms["at"], rel=1e-5) and norms["at"] > 0
    with pytest.raises(ValueError, match="labels must have shape"):
        protocol.term_gradient_norms(student, teacher, images, labels[:3], {"ce": (1.0, protocol.cross_entropy_term)})
    with pytest.raises(ValueError, match="terms is empty"):
        protocol.term_gradient_norms(student, teacher, images, labels, {})


def test_validation_split_is_stratified_disjoint_and_fixed():
    fit_part, validation = protocol.validation_split(TINY)
    assert (len(fit_part), len(validation)) == (40, 10)
    assert torch.equal(torch.bincount(validation.labels, minlength=10), torch.ones(10, dtype=torch.long))
    train, _ = protocol._protocol_data(TINY.train_per_class, TINY.data_seed, TINY.test_per_class)
    pixels = {tuple(x.flatten()[::7].tolist()) for x in fit_part.images}
    assert not pixels & {tuple(x.flatten()[::7].tolist()) for x in validation.images}
    assert len(fit_part) + len(validation) == len(train)
    again = protocol.validation_split(TINY)[1]
    assert torch.equal(again.images, validation.images)
    assert len(protocol.validation_split(TINY, val_per_class=2)[1]) == 20
    for bad in (5, 0):
        with pytest.raises(ValueError, match="val_per_class"):
            protocol.validation_split(TINY, val_per_class=bad)


def test_run_validation_trains_on_the_fit_part_and_validates(monkeypatch):
    history = protocol.run_validation("CE + AT", 0, TINY)
    assert history.epochs == 2 and len(history.test_acc) == 2
    assert all(acc * 10 / 100 == round(acc * 10 / 100) for acc in history.test_acc)  # multiples of 1/10 image
    assert protocol.run_validation("CE + AT", 0, TINY).test_acc == history.test_acc
    stages = []  # a two-stage method runs its first stage on the fit part too
    two_stage = lambda p: protocol.Method({"ce": (1.0, protocol.cross_entropy_term)}, uses_teacher=False,  # noqa
                                          pretrain=lambda student, teacher, loader, *a: stages.append(len(loader.data)))
    protocol.run_validation(two_stage, 0, TINY)
    assert stages == [40]
