"""The Train form: dataset, Split, task, base model, preset, device, epochs; the command line it builds.

A part of TrainWidget (widgets/train.py), split out to keep each file small; it works on the widget's
own attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
)

from napari_fracto.training.config import KNOWN_BASES, PRESETS, Device
from napari_fracto.widgets._common import hbox, run_catching

NO_PRESET = "none (use the base model as given)"


class TrainFormMixin:
    """The form of the Train widget, the training command it describes, and the Split button."""

    # -- layout --------------------------------------------------------------------------------------

    def _build_form(self, layout: QVBoxLayout) -> None:
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


def _split(dataset: Path, task: str | None) -> dict[str, int]:
    from napari_fracto.dataset import Dataset
    from napari_fracto.dataset.split import split_dataset

    with Dataset.open(dataset) as ds:
        return split_dataset(ds, task=task)
