"""The cross-method benchmark page: every method of :data:`kdtools.run.RUNNER_METHODS` on one protocol, from the
JSON records ``python -m kdtools.run`` writes.

    python -m kdtools.benchmark run [--seeds 0 1 2] [--methods kd dkd] [--workers 2]   # train (resumes), then render
    python -m kdtools.benchmark render [--records results/runs] [--out book/benchmark.md]

A record is one run, ``<records>/<dataset>/<method>-seed<seed>.json`` (format ``kdtools.run/1``). Only complete
records count. :data:`PAPER_FIGURES` holds what the papers report for the canonical CIFAR-100 pair, with each
figure's epoch convention, so the page can show them beside our numbers without pretending they are comparable.
"""
from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import statistics
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from . import protocol as _protocol
from .run import DATASETS, RECORD_FORMAT, RUNNER_METHODS

#: the syllabus order of the methods: the page's rows follow it, methods outside it come after, by name
SYLLABUS = ("ce", "kd", "dkd", "fitnets", "at", "nst", "fsp", "rkd", "crd", "dml", "ban", "ta")

#: method -> the MyST label of the lesson that teaches it (each notebook's label is its file stem). The
#: student trained with cross-entropy alone is the reference arm the shared protocol starts with, in vanilla KD.
LESSONS: Dict[str, str] = {
    "ce": "vanilla_kd", "kd": "vanilla_kd", "dkd": "decoupled_kd", "fitnets": "fitnets",
    "at": "attention_transfer", "nst": "neuron_selectivity_transfer", "fsp": "fsp", "rkd": "relational_kd",
    "crd": "contrastive_rd", "dml": "deep_mutual_learning", "ban": "born_again", "ta": "teacher_assistant",
}

#: the pair every paper figure below is for (CRD paper, Table 1: teacher 79.42, student 72.50)
PAPER_PAIR = "ResNet32x4 → ResNet8x4 on CIFAR-100"

LAST_EPOCH, BEST_EPOCH, NOT_STATED = "last epoch", "best epoch", "not stated"


@dataclass(frozen=True)
class PaperFigure:
    """A paper's own CIFAR-100 top-1 (%) for :data:`PAPER_PAIR`.

    source: a BibTeX key of ``book/references.bib``; where: the table and row the number is in.
    convention: :data:`LAST_EPOCH`, :data:`BEST_EPOCH` or :data:`NOT_STATED`, the accuracy of which epoch the
        number is; runs: how many runs it is the mean of, ``None`` when we could not confirm it.
    checked: where the convention was confirmed (the authors' code or their own word).
    """

    value: float
    source: str
    where: str
    convention: str
    runs: Optional[int]
    checked: str


# RepDistiller (the CRD code base) reports the last epoch: train_student.py and train_teacher.py both end with
# "The results reported in the paper/README is from the last epoch", and the author confirmed it in
# HobbitLong/RepDistiller#16. Its README repeats Table 1 of the CRD paper. mdistiller's trainer keeps the best
# epoch, and the DKD authors confirmed that the paper reports "the best accuracies among epochs", averaged
# over 5 trials on CIFAR-100 (megvii-research/mdistiller#30).
_CRD_TABLE = "Table 1, resnet32x4/resnet8x4 column"
_CRD_CHECK = "RepDistiller train_student.py (last-epoch comment), issue #16"
PAPER_FIGURES: Dict[str, PaperFigure] = {
    "ce": PaperFigure(72.50, "tian2020contrastive", f"{_CRD_TABLE}, Student row", LAST_EPOCH, None,
                      "RepDistiller train_teacher.py (last-epoch comment)"),
    "kd": PaperFigure(73.33, "tian2020contrastive", f"{_CRD_TABLE}, KD row", LAST_EPOCH, None, _CRD_CHECK),
    "dkd": PaperFigure(76.32, "zhao2022decoupled", "CIFAR-100 same-architecture table, ResNet32x4/ResNet8x4 "
                       "column, DKD row (also the mdistiller README)", BEST_EPOCH, 5,
                       "mdistiller trainer (keeps the best epoch), issue #30"),
    "fitnets": PaperFigure(73.50, "tian2020contrastive", f"{_CRD_TABLE}, FitNet row", LAST_EPOCH, None, _CRD_CHECK),
    "at": PaperFigure(73.44, "tian2020contrastive", f"{_CRD_TABLE}, AT row", LAST_EPOCH, None, _CRD_CHECK),
    "nst": PaperFigure(73.30, "tian2020contrastive", f"{_CRD_TABLE}, NST row", LAST_EPOCH, None, _CRD_CHECK),
    "fsp": PaperFigure(72.62, "tian2020contrastive", f"{_CRD_TABLE}, FSP row", LAST_EPOCH, None, _CRD_CHECK),
    "rkd": PaperFigure(71.90, "tian2020contrastive", f"{_CRD_TABLE}, RKD row", LAST_EPOCH, None, _CRD_CHECK),
    "crd": PaperFigure(75.51, "tian2020contrastive", f"{_CRD_TABLE}, CRD row", LAST_EPOCH, None, _CRD_CHECK),
    # DML, BAN and TA report no result for this pair in their papers: no figure.
}

# ----------------------------------------------------------------------------------------------- records
_REQUIRED = {"format": str, "method": str, "arm": str, "dataset": str, "seed": int, "complete": bool}
_REQUIRED_COMPLETE = {"config": dict, "test_acc": list, "epoch_seconds": list, "last_acc": numbers.Real,
                      "best_acc": numbers.Real, "stage_seconds": numbers.Real, "wall_seconds": numbers.Real,
                      "extra_parameters": int}


def _is(value, kind) -> bool:
    # bool is an int in Python: a seed of True is malformed, and so is a count of False
    return isinstance(value, kind) and not (kind in (int, numbers.Real) and isinstance(value, bool))


def read_record(path: Path) -> dict:
    """One run's record, checked; a ValueError names the file and what is wrong with it."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable JSON record ({error})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: a record is a JSON object, got {type(record).__name__}")
    if record.get("format") != RECORD_FORMAT:
        raise ValueError(f"{path}: format must be {RECORD_FORMAT!r}, got {record.get('format')!r}")
    required = dict(_REQUIRED, **(_REQUIRED_COMPLETE if record.get("complete") is True else {}))
    for key, kind in required.items():
        if key not in record:
            raise ValueError(f"{path}: missing key {key!r}")
        if not _is(record[key], kind):
            raise ValueError(f"{path}: {key!r} must be {getattr(kind, '__name__', kind)}, "
                             f"got {record[key]!r}")
    if record["complete"]:
        for key in ("test_acc", "epoch_seconds"):
            values = record[key]
            if not values or not all(_is(v, numbers.Real) and math.isfinite(v) for v in values):
                raise ValueError(f"{path}: {key!r} must be a non-empty list of finite numbers, got {values!r}")
    return record


def collect(root, skipped: Optional[List[str]] = None) -> Dict[str, Dict[str, List[dict]]]:
    """``{dataset: {method: [record, ...]}}`` of the complete records under ``root`` (records sorted by seed).

    Incomplete records (a run still going, or killed) are left out and, when ``skipped`` is a list, named in it.
    A malformed record, or two records of the same dataset, method and seed, raise a ValueError naming the files.
    """
    root = Path(root)
    found: Dict[str, Dict[str, List[dict]]] = {}
    origin: Dict[tuple, Path] = {}
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        record = read_record(path)
        if not record["complete"]:
            if skipped is not None:
                skipped.append(str(path))
            continue
        key = (record["dataset"], record["method"], record["seed"])
        if key in origin:
            raise ValueError(f"{path} and {origin[key]} are both {key[1]} on {key[0]} with seed {key[2]}")
        origin[key] = path
        found.setdefault(record["dataset"], {}).setdefault(record["method"], []).append(record)
    for methods in found.values():
        for records in methods.values():
            records.sort(key=lambda r: r["seed"])
    return found


# ----------------------------------------------------------------------------------------------- numbers
@dataclass(frozen=True)
class MethodSummary:
    """One method over its seeds. Means and sample stds (ddof = 1, 0 for one seed) like
    :func:`kdtools.protocol.summarize`; seconds are per epoch (mean over seeds of each run's mean)."""

    method: str
    arm: str
    seeds: tuple
    last_mean: float
    last_std: float
    best_mean: float
    best_std: float
    seconds_per_epoch: float
    times_ce: Optional[float]       # seconds_per_epoch / CE's; None without a CE row
    extra_parameters: int
    stage_seconds: float            # mean over seeds
    wall_seconds: float             # sum over seeds

    @property
    def n(self) -> int:
        return len(self.seeds)

    def protocol_summary(self) -> "_protocol.Summary":
        return _protocol.Summary(self.last_mean, self.last_std, self.best_mean, self.best_std, self.n)


def _mean_std(values: Sequence[float]):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(records: Mapping[str, Sequence[dict]]) -> Dict[str, MethodSummary]:
    """Per method of one dataset's ``{method: [record, ...]}``: a :class:`MethodSummary`, in :func:`method_order`."""
    raw = {}
    for method, runs in records.items():
        if not runs:
            raise ValueError(f"records[{method!r}] is empty: no run to summarise")
        arms = sorted({r["arm"] for r in runs})
        if len(arms) > 1:
            raise ValueError(f"the runs of {method!r} trained different arms: {arms}")
        last = _mean_std([r["last_acc"] for r in runs])
        best = _mean_std([r["best_acc"] for r in runs])
        seconds = statistics.fmean(statistics.fmean(r["epoch_seconds"]) for r in runs)
        raw[method] = (arms[0], tuple(r["seed"] for r in runs), last, best, seconds,
                       max(r["extra_parameters"] for r in runs), statistics.fmean(r["stage_seconds"] for r in runs),
                       sum(r["wall_seconds"] for r in runs))
    ce_seconds = raw["ce"][4] if "ce" in raw else None
    return {method: MethodSummary(method, arm, seeds, *last, *best, seconds,
                                  seconds / ce_seconds if ce_seconds else None, extra, stage, wall)
            for method, (arm, seeds, last, best, seconds, extra, stage, wall)
            in ((m, raw[m]) for m in method_order(raw))}


def method_order(methods: Iterable[str]) -> List[str]:
    """``methods`` in the syllabus order (:data:`SYLLABUS`), any others after them by name."""
    methods = set(methods)
    return [m for m in SYLLABUS if m in methods] + sorted(methods - set(SYLLABUS))


def comparisons(summaries: Mapping[str, MethodSummary], baselines: Sequence[str] = ("ce", "kd")
                ) -> List["_protocol.Comparison"]:
    """Every method against each baseline present (not against itself), by :func:`kdtools.protocol.compare`:
    a difference is clear when it exceeds ``2·sqrt(s_a²/n_a + s_b²/n_b)`` at both the last and the best
    epoch, in the same direction. Methods with fewer than 2 seeds are left out."""
    usable = {m: s.protocol_summary() for m, s in summaries.items() if s.n >= 2}
    pairs = []
    for baseline in (b for b in baselines if b in usable):
        pairs += [(method, baseline) for method in usable
                  if method != baseline and (baseline, method) not in pairs]  # kd − ce once, not ce − kd again
    return [_protocol.compare(method, baseline, usable) for method, baseline in pairs]


# ----------------------------------------------------------------------------------------------- the page
HEADER = "<!-- generated by `python -m kdtools.benchmark render` from the records of `python -m kdtools.run`; " \
         "do not edit -->"
_DATASET_TITLES = {"mnist": "MNIST", "cifar100": "CIFAR-100"}
_CONVENTION_SHORT = {LAST_EPOCH: "last", BEST_EPOCH: "best", NOT_STATED: "not stated"}
_SETTING_KEYS = ("teacher", "student", "train_images", "test_images", "epochs", "global_batch", "world_size",
                 "device", "threads")


def _cell(text) -> str:
    return "—" if text is None or text == "" else str(text).replace("|", "\\|")


def _method_link(method: str) -> str:
    return f"{{ref}}`{method} <{LESSONS[method]}>`" if method in LESSONS else f"`{method}`"


def _pm(mean: float, std: float) -> str:
    return f"{mean:.1f} ± {std:.1f}"


def _paper_cell(method: str) -> str:
    figure = PAPER_FIGURES.get(method)
    if figure is None:
        return "—"
    return f"{figure.value:.2f} ({_CONVENTION_SHORT[figure.convention]}, {{cite}}`{figure.source}`)"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _setting(record: dict, key: str) -> str:
    """A setting of a run, as JSON text (so that lists and None compare and count like any value)."""
    return json.dumps(record["config"].get(key, record.get(key)))


def _setting_lines(records: Mapping[str, Sequence[dict]]) -> List[str]:
    """The settings most runs share, and the methods whose runs differ from them (e.g. FSP's teacher)."""
    runs = [r for method_runs in records.values() for r in method_runs]
    common = {}
    for key in _SETTING_KEYS:
        values = [_setting(r, key) for r in runs]
        common[key] = max(dict.fromkeys(values), key=values.count)  # ties: the first run's value
    shown = ", ".join(f"{key.replace('_', ' ')} {json.loads(value)}" for key, value in common.items()
                      if json.loads(value) is not None)
    lines = [f"These runs: {shown}.", ""]
    for method in method_order(records):
        differs = sorted({f"{key.replace('_', ' ')} {json.loads(_setting(r, key))}" for r in records[method]
                          for key in _SETTING_KEYS if _setting(r, key) != common[key]})
        if differs:
            lines += [f"`{method}` differs: {', '.join(differs)}.", ""]
    return lines


def _table(summaries: Mapping[str, MethodSummary]) -> List[str]:
    lines = ["| method | arm | n | last | best | +par | ×CE | CIFAR-100 paper |", "|---|---|---|---|---|---|---|---|"]
    for s in summaries.values():
        cells = [_method_link(s.method), _cell(s.arm), s.n, _pm(s.last_mean, s.last_std),
                 _pm(s.best_mean, s.best_std), f"{s.extra_parameters:,}",
                 "—" if s.times_ce is None else f"{s.times_ce:.2f}", _paper_cell(s.method)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def _spread_lines(summaries: Mapping[str, MethodSummary]) -> List[str]:
    found = comparisons(summaries)
    if not found:
        return ["No method has a baseline (`ce` or `kd`) with at least 2 seeds to be compared with."]
    lines = []
    for baseline in dict.fromkeys(c.b for c in found):
        by_verdict = {}
        for c in found:
            if c.b == baseline:
                by_verdict.setdefault(c.verdict, []).append(f"`{c.a}`")
        lines.append(f"Against `{baseline}`: " + "; ".join(
            f"{verdict}: {', '.join(methods)}" for verdict, methods in sorted(by_verdict.items())) + ".")
        lines.append("")
    for c in found:
        lines.append(f"- `{c.a}` − `{c.b}`: {c.last_diff:+.2f} last (margin {c.last_margin:.2f}), "
                     f"{c.best_diff:+.2f} best (margin {c.best_margin:.2f}): {c.verdict}.")
    return lines


def _seed_counts(summaries: Mapping[str, MethodSummary]) -> str:
    counts = sorted({s.n for s in summaries.values()})
    return f"{' to '.join(map(str, counts[::max(1, len(counts) - 1)]))} seed{'s' if counts[-1] > 1 else ''} per method"


def _dataset_section(dataset: str, records: Mapping[str, Sequence[dict]], results_dir=None) -> List[str]:
    summaries = summarize(records)
    missing = [m for m in method_order(RUNNER_METHODS) if m not in summaries]
    without_figure = [m for m in summaries if m not in PAPER_FIGURES]
    stages = [s for s in summaries.values() if s.stage_seconds > 0]
    wall = sum(s.wall_seconds for s in summaries.values())
    out = [f"## {_DATASET_TITLES.get(dataset, dataset)}", "", *_setting_lines(records),
           "```{table} " + f"Test accuracy (%) of every method on {_DATASET_TITLES.get(dataset, dataset)}, "
           f"mean ± std over seeds", ":name: benchmark-" + dataset, "", *_table(summaries), "```", "",
           "n: seeds. last, best: test accuracy (%) at the last epoch and at each run's best epoch, "
           "mean ± sample std over the seeds. +par: trainable parameters outside the student (regressors, "
           "embedding heads). ×CE: seconds per epoch divided by `ce`'s. CIFAR-100 paper: the paper's own top-1 "
           f"(%) for {PAPER_PAIR}, and whether it is a last- or best-epoch figure; — where the paper reports none.",
           ""]
    if without_figure:
        out += [f"No paper figure for {PAPER_PAIR}: " + ", ".join(f"`{m}`" for m in without_figure) + ".", ""]
    if missing:
        out += ["No complete runs yet: " + ", ".join(f"`{m}`" for m in missing) + ".", ""]
    out += [f"The runs on this page took {_duration(wall)} in all: the sum of the runs' wall times "
            "(stages, epochs and evaluation), as if run one after another in a single process.", ""]
    if stages:
        out += ["Time outside the epochs, per run (stages, the teacher's cached logits, set-up): " + ", ".join(
            f"`{s.method}` {s.stage_seconds:.0f} s" for s in stages) + ".", ""]
    if dataset == "mnist" and results_dir is not None:
        out += _agreement_lines(records, results_dir)
    out += ["### Which differences lie inside the seeds' spread", "",
            "Each method minus `ce` and minus `kd` (points). A difference is clear when it exceeds its margin, "
            "2·sqrt(s_a²/n_a + s_b²/n_b) from the seeds' sample stds, at both the last and the best epoch and in "
            "the same direction (`kdtools.protocol.compare`); otherwise it is inside the seeds' spread. With "
            f"{_seed_counts(summaries)} this is a rough screen, not a significance test.", "",
            *_spread_lines(summaries), ""]
    return out


@dataclass(frozen=True)
class LessonMatch:
    """A run of the benchmark that a lesson also recorded (same arm, seed, student, epochs and test set)."""

    lesson: str
    method: str
    seed: int
    lesson_last: float
    runner_last: float

    @property
    def equal(self) -> bool:
        return self.lesson_last == self.runner_last


def lesson_matches(records: Mapping[str, Sequence[dict]], results_dir) -> List[LessonMatch]:
    """Every MNIST run of ``records`` that a lesson's ``results/<lesson>.json`` holds too: a full-mode row of the
    shared protocol with the run's arm, seed, student, epochs and test-set size. The lessons train through
    :func:`kdtools.protocol.run_jobs` and the runner through ``python -m kdtools.run``: one registry, so the
    last-epoch accuracies must be equal."""
    by_key = {(r["arm"], r["seed"], r["config"]["student"], r["config"]["epochs"], r["config"]["test_images"]): r
              for method_records in records.values() for r in method_records}
    matches = []
    for path in sorted(Path(results_dir).glob("*.json")):
        for row in json.loads(path.read_text()).get("rows", []):
            if (row.get("metric") != "test accuracy, last epoch (%)" or row.get("mode") != "full"
                    or row.get("protocol") != "shared"):
                continue
            record = by_key.get((row.get("method"), row.get("seed"), row.get("student"), row.get("epochs"),
                                 row.get("test_images")))
            if record is not None:
                matches.append(LessonMatch(path.stem, record["method"], record["seed"], row["value"],
                                           record["last_acc"]))
    return matches


def _agreement_lines(records: Mapping[str, Sequence[dict]], results_dir) -> List[str]:
    matches = lesson_matches(records, results_dir)
    if not matches:
        return []
    lessons = sorted({m.lesson for m in matches})
    differ = [m for m in matches if not m.equal]
    verdict = ("every one gives the same last-epoch accuracy" if not differ else
               f"{len(differ)} differ: " + "; ".join(f"`{m.method}` seed {m.seed} in {m.lesson}: {m.lesson_last} "
                                                     f"(lesson) vs {m.runner_last} (runner)" for m in differ))
    return [f"The lessons recorded {len(matches)} of these runs themselves (same arm, seed and protocol, in "
            f"{', '.join(f'`results/{name}.json`' for name in lessons)}): {verdict}. The runner and the "
            "notebooks train through one method registry.", ""]


def _defaults_section() -> List[str]:
    from .run import build_protocol

    cifar = build_protocol("kd", "cifar100", teacher="TEACHER.pt")
    out = ["## What each method runs", "",
           "The arms of `kdtools.run.RUNNER_METHODS`: the authors' setting each reproduces, where ours differs, and "
           "the data sets it runs on. The protocol of each data set:", "",
           f"- `--dataset mnist` (default): {_protocol.SHARED_PROTOCOL.describe()}.",
           f"- `--dataset cifar100`: {cifar.describe()}, SGD with classical momentum {cifar.momentum}, the learning "
           "rate ×0.1 after epochs 150, 180 and 210 (`kdtools.recipes.CRD_CIFAR100`), random crops and flips; "
           "the teacher is a network you train first (`--method ce --student resnet32x4 --save-model`).", "",
           "| method | arm | the authors' setting | where ours differs | data sets |", "|---|---|---|---|---|"]
    for method in method_order(RUNNER_METHODS):
        spec = RUNNER_METHODS[method]
        out.append("| " + " | ".join([_method_link(method), _cell(spec.arm), _cell(spec.authors),
                                      _cell(spec.differs), _cell(", ".join(spec.datasets))]) + " |")
    return out + ["", "## Run it yourself", "",
                  "One method, three seeds, on one process (records in `results/runs/<dataset>/`; a killed run "
                  "continues from its last epoch when started again):", "", "```bash",
                  "python -m kdtools.run --method dkd --seeds 0 1 2", "```", "",
                  "The same code on K processes (GPUs with NCCL, CPUs with Gloo) trains the same global batch; "
                  "the README's *Going further* gives the CIFAR-100 commands and what each method does with "
                  "its cross-batch state:", "", "```bash",
                  "torchrun --nproc_per_node=8 -m kdtools.run --method crd --dataset cifar100 --teacher TEACHER.pt",
                  "```", ""]


def _paper_notes() -> List[str]:
    out = ["## The paper figures", "",
           f"The last column of each table is what the papers report for {PAPER_PAIR} (teacher 79.42, student "
           "72.50 in {cite}`tian2020contrastive`). MNIST numbers and CIFAR-100 numbers are not comparable: a "
           "different dataset, pair, budget and training set. The column shows what the papers report, not a target "
           "for this page. Papers also differ in which epoch they report:", ""]
    for method in method_order(PAPER_FIGURES):
        figure = PAPER_FIGURES[method]
        runs = f"mean of {figure.runs} runs" if figure.runs else "number of runs not checked"
        out.append(f"- `{method}` {figure.value:.2f}: {figure.where}, {{cite}}`{figure.source}`; "
                   f"{figure.convention}, {runs} (checked: {figure.checked}).")
    return out + [""]


def render(root, results_dir=None) -> str:
    """The benchmark page (MyST Markdown) from the records under ``root``; the lessons' results are read from
    ``results_dir`` (default: the folder above ``root``, i.e. ``results/``) for :func:`lesson_matches`."""
    results_dir = Path(root).parent if results_dir is None else results_dir
    skipped: List[str] = []
    found = collect(root, skipped)
    protocol = _protocol.SHARED_PROTOCOL
    out = [HEADER, "", "(benchmark)=", "# Every method on one benchmark", "",
           "This page compares every method of the course under one runner, `python -m kdtools.run`, and one "
           f"protocol, the shared protocol of `kdtools.protocol`: {protocol.describe()}. Each method runs "
           f"{len(protocol.seeds)} seeds; the tables report the last and the best epoch of each run. Regenerate "
           "the page with `make bench`: it trains the runs that have no complete record yet "
           "(`python -m kdtools.benchmark run`) and renders this page from the records in `results/runs/`.", ""]
    if not found:
        out += ["No records yet: run `make bench`.", ""]
    for dataset in [d for d in DATASETS if d in found] + sorted(set(found) - set(DATASETS)):
        out += _dataset_section(dataset, found[dataset], results_dir)
    if skipped:
        out += [f"Left out: {len(skipped)} incomplete record(s), of runs still going or stopped.", ""]
    out += _defaults_section()
    out += ["## Reading the tables", "",
            "- ×CE measures the seconds of one training epoch, including the teacher's forward pass or the look-up "
            "of its logits cached once per run, and the epoch's evaluation on the test subset, on a single thread, "
            "relative to training the student alone.",
            "- Time outside the epochs (FitNets' and FSP's first stage, BAN's and TA's teacher training, the "
            "teacher's logits cached once per run, set-up) is in the runs' wall time, not in ×CE.",
            "- Each row runs the authors' setting. Where a lesson chose other weights on a validation split of the "
            "training images (attention transfer's λ_AT, RKD's λ_D and λ_A, CRD's number of negatives), those arms "
            "are in `kdtools.protocol.METHODS` under their own names, and the lesson compares them.", ""]
    out += _paper_notes()
    return "\n".join(out).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------- the CLI
def _project_root() -> Path:
    candidate = Path(__file__).resolve().parents[1]
    return candidate if (candidate / "_config.yml").is_file() else Path.cwd()


def _pump(method: str, process: subprocess.Popen, lock: threading.Lock) -> int:
    for line in process.stdout:
        with lock:
            print(f"[{method}] {line}", end="", flush=True)
    return process.wait()


def run_methods(methods: Sequence[str], seeds: Sequence[int], records: Path, dataset: str = "mnist",
                epochs: Optional[int] = None, workers: int = 2) -> List[str]:
    """Run ``python -m kdtools.run`` for each method, ``workers`` at a time, one thread each; the runner
    skips seeds that already have a complete record. Returns the methods whose run failed."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    unknown = [m for m in methods if m not in RUNNER_METHODS]
    if unknown:
        raise ValueError(f"methods {unknown} are not in kdtools.run.RUNNER_METHODS: {', '.join(RUNNER_METHODS)}")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    lock = threading.Lock()

    def one(method: str) -> int:
        command = [sys.executable, "-m", "kdtools.run", "--method", method, "--seeds", *map(str, seeds),
                   "--dataset", dataset, "--out", str(Path(records) / dataset), "--threads", "1"]
        if epochs is not None:
            command += ["--epochs", str(epochs)]
        with lock:
            print(" ".join(command[1:]), flush=True)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        return _pump(method, process, lock)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        codes = list(pool.map(one, methods))
    return [method for method, code in zip(methods, codes) if code != 0]


def main(argv: Optional[Sequence[str]] = None) -> int:
    root = _project_root()
    parser = argparse.ArgumentParser(prog="python -m kdtools.benchmark", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render_parser = commands.add_parser("render", help="write the page from the records")
    run_parser = commands.add_parser("run", help="train every method (resuming), then write the page")
    for sub in (render_parser, run_parser):
        sub.add_argument("--records", type=Path, default=root / "results" / "runs")
        sub.add_argument("--out", type=Path, default=root / "book" / "benchmark.md")
    run_parser.add_argument("--seeds", type=int, nargs="+", default=list(_protocol.SHARED_PROTOCOL.seeds))
    run_parser.add_argument("--methods", nargs="+", default=method_order(RUNNER_METHODS))
    run_parser.add_argument("--workers", type=int, default=2)
    run_parser.add_argument("--dataset", default="mnist", choices=DATASETS)
    run_parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    failed: List[str] = []
    if args.command == "run":
        failed = run_methods([m.lower() for m in args.methods], args.seeds, args.records, args.dataset,
                             args.epochs, args.workers)
    args.out.write_text(render(args.records))
    print(f"wrote {args.out}")
    if failed:
        print(f"failed: {', '.join(failed)} (their complete seeds are on the page; re-run to resume)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
