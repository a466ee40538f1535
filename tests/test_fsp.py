"""FSP's additions to the shared protocol: its layer pairs, stage 1 (the FSP loss alone), the two-stage arms."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from kdtools import protocol
from kdtools.data import TensorData, TensorLoader
from kdtools.features import extract
from kdtools.losses import fsp_loss
from kdtools.models import SmallCNN, build_model
from kdtools.protocol import METHODS, Protocol

TINY = Protocol(train_per_class=5, epochs=2, seeds=(0, 1), test_per_class=20)


def _pair(seed=0):
    torch.manual_seed(seed)
    return SmallCNN(width=2, depth=1), SmallCNN(width=2, depth=3).eval()  # same widths, deeper teacher


def _loader(n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    data = TensorData(torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen))
    return TensorLoader(data, batch_size=8, shuffle=True, seed=seed)


def test_pairs_are_the_first_and_last_map_of_each_stage():
    assert protocol.FSP_PAIRS == (("input", "stage1"), ("stage1", "stage2"), ("stage2", "stage3"))
    assert protocol.fsp_shapes(build_model("cnn-4x1")) == [(1, 4), (4, 8), (8, 16)]
    assert protocol.fsp_shapes(build_model("cnn-4x3")) == [(1, 4), (4, 8), (8, 16)]
    assert protocol.fsp_shapes(build_model("cnn-32x2")) == [(1, 32), (32, 64), (64, 128)]


def test_fsp_matrices_by_hand_including_the_pooled_input():
    student, _ = _pair()
    images = torch.rand(3, 1, 28, 28)
    g_input, g_12, g_23 = protocol.fsp_matrices(student, images)
    maps = extract(student, ["stage1", "stage2", "stage3"], images)
    pooled = F.avg_pool2d(images, 2)  # 28x28 -> stage1's 14x14
    by_hand = torch.einsum("bihw,bjhw->bij", pooled, maps["stage1"]) / 14 ** 2
    torch.testing.assert_close(g_input, by_hand)
    a = F.avg_pool2d(maps["stage1"], 2)  # 14x14 -> stage2's 7x7
    torch.testing.assert_close(g_12, torch.einsum("bihw,bjhw->bij", a, maps["stage2"]) / 49)
    torch.testing.assert_close(g_23, torch.einsum("bihw,bjhw->bij", maps["stage2"], maps["stage3"]) / 49)
    assert g_23.shape == (3, 4, 8)


def test_unequal_widths_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"FSP needs equal channel counts.*\(1, 32\), \(32, 64\).*fsp_protocol"):
        protocol.check_fsp_compatible(build_model("cnn-4x1"), build_model("cnn-32x2"), teacher_name="cnn-32x2")
    with pytest.raises(ValueError, match="pairs name unknown layer"):
        protocol.fsp_shapes(build_model("cnn-4x1"), [("input", "stage9")])
    with pytest.raises(ValueError, match="pairs must be a non-empty list"):
        protocol.fsp_shapes(build_model("cnn-4x1"), [])
    student, _ = _pair()
    with pytest.raises(ValueError, match="FSP needs equal channel counts"):
        protocol.fsp_stage(student, SmallCNN(width=4, depth=1).eval(), _loader(), epochs=1)


def test_fsp_stage_trains_stages_not_the_head_and_lowers_the_fsp_loss():
    student, teacher = _pair()
    before = {name: t.clone() for name, t in student.state_dict().items()}
    held_out = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    curves = protocol.fsp_stage(student, teacher, _loader(), epochs=6, lr=0.05, held_out=held_out)
    assert set(curves) == {"train", "held_out"} and len(curves["train"]) == len(curves["held_out"]) == 6
    assert curves["train"][-1] < 0.5 * curves["train"][0]
    after = student.state_dict()
    for name, tensor in before.items():
        changed = not torch.equal(tensor, after[name])
        if name.startswith("head."):  # after the last FSP layer: no gradient, untouched
            assert not changed, name
        elif name.endswith(("conv1.weight", "bn1.weight")):  # every stage learns
            assert changed, name
    assert student.training


def test_fsp_stage_held_out_curve_is_fsp_loss_of_the_trained_student():
    student, teacher = _pair(1)
    held_out = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    curves = protocol.fsp_stage(student, teacher, _loader(seed=1), epochs=2, held_out=held_out)
    layers = ["stage1", "stage2", "stage3"]
    s, t = extract(student, layers, held_out), extract(teacher, layers, held_out)
    expected = fsp_loss([(held_out, s["stage1"]), (s["stage1"], s["stage2"]), (s["stage2"], s["stage3"])],
                        [(held_out, t["stage1"]), (t["stage1"], t["stage2"]), (t["stage2"], t["stage3"])])
    assert curves["held_out"][-1] == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        protocol.fsp_stage(student, teacher, _loader(), epochs=0)


def test_stage_one_budget_and_protocol():
    assert protocol.fsp_stage_epochs(protocol.SHARED_PROTOCOL) == 10
    assert protocol.fsp_stage_epochs(protocol.SHARED_PROTOCOL.smoke()) == 1
    fsp = protocol.fsp_protocol(protocol.SHARED_PROTOCOL)
    assert fsp == replace(protocol.SHARED_PROTOCOL, teacher="mnist-cnn-4x3-teacher")


def test_registered_arms_are_two_stage_and_not_controlled():
    for name, baseline, kd in (("FSP (two-stage)", "student (CE)", False), ("FSP (two-stage) + KD", "CE + KD", True)):
        arm = METHODS[name]
        assert arm.baseline == baseline and not arm.controlled
        method = arm(TINY)
        assert method.pretrain is not None and method.uses_teacher
        assert set(method.terms) == ({"ce", "kd"} if kd else {"ce"})
    with pytest.raises(ValueError, match="stage1_epochs"):
        protocol.FSPArm(stage1_epochs=0)


def test_arm_runs_stage_one_then_the_protocol_epochs(monkeypatch):
    calls = []
    real = protocol.fsp_stage

    def recording(*args, **kwargs):
        calls.append(kwargs["epochs"])
        return real(*args, **kwargs)

    monkeypatch.setattr(protocol, "fsp_stage", recording)
    teacher = SmallCNN(width=4, depth=3).eval()  # cnn-4x1's widths
    history = protocol.run(protocol.FSPArm(stage1_epochs=3), 0, TINY, teacher=teacher)
    assert calls == [3] and history.epochs == TINY.epochs
    protocol.run(protocol.FSPArm(), 0, TINY, teacher=teacher)
    assert calls == [3, 1]  # a quarter of 2 epochs, at least 1
    with pytest.raises(ValueError, match="FSP needs equal channel counts"):
        protocol.run(protocol.FSPArm(), 0, TINY, teacher=SmallCNN(width=8, depth=1).eval())
