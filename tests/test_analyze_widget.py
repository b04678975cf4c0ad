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

from napari_fracto.backends.base import BackendError
from napari_fracto.overlay import PALETTE
from napari_fracto.settings import settings_path
from napari_fracto.testing.scripted import ScriptedBackend
from napari_fracto.vocabulary import load_vocabulary
from napari_fracto.widgets import analyze as analyze_module
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
    analyze_module._CONFIRMED_HOSTS.clear()
    yield
    analyze_module._CONFIRMED_HOSTS.clear()


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
