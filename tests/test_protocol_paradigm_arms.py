"""Module 5's arms of the shared protocol: deep mutual learning, born-again networks, teacher assistants."""
import math
import random

import numpy as np
import pytest
import torch

from kdtools import protocol
from kdtools.models import build_model
from kdtools.paradigms import assistants, born_again
from kdtools.paradigms.mutual import cohort_losses
from kdtools.protocol import (METHODS, BANArm, DMLArm, PeerLogits, Protocol, Step, TAArm, ban_generation0,
                              train_assistant)
from kdtools.runtime import seed_everything

TINY = Protocol(train_per_class=10, epochs=1, test_per_class=10)
ARMS = {"DML (2 peers)": {"ce", "dml", "peer"}, "BAN (generation 1)": {"ce", "kd"}, "TA (via cnn-8x1)": {"ce", "kd"}}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_state():
    return random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()


def _same_state(a, b) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_arms_are_registered_with_their_baselines_and_stages():
    assert (METHODS["DML (2 peers)"].baseline, METHODS["DML (2 peers)"].controlled) == ("student (CE)", False)
    assert (METHODS["BAN (generation 1)"].baseline, METHODS["BAN (generation 1)"].controlled) == ("student (CE)", False)
    assert (METHODS["TA (via cnn-8x1)"].baseline, METHODS["TA (via cnn-8x1)"].controlled) == ("CE + KD", True)
    assert "T = 1" in METHODS["DML (2 peers)"].change and "T = 1" in METHODS["BAN (generation 1)"].change
    dml, ban, ta = (METHODS[name](TINY) for name in ARMS)
    assert not dml.uses_teacher and dml.teacher_stage is None and len(dml.extra_modules) == 1
    assert not ban.uses_teacher and ban.teacher_stage is ban_generation0
    assert ta.uses_teacher and ta.teacher_stage.func is train_assistant
    assert ta.teacher_stage.keywords == {"assistant": "cnn-8x1"}


def test_student_stages_use_ce_plus_kd_for_ta_and_the_born_again_objective_for_ban():
    assert assistants.KD_TEMPERATURE == protocol.TEMPERATURE
    g = torch.Generator().manual_seed(0)
    step = Step(torch.zeros(6, 1, 28, 28), torch.randint(0, 10, (6,), generator=g), torch.arange(6),
                3 * torch.randn(6, 10, generator=g), 3 * torch.randn(6, 10, generator=g))
    ta, kd = METHODS["TA (via cnn-8x1)"](TINY).terms, METHODS["CE + KD"](TINY).terms
    assert ta.keys() == kd.keys()
    for name in kd:
        assert ta[name][0] == kd[name][0]
        torch.testing.assert_close(ta[name][1](step), kd[name][1](step))
    ban = METHODS["BAN (generation 1)"](TINY).terms
    torch.testing.assert_close(ban["kd"][1](step), born_again.objective()["kd"][1](step))
    assert {name: weight for name, (weight, _) in ban.items()} == {"ce": 1.0, "kd": 1.0}


def test_dml_terms_are_the_cohort_losses_of_student_and_peer():
    seed_everything(0)
    student = build_model("cnn-4x1")
    method = DMLArm()(TINY)
    (peer,) = method.extra_modules
    assert type(peer) is type(student) and not all(
        torch.equal(a, b) for a, b in zip(peer.state_dict().values(), student.state_dict().values()))
    peer.eval()  # BatchNorm in eval mode: the reference forward pass below gives the same logits
    calls = []
    peer.register_forward_hook(lambda *_: calls.append(1))
    images, labels = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    logits = student(images)
    step = Step(images, labels, torch.arange(8), logits)
    values = {name: fn(step) for name, (_, fn) in method.terms.items()}
    assert len(calls) == 1  # one forward pass of the peer per step, shared by the terms
    expected = cohort_losses(torch.stack([logits, peer(images)]), labels)
    torch.testing.assert_close(values["ce"] + values["dml"], expected[0])
    torch.testing.assert_close(values["peer"], expected[1])
    assert all(weight == 1.0 for weight, _ in method.terms.values())
    # each loss trains its own network: the student's KL reaches no peer weight, the peer's loss no student weight
    peer_weights = list(peer.parameters())
    assert all(g is None for g in torch.autograd.grad(values["dml"], peer_weights, allow_unused=True))
    # (zeros rather than None: the peer's row is taken from logits stacked with the student's)
    assert all(g is None or not g.any() for g in torch.autograd.grad(
        values["peer"], list(student.parameters()), allow_unused=True, retain_graph=True))
    assert any(g.abs().sum() > 0 for g in torch.autograd.grad(values["peer"], peer_weights))


def test_peer_logits_recompute_on_a_new_step():
    peer = torch.nn.Linear(3, 2)
    shared = PeerLogits(peer)
    a = Step(torch.ones(1, 3), torch.zeros(1, dtype=torch.long), torch.arange(1), torch.zeros(1, 2))
    b = Step(2 * torch.ones(1, 3), torch.zeros(1, dtype=torch.long), torch.arange(1), torch.zeros(1, 2))
    assert shared(a) is shared(a)
    torch.testing.assert_close(shared(b), peer(b.images))


def test_dml_run_trains_the_peer_and_reports_the_student():
    seed_everything(0)
    build_model(TINY.student)
    initial_peer = {k: v.clone() for k, v in build_model(TINY.student).state_dict().items()}
    history, student, method = protocol.run_keeping_method("DML (2 peers)", 0, TINY)
    (peer,) = method.extra_modules
    assert set(history.term_loss) == ARMS["DML (2 peers)"]
    assert any(not torch.equal(initial_peer[k], v) for k, v in peer.state_dict().items())  # the peer trained
    test_loader = protocol.loaders(TINY, 0)[1]
    from kdtools.train import evaluate
    assert history.last_acc == evaluate(student, test_loader)


@pytest.mark.parametrize("name", list(ARMS))
def test_each_arm_runs_and_is_reproducible(name):
    a = protocol.run(name, 0, TINY)
    b = protocol.run(name, 0, TINY)
    assert set(a.term_loss) == ARMS[name] and a.epochs == TINY.epochs
    assert all(math.isfinite(v) for v in a.train_loss + a.test_acc + sum(a.term_loss.values(), []))
    assert (a.train_loss, a.term_loss, a.test_acc) == (b.train_loss, b.term_loss, b.test_acc)


def _stage_leaves_state_alone(stage, teacher):
    train_loader, _ = protocol.loaders(TINY, 3)
    seed_everything(3)
    before = _random_state()
    trained = stage(teacher, train_loader, TINY, 3)
    assert _same_state(before, _random_state()) and train_loader.epoch == 0
    assert not trained.training and not any(p.requires_grad for p in trained.parameters())
    return trained, train_loader


def test_ban_generation0_is_trained_by_ce_alone_without_moving_the_state():
    generation0, train_loader = _stage_leaves_state_alone(ban_generation0, None)
    reference, student = protocol._train("student (CE)", 3 + protocol.BAN_GENERATION0_SEED_OFFSET, TINY,
                                         (train_loader, None))
    assert all(torch.equal(a, b) for a, b in zip(generation0.state_dict().values(), student.state_dict().values()))
    # the main stage is CE + KD (T = 1) from generation 0, exactly as if that teacher had been handed in
    ban = protocol.run("BAN (generation 1)", 3, TINY)
    plain = protocol.run(lambda p: protocol.Method(born_again.objective()), 3, TINY, teacher=generation0)
    assert (ban.train_loss, ban.test_acc) == (plain.train_loss, plain.test_acc)


def test_ta_is_distilled_from_the_teacher_without_moving_the_state(monkeypatch):
    calls = []
    real_fit = assistants.fit

    def spy(model, *args, **kwargs):
        calls.append(kwargs)
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(assistants, "fit", spy)
    teacher = protocol._zoo_teacher(TINY.teacher)
    assistant, _ = _stage_leaves_state_alone(train_assistant, teacher)
    (kwargs,) = calls
    assert kwargs["teacher"] is teacher and set(kwargs["terms"]) == {"ce", "kd"}
    assert (kwargs["optimizer"], kwargs["schedule"], kwargs["epochs"]) == ("sgd", "cosine", TINY.epochs)
    assert sum(p.numel() for p in assistant.parameters()) == sum(
        p.numel() for p in build_model("cnn-8x1").parameters())


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="temperature"):
        DMLArm(temperature=0)
    with pytest.raises(ValueError, match="peer"):
        DMLArm(peer="cnn-99")
    with pytest.raises(ValueError, match="temperature"):
        BANArm(temperature=-1.0)
    with pytest.raises(ValueError, match="assistant"):
        TAArm(assistant="resnet-1")
    with pytest.raises(ValueError, match="teacher must be"):
        train_assistant(None, None, TINY, 0)
    with pytest.raises(ValueError, match="assistant"):
        train_assistant(torch.nn.Linear(2, 2), None, TINY, 0, assistant="nope")
    with pytest.raises(ValueError, match="seed"):
        ban_generation0(None, None, TINY, -1)
