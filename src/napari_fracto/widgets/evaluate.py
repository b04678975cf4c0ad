"""The Evaluate dock widget: compare configurations on a dataset split, see the table and the chart.

Thin on purpose: `napari_fracto.evaluation` does the work in a napari thread worker (napari stays
responsive, Cancel stops at the next image); this file only collects choices and shows results.
Dataset, task and model come from the viewer's shared LoopState; the models to compare are a pick list
of "base model" (always without an adapter, whatever Analyze last used) and the registered adapters.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QSpinBox,
    QTableWidget,
    QToolButton,
    QWidget,
)

from napari_fracto.evaluation.compare import parse_shots
from napari_fracto.loop_state import loop_state
from napari_fracto.widgets._binding import bind_text
from napari_fracto.widgets._common import (
    ProgressRelay,
    add_run_controls,
    fit_width,
    scrolling_body,
)
from napari_fracto.widgets.evaluate_models import COMPARISON, CURRENT, ModelsMixin
from napari_fracto.widgets.evaluate_run import EvaluationJob, RunMixin

if TYPE_CHECKING:
    import napari

    from napari_fracto.evaluation.compare import EvalConfig
    from napari_fracto.evaluation.runner import BackendFactory, EvalRun

logger = logging.getLogger(__name__)


class EvaluateWidget(ModelsMixin, RunMixin, QWidget):
    """Pick a dataset, split and configurations; Run shows the comparison table and chart.

    Test hook: `backend_factory(settings) -> Backend` replaces the real backends when set.
    """

    run_finished = Signal()

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.backend_factory: BackendFactory | None = None
        self.last_run: EvalRun | None = None
        self.last_paths: dict[str, Path] = {}
        self._job: EvaluationJob | None = None
        self._worker: Any = None
        self._relay = ProgressRelay(self)
        self._relay.progress.connect(self._on_progress)
        self.state = loop_state(napari_viewer)
        self._build_ui()
        bind_text(self.dataset_edit, self.state, "dataset")
        self._show_task(self.state.task)
        self.task_combo.currentIndexChanged.connect(self._task_chosen)
        self.state.events.task.connect(self._show_task)
        self.state.events.adapter.connect(self.refresh_models)
        self.state.events.model.connect(self.refresh_models)
        self.state.events.kind.connect(self.refresh_models)
        self.refresh_models()
        fit_width(self)

    # --- UI ------------------------------------------------------------------------------------------

    def _build_ui(self) -> None:
        from napari_fracto.evaluation.report import COLUMNS
        from napari_fracto.vocabulary import analysis_tasks

        layout = scrolling_body(self)
        form = QFormLayout()
        self.dataset_edit = QLineEdit()
        self.dataset_edit.setPlaceholderText("folder of a corrections dataset")
        form.addRow("Dataset", self._with_browse(self.dataset_edit, "Choose the dataset folder"))
        self.split_combo = QComboBox()
        self.split_combo.addItems(["test", "val", "train"])
        form.addRow("Split", self.split_combo)
        self.task_combo = QComboBox()
        self.task_combo.addItem("(the split's task)", None)
        for task in analysis_tasks():
            self.task_combo.addItem(task, task)
        form.addRow("Task", self.task_combo)

        self.mode_combo = QComboBox()
        self.mode_combo.addItems([CURRENT, COMPARISON])
        self.mode_combo.currentTextChanged.connect(self._on_mode_changed)
        form.addRow("Configurations", self.mode_combo)
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        form.addRow("Model", self.model_label)
        self.models_list = QListWidget()
        self.models_list.setToolTip(
            "Tick what to compare: the base model without any adapter, and adapters registered by training "
            "for this task and model."
        )
        self.models_list.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.models_list.setMaximumHeight(90)
        form.addRow("Compare", self.models_list)
        self.shots_edit = QLineEdit("0")
        self.shots_edit.setToolTip("In-context examples from the train split; a list runs one row per value.")
        form.addRow("Shots", self.shots_edit)
        self.select_combo = QComboBox()
        self.select_combo.addItems(["similar", "random"])
        form.addRow("Examples", self.select_combo)
        self.context_check = QCheckBox("send sample context")
        self.context_check.setChecked(True)
        self.advice_check = QCheckBox("score advice (ptychography)")
        form.addRow("", self.context_check)
        form.addRow("", self.advice_check)
        self.compare_edit = QLineEdit()
        self.compare_edit.setPlaceholderText("compare.toml or .json")
        self._compare_row = self._with_browse(self.compare_edit, "Choose a comparison file", file=True)
        form.addRow("Comparison", self._compare_row)
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("default: DATASET/evaluation (holds the cache)")
        form.addRow("Output", self._with_browse(self.out_edit, "Choose the output folder"))
        self.resamples_spin = QSpinBox()
        self.resamples_spin.setRange(0, 10_000)
        self.resamples_spin.setValue(1000)
        self.resamples_spin.setToolTip("Bootstrap resamples for the 95 % intervals (0: none).")
        form.addRow("Resamples", self.resamples_spin)
        layout.addLayout(form)

        run = add_run_controls(layout, "Run", self.run, self.cancel)
        self.run_button, self.cancel_button, self.progress_bar = run.start, run.cancel, run.progress
        self.status_label, self.error_panel = run.status, run.errors

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        layout.addWidget(self.table)
        self.chart_label = QLabel()
        self.chart_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self.chart_label)
        layout.addStretch(1)
        self._on_mode_changed(CURRENT)

    def _with_browse(self, edit: QLineEdit, title: str, *, file: bool = False) -> QWidget:
        row = QWidget()
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(edit)
        button = QToolButton()
        button.setText("…")
        button.clicked.connect(lambda: self._browse(edit, title, file))
        box.addWidget(button)
        return row

    def _browse(self, edit: QLineEdit, title: str, file: bool) -> None:
        if file:
            path, _ = QFileDialog.getOpenFileName(self, title, edit.text(), "Comparison (*.toml *.json)")
        else:
            path = QFileDialog.getExistingDirectory(self, title, edit.text())
        if path:
            edit.setText(path)

    def _on_mode_changed(self, mode: str) -> None:
        current = mode == CURRENT
        for w in (
            self.shots_edit,
            self.select_combo,
            self.context_check,
            self.advice_check,
            self.models_list,
        ):
            w.setEnabled(current)
        self._compare_row.setEnabled(not current)
        s = self.base_settings()
        where = f" at {s.base_url}" if s.kind == "openai" and s.base_url else ""
        prefix = "defaults: " if not current else ""
        # a long folder path cannot wrap and would widen the dock: its last part, the whole in the tooltip
        shown = (
            Path(s.model).name
            if "/" in s.model.strip("/").split("/", 1)[-1] or Path(s.model).exists()
            else s.model
        )
        self.model_label.setText(f"{prefix}{s.kind}: {shown or '(no model)'}{where}")
        self.model_label.setToolTip(s.model)

    # --- the configurations the form describes ------------------------------------------------------

    def configs(self) -> list[EvalConfig]:
        """The configurations the form describes (raises ValueError with a message for the user)."""
        from napari_fracto.evaluation.compare import expand, load_comparison

        settings = self.base_settings()
        if self.mode_combo.currentText() == COMPARISON:
            path = self.compare_edit.text().strip()
            if not path:
                raise ValueError(
                    "Choose a comparison file (TOML or JSON), or use the current backend settings."
                )
            return load_comparison(path, settings)
        chosen = self.chosen_adapters()
        if not chosen:
            raise ValueError("Tick at least one model to evaluate: the base model or an adapter.")
        names = {
            str(self.models_list.item(i).data(Qt.ItemDataRole.UserRole) or ""): self.models_list.item(
                i
            ).text()
            for i in range(self.models_list.count())
        }
        select = self.select_combo.currentText()
        entries = [
            {
                "name": ("base model" if not adapter else names[adapter])
                + f" {k}-shot"
                + (f" {select}" if k else ""),
                "adapter": adapter,
                "shots": k,
                "select": select,
                "context": self.context_check.isChecked(),
                "advice": self.advice_check.isChecked(),
            }
            for adapter in chosen
            for k in parse_shots(self.shots_edit.text())
        ]
        return expand(entries, settings)

    def closeEvent(self, event: Any) -> None:
        self.cancel()
        super().closeEvent(event)
