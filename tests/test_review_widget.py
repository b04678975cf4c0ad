"""The Review widget in a real viewer, driven by the keyboard as a reviewer would (run under xvfb-run)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import Qt

from napari_fracto.dataset import Decision, Status
from napari_fracto.findings import AnalysisResult, Box, Finding
from napari_fracto.vocabulary import load_vocabulary
from napari_fracto.widgets.review import KEYS, ReviewWidget

LABELS = load_vocabulary("fracture").names()


def _results(tmp_path, n=3):
    """n tiny PNGs and an `analyze` results file with two boxed findings and one image-level label each."""
    from PIL import Image

    lines = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((40, 50), 20 * i + 10, np.uint8)).save(path)
        result = AnalysisResult(
            task="fracture",
            findings=[
                Finding(LABELS[0], 0.8, Box(2, 3, 20, 15)),
                Finding(LABELS[1], 0.5, Box(25, 10, 45, 35)),
                Finding(LABELS[2], 0.4, None),
            ],
            raw_text=f"answer {i}",
            backend="openai",
            model="test-model",
            adapter=None,
            prompt_version="p1",
            vocabulary_version="1.0",
            seconds=0.1,
            image_shape=(40, 50),
            source=str(path),
        )
        lines.append(json.dumps(result.to_record()))
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(lines) + "\n")
    return results


def _canvas_widget(viewer):
    """The viewer's Qt widget that receives key presses when the canvas has focus (found by Qt, not napari
    privates): the widget holding the canvas inside the napari main window."""
    from qtpy.QtWidgets import QApplication, QMainWindow, QWidget

    windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMainWindow)]
    for window in windows:
        for child in window.findChildren(QWidget):
            if type(child).__name__ == "QtViewer" and getattr(child, "viewer", None) is viewer:
                return child
    raise AssertionError("no napari canvas widget found for this viewer")


def _press(viewer, qtbot, key, modifier=Qt.KeyboardModifier.NoModifier):
    # Keys reach napari's keymap through the viewer's Qt widget, as when the canvas has focus.
    qtbot.keyClick(_canvas_widget(viewer), key, modifier)


def _widget(make_napari_viewer, qtbot, dataset_path):
    viewer = make_napari_viewer()
    widget = ReviewWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.open_dataset(dataset_path)
    return viewer, widget


def _open(w, qtbot, source) -> None:
    """Open a source as the button does: files are read in a worker, the first image follows."""
    with qtbot.waitSignal(w.image_loaded, timeout=30_000):
        assert w.open_source(source)


def test_keyboard_review_path_saves_corrections(make_napari_viewer, qtbot, tmp_path):
    results = _results(tmp_path)
    viewer, w = _widget(make_napari_viewer, qtbot, tmp_path / "ds")
    _open(w, qtbot, results)
    assert w.progress_label.text() == "0 / 3 reviewed"
    assert [r.label for r in w.session.rows] == LABELS[:3]
    assert len(w.shapes_layer.data) == 2
    assert w.shapes_layer.metadata["napari_fracto"]["raw_text"] == "answer 0"
    first_id = w.queue.current.image_id

    # G: accept all, save, next unreviewed
    _press(viewer, qtbot, Qt.Key.Key_G)
    assert w.progress_label.text() == "1 / 3 reviewed"
    assert w.queue.position == 1
    ds = w.dataset
    assert list(ds.latest_review(first_id).decisions) == [Decision.ACCEPTED] * 3

    # J selects the second finding, U rejects it: its box leaves the canvas
    _press(viewer, qtbot, Qt.Key.Key_J)
    _press(viewer, qtbot, Qt.Key.Key_U)
    assert w.session.rows[1].rejected
    assert list(w.shapes_layer.features["finding_id"]) == [0]

    # relabel the first finding from the panel
    w.table.selectRow(0)
    w.label_combo.setCurrentText(LABELS[4])
    w.relabel_button.click()
    assert w.session.rows[0].label == LABELS[4]
    assert list(w.shapes_layer.features["label"]) == [LABELS[4]]

    # a box drawn on the findings layer gets the chosen label
    w.label_combo.setCurrentText(LABELS[5])
    w.shapes_layer.add_rectangles(np.array([[5.0, 30.0], [25.0, 48.0]]))
    qtbot.waitUntil(lambda: -1 not in list(w.shapes_layer.features["finding_id"]))
    added = w.session.rows[-1]
    assert added.label == LABELS[5]
    assert added.box == Box(30, 5, 48, 25)
    assert list(w.shapes_layer.features["label"]) == [LABELS[4], LABELS[5]]

    # moving a box on the canvas edits it
    data = [np.array(d) for d in w.shapes_layer.data]
    data[0] = data[0] + 1.0
    w.shapes_layer.data = data
    qtbot.waitUntil(lambda: w.session.rows[0].box == Box(3, 4, 21, 16))

    # undo the move and the drawn box, redo the box
    _press(viewer, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert w.session.rows[0].box == Box(2, 3, 20, 15)
    _press(viewer, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert w.session.rows[-1].predicted is not None
    assert len(w.shapes_layer.data) == 1
    _press(
        viewer, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    )
    assert w.session.rows[-1].label == LABELS[5]
    assert len(w.shapes_layer.data) == 2

    # deleting a predicted box on the canvas rejects it
    w.shapes_layer.selected_data = {0}
    w.shapes_layer.remove_selected()
    qtbot.waitUntil(lambda: w.session.rows[0].rejected)

    w.notes_edit.setPlainText("edge charging")
    w.reviewer_edit.setText("ana")
    image_id = w.queue.current.image_id
    _press(viewer, qtbot, Qt.Key.Key_W)  # save
    record = ds.latest_review(image_id)
    assert record.status is Status.REVIEWED
    assert record.reviewer == "ana"
    assert record.notes == "edge charging"
    assert list(record.decisions) == [Decision.REJECTED, Decision.REJECTED, Decision.PENDING]
    assert [(f.label, f.box) for f in record.corrected] == [
        (LABELS[2], None),
        (LABELS[5], Box(30, 5, 48, 25)),
    ]
    assert record.raw_text == "answer 1"
    assert record.model == "test-model"
    assert w.progress_label.text() == "2 / 3 reviewed"


def test_resume_after_restart_continues_at_next_unreviewed(make_napari_viewer, qtbot, tmp_path):
    results = _results(tmp_path, n=4)
    viewer, w = _widget(make_napari_viewer, qtbot, tmp_path / "ds")
    _open(w, qtbot, results)
    _press(viewer, qtbot, Qt.Key.Key_G)
    _press(viewer, qtbot, Qt.Key.Key_Q)  # skip the second
    assert w.progress_label.text() == "1 / 4 reviewed, 1 skipped"
    w.close()  # napari closed

    viewer2, w2 = _widget(make_napari_viewer, qtbot, tmp_path / "ds")
    assert w2.progress_label.text() == "1 / 4 reviewed, 1 skipped"
    assert w2.queue.position == 2
    assert w2.image_label.text().startswith("3 / 4: img2.png (unreviewed)")
    assert any(layer.name == "img2.png" for layer in viewer2.layers)
    # PageUp goes back to the skipped image, which still shows its prediction
    _press(viewer2, qtbot, Qt.Key.Key_PageUp)
    assert w2.queue.position == 1
    assert len(w2.session.rows) == 3


def test_folder_without_predictions_draw_and_save(make_napari_viewer, qtbot, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((30, 40), 50 * i, np.uint8)).save(folder / f"s{i}.png")
    viewer, w = _widget(make_napari_viewer, qtbot, tmp_path / "ds")
    w.task_combo.setCurrentText("fracture")
    _open(w, qtbot, folder)
    assert len(w.shapes_layer.data) == 0
    w.label_combo.setCurrentText(LABELS[3])
    w.shapes_layer.add_rectangles(np.array([[1.0, 2.0], [11.0, 22.0]]))
    qtbot.waitUntil(lambda: len(w.session.rows) == 1)
    assert w.session.rows[0].label == LABELS[3]
    _press(viewer, qtbot, Qt.Key.Key_W)
    record = w.dataset.latest_review(w.queue.current.image_id)
    assert [(f.label, f.box) for f in record.corrected] == [(LABELS[3], Box(2, 1, 22, 11))]
    assert record.predicted == ()


def test_errors_are_notifications_not_crashes(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w = ReviewWidget(viewer)
    qtbot.addWidget(w)
    assert not w.open_source(tmp_path)  # no dataset yet
    (tmp_path / "file.txt").write_text("x")
    assert not w.open_dataset(tmp_path / "file.txt")
    assert w.open_dataset(tmp_path / "ds")
    assert not w.open_source(tmp_path / "missing")
    _press(viewer, qtbot, Qt.Key.Key_G)  # nothing to review: the key does nothing
    assert w.session is None


def test_every_key_is_documented_in_the_tooltip_and_docs(make_napari_viewer, qtbot):
    from pathlib import Path

    w = ReviewWidget(make_napari_viewer())
    qtbot.addWidget(w)
    docs = (Path(__file__).resolve().parents[1] / "docs" / "review.md").read_text()
    for key, _, _ in KEYS:
        assert key in w.toolTip()
        assert f"`{key}`" in docs, f"key {key} missing from docs/review.md"


def _ptycho_results(tmp_path, n=2):
    """n tiny ptychography phase images and results with a verdict and two suggested fixes each."""
    import tifffile

    lines = []
    for i in range(n):
        path = tmp_path / f"recon{i}.tif"
        tifffile.imwrite(path, np.random.default_rng(i).random((32, 32)).astype(np.float32))
        result = AnalysisResult(
            task="ptychography",
            findings=[Finding("Grid artifacts", 0.9, None)],
            raw_text=f"answer {i}",
            backend="openai",
            model="test-model",
            adapter=None,
            prompt_version="p1",
            vocabulary_version="1.0",
            seconds=0.1,
            image_shape=(32, 32),
            source=str(path),
            advice=["Enable position correction", "Increase the number of iterations"],
        )
        lines.append(json.dumps(result.to_record()))
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(lines) + "\n")
    return results


def test_advice_is_shown_corrected_undone_and_saved(make_napari_viewer, qtbot, tmp_path):
    viewer, w = _widget(make_napari_viewer, qtbot, tmp_path / "ds")
    w.task_combo.setCurrentText("ptychography")
    _open(w, qtbot, _ptycho_results(tmp_path))
    assert w.advice_box.isVisibleTo(w)
    table = w.advice_table
    shown = [(table.item(i, 0).text(), table.item(i, 1).text()) for i in range(table.rowCount())]
    assert shown == [
        ("Enable position correction", "pending"),
        ("Increase the number of iterations", "pending"),
    ]
    advice_vocab = load_vocabulary("ptychography-advice").names()
    assert [w.advice_combo.itemText(i) for i in range(w.advice_combo.count())] == advice_vocab

    table.selectRow(1)
    w.reject_advice_button.click()
    assert table.item(1, 1).text() == "rejected"
    assert table.item(1, 0).font().strikeOut()
    w.advice_combo.setCurrentText("Increase number of probe modes")
    w.add_advice_button.click()
    assert table.item(2, 0).text() == "Increase number of probe modes"
    assert table.item(2, 1).text() == "added"

    # Ctrl+Z takes back the added advice, Ctrl+Shift+Z brings it back: one log with the findings
    _press(viewer, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert table.rowCount() == 2
    assert w.status_label.text() == "Undone: add advice"
    _press(
        viewer, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    )
    assert table.rowCount() == 3

    image_id = w.queue.current.image_id
    _press(viewer, qtbot, Qt.Key.Key_W)  # save
    record = w.dataset.latest_review(image_id)
    assert list(record.advice) == ["Enable position correction", "Increase number of probe modes"]
    assert list(record.predicted_advice) == [
        "Enable position correction",
        "Increase the number of iterations",
    ]

    # G on the next image accepts its pending advice with its findings
    _press(viewer, qtbot, Qt.Key.Key_N)
    second = w.queue.current.image_id
    _press(viewer, qtbot, Qt.Key.Key_G)
    assert list(w.dataset.latest_review(second).advice) == [
        "Enable position correction",
        "Increase the number of iterations",
    ]

    # back on the first image, the saved advice reads back as it was left
    w.show_image(0)
    shown = [(table.item(i, 0).text(), table.item(i, 1).text()) for i in range(table.rowCount())]
    assert shown == [
        ("Enable position correction", "pending"),  # never explicitly accepted: kept, as saved
        ("Increase the number of iterations", "rejected"),
        ("Increase number of probe modes", "added"),
    ]


def test_advice_panel_is_hidden_for_a_task_without_advice(make_napari_viewer, qtbot, tmp_path):
    _viewer, w = _widget(make_napari_viewer, qtbot, tmp_path / "ds")
    _open(w, qtbot, _results(tmp_path))
    assert not w.advice_box.isVisibleTo(w)
    assert w.advice_table.rowCount() == 0


def test_an_unreadable_folder_is_reported_in_the_panel(make_napari_viewer, qtbot, tmp_path):
    """The folder is read in a worker; what went wrong stays in the panel, not only in a toast."""
    (tmp_path / "empty").mkdir()
    _viewer, w = _widget(make_napari_viewer, qtbot, tmp_path / "ds")
    assert w.open_source(tmp_path / "empty")
    qtbot.waitUntil(lambda: w._open_worker is None, timeout=30_000)
    assert w.queue is None
    assert "nothing to review" in w.error_panel.text or "no image" in w.error_panel.text.lower()
    assert not w.error_panel.toggle.isVisible()  # a message for the user: no traceback to expand


def test_whole_dataset_is_shown_a_page_at_a_time(make_napari_viewer, qtbot, tmp_path):
    from napari_fracto.dataset import Dataset
    from napari_fracto.review.queue import PAGE_SIZE

    root = tmp_path / "ds"
    with Dataset.create(root) as ds:
        ids = [
            ds.add_image(np.full((12, 16), i % 250, np.uint8), task="fracture", name=f"im{i:03d}")
            for i in range(2 * PAGE_SIZE + 10)
        ]
    _, w = _widget(make_napari_viewer, qtbot, root)
    w.task_combo.setCurrentText("fracture")
    assert w.review_dataset()
    pages = w.pages
    assert pages.isVisibleTo(w)
    assert pages.page_label.text() == f"Page 1 / 3 (images 1–100 of {len(ids)})"
    assert len(pages.rows()) == PAGE_SIZE  # one page listed, not the whole dataset
    assert pages.rows()[0] == ("1", "im000", "unreviewed")

    # the next page is read when asked for; the image in view stays
    pages.next_button.click()
    assert pages.rows()[0] == ("101", "im100", "unreviewed")
    assert w.queue.position == 0
    # clicking an entry shows that image, and saving it updates the list
    with qtbot.waitSignal(w.image_loaded, timeout=10_000) as loaded:
        qtbot.mouseClick(
            pages.table.viewport(),
            Qt.MouseButton.LeftButton,
            pos=pages.table.visualRect(pages.table.model().index(4, 1)).center(),
        )
    assert loaded.args == [104]
    assert w.queue.current.image_id == ids[104]
    w.save()
    assert pages.rows()[4] == ("105", "im104", "reviewed")
    # the last page is short; PageDown past a page boundary follows with the list
    pages.show_page(2)
    assert [r[1] for r in pages.rows()] == [f"im{i:03d}" for i in range(200, 210)]
    assert not pages.next_button.isEnabled()
    w.show_image(PAGE_SIZE - 1)
    w.next_image()
    assert pages.number == 1
    assert w.image_label.text().startswith(f"{PAGE_SIZE + 1} / {len(ids)}: im100")


def test_an_image_sent_calibrated_reopens_calibrated_in_a_new_window(make_napari_viewer, qtbot, tmp_path):
    """Analyze's Send to review keeps the layer's pixel size in the dataset, so a later session (another
    napari window, after a restart) shows the image, and the boxes drawn on it, in the same units."""
    from napari_fracto.review import ReviewQueue
    from napari_fracto.widgets.send_to_review import Item, send

    image = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    item = Item("sem", image, "fracture", None, scale=(0.4466, 0.4466), units=("µm", "µm"))
    (image_id,) = send(tmp_path / "ds", [item])
    from napari_fracto.dataset import Dataset

    with Dataset.open(tmp_path / "ds") as ds:  # the queue a later session resumes
        ReviewQueue.from_order(ds, "fracture", [image_id], key="sent")

    viewer, w = _widget(make_napari_viewer, qtbot, tmp_path / "ds")
    image_layer = next(layer for layer in viewer.layers if layer.name == "sem")
    np.testing.assert_allclose(image_layer.scale, (0.4466, 0.4466))
    assert tuple(str(u) for u in image_layer.units) == ("micrometer", "micrometer")
    np.testing.assert_allclose(w.shapes_layer.scale, (0.4466, 0.4466))


def test_review_in_teach_order_queues_what_teaches_most_first_with_why(make_napari_viewer, qtbot, tmp_path):
    """The order section ranks the unreviewed images in a worker; the queue follows that ranking and the
    panel says why the image in view comes next (an unsure prediction before a confident one)."""
    from napari_fracto.dataset import Dataset

    rng = np.random.default_rng(0)
    with Dataset.create(tmp_path / "ds") as ds:
        done = ds.add_image(rng.random((32, 32)), task="fracture", name="done.npy")
        ds.save_review(done, "fracture", [Finding(LABELS[0], None)], reviewer="t")
        for k, confidence in enumerate((0.95, 0.52)):
            image_id = ds.add_image(rng.random((32, 32)) * (k + 1), task="fracture", name=f"{k}.npy")
            result = AnalysisResult(
                "fracture",
                [Finding(LABELS[k], confidence)],
                "{}",
                "openai",
                "m",
                None,
                "p",
                "1",
                0.1,
                (32, 32),
            )
            ds.save_prediction(image_id, result)
    _, w = _widget(make_napari_viewer, qtbot, tmp_path / "ds")
    w.task_combo.setCurrentText("fracture")
    assert w.teach.order() == "teach"  # the default order
    with qtbot.waitSignal(w.image_loaded, timeout=60_000):
        assert w.teach.start()
    assert [e.name for e in w.queue.entries] == ["1.npy", "0.npy"]  # the unsure one first; reviewed left out
    assert w.image_label.text().startswith("1 / 2: 1.npy")
    assert "unsure" in w.teach.why_label.text()
    w.teach.order_combo.setCurrentIndex(w.teach.order_combo.findData("file"))
    with qtbot.waitSignal(w.image_loaded, timeout=60_000):
        assert w.teach.start()
    assert [e.name for e in w.queue.entries] == ["0.npy", "1.npy"]
