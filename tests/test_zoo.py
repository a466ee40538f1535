import json
import shutil
import time

import pytest
import torch

from kdtools import zoo
from kdtools.data import TensorLoader
from kdtools.train import evaluate


def test_every_shipped_checkpoint_verifies_and_has_a_recipe():
    manifest = zoo.available()
    assert "mnist-cnn-teacher" in manifest
    for name, entry in manifest.items():
        assert zoo.verify(name).is_file()
        assert name in zoo.RECIPES and entry["recipe"]["architecture"] == zoo.RECIPES[name].architecture
        for key in ("sha256", "test_accuracy", "train_seconds", "trained_with"):
            assert key in entry


def test_teacher_loads_fast_and_reaches_its_recorded_accuracy(mnist):
    start = time.perf_counter()
    teacher = zoo.load("mnist-cnn-teacher", device="cpu")
    assert time.perf_counter() - start < 1.0
    assert not teacher.training
    accuracy = evaluate(teacher, TensorLoader(mnist[1], 1000), device="cpu")
    assert accuracy == pytest.approx(zoo.available()["mnist-cnn-teacher"]["test_accuracy"], abs=1e-9)
    assert accuracy > 99.0


@pytest.fixture
def copied_zoo(tmp_path):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    entry = zoo.available()["mnist-cnn-teacher"]
    shutil.copy(zoo.CHECKPOINTS / entry["file"], ckpt / entry["file"])
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"mnist-cnn-teacher": entry}))
    return ckpt, manifest, ckpt / entry["file"]


def test_checksum_mismatch_is_detected(copied_zoo):
    ckpt, manifest, path = copied_zoo
    zoo.load("mnist-cnn-teacher", checkpoint_dir=ckpt, manifest_path=manifest)  # intact copy loads
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # flip one byte inside the weights
    path.write_bytes(bytes(raw))
    with pytest.raises(zoo.ChecksumError, match="corrupt.*python -m kdtools.zoo train mnist-cnn-teacher"):
        zoo.load("mnist-cnn-teacher", checkpoint_dir=ckpt, manifest_path=manifest)


def test_missing_file_is_reported(copied_zoo):
    ckpt, manifest, path = copied_zoo
    path.unlink()
    with pytest.raises(zoo.ChecksumError, match="missing"):
        zoo.load("mnist-cnn-teacher", checkpoint_dir=ckpt, manifest_path=manifest)


def test_missing_file_can_be_retrained_from_its_recipe(tmp_path, monkeypatch, mnist):
    # a cheap stand-in recipe so the test takes seconds; the mechanism is the same for the real teacher
    monkeypatch.setitem(zoo.RECIPES, "tiny", zoo.Recipe(architecture="mlp-30x2", epochs=1, lr=0.05, seed=0))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"tiny": {"file": "tiny.pt", "sha256": "0" * 64, "recipe": {}}}))
    model = zoo.load("tiny", checkpoint_dir=tmp_path, manifest_path=manifest, on_missing="train")
    entry = json.loads(manifest.read_text())["tiny"]
    assert entry["sha256"] == zoo.sha256(tmp_path / "tiny.pt") and entry["test_accuracy"] > 80
    assert isinstance(model, torch.nn.Module) and not model.training


def test_unknown_name_and_bad_option():
    with pytest.raises(ValueError, match="unknown zoo model 'nope'; known: .*mnist-cnn-teacher"):
        zoo.load("nope")
    with pytest.raises(ValueError, match="on_missing must be"):
        zoo.load("mnist-cnn-teacher", on_missing="ignore")


# ----------------------------------------------------------------------------- reliability: clear errors
def test_missing_manifest_names_the_file_and_the_fix(tmp_path):
    missing = tmp_path / "manifest.json"
    with pytest.raises(zoo.ManifestError, match=r"manifest .*manifest\.json does not exist.*git checkout"):
        zoo.load("mnist-cnn-teacher", checkpoint_dir=tmp_path, manifest_path=missing)


def test_malformed_manifest_names_the_file(tmp_path):
    bad = tmp_path / "manifest.json"
    bad.write_text('{"mnist-cnn-teacher": {"file": "x.pt",')  # truncated
    with pytest.raises(zoo.ManifestError, match=r"manifest .*manifest\.json is not valid JSON"):
        zoo.verify("mnist-cnn-teacher", checkpoint_dir=tmp_path, manifest_path=bad)
    bad.write_text("[1, 2]")
    with pytest.raises(zoo.ManifestError, match="must be a JSON object of entries.*got list"):
        zoo.verify("mnist-cnn-teacher", checkpoint_dir=tmp_path, manifest_path=bad)


def test_entry_without_sha256_is_reported_as_such_not_as_corrupt(copied_zoo):
    ckpt, manifest, _ = copied_zoo
    entry = json.loads(manifest.read_text())["mnist-cnn-teacher"]
    del entry["sha256"]
    manifest.write_text(json.dumps({"mnist-cnn-teacher": entry}))
    with pytest.raises(zoo.ManifestError) as err:
        zoo.load("mnist-cnn-teacher", checkpoint_dir=ckpt, manifest_path=manifest)
    message = str(err.value)
    assert "entry 'mnist-cnn-teacher' has no sha256" in message and str(manifest) in message
    assert "python -m kdtools.zoo train mnist-cnn-teacher" in message and "corrupt" not in message


def test_a_recipe_without_a_checkpoint_says_how_to_train_it(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}")
    with pytest.raises(ValueError, match="has a recipe but no checkpoint.*python -m kdtools.zoo train mnist-cnn"):
        zoo.verify("mnist-cnn-teacher", checkpoint_dir=tmp_path, manifest_path=manifest)


def _no_training(*args, **kwargs):
    raise AssertionError("training started although the destination cannot be written")


def test_unwritable_destination_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "train_model", _no_training)
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    with pytest.raises(PermissionError, match=r"cannot write .*not-a-folder.*--out DIR"):
        zoo.train_checkpoint("mnist-cnn-teacher", checkpoint_dir=a_file / "checkpoints",
                             manifest_path=a_file / "manifest.json")


def test_read_only_install_fails_before_training(tmp_path, monkeypatch):
    # a read-only site-packages, simulated (the tests may run as root, who can write anywhere)
    monkeypatch.setattr(zoo, "train_model", _no_training)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(zoo.tempfile, "TemporaryFile", refuse)
    with pytest.raises(PermissionError, match=r"cannot write the zoo checkpoint to .*Permission denied.*--out DIR"):
        zoo.train_checkpoint("mnist-cnn-teacher", checkpoint_dir=tmp_path, manifest_path=tmp_path / "m.json")


def test_train_cli_writes_to_the_chosen_folder_and_load_finds_it(tmp_path, monkeypatch, mnist, capsys):
    from kdtools.zoo.__main__ import main

    monkeypatch.setitem(zoo.RECIPES, "tiny", zoo.Recipe(architecture="mlp-30x2", epochs=1, lr=0.05, seed=0,
                                                        storage="float16"))
    out = tmp_path / "my-zoo"
    monkeypatch.setattr("sys.argv", ["kdtools.zoo", "train", "tiny", "--out", str(out)])
    assert main() == 0
    assert str(out / "tiny.pt") in capsys.readouterr().out
    entry = json.loads((out / "manifest.json").read_text())["tiny"]
    assert entry["sha256"] == zoo.sha256(out / "tiny.pt") and len(entry["history"]["test_acc"]) == 1
    model = zoo.load("tiny", checkpoint_dir=out, manifest_path=out / "manifest.json")
    # float16 storage: the entry's accuracy is that of the stored weights, and loading gives float32
    assert next(model.parameters()).dtype == torch.float32
    assert evaluate(model, TensorLoader(mnist[1], 1000), device="cpu") == pytest.approx(entry["test_accuracy"])
    assert "tiny" not in zoo.available()  # the installed manifest is untouched


def test_train_cli_reports_an_unwritable_out_folder_without_a_traceback(tmp_path, monkeypatch, capsys):
    from kdtools.zoo.__main__ import main

    monkeypatch.setattr(zoo, "train_model", _no_training)
    a_file = tmp_path / "file"
    a_file.write_text("")
    monkeypatch.setattr("sys.argv", ["kdtools.zoo", "train", "mnist-cnn-teacher", "--out", str(a_file / "sub")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "error: cannot write the zoo checkpoint" in capsys.readouterr().err


def test_transfer_split_holds_out_validation_images_and_omits_a_class():
    labels = torch.arange(100) % 10
    recipe = zoo.Recipe(architecture="mlp-30x2", validation_images=20, omit_class=3)
    transfer, val = zoo.transfer_split(recipe, labels)
    assert len(val) == 20 and not set(transfer.tolist()) & set(val.tolist())
    assert (labels[transfer] != 3).all() and len(transfer) == 80 - int((labels[transfer.new_tensor(
        [i for i in range(100) if i not in set(val.tolist())])] == 3).sum())
    everything, none = zoo.transfer_split(zoo.Recipe(architecture="mlp-30x2"), labels)
    assert torch.equal(everything, torch.arange(100)) and len(none) == 0


def test_student_recipes_name_their_teacher_and_distillation_settings():
    for seed in (0, 1, 2):
        kd = zoo.RECIPES[f"mnist-mlp-800x2-kd20-s{seed}"]
        scratch = zoo.RECIPES[f"mnist-mlp-800x2-scratch-s{seed}"]
        assert (kd.teacher, kd.temperature, kd.alpha, kd.seed) == ("mnist-mlp-teacher", 20.0, 0.9, seed)
        assert scratch.teacher is None
        # one change per comparison: the distilled and the scratch student differ only in the loss
        same = {k: v for k, v in zoo.asdict(kd).items() if k not in ("teacher", "temperature", "alpha",
                                                                     "description")}
        assert same == {k: v for k, v in zoo.asdict(scratch).items() if k in same}
    assert zoo.RECIPES["mnist-mlp-teacher-200ep"].init_from == "mnist-mlp-teacher"


def test_grouped_states_round_trip_through_load_networks(tmp_path, monkeypatch):
    from kdtools.zoo import artifacts

    nets = {"a": torch.nn.Linear(3, 2), "b": torch.nn.Linear(3, 2)}
    tensors = artifacts.grouped_states({k: v.state_dict() for k, v in nets.items()})
    assert set(tensors) == {"a/weight", "a/bias", "b/weight", "b/bias"}
    monkeypatch.setattr(artifacts, "load_artifact",
                        lambda name, *rest: ({k: v.half() for k, v in tensors.items()}, {"info": {"n": 3}}))
    models, entry = artifacts.load_networks("x", lambda info: torch.nn.Linear(info["n"], 2))
    assert set(models) == {"a", "b"} and not models["a"].training
    assert torch.allclose(models["b"].weight, nets["b"].weight.half().float())
    single = nets["a"].state_dict()
    monkeypatch.setattr(artifacts, "load_artifact",
                        lambda name, *rest: ({k: v.half() for k, v in single.items()}, {"info": {"n": 3}}))
    model, _ = artifacts.load_network("x", lambda info: torch.nn.Linear(info["n"], 2))
    assert model.weight.dtype == torch.float32 and not model.training
    assert torch.allclose(model.bias, nets["a"].bias.half().float())


def test_first_seed_states_pops_every_state_and_groups_the_first_seeds():
    import torch

    from kdtools.zoo.artifacts import first_seed_states

    runs = [{"arm": arm, "seed": seed, "state": {"w": torch.full((2,), float(seed)), "b": torch.zeros(1)}}
            for arm in ("a", "b") for seed in (3, 4)]
    tensors = first_seed_states(runs, 3, torch.float16)
    assert sorted(tensors) == ["a/b", "a/w", "b/b", "b/w"]
    assert tensors["a/w"].dtype == torch.float16 and tensors["a/w"].tolist() == [3.0, 3.0]
    assert all("state" not in r for r in runs)
