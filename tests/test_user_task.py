"""A third task defined by a user's TOML file only: weld defects, labels without boxes, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_fracto.batch import run_batch
from napari_fracto.dataset import Dataset
from napari_fracto.dataset.export import export_jsonl
from napari_fracto.dataset.importers import import_class_folders
from napari_fracto.testing.scripted import ScriptedBackend

WELD = """
title = "Weld radiography"
description = "X-ray radiographs of butt welds in steel plate. Name the weld defects that are visible."
boxes = false

[[labels]]
name = "porosity"
definition = "Round dark spots from gas trapped in the weld metal."
synonyms = ["gas pores", "blowholes"]

[[labels]]
name = "lack of penetration"
definition = "A dark straight line along the weld root where the metal did not fuse through."
synonyms = ["incomplete penetration", "LOP"]

[[labels]]
name = "no defect"
definition = "A sound weld: none of the other labels apply."
exclusive = true
"""


@pytest.fixture
def weld(tmp_path, monkeypatch):
    folder = tmp_path / "vocabularies"
    folder.mkdir()
    (folder / "weld-defects.toml").write_text(WELD, encoding="utf-8")
    monkeypatch.setenv("NAPARI_FRACTO_VOCAB_DIR", str(folder))
    return "weld-defects"


def _png(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64), dtype=np.uint8)).save(path)


def test_the_task_is_asked_in_its_own_words_without_boxes(weld, tmp_path):
    _png(tmp_path / "images" / "w1.png", 0)
    backend = ScriptedBackend('{"labels": [{"label": "LOP", "confidence": 0.7}]}')
    summary = run_batch([tmp_path / "images"], backend=backend, task=weld)
    system = backend.requests[0].turns[0].parts[0]
    assert "X-ray radiographs of butt welds" in system
    assert "- lack of penetration: A dark straight line" in system
    assert "bbox_2d" not in system  # boxes = false
    assert backend.requests[0].json_schema["properties"]["labels"]["items"]["properties"].keys() == {
        "label",
        "confidence",
    }
    result = summary.results[0]
    assert [f.label for f in result.findings] == ["lack of penetration"]
    assert result.task == weld
    assert result.vocabulary_version == "user-0"


def test_the_task_imports_and_exports_training_data(weld, tmp_path):
    for i, name in enumerate(["Porosity", "incomplete penetration", "No Defect"]):
        _png(tmp_path / "classes" / name / f"{i}.png", i)
    with Dataset.create(tmp_path / "ds") as ds:
        summary = import_class_folders(ds, tmp_path / "classes", task=weld)
        assert summary.images == 3
        assert summary.skipped == []
        n = export_jsonl(ds, tmp_path / "train.jsonl", task=weld)
    assert n == 3
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    answers = json.dumps(rows)
    assert "lack of penetration" in answers
    assert "no defect" in answers


def test_the_task_is_offered_in_analyze_review_and_evaluate(weld, make_napari_viewer):
    from napari_fracto.widgets.analyze import AnalyzeWidget
    from napari_fracto.widgets.evaluate import EvaluateWidget
    from napari_fracto.widgets.review import ReviewWidget

    viewer = make_napari_viewer()
    for widget in (AnalyzeWidget(viewer), ReviewWidget(viewer), EvaluateWidget(viewer)):
        combo = widget.task_combo
        assert weld in [combo.itemText(i) for i in range(combo.count())], type(widget).__name__
