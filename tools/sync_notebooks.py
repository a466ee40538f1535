"""Generate the first cells of every notebook from `_config.yml`: a Colab badge and an install cell.

The badge opens the notebook's student copy (``student/...``, written by ``tools/make_student.py``): a
reader who clicks it gets the exercises without their solutions. The instructor copy stays in the
repository (``notebooks/...``).

The repository address lives only in `_config.yml` (``repository.url`` and ``branch``). Run
``python tools/sync_notebooks.py`` after changing it or adding a notebook; ``--check`` exits 1
and names the notebooks whose header cells are out of sync (the test suite runs it).

It also keeps tooling out of the reader's sight: an nbval comment marker such as
``# NBVAL_CHECK_OUTPUT`` becomes the equivalent cell tag (``nbval-check-output``), and a cell that
records results (``.record(...)``) is folded by the book: ``hide-cell`` when it only records,
``hide-input`` when it also does other work (it is then named, so that its author can split it).
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path
from typing import List, Optional

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
HEADER_KEY = "kd_header"  # cell metadata marking a generated cell: {"kd_header": "badge" | "install"}
_NBVAL_MARKER = re.compile(r"^[ \t]*#[ \t]*(NBVAL_[A-Z_]+)[ \t]*$")
_RECORDS = re.compile(r"\.record\(|\bRecorder\(")
RECORDING_TAG = "hide-cell"  # the book folds a recording cell, its code and its "recorded N rows" output
MIXED_TAG = "hide-input"  # a cell that records and does other work: its code is folded, its output shown
_RECORDING_CALLS = {"record", "forget"}
_PLAIN_CALLS = {"dict", "list", "tuple", "set", "len", "float", "int", "str", "round", "sum", "min", "max", "abs",
                "sorted", "zip", "range", "enumerate", "getattr",
                # methods of strings and dicts
                "startswith", "endswith", "format", "join", "lower", "upper", "replace", "strip", "items", "keys",
                "values", "get"}
INSTRUCTOR_DIR, STUDENT_DIR = "notebooks", "student"  # lessons with solutions; their generated student copies


def repository(config_path: Path = ROOT / "_config.yml") -> tuple[str, str]:
    config = yaml.safe_load(config_path.read_text())
    repo = config.get("repository") or {}
    url, branch = repo.get("url"), repo.get("branch", "main")
    if not url or not url.startswith("https://github.com/"):
        raise ValueError(f"_config.yml repository.url must be a https://github.com/OWNER/NAME address, got {url!r}")
    return url.rstrip("/"), branch


def launch_path(rel: str) -> str:
    """The notebook that Colab should open for ``rel`` (a path relative to the repository): the student copy
    ``student/...`` of a lesson ``notebooks/...`` (``tools/make_student.py`` writes one for every lesson),
    so that no link of the book opens the solutions; any other path is returned unchanged."""
    head, _, rest = rel.partition("/")
    return f"{STUDENT_DIR}/{rest}" if head == INSTRUCTOR_DIR and rest else rel


def colab_url(notebook_path: Path, url: str, branch: str, root: Path = ROOT) -> str:
    """The Colab address that opens ``notebook_path`` (its student copy, for a lesson) from the repository."""
    rel = launch_path(notebook_path.resolve().relative_to(root.resolve()).as_posix())
    owner_repo = url.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/{rel}"


def header_cells(notebook_path: Path, url: str, branch: str, root: Path = ROOT) -> List[dict]:
    colab = colab_url(notebook_path, url, branch, root)
    rel_parts = notebook_path.resolve().relative_to(root.resolve()).parts
    # Module 6 needs the optional packages (mAP, the CMU dictionary, edit distances) of kdtools[applications]
    package = "kdtools[applications]" if "06_applications" in rel_parts else "kdtools"
    badge = {
        "cell_type": "markdown",
        "metadata": {HEADER_KEY: "badge"},
        "source": f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab})",
    }
    install = {
        "cell_type": "code",
        "metadata": {HEADER_KEY: "install", "tags": ["remove-cell"]},
        "source": "\n".join([
            "# In Colab, install kdtools from the course repository; locally `make lab` already did.",
            "import sys",
            "if \"google.colab\" in sys.modules:",
            f"    %pip install --quiet \"{package} @ git+{url}@{branch}\"",
        ]),
        "execution_count": None,
        "outputs": [],
    }
    return [badge, install]


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _mentions_recorder(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and "recorder" in n.id.lower() for n in ast.walk(node))


def _is_recording(node: ast.stmt) -> bool:
    """A statement that records results: a ``.record(...)``/``.forget(...)`` call, ``x = Recorder(...)``, a
    ``print`` about the recorder, or a loop/branch made only of those and plain bookkeeping."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        name = _call_name(node.value)
        return name in _RECORDING_CALLS or name == "Recorder" or (name == "print" and _mentions_recorder(node))
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Call):
        if _call_name(node.value) == "Recorder":
            return True
    if isinstance(node, (ast.For, ast.If)):
        body = node.body + node.orelse
        return any(_is_recording(n) for n in body) and all(_is_recording(n) or _is_bookkeeping(n) for n in body)
    return False


def _is_bookkeeping(node: ast.stmt) -> bool:
    """Names, constants, look-ups and formatting for the record calls: no computation of its own."""
    if isinstance(node, (ast.Continue, ast.Pass, ast.Import, ast.ImportFrom)):
        return True
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
        calls = [n for n in ast.walk(node.value) if isinstance(n, ast.Call)]
        return all(_call_name(c) in _PLAIN_CALLS for c in calls)
    return False


def recording_kind(code: str) -> Optional[str]:
    """``"only"`` for a cell that only records results (and sets up their names), ``"mixed"`` for a cell
    that records and also does other work, ``None`` for a cell that records nothing."""
    if not re.search(r"\.record\(", code):
        return None
    try:
        tree = ast.parse("\n".join("pass" if line.lstrip().startswith(("%", "!")) else line
                                    for line in code.split("\n")))
    except SyntaxError:
        return "mixed"
    statements = tree.body
    if any(_is_recording(n) for n in statements) and all(_is_recording(n) or _is_bookkeeping(n) for n in statements):
        return "only"
    return "mixed"


def reader_facing(cell: dict) -> dict:
    """``cell`` with nbval comment markers turned into tags and recording code folded (a new dict).

    A cell that only records results is folded whole (``hide-cell``: code and "recorded N rows" output);
    a cell that also computes something keeps its output in view and folds its code (``hide-input``);
    :func:`mixed_recording_cells` lists those, to be split. A ``hide-input`` that an earlier version of
    this tool gave to a cell that merely creates a ``Recorder`` is taken away again.
    """
    if cell.get("cell_type") != "code":
        return cell
    lines = _source(cell).split("\n")
    markers = [m.group(1) for m in map(_NBVAL_MARKER.match, lines) if m]
    wanted = list(cell.get("metadata", {}).get("tags", []))
    wanted += [m.lower().replace("_", "-") for m in markers]
    kind = recording_kind(_source(cell))
    if kind == "only":
        wanted = [t for t in wanted if t != MIXED_TAG] + [RECORDING_TAG]
    elif kind == "mixed":
        wanted.append(MIXED_TAG)
    elif _RECORDS.search(_source(cell)):
        wanted = [t for t in wanted if t != MIXED_TAG]  # creates a Recorder among other work: nothing to fold
    wanted = list(dict.fromkeys(wanted))
    if not markers and wanted == cell.get("metadata", {}).get("tags", []):
        return cell
    new = {**cell, "metadata": {**cell.get("metadata", {}), "tags": wanted}}
    if markers:
        new["source"] = "\n".join(line for line in lines if not _NBVAL_MARKER.match(line)).lstrip("\n")
    return new


def sync(notebook_path: Path, url: str, branch: str, write: bool) -> bool:
    """Bring one notebook's header cells and tooling tags in line; returns True if they already were."""
    nb = json.loads(notebook_path.read_text())
    wanted = header_cells(notebook_path, url, branch)
    current = [c for c in nb["cells"] if HEADER_KEY in c.get("metadata", {})]
    header_in_sync = (
        len(current) == len(wanted)
        and nb["cells"][:len(wanted)] == current
        and all(_source(c) == w["source"] and c["cell_type"] == w["cell_type"]
                and c["metadata"].get(HEADER_KEY) == w["metadata"][HEADER_KEY] for c, w in zip(current, wanted))
    )
    facing = [reader_facing(c) for c in nb["cells"]]
    if (header_in_sync and facing == nb["cells"]) or not write:
        return header_in_sync and facing == nb["cells"]
    if header_in_sync:
        nb["cells"] = facing
    else:
        body = [c for c in facing if HEADER_KEY not in c.get("metadata", {})]
        # keep the execution count of an existing install cell so a run's counts stay in order
        for old in current:
            if old["cell_type"] == "code":
                wanted[1]["execution_count"] = old.get("execution_count")
        for cell, old in zip(wanted, current):
            if "id" in old:
                cell["id"] = old["id"]
        for i, cell in enumerate(wanted):
            cell.setdefault("id", f"kd-header-{i}")
        nb["cells"] = wanted + body
    # nbformat's own layout (sources as lists of lines), as executed notebooks are stored
    nbformat.write(nbformat.from_dict(nb), str(notebook_path))
    return False


def mixed_recording_cells(path: Path) -> List[int]:
    """Indices of the cells of a notebook that record results and also do other work."""
    cells = json.loads(path.read_text())["cells"]
    return [i for i, c in enumerate(cells) if c.get("cell_type") == "code" and recording_kind(_source(c)) == "mixed"]


def notebooks(root: Path = ROOT) -> List[Path]:
    return sorted(p for p in (root / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="report notebooks out of sync; change nothing")
    args = parser.parse_args(argv)
    url, branch = repository()
    stale = [p for p in notebooks() if not sync(p, url, branch, write=not args.check)]
    for p in stale:
        print(f"{'out of sync' if args.check else 'updated'}: {p.relative_to(ROOT)}")
    for p in notebooks():
        for i in mixed_recording_cells(p):
            print(f"note: {p.relative_to(ROOT)}, cell {i} (0-based) records results and does other work: "
                  f"move the record calls into a cell of their own (the book folds it whole)")
    if args.check and stale:
        print("run `make sync` (python tools/sync_notebooks.py) to regenerate the header cells, turn nbval "
              "comment markers into cell tags and fold recording cells")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
