"""The longest Qt-thread stall of the user actions issue 9 lists, measured with a 10 ms QTimer.

A 10 ms timer ticks on the Qt thread while each action runs (and until its workers are back); the longest
gap between two ticks is how long napari froze. Target: every longest gap <= 50 ms.

    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python benchmarks/bench_stalls.py [--reviews 10000]

Actions: opening the ptychography sample (File > Open Sample, and the Ptychodus HDF5 product from
shared/data when present), toggling display options in Analyze (ramp, unwrap; on the sample and on a
1024² product), drawing an Analyze result with 100 boxes (first draw and redraw), opening a 500-image
folder in Review, the next image in that folder, reopening a dataset with 10,000 reviews.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SHARED_H5 = (
    Path(__file__).resolve().parents[2] / "shared/data/ptychography/ptychi-sim/g_raster_grid_product.h5"
)


class StallMeter:
    """Ticks a 10 ms QTimer; `longest()` is the largest gap between ticks (seconds) since `start()`."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def measure(self, action: Callable[[], object], done: Callable[[], bool] = lambda: True) -> float:
        from qtpy.QtWidgets import QApplication

        self.ticks = [time.perf_counter()]
        self.timer.start()
        end = time.perf_counter() + 0.05
        while time.perf_counter() < end:  # let the timer settle
            QApplication.processEvents()
        action()
        deadline = time.perf_counter() + 600
        settle = None
        while time.perf_counter() < deadline:
            QApplication.processEvents()
            if done():
                settle = settle or time.perf_counter() + 0.1  # paint events after the work
                if time.perf_counter() > settle:
                    break
            time.sleep(0.001)
        self.timer.stop()
        self.ticks.append(time.perf_counter())
        return float(np.max(np.diff(self.ticks)))


def _answer(n_boxes: int) -> str:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n_boxes):
        x1, y1 = (int(v) for v in rng.integers(0, 900, size=2))
        items.append(
            {"label": "Grid artifacts" if i % 2 else "Halo artifacts", "bbox_2d": [x1, y1, x1 + 50, y1 + 40]}
        )
    return json.dumps({"labels": items})


def _folder(root: Path, n: int) -> Path:
    from PIL import Image

    folder = root / "folder"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8)).save(folder / f"img{i:04d}.png")
    return folder


def _big_dataset(root: Path, n: int) -> Path:
    from napari_fracto.dataset import Dataset
    from napari_fracto.findings import Box, Finding
    from napari_fracto.review import ReviewQueue

    rng = np.random.default_rng(2)
    with Dataset.create(root / "big") as ds:
        ids = [
            ds.add_image(rng.integers(0, 255, (32, 32), dtype=np.uint8), task="fracture") for _ in range(n)
        ]
        for image_id in ids:
            ds.save_review(image_id, "fracture", [Finding("cleavage facets", box=Box(2, 2, 20, 20))])
        ReviewQueue.from_dataset(ds, "fracture")  # the queue the reviewer left, resumed on reopening
    return root / "big"


def _big_product(viewer, size: int = 1024) -> str:
    """A size x size reconstruction with a phase ramp, a 64 px probe and a raster scan, added the way the
    reader adds a product; returns its phase layer's name."""
    from napari.layers import Layer

    from napari_fracto.io.ptycho import PtychoProduct, product_layers

    rng = np.random.default_rng(4)
    yy, xx = np.indices((size, size))
    phase = 0.02 * xx + 0.01 * yy + 0.3 * rng.standard_normal((size, size))
    steps = np.arange(96, size - 96, 16, dtype=float)
    grid = np.stack(np.meshgrid(steps, steps), axis=-1).reshape(-1, 2)
    product = PtychoProduct(
        object=(np.exp(1j * phase) * (0.8 + 0.2 * rng.random((size, size))))[None].astype(np.complex64),
        probe=np.ones((1, 1, 64, 64), dtype=np.complex64),
        positions=grid,
        position_units="px",
        name="big",
    )
    for data, kwargs, kind in product_layers(product):
        viewer.add_layer(Layer.create(data, kwargs, kind))
    return "big phase"


def _display_toggles(viewer, analyze, meter: StallMeter, image: str, what: str) -> list[tuple[str, float]]:
    """Tick the display options of `image`: the first adds the display layer, the rest re-render it (the
    last returns to options already shown once). Each waits until the layer shows what was ticked."""
    analyze.image_combo.setCurrentText(image)
    name = f"{image} (display)"
    crop_on = analyze.crop_check.isEnabled()

    def shows(ramp: bool, unwrap: bool) -> Callable[[], bool]:
        from napari_fracto.ptycho.display import DisplayOptions

        want = DisplayOptions(ramp=ramp, unwrap=unwrap, crop=crop_on and analyze.crop_check.isChecked())
        return lambda: (
            name in viewer.layers
            and str(viewer.layers[name].metadata.get("preprocessing", "")).startswith(want.describe())
        )

    analyze.crop_check.setChecked(False)
    analyze.unwrap_check.setChecked(False)
    analyze.ramp_check.setChecked(False)
    first = meter.measure(lambda: analyze.ramp_check.setChecked(True), shows(True, False))
    gaps = [
        meter.measure(lambda: analyze.unwrap_check.setChecked(True), shows(True, True)),
        meter.measure(lambda: analyze.ramp_check.setChecked(False), shows(False, True)),
        meter.measure(lambda: analyze.ramp_check.setChecked(True), shows(True, True)),
    ]
    analyze.unwrap_check.setChecked(False)
    analyze.ramp_check.setChecked(False)
    return [
        (f"display, {what}: first toggle (adds the layer)", first),
        (f"display, {what}: toggles, max of 3", max(gaps)),
    ]


def _napari_adds(viewer, layer_data: list) -> Callable[[], object]:
    """napari's own cost of the same layers, already read: `viewer.add_layer` of each, nothing else."""
    from napari.layers import Layer

    def add() -> None:
        for data, kwargs, kind in layer_data:
            viewer.add_layer(Layer.create(data, dict(kwargs), kind))

    return add


def _hide(viewer) -> None:
    """Hide the layers of the previous action (removing them crashed llvmpipe's GL under Xvfb)."""
    for layer in viewer.layers:
        layer.visible = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=500)
    args = parser.parse_args()

    import napari

    from napari_fracto.analysis import analyze_array
    from napari_fracto.overlay import findings_to_shapes, update_findings_layer
    from napari_fracto.testing.scripted import ScriptedBackend
    from napari_fracto.vocabulary import load_vocabulary
    from napari_fracto.widgets.analyze import AnalyzeWidget
    from napari_fracto.widgets.review import ReviewWidget

    tmp = Path(tempfile.mkdtemp(prefix="bench-stalls-"))
    print(f"building a {args.images}-image folder and a {args.reviews}-review dataset in {tmp} …")
    folder = _folder(tmp, args.images)
    big = _big_dataset(tmp, args.reviews)

    viewer = napari.Viewer()
    analyze = AnalyzeWidget(viewer)
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(analyze, name="Analyze")
    viewer.window.add_dock_widget(review, name="Review")
    try:
        from napari_fracto.widgets._common import warm_up
    except ImportError:  # a version without the warm-up (for "before" figures)
        pass
    else:
        warm_up().join()  # the docks import napari's and the plugin's lazy modules in the background
    meter = StallMeter()
    rows: list[tuple[str, float]] = []

    # napari's own cost (the same layers, added directly) is measured right after each action, so each
    # row compares like with like in one run; layer creation under software GL is what napari itself costs
    from napari_fracto.io.readers import read_layers
    from napari_fracto.sample_data import ptycho_sample

    rows.append(
        (
            "open the ptychography sample",
            meter.measure(lambda: viewer.open_sample("napari-fracto", "ptycho-clean")),
            meter.measure(_napari_adds(viewer, ptycho_sample("a_clean"))),
        )
    )
    _hide(viewer)
    if SHARED_H5.is_file():
        rows.append(
            (
                "open a Ptychodus HDF5 product",
                meter.measure(lambda: viewer.open(SHARED_H5, plugin="napari-fracto")),
                meter.measure(_napari_adds(viewer, read_layers(str(SHARED_H5)))),
            )
        )
        _hide(viewer)
        for layer in viewer.layers:
            if layer.name.startswith("sample a_clean"):
                layer.visible = True
    rows.extend(
        (*row, None) for row in _display_toggles(viewer, analyze, meter, "sample a_clean phase", "sample")
    )
    _hide(viewer)
    big_phase = _big_product(viewer)
    rows.extend((*row, None) for row in _display_toggles(viewer, analyze, meter, big_phase, "1024²"))
    _hide(viewer)

    # Drawing: three rounds, ours and napari's alternating on fresh image layers (the first round also
    # pays napari's one-off glyph and shader costs, for both); the median of each is reported.
    image = np.random.default_rng(3).random((1024, 1024)).astype(np.float32)
    result = analyze_array(image, task="ptychography", backend=ScriptedBackend(_answer(100)))
    spec = findings_to_shapes(result, load_vocabulary("ptychography"), image_name="direct")
    draws: dict[str, list[float]] = {"ours": [], "napari": [], "ours again": [], "napari again": []}
    for round_ in range(3):
        layer = viewer.add_image(image, name=f"recon {round_}")
        name = f"direct {round_}"
        draws["ours"].append(meter.measure(lambda layer=layer: analyze.show_result(result, layer)))
        draws["napari"].append(
            meter.measure(
                lambda name=name: viewer.add_shapes(spec.data, **{**spec.layer_kwargs(), "name": name})
            )
        )
        draws["ours again"].append(meter.measure(lambda layer=layer: analyze.show_result(result, layer)))
        direct = viewer.layers[name]
        draws["napari again"].append(meter.measure(lambda direct=direct: update_findings_layer(direct, spec)))
        _hide(viewer)
    median = {k: float(np.median(v)) for k, v in draws.items()}
    rows.append(("draw an Analyze result, 100 boxes", median["ours"], median["napari"]))
    rows.append(("redraw it (same image)", median["ours again"], median["napari again"]))

    review.open_dataset(tmp / "reviews")
    queued = {"n": 0}
    review.image_loaded.connect(lambda _i: queued.__setitem__("n", queued["n"] + 1))
    first = read_layers(str(folder / "img0000.png"))
    review_layers = [*first, ([], {"shape_type": "rectangle", "name": "direct review boxes"}, "shapes")]
    rows.append(
        (
            f"open a {args.images}-image folder in Review",
            meter.measure(lambda: review.open_source(folder), lambda: queued["n"] >= 1),
            meter.measure(_napari_adds(viewer, review_layers)),
        )
    )
    rows.append(
        ("next image in that folder", meter.measure(review.next_image, lambda: queued["n"] >= 2), None)
    )
    rows.append(
        (
            f"reopen a dataset with {args.reviews} reviews",
            meter.measure(lambda: review.open_dataset(big), lambda: queued["n"] >= 3),
            None,
        )
    )

    print(f"\n{'action':<42} {'longest Qt-thread gap':>22} {'napari alone':>13} {'ratio':>6}")
    for name, gap, own in rows:
        flag = "" if gap <= 0.05 else "  > 50 ms"
        alone = f"{own * 1000:10.0f} ms {gap / own:5.2f}x" if own else " " * 20
        print(f"{name:<42} {gap * 1000:19.0f} ms {alone}{flag}")
    viewer.close()


if __name__ == "__main__":
    main()
