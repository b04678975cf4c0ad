"""Analyze's "Send to review" section: the analysed image(s) and their predictions into the dataset.

The images go into the corrections dataset with `Dataset.add_image`, each result whole with
`Dataset.save_prediction` (never rebuilt field by field, so nothing of the analysis is lost); images not
analysed yet go in without a prediction (Review can run the model over them). Runs in a worker: image
bytes are hashed and written off the Qt thread. The dataset is the viewer's shared one, so Review,
Train and Evaluate see the same folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QToolButton,
    QWidget,
)

from napari_fracto.findings import AnalysisResult
from napari_fracto.loop_state import LoopState
from napari_fracto.widgets._binding import bind_text
from napari_fracto.widgets._common import ErrorPanel, Outcome, hbox, run_catching


@dataclass
class Item:
    """One image to send: its layer name, the plane analysed (lazy arrays allowed), its result if any."""

    name: str
    array: Any
    task: str
    result: AnalysisResult | None = None
    scale: tuple[float, ...] = ()
    units: tuple[str, ...] = ()


def send(dataset: str | Path, items: list[Item]) -> list[str]:
    """Store `items` in the dataset (created if new); returns their image ids. Worker-thread code."""
    from napari_fracto.dataset import Dataset

    ids = []
    with Dataset.open_or_create(Path(dataset).expanduser()) as ds:
        for item in items:
            array = np.asarray(item.array)
            image_id = ds.add_image(array, task=item.task, name=item.name)
            if item.scale and any(s != 1.0 for s in item.scale):
                ds.set_pixel_size(image_id, item.scale, item.units)
            if item.result is not None:
                ds.save_prediction(image_id, item.result)
            ids.append(image_id)
    return ids


class SendToReview(QWidget):
    """Dataset row, "all open images" tick and the Send button; `sent` carries the stored image ids."""

    sent = Signal(list)
    finished = Signal()  # back to idle, sent or not

    def __init__(self, state: LoopState, collect: Callable[[bool], list[Item]]) -> None:
        super().__init__()
        self.state = state
        self.collect = collect
        self._worker: Any = None
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.dataset_edit = QLineEdit()
        self.dataset_edit.setPlaceholderText("corrections dataset folder (created if new)")
        self.dataset_edit.setToolTip("The one dataset of this window: Review, Train and Evaluate use it too.")
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse)
        form.addRow("Dataset", hbox(self.dataset_edit, browse))
        self.all_check = QCheckBox("every open image")
        self.all_check.setToolTip("Send every image layer, not only the one chosen above.")
        self.button = QPushButton("Send to review")
        self.button.setToolTip("Store the image and the model's findings in the dataset, to review there.")
        self.button.clicked.connect(self.start)
        form.addRow(hbox(self.button, self.all_check))
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        form.addRow(self.status_label)
        self.error_panel = ErrorPanel()
        form.addRow(self.error_panel)
        bind_text(self.dataset_edit, state, "dataset")

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Corrections dataset folder", self.dataset_edit.text())
        if path:
            self.dataset_edit.setText(path)

    def start(self) -> None:
        """Send the chosen image (or every open image) in a worker; returns at once."""
        from napari.qt.threading import create_worker

        if self._worker is not None:
            return
        dataset = self.dataset_edit.text().strip()
        if not dataset:
            self.error_panel.show_message("Choose the corrections dataset folder to send the images to.")
            self.finished.emit()
            return
        items = self.collect(self.all_check.isChecked())
        if not items:
            self.error_panel.show_message("Open an image first: there is nothing to send to review.")
            self.finished.emit()
            return
        self.error_panel.clear()
        self.button.setEnabled(False)
        self.status_label.setText(f"Sending {len(items)} image(s) …")
        worker = create_worker(run_catching, lambda: send(dataset, items), _start_thread=False)
        worker.returned.connect(lambda outcome: self._returned(outcome, items))
        self._worker = worker
        worker.start()

    def _returned(self, outcome: Outcome, items: list[Item]) -> None:
        self._worker = None
        self.button.setEnabled(True)
        if outcome.error:
            self.status_label.setText("Not sent.")
            self.error_panel.show_outcome(outcome)
        else:
            with_results = sum(item.result is not None for item in items)
            self.status_label.setText(
                f"Sent {len(items)} image(s) to review ({with_results} with findings); open the Review panel."
            )
            self.state.sent_to_review = tuple(outcome.value)
            self.sent.emit(list(outcome.value))
        self.finished.emit()
