"""The Train widget runs a real training subprocess (tiny model, CPU), shows progress and can stop it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_fracto.dataset import Dataset
from napari_fracto.findings import Box, Finding

FAST = ["--batch-size", "2", "--grad-accum", "1", "--max-image-tokens", "16", "--eval-max-new-tokens", "8",
        "--no-rotate", "--lr", "5e-3"]  # fmt: skip


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_FRACTO_DATA_DIR", str(tmp_path / "data"))
    rng = np.random.default_rng(0)
    ds = Dataset.create(tmp_path / "ds")
    for i, split in enumerate(["train", "train", "train", "val", "test"]):
        iid = ds.add_image((rng.random((48, 64)) * 255).astype(np.uint8), task="fracture")
        label = "cleavage facets" if i % 2 else "equiaxed dimples"
        ds.save_review(iid, "fracture", [Finding(label, 0.9, Box(8, 4, 40, 30))])
        ds.set_split([iid], split)
    ds.close()
    return tmp_path / "ds"


@pytest.fixture
def widget(make_napari_viewer, qtbot, dataset, tiny_vlm_dir):
    from napari_fracto.widgets.train import TrainWidget

    w = TrainWidget(make_napari_viewer())
    qtbot.addWidget(w)
    w.dataset_edit.setText(str(dataset))
    w.model_combo.setCurrentText(str(tiny_vlm_dir))
    w.device_combo.setCurrentText("cpu")
    w.extra_args = list(FAST)
    yield w
    w.shutdown()


def test_training_runs_in_a_subprocess_and_the_adapter_appears_for_analyze(widget, qtbot):
    from qtpy.QtCore import QTimer

    from napari_fracto.training.registry import list_adapters

    widget.steps_spin.setValue(3)
    widget.name_edit.setText("widget-run")
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(50)
    with qtbot.waitSignal(widget.finished, timeout=240_000) as blocker:
        widget.start()
        assert widget.process is not None
        assert not widget.start_button.isEnabled()
    timer.stop()
    assert blocker.args == ["finished"], widget.status.message
    # The UI thread kept running while the model trained in the other process.
    assert max(np.diff(ticks)) < 1.0
    assert (widget.progress_bar.value(), widget.progress_bar.maximum()) == (3, 3)
    assert [s for s, _ in widget.loss_plot.train] == [1, 2, 3]
    assert widget.results_table.rowCount() == 2
    assert widget.results_table.item(0, 0).text() == "base"
    assert "widget-run" in widget.results_table.item(1, 0).text()
    assert [e.name for e in list_adapters(task="fracture")] == ["widget-run"]
    assert "choose it in Analyze" in widget.progress_label.text()
    assert widget.start_button.isEnabled()
    assert not widget.stop_button.isEnabled()


def test_stop_ends_the_process_with_a_checkpoint(widget, qtbot):
    widget.steps_spin.setValue(500)
    widget.start()
    qtbot.waitUntil(lambda: widget.status.step >= 2, timeout=180_000)
    assert widget.progress_bar.value() >= 2
    assert widget.progress_bar.maximum() == 500
    with qtbot.waitSignal(widget.finished, timeout=120_000) as blocker:
        widget.stop()
    assert blocker.args == ["stopped"]
    assert widget.process is None
    assert list((widget.run_dir / "checkpoints").glob("checkpoint-*"))
    assert "checkpoint saved" in widget.progress_label.text()

    # Resume continues the same run from its checkpoint (not from step 0), and can be stopped again
    stopped_at = widget.status.step
    assert widget.resume_button.isEnabled()
    widget.resume_button.click()
    assert widget.process is not None
    assert not widget.resume_button.isEnabled()
    qtbot.waitUntil(lambda: widget.status.step > stopped_at, timeout=180_000)
    assert widget.status.run_dir == str(widget.run_dir)
    with qtbot.waitSignal(widget.finished, timeout=120_000) as blocker:
        widget.stop()
    assert blocker.args == ["stopped"]
    assert widget.resume_button.isEnabled()


def test_start_without_a_dataset_explains_instead_of_starting(make_napari_viewer, qtbot, tmp_path):
    from napari_fracto.widgets.train import TrainWidget

    w = TrainWidget(make_napari_viewer())
    qtbot.addWidget(w)
    w.start()
    assert w.process is None
    assert "dataset" in w.progress_label.text()
    w.dataset_edit.setText(str(tmp_path))
    w.start()
    assert w.process is None
    assert "not a corrections dataset" in w.progress_label.text()


def test_presets_show_their_estimated_memory(make_napari_viewer, qtbot, tmp_path):
    from napari_fracto.widgets.train import TrainWidget

    w = TrainWidget(make_napari_viewer())
    qtbot.addWidget(w)
    w.preset_combo.setCurrentText("8b-qlora")
    assert "Qwen3-VL-8B" in w.preset_label.text()
    assert "GB" in w.preset_label.text()
    assert not w.model_combo.isEnabled()
    command = w.command(tmp_path / "run")
    assert command[command.index("--preset") + 1] == "8b-qlora"
    assert "--model" not in command
    assert command[command.index("--out") + 1] == str(tmp_path / "run")
