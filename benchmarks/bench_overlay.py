"""How fast the Analyze widget puts a model's answer on screen, and how smooth napari stays meanwhile.

Run under a real X server (napari needs OpenGL):

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python benchmarks/bench_overlay.py

Figures printed:
- answer -> overlay: from the moment the backend returns its text until the findings layer is in the
  viewer and Qt has processed the resulting paint events (median and max over repeats), for several image
  sizes and box counts; plus the pure `findings_to_shapes` cost.
- UI stalls: the largest gap between ticks of a 10 ms Qt timer on the UI thread while a slow backend runs
  (a GIL-releasing wait, a GIL-holding pure-Python loop, and, with --tiny-model, the tiny local Qwen3-VL).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _answer(n_boxes: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    # fracture labels: that task computes no ptychography evidence, so the figure is parse + draw
    labels = ["equiaxed dimples", "cleavage facets", "river patterns", "fatigue striations"]
    items = []
    for i in range(n_boxes):
        x1, y1 = (int(v) for v in rng.integers(0, 900, size=2))
        w, h = (int(v) for v in rng.integers(20, 100, size=2))
        items.append(
            {"label": labels[i % len(labels)], "confidence": 0.5, "bbox_2d": [x1, y1, x1 + w, y1 + h]}
        )
    return json.dumps({"labels": items})


class _Stamped:
    """A scripted backend that records when its answer left it, optionally after slow work."""

    name = "bench"
    model = "bench"
    adapter = None

    def __init__(self, text: str, work=None) -> None:
        self.text = text
        self.work = work
        self.answered_at = 0.0

    def generate(self, request):
        from napari_fracto.backends.base import VLMReply

        if self.work is not None:
            self.work(request)
        self.answered_at = time.perf_counter()
        return VLMReply(text=self.text)

    def close(self) -> None:
        pass


def _run_once(app, widget, timeout: float = 600.0) -> float:
    """Press Analyze and wait until idle; returns the wall time after the answer until paints were done."""
    done = []
    widget.run_finished.connect(lambda: done.append(time.perf_counter()))
    widget.analyze_button.click()
    deadline = time.perf_counter() + timeout
    while not done and time.perf_counter() < deadline:
        app.processEvents()
        time.sleep(0.0005)
    app.processEvents()  # paint events queued by the new layer
    end = time.perf_counter()
    widget.run_finished.disconnect()
    if not done:
        raise RuntimeError("the run did not finish")
    return end


def bench_latency(viewer, widget, app, repeats: int) -> None:
    from napari_fracto.findings import AnalysisResult, Box, Finding
    from napari_fracto.overlay import findings_to_shapes
    from napari_fracto.vocabulary import load_vocabulary

    print("answer -> overlay on screen (ms)")
    print("  napari new / napari update: the same Shapes layer built directly by napari (add_shapes), and")
    print("  the same data assigned to an existing layer directly; ratio = ours (median) / napari update")
    print(
        f"  {'image':>11} {'boxes':>6} {'median':>8} {'max':>8}"
        f" {'napari new':>10} {'napari upd':>10} {'ratio':>7}"
    )
    for size in (256, 2048):
        for layer in list(viewer.layers):
            viewer.layers.remove(layer)
        viewer.add_image(np.random.default_rng(0).random((size, size), dtype=np.float32), name="img")
        widget.image_combo.setCurrentText("img")
        for n_boxes in (3, 100):
            backend = _Stamped(_answer(n_boxes))
            widget.make_backend = lambda s, k, b=backend: b
            widget.model_edit.setText(f"bench-{size}-{n_boxes}")
            times = []
            for _ in range(repeats):
                end = _run_once(app, widget)
                times.append((end - backend.answered_at) * 1000)
            own = _napari_own(viewer, app, widget, backend.text, repeats)
            print(
                f"  {size:>5}x{size:<5} {n_boxes:>6} {statistics.median(times):8.1f} {max(times):8.1f}"
                f" {own['new']:10.1f} {own['update']:10.1f}"
                f" {statistics.median(times) / own['update']:6.2f}x"
            )

    vocab = load_vocabulary("ptychography")
    findings = [Finding("Grid artifacts", 0.5, Box(i, i, i + 10, i + 10)) for i in range(1000)]
    result = AnalysisResult("ptychography", findings, "", "b", "m", None, "p", "v", 0.0, (2048, 2048))
    started = time.perf_counter()
    for _ in range(10):
        findings_to_shapes(result, vocab, image_name="img")
    print(f"  findings_to_shapes, 1000 boxes: {(time.perf_counter() - started) * 100:.2f} ms")


def _napari_own(viewer, app, widget, answer: str, repeats: int) -> dict[str, float]:
    """napari's own time for the same layer: `add_shapes` of a new layer, and assigning data, features,
    colours and text to an existing one; each until Qt has processed the paint events (median ms)."""
    from napari_fracto.analysis import analyze_array
    from napari_fracto.overlay import findings_to_shapes
    from napari_fracto.vocabulary import load_vocabulary

    vocab = load_vocabulary("fracture")
    result = analyze_array(viewer.layers["img"].data, task=vocab, backend=_Stamped(answer), evidence=False)
    spec = findings_to_shapes(result, vocab, image_name="direct")
    kwargs = spec.layer_kwargs()
    new, update = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        layer = viewer.add_shapes(spec.data, **kwargs)
        app.processEvents()
        new.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        layer.data = []
        layer.add_rectangles(spec.data, edge_color=spec.edge_color)
        layer.features = spec.features
        layer.text = spec.text
        app.processEvents()
        update.append((time.perf_counter() - started) * 1000)
        viewer.layers.remove(layer)
        app.processEvents()
    return {"new": statistics.median(new), "update": statistics.median(update)}


def _gil_holding(seconds: float):
    def work(request):
        end = time.perf_counter() + seconds
        x = 0
        while time.perf_counter() < end:
            for i in range(1000):
                x += i * i
        return x

    return work


def _gil_releasing(seconds: float):
    def work(request):
        time.sleep(seconds)

    return work


def bench_stalls(viewer, widget, app, seconds: float, tiny_model: bool) -> None:
    from qtpy.QtCore import QTimer

    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    viewer.add_image(np.random.default_rng(0).random((512, 512), dtype=np.float32), name="img")
    widget.image_combo.setCurrentText("img")
    cases = [
        ("idle (no analysis)", None),
        ("backend waiting (GIL released)", _Stamped(_answer(3), _gil_releasing(seconds))),
        ("backend busy in Python (GIL held)", _Stamped(_answer(3), _gil_holding(seconds))),
    ]
    tmp = None
    if tiny_model:
        from napari_fracto.testing.tiny_vlm import build_tiny_vlm

        tmp = tempfile.TemporaryDirectory()
        cases.append(("tiny local Qwen3-VL (torch, 1st run loads)", build_tiny_vlm(Path(tmp.name) / "tiny")))

    print(f"UI thread while the model runs (10 ms timer; {seconds:.1f} s backends)")
    print(f"  {'case':<44} {'ticks/s':>8} {'max gap ms':>11} {'p99 gap ms':>11}")
    for label, backend in cases:
        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(lambda ticks=ticks: ticks.append(time.perf_counter()))
        timer.start()
        started = time.perf_counter()
        if backend is None:
            while time.perf_counter() - started < seconds:
                app.processEvents()
                time.sleep(0.001)
        elif isinstance(backend, Path):
            widget.make_backend = _default_factory()
            widget.kind_combo.setCurrentText("transformers")
            widget.model_edit.setText(str(backend))
            widget.device_combo.setCurrentText("cpu")
            widget.tokens_spin.setValue(256)
            _run_once(app, widget)
        else:
            widget.make_backend = lambda s, k, b=backend: b
            widget.model_edit.setText(f"stall-{label}")
            _run_once(app, widget)
        timer.stop()
        elapsed = time.perf_counter() - started
        gaps = np.diff(ticks) * 1000 if len(ticks) > 1 else np.array([elapsed * 1000])
        print(f"  {label:<44} {len(ticks) / elapsed:8.1f} {gaps.max():11.1f} {np.percentile(gaps, 99):11.1f}")
    if tmp is not None:
        tmp.cleanup()


def _default_factory():
    from napari_fracto.widgets.analyze import _default_make_backend

    return _default_make_backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="how long the slow backends take")
    parser.add_argument("--tiny-model", action="store_true", help="also measure the tiny local Qwen3-VL")
    args = parser.parse_args()

    import os

    os.environ.setdefault("NAPARI_FRACTO_CONFIG_DIR", tempfile.mkdtemp(prefix="bench-fracto-"))
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_fracto.widgets.analyze import AnalyzeWidget

    viewer = napari.Viewer(show=True)
    widget = AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Analyze")
    widget.task_combo.setCurrentText("fracture")
    app = QApplication.instance()
    try:
        bench_latency(viewer, widget, app, args.repeats)
        bench_stalls(viewer, widget, app, args.seconds, args.tiny_model)
    finally:
        viewer.close()


if __name__ == "__main__":
    main()
