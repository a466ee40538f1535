"""The taxonomy of knowledge distillation of Gou et al. (2021) as a clickable figure.

Gou, Yu, Maybank and Tao, *Knowledge Distillation: A Survey*, IJCV 129 (2021), sort methods along three
axes: the **knowledge** that is transferred (response-, feature- or relation-based, their section 2), the
**distillation scheme** (offline, online, self-distillation, section 3) and the **algorithm** (adversarial,
multi-teacher, cross-modal, graph-based, attention-based, data-free, quantized, lifelong, NAS-based,
section 5). :data:`TAXONOMY` lists every box with the page of the course that covers it;
:func:`draw_taxonomy` draws them with matplotlib and :func:`figure_to_svg` turns the figure into SVG
text in which each box is a link (matplotlib's ``Artist.set_url``), to be shown inline with
``IPython.display.HTML``.

Targets are *documents* of the book: source paths relative to the repository root without their
extension (``"book/02_response"``, ``"notebooks/01_foundations/inference_gap"``), as in ``_toc.yml``.
"""
from __future__ import annotations

import io
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = ["Box", "TAXONOMY", "GROUPS", "relative_url", "source_file", "resolve_target", "boxes_with_targets",
           "draw_taxonomy", "figure_to_svg", "svg_links"]

SOURCE_SUFFIXES = (".md", ".ipynb")


@dataclass(frozen=True)
class Box:
    """One box of the figure: its ``label``, its ``group`` (a key of :data:`GROUPS`) and the documents
    that cover it, best first (the first that exists is linked, see :func:`resolve_target`).
    ``covered=False`` marks a family the course only cites; its box links to the bibliography."""

    label: str
    group: str
    targets: Tuple[str, ...]
    covered: bool = True


# Group key -> title shown above its column (the section of Gou et al. 2021 in brackets).
GROUPS: Dict[str, str] = {
    "knowledge": "Knowledge (Gou et al. §2)",
    "scheme": "Distillation schemes (§3)",
    "algorithm": "Distillation algorithms (§5)",
    "foundations": "Foundations: Module 1 of this course",
}

_M1 = "notebooks/01_foundations/"
_M5 = "notebooks/05_paradigms/"
TAXONOMY: Tuple[Box, ...] = (
    Box("Response-based\n(logits, soft targets)", "knowledge", ("book/02_response",)),
    Box("Feature-based\n(hints, attention maps)", "knowledge", ("book/03_feature",)),
    Box("Relation-based\n(FSP, distances, angles)", "knowledge", ("book/04_relation",)),
    Box("Offline\n(pretrained teacher)", "scheme", (_M1 + "general_recipe_and_taxonomy", "book/02_response")),
    Box("Online\n(mutual learning)", "scheme", (_M5 + "deep_mutual_learning", "book/05_paradigms")),
    Box("Self-distillation\n(born-again)", "scheme", (_M5 + "born_again", "book/05_paradigms")),
    Box("Multi-teacher\n(ensembles)", "algorithm", (_M1 + "model_compression", "book/01_foundations")),
    Box("Cross-modal", "algorithm", (_M5 + "cross_modal", "book/05_paradigms")),
    Box("Attention-based", "algorithm", ("book/03_feature",)),
    Box("Graph-based", "algorithm", ("book/04_relation",)),
    Box("Data-free", "algorithm", (_M5 + "data_free_kd", "book/05_paradigms")),
    Box("Adversarial", "algorithm", ("book/bibliography",), covered=False),
    Box("Quantized", "algorithm", ("book/bibliography",), covered=False),
    Box("Lifelong", "algorithm", ("book/bibliography",), covered=False),
    Box("NAS-based", "algorithm", ("book/bibliography",), covered=False),
    Box("Inference gap", "foundations", (_M1 + "inference_gap", "book/01_foundations")),
    Box("Privileged\ninformation", "foundations", (_M1 + "lupi", "book/01_foundations")),
    Box("Model\ncompression", "foundations", (_M1 + "model_compression", "book/01_foundations")),
    Box("Dark knowledge,\ntemperature", "foundations", (_M1 + "dark_knowledge_and_temperature", "book/01_foundations")),
    Box("KD vs label\nsmoothing", "foundations", (_M1 + "kd_vs_label_smoothing", "book/01_foundations")),
    Box("General recipe,\ntaxonomy", "foundations", (_M1 + "general_recipe_and_taxonomy", "book/01_foundations")),
)


def relative_url(from_doc: str, to_doc: str, suffix: str = ".html") -> str:
    """The link from the built page of ``from_doc`` to that of ``to_doc``, as Sphinx writes pages.

    Both are documents relative to the book's root without extension; the built page of ``a/b/c`` is
    ``_build/html/a/b/c.html``. Example: ``relative_url("notebooks/01_foundations/x", "book/02_response")``
    is ``"../../book/02_response.html"``.
    """
    for name, doc in (("from_doc", from_doc), ("to_doc", to_doc)):
        if not doc or doc.startswith("/") or doc.endswith(SOURCE_SUFFIXES + (".html",)):
            raise ValueError(f"{name} must be a document path relative to the book root without extension, "
                             f"got {doc!r}")
    return posixpath.relpath(to_doc + suffix, posixpath.dirname(from_doc) or ".")


def source_file(doc: str, root: Path) -> Optional[Path]:
    """The ``.md`` or ``.ipynb`` file of document ``doc`` under ``root``, or ``None`` if there is none."""
    for suffix in SOURCE_SUFFIXES:
        path = Path(root) / (doc + suffix)
        if path.is_file():
            return path
    return None


def resolve_target(box: Box, root: Path) -> str:
    """The first of ``box.targets`` whose source exists under ``root``: a notebook not written yet falls
    back to its module's page. Raises ``ValueError`` naming the box if none exists."""
    for doc in box.targets:
        if source_file(doc, root) is not None:
            return doc
    raise ValueError(f"box {box.label!r}: none of its targets {list(box.targets)} exists under {root}")


def boxes_with_targets(root: Optional[Path], boxes: Sequence[Box] = TAXONOMY) -> List[Tuple[Box, str]]:
    """Every box with the document it links to (see :func:`resolve_target`). ``root=None`` (no checkout of
    the course at hand, e.g. kdtools installed with pip) links each box's first target unchecked."""
    if root is None:
        return [(box, box.targets[0]) for box in boxes]
    return [(box, resolve_target(box, root)) for box in boxes]


_COLOURS = {"knowledge": "#d6e9f8", "scheme": "#fde4c8", "algorithm": "#dff3d8", "foundations": "#efe0f5"}


def draw_taxonomy(links: Sequence[Tuple[Box, str]], page: str, figsize=(11.0, 7.2)):
    """Draw the taxonomy; each box (patch and text) gets ``set_url`` to its target relative to ``page``.

    links: ``(box, document)`` pairs, e.g. from :func:`boxes_with_targets`; page: the document that shows
    the figure (the links are relative to its built HTML page). Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    unknown = sorted({box.group for box, _ in links} - set(GROUPS))
    if unknown:
        raise ValueError(f"links contain boxes of unknown groups {unknown}; known: {list(GROUPS)}")
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_xlim(0, 3)
    ax.set_ylim(0.0, 1.0)
    ax.axis("off")

    def box_at(x, y, w, h, text, colour, url, dashed=False, size=9.0, weight="normal"):
        patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.005,rounding_size=0.015",
                               facecolor=colour, edgecolor="0.35", linewidth=1.0,
                               linestyle="--" if dashed else "-")
        patch.set_url(url)
        ax.add_patch(patch)
        label = ax.text(x, y, text, ha="center", va="center", fontsize=size, weight=weight,
                        color="0.45" if dashed else "black")
        label.set_url(url)

    root_y, head_y = 0.95, 0.84
    box_at(1.5, root_y, 1.1, 0.07, "Knowledge distillation (Gou et al., 2021)", "white",
           relative_url(page, "book/intro"), size=11, weight="bold")
    tree = [g for g in ("knowledge", "scheme", "algorithm")]
    for column, group in enumerate(tree):
        x = 0.5 + column
        ax.annotate("", xy=(x, head_y + 0.03), xytext=(1.5, root_y - 0.035),
                    arrowprops=dict(arrowstyle="-", color="0.5"))
        ax.text(x, head_y, GROUPS[group], ha="center", va="center", fontsize=10, weight="bold")
        members = [(box, doc) for box, doc in links if box.group == group]
        if group == "algorithm":  # nine boxes: two narrow columns
            for i, (box, doc) in enumerate(members):
                bx = x - 0.23 + 0.46 * (i % 2)
                by = head_y - 0.09 - 0.082 * (i // 2)
                box_at(bx, by, 0.42, 0.065, box.label, _COLOURS[group] if box.covered else "#f2f2f2",
                       relative_url(page, doc), dashed=not box.covered, size=8.5)
        else:
            for i, (box, doc) in enumerate(members):
                box_at(x, head_y - 0.11 - 0.13 * i, 0.8, 0.1, box.label, _COLOURS[group],
                       relative_url(page, doc))
    foundations = [(box, doc) for box, doc in links if box.group == "foundations"]
    if foundations:
        ax.text(1.5, 0.3, GROUPS["foundations"], ha="center", va="center", fontsize=10, weight="bold")
        width = 3.0 / len(foundations)
        for i, (box, doc) in enumerate(foundations):
            box_at(width * (i + 0.5), 0.2, width - 0.06, 0.12, box.label, _COLOURS["foundations"],
                   relative_url(page, doc), size=8.5)
    ax.text(1.5, 0.08, "Each box links to the page of the course that covers it; grey dashed boxes are only cited "
            "(they link to the bibliography).", ha="center", va="center", fontsize=8.5, style="italic")
    return fig


def figure_to_svg(fig) -> str:
    """The figure as SVG text ready to inline in HTML: no XML prolog or DOCTYPE, width scaled to the page."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    # a fixed width in points would overflow narrow pages; the viewBox keeps the aspect ratio
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 width="100%"', svg, count=1)


def svg_links(svg: str) -> List[str]:
    """Every link target in SVG text (``xlink:href`` or ``href`` of ``<a>`` elements), in document order."""
    return re.findall(r'<a\s[^>]*?(?:xlink:)?href="([^"]+)"', svg)


def unique(items: Iterable[str]) -> List[str]:
    """``items`` without repeats, first occurrences kept in order."""
    seen, out = set(), []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
