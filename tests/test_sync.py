import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import kd_book  # noqa: E402
from tools import sync_notebooks  # noqa: E402


def _notebook(cells):
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_committed_notebooks_are_in_sync_with_config():
    assert sync_notebooks.notebooks(), "the course has no notebooks"
    assert sync_notebooks.main(["--check"]) == 0


def test_header_cells_come_from_the_configured_repository(tmp_path):
    nb_dir = tmp_path / "notebooks" / "01_x"
    nb_dir.mkdir(parents=True)
    path = nb_dir / "a.ipynb"
    body = {"cell_type": "markdown", "metadata": {}, "source": "# Title"}
    path.write_text(json.dumps(_notebook([body])))
    cells = sync_notebooks.header_cells(path, "https://github.com/me/course", "dev", root=tmp_path)
    # the badge of a lesson opens its student copy, never the instructor copy with the solutions
    assert "colab.research.google.com/github/me/course/blob/dev/student/01_x/a.ipynb)" in cells[0]["source"]
    assert "/notebooks/" not in cells[0]["source"]
    assert 'kdtools @ git+https://github.com/me/course@dev' in cells[1]["source"]
    assert 'if "google.colab" in sys.modules' in cells[1]["source"]
    assert "kdtools[applications]" not in cells[1]["source"]


def test_module_6_installs_the_applications_extra(tmp_path):
    path = tmp_path / "notebooks" / "06_applications" / "a.ipynb"
    cells = sync_notebooks.header_cells(path, "https://github.com/me/course", "dev", root=tmp_path)
    assert 'kdtools[applications] @ git+https://github.com/me/course@dev' in cells[1]["source"]


def test_out_of_sync_notebook_is_detected_and_fixed(tmp_path, monkeypatch):
    monkeypatch.setattr(sync_notebooks, "ROOT", tmp_path)
    nb_dir = tmp_path / "notebooks" / "01_x"
    nb_dir.mkdir(parents=True)
    path = nb_dir / "a.ipynb"
    body = {"cell_type": "markdown", "metadata": {}, "source": "# Title"}
    path.write_text(json.dumps(_notebook([body])))
    original = sync_notebooks.header_cells
    header = lambda p, u, b: original(p, u, b, root=tmp_path)
    monkeypatch.setattr(sync_notebooks, "header_cells", header)
    url, branch = "https://github.com/me/course", "main"
    assert not sync_notebooks.sync(path, url, branch, write=False)  # no header yet
    sync_notebooks.sync(path, url, branch, write=True)
    assert sync_notebooks.sync(path, url, branch, write=False)
    cells = json.loads(path.read_text())["cells"]
    assert [c.get("metadata", {}).get("kd_header") for c in cells] == ["badge", "install", None]
    # the repository moves: every header is stale until the next sync
    assert not sync_notebooks.sync(path, "https://github.com/other/course", branch, write=False)
    # a hand edit of the generated cell is caught too
    cells[1]["source"] = "print('edited')"
    path.write_text(json.dumps(_notebook(cells)))
    assert not sync_notebooks.sync(path, url, branch, write=False)


def test_repository_url_must_be_github(tmp_path):
    cfg = tmp_path / "_config.yml"
    cfg.write_text("repository:\n  url: ftp://example.org/x\n")
    import pytest

    with pytest.raises(ValueError, match="repository.url"):
        sync_notebooks.repository(cfg)
    assert sync_notebooks.repository(ROOT / "_config.yml")[0].startswith("https://github.com/")


def test_nbval_comment_markers_become_tags_and_recording_cells_fold():
    cell = {"cell_type": "code", "metadata": {"tags": ["solution"]}, "outputs": [], "execution_count": 3,
            "source": "# NBVAL_CHECK_OUTPUT\nprint(1)"}
    facing = sync_notebooks.reader_facing(cell)
    assert facing["source"] == "print(1)"
    assert facing["metadata"]["tags"] == ["solution", "nbval-check-output"]
    assert cell["source"].startswith("# NBVAL")  # the input is not modified
    recording = {"cell_type": "code", "metadata": {}, "source": "recorder.record('KD', 'acc', 1.0)"}
    assert sync_notebooks.reader_facing(recording)["metadata"]["tags"] == ["hide-cell"]
    plain = {"cell_type": "code", "metadata": {}, "source": "x = 1  # a NBVAL_CHECK_OUTPUT mention"}
    assert sync_notebooks.reader_facing(plain) is plain
    text = {"cell_type": "markdown", "metadata": {}, "source": "# NBVAL_SKIP"}
    assert sync_notebooks.reader_facing(text) is text


def test_committed_notebooks_show_no_nbval_comments():
    for path in sync_notebooks.notebooks():
        for cell in json.loads(path.read_text())["cells"]:
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            assert "# NBVAL_" not in text, f"{path.name}: use the nbval-* cell tags (make sync converts them)"


def test_launch_paths_map_lessons_to_their_student_copy(tmp_path):
    assert sync_notebooks.launch_path("notebooks/01_x/a.ipynb") == "student/01_x/a.ipynb"
    assert sync_notebooks.launch_path("student/01_x/a.ipynb") == "student/01_x/a.ipynb"
    assert sync_notebooks.launch_path("notebooks") == "notebooks"
    assert sync_notebooks.launch_path("other/notebooks/a.ipynb") == "other/notebooks/a.ipynb"
    lesson = tmp_path / "notebooks" / "02_y" / "b.ipynb"
    assert sync_notebooks.colab_url(lesson, "https://github.com/me/course", "main", root=tmp_path) == \
        "https://colab.research.google.com/github/me/course/blob/main/student/02_y/b.ipynb"


def test_committed_badges_open_student_copies_that_exist():
    url, branch = sync_notebooks.repository()
    for path in sync_notebooks.notebooks():
        badge = json.loads(path.read_text())["cells"][0]
        text = "".join(badge["source"])
        target = text.split(f"/blob/{branch}/", 1)[1].split(")", 1)[0]
        assert target.startswith("student/"), f"{path.name}: the Colab badge opens {target}"
        assert (ROOT / target).is_file(), f"{path.name}: {target} does not exist (make student)"


# ----------------------------------------------------------------------------- book/_ext/kd_book.py
@pytest.mark.parametrize("theme_url, expected", [
    ("https://colab.research.google.com/github/me/course/blob/main/notebooks/01_x/a.ipynb",
     "https://colab.research.google.com/github/me/course/blob/main/student/01_x/a.ipynb"),
    ("https://mybinder.org/v2/gh/me/course/dev?urlpath=tree/notebooks/01_x/a.ipynb",
     "https://mybinder.org/v2/gh/me/course/dev?urlpath=tree/student/01_x/a.ipynb"),
    ("https://mybinder.org/v2/gh/me/course/dev?urlpath=lab/tree/notebooks/01_x/a.ipynb",
     "https://mybinder.org/v2/gh/me/course/dev?urlpath=lab/tree/student/01_x/a.ipynb"),
    # a repository named "notebooks" is not a path
    ("https://colab.research.google.com/github/me/notebooks/blob/main/notebooks/a.ipynb",
     "https://colab.research.google.com/github/me/notebooks/blob/main/student/a.ipynb"),
])
def test_theme_launch_urls_are_rewritten_to_the_student_copy(theme_url, expected):
    assert kd_book.student_launch_url(theme_url) == expected


def test_launch_buttons_of_a_lesson_page_open_the_student_copy(tmp_path):
    (tmp_path / "student" / "01_x").mkdir(parents=True)
    (tmp_path / "student" / "01_x" / "a.ipynb").write_text("{}")
    app = type("App", (), {"srcdir": str(tmp_path)})()
    colab = "https://colab.research.google.com/github/me/course/blob/main/notebooks/01_x/a.ipynb"
    context = {"header_buttons": [
        {"type": "group", "label": "download-buttons", "buttons": [{"type": "link", "url": "_sources/a.ipynb"}]},
        {"type": "group", "label": "launch-buttons", "buttons": [{"type": "link", "url": colab, "tooltip": "Colab"}]},
    ]}
    kd_book.point_launch_buttons_at_student_copy(app, "notebooks/01_x/a", "page.html", context, None)
    download, launch = context["header_buttons"]
    assert launch["buttons"][0]["url"].endswith("/blob/main/student/01_x/a.ipynb")
    assert download["buttons"][0]["url"] == "_sources/a.ipynb"  # the page's own source is left alone


def test_duplicate_scripts_and_viewport_tags_are_dropped():
    from sphinx.builders.html._assets import _JavaScript

    thebe = "const THEBE_JS_URL = 'x'"
    assets = [_JavaScript(None, body=thebe), _JavaScript("a.js"), _JavaScript("", body=thebe, priority=501),
              _JavaScript("a.js", priority=200), _JavaScript("a.js", **{"async": "async"})]
    kept = kd_book.unique_assets(assets)
    assert [(a.filename, a.attributes.get("body")) for a in kept] == [(None, thebe), ("a.js", None), ("a.js", None)]
    page = ('<head>\n<meta name="viewport" content="width=device-width, initial-scale=1.0" />\n'
            '<meta name="x" />\n  <meta name="viewport" content="width=device-width, initial-scale=1"/>\n</head>')
    assert kd_book.single_viewport(page) == \
        '<head>\n<meta name="viewport" content="width=device-width, initial-scale=1.0" />\n<meta name="x" />\n</head>'


@pytest.mark.parametrize("alt, uri, is_path", [
    ("../../_images/c3c1.png", "../../_images/c3c1.png", True), ("_images/x.svg", "other", True), ("", "a.png", True),
    ("Test error against n, log-log axes", "a.png", False), ("a plot of 2.5 vs x", "a.png", False),
])
def test_alt_texts_that_are_file_paths_are_recognised(alt, uri, is_path):
    assert kd_book.is_path_alt(alt, uri) is is_path


# ----------------------------------------------------------------------------- tools/check_layout.py (static part)
def test_layout_checker_flags_instructor_links_duplicates_and_path_alts(tmp_path):
    from tools import check_layout

    page = tmp_path / "lesson.html"
    page.write_text(
        '<meta name="viewport" content="a" />\n<meta name="viewport" content="b"/>\n'
        "<script>const THEBE_JS_URL = 1</script>\n<script>const THEBE_JS_URL = 1</script>\n"
        '<a href="https://colab.research.google.com/github/me/c/blob/main/notebooks/01_x/a.ipynb">Colab</a>\n'
        '<a href="https://mybinder.org/v2/gh/me/c/main?urlpath=tree/student/01_x/a.ipynb">Binder</a>\n'
        '<img alt="../_images/abc.png" src="../_images/abc.png" />\n'
        f'<img alt="{kd_book.FALLBACK_ALT}" src="../_images/def.png" />\n'
        '<img alt="Test error against n" src="../_images/ghi.png" />\n')
    found = check_layout.static_checks(page)
    assert found["launch links to the instructor copy"] == [
        "https://colab.research.google.com/github/me/c/blob/main/notebooks/01_x/a.ipynb"]  # Binder opens student/
    assert found["viewport tags"] == ["2"] and len(found["inline scripts repeated"]) == 1
    assert found["figures whose alt text is a file path"] == ["../_images/abc.png"]
    assert found["figures without a description (cell metadata mystnb.image.alt)"] == ["1"]
    clean = tmp_path / "clean.html"
    clean.write_text('<meta name="viewport" content="a" />\n<img alt="Test error against n" src="x.png" />\n')
    assert check_layout.static_checks(clean) == {}


RECORDING_ONLY = """from kdtools.results import Recorder

recorder = Recorder("lesson")
for method in methods + [name(t) for t in TEMPERATURES]:
    teacher = "-" if not method.startswith("KD") else TEACHER
    for seed in SEEDS:
        history = runs[method, seed]
        common = dict(teacher=teacher, seed=seed)
        recorder.record(method, "test accuracy, last epoch (%)", history.last_acc, **common)
recorder.record("teacher", "test accuracy (%)", metrics.accuracy(logits, labels))
print(f"recorded {len(recorder.rows)} rows to {recorder.path.name}")"""


@pytest.mark.parametrize("code, kind", [
    (RECORDING_ONLY, "only"),
    ("protocol.record(recorder, method, runs, setting)", "only"),
    # training, printing a table or evaluating next to the record calls: the cell does other work
    ("history = train(model, loader)\nrecorder.record('KD', 'test accuracy (%)', history.last_acc)", "mixed"),
    ("for m in methods:\n    print(m, summary(m))\n    recorder.record(m, 'x (%)', 1.0)", "mixed"),
    ("recorder.record('KD', 'x (%)', 1.0)\nprint(f'notebook so far: {time.perf_counter() - start:.0f} s')", "mixed"),
    ("def f(x):\n    return x\nrecorder.record('KD', 'x (%)', f(1.0))", "mixed"),
    ("recorder.record('KD', 'x (%)',", "mixed"),  # unparsable: never folded whole
    ("import kdtools\nrecorder = Recorder('lesson')\nsession = kdtools.setup(seed=0)", None),
    ("x = 1", None),
])
def test_recording_cells_are_told_from_cells_that_also_compute(code, kind):
    assert sync_notebooks.recording_kind(code) == kind


def test_recording_cells_fold_whole_and_setup_cells_are_unfolded():
    def tags(code, old_tags=()):
        cell = {"cell_type": "code", "metadata": {"tags": list(old_tags)}, "source": code}
        return sync_notebooks.reader_facing(cell)["metadata"].get("tags")

    assert tags(RECORDING_ONLY, ["hide-input"]) == ["hide-cell"]  # the tag of an earlier version is replaced
    assert tags("h = train(m)\nrecorder.record('KD', 'x (%)', h.last_acc)") == ["hide-input"]
    # a setup cell that creates the Recorder was folded by an earlier version: it is shown again
    assert tags("import kdtools\nrecorder = Recorder('lesson')", ["hide-input", "nbval-check-output"]) == \
        ["nbval-check-output"]


def test_mixed_recording_cells_are_listed(tmp_path):
    path = tmp_path / "a.ipynb"
    cells = [{"cell_type": "code", "metadata": {}, "source": RECORDING_ONLY},
             {"cell_type": "code", "metadata": {}, "source": ["h = train(m)\n", "recorder.record('a', 'b (%)', 1)"]}]
    path.write_text(json.dumps(_notebook(cells)))
    assert sync_notebooks.mixed_recording_cells(path) == [1]
