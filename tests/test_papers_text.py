"""Captions and citations: which panel each piece of text is about (pure text, no PDFs)."""

from __future__ import annotations

import pytest

from napari_fracto.papers.captions import caption_number, caption_parts
from napari_fracto.papers.citations import citations, excerpts


@pytest.mark.parametrize(
    ("text", "cited"),
    [
        ("as seen in Fig. 3b the crack", {("3", "b")}),
        ("Figure 3(b) shows dimples", {("3", "b")}),
        ("Figure 3 (b) and", {("3", "b")}),
        ("Figs. 2–4 show the origin", {("2", None), ("3", None), ("4", None)}),
        ("Figs. 2-4 show the origin", {("2", None), ("3", None), ("4", None)}),
        ("Fig. 3a–c", {("3", "a"), ("3", "b"), ("3", "c")}),
        ("Figs. 2b and 4", {("2", "b"), ("4", None)}),
        ("Fig. 5(a, c)", {("5", "a"), ("5", "c")}),
        ("Fig. 1a,b show", {("1", "a"), ("1", "b")}),
        ("FIG. 7 shows", {("7", None)}),
        ("in Fig. 2 a large crack runs", {("2", None)}),  # the article "a" is not panel 2a
        ("Fig. 3 shows the surface", {("3", None)}),
        ("Figures are in the appendix", set()),
        ("the figure of merit", set()),
    ],
)
def test_citations_name_the_figures_and_panels_cited(text, cited):
    assert citations(text) == cited


def test_caption_parts_give_each_panel_its_own_text_and_share_the_lead():
    lead, parts = caption_parts(
        "Fig. 3. Fracture surface of alumina. (a) Overview of the origin; (b) cleavage facets with river "
        "patterns; (c) intergranular facets."
    )
    assert lead == "Fracture surface of alumina."
    assert parts == {
        "a": "Overview of the origin",
        "b": "cleavage facets with river patterns",
        "c": "intergranular facets",
    }
    lead, parts = caption_parts("Figure 2: SEM. (a, b) low magnification and (c–d) detail of striations.")
    assert parts["a"] == parts["b"] == "low magnification"
    assert parts["c"] == parts["d"] == "detail of striations"
    assert caption_parts("Fig. 1. a) overview b) detail")[1] == {"a": "overview", "b": "detail"}
    assert caption_parts("Fig. 9. One micrograph of a dimpled surface.") == (
        "One micrograph of a dimpled surface.",
        {},
    )


def test_caption_number_only_for_figure_captions():
    assert caption_number("Fig. 3. Fracture") == "3"
    assert caption_number("Figure 12: x") == "12"
    assert caption_number("FIG. 4 | x") == "4"
    assert caption_number("Figures are shown") is None
    assert caption_number("Table 2. Properties") is None


def test_excerpts_put_the_paragraphs_naming_the_panel_first():
    paragraphs = [
        "The whole surface is shown in Fig. 3 and discussed below.",
        "Striations are clear in Fig. 3b near the origin.",
        "Nothing about figures here at all, only text.",
        "Dimples dominate in Fig. 3c.",
    ]
    assert excerpts(paragraphs, "3", "b") == [paragraphs[1], paragraphs[0]]
    assert excerpts(paragraphs, "3", "c") == [paragraphs[3], paragraphs[0]]
    assert excerpts(paragraphs, "4", "a") == []
    long = "Filler sentence here. " * 80 + "The key sentence cites Fig. 3b. " + "More filler. " * 80
    (cut,) = excerpts([long], "3", "b")
    assert "Fig. 3b" in cut
    assert len(cut) < len(long) / 3
