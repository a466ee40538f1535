"""The CRD lesson's protocol additions: N scaled to the data set, the reusable CRD term, extra zoo teachers
looked up by example index, the picklable arm (memory banks sized to the training set actually used), the
registered arms, and the bound I(T;S) >= log N - L_NCE that the notebook evaluates."""
import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from kdtools import protocol, zoo
from kdtools.features import extract
from kdtools.losses import CRDLoss, crd_nce_loss
from kdtools.protocol import METHODS, Protocol, Step

TINY = Protocol(train_per_class=5, epochs=2, seeds=(0, 1), test_per_class=20)


def _step(index, student_features=None, teacher_features=None, images=None):
    b = len(index)
    return Step(torch.zeros(b, 1, 28, 28) if images is None else images, torch.zeros(b, dtype=torch.long),
                index, torch.zeros(b, 10), None, student_features or {}, teacher_features or {})


def test_negatives_keep_the_papers_fraction_of_the_data_set():
    assert protocol.CRD_PAPER_FRACTION == pytest.approx(16384 / 50000)
    assert protocol.crd_negatives(50000) == 16384
    assert protocol.crd_negatives(1000) == 328  # 327.68 rounded
    assert protocol.crd_negatives(800) == 262
    assert protocol.crd_negatives(1000, 1.0) == 1000
    assert protocol.crd_negatives(10, 1 / 64) == 1  # never 0
    with pytest.raises(ValueError, match="n_data"):
        protocol.crd_negatives(0)
    with pytest.raises(ValueError, match="fraction"):
        protocol.crd_negatives(100, -0.5)


def test_crd_term_is_the_loss_on_the_hooked_layers_and_the_steps_index():
    torch.manual_seed(0)
    loss = CRDLoss(4, 6, n_data=10, feat_dim=3, n_negatives=5)
    twin = CRDLoss(4, 6, n_data=10, feat_dim=3, n_negatives=5)
    twin.load_state_dict(loss.state_dict())
    fs, ft, index = torch.randn(3, 4), torch.randn(3, 6), torch.tensor([7, 0, 3])
    step = _step(index, {"embedding": fs}, {"pooled": ft})
    torch.manual_seed(1)
    value = protocol.crd_term(loss, "embedding", "pooled")(step)
    torch.manual_seed(1)  # the same negatives
    assert torch.equal(value, twin(fs, ft, index))
    # a teacher given as a function of the step instead of a hooked layer
    torch.manual_seed(1)
    again = CRDLoss(4, 6, n_data=10, feat_dim=3, n_negatives=5)
    again.load_state_dict(twin.state_dict())
    loss.load_state_dict(twin.state_dict())
    torch.manual_seed(2)
    by_function = protocol.crd_term(loss, "embedding", teacher_features=lambda s: ft)(step)
    torch.manual_seed(2)
    assert torch.equal(by_function, again(fs, ft, index))
    with pytest.raises(ValueError, match="exactly one of teacher_layer"):
        protocol.crd_term(loss, "embedding")
    with pytest.raises(ValueError, match="exactly one of teacher_layer"):
        protocol.crd_term(loss, "embedding", "pooled", teacher_features=lambda s: ft)


def test_zoo_teacher_features_are_computed_once_per_example_and_looked_up_by_index():
    images = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    source = protocol.ZooTeacherFeatures("mnist-mlp-teacher", "net.act2")
    expected = extract(zoo.load("mnist-mlp-teacher").eval(), ["net.act2"], images)["net.act2"]
    first = source(_step(torch.tensor([4, 1]), images=images[[4, 1]]))
    torch.testing.assert_close(first, expected[[4, 1]])
    # an example seen before is looked up, not recomputed: different pixels under a known index change nothing
    again = source(_step(torch.tensor([1, 5]), images=torch.stack([torch.zeros(1, 28, 28), images[5]])))
    torch.testing.assert_close(again, expected[[1, 5]])


def test_crd_arm_is_picklable_and_builds_one_loss_per_teacher():
    arm = protocol.CRDArm(kd_weight=1.0, teachers=protocol.CRD_ENSEMBLE)
    assert pickle.loads(pickle.dumps(arm)) == arm
    method = arm(TINY)
    assert set(method.terms) == {"ce", "kd"} | {f"crd {name}" for name, _ in protocol.CRD_ENSEMBLE}
    assert all(method.terms[f"crd {name}"][0] == 0.8 for name, _ in protocol.CRD_ENSEMBLE)
    assert method.student_layers == ("embedding",) and method.teacher_layers == ("embedding",)
    dims = [(loss.student_dim, loss.teacher_dim, loss.n_data, loss.n_negatives) for loss in method.extra_modules]
    assert dims == [(16, 128, 50, 16), (16, 1200, 50, 16), (16, 800, 50, 16)]  # N = round(50 · 0.328)
    single = METHODS["CE + CRD"](TINY)
    assert set(single.terms) == {"ce", "crd"} and single.extra_modules[0].temperature == 0.07
    with pytest.raises(ValueError, match="first of teachers must be the protocol's teacher"):
        protocol.CRDArm(teachers=(("mnist-mlp-teacher", "net.act2"),))(TINY)
    with pytest.raises(ValueError, match="teachers"):
        protocol.CRDArm(teachers=())


def test_memory_banks_are_sized_to_the_training_set_the_run_uses():
    method = protocol.CRDArm(negative_fraction=1.0)(TINY)
    loss = method.extra_modules[0]
    assert loss.memory_student.shape == (50, 128) and loss.n_negatives == 50
    fit_part, _ = protocol.validation_split(TINY, val_per_class=2)
    loader = protocol.TensorLoader(fit_part, 8)
    method.pretrain(None, None, loader, TINY, 0)
    assert loss.n_data == 30 and loss.n_negatives == 30
    assert loss.memory_student.shape == loss.memory_teacher.shape == (30, 128)
    assert loss.z_student.item() == -1.0
    state = torch.random.get_rng_state()
    protocol.fit_memory(loss, 30, 1.0)  # already right: nothing changes, no random numbers drawn
    assert torch.equal(torch.random.get_rng_state(), state) and loss.memory_student.shape[0] == 30


def test_crd_arms_train_reproducibly_and_run_keeping_method_matches_run():
    threads = torch.get_num_threads()
    history, _, method = protocol.run_keeping_method("CE + KD + CRD", 0, TINY)
    assert torch.get_num_threads() == threads  # pinned to one thread for the run only
    (jobs_history, _), = protocol.run_jobs([("CE + KD + CRD", 0, TINY)], workers=1)
    assert history.test_acc == jobs_history.test_acc
    assert set(history.term_loss) == {"ce", "crd", "kd"} and all(math.isfinite(v) for v in history.train_loss)
    loss = method.extra_modules[0]
    assert loss.z_student.item() > 0  # the trained loss comes back with its fixed normalisation constant


def test_registered_crd_arms_name_their_baselines():
    pairs = {arm: baseline for arm, baseline, _ in protocol.controlled_pairs()}
    assert pairs["CE + CRD"] == "student (CE)" and pairs["CE + KD + CRD"] == "CE + KD"
    assert pairs["CE + CRD, 2 teachers"] == "CE + CRD" and pairs["CE + CRD, N = M"] == "CE + CRD"
    assert METHODS["CE + CRD, N = M"](TINY).extra_modules[0].n_negatives == 50
    assert protocol.CRD_VALIDATED_FRACTION in protocol.CRD_FRACTION_GRID
    assert pairs["CE + CRD, 3 teachers"] == "CE + CRD, 2 teachers"


def test_the_nce_loss_is_log_n_minus_the_critics_bound():
    # L_NCE = -(log h(pos) + sum_k log(1 - h(neg_k))): so log N - L_NCE is the paper's estimate of the bound
    torch.manual_seed(0)
    n, m = 6, 40
    logits = torch.randn(5, n + 1, dtype=torch.float64) * 3
    h = logits.exp() / (logits.exp() + n / m)
    critic_objective = (h[:, 0].log() + (1 - h[:, 1:]).log().sum(1)).mean()
    nce = crd_nce_loss(logits.exp(), m)
    assert math.log(n) - nce.item() == pytest.approx(math.log(n) + critic_objective.item(), rel=1e-6)
