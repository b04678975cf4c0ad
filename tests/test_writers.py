"""The findings writer: JSON and CSV with pixel boxes, read back; through npe2 as napari's File menu does."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_fracto.findings import AnalysisResult, Box, Finding
from napari_fracto.io.writers import WriterError, write_findings
from napari_fracto.overlay import findings_to_shapes
from napari_fracto.review.layer import review_shapes
from napari_fracto.review.session import ReviewSession
from napari_fracto.vocabulary import load_vocabulary

VOCAB = load_vocabulary("fracture")
LABELS = VOCAB.names()


def _result() -> AnalysisResult:
    return AnalysisResult(
        task="fracture",
        findings=[
            Finding(LABELS[0], 0.9, Box(10, 20, 40, 60)),
            Finding(LABELS[1], None, Box(5.5, 0, 9, 7.25)),
            Finding(LABELS[2], 0.3, None),
        ],
        raw_text="the answer",
        backend="openai",
        model="m",
        adapter=None,
        prompt_version="p1",
        vocabulary_version="1.0",
        seconds=1.0,
        image_shape=(80, 90),
        source="/data/s1.tif",
    )


def _attributes(spec) -> dict:
    return {"name": spec.name, "metadata": spec.metadata, "features": spec.features}


def test_json_round_trip_of_the_analyze_layer(tmp_path):
    spec = findings_to_shapes(_result(), VOCAB, image_name="s1")
    out = write_findings(str(tmp_path / "f.json"), spec.data, _attributes(spec))
    doc = json.loads((tmp_path / "f.json").read_text())
    assert out == [str(tmp_path / "f.json")]
    assert [(f["label"], f["box"], f["confidence"]) for f in doc["findings"]] == [
        (LABELS[0], [10, 20, 40, 60], 0.9),
        (LABELS[1], [5.5, 0, 9, 7.25], None),
        (LABELS[2], None, None),  # the image-level label from the model's record
    ]
    assert doc["source"] == "/data/s1.tif"
    assert doc["model"]["model"] == "m"
    assert doc["raw_text"] == "the answer"


def test_csv_of_a_reviewed_layer_has_the_corrections(tmp_path):
    session = ReviewSession("fracture", _result(), labels=LABELS)
    session.reject(2)  # the image-level label was wrong
    session.add_label(LABELS[3])
    session.move_box(0, Box(11, 21, 41, 61))
    spec = review_shapes(session, VOCAB, image_name="s1")
    write_findings(str(tmp_path / "f.csv"), spec.data, _attributes(spec))
    with open(tmp_path / "f.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["label"], r["x1"], r["y1"], r["x2"], r["y2"]) for r in rows] == [
        (LABELS[0], "11.0", "21.0", "41.0", "61.0"),
        (LABELS[1], "5.5", "0.0", "9.0", "7.25"),
        (LABELS[3], "", "", "", ""),
    ]
    assert rows[0]["source"] == "/data/s1.tif"


def test_stack_planes_and_plain_shapes_layers(tmp_path):
    spec = findings_to_shapes(_result(), VOCAB, image_name="stack", plane=(3,))
    write_findings(str(tmp_path / "p.json"), spec.data, _attributes(spec))
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["findings"][0]["plane"] == [3]
    assert doc["findings"][0]["box"] == [10, 20, 40, 60]
    # a Shapes layer the user made, no features or metadata: boxes with empty labels
    ellipse = np.array([[0, 5], [0, 15], [10, 15], [10, 5]], float)
    write_findings(str(tmp_path / "u.csv"), [ellipse], {"name": "mine"})
    with open(tmp_path / "u.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [
        {
            "label": "",
            "confidence": "",
            "x1": "5.0",
            "y1": "0.0",
            "x2": "15.0",
            "y2": "10.0",
            "plane": "",
            "source": "",
        }
    ]


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(WriterError, match=r"use \.json or \.csv"):
        write_findings(str(tmp_path / "f.txt"), [], {})
    with pytest.raises(WriterError, match="unusable vertices"):
        write_findings(str(tmp_path / "f.json"), [np.array([[np.nan, 1], [2, 3]])], {})
    assert not (tmp_path / "f.json").exists()


def test_napari_file_menu_path_uses_the_writer(make_napari_viewer, tmp_path):
    pytest.importorskip("napari")
    viewer = make_napari_viewer()
    spec = findings_to_shapes(_result(), VOCAB, image_name="s1")
    layer = viewer.add_shapes(spec.data, **spec.layer_kwargs())
    written = layer.save(str(tmp_path / "via_napari.csv"), plugin="napari-fracto")
    assert written == [str(tmp_path / "via_napari.csv")]
    with open(tmp_path / "via_napari.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == [LABELS[0], LABELS[1], LABELS[2]]
