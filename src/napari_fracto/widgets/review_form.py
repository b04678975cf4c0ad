"""The Review panel's form: its sections, key bindings and which buttons are enabled.

A part of ReviewWidget (widgets/review.py), split out to keep each file small; it works on the
widget's own attributes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_fracto.vocabulary import analysis_tasks
from napari_fracto.widgets._common import (
    ErrorPanel,
    hbox,
    scrolling_body,
)
from napari_fracto.widgets.report_button import ReportButton
from napari_fracto.widgets.review_pages import QueuePages
from napari_fracto.widgets.review_predict import PredictSection

if TYPE_CHECKING:
    pass


#: (napari key, method, what it does): bound on the viewer, listed in the tooltip and docs/review.md.

logger = logging.getLogger(__name__)

#: (napari key, method, what it does): bound on the viewer, listed in the tooltip and docs/review.md.
KEYS: tuple[tuple[str, str, str], ...] = (
    ("G", "accept_all_and_next", "accept all pending findings, save, go to the next unreviewed image"),
    ("W", "save", "save the review of this image"),
    ("Q", "skip", "mark this image skipped, go to the next unreviewed image"),
    ("N", "next_unreviewed", "jump to the next unreviewed image"),
    ("PageDown", "next_image", "next image"),
    ("PageUp", "previous_image", "previous image"),
    ("J", "select_next_finding", "select the next finding in the list"),
    ("K", "select_previous_finding", "select the previous finding in the list"),
    ("H", "accept_selected", "accept the selected finding"),
    ("U", "reject_selected", "reject the selected finding"),
    ("Control-Z", "undo", "undo the last review edit"),
    ("Control-Shift-Z", "redo", "redo"),
)


def keys_help() -> str:
    lines = [f"{key:<16} {what}" for key, _, what in KEYS]
    return "Keys (with the canvas focused):\n" + "\n".join(lines) + "\nR on the findings layer: draw a box"


class ReviewFormMixin:
    """The Review panel's form: its sections, key bindings and which buttons are enabled."""

    # ---- UI -------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        from napari_fracto.dataset.core import default_reviewer

        self.setToolTip(keys_help())
        layout = scrolling_body(self)
        form = QFormLayout()
        self.dataset_edit = QLineEdit()
        self.dataset_edit.setPlaceholderText("folder of the corrections dataset (created if new)")
        self.dataset_edit.returnPressed.connect(lambda: self.open_dataset(self.dataset_edit.text()))
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse_dataset)
        form.addRow("Dataset", hbox(self.dataset_edit, browse))
        self.task_combo = QComboBox()
        self.task_combo.addItems(analysis_tasks())
        form.addRow("Task", self.task_combo)
        self.reviewer_edit = QLineEdit(default_reviewer())
        self.reviewer_edit.setToolTip("Recorded with every review you save.")
        form.addRow("Reviewer", self.reviewer_edit)
        layout.addLayout(form)
        self._build_sources(layout)
        self._build_findings(layout)
        self._build_advice(layout)
        self._build_actions(layout)

    def _build_sources(self, layout: QVBoxLayout) -> None:
        """The buttons that open what to review, Run the model, progress."""
        self.open_folder_button = QPushButton("Open folder…")
        self.open_folder_button.clicked.connect(self._browse_folder)
        self.open_file_button = QPushButton("Open stack / results…")
        self.open_file_button.setToolTip("An image stack, or the results .jsonl of `napari-fracto analyze`.")
        self.open_file_button.clicked.connect(self._browse_file)
        self.all_button = QPushButton("Whole dataset")
        self.all_button.setToolTip("Review every image of the task in the dataset (e.g. after autolabel).")
        self.all_button.clicked.connect(self.review_dataset)
        layout.addWidget(hbox(self.open_folder_button, self.all_button))
        layout.addWidget(self.open_file_button)
        self.report_button = ReportButton(self.report_job, "A report of the reviewed images of the task.")
        layout.addWidget(self.report_button)

        from napari_fracto.widgets.review_papers import PapersSection

        self.papers = PapersSection(self.papers_target)
        self.papers.finished.connect(self._on_papers_added)
        layout.addWidget(self.papers)

        from napari_fracto.widgets.review_teach import TeachSection

        self.teach = TeachSection(self.papers_target)
        self.teach.ranked.connect(self._on_ranked)
        layout.addWidget(self.teach)

        self.predict = PredictSection(self.state, self.queue_entries)
        self.predict.finished.connect(self._on_predicted)
        layout.addWidget(self.predict)

        self.progress_label = QLabel("Open a dataset to start.")
        self.progress_label.setStyleSheet("font-weight: bold")
        layout.addWidget(self.progress_label)
        self.image_label = QLabel("")
        self.image_label.setWordWrap(True)
        layout.addWidget(self.image_label)
        self.pages = QueuePages(self.show_image)  # one page of the queue, more on demand
        layout.addWidget(self.pages)

    def _build_findings(self, layout: QVBoxLayout) -> None:
        """The findings list and the accept / reject / label controls."""
        self.table = _row_table(["Label", "Box (x1, y1, x2, y2)", "Status"])
        self.table.setMinimumHeight(140)
        layout.addWidget(self.table)

        self.accept_button = QPushButton("Accept (H)")
        self.accept_button.clicked.connect(self.accept_selected)
        self.reject_button = QPushButton("Reject (U)")
        self.reject_button.clicked.connect(self.reject_selected)
        layout.addWidget(hbox(self.accept_button, self.reject_button))

        self.label_combo = QComboBox()
        self.label_combo.setToolTip(
            "The label for relabelling, for a missed image-level label and for new boxes."
        )
        self.label_combo.currentTextChanged.connect(self._on_label_choice)
        self.relabel_button = QPushButton("Set label")
        self.relabel_button.clicked.connect(lambda: self.relabel_selected(self.label_combo.currentText()))
        self.add_label_button = QPushButton("Add image label")
        self.add_label_button.clicked.connect(lambda: self.add_image_label(self.label_combo.currentText()))
        layout.addWidget(hbox(self.label_combo, self.relabel_button, self.add_label_button))
        hint = QLabel("Draw a box: select the findings layer, press R and drag; it gets the label above.")
        hint.setWordWrap(True)
        layout.addWidget(hint)

    def _build_advice(self, layout: QVBoxLayout) -> None:
        """Reconstruction advice (ptychography), reviewed like the labels."""
        # reconstruction advice (ptychography): reviewed like the labels, saved as the review's advice
        self.advice_box = QWidget()
        advice_layout = QVBoxLayout(self.advice_box)
        advice_layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Reconstruction advice")
        title.setStyleSheet("font-weight: bold")
        advice_layout.addWidget(title)
        self.advice_table = _row_table(["Suggestion", "Status"])
        self.advice_table.setMaximumHeight(120)
        self.advice_table.setToolTip("The model's suggested changes to the reconstruction, and yours.")
        advice_layout.addWidget(self.advice_table)
        self.accept_advice_button = QPushButton("Accept advice")
        self.accept_advice_button.clicked.connect(self.accept_selected_advice)
        self.reject_advice_button = QPushButton("Reject advice")
        self.reject_advice_button.clicked.connect(self.reject_selected_advice)
        advice_layout.addWidget(hbox(self.accept_advice_button, self.reject_advice_button))
        self.advice_combo = QComboBox()
        self.advice_combo.setToolTip("A suggestion the model missed (PtychoBench's advice classes).")
        self.add_advice_button = QPushButton("Add advice")
        self.add_advice_button.clicked.connect(lambda: self.add_advice(self.advice_combo.currentText()))
        advice_layout.addWidget(hbox(self.advice_combo, self.add_advice_button))
        self.advice_box.setVisible(False)
        layout.addWidget(self.advice_box)

    def _build_actions(self, layout: QVBoxLayout) -> None:
        """Notes, save / skip / navigation / undo buttons, status and the last error."""
        self.notes_edit = QPlainTextEdit()
        self.notes_edit.setPlaceholderText("Notes on this image (saved with the review)")
        self.notes_edit.setMaximumHeight(70)
        self.notes_edit.textChanged.connect(self._on_notes)
        layout.addWidget(self.notes_edit)

        grid = QGridLayout()
        self.save_button = QPushButton("Save (W)")
        self.save_button.clicked.connect(lambda: self.save())  # not clicked(checked) as the status
        self.accept_next_button = QPushButton("Accept all + next (G)")
        self.accept_next_button.clicked.connect(self.accept_all_and_next)
        self.skip_button = QPushButton("Skip (Q)")
        self.skip_button.clicked.connect(self.skip)
        self.prev_button = QPushButton("◀ Previous (PgUp)")
        self.prev_button.clicked.connect(self.previous_image)
        self.next_button = QPushButton("Next (PgDn) ▶")
        self.next_button.clicked.connect(self.next_image)
        self.unreviewed_button = QPushButton("Next unreviewed (N)")
        self.unreviewed_button.clicked.connect(self.next_unreviewed)
        self.undo_button = QPushButton("Undo (Ctrl+Z)")
        self.undo_button.clicked.connect(self.undo)
        self.redo_button = QPushButton("Redo (Ctrl+Shift+Z)")
        self.redo_button.clicked.connect(self.redo)
        for i, b in enumerate(
            (
                self.save_button,
                self.accept_next_button,
                self.skip_button,
                self.prev_button,
                self.next_button,
                self.unreviewed_button,
                self.undo_button,
                self.redo_button,
            )
        ):
            grid.addWidget(b, i // 2, i % 2)
        layout.addLayout(grid)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.error_panel = ErrorPanel()
        layout.addWidget(self.error_panel)
        layout.addStretch(1)

    def _bind_keys(self) -> None:
        self._previous_bindings: dict[str, Any] = {}
        for key, method, _ in KEYS:
            action = getattr(self, method)
            previous = self.viewer.bind_key(key, lambda _viewer, a=action: a(), overwrite=True)
            self._previous_bindings[key] = previous

    def _unbind_keys(self) -> None:
        for key, previous in getattr(self, "_previous_bindings", {}).items():
            try:
                self.viewer.bind_key(key, previous, overwrite=True)
            except (TypeError, ValueError):
                logger.debug("could not restore key %s", key)
        self._previous_bindings = {}

    def _set_enabled(self) -> None:
        has_ds = self.dataset is not None
        has_image = self.session is not None
        for b in (self.open_folder_button, self.open_file_button, self.all_button):
            b.setEnabled(has_ds)
        for b in (
            self.save_button,
            self.accept_next_button,
            self.skip_button,
            self.prev_button,
            self.next_button,
            self.unreviewed_button,
            self.accept_button,
            self.reject_button,
            self.relabel_button,
            self.add_label_button,
            self.accept_advice_button,
            self.reject_advice_button,
            self.add_advice_button,
        ):
            b.setEnabled(has_image)
        self.undo_button.setEnabled(has_image and self.session.can_undo)
        self.redo_button.setEnabled(has_image and self.session.can_redo)

    def _browse_dataset(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Corrections dataset folder", self.dataset_edit.text())
        if path:
            self.open_dataset(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of images to review")
        if path:
            self.open_source(path)

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Image stack or analysis results",
            "",
            "Results or images (*.jsonl *.ndjson *.tif *.tiff *.npy *.npz *.h5 *.hdf5 *.cxi *.png *.jpg)"
            ";;All files (*)",
        )
        if path:
            self.open_source(path)


def _row_table(headers: list[str]) -> QTableWidget:
    """A read-only list whose rows are picked one at a time (findings, advice); the first column stretches."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
    table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
    table.verticalHeader().setVisible(False)
    return table
