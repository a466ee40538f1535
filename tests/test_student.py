"""The student versions of the notebooks (tools/make_student.py): stubs from tagged solutions, cleared
outputs, and committed copies that must match their source."""
import ast
import re
import sys
import textwrap

import nbformat
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT))
from tools import make_student, sync_notebooks  # noqa: E402

URL, BRANCH = "https://github.com/me/course", "dev"


# ----------------------------------------------------------------------------- a small notebook to work on
def md(text, tags=None):
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip("\n"), metadata={"tags": tags} if tags else {})


def code(text, tags=None, output=None):
    cell = nbformat.v4.new_code_cell(textwrap.dedent(text).strip("\n"), metadata={"tags": tags} if tags else {})
    if output is not None:
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output)]
        cell.execution_count = 7
    return cell


def gate(label):
    return md(f"```{{solution-start}} {label}\n:class: dropdown\n```"), md("```{solution-end}\n```")


def exercise_cells():
    start1, end1 = gate("ex-add")
    start2, end2 = gate("ex-why")
    return [
        md("# Lesson"),
        code("x = 2", output="nothing\n"),
        md("""
           Some prose.

           ## Exercises
           """),
        code("from kdtools import exercises"),
        md("""
           ```{exercise} Adding
           :label: ex-add

           Write `add(a, b)`.
           ```
           """),
        start1,
        code('''
             import math


             @staticmethod_like
             def add(a,
                     b):
                 """Return a + b."""
                 # the secret: plus
                 return a + b


             def helper(z):
                 # no docstring, and this comment must not leak
                 return z


             print(add(1, 2))
             ''', tags=["solution"], output="3\n"),
        md("Because addition.", tags=["solution"]),
        end1,
        code("exercises.check_add(add)", tags=["nbval-check-output"], output="✓ add passed\n"),
        md("""
           ````{exercise}
           :label: ex-why
           :nonumber:

           Why? Use a fence:
           ```python
           print(1)
           ```
           ````
           """),
        start2,
        code("answer = x + 1\nprint(answer)", tags=["solution"], output="3\n"),
        end2,
        code("print(answer * 2)", output="6\n"),
        code("print(x)", output="2\n"),
        md("## Summary"),
    ]


def write_course(root, cells):
    (root / "_config.yml").write_text(f"repository:\n  url: {URL}\n  branch: {BRANCH}\n")
    path = root / "notebooks" / "01_x" / "lesson.ipynb"
    path.parent.mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=cells)
    header = sync_notebooks.header_cells(path, URL, BRANCH, root=root)
    for i, cell in enumerate(header):
        cell["id"] = f"kd-header-{i}"
    nb.cells = header + nb.cells
    nbformat.write(nbformat.from_dict(nb), path)
    return path


@pytest.fixture
def course(tmp_path):
    return tmp_path, write_course(tmp_path, exercise_cells())


def by_role(nb, role):
    return [c for c in nb.cells if c.metadata.get(make_student.EXERCISE_KEY) == role]


def text_of(cell):
    return make_student.source(cell)


# ----------------------------------------------------------------------------- the committed copies
def test_committed_student_copies_are_in_sync():
    report = make_student.build(ROOT, write=False)
    assert report == [], "\n".join(report) + "\nrun `make student`"
    for notebook in sync_notebooks.notebooks():
        assert make_student.student_path(notebook).exists()


def test_committed_student_copies_have_no_solution_left():
    for notebook in sync_notebooks.notebooks():
        source = nbformat.read(notebook, as_version=4)
        student = nbformat.read(make_student.student_path(notebook), as_version=4)
        solutions = [text_of(c) for c in source.cells if make_student.SOLUTION_TAG in c.metadata.get("tags", [])]
        student_text = "\n".join(text_of(c) for c in student.cells)
        assert "{solution-start}" not in student_text
        for solution in solutions:
            assert solution not in student_text


# ----------------------------------------------------------------------------- generation
def test_student_version_replaces_solutions_by_stubs(course):
    root, path = course
    assert make_student.build(root) != []  # first run: links cell and copy written
    assert make_student.build(root, write=False) == []
    student = nbformat.read(root / "student" / "01_x" / "lesson.ipynb", as_version=4)
    everything = "\n".join(text_of(c) for c in student.cells)
    for leaked in ("solution-start", "solution-end", "return a + b", "the secret", "must not leak",
                   "Because addition", "print(add(1, 2))", "answer = x + 1"):
        assert leaked not in everything

    stub, placeholder = by_role(student, "stub")
    assert stub.metadata["tags"] == [make_student.STUB_TAG] and stub.outputs == [] and stub.execution_count is None
    assert text_of(stub) == textwrap.dedent('''
        import math


        @staticmethod_like
        def add(a,
                b):
            """Return a + b."""
            raise NotImplementedError("add: replace this line with your implementation")


        def helper(z):
            raise NotImplementedError("helper: replace this line with your implementation")''').strip("\n")
    assert text_of(placeholder) == "# Your code here" and "tags" not in placeholder.metadata
    assert [text_of(c) for c in by_role(student, "answer")] == ["*Your answer:*"]


def test_student_version_clears_what_depends_on_the_solutions(course):
    root, path = course
    make_student.build(root)
    student = nbformat.read(root / "student" / "01_x" / "lesson.ipynb", as_version=4)
    cells = {text_of(c): c for c in student.cells if c.cell_type == "code"}
    check = cells["exercises.check_add(add)"]  # the nbval tag goes with the reference output
    assert check.outputs == [] and check.execution_count is None
    assert "nbval-check-output" not in check.metadata.get("tags", [])
    assert cells["print(answer * 2)"].outputs == []
    assert cells["print(x)"].outputs[0]["text"] == "2\n" and cells["x = 2"].outputs


def test_student_version_turns_exercises_into_headings_and_links_itself(course):
    root, path = course
    make_student.build(root)
    student = nbformat.read(root / "student" / "01_x" / "lesson.ipynb", as_version=4)
    texts = [text_of(c) for c in student.cells]
    assert "### Exercise 1 (Adding)\n\nWrite `add(a, b)`." in texts
    assert "### Exercise\n\nWhy? Use a fence:\n```python\nprint(1)\n```" in texts
    badge, install = student.cells[:2]
    assert "/blob/dev/student/01_x/lesson.ipynb" in text_of(badge)
    source = nbformat.read(path, as_version=4)
    assert text_of(install) == text_of(source.cells[1]) and install.metadata == source.cells[1].metadata
    assert [c.metadata.get(make_student.EXERCISE_KEY) for c in student.cells].count("student-note") == 1


def test_instructor_notebook_links_its_student_version_after_the_heading(course):
    root, path = course
    make_student.build(root)
    nb = nbformat.read(path, as_version=4)
    heading = next(i for i, c in enumerate(nb.cells) if "## Exercises" in text_of(c))
    links = nb.cells[heading + 1]
    assert links.metadata[make_student.EXERCISE_KEY] == "links"
    assert "https://colab.research.google.com/github/me/course/blob/dev/student/01_x/lesson.ipynb" in text_of(links)
    assert "{download}`download it </student/01_x/lesson.ipynb>`" in text_of(links)
    header = sync_notebooks.header_cells(path, URL, BRANCH, root=root)
    assert [text_of(c) for c in nb.cells[:2]] == [c["source"] for c in header]  # the header is left alone


def test_out_of_date_and_orphaned_copies_are_reported_and_fixed(course):
    root, path = course
    make_student.build(root)
    copy_path = root / "student" / "01_x" / "lesson.ipynb"
    copy_path.write_text(copy_path.read_text().replace("Your answer", "My answer"))
    orphan = root / "student" / "01_x" / "removed.ipynb"
    orphan.write_text("{}")
    report = make_student.build(root, write=False)
    assert report == ["student copy out of date: student/01_x/lesson.ipynb",
                      "student copy without a source notebook: student/01_x/removed.ipynb"]
    make_student.build(root)
    assert make_student.build(root, write=False) == [] and not orphan.exists()

    nb = nbformat.read(path, as_version=4)
    solution = next(c for c in nb.cells if "return a + b" in c.source)
    solution.source = solution.source.replace("return a + b", "return b + a")
    nbformat.write(nb, path)
    assert make_student.build(root, write=False) == []  # a new body leaves the stub as it was
    solution.source = solution.source.replace("Return a + b.", "Return the sum of a and b.")
    nbformat.write(nb, path)
    assert make_student.build(root, write=False) == ["student copy out of date: student/01_x/lesson.ipynb"]


def test_notebook_without_exercises_gets_a_plain_copy(tmp_path):
    path = write_course(tmp_path, [md("# Lesson"), code("print(1)", output="1\n")])
    make_student.build(tmp_path)
    student = nbformat.read(tmp_path / "student" / "01_x" / "lesson.ipynb", as_version=4)
    source = nbformat.read(path, as_version=4)
    assert [text_of(c) for c in student.cells[1:]] == [text_of(c) for c in source.cells[1:]]
    assert student.cells[3].outputs == source.cells[3].outputs


# ----------------------------------------------------------------------------- mistakes in the exercise cells
def broken(edit):
    cells = exercise_cells()
    edit(cells)
    return cells


def untag(cells):
    cells[6].metadata = {}


def tag_outside(cells):
    cells[1].metadata["tags"] = ["solution"]


def marker_with_text(cells):
    cells[8].source = "Because.\n\n```{solution-end}\n```"


def unclosed(cells):
    del cells[8]


def stub_used_outside_checker(cells):
    cells.insert(10, code("print(add(2, 3))"))


def no_checker_after_coding_solution(cells):
    cells[9].source = "print('done')"


def no_heading(cells):
    cells[2].source = "Some prose."


def one_line_def(cells):
    cells[6].source = "def add(a, b): return a + b"


def syntax_error(cells):
    cells[6].source = "def add(a, b)\n    return a + b"


@pytest.mark.parametrize("edit, message", [
    (untag, "cell 8 lies inside the solution opened at cell 7: tag it 'solution'"),
    (tag_outside, "cell 3 is tagged 'solution' but is outside every"),
    (marker_with_text, "put the {solution-start} / {solution-end} directive alone in its own markdown cell"),
    (unclosed, "cell 12: a {solution-start} inside the solution opened at cell 7"),
    (stub_used_outside_checker, "cell 12 calls add, which the student version only has as a stub"),
    (no_checker_after_coding_solution, "the first code cell after this solution must call its checker"),
    (no_heading, "exercises need a `## Exercises` heading"),
    (one_line_def, "put the body of `add` on its own lines"),
    (syntax_error, "the solution does not parse"),
])
def test_inconsistent_exercise_cells_are_reported(tmp_path, edit, message):
    write_course(tmp_path, broken(edit))
    report = make_student.build(tmp_path, write=False)
    assert len(report) == 1 and report[0].startswith("invalid exercises: notebooks/01_x/lesson.ipynb"), report
    assert message in report[0], report[0]


def test_stub_keeps_class_and_method_signatures():
    stub, raises = make_student.stub_source(textwrap.dedent('''
        %matplotlib inline
        class Regressor(torch.nn.Module):
            """Maps student features to the teacher's width."""

            scale = 2

            def __init__(self, width):
                super().__init__()
                self.width = width

            def forward(self, x):
                """x: [B, C]."""
                return x * self.scale
        '''))
    assert raises
    assert stub == textwrap.dedent('''
        class Regressor(torch.nn.Module):
            """Maps student features to the teacher's width."""

            def __init__(self, width):
                raise NotImplementedError("__init__: replace this line with your implementation")

            def forward(self, x):
                """x: [B, C]."""
                raise NotImplementedError("forward: replace this line with your implementation")
        ''').lstrip("\n")


def test_check_command_exit_status(course, monkeypatch, capsys):
    root, path = course
    monkeypatch.setattr(make_student, "ROOT", root)
    monkeypatch.setattr(make_student, "build", lambda write=True, _b=make_student.build: _b(root, write))
    assert make_student.main(["--check"]) == 1
    assert "run `make student`" in capsys.readouterr().out
    assert make_student.main([]) == 0
    assert make_student.main(["--check"]) == 0


# ----------------------------------------------------------------------------- running a student copy
def _is_import_only(code):
    tree = ast.parse(code)
    return bool(tree.body) and all(isinstance(node, (ast.Import, ast.ImportFrom)) for node in tree.body)


def test_student_stubs_and_checkers_run_and_report_unfinished_exercises(capsys):
    """In each student copy, the exercise section's imports, stubs and checker calls run without error, and
    every checker says "not implemented yet". (Run in-process: executing whole notebooks is nbval's job,
    and would cost a kernel and a smoke run per notebook.)"""
    for notebook in sync_notebooks.notebooks():
        student = nbformat.read(make_student.student_path(notebook), as_version=4)
        heading = next((i for i, c in enumerate(student.cells)
                        if c.cell_type == "markdown" and "## Exercises" in text_of(c)), None)
        if heading is None:
            continue
        namespace = {}
        checks = 0
        for cell in student.cells[heading:]:
            code = text_of(cell)
            if cell.cell_type != "code":
                continue
            is_stub = cell.metadata.get(make_student.EXERCISE_KEY) == "stub"
            is_check = re.search(r"^[^#\n]*\bcheck_\w+\(", code, re.M)
            if not (is_stub or is_check or _is_import_only(code)):
                continue
            exec(compile(code, f"{notebook.name}: {code[:40]!r}", "exec"), namespace)
            if is_check:
                checks += 1
                printed = capsys.readouterr().out
                assert "not implemented yet" in printed, (notebook.name, code, printed)
        assert checks >= 1, f"{notebook.name}: its exercises have no checker call"
