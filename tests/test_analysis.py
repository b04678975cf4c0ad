"""The analysis pipeline: what the model says becomes findings on the pixels of the original image."""

from __future__ import annotations

import json
import re
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


# --- ptychography: display options, evidence, reconstruction settings -----------------------------


def _grey(image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=float)


def _padded_grid(pad: int = 40, ramp: float = 0.0):
    """The shipped raster-grid sample with `pad` unlit pixels around it and an optional phase ramp."""
    from importlib.resources import files

    from napari_fracto.io.ptycho import read_npz
    from napari_fracto.ptycho.prepare import ScanGeometry

    product = read_npz(str(files("napari_fracto") / "sample_files" / "g_raster_grid.npz"))
    obj = np.pad(product.object[0], pad, constant_values=1.0 + 0j)
    if ramp:
        obj = obj * np.exp(1j * ramp * np.arange(obj.shape[1]))[None, :]
    product.object = obj[None]
    product.positions = product.positions + pad
    return product, ScanGeometry.from_product(product)


def test_crop_sends_the_scanned_region_and_boxes_come_back_on_the_file_pixels():
    from napari_fracto.ptycho.display import DisplayOptions, scanned_region

    product, geometry = _padded_grid(pad=40)
    obj = product.object[0]
    rows, cols = scanned_region(geometry.positions_px, geometry.probe_shape, obj.shape)
    assert (rows.start, cols.start) == (39, 39)  # 40 px pad, first probe centre 11.5 px in, minus 12 px
    backend = ScriptedBackend(_answer({"label": "Grid artifacts", "bbox_2d": [0, 0, 1000, 1000]}))
    result = analyze_array(
        obj,
        task="ptychography",
        backend=backend,
        display=DisplayOptions(ramp=False, crop=True),
        geometry=geometry,
    )
    (finding,) = result.findings
    assert finding.box == Box(cols.start, rows.start, cols.stop, rows.stop)
    assert result.image_shape == obj.shape
    assert (
        f"cropped to rows {rows.start}:{rows.stop}, columns {cols.start}:{cols.stop}" in result.preprocessing
    )
    sent = backend.requests[0].images()[0]
    assert sent.size == (160, 160)  # the 146 px crop, not the 224 px buffer (224 px would be sent as is)


def test_ramp_removal_changes_the_image_sent_and_is_recorded():
    from napari_fracto.ptycho.display import DisplayOptions

    product, geometry = _padded_grid(pad=0, ramp=0.2)
    obj = product.object[0]
    plain, flat = ScriptedBackend(_answer()), ScriptedBackend(_answer())
    raw = analyze_array(obj, task="ptychography", backend=plain, geometry=geometry)
    fixed = analyze_array(
        obj,
        task="ptychography",
        backend=flat,
        display=DisplayOptions(ramp=True, crop=False),
        geometry=geometry,
    )
    assert raw.preprocessing == ""
    assert fixed.preprocessing.startswith("phase ramp removed")
    assert re.search(
        r"Done: phase ramp removed \(0\.000\d rad/px along rows, 0\.20\d\d rad/px along columns",
        fixed.preprocessing,
    )
    from napari_fracto.imaging import prepare_model_image

    truth, _ = _padded_grid(pad=0)  # the same object without the added ramp
    expected = prepare_model_image(np.angle(truth.object[0]), 1024)

    def similarity(image) -> float:
        return float(np.corrcoef(_grey(image).ravel(), _grey(expected).ravel())[0, 1])

    # with the ramp removed the model sees the object; without, stripes of wrapped phase hide it
    assert similarity(flat.requests[0].images()[0]) > 0.9  # 0.95 measured
    assert similarity(plain.requests[0].images()[0]) < 0.3  # -0.02 measured
    assert "Phase ramp" in raw.evidence["flags"]  # 0.2 rad/px over 144 px: about 29 rad across the field
    # the evidence is measured on the data: removing the ramp for display does not erase it from the verdict
    assert "Phase ramp" in fixed.evidence["flags"]


def test_evidence_flags_the_grid_and_disagrees_with_a_model_that_saw_nothing():
    product, geometry = _padded_grid(pad=0)
    result = analyze_array(
        product.object[0],
        task="ptychography",
        backend=ScriptedBackend(_answer({"label": "No obvious artifacts"})),
        geometry=geometry,
    )
    assert result.evidence["flags"] == ["Grid artifacts"]
    assert result.evidence["scan_step_px"] == pytest.approx(8.0)
    (sentence,) = result.evidence["disagreements"]
    assert "8 px scan step" in sentence
    assert sentence.endswith("but the model did not flag Grid artifacts")
    assert result.to_record()["evidence"]["disagreements"] == [sentence]
    agreed = analyze_array(
        product.object[0],
        task="ptychography",
        backend=ScriptedBackend(_answer({"label": "Grid artifacts"})),
        geometry=geometry,
    )
    assert agreed.evidence["disagreements"] == []


def test_evidence_is_off_for_fracture_and_on_request_off_for_ptychography():
    image = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    assert analyze_array(image, task="fracture", backend=ScriptedBackend(_answer())).evidence == {}
    off = analyze_array(image, task="ptychography", backend=ScriptedBackend(_answer()), evidence=False)
    assert off.evidence == {}


def test_evidence_never_sinks_an_analysis_and_says_why_it_is_missing():
    rendered = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    result = analyze_array(rendered, task="ptychography", backend=ScriptedBackend(_answer()))
    assert result.parse_ok
    assert "uint8" in result.evidence["unavailable"]
    tiny = analyze_array(
        np.random.default_rng(0).random((8, 40)), task="ptychography", backend=ScriptedBackend(_answer())
    )
    assert "at least 16x16" in tiny.evidence["unavailable"]
    garbled = analyze_array(
        np.random.default_rng(0).random((64, 64)), task="ptychography", backend=ScriptedBackend("not json")
    )
    assert not garbled.parse_ok
    assert "disagreements" not in garbled.evidence  # nothing to compare an unreadable answer with


def test_display_options_on_an_rgb_image_say_what_to_do():
    from napari_fracto.ptycho.display import DisplayOptions

    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="switch them off"):
        analyze_array(rgb, task="ptychography", backend=ScriptedBackend(_answer()), display=DisplayOptions())


def test_reconstruction_settings_go_in_the_query_prompt_and_the_record():
    backend = ScriptedBackend(
        json.dumps({"labels": [{"label": "Blurring"}], "advice": ["Increase the number of iterations"]})
    )
    result = analyze_array(
        np.random.default_rng(0).random((64, 64)),
        task="ptychography",
        backend=backend,
        advice=True,
        recon_settings="  LSQML, 3 epochs, 1 probe mode  ",
    )
    query = backend.requests[0].turns[-1].parts[1]
    assert "Reconstruction settings:\nLSQML, 3 epochs, 1 probe mode" in query
    assert result.advice == ["Increase the number of iterations"]
    assert result.evidence["reconstruction_settings"] == "LSQML, 3 epochs, 1 probe mode"
    plain = ScriptedBackend(_answer())
    analyze_array(np.random.default_rng(0).random((64, 64)), task="ptychography", backend=plain)
    assert "Reconstruction settings" not in plain.requests[0].turns[-1].parts[1]


def test_an_answer_cut_by_the_token_limit_says_so_in_the_result():
    from napari_fracto.backends.openai_backend import OpenAIBackend
    from napari_fracto.testing.fake_openai_server import FakeOpenAIServer

    partial = '{"labels": [{"label": "cleavage facets"}, {"lab'
    with FakeOpenAIServer(answer=partial, finish_length=True) as server:
        backend = OpenAIBackend("fake-model", base_url=server.base_url)
        result = analyze_array(np.eye(64), task="fracture", backend=backend, max_new_tokens=32)
    assert any("cut off by the token limit (max_new_tokens=32)" in p for p in result.problems)
