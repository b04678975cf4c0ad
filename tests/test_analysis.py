"""The analysis pipeline: what the model says becomes findings on the pixels of the original image."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from napari_fracto.analysis import analyze_array
from napari_fracto.backends.base import CancelledError
from napari_fracto.findings import AnalysisContext, Box
from napari_fracto.imaging import ImageError
from napari_fracto.testing.scripted import ScriptedBackend


def _answer(*items: dict) -> str:
    return json.dumps({"labels": list(items)})


def test_grid_boxes_land_on_the_original_pixels_of_a_non_square_16bit_image():
    image = np.random.default_rng(0).integers(0, 65535, size=(300, 1200), dtype=np.uint16)
    backend = ScriptedBackend(
        _answer({"label": "cleavage facets", "confidence": 0.87, "bbox_2d": [0, 0, 500, 1000]})
    )
    result = analyze_array(image, task="fracture", backend=backend)
    (finding,) = result.findings
    assert finding.label == "cleavage facets"
    assert finding.confidence == pytest.approx(0.87)
    assert finding.box == Box(0, 0, 600, 300)
    assert result.image_shape == (300, 1200)
    assert result.backend == "scripted"
    assert result.parse_ok


def test_synonyms_map_and_unknown_labels_are_reported_not_dropped():
    backend = ScriptedBackend(_answer({"label": "microvoid coalescence"}, {"label": "alien footprints"}))
    result = analyze_array(np.ones((64, 64)) * np.arange(64), task="fracture", backend=backend)
    assert result.labels == ["equiaxed dimples"]
    assert result.unknown_labels == ["alien footprints"]


def test_malformed_output_is_a_result_not_a_crash():
    backend = ScriptedBackend("I'm sorry, I cannot {{{ help with")
    result = analyze_array(np.eye(64), task="ptychography", backend=backend)
    assert result.findings == []
    assert result.raw_text.startswith("I'm sorry")


def test_context_reaches_the_prompt_and_the_record():
    backend = ScriptedBackend(_answer({"label": "fatigue striations"}))
    context = AnalysisContext(material="Ti-6Al-4V", sample_type="additively manufactured coupon")
    result = analyze_array(np.eye(64), task="fracture", backend=backend, context=context)
    prompt_text = " ".join(p for t in backend.requests[0].turns for p in t.parts if isinstance(p, str))
    assert "Ti-6Al-4V" in prompt_text
    assert result.to_record()["context"]["material"] == "Ti-6Al-4V"


def test_tiles_send_several_requests_and_map_boxes_back_per_tile():
    image = np.random.default_rng(1).random((100, 200))
    full_tile = {"label": "river patterns", "bbox_2d": [0, 0, 1000, 1000]}
    backend = ScriptedBackend(_answer(full_tile))
    result = analyze_array(image, task="fracture", backend=backend, tiles=2)
    assert len(backend.requests) >= 2
    boxes = [f.box for f in result.findings]
    assert all(b is not None for b in boxes)
    # The union of the per-tile boxes covers the whole image, and none leaves it.
    assert min(b.x1 for b in boxes) == 0
    assert max(b.x2 for b in boxes) == 200
    assert min(b.y1 for b in boxes) == 0
    assert max(b.y2 for b in boxes) == 100


def test_complex_reconstruction_is_analysed_as_phase_by_default():
    obj = np.exp(1j * np.linspace(0, 3, 64 * 64).reshape(64, 64)).astype(np.complex64)
    backend = ScriptedBackend(_answer({"label": "Phase ramp"}))
    result = analyze_array(obj, task="ptychography", backend=backend)
    assert result.labels == ["Phase ramp"]


@pytest.mark.parametrize(
    "bad",
    [np.full((32, 32), np.nan), np.zeros((0, 10)), np.zeros((2, 3, 32, 32))],
    ids=["all-nan", "zero-size", "4d-stack"],
)
def test_unusable_images_raise_an_image_error_before_any_request(bad):
    backend = ScriptedBackend(_answer())
    with pytest.raises(ImageError):
        analyze_array(bad, task="fracture", backend=backend)
    assert backend.requests == []


def test_cancel_stops_a_slow_request():
    cancel = threading.Event()
    backend = ScriptedBackend(_answer(), delay=5)
    threading.Timer(0.1, cancel.set).start()
    with pytest.raises(CancelledError):
        analyze_array(np.eye(64), task="fracture", backend=backend, cancel=cancel)
