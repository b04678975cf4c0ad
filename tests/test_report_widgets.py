"""The "Report…" buttons of Analyze (the current image) and Review (the dataset), in a real viewer."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_fracto.findings import AnalysisResult, Box, Finding
from napari_fracto.testing.scripted import ScriptedBackend
from napari_fracto.vocabulary import load_vocabulary
from napari_fracto.widgets.analyze import AnalyzeWidget
from napari_fracto.widgets.review import ReviewWidget

ANSWER = json.dumps(
    {"labels": [{"label": "Grid artifacts", "confidence": 0.9, "bbox_2d": [100, 200, 500, 600]}]}
)


class _Text(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.images = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.images += tag == "img" and dict(attrs).get("src", "").startswith("data:image/")

    def handle_data(self, data):
        self.parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())


def _click_report(button, qtbot, path) -> object:
    button.ask_path = lambda: str(path)
    with qtbot.waitSignal(button.finished, timeout=60_000) as signal:
        button.button.click()
        assert button.busy  # made in a worker: the click returns at once
        assert not button.button.isEnabled()
    assert button.button.isEnabled()
    return signal.args[0]


def test_analyze_report_button_writes_the_current_images_report(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Analyze")
    widget.task_combo.setCurrentText("ptychography")
    viewer.add_image(np.random.default_rng(0).random((100, 200)).astype(np.float32), name="recon")

    widget.report_button.button.click()  # nothing analysed yet: says what to do, writes nothing
    assert "Analyze the current image first" in widget.report_button.error_panel.text

    widget.make_backend = lambda settings, key: ScriptedBackend(ANSWER, model="scripted-model")
    widget.model_edit.setText("scripted-model")
    with qtbot.waitSignal(widget.run_finished, timeout=20_000):
        widget.analyze_button.click()
    outcome = _click_report(widget.report_button, qtbot, tmp_path / "recon.pdf")
    assert not outcome.error, outcome.error
    page = _Text((tmp_path / "recon.html").read_text())
    assert "1 artifact flagged: Grid artifacts" in page.text
    assert "scripted-model" in page.text
    assert page.images == 1  # the image with its box
    assert (tmp_path / "recon.pdf").read_bytes().startswith(b"%PDF")
    assert "recon.html" in widget.report_button.status_label.text()


def test_review_report_button_reports_the_saved_reviews(make_napari_viewer, qtbot, tmp_path):
    from PIL import Image

    labels = load_vocabulary("fracture").names()
    lines = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((40, 50), 40 * i + 20, np.uint8)).save(path)
        result = AnalysisResult(
            task="fracture",
            findings=[Finding(labels[0], 0.8, Box(2, 3, 20, 15))],
            raw_text="{}",
            backend="openai",
            model="m",
            adapter=None,
            prompt_version="p",
            vocabulary_version="1.0",
            seconds=0.1,
            image_shape=(40, 50),
            source=str(path),
        )
        lines.append(json.dumps(result.to_record()))
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")

    viewer = make_napari_viewer()
    w = ReviewWidget(viewer)
    qtbot.addWidget(w)
    w.report_button.button.click()
    assert "Open a dataset first" in w.report_button.error_panel.text
    assert w.open_dataset(tmp_path / "ds")
    with qtbot.waitSignal(w.image_loaded, timeout=30_000):
        assert w.open_source(tmp_path / "results.jsonl")
    with qtbot.waitSignal(w.image_loaded, timeout=30_000):
        w.accept_all_and_next()  # the first image reviewed and saved; the second stays unreviewed

    outcome = _click_report(w.report_button, qtbot, tmp_path / "dataset.html")
    assert not outcome.error, outcome.error
    page = _Text((tmp_path / "dataset.html").read_text())
    assert "1 image(s)" in page.text
    assert "img0.png" in page.text
    assert "img1.png" not in page.text
    assert "accepted" in page.text
    assert "images (after review)" in page.text
