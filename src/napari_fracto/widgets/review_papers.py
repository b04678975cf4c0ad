"""Review's "Add papers…": the figures of PDFs and JATS articles into the dataset as unreviewed panels
with their context, in a worker with progress and Cancel (`papers.collect.import_papers` does the work).

The new panels are then queued in Review; "Run the model on unlabelled" asks the chosen model about
each with its caption and citing text (`papers.teacher`), and the reviewer checks its proposals.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QCheckBox, QFileDialog, QVBoxLayout, QWidget

from napari_fracto.widgets._common import Outcome, ProgressRelay, add_run_controls, run_catching

FILTER = "Papers (*.pdf *.xml *.nxml);;All files (*)"


class PapersSection(QWidget):
    """Add papers… / Cancel, a progress bar and the import's summary; `finished(image ids)` when done."""

    finished = Signal(object)  # tuple of the image ids added

    def __init__(self, target: Callable[[], tuple[Path, str] | None]) -> None:
        super().__init__()
        self.target = target  # the open dataset's folder and the task, or None
        self.summary: Any = None  # the last import's PapersSummary
        self._cancel: threading.Event | None = None
        self._worker: Any = None
        self._relay = ProgressRelay(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.rare_check = QCheckBox("Only panels about rare labels")
        self.rare_check.setToolTip(
            "Targeted collection: keep panels whose caption or citing text mention a label the dataset has "
            "few reviewed examples of (what `dataset info` flags as rare)."
        )
        layout.addWidget(self.rare_check)
        run = add_run_controls(
            layout,
            "Add papers…",
            self.browse,
            self.cancel,
            tooltip="Figures of PDFs or JATS articles: micrograph panels with their caption and citing text, "
            "added as unreviewed (plots, schematics, photographs and reprints left out).",
        )
        self.run = run
        self._relay.progress.connect(run.show_progress)
        self.add_button, self.cancel_button, self.progress_bar = run.start, run.cancel, run.progress
        self.status_label, self.error_panel = run.status, run.errors

    @property
    def busy(self) -> bool:
        return self._cancel is not None

    def browse(self) -> None:
        if self.target() is None:
            self.error_panel.show_message("Open a dataset first: the panels are added to it.")
            return
        paths, _ = QFileDialog.getOpenFileNames(self, "Add papers", "", FILTER)
        if paths:
            self.start(paths, want=[] if self.rare_check.isChecked() else None)

    def start(self, paths: Sequence[str | Path], want: Sequence[str] | None = None) -> bool:
        """Import `paths` in a worker; False (with a message) when no dataset is open or one runs already.

        `want`: labels the panels must be about (`[]`: the rare ones), None: every micrograph panel."""
        from napari.qt.threading import create_worker

        target = self.target()
        if self.busy:
            return False
        if target is None:
            self.error_panel.show_message("Open a dataset first: the panels are added to it.")
            return False
        root, task = target
        cancel = threading.Event()
        self._cancel = cancel
        self.run.running("Reading the papers …")
        files = [Path(p) for p in paths]

        def job() -> Any:
            from napari_fracto.dataset import Dataset
            from napari_fracto.papers.collect import import_papers

            with Dataset.open(root) as ds:
                return import_papers(ds, files, task=task, want=want, progress=self._relay, cancel=cancel)

        worker = create_worker(run_catching, job, _start_thread=False)
        worker.returned.connect(self._returned)
        self._worker = worker
        worker.start()
        return True

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self.status_label.setText("Cancelling after the current paper (it is not half-added) …")

    def _returned(self, outcome: Outcome) -> None:
        self._cancel = None
        self._worker = None
        self.run.idle()
        if outcome.error:
            self.status_label.setText("Failed.")
            self.error_panel.show_outcome(outcome)
            self.finished.emit(())
            return
        summary = outcome.value
        self.summary = summary
        self.status_label.setText(summary.describe().splitlines()[-1])
        self.status_label.setToolTip(summary.describe())
        if summary.failed:
            skipped = "\n".join(why for _file, why in summary.failed)
            self.error_panel.show_message(f"{len(summary.failed)} file(s) skipped:\n{skipped}", notify=False)
        self.finished.emit(tuple(i for p in summary.papers for i in p.image_ids))
