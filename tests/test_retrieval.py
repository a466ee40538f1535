"""kdtools.retrieval: the embedding network, the semi-hard triplet loss and Recall@K, against hand-computed values."""
import pytest
import torch

from kdtools.retrieval import (EmbeddingNet, MetricArm, class_subset, pairwise_distances, recall_at_k,
                               triplet_semihard_loss)

# 1-D embeddings: two of class 0 at 0 and 1, two of class 1 at 1.5 and 3
LINE = torch.tensor([[0.0], [1.0], [1.5], [3.0]], dtype=torch.float64)
LINE_LABELS = torch.tensor([0, 0, 1, 1])


def test_pairwise_distances_by_hand():
    d = pairwise_distances(LINE)
    expected = torch.tensor([[0, 1, 1.5, 3], [1, 0, 0.5, 2], [1.5, 0.5, 0, 1.5], [3, 2, 1.5, 0]], dtype=torch.float64)
    assert torch.allclose(d, expected, atol=1e-9)


@pytest.mark.parametrize("margin, expected", [
    # (a,p) pairs: (0,1) semi-hard negative 1.5 -> 0; (1,0) -> the negative at 3 (d 2) -> 0;
    # (2,3): no negative farther than 1.5, the farthest is at 1.5 -> margin; (3,2) -> negative at d 2 -> 0
    (0.2, 0.2 / 4),
    # margin 0.6: 0.1 + 0 + 0.6 + 0.1 over 4 pairs
    (0.6, 0.8 / 4),
    (0.0, 0.0),
])
def test_triplet_semihard_loss_by_hand(margin, expected):
    assert triplet_semihard_loss(LINE, LINE_LABELS, margin).item() == pytest.approx(expected, abs=1e-9)


def test_triplet_semihard_loss_is_zero_for_separated_classes_and_gradchecks():
    far = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.0, 0.2]], dtype=torch.float64)
    assert triplet_semihard_loss(far, LINE_LABELS).item() == 0.0
    emb = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0])
    assert triplet_semihard_loss(emb, labels, 1.0).item() > 0
    assert torch.autograd.gradcheck(lambda e: triplet_semihard_loss(e, labels, 1.0), (emb,))


def test_triplet_semihard_loss_bad_input():
    with pytest.raises(ValueError, match="two samples of one label"):
        triplet_semihard_loss(LINE, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="another label"):
        triplet_semihard_loss(LINE, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must have one entry per row"):
        triplet_semihard_loss(LINE, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="labels must have an integer dtype"):
        triplet_semihard_loss(LINE, LINE_LABELS.float())
    with pytest.raises(ValueError, match="margin"):
        triplet_semihard_loss(LINE, LINE_LABELS, -0.1)


def test_recall_at_k_by_hand():
    # query 0 (A): neighbours 1.2 (B), 2 (A); query 1.2 (B): 2 (A), 0 (A), 10 (B); query 2 (A): 1.2 (B), 0 (A);
    # queries 10 and 11 (B): each other
    emb = torch.tensor([[0.0], [1.2], [2.0], [10.0], [11.0]])
    labels = torch.tensor([0, 1, 0, 1, 1])
    assert recall_at_k(emb, labels, ks=(1, 2, 3)) == pytest.approx({1: 40.0, 2: 80.0, 3: 100.0})
    # the chunked computation agrees with one chunk
    assert recall_at_k(emb, labels, ks=(1, 2, 3), chunk=2) == recall_at_k(emb, labels, ks=(1, 2, 3))


def test_recall_at_k_excludes_the_query_and_checks_k():
    emb = torch.tensor([[0.0], [5.0], [10.0]])
    assert recall_at_k(emb, torch.tensor([0, 1, 2]), ks=(1,)) == {1: 0.0}  # itself would always be a hit
    with pytest.raises(ValueError, match="smaller than the number of samples"):
        recall_at_k(emb, torch.tensor([0, 1, 2]), ks=(3,))
    with pytest.raises(ValueError, match="ks entry"):
        recall_at_k(emb, torch.tensor([0, 1, 2]), ks=(0,))


def test_embedding_net_is_normalised_and_hookable():
    net = EmbeddingNet("cnn-4x1", dim=16)
    out = net(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 16) and torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert "backbone.embedding" in dict(net.named_modules()) and "projection" in dict(net.named_modules())
    raw = EmbeddingNet("cnn-4x1", dim=16, normalize=False)
    assert raw(torch.randn(3, 1, 28, 28)).norm(dim=1).std() > 0
    with pytest.raises(ValueError, match="SmallCNN"):
        EmbeddingNet("mlp-30x2")
    with pytest.raises(ValueError, match="dim"):
        EmbeddingNet("cnn-4x1", dim=0)


def test_class_subset_and_metric_arm(mnist):
    train, _ = mnist
    seen = class_subset(train, (0, 1), per_class=5)
    assert sorted(seen.labels.tolist()) == [0] * 5 + [1] * 5
    with pytest.raises(ValueError, match="no image"):
        class_subset(train.subset(torch.nonzero(train.labels == 0).flatten()[:3]), (7,))
    assert set(MetricArm(triplet=1.0, distance=1.0, angle=2.0).terms()) == {"triplet", "rkd-d", "rkd-a"}
    assert not MetricArm(triplet=1.0).uses_teacher and MetricArm(angle=2.0).uses_teacher
    with pytest.raises(ValueError, match="at least one positive weight"):
        MetricArm()
