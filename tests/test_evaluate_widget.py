"""The Evaluate dock widget in a real viewer: runs off the UI thread, shows the table and chart, cancels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from napari_fracto.dataset import Dataset
from napari_fracto.findings import Finding
from napari_fracto.testing.scripted import ScriptedBackend
from napari_fracto.widgets.evaluate import EvaluateWidget, parse_shots

DIMPLES = '{"labels": [{"label": "equiaxed dimples"}]}'


@pytest.fixture
def dataset_dir(tmp_path):
    root = tmp_path / "ds"
    with Dataset.create(root) as ds:
        for seed, label, split in [
            (1, "equiaxed dimples", "test"),
            (2, "cleavage facets", "test"),
            (3, "equiaxed dimples", "train"),
            (4, "river patterns", "train"),
        ]:
            smooth = gaussian_filter(np.random.default_rng(seed).random((48, 48)), 3)
            image_id = ds.add_image((smooth * 255 / smooth.max()).astype(np.uint8), task="fracture")
            ds.save_review(image_id, "fracture", [Finding(label)], reviewer="t")
            ds.set_split([image_id], split)
    return root


@pytest.fixture
def widget(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Evaluate")
    return widget


def test_run_shows_one_table_row_per_configuration_and_the_chart(widget, dataset_dir, qtbot, tmp_path):
    built = []

    def factory(settings):
        built.append(ScriptedBackend(DIMPLES))
        return built[-1]

    widget.backend_factory = factory
    widget.dataset_edit.setText(str(dataset_dir))
    widget.shots_edit.setText("0, 1")
    widget.out_edit.setText(str(tmp_path / "out"))
    widget.resamples_spin.setValue(50)
    with qtbot.waitSignal(widget.run_finished, timeout=60_000):
        widget.run_button.click()
        assert widget.busy
    assert widget.table.rowCount() == 2
    names = [widget.table.item(i, 0).text() for i in range(2)]
    assert names[0].endswith("0-shot")
    assert names[1].endswith("1-shot similar")
    # Truth {dimples}, {cleavage}; always answering dimples: TP 1, FP 1, FN 1 -> micro-F1 0.5.
    assert widget.table.item(0, 2).text().startswith("0.500 [")
    assert widget.table.item(0, 9).text() == "2 / 0"
    assert not widget.chart_label.pixmap().isNull()
    assert (tmp_path / "out" / "results.md").is_file()
    assert sum(len(b.requests) for b in built) == 4

    with qtbot.waitSignal(widget.run_finished, timeout=60_000):
        widget.run_button.click()
    assert widget.table.item(1, 9).text() == "0 / 2"  # the second run came from the cache


def test_cancel_stops_a_slow_run(widget, dataset_dir, qtbot, tmp_path):
    widget.backend_factory = lambda settings: ScriptedBackend(DIMPLES, delay=30)
    widget.dataset_edit.setText(str(dataset_dir))
    widget.out_edit.setText(str(tmp_path / "out"))
    with qtbot.waitSignal(widget.run_finished, timeout=20_000):
        widget.run_button.click()
        qtbot.wait(300)
        widget.cancel_button.click()
    assert "Cancelled" in widget.status_label.text()
    assert widget.run_button.isEnabled()
    assert widget.table.rowCount() == 0


def test_bad_choices_give_messages_not_runs(widget, dataset_dir, qtbot, tmp_path):
    widget.run_button.click()
    assert not widget.busy
    widget.dataset_edit.setText(str(dataset_dir))
    widget.shots_edit.setText("one")
    widget.run_button.click()
    assert not widget.busy
    widget.shots_edit.setText("0")
    widget.split_combo.setCurrentText("val")  # nothing reviewed there
    widget.out_edit.setText(str(tmp_path / "out"))
    with qtbot.waitSignal(widget.run_finished, timeout=20_000):
        widget.run_button.click()
    assert widget.status_label.text() == "Failed."
    with pytest.raises(ValueError, match="0,1,3"):
        parse_shots("1,x")
