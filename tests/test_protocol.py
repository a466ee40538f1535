import pytest
import torch

from kdtools import protocol
from kdtools.protocol import METHODS, SHARED_PROTOCOL, Protocol, dkd_method, dkd_warmup_epochs, summarize
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


def test_registered_methods_cover_module_2():
    assert {"student (CE)", "KD", "TCKD", "NCKD", "DKD"} <= set(METHODS)
    assert not METHODS["student (CE)"](TINY).uses_teacher


def test_dkd_warmup_keeps_the_authors_fraction():
    assert dkd_warmup_epochs(Protocol(epochs=240)) == 20
    assert dkd_warmup_epochs(Protocol(epochs=20)) == 2
    assert dkd_warmup_epochs(Protocol(epochs=1)) == 1
    weight = METHODS["DKD"](Protocol(epochs=24)).terms["dkd"][0]
    assert [weight(e) for e in range(3)] == [0.5, 1.0, 1.0]


def test_same_seed_same_result_and_subset_fixed_across_seeds():
    a = protocol.run("KD", 0, TINY, device="cpu")
    b, student = protocol.run("KD", 0, TINY, device="cpu", return_model=True)
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
    rows = load()
    assert len(rows) == 4 and {r["metric"] for r in rows} == {"last_acc", "best_acc"}
    assert all(r["student"] == "cnn-4x1" and r["protocol"] == "shared" for r in rows)
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


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'FitNets'; registered: student"):
        protocol.run("FitNets", 0, TINY)
