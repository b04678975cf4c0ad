"""overlay.py: findings -> Shapes layer data, features, colours, text; and the one-line verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_fracto.findings import AnalysisResult, Box, Finding
from napari_fracto.overlay import (
    CANVAS_LINE_CHARS,
    FALLBACK_COLOUR,
    PALETTE,
    box_to_rectangle,
    canvas_text,
    findings_layer_name,
    findings_to_shapes,
    label_colour,
    label_definition,
    unknown_labels_text,
    verdict_text,
)
from napari_fracto.vocabulary import Label, Vocabulary

FRACTURE = Vocabulary(
    "fracture",
    "1.0",
    "SEM fractography",
    (
        Label("dimples", "Cup-shaped microvoids"),
        Label("cleavage facets", "Flat facets"),
        Label("river patterns", "Converging steps on cleavage facets"),
    ),
)
PTYCHO = Vocabulary(
    "ptychography",
    "1.0",
    "Ptychography",
    (
        Label("Grid artifacts", "Periodic raster at the scan step"),
        Label("Phase wrapping", "2 pi jumps"),
        Label("Noise", "Grainy texture"),
        Label("No obvious artifacts", "Clean", exclusive=True),
    ),
)


def _result(findings, task="fracture", **kw) -> AnalysisResult:
    defaults = dict(
        task=task,
        findings=findings,
        raw_text="{}",
        backend="scripted",
        model="tiny",
        adapter=None,
        prompt_version="p1",
        vocabulary_version="1.0",
        seconds=0.1,
        image_shape=(100, 200),
    )
    defaults.update(kw)
    return AnalysisResult(**defaults)


def test_box_becomes_row_col_rectangle():
    rect = box_to_rectangle(Box(x1=10, y1=20, x2=30, y2=60))
    np.testing.assert_array_equal(rect, [[20, 10], [20, 30], [60, 30], [60, 10]])


def test_box_on_a_stack_plane_gets_the_plane_coordinates():
    rect = box_to_rectangle(Box(1, 2, 3, 4), leading=(5,))
    assert rect.shape == (4, 3)
    assert (rect[:, 0] == 5).all()
    np.testing.assert_array_equal(rect[0, 1:], [2, 1])


def test_only_boxed_findings_become_shapes_with_features_and_colours():
    result = _result(
        [
            Finding("cleavage facets", 0.8, Box(0, 0, 50, 40)),
            Finding("dimples", None, None),  # image-level: no rectangle
            Finding("river patterns", None, Box(100, 10, 150, 90)),
        ]
    )
    spec = findings_to_shapes(result, FRACTURE, image_name="sem", scale=(2.0, 2.0), translate=(5, 6))
    assert spec.name == "sem findings"
    assert len(spec.data) == 2
    np.testing.assert_array_equal(spec.data[1], [[10, 100], [10, 150], [90, 150], [90, 100]])
    assert spec.features["label"] == ["cleavage facets", "river patterns"]
    assert spec.features["confidence"][0] == pytest.approx(0.8)
    assert math.isnan(spec.features["confidence"][1])
    # A missing confidence shows as the bare label, never as "nan".
    assert spec.features["score"] == [" 0.80", ""]
    assert spec.text["string"] == "{label}{score}"
    assert spec.features["backend"] == ["scripted", "scripted"]
    assert spec.features["adapter"] == ["", ""]
    assert spec.features["prompt_version"] == ["p1", "p1"]
    assert spec.edge_color == [PALETTE[1], PALETTE[2]]
    kwargs = spec.layer_kwargs()
    assert kwargs["scale"] == (2.0, 2.0)
    assert kwargs["translate"] == (5.0, 6.0)
    assert kwargs["shape_type"] == "rectangle"
    assert kwargs["metadata"]["napari_fracto"] == result.to_record()


def test_label_colour_depends_on_vocabulary_order_not_on_the_answer():
    first = findings_to_shapes(_result([Finding("river patterns", 0.5, Box(0, 0, 1, 1))]), FRACTURE)
    second = findings_to_shapes(
        _result([Finding("dimples", 0.5, Box(0, 0, 1, 1)), Finding("river patterns", 0.5, Box(0, 0, 1, 1))]),
        FRACTURE,
    )
    assert first.edge_color[0] == second.edge_color[1] == label_colour("river patterns", FRACTURE)
    assert label_colour("not a label", FRACTURE) == FALLBACK_COLOUR
    assert len(set(PALETTE)) == len(PALETTE) >= 12  # enough distinct colours for PtychoBench's classes


def test_no_boxes_gives_an_empty_layer_spec():
    spec = findings_to_shapes(_result([Finding("dimples", 0.9)]), FRACTURE, image_name="img")
    assert spec.data == []
    kwargs = spec.layer_kwargs()
    assert kwargs["ndim"] == 2
    assert "edge_color" not in kwargs


def test_shapes_spec_builds_a_real_napari_layer():
    from napari.layers import Shapes

    result = _result(
        [Finding("dimples", 0.25, Box(10, 20, 30, 40)), Finding("cleavage facets", None, Box(0, 0, 5, 5))]
    )
    spec = findings_to_shapes(result, FRACTURE, image_name="img", plane=(3,))
    layer = Shapes(spec.data, **spec.layer_kwargs())
    assert layer.nshapes == 2
    assert layer.ndim == 3
    np.testing.assert_allclose(layer.edge_color[0][:3], [0xE6 / 255, 0x9F / 255, 0x00])
    assert list(layer.text.values) == ["dimples 0.25", "cleavage facets"]
    assert list(layer.features["label"]) == ["dimples", "cleavage facets"]


@pytest.mark.parametrize(
    ("task", "vocab", "findings", "expected"),
    [
        (
            "ptychography",
            PTYCHO,
            [Finding("Noise"), Finding("Grid artifacts", 0.9, Box(0, 0, 1, 1)), Finding("Phase wrapping")],
            "3 artifacts flagged: Grid artifacts, Phase wrapping, Noise",
        ),
        ("ptychography", PTYCHO, [Finding("Noise")], "1 artifact flagged: Noise"),
        ("ptychography", PTYCHO, [Finding("No obvious artifacts")], "No obvious artifacts"),
        ("ptychography", PTYCHO, [], "No obvious artifacts"),
        (
            "fracture",
            FRACTURE,
            [Finding("river patterns"), Finding("cleavage facets")],
            "Found: cleavage facets, river patterns",
        ),
        ("fracture", FRACTURE, [], "No features recognised"),
    ],
)
def test_verdict(task, vocab, findings, expected):
    assert verdict_text(_result(findings, task=task), vocab) == expected


def test_verdict_on_unreadable_answer_says_why():
    result = _result([], parse_ok=False, problems=["no JSON object found"])
    assert verdict_text(result, FRACTURE) == "The model's answer could not be read: no JSON object found"


def test_unknown_labels_are_spelled_out():
    assert (
        unknown_labels_text(_result([], unknown_labels=["striations?"]))
        == "Not in the vocabulary: striations?"
    )
    assert unknown_labels_text(_result([])) == ""


def test_layer_name():
    assert findings_layer_name("Run1084 phase") == "Run1084 phase findings"


def test_canvas_text_wraps_long_lines_and_lists_each_whole_image_label_once():
    findings = [Finding("river patterns"), Finding("river patterns"), Finding("dimples", box=Box(0, 0, 5, 5))]
    verdict = "Found: " + ", ".join(["river patterns"] * 6)
    text = canvas_text(_result(findings, evidence={"disagreements": ["a", "b"]}), verdict)
    lines = text.splitlines()
    assert all(len(line) <= CANVAS_LINE_CHARS for line in lines)
    assert len(lines) > 3  # the verdict alone needs several canvas lines
    assert text.count("Whole image: river patterns") == 1
    assert "dimples" not in text.split("Whole image:")[1]  # a boxed finding is on the canvas already
    assert "Evidence disagrees (2)" in text


def test_label_definition_is_empty_for_a_label_the_vocabulary_does_not_know():
    assert label_definition(FRACTURE, "dimples") == "Cup-shaped microvoids"
    assert label_definition(FRACTURE, "no such label") == ""
