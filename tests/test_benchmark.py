"""The benchmark page generator (kdtools.benchmark) on synthetic run records: no training."""
import json
import re
import statistics

import pytest

from kdtools import benchmark
from kdtools.benchmark import PAPER_FIGURES, SYLLABUS, collect, comparisons, render, summarize
from kdtools.run import RUNNER_METHODS

from conftest import ROOT


def make_record(method, seed, last, best=None, seconds=(1.0, 1.0), *, dataset="mnist", complete=True,
                extra=0, stage=0.0, wall=10.0, **config):
    best = last if best is None else best
    return {"format": "kdtools.run/1", "method": method, "arm": f"arm of {method}", "dataset": dataset,
            "seed": seed, "complete": complete,
            "config": {"teacher": "mnist-cnn-teacher", "student": "cnn-4x1", "epochs": 2, "global_batch": 64,
                       "per_rank_batch": 64, "world_size": 1, "train_images": 1000, "test_images": 2000, **config},
            "test_acc": [best, last], "train_loss": [2.0, 1.0], "term_loss": {"ce": [2.0, 1.0]},
            "epoch_seconds": list(seconds), "last_acc": last, "best_acc": best, "best_epoch": 1,
            "stage_seconds": stage, "wall_seconds": wall, "student_parameters": 1738, "extra_parameters": extra,
            "torch": "2.x", "device": "cpu", "threads": 1, "started": "s", "finished": "f"}


def write(root, record, name=None):
    folder = root / record["dataset"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{record['method']}-seed{record['seed']}.json")
    path.write_text(json.dumps(record))
    return path


def write_runs(root, method, lasts, bests=None, **kwargs):
    for seed, last in enumerate(lasts):
        write(root, make_record(method, seed, last, None if bests is None else bests[seed], **kwargs))


def test_collect_keeps_complete_records_by_dataset_and_method(tmp_path):
    write(tmp_path, make_record("kd", 1, 60.0))
    write(tmp_path, make_record("kd", 0, 61.0))
    write(tmp_path, make_record("kd", 2, 0.0, complete=False))  # still running
    write(tmp_path, make_record("ce", 0, 55.0, dataset="cifar100"))
    skipped = []
    found = collect(tmp_path, skipped)
    assert sorted(found) == ["cifar100", "mnist"]
    assert [r["seed"] for r in found["mnist"]["kd"]] == [0, 1]
    assert len(skipped) == 1 and skipped[0].endswith("kd-seed2.json")
    assert collect(tmp_path / "nothing here") == {}


@pytest.mark.parametrize("damage", [
    lambda r: "{not json",
    lambda r: json.dumps([r]),
    lambda r: json.dumps({**r, "format": "kdtools.run/0"}),
    lambda r: json.dumps({k: v for k, v in r.items() if k != "best_acc"}),
    lambda r: json.dumps({**r, "seed": "0"}),
    lambda r: json.dumps({**r, "complete": "yes"}),
    lambda r: json.dumps({**r, "test_acc": []}),
    lambda r: json.dumps({**r, "epoch_seconds": [1.0, None]}),
])
def test_a_malformed_record_is_a_value_error_naming_its_file(tmp_path, damage):
    write(tmp_path, make_record("ce", 0, 50.0))
    bad = tmp_path / "mnist" / "dkd-seed0.json"
    bad.write_text(damage(make_record("dkd", 0, 50.0)))
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        collect(tmp_path)


def test_two_records_of_one_run_are_rejected(tmp_path):
    write(tmp_path, make_record("kd", 0, 60.0))
    copy = write(tmp_path, make_record("kd", 0, 61.0), name="kd-seed0-copy.json")
    with pytest.raises(ValueError, match=re.escape(str(copy))):
        collect(tmp_path)


def test_summary_numbers_by_hand(tmp_path):
    write_runs(tmp_path, "ce", [50.0, 52.0, 54.0], [51.0, 53.0, 58.0], seconds=(1.0, 3.0), wall=20.0)
    write_runs(tmp_path, "fitnets", [60.0, 61.0, 62.0], seconds=(5.0, 5.0), extra=320, stage=12.0, wall=30.0)
    summary = summarize(collect(tmp_path)["mnist"])
    ce, fitnets = summary["ce"], summary["fitnets"]
    # mean 52, sample std sqrt(((-2)² + 0 + 2²) / 2) = 2; best: mean 54, std sqrt((9 + 1 + 16) / 2) = sqrt(13)
    assert (ce.n, ce.last_mean, ce.last_std, ce.best_mean) == (3, 52.0, 2.0, 54.0)
    assert ce.best_std == pytest.approx(13 ** 0.5)
    assert ce.last_std == statistics.stdev([50.0, 52.0, 54.0])  # ddof = 1, like kdtools.protocol.summarize
    assert (fitnets.last_mean, fitnets.last_std) == (61.0, 1.0)
    assert ce.seconds_per_epoch == 2.0 and fitnets.seconds_per_epoch == 5.0
    assert ce.times_ce == 1.0 and fitnets.times_ce == 2.5
    assert (fitnets.extra_parameters, fitnets.stage_seconds, fitnets.wall_seconds) == (320, 12.0, 90.0)
    assert list(summary) == ["ce", "fitnets"]


def test_one_seed_has_std_zero_and_no_ce_means_no_ratio(tmp_path):
    write_runs(tmp_path, "kd", [60.0])
    kd = summarize(collect(tmp_path)["mnist"])["kd"]
    assert (kd.n, kd.last_std, kd.best_std, kd.times_ce) == (1, 0.0, 0.0, None)


def test_rows_follow_the_syllabus_then_other_methods(tmp_path):
    names = list(reversed(SYLLABUS)) + ["zz-new", "aa-new"]
    for method in names:
        write_runs(tmp_path, method, [50.0, 51.0, 52.0])
    page = render(tmp_path)
    table = page.split("| method | arm |")[1].split("```")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    shown = [re.match(r"\| (?:\{ref\}`(\S+) <\w+>`|`(\S+)`) \|", row).group(1, 2) for row in rows]
    assert [a or b for a, b in shown] == list(SYLLABUS) + ["aa-new", "zz-new"]
    for row, method in zip(rows, SYLLABUS):
        figure = PAPER_FIGURES.get(method)
        if figure is None:
            assert row.rstrip().endswith("| — |"), row  # DML, BAN, TA: no figure for the pair
        else:
            convention = {"last epoch": "last", "best epoch": "best"}[figure.convention]
            assert row.rstrip().endswith(f"| {figure.value:.2f} ({convention}, {{cite}}`{figure.source}`) |"), row
    assert "No paper figure for ResNet32x4 → ResNet8x4 on CIFAR-100: `dml`, `ban`, `ta`, `aa-new`, `zz-new`." in page


def test_the_table_cells_show_the_numbers(tmp_path):
    write_runs(tmp_path, "ce", [50.0, 52.0, 54.0], seconds=(2.0, 2.0))
    write_runs(tmp_path, "dkd", [60.0, 61.0, 62.0], [61.0, 62.0, 63.0], seconds=(3.0, 3.0), extra=1234)
    page = render(tmp_path)
    assert ("| {ref}`dkd <decoupled_kd>` | arm of dkd | 3 | 61.0 ± 1.0 | 62.0 ± 1.0 | 1,234 | 1.50 | "
            "76.32 (best, {cite}`zhao2022decoupled`) |") in page
    assert "| {ref}`ce <vanilla_kd>` | arm of ce | 3 | 52.0 ± 2.0 | 52.0 ± 2.0 | 0 | 1.00 | 72.50 (last, " in page
    assert "No complete runs yet: `kd`, `fitnets`" in page


def test_paper_figures_the_brief_names():
    assert (PAPER_FIGURES["kd"].value, PAPER_FIGURES["kd"].convention) == (73.33, "last epoch")
    assert (PAPER_FIGURES["crd"].value, PAPER_FIGURES["crd"].convention) == (75.51, "last epoch")
    assert (PAPER_FIGURES["dkd"].value, PAPER_FIGURES["dkd"].convention) == (76.32, "best epoch")
    assert not {"dml", "ban", "ta"} & set(PAPER_FIGURES)
    assert set(PAPER_FIGURES) <= set(RUNNER_METHODS)


def test_every_cite_key_and_lesson_label_exists(tmp_path):
    for method in SYLLABUS:
        write_runs(tmp_path, method, [50.0, 51.0, 52.0])
    page = render(tmp_path)
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"^@\w+\{([^,]+),", bib, re.M))
    cited = set(re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", page))
    assert cited >= {f.source for f in PAPER_FIGURES.values()} and cited <= keys, cited - keys
    labels = {m for nb in ROOT.glob("notebooks/*/*.ipynb") for cell in json.loads(nb.read_text())["cells"]
              for m in re.findall(r"^\(([\w-]+)\)=", "".join(cell["source"]), re.M)}
    linked = set(re.findall(r"\{ref\}`[^<`]+<([\w-]+)>`", page))
    assert linked == set(benchmark.LESSONS.values()) and linked <= labels, linked - labels


def test_spread_sentences_follow_the_numbers(tmp_path):
    write_runs(tmp_path, "ce", [50.0, 51.0, 52.0])                       # mean 51, std 1
    write_runs(tmp_path, "kd", [51.0, 52.0, 53.0])                       # +1: margin 2·sqrt(2/3) ≈ 1.63
    write_runs(tmp_path, "dkd", [55.0, 56.0, 57.0])                      # +5 over ce, +4 over kd
    summaries = summarize(collect(tmp_path)["mnist"])
    verdicts = {(c.a, c.b): c.verdict for c in comparisons(summaries)}
    assert verdicts == {("kd", "ce"): "inside the seeds' spread", ("dkd", "ce"): "clearly better",
                        ("dkd", "kd"): "clearly better"}
    page = render(tmp_path)
    margin = 2 * (2 / 3) ** 0.5
    assert (f"- `kd` − `ce`: +1.00 last (margin {margin:.2f}), +1.00 best (margin {margin:.2f}): "
            "inside the seeds' spread.") in page
    assert "Against `ce`: clearly better: `dkd`; inside the seeds' spread: `kd`." in page
    assert "Against `kd`: clearly better: `dkd`." in page
    assert f"- `dkd` − `kd`: +4.00 last (margin {margin:.2f}), +4.00 best (margin {margin:.2f}): clearly better." \
        in page


def test_a_method_with_one_seed_is_not_compared(tmp_path):
    write_runs(tmp_path, "ce", [50.0, 51.0, 52.0])
    write_runs(tmp_path, "kd", [60.0])
    assert comparisons(summarize(collect(tmp_path)["mnist"])) == []
    assert "No method has a baseline" in render(tmp_path)


def test_settings_that_differ_are_named(tmp_path):
    write_runs(tmp_path, "ce", [50.0, 51.0])
    write_runs(tmp_path, "kd", [50.0, 51.0])
    write_runs(tmp_path, "fsp", [50.0, 51.0], teacher="mnist-cnn-4x3-teacher", stage=7.0, wall=60.0)
    page = render(tmp_path)
    assert "These runs: teacher mnist-cnn-teacher, student cnn-4x1, train images 1000, test images 2000" in page
    assert "`fsp` differs: teacher mnist-cnn-4x3-teacher." in page
    assert "Time outside the epochs, per run (stages, the teacher's cached logits, set-up): `fsp` 7 s." in page
    assert "took 3 min in all" in page  # 4 runs of 10 s + 2 of 60 s = 160 s


def test_the_page_without_records_and_the_committed_page(tmp_path):
    page = render(tmp_path)
    assert page.startswith(benchmark.HEADER) and "(benchmark)=\n# " in page
    assert "No records yet: run `make bench`." in page
    assert "## What each method runs" in page and all(f"`{m} <" in page for m in RUNNER_METHODS)
    committed = (ROOT / "book" / "benchmark.md").read_text()
    assert committed.startswith(benchmark.HEADER) and "(benchmark)=" in committed


def test_render_cli_writes_the_page(tmp_path):
    write_runs(tmp_path / "runs", "ce", [50.0, 51.0])
    out = tmp_path / "page.md"
    assert benchmark.main(["render", "--records", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert out.read_text() == render(tmp_path / "runs")


def test_run_rejects_unknown_methods_and_bad_workers(tmp_path):
    with pytest.raises(ValueError, match="not-a-method"):
        benchmark.run_methods(["not-a-method"], [0], tmp_path)
    with pytest.raises(ValueError, match="workers"):
        benchmark.run_methods(["ce"], [0], tmp_path, workers=0)


def test_run_calls_the_runner_per_method_then_renders(tmp_path, monkeypatch):
    calls = []

    class FakeRunner:
        def __init__(self, command, **kwargs):
            calls.append(command)
            self.method = command[command.index("--method") + 1]
            self.stdout = iter([f"trained {self.method}\n"])

        def wait(self):
            return 1 if self.method == "at" else 0

    monkeypatch.setattr(benchmark.subprocess, "Popen", FakeRunner)
    out = tmp_path / "page.md"
    code = benchmark.main(["run", "--methods", "ce", "AT", "--seeds", "0", "1", "--epochs", "3",
                           "--records", str(tmp_path / "runs"), "--out", str(out)])
    assert code == 1 and out.read_text().count("No records yet") == 1  # the failure is reported, the page written
    assert sorted(c[c.index("--method") + 1] for c in calls) == ["at", "ce"]
    ce = next(c for c in calls if "ce" in c)
    assert ce[1:] == ["-m", "kdtools.run", "--method", "ce", "--seeds", "0", "1", "--dataset", "mnist",
                      "--out", str(tmp_path / "runs" / "mnist"), "--threads", "1", "--epochs", "3"]


def _lesson_rows(path, rows):
    path.write_text(json.dumps({"mode": "full", "notebook": "x", "rows": rows}))


def _row(method, seed, value, **fields):
    return {"metric": "test accuracy, last epoch (%)", "mode": "full", "protocol": "shared", "method": method,
            "seed": seed, "student": "cnn-4x1", "epochs": 2, "test_images": 2000, "value": value, **fields}


def test_runs_a_lesson_recorded_too_are_compared_with_it(tmp_path):
    runs = tmp_path / "runs"
    write_runs(runs, "kd", [90.0, 91.0])
    _lesson_rows(tmp_path / "lesson_a.json", [
        _row("arm of kd", 0, 90.0), _row("arm of kd", 1, 91.5),
        _row("arm of kd", 0, 50.0, mode="smoke"), _row("arm of kd", 0, 60.0, student="cnn-8x1"),
        _row("arm of kd", 0, 70.0, epochs=3), _row("arm of kd", 0, 80.0, metric="test accuracy, best epoch (%)")])
    found = collect(runs)["mnist"]
    matches = benchmark.lesson_matches(found, tmp_path)
    assert [(m.lesson, m.seed, m.lesson_last, m.runner_last, m.equal) for m in matches] == [
        ("lesson_a", 0, 90.0, 90.0, True), ("lesson_a", 1, 91.5, 91.0, False)]
    page = render(runs)
    assert "The lessons recorded 2 of these runs themselves" in page
    assert "1 differ: `kd` seed 1 in lesson_a: 91.5 (lesson) vs 91.0 (runner)" in page


def test_the_committed_records_equal_what_the_lessons_recorded():
    # the runner and the notebooks share one registry: where both trained the same run, the numbers are equal
    records = collect(ROOT / "results" / "runs")
    if "mnist" not in records:
        pytest.skip("no benchmark records committed")
    matches = benchmark.lesson_matches(records["mnist"], ROOT / "results")
    assert len(matches) >= 30 and all(m.equal for m in matches), [m for m in matches if not m.equal]


def test_the_committed_page_is_the_rendering_of_the_committed_records():
    committed = (ROOT / "book" / "benchmark.md").read_text()
    assert committed == render(ROOT / "results" / "runs"), (
        "book/benchmark.md is stale: run `python -m kdtools.benchmark render` and commit it")
