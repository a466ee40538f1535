"""FitNets' additions to the shared protocol: the hint stage (stage 1), the two-stage arm, run_jobs."""
import pytest
import torch

from kdtools import protocol
from kdtools.data import TensorData, TensorLoader
from kdtools.features import extract
from kdtools.losses import hint_loss
from kdtools.models import SmallCNN
from kdtools.protocol import METHODS, Protocol

TINY = Protocol(train_per_class=5, epochs=2, seeds=(0, 1), test_per_class=20)


def _pair(seed=0):
    torch.manual_seed(seed)
    return SmallCNN(width=2, depth=1), SmallCNN(width=4, depth=2).eval()


def _loader(n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    data = TensorData(torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen))
    return TensorLoader(data, batch_size=8, shuffle=True, seed=seed)


def test_forward_to_returns_the_layer_output_and_stops_there():
    student, _ = _pair()
    images = torch.rand(3, 1, 28, 28)
    called = []
    handle = student.stage3.register_forward_hook(lambda *args: called.append(True))
    out = protocol.forward_to(student.eval(), "stage2.bn1", images)
    handle.remove()
    assert torch.equal(out, extract(student, ["stage2.bn1"], images)["stage2.bn1"])
    assert out.shape == (3, 4, 14, 14) and not called
    with pytest.raises(ValueError, match="layer must name a sub-module of SmallCNN, got 'stage9'"):
        protocol.forward_to(student, "stage9", images)


def test_hint_stage_trains_only_up_to_the_guided_layer_and_lowers_the_hint_loss():
    student, teacher = _pair()
    before = {name: t.clone() for name, t in student.state_dict().items()}
    loader = _loader()
    held_out = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    curves = protocol.hint_stage(student, teacher, loader, guided="stage2", hint="stage2", epochs=6, lr=0.05,
                                 held_out=held_out)
    assert set(curves) == {"train", "held_out"} and len(curves["train"]) == len(curves["held_out"]) == 6
    assert curves["train"][-1] < curves["train"][0]
    after = student.state_dict()
    for name, tensor in before.items():
        changed = not torch.equal(tensor, after[name])
        if name.startswith(("stage3.", "head.")):  # after the guided layer: untouched, BN statistics included
            assert not changed, name
        elif name.endswith(("conv1.weight", "bn1.weight")):
            assert changed, name
    assert student.training  # the mode it came in with


def test_hint_stage_held_out_curve_is_the_hint_loss_of_the_trained_pair():
    student, teacher = _pair(1)
    regressor = protocol.ConvRegressor(4, 8)
    held_out = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    curves = protocol.hint_stage(student, teacher, _loader(seed=1), guided="stage2", hint="stage2", epochs=2,
                                 held_out=held_out, regressor=regressor)
    student.eval(), regressor.eval()
    with torch.no_grad():
        expected = hint_loss(regressor(protocol.forward_to(student, "stage2", held_out)),
                             extract(teacher, ["stage2"], held_out)["stage2"])
    assert curves["held_out"][-1] == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        protocol.hint_stage(student, teacher, _loader(), guided="stage2", hint="stage2", epochs=0)


def test_hint_stage_budget_is_a_quarter_of_the_epochs_on_top():
    assert protocol.hint_stage_epochs(protocol.SHARED_PROTOCOL) == 10
    assert protocol.hint_stage_epochs(protocol.SHARED_PROTOCOL.smoke()) == 1


def test_two_stage_arm_is_kd_after_a_hint_stage_and_not_controlled():
    arm = METHODS["FitNets (two-stage)"]
    assert arm.baseline == "CE + KD" and not arm.controlled
    method = arm(TINY)
    assert set(method.terms) == {"ce", "kd"} and method.terms["ce"][0] == method.terms["kd"][0] == 1.0
    assert method.pretrain is not None and not method.student_layers and not method.extra_modules
    assert ("CE + hint", "student (CE)") in [(a, b) for a, b, _ in protocol.controlled_pairs()]


def test_two_stage_run_differs_from_kd_only_by_the_hint_stage(monkeypatch):
    calls = []
    real = protocol.hint_stage

    def spy(student, teacher, loader, **kwargs):
        calls.append((type(teacher).__name__, kwargs["guided"], kwargs["hint"], kwargs["epochs"]))
        return real(student, teacher, loader, **kwargs)

    monkeypatch.setattr(protocol, "hint_stage", spy)
    two_stage = protocol.run("FitNets (two-stage)", 0, TINY, device="cpu")
    kd_only = protocol.run("CE + KD", 0, TINY, device="cpu")
    assert calls == [("SmallCNN", "stage2", "stage2", 1)]  # the memoising wrapper is unwrapped for hooks
    assert two_stage.epochs == kd_only.epochs == TINY.epochs and two_stage.train_loss != kd_only.train_loss


def test_run_jobs_gives_the_same_results_in_worker_processes():
    jobs = [("CE + hint", 0, TINY), ("student (CE)", 1, TINY)]
    here = protocol.run_jobs(jobs, workers=1)
    there = protocol.run_jobs(jobs, workers=2)
    for (h1, s1), (h2, s2) in zip(here, there):
        assert h1.test_acc == h2.test_acc and h1.train_loss == h2.train_loss
        assert all(torch.equal(s1[k], s2[k]) for k in s1)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        protocol.run_jobs([("nope", 0, TINY)])
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        protocol.run_jobs(jobs, workers=0)


@pytest.mark.parametrize("arm", ["CE + hint", "FitNets (two-stage)"])
def test_regressor_arms_do_not_depend_on_whether_the_teacher_was_loaded_before(arm):
    protocol._zoo_teacher.cache_clear()
    first = protocol.run(arm, 0, TINY, device="cpu")  # loads the teacher from the zoo
    second = protocol.run(arm, 0, TINY, device="cpu")  # finds it loaded
    assert first.train_loss == second.train_loss and first.test_acc == second.test_acc
