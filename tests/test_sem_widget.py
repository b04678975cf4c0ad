"""Analyze with a real SEM file: the instrument fills the form, the bar is cut, boxes land on the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_fracto.testing.scripted import ScriptedBackend
from napari_fracto.widgets.analyze import AnalyzeWidget

ZEISS_1K = Path(__file__).resolve().parents[2] / "shared" / "data" / "sem-tiff" / "test_tiff_Zeiss_SEM_1k.tif"
pytestmark = pytest.mark.skipif(not ZEISS_1K.is_file(), reason="../shared/data/sem-tiff is not here")
WHOLE = '{"labels": [{"label": "intergranular facets", "bbox_2d": [0, 0, 1000, 1000]}]}'


@pytest.fixture
def setup(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Analyze")
    widget.task_combo.setCurrentText("fracture")
    return viewer, widget


@pytest.mark.parametrize("plugin", ["napari-fracto", "napari"])
def test_the_form_shows_the_sem_settings_whichever_reader_opened_it(setup, plugin):
    viewer, widget = setup
    viewer.open(str(ZEISS_1K), plugin=plugin)
    assert widget.magnification_edit.text().startswith("105 X; 2.615 µm/pixel; field of view 2.678 mm")
    assert "Merlin-61-08" in widget.instrument_edit.text()
    widget.magnification_edit.setText("my own words")
    viewer.add_image(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8), name="plain")
    widget.image_combo.setCurrentText("plain")
    assert widget.magnification_edit.text() == "my own words"  # typed: kept
    assert widget.instrument_edit.text() == ""  # filled for the Zeiss image: follows the choice


def test_analyze_sends_the_surface_without_the_bar_and_boxes_stay_on_the_image(setup, qtbot):
    viewer, widget = setup
    viewer.open(str(ZEISS_1K), plugin="napari-fracto")
    backend = ScriptedBackend(WHOLE)
    widget.make_backend = lambda settings, key: backend
    widget.model_edit.setText("scripted-model")
    with qtbot.waitSignal(widget.run_finished, timeout=20000):
        widget.analyze_button.click()
    sent = next(p for t in backend.requests[0].turns for p in t.parts if isinstance(p, Image.Image))
    assert sent.width / sent.height == pytest.approx(1024 / 691, rel=0.05)
    prompt = " ".join(p for t in backend.requests[0].turns for p in t.parts if isinstance(p, str))
    assert "field of view 2.678 mm × 1.807 mm" in prompt
    assert "HE-SE2 detector" in prompt
    layer = viewer.layers[f"{ZEISS_1K.stem} findings"]
    rows = layer.data[0][:, 0]  # pixels of the image (the layer carries its µm scale)
    assert rows.max() == pytest.approx(691, abs=1)  # the box ends where the bar begins
    record = layer.metadata["napari_fracto"]
    assert record["request"]["crop"]["r1"] == 691
    assert record["request"]["context"]["magnification"].startswith("105 X")


@pytest.fixture
def napari_settings(tmp_path, monkeypatch):
    """napari's settings in a temporary file (the offer writes them), our config dir fresh."""
    import napari.settings
    from napari.settings import NapariSettings

    settings = NapariSettings(config_path=tmp_path / "napari.yaml")
    monkeypatch.setattr(napari.settings, "_SETTINGS", settings)
    monkeypatch.setenv("NAPARI_FRACTO_CONFIG_DIR", str(tmp_path / "fracto"))
    return settings


def test_opened_by_napari_the_user_is_offered_napari_fracto_as_tiff_reader(setup, napari_settings):
    viewer, widget = setup
    offer = widget.reader_offer
    viewer.open(str(ZEISS_1K), plugin="napari-fracto")
    assert not offer.isVisibleTo(widget)  # our own reader: nothing to offer
    viewer.open(str(ZEISS_1K), plugin="napari")
    assert offer.isVisibleTo(widget)
    assert napari_settings.plugins.extension2reader == {}  # nothing changed before the yes
    offer.yes_button.click()
    assert napari_settings.plugins.extension2reader == {"*.tif": "napari-fracto", "*.tiff": "napari-fracto"}
    assert not offer.isVisibleTo(widget)
    layer = viewer.open(str(ZEISS_1K), plugin=None)[0]  # as File > Open: napari uses the preference
    assert layer.source.reader_plugin == "napari-fracto"
    assert layer.metadata["instrument"]["pixel_size_um"] == 2.615


def test_a_no_is_remembered_and_changes_nothing(setup, napari_settings):
    viewer, widget = setup
    viewer.open(str(ZEISS_1K), plugin="napari")
    widget.reader_offer.no_button.click()
    assert napari_settings.plugins.extension2reader == {}
    viewer.layers.clear()
    viewer.open(str(ZEISS_1K), plugin="napari")
    assert not widget.reader_offer.isVisibleTo(widget)
    assert widget.magnification_edit.text().startswith("105 X")  # metadata still read from the file
