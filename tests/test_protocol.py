from dataclasses import replace

import pytest
import torch

from kdtools import protocol
from kdtools.losses import dkd_loss, kd_loss
from kdtools.protocol import (METHODS, SHARED_PROTOCOL, Protocol, compare, controlled_pairs, dkd_method,
                              dkd_warmup_epochs, register, summarize)
from kdtools.results import Recorder, load
from kdtools.train import History

TINY = Protocol(train_per_class=5, epochs=2, seeds=(0, 1), test_per_class=20)


def test_shared_protocol_is_the_documented_pair():
    assert (SHARED_PROTOCOL.teacher, SHARED_PROTOCOL.student) == ("mnist-cnn-teacher", "cnn-4x1")
    assert "1000 training images" in SHARED_PROTOCOL.describe()
    smoke = SHARED_PROTOCOL.smoke()
    assert (smoke.epochs, smoke.train_per_class, smoke.seeds) == (1, 10, (0, 1))


def test_active_protocol_follows_smoke_mode(monkeypatch):
    assert protocol.active_protocol() == SHARED_PROTOCOL
    monkeypatch.setenv("KDTOOLS_SMOKE", "1")
    assert protocol.active_protocol().epochs == 1


MODULE_2_CONTROLLED = ["student (CE)", "CE + KD", "CE + TCKD", "CE + TCKD + NCKD", "CE + NCKD",
                       "CE + TCKD + 8·NCKD"]


def test_registered_arms_cover_module_2_and_say_what_they_change():
    assert set(MODULE_2_CONTROLLED) | {"KD (mdistiller config)", "DKD (authors' config)"} <= set(METHODS)
    assert not METHODS["student (CE)"](TINY).uses_teacher
    for name, arm in METHODS.items():
        assert arm.change.strip(), name
        assert (arm.baseline is None) == (name == "student (CE)"), name
        assert arm.baseline is None or arm.baseline in METHODS, name
    assert not METHODS["KD (mdistiller config)"].controlled and not METHODS["DKD (authors' config)"].controlled


def _step(seed=0, batch=8, classes=10):
    g = torch.Generator().manual_seed(seed)
    return protocol.Step(images=torch.zeros(batch, 1, 28, 28), labels=torch.randint(0, classes, (batch,), generator=g),
                         index=torch.arange(batch), student_logits=3 * torch.randn(batch, classes, generator=g),
                         teacher_logits=5 * torch.randn(batch, classes, generator=g))


def _objective(name, epoch=0, step=None):
    step = step or _step()
    terms = METHODS[name](Protocol(epochs=24)).terms
    return sum((w(epoch) if callable(w) else w) * fn(step) for w, fn in terms.values())


def test_controlled_arms_share_ce_weight_temperature_and_constant_weights():
    for name in MODULE_2_CONTROLLED:
        terms = METHODS[name](TINY).terms
        assert terms["ce"][0] == 1.0, name
        assert all(not callable(weight) for weight, _ in terms.values()), f"{name} has a warm-up"
    s = _step()
    ce = torch.nn.functional.cross_entropy(s.student_logits, s.labels)
    kd = kd_loss(s.student_logits, s.teacher_logits, temperature=4.0)
    # the identities the arms are built on: KD = TCKD + (1 - p^t_y) NCKD, DKD(1, 1) = TCKD + NCKD
    tckd, nckd, weight = protocol.dkd_terms(s.student_logits, s.teacher_logits, s.labels, 4.0)
    assert torch.allclose(_objective("CE + KD", step=s), ce + kd, atol=1e-5)
    assert torch.allclose(kd, (tckd + weight * nckd).mean(), atol=1e-5)
    assert torch.allclose(_objective("CE + TCKD + NCKD", step=s), ce + tckd.mean() + nckd.mean(), atol=1e-5)
    assert torch.allclose(_objective("CE + TCKD", step=s), ce + tckd.mean(), atol=1e-5)
    assert torch.allclose(_objective("CE + NCKD", step=s), ce + nckd.mean(), atol=1e-5)
    assert torch.allclose(_objective("CE + TCKD + 8·NCKD", step=s),
                          ce + dkd_loss(s.student_logits, s.teacher_logits, s.labels, 1.0, 8.0, 4.0), atol=1e-5)


def test_named_arms_are_one_change_from_their_controlled_baselines():
    s = _step(1)
    ce = torch.nn.functional.cross_entropy(s.student_logits, s.labels)
    kd = kd_loss(s.student_logits, s.teacher_logits, temperature=4.0)
    assert torch.allclose(_objective("KD (mdistiller config)", step=s), 0.1 * ce + 0.9 * kd, atol=1e-5)
    # DKD (authors' config) = CE + TCKD + 8 NCKD once warmed up (2 of 24 epochs), half of it in epoch 1
    dkd = _objective("CE + TCKD + 8·NCKD", step=s) - ce
    assert torch.allclose(_objective("DKD (authors' config)", epoch=0, step=s), ce + 0.5 * dkd, atol=1e-5)
    assert torch.allclose(_objective("DKD (authors' config)", epoch=5, step=s), ce + dkd, atol=1e-5)


def test_controlled_pairs_exclude_authors_configs():
    pairs = controlled_pairs()
    assert ("CE + TCKD + NCKD", "CE + KD", "removes KD's factor (1 − p^t_y) in front of NCKD") in pairs
    assert all(METHODS[a].controlled and METHODS[b].controlled for a, b, _ in pairs)
    assert set(MODULE_2_CONTROLLED) - {"student (CE)"} <= {a for a, _, _ in pairs}
    assert controlled_pairs(["CE + KD", "KD (mdistiller config)"]) == [
        ("CE + KD", "student (CE)", "adds the KD term T²·KL(p^t‖p^s), weight 1")]
    with pytest.raises(ValueError, match="unknown method 'FitNets'"):
        controlled_pairs(["FitNets"])


def test_register_validates_and_adds_an_arm(monkeypatch):
    monkeypatch.setattr(protocol, "METHODS", dict(METHODS))
    arm = register("CE + KD at T = 2", protocol.with_ce(kd=(1.0, protocol.kd_part(2.0))), baseline="CE + KD",
                   change="T = 2 instead of 4")
    assert protocol.METHODS["CE + KD at T = 2"] is arm and arm.controlled
    with pytest.raises(ValueError, match="already registered"):
        register("CE + KD", protocol.with_ce(), baseline="student (CE)", change="x")
    with pytest.raises(ValueError, match="baseline 'nope' of arm 'x' is not registered"):
        register("x", protocol.with_ce(), baseline="nope", change="y")
    with pytest.raises(ValueError, match="change of arm 'y' is empty"):
        register("y", protocol.with_ce(), baseline="CE + KD", change=" ")
    with pytest.raises(ValueError, match="build must be a callable"):
        register("z", 3, baseline="CE + KD", change="y")
    assert "x" not in METHODS and "CE + KD at T = 2" not in METHODS  # the monkeypatched copy was changed


def test_dkd_warmup_keeps_the_authors_fraction():
    assert dkd_warmup_epochs(Protocol(epochs=240)) == 20
    assert dkd_warmup_epochs(Protocol(epochs=20)) == 2
    assert dkd_warmup_epochs(Protocol(epochs=1)) == 1
    weight = METHODS["DKD (authors' config)"](Protocol(epochs=24)).terms["dkd"][0]
    assert [weight(e) for e in range(3)] == [0.5, 1.0, 1.0]
    assert dkd_method(warmup=False)(Protocol(epochs=24)).terms["dkd"][0] == 1.0


def test_teacher_logits_are_computed_once_per_process():
    calls = []

    class CountingTeacher(torch.nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return x.flatten(1)[:, :10] * 0

    teacher = CountingTeacher()
    protocol.run("CE + KD", 0, TINY, teacher=teacher, device="cpu")
    protocol.run("CE + TCKD", 1, TINY, teacher=teacher, device="cpu")
    assert calls == [50]  # the 50 training images, once
    protocol.run("CE + KD", 0, replace(TINY, data_seed=1), teacher=teacher, device="cpu")
    assert calls == [50, 50]  # other training images: computed again


def test_same_seed_same_result_and_subset_fixed_across_seeds():
    a = protocol.run("KD (mdistiller config)", 0, TINY, device="cpu")
    b, student = protocol.run("KD (mdistiller config)", 0, TINY, device="cpu", return_model=True)
    assert a.test_acc == b.test_acc and a.train_loss == b.train_loss
    assert isinstance(student, torch.nn.Module) and not student.training
    loader_0, _ = protocol.loaders(TINY, seed=0)
    loader_1, _ = protocol.loaders(TINY, seed=1)
    assert torch.equal(loader_0.data.labels, loader_1.data.labels) and len(loader_0.data) == 50
    assert len(protocol.loaders(TINY, seed=0)[1].data) == 200


def test_run_seeds_and_record_rows():
    histories = protocol.run_seeds(dkd_method(beta=2.0), TINY, device="cpu")
    assert len(histories) == 2 and all(h.epochs == 2 for h in histories)
    rec = Recorder("protocol_test", mode="full")
    protocol.record(rec, "DKD beta=2", histories, TINY)
    protocol.record(rec, "student (CE)", histories, TINY, setting="made up")
    rows = load()
    assert len(rows) == 8 and {r["metric"] for r in rows} == {"test accuracy, last epoch (%)",
                                                             "test accuracy, best epoch (%)"}
    assert all(r["student"] == "cnn-4x1" and r["protocol"] == "shared" and r["test_images"] == 200 for r in rows)
    assert {r["teacher"] for r in rows if r["method"] == "student (CE)"} == {"-"}
    assert {r["setting"] for r in rows} == {"shared protocol: 50 training images, 2 epochs", "made up"}
    with pytest.raises(ValueError, match="got 1 histories for the protocol's 2 seeds"):
        protocol.record(rec, "x", histories[:1], TINY)


def test_summary_statistics():
    hs = [History(train_loss=[0, 0], test_acc=[90.0, 92.0]), History(train_loss=[0, 0], test_acc=[95.0, 94.0])]
    s = summarize(hs)
    assert (s.last_mean, s.best_mean, s.n) == (93.0, 93.5, 2)  # best per seed: 92 and 95
    assert s.last_std == pytest.approx(1.4142135, rel=1e-6) and s.best_std == pytest.approx(2.1213203, rel=1e-6)
    assert "last 93.00 ± 1.41" in str(s)
    with pytest.raises(ValueError, match="histories is empty"):
        summarize([])


def test_compare_screens_differences_by_the_seeds_spread():
    def hs(*accs):
        return summarize([History(train_loss=[0], test_acc=[a]) for a in accs])

    summaries = {"a": hs(90.0, 91.0, 92.0), "b": hs(85.0, 86.0, 87.0), "c": hs(89.0, 91.0, 93.0)}
    clear = compare("a", "b", summaries)
    assert clear.last_diff == pytest.approx(5.0) and clear.last_margin == pytest.approx(2 * (2 / 3) ** 0.5)
    assert clear.verdict == "clearly better" and compare("b", "a", summaries).verdict == "clearly worse"
    assert compare("c", "a", summaries).verdict == "inside the seeds' spread"
    assert "+5.00 ± 1.63 last" in str(clear)
    with pytest.raises(ValueError, match="no summary for arm 'd'"):
        compare("a", "d", summaries)
    with pytest.raises(ValueError, match="needs >= 2 seeds"):
        compare("a", "e", {**summaries, "e": hs(80.0)})


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'FitNets'; registered: student"):
        protocol.run("FitNets", 0, TINY)


def test_feature_arms_hook_the_stages_and_bridge_channels_with_regressors():
    proto = protocol.SHARED_PROTOCOL
    hint = METHODS["CE + hint"](proto)
    assert hint.student_layers == ("stage2",) and hint.teacher_layers == ("stage2",)
    (regressors,) = hint.extra_modules
    assert regressors[0].conv.in_channels == 8 and regressors[0].conv.out_channels == 64  # cnn-4x1 -> cnn-32x2
    at = METHODS["CE + KD + AT"](proto)
    assert set(at.terms) == {"ce", "at", "kd"} and at.student_layers == ("stage1", "stage2", "stage3")
    assert not at.extra_modules and at.terms["at"][0] == 1000.0
    for arm in ("CE + hint", "CE + AT", "CE + NST"):
        assert METHODS[arm].controlled and METHODS[arm].baseline == "student (CE)"
    assert protocol.layer_shapes(protocol.build_model("cnn-4x3"), ["stage2"]) == {"stage2": (8, 7, 7)}


def test_feature_term_sums_the_loss_over_pairs_and_validates():
    torch.manual_seed(0)
    s = {"a": torch.randn(2, 4, 6, 6), "b": torch.randn(2, 8, 3, 3)}
    t = {"a": torch.randn(2, 16, 6, 6), "b": torch.randn(2, 32, 3, 3)}
    step = protocol.Step(torch.zeros(2), torch.zeros(2, dtype=torch.long), torch.arange(2), torch.zeros(2, 10),
                         None, s, t)
    term = protocol.feature_term("at", [("a", "a"), ("b", "b")])
    expected = protocol.at_loss(s["a"], t["a"]) + protocol.at_loss(s["b"], t["b"])
    torch.testing.assert_close(term(step), expected)
    with pytest.raises(ValueError, match="loss"):
        protocol.feature_term("fsp", [("a", "a")])
    with pytest.raises(ValueError, match="pairs must be a non-empty list"):
        protocol.feature_method("at", [], 1.0)
    with pytest.raises(ValueError, match="2 regressors for 1 layer pairs"):
        protocol.feature_term("hint", [("a", "a")], regressors=[None, None])


def test_feature_arms_are_values_that_worker_processes_can_receive():
    import pickle

    arm = protocol.feature_method("nst", protocol.STAGE_PAIRS, 0.1, kd_weight=1.0, kernel="linear")
    assert pickle.loads(pickle.dumps(arm)) == arm
    assert arm.options == (("kernel", "linear"),) and arm.pairs == protocol.STAGE_PAIRS
    method = arm(protocol.SHARED_PROTOCOL)
    assert set(method.terms) == {"ce", "nst", "kd"} and method.terms["nst"][0] == 0.1
