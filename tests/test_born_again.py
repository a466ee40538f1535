"""kdtools.paradigms.born_again: generation 0 is plain training, each generation learns from the frozen previous
one, BANE averages probabilities, bad input is named."""
import pytest
import torch

from kdtools.data import TensorData, TensorLoader
from kdtools.models import build_model
from kdtools.paradigms import born_again
from kdtools.runtime import seed_everything
from kdtools.train import fit


def _data():
    gen = torch.Generator().manual_seed(0)
    train = TensorData(torch.randn(48, 1, 28, 28, generator=gen), torch.randint(0, 10, (48,), generator=gen))
    test = TensorData(torch.randn(20, 1, 28, 28, generator=gen), torch.randint(0, 10, (20,), generator=gen))
    return TensorLoader(train, 16, shuffle=True, seed=5), TensorLoader(test, 20)


def test_the_ensemble_averages_probabilities_not_logits():
    a, b = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    x = torch.randn(5, 3)
    ensemble = born_again.ProbabilityEnsemble([a, b])
    expected = (a(x).softmax(1) + b(x).softmax(1)) / 2
    assert torch.allclose(ensemble(x).softmax(1), expected, atol=1e-6)
    assert not torch.allclose(expected, ((a(x) + b(x)) / 2).softmax(1), atol=1e-3)
    with pytest.raises(ValueError, match="members must hold at least one network"):
        born_again.ProbabilityEnsemble([])


def test_generation_zero_is_plain_training_and_later_ones_learn_from_the_frozen_previous_one(monkeypatch):
    train_loader, test_loader = _data()
    seen = []
    real_fit = born_again.fit

    def spying_fit(model, *args, teacher=None, **kwargs):
        seen.append(teacher)
        return real_fit(model, *args, teacher=teacher, **kwargs)

    monkeypatch.setattr(born_again, "fit", spying_fit)
    run, models = born_again.train_generations("cnn-4x1", 2, train_loader, test_loader, epochs=1, seed=1)
    assert seen[0] is None and seen[1] is models[0] and seen[2] is models[1]
    assert isinstance(seen[3], born_again.ProbabilityEnsemble) and list(seen[3].members) == models[1:3]
    assert all(not p.requires_grad for m in models for p in m.parameters())
    assert len(run.histories) == 3 and run.ensemble_acc[0] is None and run.bane_student.epochs == 1
    # generation 0 equals a plain run from the same seed
    seed_everything(100)
    plain = fit(build_model("cnn-4x1"), train_loader, test_loader, epochs=1, seed=100, progress=False)
    assert plain.test_acc == run.histories[0].test_acc


def test_bad_number_of_generations_is_named():
    train_loader, test_loader = _data()
    with pytest.raises(ValueError, match="n_generations must be an int >= 1.*got 0"):
        born_again.train_generations("cnn-4x1", 0, train_loader, test_loader, epochs=1, seed=0)
