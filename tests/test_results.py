import json
import subprocess
import sys

import pytest

from kdtools import results
from kdtools.results import TABLE_END, TABLE_START, Recorder, load, render_page, render_table, results_dir

from conftest import ROOT


def test_full_and_smoke_runs_write_to_different_places(tmp_path, monkeypatch):
    full = Recorder("nb", mode="full")
    full.record("KD", "test_acc", 98.0, teacher="t", student="s", seed=0, epochs=5)
    monkeypatch.setenv("KDTOOLS_SMOKE", "1")
    smoke = Recorder("nb")
    assert smoke.mode == "smoke"
    smoke.record("KD", "test_acc", 11.0, teacher="t", student="s", seed=0, epochs=1)
    assert full.path != smoke.path and smoke.path.parent == results_dir("full") / ".smoke"
    on_disk = json.loads(full.path.read_text())
    assert on_disk["rows"][0]["value"] == 98.0 and on_disk["mode"] == "full"  # untouched by the smoke run
    assert [r["value"] for r in load()] == [98.0]  # the results page only ever sees full runs


def test_rerunning_a_notebook_replaces_its_rows():
    rec = Recorder("nb", mode="full")
    rec.record("KD", "test_acc", 97.0, seed=0)
    rec.record("KD", "test_acc", 98.0, seed=0)
    rec.record("KD", "test_acc", 96.0, seed=1)
    fresh = Recorder("nb", mode="full")
    fresh.record("CE", "test_acc", 95.0, seed=0)  # a new run starts from an empty file
    assert [(r["method"], r["value"]) for r in load()] == [("CE", 95.0)]
    assert len(rec.rows) == 2


def test_tensor_and_numpy_scalars_are_stored_as_floats():
    import numpy as np
    import torch

    rec = Recorder("nb", mode="full")
    assert rec.record("a", "acc", torch.tensor(97.5))["value"] == 97.5
    assert rec.record("b", "acc", np.float32(12.5))["value"] == 12.5


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "98", True, None])
def test_values_must_be_finite_numbers(value):
    with pytest.raises(ValueError, match="value must be a finite number"):
        Recorder("nb", mode="full").record("KD", "acc", value)


def test_notebook_name_must_be_plain():
    with pytest.raises(ValueError, match="plain name"):
        Recorder("../evil")


def test_table_merges_seeds_into_mean_and_std():
    rows = [{"notebook": "nb", "method": "KD", "teacher": "t", "student": "s", "metric": "acc", "value": v,
             "seed": i, "epochs": 5, "mode": "full"} for i, v in enumerate([97.0, 98.0, 99.0])]
    table = render_table(rows)
    assert "## nb" in table and "| KD | t | s | acc | 98 ± 1 | 0, 1, 2 | 5 |" in table


def test_render_page_replaces_only_the_marked_block():
    page = f"intro\n{TABLE_START}\nold table\n{TABLE_END}\noutro\n"
    out = render_page(page, [])
    assert out.startswith("intro\n") and out.endswith("outro\n") and "old table" not in out
    assert "no full-run results" in out
    with pytest.raises(ValueError, match="no table markers"):
        render_page("no markers here", [])


def test_committed_results_page_is_in_sync():
    proc = subprocess.run([sys.executable, "-m", "kdtools.results", "check"], cwd=ROOT, capture_output=True,
                          text=True, env={**__import__("os").environ, "KDTOOLS_RESULTS": ""})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_project_root_is_this_repository():
    assert results.project_root() == ROOT
