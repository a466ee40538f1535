"""The taxonomy figure: relative links as Sphinx builds them, targets that exist, links inside the SVG."""
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from kdtools import taxonomy as tx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAGE = "notebooks/01_foundations/general_recipe_and_taxonomy"


def test_relative_url_by_hand():
    assert tx.relative_url(PAGE, "book/02_response") == "../../book/02_response.html"
    assert tx.relative_url(PAGE, "notebooks/01_foundations/inference_gap") == "inference_gap.html"
    assert tx.relative_url("book/01_foundations", "book/bibliography") == "bibliography.html"
    assert tx.relative_url("book/01_foundations", "notebooks/02_response/vanilla_kd") == \
        "../notebooks/02_response/vanilla_kd.html"
    assert tx.relative_url("intro", "book/setup") == "book/setup.html"


@pytest.mark.parametrize("bad", ["", "/book/intro", "book/intro.md", "notebooks/x.ipynb", "book/intro.html"])
def test_relative_url_rejects_paths_that_are_not_documents(bad):
    with pytest.raises(ValueError, match="to_doc must be a document path"):
        tx.relative_url(PAGE, bad)


def test_every_box_resolves_to_a_page_of_the_book():
    toc = (ROOT / "_toc.yml").read_text()
    for box, doc in tx.boxes_with_targets(ROOT):
        assert tx.source_file(doc, ROOT) is not None, (box.label, doc)
        assert f"file: {doc}\n" in toc or doc == "book/intro", f"{doc} (box {box.label!r}) is not in _toc.yml"
        assert box.group in tx.GROUPS
    groups = {box.group for box in tx.TAXONOMY}
    assert groups == set(tx.GROUPS)
    labels = {box.label.split("\n")[0] for box in tx.TAXONOMY}
    assert {"Response-based", "Feature-based", "Relation-based", "Offline", "Online", "Self-distillation"} <= labels


def test_missing_notebook_falls_back_to_the_next_target(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "01_foundations.md").write_text("# M1\n")
    box = tx.Box("x", "foundations", ("notebooks/01_foundations/not_written", "book/01_foundations"))
    assert tx.resolve_target(box, tmp_path) == "book/01_foundations"
    (tmp_path / "notebooks" / "01_foundations").mkdir(parents=True)
    (tmp_path / "notebooks" / "01_foundations" / "not_written.ipynb").write_text("{}")
    assert tx.resolve_target(box, tmp_path) == "notebooks/01_foundations/not_written"
    assert tx.boxes_with_targets(None, [box]) == [(box, "notebooks/01_foundations/not_written")]
    with pytest.raises(ValueError, match="box 'y': none of its targets"):
        tx.resolve_target(tx.Box("y", "scheme", ("book/nowhere",)), tmp_path)


def test_svg_holds_one_link_per_box_and_no_prolog():
    links = [(tx.Box("Alpha", "knowledge", ("book/02_response",)), "book/02_response"),
             (tx.Box("Beta", "algorithm", ("book/bibliography",), covered=False), "book/bibliography"),
             (tx.Box("Gamma", "foundations", ("book/01_foundations",)), "book/01_foundations")]
    fig = tx.draw_taxonomy(links, PAGE)
    svg = tx.figure_to_svg(fig)
    assert svg.startswith("<svg") and 'width="100%"' in svg and "<?xml" not in svg
    found = tx.svg_links(svg)
    # patch and text of each box, plus the root box
    for url in ("../../book/02_response.html", "../../book/bibliography.html", "../../book/01_foundations.html"):
        assert found.count(url) == 2, (url, found)
    assert tx.unique(found)[0] == "../../book/intro.html"
    with pytest.raises(ValueError, match="unknown groups"):
        tx.draw_taxonomy([(tx.Box("z", "nonsense", ("book/intro",)), "book/intro")], PAGE)


def test_svg_links_reads_both_attribute_spellings():
    svg = '<svg><a xlink:href="a.html"><path/></a><a target="_top" href="b.html#x">t</a></svg>'
    assert tx.svg_links(svg) == ["a.html", "b.html#x"]
    assert tx.unique(["a", "b", "a"]) == ["a", "b"]
