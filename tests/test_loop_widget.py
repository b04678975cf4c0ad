"""The whole loop in one napari window, by widget actions only (run under xvfb-run).

Open a sample, Analyze, Send to review, correct one box, Split, Train on CPU with the tiny model,
Evaluate base vs the new adapter, Analyze again with the adapter. The first Analyze and Review's "Run the
model" use a scripted backend through the widgets' backend hooks (the random tiny model never answers a
box to correct); training, evaluation and the last Analyze run the real tiny Qwen3-VL.

Set NAPARI_FRACTO_SCREENSHOTS=DIR to save a screenshot of each step (the README's walkthrough).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from napari_fracto.testing.scripted import ScriptedBackend

ANSWER = json.dumps(
    {"labels": [{"label": "intergranular facets", "confidence": 0.8, "bbox_2d": [100, 100, 400, 400]}]}
)
FAST = ["--batch-size", "2", "--grad-accum", "1", "--max-image-tokens", "16", "--eval-max-new-tokens", "8",
        "--no-rotate", "--lr", "5e-3"]  # fmt: skip
SHOTS = os.environ.get("NAPARI_FRACTO_SCREENSHOTS", "")


def _shot(viewer, name: str, qtbot, *front) -> None:
    """A screenshot of the whole window for the README walkthrough (only when asked for), with the
    docks `front` raised in their tab groups."""
    if not SHOTS:
        return
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    docks = [widget.parent() for widget in front]  # the QDockWidgets napari made (tabs of their groups)
    for dock in docks:
        dock.raise_()
    docks[0].parentWidget().resizeDocks(docks, [390] * len(docks), Qt.Orientation.Vertical)
    qtbot.wait(200)
    QApplication.processEvents()
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(Path(SHOTS) / f"loop-{name}.png"), canvas_only=False)


@pytest.fixture
def window(make_napari_viewer, qtbot):
    from napari_fracto.widgets.analyze import AnalyzeWidget
    from napari_fracto.widgets.evaluate import EvaluateWidget
    from napari_fracto.widgets.review import ReviewWidget
    from napari_fracto.widgets.train import TrainWidget

    viewer = make_napari_viewer(show=bool(SHOTS))
    if SHOTS:
        viewer.window.resize(1280, 800)
    docks = {}
    for name, cls in (("Analyze", AnalyzeWidget), ("Train", TrainWidget)):
        docks[name] = cls(viewer)
        viewer.window.add_dock_widget(docks[name], name=name, area="right", tabify=name == "Train")
    for name, cls in (("Review", ReviewWidget), ("Evaluate", EvaluateWidget)):
        docks[name] = cls(viewer)
        viewer.window.add_dock_widget(docks[name], name=name, area="right", tabify=name == "Evaluate")
    yield viewer, docks
    docks["Train"].shutdown()


def _scripted(answer: str = ANSWER):
    return lambda settings, api_key: ScriptedBackend(answer)


def test_the_whole_loop_by_widget_actions(window, qtbot, tmp_path, tiny_vlm_dir):
    from napari.utils.notifications import notification_manager

    first_note = len(notification_manager.records)
    viewer, docks = window
    analyze, review, train, evaluate = (docks[k] for k in ("Analyze", "Review", "Train", "Evaluate"))

    # 1. open the sample, and five more images (crops a user would open as files)
    viewer.open_sample("napari-fracto", "ceramic-fractograph")
    sample = viewer.layers[-1]
    data = np.asarray(sample.data)
    for i in range(5):
        crop = data[i * 20 : i * 20 + 160, i * 30 : i * 30 + 200]
        viewer.add_image(crop, name=f"crop {i}", scale=sample.scale, units=sample.units)
    viewer.layers.selection.active = sample
    assert analyze.image_combo.currentText() == sample.name  # the choice follows the active layer

    # 2. Analyze (scripted backend: one boxed finding)
    analyze.task_combo.setCurrentText("fracture")
    analyze.make_backend = _scripted()
    analyze.kind_combo.setCurrentText("transformers")
    analyze.model_edit.setText(str(tiny_vlm_dir))
    analyze.device_combo.setCurrentText("cpu")
    analyze.tokens_spin.setValue(16)
    with qtbot.waitSignal(analyze.run_finished, timeout=30_000):
        analyze.analyze_button.click()
    findings = viewer.layers[f"{sample.name} findings"]
    assert findings.nshapes == 1
    assert tuple(findings.units) == tuple(sample.units)  # physical units, like the image
    assert "intergranular facets" in analyze.verdict_label.text()
    # the shared state already carries the choices to the other docks
    assert train.task_edit.text() == "fracture"
    assert train.model_combo.currentText() == str(tiny_vlm_dir)
    _shot(viewer, "1-analyze", qtbot, analyze, review)

    # 3. Send to review: every open image into a new dataset, chosen once
    ds_dir = tmp_path / "ds"
    analyze.send_to_review.dataset_edit.setText(str(ds_dir))
    assert review.dataset_edit.text() == str(ds_dir)
    assert train.dataset_edit.text() == str(ds_dir)
    assert evaluate.dataset_edit.text() == str(ds_dir)
    analyze.send_to_review.all_check.setChecked(True)
    with qtbot.waitSignal(review.image_loaded, timeout=30_000):
        analyze.send_to_review.button.click()
    assert "Sent 6 image(s) to review (1 with findings)" in analyze.send_to_review.status_label.text()
    assert len(review.queue) == 6
    assert review.table.rowCount() == 1  # the analysed image comes with its finding
    assert review.table.item(0, 0).text() == "intergranular facets"

    # 4. Review runs the model over the five without a prediction, off the Qt thread
    review.predict.make_backend = _scripted(json.dumps({"labels": [{"label": "cleavage facets"}]}))
    with qtbot.waitSignal(review.predict.finished, timeout=30_000) as blocker:
        review.predict.run_button.click()
    assert blocker.args == [5]
    assert "5 prediction(s) stored" in review.predict.status_label.text()

    # 5. correct one box on the canvas (drag it), save; accept the rest
    assert review.queue.current.name == sample.name
    moved = np.asarray(review.shapes_layer.data[0]) + 10.0
    review.shapes_layer.data = [moved]
    qtbot.waitUntil(lambda: "edited" in review.table.item(0, 2).text(), timeout=5000)
    _shot(viewer, "2-review", qtbot, analyze, review)
    assert review.save_button.isEnabled()
    review.save_button.click()
    stored = review.dataset.latest_review(review.queue.current.image_id)
    assert stored.status.value == "reviewed"
    box = stored.corrected[0].box
    # the drag moved the box 10 pixels (layer data coordinates), on an image shown calibrated like the
    # layer it was sent from
    assert box.x1 == pytest.approx(stored.predicted[0].box.x1 + 10.0, abs=0.5)
    np.testing.assert_allclose(review.shapes_layer.scale, sample.scale)
    assert stored.backend == "scripted"  # the model's record is kept with the correction
    review.unreviewed_button.click()
    for _ in range(5):  # accept all + next unreviewed
        review.accept_next_button.click()
    assert review.queue.progress_text().startswith("6 / 6")
    notes = [str(n.message) for n in notification_manager.records[first_note:]]
    assert not [n for n in notes if "units" in n], notes  # one unit across Analyze's and Review's layers

    # 6. Split (the small-dataset rule) and 7. train on CPU with the tiny model
    with qtbot.waitSignal(train.split_done, timeout=30_000):
        train.split_button.click()
    assert train.split_label.text() == "train 4, val 1, test 1"
    train.device_combo.setCurrentText("cpu")
    train.steps_spin.setValue(2)
    train.name_edit.setText("loop-adapter")
    train.extra_args = list(FAST)
    with qtbot.waitSignal(train.finished, timeout=300_000) as blocker:
        train.start_button.click()
    assert blocker.args == ["finished"], train.status.message + "\n".join(train.stderr_tail)
    rows = [train.results_table.item(r, 0).text() for r in range(train.results_table.rowCount())]
    note = train.evaluation_label.text()
    assert rows == ["base", "adapter loop-adapter"] or note.startswith("No evaluation")
    _shot(viewer, "3-train", qtbot, train, review)
    # the new adapter is selected in Analyze, and ticked beside the base model in Evaluate
    adapter = analyze.adapter_path()
    assert adapter
    assert Path(adapter, "adapter_config.json").is_file()
    assert "loop-adapter" in analyze.adapter_combo.currentText()
    assert evaluate.chosen_adapters() == ["", adapter]

    # 8. Evaluate base vs the new adapter: two rows, two different fingerprints
    evaluate.split_combo.setCurrentText("test")
    evaluate.resamples_spin.setValue(0)
    with qtbot.waitSignal(evaluate.run_finished, timeout=300_000):
        evaluate.run_button.click()
    assert evaluate.table.rowCount() == 2, evaluate.error_panel.text
    configs = [r.config for r in evaluate.last_run.results]
    assert [c.settings.adapter for c in configs] == ["", adapter]
    assert configs[0].fingerprint() != configs[1].fingerprint()
    assert evaluate.table.item(0, 0).text().startswith("base model")
    assert evaluate.table.item(1, 0).text().startswith("loop-adapter")
    _shot(viewer, "4-evaluate", qtbot, train, evaluate)

    # 9. Analyze again, now with the real tiny model and the adapter
    from napari_fracto.widgets.analyze import _default_make_backend

    analyze.make_backend = _default_make_backend
    analyze.send_to_review.all_check.setChecked(False)
    with qtbot.waitSignal(analyze.run_finished, timeout=300_000):
        analyze.analyze_button.click()
    assert analyze.last_result is not None, analyze.error_panel.text
    assert analyze.last_result.adapter, "the second Analyze ran without the adapter"
    assert Path(analyze.last_result.adapter).name == Path(adapter).name
    _shot(viewer, "5-analyze-again", qtbot, analyze, evaluate)


def test_base_model_row_never_inherits_the_adapter_analyze_saved(make_napari_viewer, tmp_path):
    """Analyze saves the adapter it used; Evaluate's base row must still be the bare base model."""
    from napari_fracto.settings import BackendSettings, save_settings
    from napari_fracto.training.registry import AdapterEntry, register_adapter
    from napari_fracto.widgets.evaluate import EvaluateWidget

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    register_adapter(AdapterEntry("mine", str(folder), "tiny-model", "fracture"))
    save_settings(BackendSettings(model="tiny-model", adapter=str(folder)))
    viewer = make_napari_viewer()
    widget = EvaluateWidget(viewer)
    widget.task_combo.setCurrentText("fracture")
    texts = [widget.models_list.item(i).text() for i in range(widget.models_list.count())]
    assert texts == ["base model (no adapter)", "mine"]
    assert widget.chosen_adapters() == [""]  # only the base model until an adapter is ticked
    widget.set_chosen(["", str(folder)])
    base, tuned = widget.configs()
    assert base.settings.adapter == ""
    assert tuned.settings.adapter == str(folder)
    assert base.fingerprint() != tuned.fingerprint()


def test_docks_share_one_state_per_viewer(make_napari_viewer, tmp_path):
    from napari_fracto.widgets.evaluate import EvaluateWidget
    from napari_fracto.widgets.review import ReviewWidget
    from napari_fracto.widgets.train import TrainWidget

    viewer, other = make_napari_viewer(), make_napari_viewer()
    review, train, evaluate = ReviewWidget(viewer), TrainWidget(viewer), EvaluateWidget(viewer)
    elsewhere = TrainWidget(other)
    review.dataset_edit.setText(str(tmp_path / "ds"))
    assert train.dataset_edit.text() == evaluate.dataset_edit.text() == str(tmp_path / "ds")
    train.task_edit.setText("ptychography")
    assert review.task_combo.currentText() == "ptychography"
    assert evaluate.task_combo.currentData() == "ptychography"
    assert elsewhere.dataset_edit.text() == ""  # another window keeps its own choices
