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

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from qtpy.QtCore import QProcess, QProcessEnvironment, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QWidget,
)

from napari_fracto.loop_state import loop_state
from napari_fracto.training.config import KNOWN_BASES, PRESETS, Device
from napari_fracto.training.progress import TrainStatus
from napari_fracto.widgets._binding import bind_text
from napari_fracto.widgets._common import ErrorPanel, fit_width, hbox, run_catching, scrolling_body
from napari_fracto.widgets.loss_plot import LossPlot

if TYPE_CHECKING:
    import napari

NO_PRESET = "none (use the base model as given)"
KILL_AFTER_MS = 15000


class TrainWidget(QWidget):
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
        form = QFormLayout()
        self.dataset_edit = QLineEdit()
        self.dataset_edit.setPlaceholderText("corrections dataset folder")
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse_dataset)
        form.addRow("Dataset", hbox(self.dataset_edit, browse))
        self.split_button = QPushButton("Split")
        self.split_button.setToolTip(
            "Assign the images not yet in a split to train/val/test (80/10/10, stratified by label; "
            "every split gets at least one image, fewer than 3 images are refused)."
        )
        self.split_button.clicked.connect(self.split)
        self.split_label = QLabel("")
        self.split_label.setWordWrap(True)
        form.addRow("", hbox(self.split_button, self.split_label))
        self.task_edit = QLineEdit()
        self.task_edit.setPlaceholderText("the dataset's only task")
        form.addRow("Task", self.task_edit)
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_combo.addItems([b.model for b in KNOWN_BASES.values()])
        model_browse = QToolButton()
        model_browse.setText("…")
        model_browse.clicked.connect(self._browse_model)
        form.addRow("Base model", hbox(self.model_combo, model_browse))
        self.preset_combo = QComboBox()
        self.preset_combo.addItems([NO_PRESET, "auto", *PRESETS])
        self.preset_combo.currentTextChanged.connect(self._preset_changed)
        form.addRow("Preset", self.preset_combo)
        self.preset_label = QLabel("")
        self.preset_label.setWordWrap(True)
        form.addRow("", self.preset_label)
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(get_args(Device)))
        form.addRow("Device", self.device_combo)
        self.epochs_spin = QDoubleSpinBox()
        self.epochs_spin.setRange(0.1, 100)
        self.epochs_spin.setValue(3)
        form.addRow("Epochs", self.epochs_spin)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(-1, 1_000_000)
        self.steps_spin.setValue(-1)
        self.steps_spin.setSpecialValueText("from epochs")
        form.addRow("Max steps", self.steps_spin)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("adapter name (default: from the run)")
        form.addRow("Name", self.name_edit)
        layout.addLayout(form)
        self.extra_args: list[str] = []  # more CLI flags (tests, power users)

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

    def _browse_dataset(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Corrections dataset folder")
        if path:
            self.dataset_edit.setText(path)

    def _browse_model(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Local model folder (with config.json)")
        if path:
            self.model_combo.setCurrentText(path)

    def _preset_changed(self, name: str) -> None:
        preset = PRESETS.get(name)
        enabled = preset is None and name != "auto"
        self.model_combo.setEnabled(enabled)
        if preset is not None:
            self.preset_label.setText(
                f"{preset.base.model}, {preset.method}, batch {preset.batch_size}: "
                f"about {preset.memory_gb():.1f} GB of GPU memory (estimate)"
            )
        elif name == "auto":
            self.preset_label.setText("the largest preset that fits in the free GPU memory")
        else:
            self.preset_label.setText("")

    # -- process -------------------------------------------------------------------------------------

    def command(self, run_dir: Path) -> list[str]:
        """The training command line this widget would run (without the interpreter)."""
        args = [
            "-m",
            "napari_fracto.training",
            "train",
            self.dataset_edit.text().strip(),
            "--out",
            str(run_dir),
        ]
        preset = self.preset_combo.currentText()
        if preset != NO_PRESET:
            args += ["--preset", preset]
        else:
            args += ["--model", self.model_combo.currentText().strip()]
        if self.task_edit.text().strip():
            args += ["--task", self.task_edit.text().strip()]
        args += ["--device", self.device_combo.currentText(), "--epochs", f"{self.epochs_spin.value():g}"]
        if self.steps_spin.value() > 0:
            args += ["--max-steps", str(self.steps_spin.value())]
        if self.name_edit.text().strip():
            args += ["--name", self.name_edit.text().strip()]
        return args + list(self.extra_args)

    def _check_inputs(self) -> str:
        dataset = self.dataset_edit.text().strip()
        if not dataset:
            return "Choose the corrections dataset folder first."
        if not (Path(dataset).expanduser() / "dataset.sqlite").is_file():
            return f"{dataset} is not a corrections dataset (no dataset.sqlite); pick the dataset folder."
        if self.preset_combo.currentText() == NO_PRESET and not self.model_combo.currentText().strip():
            return "Choose a base model (a Hub id or a local model folder) or a preset."
        return ""

    # -- split ---------------------------------------------------------------------------------------

    def split(self) -> None:
        """Split the dataset's unsplit images in a worker (a large dataset takes a moment)."""
        from napari.qt.threading import create_worker

        if self._split_worker is not None:
            return
        dataset = self.dataset_edit.text().strip()
        if not (Path(dataset).expanduser() / "dataset.sqlite").is_file():
            self.error_panel.show_message("Choose a corrections dataset first, then split it.")
            self.split_done.emit()
            return
        task = self.task_edit.text().strip() or None
        self.split_button.setEnabled(False)
        self.split_label.setText("splitting…")
        worker = create_worker(run_catching, lambda: _split(Path(dataset), task), _start_thread=False)
        worker.returned.connect(self._split_returned)
        self._split_worker = worker
        worker.start()

    def _split_returned(self, outcome: Any) -> None:
        self._split_worker = None
        self.split_button.setEnabled(True)
        if outcome.error:
            self.split_label.setText("not split")
            self.error_panel.show_outcome(outcome)
        else:
            self.error_panel.clear()
            self.split_label.setText(", ".join(f"{k} {v}" for k, v in outcome.value.items()))
        self.split_done.emit()

    # -- start / resume --------------------------------------------------------------------------------

    def start(self) -> None:
        from napari_fracto.training.runfolder import new_run_dir

        if self.process is not None:
            return
        problem = self._check_inputs()
        if problem:
            self.error_panel.show_message(problem)
            self.progress_label.setText(problem)
            return
        name = self.name_edit.text().strip() or Path(self.model_combo.currentText().strip() or "adapter").name
        self.run_dir = new_run_dir(name)
        self._launch(self.command(self.run_dir))

    def resume(self) -> None:
        """Continue the stopped run (`train --resume RUN_DIR`), from its newest checkpoint."""
        if self.process is not None or self.run_dir is None:
            return
        self._launch(["-m", "napari_fracto.training", "train", "--resume", str(self.run_dir)])

    def _launch(self, args: list[str]) -> None:
        self.error_panel.clear()
        self.evaluation_label.setText("")
        self.resume_button.setEnabled(False)
        self.state.last_run = str(self.run_dir)
        self.status = TrainStatus(state="starting", run_dir=str(self.run_dir))
        self._stdout_buffer = ""
        self.stderr_tail = []
        self.results_table.setRowCount(0)
        self.loss_plot.set_data([], [])
        process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        process.setProcessEnvironment(env)
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(self._process_finished)
        process.errorOccurred.connect(self._process_error)
        self.process = process
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.stop_button.setText("Stop")
        self.progress_label.setText(f"starting… (run folder {self.run_dir})")
        process.start(sys.executable, args)

    def stop(self) -> None:
        """First press: ask for a clean stop (checkpoint saved). Second press: terminate the process."""
        if self.process is None:
            return
        if self.run_dir is not None and not (self.run_dir / "STOP").exists() and self.run_dir.is_dir():
            (self.run_dir / "STOP").write_text("stop requested from napari\n", encoding="utf-8")
            self.progress_label.setText("stopping after the current step (saving a checkpoint)…")
            self.stop_button.setText("Force stop")
        else:
            self.process.terminate()
            self.progress_label.setText("terminating…")
            self.stop_button.setEnabled(False)

    def shutdown(self) -> None:
        """End a running training process (closing the widget or napari); waits briefly, then kills."""
        process = self.process
        if process is None:
            return
        process.terminate()
        if not process.waitForFinished(KILL_AFTER_MS):
            process.kill()
            process.waitForFinished(3000)

    def closeEvent(self, event: Any) -> None:
        self.shutdown()
        super().closeEvent(event)

    def _read_stdout(self) -> None:
        if self.process is None:
            return
        self._stdout_buffer += bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        *lines, self._stdout_buffer = self._stdout_buffer.split("\n")
        for line in lines:
            self.status.feed(line)
        self._refresh()

    def _read_stderr(self) -> None:
        if self.process is None:
            return
        text = bytes(self.process.readAllStandardError()).decode("utf-8", "replace")
        self.stderr_tail = (self.stderr_tail + text.splitlines())[-40:]

    def _process_error(self, error: Any) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.status.state = "failed"
            self.status.message = (
                f"could not start {sys.executable}: {self.process.errorString() if self.process else ''}"
            )
            self._process_finished(-1, None)

    def _process_finished(self, exit_code: int, exit_status: Any) -> None:
        from napari_fracto.widgets._common import show_info

        if self.process is None:
            return
        self._read_stdout()
        self._read_stderr()
        if self._stdout_buffer:
            self.status.feed(self._stdout_buffer)
            self._stdout_buffer = ""
        process, self.process = self.process, None
        process.deleteLater()
        if self.status.state not in ("finished", "stopped", "failed"):
            if exit_code == 130:
                self.status.state = "stopped"
                self.status.message = "Stopped."
            else:
                self.status.state = "failed"
                detail = next((ln for ln in reversed(self.stderr_tail) if ln.strip()), "")
                self.status.message = f"Training ended unexpectedly (exit code {exit_code}). {detail}"
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.resume_button.setEnabled(self.status.state == "stopped")
        self._refresh()
        if self.status.state == "failed":
            details = "\n".join(self.stderr_tail)
            self.error_panel.show_message(self.status.message, details)
        elif self.status.message:
            show_info(self.status.message)
        if self.status.state == "finished" and self.status.adapter:
            # the loop closes here: Analyze and Evaluate select the new adapter
            self.state.last_adapter_name = self.status.name
            self.state.adapter = self.status.adapter
        self.finished.emit(self.status.state)

    # -- display -------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        s = self.status
        if s.state == "evaluating":
            self.progress_bar.setRange(0, max(s.eval_total, 1))
            self.progress_bar.setValue(s.eval_done)
        else:
            self.progress_bar.setRange(0, max(s.total_steps, 1))
            self.progress_bar.setValue(min(s.step, max(s.total_steps, 1)))
        text = s.progress_text() if s.running else (s.message or s.state)
        self.progress_label.setText(text)
        self.loss_plot.set_data(s.losses, s.eval_losses)
        rows = s.comparison_rows()
        self.results_table.setRowCount(len(rows))
        for r, (model, scores) in enumerate(rows):
            label = model if model == "base" else f"adapter {s.name}".strip()
            values = [label] + [
                _fmt(scores.get(k)) for k in ("micro_f1", "set_precision", "parse_failure_rate")
            ]
            for c, value in enumerate(values):
                self.results_table.setItem(r, c, QTableWidgetItem(value))
        self.evaluation_label.setText(evaluation_note(s))


def evaluation_note(status: TrainStatus) -> str:
    """Why the base-vs-adapter table is empty after a run ("" while running or when it has rows)."""
    if status.running or status.comparison_rows() or status.state not in ("finished", "failed"):
        return ""
    evaluation = status.evaluation or {}
    errors = evaluation.get("errors") or {}
    if errors:
        return "No evaluation: " + "; ".join(f"{k}: {v}" for k, v in errors.items())
    note = evaluation.get("note") or "no final evaluation was reported (see the run folder's log)"
    return f"No evaluation beside the base model: {note}"


def _split(dataset: Path, task: str | None) -> dict[str, int]:
    from napari_fracto.dataset import Dataset
    from napari_fracto.dataset.split import split_dataset

    with Dataset.open(dataset) as ds:
        return split_dataset(ds, task=task)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


__all__ = ["LossPlot", "TrainWidget"]
