"""The Analyze dock widget in a real napari viewer (run under xvfb-run).

Backends: the shared ScriptedBackend for exact, slow, failing and malformed answers, and the tiny random
Qwen3-VL (fixture `tiny_vlm_dir`) for the real local path.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_fracto.backends.base import BackendError
from napari_fracto.overlay import PALETTE
from napari_fracto.settings import settings_path
from napari_fracto.testing.scripted import ScriptedBackend
from napari_fracto.vocabulary import load_vocabulary
from napari_fracto.widgets.analyze import AnalyzeWidget

ARTIFACTS = Path(__file__).parent / "_artifacts"
DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"

# Two boxed findings and one image-level finding on Qwen3-VL's 0-1000 grid.
ANSWER = json.dumps(
    {
        "labels": [
            {"label": "Grid artifacts", "confidence": 0.9, "bbox_2d": [100, 200, 500, 600]},
            {"label": "Halo artifacts", "bbox_2d": [600, 100, 900, 400]},
            {"label": "Phase ramp", "confidence": 0.4},
        ]
    }
)


def _image(height: int = 100, width: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width)).astype(np.float32)


@pytest.fixture
def notifications():
    """Notifications napari shows during the test, as (severity, message)."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)

    def read() -> list[tuple[str, str]]:
        return [(str(n.severity), str(n.message)) for n in notification_manager.records[start:]]

    return read


@pytest.fixture(autouse=True)
def _forget_confirmed_hosts():
    from napari_fracto.remote_hosts import CONSENT

    CONSENT.forget()
    yield
    CONSENT.forget()


@pytest.fixture
def setup(make_napari_viewer, qtbot, request):
    # a shown window lays out the canvas text overlay like a user sees it (only the screenshot needs it)
    viewer = make_napari_viewer(show=getattr(request, "param", False))
    widget = AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Analyze")
    widget.task_combo.setCurrentText("ptychography")
    return viewer, widget


def _use(widget: AnalyzeWidget, backend) -> list:
    """Route the widget to `backend`; returns the list of settings it was built with (one per build)."""
    built = []

    def make(settings, api_key):
        built.append((settings, api_key))
        return backend

    widget.make_backend = make
    widget.model_edit.setText("scripted-model")
    return built


def _run(widget: AnalyzeWidget, qtbot, timeout: int = 20000) -> None:
    with qtbot.waitSignal(widget.run_finished, timeout=timeout):
        widget.analyze_button.click()


def _findings_layers(viewer):
    return [layer for layer in viewer.layers if layer.name.endswith("findings")]


def test_boxes_land_on_the_image_in_physical_units(setup, qtbot, notifications):
    viewer, widget = setup
    viewer.add_image(_image(100, 200), name="recon", scale=(0.5, 0.25), translate=(10.0, 20.0))
    backend = ScriptedBackend(ANSWER)
    _use(widget, backend)
    _run(widget, qtbot)

    layer = viewer.layers["recon findings"]
    assert layer.nshapes == 2
    # grid 0-1000 relative to the 200 x 100 image: Grid artifacts x 20-100, y 20-60
    np.testing.assert_allclose(layer.data[0], [[20, 20], [20, 100], [60, 100], [60, 20]], atol=1)
    np.testing.assert_allclose(layer.data[1], [[10, 120], [10, 180], [40, 180], [40, 120]], atol=1)
    np.testing.assert_allclose(layer.scale, (0.5, 0.25))
    np.testing.assert_allclose(layer.translate, (10.0, 20.0))
    assert list(layer.features["label"]) == ["Grid artifacts", "Halo artifacts"]
    assert layer.features["confidence"][0] == pytest.approx(0.9)
    assert np.isnan(layer.features["confidence"][1])
    assert list(layer.features["backend"]) == ["scripted", "scripted"]
    assert list(layer.text.values) == ["Grid artifacts 0.90", "Halo artifacts"]
    names = load_vocabulary("ptychography").names()
    for row, label in enumerate(["Grid artifacts", "Halo artifacts"]):
        expected = PALETTE[names.index(label) % len(PALETTE)]
        np.testing.assert_allclose(
            layer.edge_color[row][:3], [int(expected[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        )

    record = layer.metadata["napari_fracto"]
    assert record["raw_text"] == ANSWER
    assert record["labels"] == ["Grid artifacts", "Halo artifacts", "Phase ramp"]

    verdict = "3 artifacts flagged: Grid artifacts, Halo artifacts, Phase ramp"
    assert widget.verdict_label.text() == verdict
    canvas_text = viewer.canvas.overlays.text
    assert canvas_text.visible
    assert " ".join(canvas_text.text.split()).startswith(verdict)
    assert "Whole image: Phase ramp" in canvas_text.text
    table = widget.results_table
    assert table.rowCount() == 3
    assert [table.item(r, 2).text() for r in range(3)] == ["yes", "yes", "no"]
    assert table.item(2, 1).text() == "0.40"
    assert table.item(0, 0).toolTip() == load_vocabulary("ptychography").get("Grid artifacts").definition
    assert widget.raw_text.toPlainText() == ANSWER
    assert not widget.busy
    assert widget.analyze_button.isEnabled()
    assert not [n for n in notifications() if "error" in n[0].lower()]


def test_rerun_replaces_the_findings_layer(setup, qtbot):
    viewer, widget = setup
    viewer.add_image(_image(), name="img")
    second = json.dumps({"labels": [{"label": "Blurring", "bbox_2d": [0, 0, 1000, 1000]}]})
    _use(widget, ScriptedBackend([ANSWER, second]))
    _run(widget, qtbot)
    assert viewer.layers["img findings"].nshapes == 2
    _run(widget, qtbot)
    assert [layer.name for layer in _findings_layers(viewer)] == ["img findings"]
    layer = viewer.layers["img findings"]
    assert list(layer.features["label"]) == ["Blurring"]
    np.testing.assert_allclose(layer.data[0], [[0, 0], [0, 200], [100, 200], [100, 0]], atol=1)
    assert widget.verdict_label.text() == "1 artifact flagged: Blurring"


def test_backend_is_reused_until_settings_change(setup, qtbot):
    viewer, widget = setup
    viewer.add_image(_image(), name="img")
    closed = []

    class Tracked(ScriptedBackend):
        def close(self):
            closed.append(self)

    built = []

    def make(settings, api_key):
        built.append(settings)
        return Tracked(ANSWER)

    widget.make_backend = make
    widget.model_edit.setText("scripted-model")
    _run(widget, qtbot)
    _run(widget, qtbot)
    assert len(built) == 1
    widget.tokens_spin.setValue(512)
    _run(widget, qtbot)
    assert len(built) == 2
    assert built[1].max_image_tokens == 512
    assert len(closed) == 1  # the model loaded with the old settings was released


def test_cancel_during_a_slow_backend_returns_to_idle_without_a_layer(setup, qtbot):
    viewer, widget = setup
    viewer.add_image(_image(), name="img")
    backend = ScriptedBackend(ANSWER, delay=30.0)
    _use(widget, backend)
    widget.analyze_button.click()
    qtbot.waitUntil(lambda: len(backend.requests) == 1, timeout=10000)
    assert widget.busy
    assert widget.cancel_button.isEnabled()
    assert not widget.analyze_button.isEnabled()
    started = time.perf_counter()
    with qtbot.waitSignal(widget.run_finished, timeout=2000):
        widget.cancel_button.click()
    assert time.perf_counter() - started < 2
    assert not widget.busy
    assert widget.analyze_button.isEnabled()
    assert widget.status_label.text() == "Cancelled."
    assert backend.requests[0].cancel.is_set()  # the backend was told to stop
    qtbot.wait(300)  # let the cancelled worker wind down: its answer must not appear
    assert _findings_layers(viewer) == []


def test_ui_thread_keeps_processing_events_while_the_model_runs(setup, qtbot):
    from qtpy.QtCore import QTimer

    viewer, widget = setup
    viewer.add_image(_image(), name="img")
    _use(widget, ScriptedBackend(ANSWER, delay=1.0))
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    try:
        _run(widget, qtbot)
    finally:
        timer.stop()
    gaps = np.diff(ticks)
    assert len(ticks) > 30, "the UI thread stopped processing timer events while the model ran"
    assert gaps.max() < 0.5, f"the UI thread stalled for {gaps.max():.2f} s"
    assert viewer.layers["img findings"].nshapes == 2


def test_stack_analyses_the_plane_on_screen(setup, qtbot):
    viewer, widget = setup
    stack = np.zeros((2, 3, 64, 64), dtype=np.float32)
    stack[:, :, :32, :32] = 0.2
    stack[1, 2, 40:60, 40:60] = 1.0  # only plane (1, 2) has a bright square at the bottom right
    viewer.add_image(stack, name="stack")
    viewer.dims.current_step = (1, 2, 0, 0)
    backend = ScriptedBackend(json.dumps({"labels": [{"label": "Blurring", "bbox_2d": [0, 0, 500, 500]}]}))
    _use(widget, backend)
    _run(widget, qtbot)

    sent = np.asarray(backend.requests[0].images()[-1].convert("L"), dtype=float)
    h, w = sent.shape
    assert sent[int(h * 0.75), int(w * 0.75)] > sent[int(h * 0.1), int(w * 0.75)] + 50
    layer = viewer.layers["stack findings"]
    assert layer.ndim == 4
    np.testing.assert_allclose(layer.data[0][:, :2], [[1, 2]] * 4)
    np.testing.assert_allclose(layer.data[0][:, 2:], [[0, 0], [0, 32], [32, 32], [32, 0]], atol=1)
    assert layer.metadata["napari_fracto"]["source"] == "stack [plane 1, 2]"


def test_stack_in_3d_view_asks_for_2d(setup, qtbot, notifications):
    viewer, widget = setup
    viewer.add_image(np.random.default_rng(0).random((4, 32, 32)), name="vol")
    backend = ScriptedBackend(ANSWER)
    _use(widget, backend)
    viewer.dims.ndisplay = 3
    widget.analyze_button.click()
    assert any("switch the viewer to 2-D" in msg for _, msg in notifications())
    assert backend.requests == []
    assert not widget.busy


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (np.full((32, 32), np.nan, dtype=np.float32), "NaN"),
        (np.full((32, 32), 7, dtype=np.uint16), "constant"),
    ],
    # (a zero-size image never reaches the widget: napari refuses to make a layer of one)
    ids=["nan-filled", "constant"],
)
def test_bad_images_give_an_error_and_napari_stays_usable(setup, qtbot, notifications, image, expected):
    viewer, widget = setup
    viewer.add_image(image, name="bad")
    backend = ScriptedBackend(ANSWER)
    _use(widget, backend)
    _run(widget, qtbot)
    errors = [msg for sev, msg in notifications() if "error" in sev.lower()]
    assert errors, "a bad image must produce an error notification"
    assert expected.lower() in errors[-1].lower()
    assert backend.requests == []
    assert _findings_layers(viewer) == []
    assert not widget.busy
    # still usable: a good image analyses fine afterwards
    viewer.add_image(_image(), name="good")
    widget.image_combo.setCurrentText("good")
    _run(widget, qtbot)
    assert viewer.layers["good findings"].nshapes == 2


def test_malformed_answer_is_reported_and_shown_raw(setup, qtbot, notifications):
    viewer, widget = setup
    viewer.add_image(_image(), name="img")
    truncated = '{"labels": [{"label": "Grid arti'  # cut off by the token limit
    _use(widget, ScriptedBackend(truncated))
    _run(widget, qtbot)
    assert widget.verdict_label.text().startswith("The model's answer could not be read: ")
    assert widget.raw_text.toPlainText() == truncated
    assert any("could not be read" in msg for _, msg in notifications())
    layer = viewer.layers["img findings"]
    assert layer.nshapes == 0
    assert layer.metadata["napari_fracto"]["parse_ok"] is False
    assert not widget.busy


def test_unknown_labels_are_shown(setup, qtbot, notifications):
    viewer, widget = setup
    viewer.add_image(_image(), name="img")
    answer = json.dumps({"labels": [{"label": "Blurring"}, {"label": "Moire fringes"}]})
    _use(widget, ScriptedBackend(answer))
    _run(widget, qtbot)
    assert "Moire fringes" in widget.unknown_label.text()
    assert any("Moire fringes" in msg for _, msg in notifications())
    assert widget.verdict_label.text() == "1 artifact flagged: Blurring"


def test_backend_error_is_notified_and_widget_returns_to_idle(setup, qtbot, notifications):
    viewer, widget = setup
    viewer.add_image(_image(), name="img")
    message = "The server at http://127.0.0.1:9 refused the connection. Start it or fix the base URL."
    _use(widget, ScriptedBackend(BackendError(message)))
    _run(widget, qtbot)
    assert any(msg == message for sev, msg in notifications() if "error" in sev.lower()), notifications()
    assert not widget.busy
    assert widget.analyze_button.isEnabled()
    assert _findings_layers(viewer) == []


def test_api_key_is_used_but_never_saved(setup, qtbot):
    viewer, widget = setup
    viewer.add_image(_image(), name="img")
    built = _use(widget, ScriptedBackend(ANSWER))
    widget.kind_combo.setCurrentText("openai")
    widget.base_url_edit.setText("http://localhost:8000/v1")
    widget.api_key_edit.setText("sk-test-DO-NOT-STORE-1234")
    _run(widget, qtbot)
    assert built[0][1] == "sk-test-DO-NOT-STORE-1234"
    saved = settings_path().read_text()
    assert "sk-test-DO-NOT-STORE-1234" not in saved
    assert json.loads(saved)["base_url"] == "http://localhost:8000/v1"
    # settings (not the key) come back in a new widget
    again = AnalyzeWidget(viewer)
    assert again.kind_combo.currentText() == "openai"
    assert again.base_url_edit.text() == "http://localhost:8000/v1"
    assert again.api_key_edit.text() == ""


def test_remote_host_needs_confirmation_once_per_host(setup, qtbot, notifications):
    viewer, widget = setup
    viewer.add_image(_image(), name="img")
    backend = ScriptedBackend(ANSWER)
    _use(widget, backend)
    asked = []
    widget.confirm_remote = lambda message: asked.append(message) or False
    widget.kind_combo.setCurrentText("openai")
    widget.base_url_edit.setText("https://vlm.example.org/v1")
    widget.analyze_button.click()
    assert len(asked) == 1
    assert "vlm.example.org" in asked[0]
    assert backend.requests == []  # declined: nothing was sent
    assert not widget.busy

    widget.confirm_remote = lambda message: asked.append(message) or True
    _run(widget, qtbot)
    _run(widget, qtbot)
    assert len(asked) == 2  # asked again after the refusal, then not again for the same host
    assert len(backend.requests) == 2


def test_image_picker_follows_layer_insert_remove_and_rename(setup):
    viewer, widget = setup
    assert widget.image_combo.count() == 0
    assert not widget.analyze_button.isEnabled()
    a = viewer.add_image(_image(), name="a")
    viewer.add_image(_image(), name="b")
    viewer.add_points(np.zeros((1, 2)), name="pts")
    items = [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())]
    assert items == ["a", "b"]
    assert widget.analyze_button.isEnabled()
    a.name = "renamed"
    items = [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())]
    assert items == ["renamed", "b"]
    viewer.layers.remove("b")
    assert [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())] == ["renamed"]


def test_tiny_local_model_end_to_end(setup, qtbot, request):
    """The real transformers path: a random tiny Qwen3-VL answers nonsense, which must be handled."""
    try:
        model_dir = request.getfixturevalue("tiny_vlm_dir")
    except pytest.FixtureLookupError:
        pytest.skip("fixture tiny_vlm_dir not available in this checkout")
    viewer, widget = setup
    viewer.add_image(_image(64, 64), name="img")
    widget.kind_combo.setCurrentText("transformers")
    widget.model_edit.setText(str(model_dir))
    widget.device_combo.setCurrentText("cpu")
    widget.tokens_spin.setValue(64)
    _run(widget, qtbot, timeout=120000)
    result = widget.last_result
    assert result is not None, "the tiny model run did not produce a result"
    assert result.backend == "transformers"
    assert viewer.layers["img findings"].metadata["napari_fracto"]["model"] == str(model_dir)
    assert widget.raw_text.toPlainText() == result.raw_text
    assert not widget.busy


@pytest.mark.parametrize("setup", [True], indirect=True)
def test_screenshot_with_overlay(setup, qtbot, shared_data):
    """A picture of the overlay on a real ptychography reconstruction, for the README."""
    viewer, widget = setup
    phase = np.angle(np.load(shared_data / "ptychography" / "ptychi-sim" / "g_raster_grid_object.npy"))
    viewer.add_image(phase.astype(np.float32), name="raster-grid phase", colormap="gray")
    answer = json.dumps(
        {
            "labels": [
                {"label": "Grid artifacts", "confidence": 0.86, "bbox_2d": [120, 150, 560, 520]},
                {"label": "Halo artifacts", "confidence": 0.55, "bbox_2d": [40, 620, 960, 960]},
                {"label": "Phase ramp", "confidence": 0.3},
            ]
        }
    )
    _use(widget, ScriptedBackend(answer))
    _run(widget, qtbot)
    widget.raw_section.set_expanded(True)
    qtbot.wait(200)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    assert shot.ndim == 3
    assert shot.shape[0] > 300
    from PIL import Image

    ARTIFACTS.mkdir(exist_ok=True)
    Image.fromarray(shot).save(ARTIFACTS / "analyze_overlay.png")
    if os.environ.get("NAPARI_FRACTO_UPDATE_DOCS") == "1":  # refresh the README picture on purpose only
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS / "analyze_overlay.png", DOCS_IMAGES / "analyze_overlay.png")
    # the overlay's orange/blue box colours are on screen
    assert (np.abs(shot[..., :3].astype(int) - [0xE6, 0x9F, 0x00]).sum(axis=-1) < 30).sum() > 50


# --- ptychography: display options, evidence, advice ----------------------------------------------

NOTHING_SEEN = json.dumps({"labels": [{"label": "No obvious artifacts"}], "advice": ["No changes needed"]})


def _add_product(viewer, product) -> None:
    """Add a product's layers the way the reader does (phase, amplitude, probe, scan positions)."""
    from napari.layers import Layer

    from napari_fracto.io.ptycho import product_layers

    for data, kwargs, kind in product_layers(product):
        viewer.add_layer(Layer.create(data, kwargs, kind))


def _padded_grid_product(pad: int = 40, ramp: float = 0.0, positions: bool = True):
    """The shipped raster-grid sample with unlit borders (so cropping has something to cut) and a ramp."""
    from importlib.resources import files

    from napari_fracto.io.ptycho import read_npz

    product = read_npz(str(files("napari_fracto") / "sample_files" / "g_raster_grid.npz"))
    obj = np.pad(product.object[0], pad, constant_values=1.0 + 0j)
    if ramp:
        obj = obj * np.exp(1j * ramp * np.arange(obj.shape[1]))[None, :]
    product.object = obj[None]
    product.positions = product.positions + pad if positions else None
    product.pixel_size_m = (1e-8, 1e-8)
    product.name = "padded"
    return product


def _select(widget, name: str) -> None:
    widget.image_combo.setCurrentText(name)
    assert widget.image_combo.currentText() == name


def test_grid_sample_shows_evidence_a_disagreement_and_the_advice(setup, qtbot):
    viewer, widget = setup
    viewer.open_sample("napari-fracto", "ptycho-grid")
    _select(widget, "sample g_raster_grid phase")
    widget.advice_check.setChecked(True)
    widget.recon_settings_edit.setPlainText("LSQML, 40 epochs, regular raster scan")
    backend = ScriptedBackend(NOTHING_SEEN)
    _use(widget, backend)
    _run(widget, qtbot)

    assert widget.verdict_label.text() == "No obvious artifacts"
    assert widget.advice_label.text() == "Suggested fixes:\n• No changes needed"
    assert not widget.evidence_section.isHidden()
    evidence = widget.evidence_label.text()
    from napari_fracto.ptycho import EvidenceThresholds

    flag_from = EvidenceThresholds().grid_ratio
    assert f"⚑ grid peak at 8 px: 28.1x background (amplitude; flag from {flag_from:.0f}x)" in evidence
    assert "⚑" not in evidence.replace("⚑ grid", "")  # only the grid is past its threshold
    assert "Reconstruction settings given: LSQML, 40 epochs, regular raster scan" in evidence
    disagreement = widget.disagreement_label.text()
    assert disagreement.startswith("⚠ The amplitude spectrum has a peak at the 8 px scan step")
    assert disagreement.endswith("but the model did not flag Grid artifacts.")
    assert "Evidence disagrees (1)" in viewer.canvas.overlays.text.text
    # the model was asked with the settings, for advice
    assert "Reconstruction settings:\nLSQML, 40 epochs" in backend.requests[0].turns[-1].parts[1]
    # the record on the findings layer carries evidence and advice
    record = viewer.layers["sample g_raster_grid phase findings"].metadata["napari_fracto"]
    assert record["evidence"]["flags"] == ["Grid artifacts"]
    assert record["evidence"]["grid_component"] == "amplitude"  # the amplitude layer was used too
    assert len(record["evidence"]["disagreements"]) == 1
    assert record["advice"] == ["No changes needed"]
    assert record["preprocessing"] == ""  # no display option ticked: the image as reconstructed


def test_clean_sample_agrees_with_a_model_that_saw_nothing(setup, qtbot):
    viewer, widget = setup
    viewer.open_sample("napari-fracto", "ptycho-clean")
    _select(widget, "sample a_clean phase")
    _use(widget, ScriptedBackend(NOTHING_SEEN))
    _run(widget, qtbot)
    assert "grid peak" in widget.evidence_label.text()
    assert "⚑" not in widget.evidence_label.text()
    assert widget.disagreement_label.text() == ""
    assert widget.last_result.evidence["disagreements"] == []


def test_ramp_removal_changes_the_display_layer_and_the_image_sent(setup, qtbot):
    from napari_fracto.imaging import prepare_model_image

    viewer, widget = setup
    _add_product(viewer, _padded_grid_product(pad=0, ramp=0.2))
    _select(widget, "padded phase")
    original = viewer.layers["padded phase"]
    before = np.array(original.data)
    assert "padded phase (display)" not in viewer.layers
    widget.ramp_check.setChecked(True)

    qtbot.waitUntil(lambda: "padded phase (display)" in viewer.layers)  # computed in a worker
    shown = viewer.layers["padded phase (display)"]
    assert [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())] == [
        "padded amplitude",
        "padded phase",
        "padded probe amplitude",
    ]  # the derived layer is not offered for analysis
    assert not original.visible
    np.testing.assert_array_equal(original.data, before)  # the reconstruction itself is untouched
    column_step = np.angle(np.exp(1j * np.diff(shown.data, axis=1))).mean()
    assert abs(column_step) < 0.01  # the 0.2 rad/px ramp is gone
    np.testing.assert_allclose(shown.scale, original.scale)
    np.testing.assert_allclose(shown.translate, original.translate)

    backend = ScriptedBackend(NOTHING_SEEN)
    _use(widget, backend)
    _run(widget, qtbot)
    sent = np.asarray(backend.requests[0].images()[0].convert("L"), dtype=float)
    expected = np.asarray(prepare_model_image(shown.data, 1024).convert("L"), dtype=float)
    assert np.corrcoef(sent.ravel(), expected.ravel())[0, 1] > 0.99
    assert widget.last_result.preprocessing.startswith("phase ramp removed")
    assert "Sent to the model: phase ramp removed" in widget.evidence_label.text()

    widget.ramp_check.setChecked(False)  # back to the reconstruction as it is
    assert "padded phase (display)" not in viewer.layers
    assert original.visible


def test_crop_shows_the_scanned_region_and_boxes_land_on_its_pixels(setup, qtbot):
    from napari_fracto.ptycho.display import scanned_region

    viewer, widget = setup
    _add_product(viewer, _padded_grid_product(pad=40))
    _select(widget, "padded phase")
    original = viewer.layers["padded phase"]
    assert widget.crop_check.isEnabled()
    widget.crop_check.setChecked(True)
    widget.ramp_check.setChecked(True)  # updated in place: still one display layer

    qtbot.waitUntil(lambda: "padded phase (display)" in viewer.layers and not widget.preview_pending)
    assert [layer.name for layer in viewer.layers if layer.name.endswith("(display)")] == [
        "padded phase (display)"
    ]
    shown = viewer.layers["padded phase (display)"]
    positions = np.asarray(viewer.layers["padded scan positions"].data)
    rows, cols = scanned_region((positions - original.translate) / original.scale, (48, 48), (224, 224))
    assert (rows.start, cols.start) == (39, 39)
    assert shown.data.shape == (rows.stop - rows.start, cols.stop - cols.start)
    np.testing.assert_allclose(
        shown.translate, np.asarray(original.translate) + 39 * np.asarray(original.scale)
    )

    answer = json.dumps({"labels": [{"label": "Grid artifacts", "bbox_2d": [0, 0, 500, 1000]}]})
    backend = ScriptedBackend(answer)
    _use(widget, backend)
    _run(widget, qtbot)
    assert backend.requests[0].images()[0].size == (160, 160)  # the 146 px crop, not the 224 px buffer
    boxes = viewer.layers["padded phase findings"]
    (rect,) = boxes.data
    # the box's top-left corner is the display layer's first pixel; its right edge the middle of the crop
    np.testing.assert_allclose(boxes.data_to_world(rect[0]), shown.data_to_world((0, 0)), atol=1e-6)
    half = (cols.stop - cols.start) / 2
    np.testing.assert_allclose(
        boxes.data_to_world(rect[2]), shown.data_to_world((rows.stop - rows.start, half)), atol=1e-6
    )
    record = boxes.metadata["napari_fracto"]
    assert record["findings"][0]["box"] == [39.0, 39.0, 39.0 + half, float(rows.stop)]  # file pixels
    assert record["preprocessing"].startswith("cropped to the scanned region; phase ramp removed")


def test_a_display_toggle_returns_at_once_and_a_stale_preview_never_wins(setup, qtbot, monkeypatch):
    import threading

    from napari_fracto.ptycho import prepare as ptycho_prepare

    real = ptycho_prepare.prepare_image
    gates: dict[bool, threading.Event] = {}  # crop ticked -> released by the test
    computed: list[object] = []

    def held(plane, options, geometry=None, **kwargs):
        gate = gates.setdefault(options.crop, threading.Event())
        assert gate.wait(20), "the test never released this preview"
        prepared = real(plane, options, geometry, **kwargs)
        computed.append(options)
        return prepared

    monkeypatch.setattr(ptycho_prepare, "prepare_image", held)
    viewer, widget = setup
    _add_product(viewer, _padded_grid_product(pad=40, ramp=0.2))
    _select(widget, "padded phase")
    original = viewer.layers["padded phase"]

    widget.ramp_check.setChecked(True)  # back in the event loop while the preview is computed
    assert "padded phase (display)" not in viewer.layers
    assert original.visible
    widget.crop_check.setChecked(True)  # the newer choice, asked before the first is back
    qtbot.waitUntil(lambda: len(gates) == 2)
    gates[True].set()  # the newer preview finishes first
    qtbot.waitUntil(lambda: "padded phase (display)" in viewer.layers)
    shown = viewer.layers["padded phase (display)"]
    cropped = shown.data.shape
    assert cropped[0] < original.data.shape[0]
    assert not original.visible

    gates[False].set()  # the stale, uncropped preview arrives last ...
    qtbot.waitUntil(lambda: len(computed) == 2 and not widget.preview_pending)
    qtbot.wait(100)
    assert shown.data.shape == cropped  # ... and is not shown
    assert str(shown.metadata["preprocessing"]).startswith("cropped to the scanned region; phase ramp")

    widget.crop_check.setChecked(False)  # options already computed once: shown at once, not again
    assert shown.data.shape == original.data.shape
    assert str(shown.metadata["preprocessing"]).startswith("phase ramp removed")
    assert len(computed) == 2
    assert not widget.preview_pending


def test_display_options_that_do_not_fit_say_why_and_leave_the_layers_alone(setup, qtbot, notifications):
    viewer, widget = setup
    product = _padded_grid_product(pad=8)
    product.positions = product.positions + 10_000  # far outside the object (wrong units, say)
    _add_product(viewer, product)
    _select(widget, "padded phase")
    widget.crop_check.setChecked(True)
    qtbot.waitUntil(lambda: any("Cannot apply the display options" in m for _s, m in notifications()))
    assert "do not fall inside" in next(m for _s, m in notifications() if "Cannot apply" in m)
    assert "padded phase (display)" not in viewer.layers
    assert viewer.layers["padded phase"].visible


def test_crop_is_disabled_with_a_reason_without_scan_positions(setup, qtbot):
    viewer, widget = setup
    _add_product(viewer, _padded_grid_product(pad=8, positions=False))
    _select(widget, "padded phase")
    assert widget.ramp_check.isEnabled()
    assert widget.unwrap_check.isEnabled()
    assert not widget.crop_check.isEnabled()
    assert "scan positions" in widget.crop_check.toolTip()
    widget.unwrap_check.setChecked(True)
    qtbot.waitUntil(lambda: "padded phase (display)" in viewer.layers)
    viewer.add_image(_image(), name="sem")
    _select(widget, "sem")  # not a ptychography phase: nothing to apply
    assert not widget.ramp_check.isEnabled()
    assert not widget.crop_check.isEnabled()


def test_ptychography_options_are_only_offered_for_the_ptychography_task(setup):
    _viewer, widget = setup
    assert not widget.ptycho_section.isHidden()
    widget.task_combo.setCurrentText("fracture")
    assert widget.ptycho_section.isHidden()
    assert not widget.recon_settings_edit.isEnabled()


# --- fine-tuned adapters by name, and in-context examples ---------------------------------------------


def _adapter_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    return path


def _route(widget: AnalyzeWidget, backend, model: str) -> list:
    built = []

    def make(settings, api_key):
        built.append(settings)
        return backend

    widget.make_backend = make
    widget.kind_combo.setCurrentText("transformers")
    widget.model_edit.setText(model)
    return built


def test_registered_adapter_is_listed_by_name_and_reaches_the_backend(setup, qtbot, tmp_path):
    from napari_fracto.settings import load_settings
    from napari_fracto.training.registry import AdapterEntry, register_adapter

    viewer, widget = setup
    base = "Qwen/Qwen3-VL-2B-Instruct"
    built = _route(widget, ScriptedBackend(ANSWER), base)
    scores = {
        "base": {"n_images": 12, "micro_f1": 0.41, "macro_f1": 0.2},
        "adapter": {"n_images": 12, "micro_f1": 0.73, "macro_f1": 0.5},
    }
    mine = _adapter_folder(tmp_path / "ptycho-v1")
    register_adapter(AdapterEntry("ptycho-v1", str(mine), base, "ptychography", evaluation=scores))
    register_adapter(
        AdapterEntry(
            "big-v1", str(_adapter_folder(tmp_path / "big")), "Qwen/Qwen3-VL-8B-Instruct", "ptychography"
        )
    )
    register_adapter(AdapterEntry("steel-v1", str(_adapter_folder(tmp_path / "steel")), base, "fracture"))

    widget.adapter_refresh.click()  # registered after the panel opened: the refresh button finds them
    combo = widget.adapter_combo
    texts = [combo.itemText(i) for i in range(combo.count())]
    assert "ptycho-v1 (Qwen3-VL-2B-Instruct)" in texts
    assert "big-v1 (for Qwen3-VL-8B-Instruct, not this model)" in texts
    assert not any("steel-v1" in t for t in texts)  # another task
    other = texts.index("big-v1 (for Qwen3-VL-8B-Instruct, not this model)")
    assert not combo.model().item(other).isEnabled()
    assert "not on the model set above" in combo.itemData(other, Qt.ItemDataRole.ToolTipRole)
    index = texts.index("ptycho-v1 (Qwen3-VL-2B-Instruct)")
    tip = combo.itemData(index, Qt.ItemDataRole.ToolTipRole)
    assert "micro-F1: base 0.41 → adapter 0.73" in tip
    assert "Test split (12 images)" in tip

    combo.setCurrentIndex(index)  # the user picks it by name
    viewer.add_image(_image(), name="recon")
    _run(widget, qtbot)
    assert built[-1].adapter == str(mine)
    assert load_settings().adapter == str(mine)  # settings keep the folder, not the display name
    assert "micro-F1" in combo.toolTip()

    # the fracture task lists its own adapter; a task switch refreshes the list
    widget.task_combo.setCurrentText("fracture")
    assert any(combo.itemText(i) == "steel-v1 (Qwen3-VL-2B-Instruct)" for i in range(combo.count()))
    assert combo.currentText() == ""  # the ptychography adapter is no longer offered, nor kept
    assert widget.current_settings().adapter == ""
    widget.task_combo.setCurrentText("ptychography")

    typed = _adapter_folder(tmp_path / "typed")
    combo.setEditText(str(typed))  # a typed folder still works
    _run(widget, qtbot)
    assert built[-1].adapter == str(typed)


def test_saved_adapter_path_comes_back_as_its_name(make_napari_viewer, tmp_path):
    from napari_fracto.settings import BackendSettings, save_settings
    from napari_fracto.training.registry import AdapterEntry, register_adapter

    folder = _adapter_folder(tmp_path / "a")
    register_adapter(AdapterEntry("fracto-v2", str(folder), "tiny", "fracture"))
    save_settings(BackendSettings(model="some/tiny", adapter=str(folder)))
    widget = AnalyzeWidget(make_napari_viewer())
    widget.task_combo.setCurrentText("fracture")
    assert widget.adapter_combo.currentText() == "fracto-v2 (tiny)"
    assert widget.current_settings().adapter == str(folder)


def _examples_dataset(root: Path, n: int = 4) -> Path:
    from napari_fracto.dataset import Dataset
    from napari_fracto.findings import Box, Finding

    with Dataset.create(root) as ds:
        ids = []
        for seed in range(n):
            image = (np.random.default_rng(100 + seed).random((48, 64)) * 255).astype(np.uint8)
            image_id = ds.add_image(image, task="fracture")
            ds.save_review(image_id, "fracture", [Finding("cleavage facets", None, Box(4, 4, 30, 20))])
            ids.append(image_id)
        ds.set_split(ids, "train")
    return root


def test_in_context_examples_from_a_dataset_reach_the_prompt(setup, qtbot, tmp_path):
    viewer, widget = setup
    widget.task_combo.setCurrentText("fracture")
    backend = ScriptedBackend(json.dumps({"labels": [{"label": "cleavage facets"}]}))
    _use(widget, backend)
    widget.examples_edit.setText(str(_examples_dataset(tmp_path / "ds")))
    widget.shots_spin.setValue(2)
    widget.selection_combo.setCurrentText("random")
    query = _image(48, 64, seed=7)
    viewer.add_image(query, name="sem")
    _run(widget, qtbot)

    turns = backend.requests[0].turns
    roles = [t.role for t in turns]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    answers = [
        json.loads("".join(p for p in t.parts if isinstance(p, str))) for t in turns if t.role == "assistant"
    ]
    # the corrected answer of each example, its box on the 0-1000 grid of a 64 x 48 image
    assert answers[0]["labels"][0]["label"] == "cleavage facets"
    assert answers[0]["labels"][0]["bbox_2d"] == [62, 83, 469, 417]
    images = backend.requests[0].images()
    assert len(images) == 3
    sent_query = np.asarray(images[-1].convert("L"), dtype=float)
    for example in images[:2]:  # examples are dataset images, never the query
        assert np.abs(np.asarray(example.convert("L"), dtype=float) - sent_query).mean() > 20
    assert widget.last_result is not None
    assert widget.last_result.labels == ["cleavage facets"]


def test_examples_without_reviewed_train_images_are_a_notification(setup, qtbot, tmp_path, notifications):
    viewer, widget = setup
    backend = ScriptedBackend(ANSWER)
    _use(widget, backend)
    widget.examples_edit.setText(str(_examples_dataset(tmp_path / "ds")))  # fracture images only
    widget.shots_spin.setValue(3)
    viewer.add_image(_image(), name="recon")
    _run(widget, qtbot)
    errors = [m for s, m in notifications() if s == "error"]
    assert any("no reviewed 'ptychography' images in its train split" in m for m in errors)
    assert backend.requests == []  # nothing was sent
    assert not widget.busy

    widget.examples_edit.setText("")
    widget.analyze_button.click()  # no dataset: refused at once, before any worker starts
    assert any("need a corrections dataset" in m for s, m in notifications() if s == "error")
    assert not widget.busy


def test_a_second_opinion_is_asked_beside_and_shown_label_by_label(setup, qtbot, tmp_path):
    """A specialist (here scripted) and a generalist over real HTTP, asked together off the Qt thread;
    the panel shows per label where they agree, and the generalist's own words."""
    from napari_fracto.testing.fake_openai_server import FakeOpenAIServer
    from napari_fracto.testing.scripted import ScriptedBackend

    viewer, widget = setup
    widget.task_combo.setCurrentText("fracture")
    viewer.add_image(np.random.default_rng(0).random((64, 64)).astype(np.float32), name="sem")
    specialist = '{"labels": [{"label": "equiaxed dimples", "confidence": 0.9}, {"label": "mist"}]}'
    generalist = '{"labels": [{"label": "equiaxed dimples"}, {"label": "secondary cracks"}]}\nA long crack.'
    _use(widget, ScriptedBackend(specialist))
    with FakeOpenAIServer(answer=generalist) as server:
        config = tmp_path / "generalist.toml"
        config.write_text(
            f'name = "generalist"\nbackend = "openai"\nmodel = "fake-model"\nbase_url = "{server.base_url}"\n'
        )
        widget.second_opinion_edit.setText(str(config))
        _run(widget, qtbot)
        assert len(server.chat_requests()) == 1
    text = widget.second_label.text()
    assert "both name: equiaxed dimples" in text
    assert "only this model: mist" in text
    assert "only the second: secondary cracks" in text
    assert "A long crack." in text
    assert widget.second_result_section.isVisibleTo(widget)
    assert widget.last_result.evidence["second_opinion"]["source"] == "generalist"  # in the record

    widget.second_opinion_edit.setText(str(tmp_path / "missing.toml"))
    widget.analyze_button.click()  # a bad file: said in the panel, nothing runs
    assert "Second opinion" in widget.error_panel.message.text()
