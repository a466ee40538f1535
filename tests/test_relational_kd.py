"""The relational-KD lesson's protocol arms and its embedding teacher in the zoo."""
import pytest
import torch

from kdtools import protocol, zoo
from kdtools.losses import RKD_WEIGHTS, rkd_loss
from kdtools.models import build_model
from kdtools.retrieval import UNSEEN_CLASSES, EmbeddingNet, class_subset, embed, recall_at_k
from kdtools.train import Step, cross_entropy_term


def _step(batch=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    student, teacher = torch.randn(batch, 16, generator=gen), torch.randn(batch, 128, generator=gen)
    logits = torch.randn(batch, 10, generator=gen)
    labels = torch.randint(0, 10, (batch,), generator=gen)
    return Step(torch.zeros(batch, 1, 28, 28), labels, torch.arange(batch), logits, logits.clone(),
                {"embedding": student}, {"embedding": teacher})


def test_rkd_arms_are_registered_with_their_baselines():
    assert protocol.RKD_AUTHORS_WEIGHTS == (25.0, 50.0) == tuple(RKD_WEIGHTS["classification"].values())
    assert protocol.METHODS["CE + RKD"].baseline == "student (CE)"
    assert protocol.METHODS["CE + KD + RKD"].baseline == "CE + KD"
    assert ("CE + RKD", "student (CE)", protocol.METHODS["CE + RKD"].change) in protocol.controlled_pairs()


def test_rkd_arm_adds_exactly_the_weighted_rkd_terms_on_the_embedding():
    method = protocol.RKDArm()(protocol.SHARED_PROTOCOL)
    assert method.student_layers == method.teacher_layers == (protocol.EMBEDDING_LAYER,)
    assert set(method.terms) == {"ce", "rkd-d", "rkd-a"}
    step = _step()
    total = sum(w * term(step) for w, term in method.terms.values())
    expected = cross_entropy_term(step) + rkd_loss(step.student_features["embedding"],
                                                   step.teacher_features["embedding"], 25.0, 50.0)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    with_kd = protocol.RKDArm(2.5, 5.0, kd_weight=1.0)(protocol.SHARED_PROTOCOL)
    assert set(with_kd.terms) == {"ce", "rkd-d", "rkd-a", "kd"}
    assert (with_kd.terms["rkd-d"][0], with_kd.terms["rkd-a"][0]) == (2.5, 5.0)
    assert set(protocol.RKDArm(0.0, 50.0)(protocol.SHARED_PROTOCOL).terms) == {"ce", "rkd-a"}


def test_rkd_arm_bad_weights():
    with pytest.raises(ValueError, match="both 0"):
        protocol.RKDArm(0.0, 0.0)(protocol.SHARED_PROTOCOL)
    with pytest.raises(ValueError, match="distance_weight"):
        protocol.RKDArm(-1.0, 1.0)(protocol.SHARED_PROTOCOL)


def test_embedding_layer_sizes_differ_between_student_and_teacher():
    shapes = {name: protocol.layer_shapes(build_model(name), [protocol.EMBEDDING_LAYER])[protocol.EMBEDDING_LAYER]
              for name in ("cnn-4x1", "cnn-32x2")}
    assert shapes == {"cnn-4x1": (16,), "cnn-32x2": (128,)}


def test_embedding_recipe_builds_an_embedding_net():
    recipe = zoo.RECIPES["mnist-embedding-teacher"]
    assert recipe.train_classes == (0, 1, 2, 3, 4) and recipe.embedding_dim == 64
    model = zoo._build({"architecture": recipe.architecture, "embedding_dim": recipe.embedding_dim})
    assert isinstance(model, EmbeddingNet) and model.dim == 64 and model.architecture == "cnn-16x1"


def test_embedding_teacher_reaches_its_recorded_recall(mnist):
    if "mnist-embedding-teacher" not in zoo.available():
        pytest.fail("mnist-embedding-teacher is not shipped: python -m kdtools.zoo train mnist-embedding-teacher")
    teacher = zoo.load("mnist-embedding-teacher")
    test = class_subset(mnist[1], UNSEEN_CLASSES)
    recall = recall_at_k(embed(teacher, test.images), test.labels, ks=(1,))[1]
    entry = zoo.available()["mnist-embedding-teacher"]
    assert recall == pytest.approx(entry["test_accuracy"], abs=1e-9)
    assert entry["test_errors"] == round((100 - recall) * len(test) / 100)
