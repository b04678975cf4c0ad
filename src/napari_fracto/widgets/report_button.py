"""The "Report…" button of the Analyze and Review docks: a file name, then the report made in a worker.

The dock gives a `job(out_html, pdf) -> Made` (built on the Qt thread from what it holds: a result and
its plane, or a dataset folder); reading images, drawing and printing the PDF run off the Qt thread.
A name ending in .pdf writes the PDF and the HTML beside it. `ask_path` is replaceable (tests).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFileDialog, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_fracto.widgets._common import ErrorPanel, Outcome, run_catching

Job = Callable[[Path, Path | None], Any]


class ReportButton(QWidget):
    """A "Report…" button with its status line and error panel."""

    finished = Signal(object)  # the Outcome (value: report.Made)

    def __init__(
        self, make_job: Callable[[], Job | str], tooltip: str, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.make_job = make_job  # a job, or a message saying what is missing
        self.ask_path: Callable[[], str] = self._ask_path
        self.button = QPushButton("Report…")
        self.button.setToolTip(tooltip + " Self-contained HTML (a .pdf name also writes the PDF).")
        self.button.clicked.connect(lambda *_: self.start())
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setOpenExternalLinks(True)
        self.error_panel = ErrorPanel()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.button, self.status_label, self.error_panel):
            layout.addWidget(widget)
        self._worker: Any = None

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def _ask_path(self) -> str:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save report", "report.html", "HTML (*.html);;PDF (*.pdf)"
        )
        return path

    def start(self) -> None:
        from napari.qt.threading import create_worker

        if self.busy:
            return
        self.error_panel.clear()
        job = self.make_job()
        if isinstance(job, str):
            self.error_panel.show_message(job)
            return
        chosen = self.ask_path()
        if not chosen:
            return
        path = Path(chosen)
        if path.suffix.lower() == ".pdf":
            html, pdf = path.with_suffix(".html"), path
        else:
            html, pdf = (path if path.suffix else path.with_suffix(".html")), None
        self.button.setEnabled(False)
        self.status_label.setText("Making the report …")
        worker = create_worker(run_catching, lambda: job(html, pdf), _start_thread=False)
        worker.returned.connect(self._returned)
        self._worker = worker
        worker.start()

    def _returned(self, outcome: Outcome) -> None:
        self._worker = None
        self.button.setEnabled(True)
        if outcome.error:
            self.status_label.setText("Report failed.")
            self.error_panel.show_outcome(outcome)
        else:
            made = outcome.value
            links = [made.pages[0]] + ([made.pdf] if made.pdf else [])
            self.status_label.setText(
                "Wrote " + ", ".join(f'<a href="{p.resolve().as_uri()}">{_escape(p.name)}</a>' for p in links)
            )
        self.finished.emit(outcome)


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def image_report_job(result: Any, array: Any, name: str) -> Job:
    """The job of Analyze's button: one image's report from its result and the analysed plane."""
    from napari_fracto.report import Report, entry_from_result, write_report
    from napari_fracto.report.redact import Redactor

    def job(out: Path, pdf: Path | None) -> Any:
        redactor = Redactor()
        source = result.source or name
        redactor.known.append(str(Path(source).parent))
        entry = entry_from_result(result, array, name=source)
        title = f"Analysis of {Path(name).name}"
        report = Report("image", title, f"{result.task} · {result.backend}", [entry])
        return write_report(report, out, redactor, pdf=pdf)

    return job


def dataset_report_job(root: Path, task: str | None) -> Job:
    """The job of Review's button: the dataset's reviewed items of the task (its own connection)."""
    from napari_fracto.report import make_report

    return lambda out, pdf: make_report(root, out, pdf=pdf, task=task or None)
