"""The Train dock widget: fine-tune a LoRA adapter from a corrections dataset in a separate process.

Training runs as `python -m napari_fracto.training train ...` in a QProcess, so napari never freezes and
GPU memory is returned when it ends; its JSON-lines stdout feeds a `TrainStatus` (pure, in the training
package) that drives the progress bar, the live loss plot and the base-vs-adapter table. Stop writes a
STOP file in the run folder (works on every OS; the trainer saves a checkpoint and exits); pressing Stop
again, or closing the widget, terminates the process; Resume continues a stopped run. Dataset, task,
base model and device are the viewer's shared LoopState; a finished run sets its adapter there, which
selects it in Analyze and Evaluate. Split assigns train/val/test (the dataset's small-dataset rule).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QProcess, Signal
from qtpy.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QWidget,
)

from napari_fracto.loop_state import loop_state
from napari_fracto.training.progress import TrainStatus
from napari_fracto.widgets._binding import bind_text
from napari_fracto.widgets._common import ErrorPanel, fit_width, scrolling_body
from napari_fracto.widgets.loss_plot import LossPlot
from napari_fracto.widgets.train_form import NO_PRESET, TrainFormMixin
from napari_fracto.widgets.train_process import KILL_AFTER_MS, TrainProcessMixin, evaluation_note

if TYPE_CHECKING:
    import napari


class TrainWidget(TrainFormMixin, TrainProcessMixin, QWidget):
    """Pick a dataset, base model and preset; Start / Stop; watch progress; compare base and adapter."""

    finished = Signal(str)  # the final state: finished / stopped / failed
    split_done = Signal()  # the Split button's worker is back (counts or an error shown)

    def __init__(self, napari_viewer: napari.Viewer | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state = loop_state(napari_viewer)
        self.status = TrainStatus()
        self._split_worker: Any = None
        self.process: QProcess | None = None
        self.run_dir: Path | None = None
        self._stdout_buffer = ""
        self.stderr_tail: list[str] = []
        self._build()

    # -- layout --------------------------------------------------------------------------------------

    def _build(self) -> None:
        layout = scrolling_body(self)
        self._build_form(layout)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the stopped run from its last checkpoint.")
        self.resume_button.setEnabled(False)
        self.resume_button.clicked.connect(self.resume)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.resume_button)
        layout.addLayout(buttons)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        self.progress_label = QLabel("idle")
        self.progress_label.setWordWrap(True)
        layout.addWidget(self.progress_label)
        self.loss_plot = LossPlot()
        layout.addWidget(self.loss_plot)
        self.results_table = QTableWidget(0, 4)
        self.results_table.setHorizontalHeaderLabels(["model", "micro-F1", "set precision", "parse failures"])
        self.results_table.verticalHeader().setVisible(False)
        self.results_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.results_table.setMaximumHeight(110)
        layout.addWidget(self.results_table)
        self.evaluation_label = QLabel("")
        self.evaluation_label.setWordWrap(True)
        layout.addWidget(self.evaluation_label)
        self.error_panel = ErrorPanel()
        layout.addWidget(self.error_panel)
        layout.addStretch(1)
        self._preset_changed(self.preset_combo.currentText())
        bind_text(self.dataset_edit, self.state, "dataset")
        bind_text(self.task_edit, self.state, "task")
        bind_text(self.model_combo, self.state, "model")
        bind_text(self.device_combo, self.state, "device")
        fit_width(self)

    def closeEvent(self, event: Any) -> None:
        self.shutdown()
        super().closeEvent(event)


__all__ = ["KILL_AFTER_MS", "NO_PRESET", "LossPlot", "TrainWidget", "evaluation_note"]
