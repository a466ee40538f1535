import json
import subprocess
import sys

import pytest

from kdtools import results
from kdtools.results import (METRICS, TABLE_END, TABLE_START, Recorder, check_metric, format_values, load,
                             render_page, render_table, results_dir)

from conftest import ROOT


def test_full_and_smoke_runs_write_to_different_places(tmp_path, monkeypatch):
    full = Recorder("nb", mode="full")
    full.record("KD", "test accuracy (%)", 98.0, teacher="t", student="s", seed=0, epochs=5)
    monkeypatch.setenv("KDTOOLS_SMOKE", "1")
    smoke = Recorder("nb")
    assert smoke.mode == "smoke"
    smoke.record("KD", "test accuracy (%)", 11.0, teacher="t", student="s", seed=0, epochs=1)
    assert full.path != smoke.path and smoke.path.parent == results_dir("full") / ".smoke"
    on_disk = json.loads(full.path.read_text())
    assert on_disk["rows"][0]["value"] == 98.0 and on_disk["mode"] == "full"  # untouched by the smoke run
    assert [r["value"] for r in load()] == [98.0]  # the results page only ever sees full runs


LAST = "test accuracy, last epoch (%)"
BEST = "test accuracy, best epoch (%)"


def test_rerunning_a_recording_replaces_only_the_same_row():
    rec = Recorder("nb", mode="full")
    rec.record("KD", LAST, 97.0, seed=0)
    rec.record("KD", LAST, 98.0, seed=0)  # same key: replaces
    rec.record("KD", LAST, 96.0, seed=1)
    assert [(r["seed"], r["value"]) for r in load()] == [(0, 98.0), (1, 96.0)]
    assert len(rec.rows) == 2


def test_a_fresh_kernel_keeps_the_rows_of_other_cells():
    first = Recorder("nb", mode="full")
    first.record("CE", LAST, 95.0, seed=0)
    first.record("KD", LAST, 97.0, seed=0)
    first.record("KD", LAST, 97.5, seed=0, setting="200 images per class")  # another setting: another row
    # a new kernel re-runs only the KD cell
    fresh = Recorder("nb", mode="full")
    fresh.record("KD", LAST, 98.0, seed=0)
    assert [(r["method"], r["value"]) for r in load()] == [("CE", 95.0), ("KD", 97.5), ("KD", 98.0)]
    assert [r["value"] for r in fresh.rows] == [98.0]


def test_forget_deletes_only_matching_rows():
    rec = Recorder("nb", mode="full")
    rec.record("old name", LAST, 90.0, seed=0)
    rec.record("old name", LAST, 91.0, seed=1)
    rec.record("KD", LAST, 97.0, seed=0)
    assert rec.forget(method="old name") == 2
    assert [r["method"] for r in load()] == ["KD"] and [r["method"] for r in rec.rows] == ["KD"]
    assert Recorder("nb", mode="full").forget() == 1 and load() == []


@pytest.mark.parametrize("legacy, canonical", [
    ("best_acc", BEST), ("test_acc_last", LAST), ("last_acc_mean", LAST), ("ece_percent", "ECE, last epoch (%)"),
    ("test_errors_best", "test errors, best epoch"),
])
def test_legacy_metric_names_point_to_the_shared_name(legacy, canonical):
    with pytest.raises(ValueError, match="legacy identifier") as error:
        Recorder("nb", mode="full").record("KD", legacy, 97.0, seed=0)
    assert repr(canonical) in str(error.value) and repr(legacy) in str(error.value)
    assert not results_dir("full").joinpath("nb.json").exists()  # nothing written


def test_mean_metrics_ask_for_one_row_per_seed():
    with pytest.raises(ValueError, match="one row per seed"):
        check_metric("last_acc_mean")


@pytest.mark.parametrize("name, message", [
    ("Test accuracy, last epoch (%)", "spelled differently"),
    ("gap_closed_last", "legacy identifier"),
    ("test error % at n=800, last epoch", "unit in parentheses"),
    ("Mean entropy (nats)", "lowercase"),
    ("", "non-empty string"),
    (3, "non-empty string"),
])
def test_metric_names_that_break_the_vocabulary_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        check_metric(name)


def test_shared_and_free_metric_names_are_accepted():
    for name in METRICS:
        assert check_metric(name).name == name
    assert check_metric("mean entropy at T=4 (nats)").decimals is None  # precision from the values
    assert check_metric("test error at n=800, last epoch (%)").decimals == 2
    assert check_metric("ECE, last epoch (%)").decimals == 2


@pytest.mark.parametrize("images", [0, -5, 10.5, "10000", True])
def test_test_images_must_be_a_positive_int(images):
    with pytest.raises(ValueError, match="test_images must be a positive int"):
        Recorder("nb", mode="full").record("KD", LAST, 97.0, test_images=images)


def test_tensor_and_numpy_scalars_are_stored_as_floats():
    import numpy as np
    import torch

    rec = Recorder("nb", mode="full")
    assert rec.record("a", "test accuracy (%)", torch.tensor(97.5))["value"] == 97.5
    assert rec.record("b", "test accuracy (%)", np.float32(12.5))["value"] == 12.5


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "98", True, None])
def test_values_must_be_finite_numbers(value):
    with pytest.raises(ValueError, match="value must be a finite number"):
        Recorder("nb", mode="full").record("KD", "test accuracy (%)", value)


def test_notebook_name_must_be_plain():
    with pytest.raises(ValueError, match="plain name"):
        Recorder("../evil")


def _rows(metric, values, notebook="nb", **extra):
    return [{"notebook": notebook, "method": "KD", "teacher": "t", "student": "s", "metric": metric, "value": v,
             "seed": i, "epochs": 5, "mode": "full", **extra} for i, v in enumerate(values)]


def test_table_merges_seeds_into_mean_and_std_with_the_metrics_decimals():
    table = render_table(_rows(LAST, [97.0, 98.0, 99.0]) + _rows("test errors, last epoch", [70, 75, 74]))
    assert "## nb" in table and "Every model here trained for 5 epochs." in table  # one length: no column
    assert "```{table}\n:class: kd-results\n\n| method | metric | value | model (teacher → student) |\n" in table
    assert "| KD | test accuracy, last epoch (%) | 98.00 ± 1.00 (3 seeds) | t → s |" in table
    # sample std of 70, 75, 74 is 2.6458
    assert "| KD | test errors, last epoch | 73.0 ± 2.6 (3 seeds) | t → s |" in table
    single = render_table([{**_rows(LAST, [90.0])[0], "teacher": "-", "epochs": 1}])
    assert "| KD | test accuracy, last epoch (%) | 90.00 (1 seed) | s |" in single and "for 1 epoch." in single


def test_values_are_formatted_consistently():
    assert format_values(LAST, [92.0]) == "92.00"
    assert format_values(LAST, [92.0], seeds=1) == "92.00 (1 seed)"
    assert format_values(LAST, [92.1, 92.3], seeds=2) == "92.20 ± 0.14 (2 seeds)"
    assert format_values("mean entropy at T=4 (nats)", [1.404]) == "1.40"  # three significant digits
    assert format_values("mean entropy at T=1 (nats)", [0.02805]) == "0.0280"
    assert format_values("entries (of 90)", [90.0]) == "90"  # a count
    assert format_values("test errors, last epoch", [161.0], seeds=1) == "161 (1 seed)"  # one run of a count
    assert format_values("test errors, last epoch", [161.0, 150.0], seeds=2) == "155.5 ± 7.8 (2 seeds)"
    assert format_values("ratio (×)", [1234.5, 1300.1]) == "1267 ± 46"


def test_lessons_link_their_notebook_in_course_order_and_state_the_test_set(tmp_path):
    for rel, title in (("notebooks/01_a/second.ipynb", "The second lesson"), ("notebooks/01_a/first.ipynb", None)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        cells = [{"cell_type": "markdown", "source": ["(label)=\n", f"# {title}\n", "text"]}] if title else []
        (tmp_path / rel).write_text(json.dumps({"cells": cells}))
    (tmp_path / "_toc.yml").write_text("root: intro\nchapters:\n  - file: notebooks/01_a/first\n"
                                      "  - file: notebooks/01_a/second\n")
    rows = (_rows(LAST, [97.0], "second", test_images=10000)
            + _rows(LAST, [95.0], "first", test_images=10000, setting="5 epochs")
            + _rows(BEST, [95.0], "first"))
    table = render_table(rows, root=tmp_path)
    first, second = table.index("## first\n"), table.index("## The second lesson\n")  # a title, else the name
    assert first < second
    assert ("Measured in {doc}`the lesson </notebooks/01_a/first>`. "
            "Test set: 10\u2009000 images (not recorded for every row).") in table[first:second]
    assert "{doc}`the lesson </notebooks/01_a/second>`. Test set: 10\u2009000 images." in table[second:]
    # a setting column only where a row has one
    assert "| method | metric | value | model (teacher → student) | setting |" in table[first:second]
    assert "| KD | test accuracy, last epoch (%) | 95.00 (1 seed) | t → s | 5 epochs |" in table
    assert "| KD | test accuracy, best epoch (%) | 95.00 (1 seed) | t → s | - |" in table
    assert "| method | metric | value | model (teacher → student) |\n" in table[second:]


def test_old_files_are_rendered_with_shared_names_or_skipped_with_a_note(tmp_path):
    old = {"notebook": "old", "mode": "full", "rows": [
        {"method": "KD", "teacher": "t", "student": "s", "metric": m, "value": v, "seed": 0, "epochs": 5,
         "mode": "full"} for m, v in (("last_acc", 97.0), ("last_acc_mean", 96.0), ("gap_closed_last", 0.5),
                                      ("test error % at n=800", 3.0))]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "broken.json").write_text("{not json")
    skipped = []
    rows = load(tmp_path, skipped)
    assert [r["metric"] for r in rows] == [LAST, "test error % at n=800"]  # renamed; a free phrase is kept
    assert len(skipped) == 2 and "broken.json" in skipped[0]
    assert "`last_acc_mean` (1 rows)" in skipped[1] and "`gap_closed_last` (1 rows)" in skipped[1]
    table = render_table(rows, skipped=skipped)
    assert "```{note}" in table and "gap_closed_last" in table and "97.00 (1 seed)" in table


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


def test_recording_under_the_shared_name_replaces_a_legacy_row(tmp_path):
    path = results_dir("full") / "nb.json"
    path.parent.mkdir(parents=True)
    legacy = {"method": "KD", "teacher": "t", "student": "s", "seed": 0, "epochs": 5, "mode": "full"}
    path.write_text(json.dumps({"notebook": "nb", "mode": "full", "rows": [
        {**legacy, "metric": "last_acc", "value": 90.0}, {**legacy, "metric": "last_acc", "value": 91.0, "seed": 1},
        {**legacy, "metric": "last_acc_mean", "value": 90.5, "seed": None}]}))
    Recorder("nb", mode="full").record("KD", LAST, 97.0, teacher="t", student="s", seed=0, epochs=5)
    skipped = []
    rows = load(skipped=skipped)
    # seed 0 is the new row only (not averaged with its legacy twin); seed 1 is still the legacy one, renamed
    assert sorted((r["seed"], r["value"]) for r in rows) == [(0, 97.0), (1, 91.0)]
    assert "last_acc_mean" in skipped[0]  # kept, and still reported, until forgotten
    Recorder("nb", mode="full").forget(metric="last_acc_mean")
    assert load(skipped=(skipped := [])) and skipped == []


def _shared_row(notebook, method, seed, value, metric="test accuracy, last epoch (%)"):
    return {"notebook": notebook, "method": method, "teacher": "mnist-cnn-teacher", "student": "cnn-4x1",
            "metric": metric, "value": value, "seed": seed, "epochs": 40, "mode": "full", "protocol": "shared",
            "test_images": 2000, "setting": "shared protocol"}


def test_shared_protocol_table_merges_a_baseline_that_lessons_share():
    rows = [_shared_row(nb, "CE + KD", seed, v) for nb in ("lesson_a", "lesson_b") for seed, v in ((0, 94.0), (1, 96.0))]
    rows += [_shared_row("lesson_a", "CE + AT", 0, 90.0), _shared_row("lesson_b", "CE + AT", 0, 91.0)]
    rows.append({**_shared_row("lesson_a", "other", 0, 50.0), "protocol": None})
    table = results.render_shared_protocol_table(rows)
    lines = [line for line in table.splitlines() if line.startswith("| CE + ")]
    assert lines[0].startswith("| CE + KD | 95.00 ± 1.41 (2 seeds) | - |") and lines[0].endswith("lesson_a, lesson_b |")
    # the same arm with different values in two lessons keeps one line per lesson
    assert [line.rsplit("|", 2)[1].strip() for line in lines[1:]] == ["lesson_a", "lesson_b"]
    assert "other" not in table and "Test set: 2\u2009000 images." in table
    assert results.render_shared_protocol_table([rows[-1]]) == ""


def test_retrieval_table_has_one_line_per_model_and_one_column_per_k():
    def recall_row(method, k, seed, value):
        return {**_shared_row("lesson_r", method, seed, value, metric=f"recall@{k} (%)"), "protocol": None,
                "setting": "unseen digits"}
    rows = [recall_row("RKD", k, seed, v + k) for k in (1, 8) for seed, v in ((0, 80.0), (1, 82.0))]
    rows += [recall_row("teacher", 1, None, 90.0), _shared_row("lesson_r", "CE + KD", 0, 95.0)]
    table = results.render_retrieval_table(rows)
    assert "| method | R@1 (%) | R@8 (%) |" in table
    assert "| RKD | 82.00 ± 1.41 (2 seeds) | 89.00 ± 1.41 (2 seeds) |" in table
    assert "| teacher | 90.00 | - |" in table  # one run, no recall@8 recorded
    assert "CE + KD" not in table
    assert results.render_retrieval_table(rows[-1:]) == ""
