import json
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT))
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
    assert "colab.research.google.com/github/me/course/blob/dev/notebooks/01_x/a.ipynb" in cells[0]["source"]
    assert 'kdtools @ git+https://github.com/me/course@dev' in cells[1]["source"]
    assert 'if "google.colab" in sys.modules' in cells[1]["source"]


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
    assert sync_notebooks.reader_facing(recording)["metadata"]["tags"] == ["hide-input"]
    plain = {"cell_type": "code", "metadata": {}, "source": "x = 1  # a NBVAL_CHECK_OUTPUT mention"}
    assert sync_notebooks.reader_facing(plain) is plain
    text = {"cell_type": "markdown", "metadata": {}, "source": "# NBVAL_SKIP"}
    assert sync_notebooks.reader_facing(text) is text


def test_committed_notebooks_show_no_nbval_comments():
    for path in sync_notebooks.notebooks():
        for cell in json.loads(path.read_text())["cells"]:
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            assert "# NBVAL_" not in text, f"{path.name}: use the nbval-* cell tags (make sync converts them)"
