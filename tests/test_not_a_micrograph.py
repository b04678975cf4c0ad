"""Label masks and binary images beside the micrographs are recognised and not analysed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_fracto.cli import main
from napari_fracto.micrograph_check import non_micrograph_reason
from napari_fracto.testing.fake_openai_server import FakeOpenAIServer
from napari_fracto.testing.scripted import ScriptedBackend
from napari_fracto.widgets.analyze import AnalyzeWidget

ANSWER = json.dumps({"labels": [{"label": "equiaxed dimples"}]})


def _micrograph(seed=0):
    return np.random.default_rng(seed).normal(120, 30, (96, 128)).clip(0, 255).astype(np.uint8)


def _mask():
    mask = np.zeros((96, 128), np.uint8)
    mask[20:60, 10:70] = 1
    mask[50:90, 60:120] = 2
    return mask


def test_masks_binary_and_colour_label_images_are_named_for_what_they_are():
    assert non_micrograph_reason(_micrograph()) is None
    assert non_micrograph_reason(_mask()) == "a label mask with only 3 distinct values (0, 1, 2)"
    assert "binary" in non_micrograph_reason(_mask() > 0)
    assert "binary" in non_micrograph_reason((_mask() > 0).astype(np.uint8) * 255)
    colours = np.zeros((96, 128, 3), np.uint8)
    colours[_mask() == 1] = (255, 0, 0)
    colours[_mask() == 2] = (0, 255, 0)
    assert "3 distinct colours" in non_micrograph_reason(colours)
    assert non_micrograph_reason(np.stack([_micrograph()] * 3, axis=-1)) is None
    assert non_micrograph_reason(_mask().astype(np.float32)) is None  # a float map is a measurement


def test_the_cli_skips_masks_beside_images_and_says_why(tmp_path, capsys):
    Image.fromarray(_micrograph()).save(tmp_path / "s1.png")
    Image.fromarray(_mask()).save(tmp_path / "s1_mask.png")
    out = tmp_path / "out.jsonl"
    with FakeOpenAIServer(answer=ANSWER) as server:
        code = main(
            ["analyze", str(tmp_path), "--task", "fracture", "--backend", "openai",
             "--base-url", server.base_url, "--model", server.script.models[0], "--out", str(out)]
        )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1  # some input was not analysed
    assert "s1_mask.png" in err
    assert "label mask with only 3 distinct values" in err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["source"].rsplit("/", 1)[-1] for r in records] == ["s1.png"]


@pytest.fixture
def setup(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Analyze")
    widget.task_combo.setCurrentText("fracture")
    return viewer, widget


def test_analyze_says_a_mask_is_not_a_micrograph_and_asks_nothing(setup, qtbot):
    viewer, widget = setup
    viewer.add_image(_mask(), name="s1_mask")
    backend = ScriptedBackend(ANSWER)
    widget.make_backend = lambda settings, key: backend
    widget.model_edit.setText("scripted-model")
    with qtbot.waitSignal(widget.run_finished, timeout=20000):
        widget.analyze_button.click()
    assert backend.requests == []
    assert "label mask" in widget.error_panel.text
    assert "s1_mask findings" not in viewer.layers


def test_autolabel_reports_a_mask_and_does_not_store_it(tmp_path):
    from napari_fracto.dataset import Dataset
    from napari_fracto.dataset.autolabel import autolabel

    Image.fromarray(_micrograph()).save(tmp_path / "s1.png")
    Image.fromarray(_mask()).save(tmp_path / "s1_mask.png")
    with Dataset.create(tmp_path / "ds") as ds:
        summary = autolabel(ds, [tmp_path], task="fracture", backend=ScriptedBackend(ANSWER))
        assert summary.predicted == 1
        assert [f[0].rsplit("/", 1)[-1] for f in summary.failures] == ["s1_mask.png"]
        assert "label mask" in summary.failures[0][1]
        assert len(ds) == 1
