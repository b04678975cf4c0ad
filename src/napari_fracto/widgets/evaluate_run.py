"""Running an evaluation from the Evaluate widget: the worker job, Cancel, progress, and the results
(table and chart).

A part of EvaluateWidget (widgets/evaluate.py), split out to keep each file small; it works on the
widget's own attributes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QMessageBox, QTableWidgetItem

from napari_fracto.widgets._common import Outcome, ProgressRelay, confirm_remote_host, run_catching, show_info

if TYPE_CHECKING:
    from napari_fracto.evaluation.compare import EvalConfig
    from napari_fracto.evaluation.runner import BackendFactory, EvalRun


@dataclass
class EvaluationJob:
    """One evaluation as the worker runs it: the dataset, the configurations, where results go."""

    dataset: Path
    configs: list[EvalConfig]
    out: Path
    split: str
    task: str | None
    resamples: int
    backend_factory: BackendFactory | None
    progress: ProgressRelay
    cancel: threading.Event

    def run(self) -> tuple[EvalRun, dict[str, Path]]:
        from napari_fracto.dataset import Dataset
        from napari_fracto.evaluation.report import write_reports
        from napari_fracto.evaluation.runner import evaluate

        with Dataset.open(self.dataset) as dataset:
            run = evaluate(
                dataset,
                self.configs,
                self.out,
                split=self.split,
                task=self.task,
                resamples=self.resamples,
                backend_factory=self.backend_factory,
                cancel=self.cancel,
                progress=self.progress,
            )
        return run, write_reports(run, self.out)


class RunMixin:
    """Run / Cancel of the Evaluate widget, its progress, and the table and chart of a finished run."""

    # --- running ------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._job is not None

    def run(self) -> None:
        """Start the evaluation in a worker thread (ignored while one runs)."""
        if self.busy:
            return
        dataset = self.dataset_edit.text().strip()
        if not dataset:
            self.error_panel.show_message("Choose the dataset folder to evaluate on.")
            return
        try:
            configs = self.configs()
        except ValueError as exc:
            self.error_panel.show_message(str(exc))
            return
        self.error_panel.clear()
        for config in configs:
            if not self._remote_confirmed(config):
                return
        out = Path(self.out_edit.text().strip() or Path(dataset) / "evaluation")
        job = EvaluationJob(
            dataset=Path(dataset),
            configs=configs,
            out=out,
            split=self.split_combo.currentText(),
            task=self.task_combo.currentData(),
            resamples=self.resamples_spin.value(),
            backend_factory=self.backend_factory,
            progress=self._relay,
            cancel=threading.Event(),
        )
        self._start(job)

    def _remote_confirmed(self, config: EvalConfig) -> bool:
        if config.settings.kind != "openai":
            return True

        def ask(warning: str) -> bool:
            answer = QMessageBox.question(self, "Send images to a remote server?", warning + "\n\nSend them?")
            return answer == QMessageBox.StandardButton.Yes

        return confirm_remote_host(config.settings.base_url, ask)

    def _start(self, job: EvaluationJob) -> None:
        from napari.qt.threading import create_worker

        self._job = job
        self._set_busy(True)
        self.status_label.setText(f"Evaluating {len(job.configs)} configuration(s) …")
        worker = create_worker(run_catching, job.run, _start_thread=False)
        worker.returned.connect(lambda outcome: self._on_returned(job, outcome))
        self._worker = worker
        worker.start()

    def cancel(self) -> None:
        """Stop after the current image; what was finished stays cached for the next run."""
        job = self._job
        if job is None:
            return
        job.cancel.set()  # the runner and the backend stop at the next check; `returned` reports it
        self.status_label.setText("Cancelling after the current image …")

    def _set_busy(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.progress_bar.setVisible(busy)
        if busy:
            self.progress_bar.setRange(0, 0)

    def _on_progress(self, done: int, total: int, message: str) -> None:
        if self._job is None or total <= 0:
            return
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(done)
        self.status_label.setText(message)

    def _on_returned(self, job: EvaluationJob, outcome: Outcome) -> None:
        if job is not self._job:
            return
        self._job = None
        self._worker = None
        self._set_busy(False)
        if outcome.cancelled:
            self.status_label.setText("Cancelled; finished predictions are cached.")
        elif outcome.error:
            self.status_label.setText("Failed.")
            self.error_panel.show_outcome(outcome)
        else:
            run, paths = outcome.value
            self.show_run(run, paths)
            failed = [r.config.label for r in run.results if r.error]
            note = f" Stopped: {', '.join(failed)} (see the table)." if failed else ""
            self.status_label.setText(f"{run.n_images} image(s); results in {job.out}.{note}")
            show_info(f"Evaluation finished: results in {job.out}")
        self.run_finished.emit()

    def show_run(self, run: EvalRun, paths: dict[str, Path]) -> None:
        """Fill the table and show the chart."""
        from qtpy.QtGui import QPixmap

        from napari_fracto.evaluation.report import COLUMNS, table_rows

        self.last_run, self.last_paths = run, paths
        rows = table_rows(run)
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, column in enumerate(COLUMNS):
                self.table.setItem(i, j, QTableWidgetItem(row[column]))
        chart = paths.get("chart")
        pixmap = QPixmap(str(chart)) if chart else QPixmap()
        if not pixmap.isNull():
            self.chart_label.setPixmap(
                pixmap.scaledToWidth(min(pixmap.width(), 600), Qt.TransformationMode.SmoothTransformation)
            )
