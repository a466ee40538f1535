"""Generate the student version of every notebook (``make student``): solutions replaced by stubs.

The notebook in ``notebooks/`` is the instructor version. In it, each exercise is a sphinx-exercise
``{exercise}`` block followed by a gated solution: a markdown cell holding only ``{solution-start}``,
the solution cells (tagged ``solution``), and a markdown cell holding only ``{solution-end}``. The book
folds the gate into a dropdown; this script turns the same cells into the student version under
``student/`` (same folder layout, so relative links keep working):

* the gate markers disappear; a solution code cell becomes a stub: its imports, and the signature and
  docstring of each function (or class method) it defines, with ``raise NotImplementedError`` as the body
  (tagged ``raises-exception``); a solution markdown cell becomes an empty "Your answer" cell;
* every later cell that uses a name the solutions define (the checker calls, say) loses its outputs and its
  ``nbval-check-output`` tag, since they showed the solution's results;
* ``{exercise}`` directives become plain numbered headings (Jupyter and Colab do not render MyST);
* the Colab badge points at the student copy itself (in the instructor notebook too: see
  ``sync_notebooks.launch_path``).

It also keeps, in each instructor notebook with exercises, a generated cell right after the
``## Exercises`` heading that links the student version for Colab and for download.

``python tools/make_student.py --check`` changes nothing, exits 1 and names every notebook whose student copy
or links cell is out of date, or whose exercise cells are inconsistent (the test suite runs it).
"""
from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
from pathlib import Path
from typing import List, Optional, Set, Tuple

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools import sync_notebooks  # noqa: E402

ROOT = sync_notebooks.ROOT
STUDENT_DIR = sync_notebooks.STUDENT_DIR
SOLUTION_TAG = "solution"
STUB_TAG = "raises-exception"  # nbval and the book accept an error from a cell with this tag
EXERCISE_KEY = "kd_exercise"  # cell metadata of generated cells: "links" | "student-note" | "stub" | "answer"
CHECK_TAG = "nbval-check-output"  # nbval compares the stored outputs of cells with this tag

_FENCE = r"^(?P<fence>`{3,}|:{3,})\{%s\}[ \t]*(?P<argument>.*)$"
_GATE_START = re.compile(_FENCE % "solution-start", re.M)
_GATE_END = re.compile(_FENCE % "solution-end", re.M)
_EXERCISE_HEADING = re.compile(r"^##[ \t]+Exercises[ \t]*$", re.M)
_EXERCISE_OPEN = re.compile(_FENCE % "exercise")
_OPTION = re.compile(r"^:(?P<name>[\w-]+):[ \t]*(?P<value>.*)$")
_UNSUPPORTED = re.compile(r"\{(exercise-start|exercise-end)\}")


class ExerciseError(ValueError):
    """The exercise cells of a notebook are inconsistent; the message names the cell and the fix."""


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def tags(cell: dict) -> List[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _is_gate_marker(cell: dict, pattern: re.Pattern) -> bool:
    return cell["cell_type"] == "markdown" and bool(pattern.search(source(cell)))


def student_path(notebook: Path, root: Path = ROOT) -> Path:
    return root / STUDENT_DIR / notebook.resolve().relative_to((root / "notebooks").resolve())


# ----------------------------------------------------------------------------- reading the exercises
def solution_gates(nb: dict, where: str = "notebook") -> List[Tuple[int, int]]:
    """``(start, end)`` cell indices of every ``{solution-start}`` / ``{solution-end}`` pair, after checking
    that each marker sits alone in its cell, the pairs neither nest nor dangle, and that exactly the cells
    between them are tagged ``solution``."""
    gates, start = [], None
    for i, cell in enumerate(nb["cells"]):
        is_start, is_end = _is_gate_marker(cell, _GATE_START), _is_gate_marker(cell, _GATE_END)
        if not (is_start or is_end):
            continue
        alone = re.fullmatch(r"(`{3,}|:{3,})\{solution-(start|end)\}[^\n]*(\n:[\w-]+:[^\n]*)*\n\1",
                             source(cell).strip())
        if not alone:
            raise ExerciseError(f"{where}, cell {i}: put the {{solution-start}} / {{solution-end}} directive "
                                f"alone in its own markdown cell (move the text around it to other cells)")
        if is_start:
            if start is not None:
                raise ExerciseError(f"{where}, cell {i}: a {{solution-start}} inside the solution opened at "
                                    f"cell {start}")
            start = i
        else:
            if start is None:
                raise ExerciseError(f"{where}, cell {i}: {{solution-end}} without a {{solution-start}} before it")
            gates.append((start, i))
            start = None
    if start is not None:
        raise ExerciseError(f"{where}, cell {start}: {{solution-start}} is never closed by {{solution-end}}")
    # the tags must mark exactly the cells between the markers
    for start, end in gates:
        for i in range(start + 1, end):
            if SOLUTION_TAG not in tags(nb["cells"][i]):
                raise ExerciseError(f"{where}, cell {i} lies inside the solution opened at cell {start}: tag it "
                                    f"'{SOLUTION_TAG}' (it is removed from the student version)")
    inside = {i for start, end in gates for i in range(start, end + 1)}
    for i, cell in enumerate(nb["cells"]):
        if SOLUTION_TAG in tags(cell) and i not in inside:
            raise ExerciseError(f"{where}, cell {i} is tagged '{SOLUTION_TAG}' but is outside every "
                                f"{{solution-start}} ... {{solution-end}} block: the book would show it unfolded")
    return gates


def _mask_magics(code: str) -> str:
    """IPython magics and shell escapes are not Python; blank them so that ``ast`` can parse the cell."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in code.splitlines())


def _parse(code: str, where: str) -> ast.Module:
    try:
        return ast.parse(_mask_magics(code))
    except SyntaxError as error:
        raise ExerciseError(f"{where}: the solution does not parse ({error.msg}, line {error.lineno})") from error


def defined_names(code: str) -> Set[str]:
    """Top-level names a cell computes: functions, classes, assignments, loop targets (imports are not
    results of the student's code, so they are left out)."""
    try:
        tree = ast.parse(_mask_magics(code))
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif not isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    return names


def used_names(code: str) -> Set[str]:
    try:
        tree = ast.parse(_mask_magics(code))
    except SyntaxError:  # fall back to words: over-approximating only clears more outputs
        return set(re.findall(r"[A-Za-z_]\w*", code))
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _stubbed_functions(code: str) -> Set[str]:
    tree = ast.parse(_mask_magics(code))
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


# ----------------------------------------------------------------------------- stubs
def _header_end(node: ast.AST, lines: List[str]) -> int:
    """0-based index of the last line of a def/class header, docstring included."""
    first = node.body[0]
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return first.end_lineno - 1
    # no docstring: the signature ends on the last code line before the body (comments there would leak)
    end = first.lineno - 2
    while end >= node.lineno and (not lines[end].strip() or lines[end].strip().startswith("#")):
        end -= 1
    return end


def _stub_definition(node: ast.AST, lines: List[str]) -> str:
    start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    if node.body[0].lineno == node.lineno:  # `def f(x): return x` has no header of its own
        raise ExerciseError(f"put the body of `{node.name}` on its own lines, below its signature")
    header = lines[start:_header_end(node, lines) + 1]
    indent = " " * node.body[0].col_offset
    if isinstance(node, ast.ClassDef):
        methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        if not methods:
            return "\n".join(header + [f"{indent}pass  # your code here"])
        return "\n".join(header) + "\n\n" + "\n\n".join(_stub_definition(m, lines) for m in methods)
    message = f"{node.name}: replace this line with your implementation"
    return "\n".join(header + [f'{indent}raise NotImplementedError("{message}")'])


def stub_source(code: str, where: str = "solution") -> Tuple[str, bool]:
    """The student's stub for a solution code cell, and whether it defines anything (then it raises).

    Keeps the imports and, for each function or class, its decorators, signature and docstring; the body
    becomes ``raise NotImplementedError(...)``. Anything else (the solution's computations, comments) is
    dropped; a cell without definitions becomes a "your code here" placeholder.
    """
    tree = _parse(code, where)
    lines = _mask_magics(code).splitlines()
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    definitions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    if not definitions:
        return "# Your code here\n", False
    parts = []
    if imports:
        parts.append("\n".join("\n".join(lines[n.lineno - 1:n.end_lineno]) for n in imports))
    try:
        parts += [_stub_definition(n, lines) for n in definitions]
    except ExerciseError as error:
        raise ExerciseError(f"{where}: {error}") from None
    return "\n\n\n".join(parts) + "\n", True


# ----------------------------------------------------------------------------- exercise directives
def exercises_as_markdown(text: str, first_number: int) -> Tuple[str, int]:
    """Replace each ``{exercise}`` directive by a numbered heading and its body; returns the next number."""
    if not any(_EXERCISE_OPEN.match(line) for line in text.split("\n")):
        return text, first_number
    lines, out, i, number = text.split("\n"), [], 0, first_number
    while i < len(lines):
        opening = _EXERCISE_OPEN.match(lines[i])
        if not opening:
            out.append(lines[i])
            i += 1
            continue
        fence, title = opening.group("fence"), opening.group("argument").strip()
        i += 1
        options = {}
        while i < len(lines) and _OPTION.match(lines[i]):
            match = _OPTION.match(lines[i])
            options[match.group("name")] = match.group("value")
            i += 1
        body = []
        while i < len(lines) and not (lines[i].strip() and set(lines[i].strip()) == {fence[0]}
                                      and len(lines[i].strip()) >= len(fence)):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        if "nonumber" in options:
            heading = "### Exercise"
        else:
            heading = f"### Exercise {number}"
            number += 1
        out.append(heading + (f" ({title})" if title else ""))  # the book's "Exercise 1 (Title)"
        out.extend(body if body and not body[0].strip() else [""] + body)
    return "\n".join(out).rstrip("\n"), number


# ----------------------------------------------------------------------------- generated cells
def _markdown(text: str, role: str, cell_id: str) -> dict:
    return {"cell_type": "markdown", "id": cell_id, "metadata": {EXERCISE_KEY: role}, "source": text}


def links_cell(notebook: Path, url: str, branch: str, root: Path = ROOT) -> dict:
    copy_path = student_path(notebook, root)
    colab = sync_notebooks.colab_url(copy_path, url, branch, root=root)
    rel = copy_path.relative_to(root).as_posix()
    text = ("**Try them yourself first.** The student version of this notebook has every solution replaced by a "
            "stub to complete, and a checker after each stub that tells you whether your code is right: "
            f"[open it in Colab]({colab}) or {{download}}`download it </{rel}>`. "
            "How the exercises work: {doc}`/book/exercises`.")
    return _markdown(text, "links", "kd-exercise-links")


def _student_note() -> dict:
    text = ("**This is the student version**: the solutions are removed. Replace each "
            "`raise NotImplementedError(...)` with your code, run the cell, then run the checker below it: it "
            "prints ✓ when your function is right, or which case failed and a hint.")
    return _markdown(text, "student-note", "kd-exercise-links")


def _has_exercises(nb: dict) -> bool:
    return any(cell["cell_type"] == "markdown" and any(_EXERCISE_OPEN.match(line) for line in source(cell).split("\n"))
               for cell in nb["cells"])


def with_links(nb: dict, notebook: Path, url: str, branch: str, root: Path = ROOT) -> dict:
    """The instructor notebook with its links cell (re)generated right after the ``## Exercises`` heading."""
    nb = copy.deepcopy(nb)
    nb["cells"] = [c for c in nb["cells"] if c.get("metadata", {}).get(EXERCISE_KEY) != "links"]
    if not _has_exercises(nb):
        return nb
    headings = [i for i, c in enumerate(nb["cells"])
                if c["cell_type"] == "markdown" and _EXERCISE_HEADING.search(source(c))]
    if not headings:
        raise ExerciseError(f"{notebook.name}: exercises need a `## Exercises` heading above them")
    nb["cells"].insert(headings[0] + 1, links_cell(notebook, url, branch, root))
    return nb


def _lint_usage(nb: dict, gates: List[Tuple[int, int]], where: str) -> None:
    """A cell outside the solutions that calls a stubbed function would stop the student's "Run all";
    only checker calls (which never raise) may use them. A coding exercise is followed by its checker."""
    stubbed: Set[str] = set()
    for start, end in gates:
        for cell in nb["cells"][start + 1:end]:
            if cell["cell_type"] == "code":
                stubbed |= _stubbed_functions(source(cell))
    gate_ends = {end: start for start, end in gates}
    inside = {i for start, end in gates for i in range(start, end + 1)}
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code" or i in inside:
            continue
        code = source(cell)
        uses = used_names(code) & stubbed
        if uses and not re.search(r"\bcheck_\w+\s*\(", code):
            raise ExerciseError(f"{where}, cell {i} calls {', '.join(sorted(uses))}, which the student version only "
                                f"has as a stub: only checker calls may use it (they never raise)")
    for end, start in gate_ends.items():
        defines = set().union(*(_stubbed_functions(source(c)) for c in nb["cells"][start + 1:end]
                                if c["cell_type"] == "code"))
        if not defines:  # a written exercise: nothing to check
            continue
        following = next((c for c in nb["cells"][end + 1:] if c["cell_type"] == "code"), None)
        if following is None or not re.search(r"\bcheck_\w+\s*\(", source(following)):
            raise ExerciseError(f"{where}, cell {end}: the first code cell after this solution must call its checker "
                                f"(kdtools.exercises.check_...)")


def check_exercises(nb: dict, where: str = "notebook") -> List[Tuple[int, int]]:
    """Every consistency rule of the exercise cells; returns the solution gates."""
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "markdown" and _UNSUPPORTED.search(source(cell)):
            raise ExerciseError(f"{where}, cell {i}: use a single {{exercise}} directive (gated exercises are "
                                f"not supported by the student version)")
    if _has_exercises(nb) and not any(c["cell_type"] == "markdown" and _EXERCISE_HEADING.search(source(c))
                                      for c in nb["cells"]):
        raise ExerciseError(f"{where}: exercises need a `## Exercises` heading above them")
    gates = solution_gates(nb, where)
    for start, end in gates:
        for i in range(start + 1, end):
            if nb["cells"][i]["cell_type"] == "code":
                stub_source(source(nb["cells"][i]), f"{where}, cell {i}")
    _lint_usage(nb, gates, where)
    return gates


# ----------------------------------------------------------------------------- the student notebook
def _clear(cell: dict) -> dict:
    cell = copy.deepcopy(cell)
    cell["outputs"], cell["execution_count"] = [], None
    # the stored outputs were the reference; the student's own run produces different ones
    remaining = [tag for tag in tags(cell) if tag != CHECK_TAG]
    if remaining:
        cell.setdefault("metadata", {})["tags"] = remaining
    else:
        cell.get("metadata", {}).pop("tags", None)
    return cell


def student_notebook(nb: dict, notebook: Path, url: str, branch: str, root: Path = ROOT) -> dict:
    where = notebook.name
    gates = check_exercises(nb, where)
    inside = {i: (start, end) for start, end in gates for i in range(start, end + 1)}
    header = sync_notebooks.header_cells(student_path(notebook, root), url, branch, root=root)
    header_roles = {cell["metadata"][sync_notebooks.HEADER_KEY]: cell for cell in header}

    cells, tainted, exercise_number = [], set(), 1
    for i, cell in enumerate(nb["cells"]):
        role = cell.get("metadata", {}).get(EXERCISE_KEY)
        header_role = cell.get("metadata", {}).get(sync_notebooks.HEADER_KEY)
        if header_role:
            new = copy.deepcopy(cell)
            new["source"] = header_roles[header_role]["source"]
            cells.append(_clear(new) if new["cell_type"] == "code" else new)
        elif role == "links":
            cells.append(_student_note())
        elif i in inside:
            if i in (inside[i][0], inside[i][1]):
                continue  # the gate markers
            if cell["cell_type"] == "code":
                stub, raises = stub_source(source(cell), f"{where}, cell {i}")
                tainted |= defined_names(source(cell))
                metadata = {EXERCISE_KEY: "stub", **({"tags": [STUB_TAG]} if raises else {})}
                cells.append({"cell_type": "code", "id": cell.get("id", f"stub-{i}"), "metadata": metadata,
                              "source": stub.rstrip("\n"), "execution_count": None, "outputs": []})
            else:
                cells.append(_markdown("*Your answer:*", "answer", cell.get("id", f"answer-{i}")))
        elif cell["cell_type"] == "markdown":
            new = copy.deepcopy(cell)
            text, exercise_number = exercises_as_markdown(source(cell), exercise_number)
            new["source"] = text
            cells.append(new)
        elif used_names(source(cell)) & tainted:
            tainted |= defined_names(source(cell))  # what it computes depends on the student's code too
            cells.append(_clear(cell))
        else:
            cells.append(copy.deepcopy(cell))
    student = copy.deepcopy(nb)
    student["cells"] = cells
    return nbformat.from_dict(student)


def _text(nb: dict) -> str:
    node = nbformat.from_dict(nb)
    nbformat.validate(node)
    text = nbformat.writes(node)
    return text if text.endswith("\n") else text + "\n"


# ----------------------------------------------------------------------------- command line
def build(root: Path = ROOT, write: bool = True) -> List[str]:
    """Bring links cells and student copies up to date (or only report, with ``write=False``).

    Returns one line per notebook or copy that was (or, when checking, is) out of date or wrong.
    """
    url, branch = sync_notebooks.repository(root / "_config.yml")
    sources = sync_notebooks.notebooks(root)
    report, wanted = [], set()
    for notebook in sources:
        rel = notebook.relative_to(root)
        target = student_path(notebook, root)
        wanted.add(target)  # an invalid notebook keeps its last good copy
        nb = nbformat.read(notebook, as_version=4)
        try:
            check_exercises(nb, str(rel))  # first, so that cell numbers in messages are those of the file
            instructor = with_links(nb, notebook, url, branch, root)
            student = student_notebook(instructor, notebook, url, branch, root)
        except ExerciseError as error:
            report.append(f"invalid exercises: {error}")
            continue
        if _text(instructor) != _text(nb):
            report.append(f"links cell out of date: {rel}")
            if write:
                notebook.write_text(_text(instructor))
        if not target.exists() or target.read_text() != _text(student):
            report.append(f"student copy out of date: {target.relative_to(root)}")
            if write:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(_text(student))
    for stale in sorted((root / STUDENT_DIR).rglob("*.ipynb")) if (root / STUDENT_DIR).exists() else []:
        if stale not in wanted and ".ipynb_checkpoints" not in stale.parts:
            report.append(f"student copy without a source notebook: {stale.relative_to(root)}")
            if write:
                stale.unlink()
    return report


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report what is out of date; change nothing")
    args = parser.parse_args(argv)
    report = build(write=not args.check)
    for line in report:
        print(line if args.check or line.startswith("invalid") else f"regenerated ({line})")
    invalid = any(line.startswith("invalid") for line in report)
    if args.check and report:
        print("run `make student` (python tools/make_student.py) to regenerate the student copies")
    return 1 if invalid or (args.check and report) else 0


if __name__ == "__main__":
    sys.exit(main())
