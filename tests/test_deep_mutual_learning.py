"""kdtools.paradigms.mutual: the cohort losses by hand, their gradients, the diagnostics, a cohort of one."""
import math

import pytest
import torch
import torch.nn.functional as F

from kdtools.data import TensorData
from kdtools.paradigms import mutual


def _kl(p_from, p_to):
    return sum(a * math.log(a / b) for a, b in zip(p_from, p_to))


def test_two_peer_losses_by_hand():
    logits = torch.tensor([[[2.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]])  # K = 2 peers, one image, 3 classes
    labels = torch.tensor([0])
    p1, p2 = logits[0, 0].softmax(0).tolist(), logits[1, 0].softmax(0).tolist()
    expected = [-math.log(p1[0]) + _kl(p2, p1), -math.log(p2[0]) + _kl(p1, p2)]
    assert mutual.cohort_losses(logits, labels).tolist() == pytest.approx(expected, rel=1e-6)
    assert mutual.cohort_losses(logits, labels, mutual=False).tolist() == pytest.approx(
        [-math.log(p1[0]), -math.log(p2[0])], rel=1e-6)


def test_three_peers_average_the_kl_over_the_other_two():
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(3, 5, 4, generator=gen), torch.tensor([0, 1, 2, 3, 0])
    p = logits.softmax(2)
    kl = lambda a, b: (p[a] * (p[a].log() - p[b].log())).sum(1).mean()  # noqa: E731
    expected = F.cross_entropy(logits[1], labels) + (kl(0, 1) + kl(2, 1)) / 2
    assert torch.allclose(mutual.cohort_losses(logits, labels)[1], expected, atol=1e-6)


def test_each_loss_sends_gradient_to_its_own_peer_only_and_passes_gradcheck():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 4, 2, 1])
    (grad,) = torch.autograd.grad(mutual.cohort_losses(logits, labels)[0], logits)
    assert grad[0].abs().sum() > 0 and grad[1:].abs().sum() == 0
    # the peers are constants in loss 0, so gradcheck perturbs peer 0's logits only (a finite difference in a
    # peer's logits would move loss 0 while its detached analytic gradient is 0 by design)
    others = logits[1:].detach()
    assert torch.autograd.gradcheck(
        lambda z: mutual.cohort_losses(torch.cat([z.unsqueeze(0), others]), labels)[0], (logits[0].detach().requires_grad_(),))


def test_a_cohort_of_one_is_cross_entropy():
    logits, labels = torch.randn(1, 6, 10), torch.randint(0, 10, (6,))
    assert torch.allclose(mutual.cohort_losses(logits, labels)[0], F.cross_entropy(logits[0], labels))


@pytest.mark.parametrize("logits, labels, match", [
    (torch.zeros(4, 10), torch.zeros(4, dtype=torch.long), "logits must be \\[K, B, C\\].*got \\(4, 10\\)"),
    (torch.zeros(2, 4, 10), torch.zeros(3, dtype=torch.long), "labels must be \\[B\\] with B = 4, got shape \\(3,\\)"),
])
def test_bad_input_is_named(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        mutual.cohort_losses(logits, labels)


def test_diagnostics_on_hand_made_probabilities():
    probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8]],
                          [[0.6, 0.4], [0.7, 0.3]]])  # 2 peers, 2 images
    stats = mutual.cohort_diagnostics(probs, torch.tensor([0, 1]))
    assert stats["peer_acc"] == [100.0, 50.0]
    assert stats["ensemble_acc"] == 100.0  # means: [0.75, 0.25] and [0.45, 0.55]
    assert stats["disagreement"] == 50.0
    entropy = lambda q: -sum(x * math.log(x) for x in q)  # noqa: E731
    assert stats["entropy"] == pytest.approx((entropy([.9, .1]) + entropy([.2, .8]) + entropy([.6, .4])
                                              + entropy([.7, .3])) / 4, rel=1e-5)
    kl_ab = (_kl([.9, .1], [.6, .4]) + _kl([.2, .8], [.7, .3])) / 2
    kl_ba = (_kl([.6, .4], [.9, .1]) + _kl([.7, .3], [.2, .8])) / 2
    assert stats["peer_kl"] == pytest.approx((kl_ab + kl_ba) / 2, rel=1e-5)


def test_train_cohort_independent_peers_do_not_depend_on_the_cohort():
    gen = torch.Generator().manual_seed(0)
    train = TensorData(torch.randn(64, 1, 28, 28, generator=gen), torch.randint(0, 10, (64,), generator=gen))
    test = TensorData(torch.randn(20, 1, 28, 28, generator=gen), torch.randint(0, 10, (20,), generator=gen))
    alone, _ = mutual.train_cohort(["cnn-4x1"], train, test, epochs=2, seed=3, mutual=False, batch_size=16)
    pair, _ = mutual.train_cohort(["cnn-4x1", "cnn-4x1"], train, test, epochs=2, seed=3, mutual=False, batch_size=16)
    assert pair.peer_acc[0] == alone.peer_acc[0]  # same init, same batches, no coupling
    mutual_pair, _ = mutual.train_cohort(["cnn-4x1", "cnn-4x1"], train, test, epochs=1, seed=3, batch_size=16)
    assert len(mutual_pair.ensemble_acc) == 1 and mutual_pair.seconds > 0
    with pytest.raises(ValueError, match="architectures must name at least one network"):
        mutual.train_cohort([], train, test, epochs=1, seed=0)
