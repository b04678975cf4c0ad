"""What a user meets in a real napari window when things go wrong: a clear message, napari still usable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_fracto.io.readers import ReaderError
from napari_fracto.testing.fake_openai_server import FakeOpenAIServer
from napari_fracto.widgets.analyze import AnalyzeWidget

SECRET = "sk-test-SECRET123"


def test_an_unreadable_file_says_why_and_napari_keeps_working(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    broken = tmp_path / "sample.tif"
    broken.write_bytes(b"II*\x00 this is not really a TIFF")
    with pytest.raises(ReaderError, match=r"sample\.tif"):
        viewer.open(broken, plugin="napari-fracto")
    assert len(viewer.layers) == 0
    viewer.add_image(np.eye(32), name="still works")
    assert [layer.name for layer in viewer.layers] == ["still works"]


def test_a_wrong_api_key_is_reported_without_showing_the_key(make_napari_viewer, qtbot):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    widget = AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Analyze")
    viewer.add_image(np.random.default_rng(0).random((64, 64)), name="img")
    widget.task_combo.setCurrentText("fracture")
    start = len(notification_manager.records)
    with FakeOpenAIServer(require_key="sk-the-right-one", echo_key_in_errors=True) as server:
        widget.kind_combo.setCurrentText("openai")
        widget.base_url_edit.setText(server.base_url)
        widget.model_edit.setText(server.script.models[0])
        widget.api_key_edit.setText(SECRET)
        with qtbot.waitSignal(widget.run_finished, timeout=20000):
            widget.analyze_button.click()
    messages = [str(n.message) for n in notification_manager.records[start:]]
    assert any("key" in m.lower() and "reject" in m.lower() for m in messages), messages
    assert not any(SECRET in m for m in messages)
    assert not [layer for layer in viewer.layers if layer.name.endswith("findings")]
    assert widget.analyze_button.isEnabled()
    assert json.dumps(widget.current_settings().model_dump()).find(SECRET) == -1
