"""kdtools.paradigms.assistants: a chain of two is plain KD, each link learns from the frozen previous one, TAs
are trained once per study, bad chains are named."""
import pytest
import torch

from kdtools.data import TensorData, TensorLoader
from kdtools.models import build_model
from kdtools.paradigms import assistants
from kdtools.runtime import seed_everything
from kdtools.train import cross_entropy_term, fit, kd_term


def _data():
    gen = torch.Generator().manual_seed(0)
    train = TensorData(torch.randn(48, 1, 28, 28, generator=gen), torch.randint(0, 10, (48,), generator=gen))
    test = TensorData(torch.randn(20, 1, 28, 28, generator=gen), torch.randint(0, 10, (20,), generator=gen))
    return TensorLoader(train, 16, shuffle=True, seed=5), TensorLoader(test, 20)


def _teacher():
    seed_everything(9)
    return build_model("cnn-4x1").eval()


def test_a_chain_of_two_is_plain_kd():
    train_loader, test_loader = _data()
    teacher = _teacher()
    histories, models = assistants.distill_chain([teacher, "cnn-2x1"], train_loader, test_loader, epochs=1, seed=3)
    seed_everything(3)
    plain = fit(build_model("cnn-2x1"), train_loader, test_loader, epochs=1, seed=3, teacher=teacher,
                terms={"ce": (1.0, cross_entropy_term), "kd": (1.0, kd_term(4.0))}, cache_teacher_logits=True,
                progress=False)
    assert len(histories) == 1 and histories[0].test_acc == plain.test_acc


def test_each_link_learns_from_the_frozen_previous_one(monkeypatch):
    train_loader, test_loader = _data()
    seen = []
    real_fit = assistants.fit

    def spying_fit(model, *args, teacher=None, **kwargs):
        seen.append(teacher)
        return real_fit(model, *args, teacher=teacher, **kwargs)

    monkeypatch.setattr(assistants, "fit", spying_fit)
    teacher = _teacher()
    _, models = assistants.distill_chain([teacher, "cnn-4x1", "cnn-2x1"], train_loader, test_loader, epochs=1, seed=0)
    assert seen == [teacher, models[0]]
    assert all(not p.requires_grad for m in models for p in m.parameters())


def test_a_study_trains_each_assistant_once(monkeypatch):
    train_loader, test_loader = _data()
    monkeypatch.setattr(assistants.zoo, "load", lambda name: _teacher())
    run = assistants.assistant_study("any", "cnn-2x1", ["cnn-4x1"], [("cnn-4x1", "cnn-2x1")], train_loader,
                                     test_loader, epochs=1, seed=0)
    assert sorted(run.assistants) == ["cnn-4x1", "cnn-4x1 → cnn-2x1"]
    assert sorted(run.students) == ["CE", "T → S", "T → cnn-4x1 → S", "T → cnn-4x1 → cnn-2x1 → S"]


@pytest.mark.parametrize("chain, match", [
    (["cnn-4x1"], "chain must list a teacher and at least one network"),
    ([3, "cnn-2x1"], "chain\\[0\\] must be the teacher: a zoo name or an nn.Module, got int"),
    (["mnist-cnn-teacher", "cnn-3x1"], "chain\\[1\\] must be an architecture .*got 'cnn-3x1'"),
])
def test_bad_chains_are_named(chain, match):
    train_loader, test_loader = _data()
    with pytest.raises(ValueError, match=match):
        assistants.distill_chain(chain, train_loader, test_loader, epochs=1, seed=0)
