"""Sphinx extension of the KD Companion book: what readers see, fixed where the themes get it wrong.

* **Launch buttons open the student copy.** sphinx-book-theme builds its Colab/Binder URLs from the
  page's own path (``notebooks/...``), the instructor copy with every solution. The URLs are rewritten
  to the generated student copy (``student/...``, see ``tools/make_student.py``); the instructor copy
  stays reachable through the repository button.
* **No duplicate scripts.** Sphinx 7.4 emits some ``add_js_file`` snippets twice (sphinx-thebe's
  ``const THEBE_JS_URL = ...``, sphinx-togglebutton's selector); the second ``const`` is a
  ``SyntaxError`` in the console of every page. Identical scripts are kept once.
* **One viewport tag.** Sphinx's basic layout, pydata-sphinx-theme's layout and docutils each write
  ``<meta name="viewport">``; the first two are hard-coded outside any template block, so the
  finished pages are rewritten to keep only the first.
* **Figure alt texts.** myst-nb uses the image's file path as its alt text unless the cell's metadata
  gives one (``"mystnb": {"image": {"alt": "..."}}``); a path is replaced by a neutral sentence, and
  ``tools/check_layout.py`` lists the figures that still need a real description.
* ``book/_static/kd_book.css``: outputs wrap, tables and wide content scroll inside their own box;
  ``kd_book.js`` marks printed tables, which keep their columns (and scroll in their box) on a phone.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parents[1] / "_static"
INSTRUCTOR_DIR, STUDENT_DIR = "notebooks", "student"
FALLBACK_ALT = "Figure produced by the code cell above"

# The path inside a Colab URL (.../github/OWNER/REPO/blob/BRANCH/<path>) or a Binder urlpath (tree/<path>).
_LAUNCH_PATH = re.compile(r"(?P<lead>/blob/[^/?#]+/|urlpath=(?:lab/)?tree/)" + INSTRUCTOR_DIR + r"/")
_VIEWPORT = re.compile(r"[ \t]*<meta name=\"viewport\"[^>]*>[ \t]*\n?")
_IMAGE_PATH = re.compile(r"(^|/)[^/\s]+\.(png|jpe?g|gif|svg|webp)$", re.I)


def student_launch_url(url: str) -> str:
    """The launch URL of a notebook page with the instructor path replaced by the student copy's."""
    return _LAUNCH_PATH.sub(lambda m: m.group("lead") + STUDENT_DIR + "/", url, count=1)


def _launch_groups(header_buttons: Iterable[dict]) -> List[dict]:
    return [b for b in header_buttons if b.get("type") == "group" and b.get("label") == "launch-buttons"]


def point_launch_buttons_at_student_copy(app: Sphinx, pagename: str, templatename: str,
                                         context: Dict[str, Any], doctree: Optional[nodes.document]) -> None:
    if not pagename.startswith(INSTRUCTOR_DIR + "/"):
        return
    groups = _launch_groups(context.get("header_buttons", []))
    if not groups:
        return
    student_copy = Path(app.srcdir) / STUDENT_DIR / (pagename[len(INSTRUCTOR_DIR) + 1:] + ".ipynb")
    if not student_copy.is_file():
        LOGGER.warning(f"{pagename}: no student copy at {student_copy.relative_to(app.srcdir)}; "
                       "run `make student` (the launch buttons would open the instructor copy)",
                       type="kd_book", subtype="student_copy")
        return
    for group in groups:
        for button in group.get("buttons", []):
            if button.get("type") == "link" and "url" in button:
                button["url"] = student_launch_url(button["url"])
                button["tooltip"] = f"{button.get('tooltip', '')} (student version: exercises without solutions)"


def _asset_key(asset: Any) -> tuple:
    attributes = getattr(asset, "attributes", {}) or {}
    # an inline script's filename is None or "" depending on who added it
    return (str(getattr(asset, "filename", asset) or ""),
            tuple(sorted((k, str(v)) for k, v in attributes.items() if k != "priority")))


def unique_assets(assets: Iterable[Any]) -> List[Any]:
    """``assets`` without repeats (same file or inline body and attributes, whatever their priority)."""
    seen, kept = set(), []
    for asset in assets:
        key = _asset_key(asset)
        if key not in seen:
            seen.add(key)
            kept.append(asset)
    return kept


def drop_duplicate_assets(app: Sphinx, pagename: str, templatename: str, context: Dict[str, Any],
                          doctree: Optional[nodes.document]) -> None:
    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = unique_assets(context[key])


def single_viewport(html: str) -> str:
    """``html`` with every ``<meta name="viewport">`` after the first removed."""
    seen = []

    def keep_first(match: re.Match) -> str:
        seen.append(match)
        return match.group(0) if len(seen) == 1 else ""

    return _VIEWPORT.sub(keep_first, html)


def rewrite_finished_pages(app: Sphinx, exception: Optional[Exception]) -> None:
    if exception is not None or app.builder.format != "html":
        return
    for page in Path(app.outdir).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        fixed = single_viewport(text)
        if fixed != text:
            page.write_text(fixed, encoding="utf-8")


def is_path_alt(alt: Optional[str], uri: str = "") -> bool:
    """True when an image's alt text is missing or only its file path (myst-nb's default)."""
    return not alt or alt == uri or bool(_IMAGE_PATH.search(alt.strip()))


def _in_cell_output(node: nodes.Node) -> bool:
    while node is not None:
        if isinstance(node, nodes.container) and "cell_output" in node.get("classes", []):
            return True
        node = node.parent
    return False


def replace_path_alt_texts(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """A notebook figure without an alt text of its own gets a neutral sentence instead of its file path."""
    for image in doctree.findall(nodes.image):
        if _in_cell_output(image) and is_path_alt(image.get("alt"), image.get("uri", "")):
            image["alt"] = FALLBACK_ALT


def add_static(app: Sphinx) -> None:
    app.config.html_static_path.append(str(STATIC))


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", add_static)
    app.add_css_file("kd_book.css")
    app.add_js_file("kd_book.js")
    app.connect("doctree-resolved", replace_path_alt_texts)
    # after sphinx-book-theme has built its launch buttons (priority 501)
    app.connect("html-page-context", point_launch_buttons_at_student_copy, priority=600)
    app.connect("html-page-context", drop_duplicate_assets, priority=900)
    app.connect("build-finished", rewrite_finished_pages)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
