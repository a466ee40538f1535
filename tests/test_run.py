"""python -m kdtools.run: the method registry, records, resuming, CIFAR-100, and two Gloo processes against one."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdtools import distributed, protocol, run
from kdtools.data import TensorData, TensorLoader
from kdtools.recipes import CRD_CIFAR100
from kdtools.train import SCHEDULES

REPO = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "2", "--train-per-class", "10", "--test-per-class", "10", "--no-progress", "--threads", "1"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


# --------------------------------------------------------------------------- registry and protocol
def test_every_runner_method_names_a_registered_arm():
    for name, spec in run.RUNNER_METHODS.items():
        assert name == name.lower() and spec.arm in protocol.METHODS, name


def test_method_names_are_case_insensitive_and_unknown_ones_are_listed():
    assert run.resolve_method(" DKD ")[0] == "dkd" and run.resolve_method("FitNets")[1].arm == "CE + hint"
    with pytest.raises(ValueError, match="unknown method 'distil'; known: ce, kd, dkd"):
        run.resolve_method("distil")


def test_unknown_method_on_the_command_line_exits_2(capsys):
    assert run.main(["--method", "nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_cifar100_protocol_is_the_crd_recipe_and_needs_a_teacher():
    with pytest.raises(ValueError, match="--method kd on cifar100 needs --teacher PATH"):
        run.build_protocol("kd", "cifar100")
    p = run.build_protocol("KD", "cifar100", teacher="t.pt")
    assert (p.student, p.epochs, p.batch_size, p.lr, p.momentum, p.weight_decay, p.optimizer, p.schedule) == (
        "resnet8x4", 240, 64, 0.05, 0.9, 5e-4, "sgd-classical", "crd-steps")
    assert run.build_protocol("ce", "cifar100").teacher == ""  # CE needs none
    with pytest.raises(ValueError, match="dataset must be one of mnist, cifar100, got 'svhn'"):
        run.build_protocol("ce", "svhn")


def test_crd_steps_schedule_is_the_recipe_lr_at_every_epoch():
    for epoch in range(CRD_CIFAR100.epochs):  # fit counts from 0, the recipe from 1
        assert CRD_CIFAR100.lr * SCHEDULES["crd-steps"](epoch, 240) == pytest.approx(CRD_CIFAR100.lr_at(epoch + 1))
    assert [SCHEDULES["crd-steps"](e, 8) for e in range(8)] == pytest.approx([1, 1, 1, 1, 1, 0.1, 0.01, 0.001])


# --------------------------------------------------------------------------- the distributed building blocks
def test_shards_of_a_global_batch_are_its_contiguous_slices_in_rank_order():
    data = TensorData(torch.randn(23, 1, 2, 2), torch.arange(23))
    whole = list(TensorLoader(data, 8, shuffle=True, seed=5))
    shards = [list(TensorLoader(data, 8, shuffle=True, seed=5, shard=(r, 3))) for r in range(3)]
    for step, (images, labels, index) in enumerate(whole):
        assert torch.equal(torch.cat([shards[r][step][2] for r in range(3)]), index)
        assert [len(shards[r][step][2]) for r in range(3)] == distributed.rank_shares(len(index), 3)


def test_augmented_shards_are_slices_of_the_augmented_global_batch():
    from kdtools.cifar import random_crop_flip

    data = TensorData(torch.randn(10, 3, 32, 32), torch.arange(10))
    whole = list(TensorLoader(data, 4, shuffle=True, seed=2, augment=random_crop_flip()))
    shards = [list(TensorLoader(data, 4, shuffle=True, seed=2, augment=random_crop_flip(), shard=(r, 2)))
              for r in range(2)]
    for step, (images, _, _) in enumerate(whole):
        assert torch.equal(torch.cat([shards[r][step][0] for r in range(2)]), images)


@pytest.mark.parametrize("shard, batch, n, match", [
    ((2, 2), 8, 16, "shard must be \\(rank, world_size\\)"),
    ((0, 4), 2, 16, "global batch_size 2 is smaller than world_size 4"),
    ((0, 4), 8, 18, "last global batch has 2 examples \\(18 % 8\\), fewer than world_size 4"),
])
def test_bad_shards_are_named(shard, batch, n, match):
    with pytest.raises(ValueError, match=match):
        TensorLoader(TensorData(torch.zeros(n, 1, 1, 1), torch.zeros(n, dtype=torch.long)), batch, shard=shard)


def test_stages_before_the_epochs_see_whole_global_batches_and_keep_the_loader_epoch():
    data = TensorData(torch.randn(10, 1, 2, 2), torch.arange(10))
    sharded = TensorLoader(data, 4, shuffle=True, seed=1, shard=(1, 2))
    whole = protocol._unsharded(sharded)
    assert whole.shard is None and sharded.shard == (1, 2) and whole.data is sharded.data
    assert [len(b[2]) for b in whole] == [4, 4, 2] and sharded.epoch == 0
    assert protocol._unsharded(whole) is whole
    assert protocol.stage_loader(sharded).shard is None


def test_outside_a_process_group_the_collectives_are_identities_and_global_bn_is_batchnorm():
    x = torch.randn(5, 3)
    assert distributed.gather_rows(x) is x and distributed.all_reduce_sum(x) is x and distributed.row_offset(5) == 0
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3))
    reference = [m.state_dict() for m in net]
    images = torch.randn(4, 1, 6, 6)
    expected = net(images)
    for module, state in zip(net, reference):
        module.load_state_dict(state)
    converted = distributed.global_batch_norm(net)
    assert isinstance(converted[1], distributed.GlobalBatchNorm)
    torch.testing.assert_close(converted(images), expected)


# --------------------------------------------------------------------------- one process: records, resuming
def test_runner_trains_exactly_what_the_protocol_trains(tmp_path, mnist):
    assert run.main(["--method", "KD", "--seeds", "0", "--out", str(tmp_path), *TINY]) == 0
    record = json.loads((tmp_path / "kd-seed0.json").read_text())
    reference = protocol.run("KD (mdistiller config)", 0, run.build_protocol("kd", epochs=2, train_per_class=10,
                                                                                test_per_class=10))
    assert record["test_acc"] == reference.test_acc and record["train_loss"] == reference.train_loss
    assert record["format"] == "kdtools.run/1" and record["complete"] and record["arm"] == "KD (mdistiller config)"
    assert record["config"]["train_images"] == 100 and record["config"]["test_images"] == 100
    assert record["config"]["world_size"] == 1 and record["torch"] == torch.__version__
    assert record["last_acc"] == reference.last_acc and record["best_epoch"] == reference.best_epoch
    assert record["student_parameters"] > 0 and record["extra_parameters"] == 0
    assert record["wall_seconds"] >= sum(record["epoch_seconds"])
    # a complete record is not trained again
    assert run.main(["--method", "kd", "--seeds", "0", "--out", str(tmp_path), *TINY]) == 0
    assert json.loads((tmp_path / "kd-seed0.json").read_text())["finished"] == record["finished"]


def test_a_run_stopped_mid_way_continues_to_the_uninterrupted_result(tmp_path, mnist):
    # CRD: its memory banks, random negatives and trained heads must all survive the checkpoint
    args = ["--method", "crd", "--seeds", "1", "--save-model", *TINY[:1], "3", *TINY[2:]]
    assert run.main([*args, "--out", str(tmp_path / "whole")]) == 0
    assert run.main([*args, "--out", str(tmp_path / "split"), "--stop-after-epochs", "1"]) == 0
    paused = json.loads((tmp_path / "split" / "crd-seed1.json").read_text())
    assert not paused["complete"] and len(paused["test_acc"]) == 1
    assert (tmp_path / "split" / "crd-seed1.ckpt.pt").exists()
    assert run.main([*args, "--out", str(tmp_path / "split")]) == 0
    whole, split = (json.loads((tmp_path / d / "crd-seed1.json").read_text()) for d in ("whole", "split"))
    assert split["complete"] and split["test_acc"] == whole["test_acc"] and split["train_loss"] == whole["train_loss"]
    assert split["term_loss"] == whole["term_loss"] and whole["extra_parameters"] > 0
    for name, tensor in _weights(tmp_path / "whole" / "crd-seed1.pt").items():
        assert torch.equal(tensor, _weights(tmp_path / "split" / "crd-seed1.pt")[name]), name
    assert not (tmp_path / "split" / "crd-seed1.ckpt.pt").exists()


def test_a_record_with_another_config_is_not_overwritten(tmp_path, mnist):
    assert run.main(["--method", "ce", "--seeds", "0", "--out", str(tmp_path), *TINY]) == 0
    assert run.main(["--method", "ce", "--seeds", "0", "--out", str(tmp_path), *TINY[:1], "3", *TINY[2:]]) == 2


# --------------------------------------------------------------------------- CIFAR-100 (a stand-in: no download)
def test_cifar100_ce_teacher_then_kd_student_on_a_stand_in(tmp_path, monkeypatch):
    from test_cifar import _stand_in
    import kdtools.cifar

    _stand_in(tmp_path / "data", n_train=200, n_test=100)
    monkeypatch.setattr(kdtools.cifar, "_SPLIT_SIZES", {"train": 200, "test": 100})
    common = ["--dataset", "cifar100", "--data-root", str(tmp_path / "data"), "--epochs", "1", "--batch-size", "32",
              "--train-per-class", "1", "--test-per-class", "1", "--no-progress", "--out", str(tmp_path / "runs"),
              "--seeds", "0"]
    assert run.main(["--method", "ce", "--student", "resnet8", "--save-model", *common]) == 0
    teacher = tmp_path / "runs" / "ce-seed0.pt"
    assert run.main(["--method", "dkd", "--teacher", str(teacher), "--student", "resnet8", *common]) == 0
    record = json.loads((tmp_path / "runs" / "dkd-seed0.json").read_text())
    assert record["complete"] and record["config"]["dataset"] == "cifar100"
    assert record["config"]["schedule"] == "crd-steps" and record["config"]["teacher"] == str(teacher)
    assert record["student_parameters"] == sum(p.numel() for p in protocol.build_model("resnet8").parameters())


# --------------------------------------------------------------------------- two Gloo processes against one
def _torchrun(*args):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("method", ["kd", "crd"])
def test_fit_on_two_gloo_processes_equals_one_process_in_float64(tmp_path, method):
    # exactness of the maths (global batch norm, shares of the last uneven batch, CRD's gathered memory banks and
    # negatives): in float64 the two runs agree to rounding
    worker = str(REPO / "tests" / "workers" / "ddp_fit.py")
    two = _torchrun(worker, str(tmp_path / "two.pt"), method)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, worker, str(tmp_path / "one.pt"), method], cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = torch.load(tmp_path / "two.pt", weights_only=True), torch.load(tmp_path / "one.pt", weights_only=True)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-12, abs=0)
    for name in b["student"]:
        torch.testing.assert_close(a["student"][name], b["student"][name], rtol=1e-9, atol=1e-12)
    for x, y in zip(a["extra"], b["extra"]):  # CRD's heads, memory banks and normalising constants
        for name in y:
            torch.testing.assert_close(x[name], y[name], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["kd", "crd"])
def test_runner_on_two_gloo_processes_equals_one_process(tmp_path, method, mnist):
    # the real command line in float32 on MNIST: the same global batches, so the same curve up to float rounding
    args = ["--method", method, "--seeds", "0", "--save-model", *TINY, "--train-per-class", "20"]
    two = _torchrun("-m", "kdtools.run", *args, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "kdtools.run", *args, "--out", str(tmp_path / "one")], cwd=REPO,
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = (json.loads((tmp_path / d / f"{method}-seed0.json").read_text()) for d in ("two", "one"))
    assert (a["config"]["world_size"], a["config"]["per_rank_batch"], b["config"]["world_size"]) == (2, 32, 1)
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)  # measured: 6e-7 (KD), 4e-6 (CRD)
    # batch norm's gradient amplifies float32 rounding: after 8 steps the weights differ by up to 9e-4 (CRD);
    # the float64 test above checks the maths itself to 1e-12
    for name, tensor in _weights(tmp_path / "one" / f"{method}-seed0.pt").items():
        torch.testing.assert_close(_weights(tmp_path / "two" / f"{method}-seed0.pt")[name].float(), tensor.float(),
                                   rtol=1e-3, atol=3e-3)


def test_every_method_trains_on_two_gloo_processes(tmp_path, mnist):
    # DDP insists that every trainable parameter gets a gradient at every step: regressors, CRD heads, DML's peer
    methods = list(run.RUNNER_METHODS)
    done = _torchrun("-m", "kdtools.run", "--method", *methods, "--seeds", "0", *TINY[:1], "1", *TINY[2:],
                     "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    for method in methods:
        record = json.loads((tmp_path / f"{method}-seed0.json").read_text())
        assert record["complete"] and record["config"]["world_size"] == 2, method
    assert "FutureWarning" not in done.stderr


def test_fit_takes_a_schedule_function():
    from kdtools.train import fit

    data = TensorData(torch.randn(12, 1, 28, 28), torch.arange(12) % 10)
    histories = []
    for schedule in ("crd-steps", lambda epoch, epochs: 0.1 ** sum(epoch + 1 > round(epochs * b / 240)
                                                                    for b in (150, 180, 210))):
        torch.manual_seed(0)
        model = protocol.build_model("cnn-2x1")
        histories.append(fit(model, TensorLoader(data, 4, shuffle=True, seed=0), epochs=8, schedule=schedule,
                             progress=False, device="cpu").train_loss)
    assert histories[0] == histories[1]
    with pytest.raises(ValueError, match="unknown schedule 'steps'; known: constant, cosine, crd-steps, or a function"):
        fit(protocol.build_model("cnn-2x1"), TensorLoader(data, 4), epochs=1, schedule="steps")


def test_a_killed_run_continues_from_its_last_checkpoint(tmp_path, mnist):
    import signal
    import time

    args = [sys.executable, "-m", "kdtools.run", "--method", "kd", "--seeds", "0", "--save-model", "--epochs", "30",
            *TINY[2:]]
    whole = subprocess.run([*args, "--out", str(tmp_path / "whole")], cwd=REPO, env=_env(), capture_output=True,
                           text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    victim = subprocess.Popen([*args, "--out", str(tmp_path / "killed")], cwd=REPO, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "kd-seed0.ckpt.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = json.loads((tmp_path / "killed" / "kd-seed0.json").read_text())
    assert not killed["complete"] and 0 < len(killed["test_acc"]) < 30
    again = subprocess.run([*args, "--out", str(tmp_path / "killed")], cwd=REPO, env=_env(), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = (json.loads((tmp_path / d / "kd-seed0.json").read_text()) for d in ("whole", "killed"))
    assert a["test_acc"] == b["test_acc"] and a["train_loss"] == b["train_loss"] and b["complete"]
    for name, tensor in _weights(tmp_path / "whole" / "kd-seed0.pt").items():
        assert torch.equal(tensor, _weights(tmp_path / "killed" / "kd-seed0.pt")[name]), name
