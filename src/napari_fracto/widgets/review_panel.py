"""The findings and advice lists of the image in view, and the edits made from the panel.

A part of ReviewWidget (widgets/review.py), split out to keep each file small; it works on the
widget's own attributes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QTableWidgetItem,
)

from napari_fracto.widgets._common import (
    show_error,
    show_info,
)

if TYPE_CHECKING:
    from napari_fracto.review import ReviewSession


#: (napari key, method, what it does): bound on the viewer, listed in the tooltip and docs/review.md.

logger = logging.getLogger(__name__)


class PanelMixin:
    """The findings and advice lists of the image in view, and the edits made from the panel."""

    # ---- panel state ----------------------------------------------------------------------------------
    def _refresh(self) -> None:
        queue, session = self.queue, self.session
        if queue is None or session is None:
            self.pages.follow(None)
            self._set_enabled()
            return
        self.progress_label.setText(queue.progress_text())
        self.pages.follow(queue)
        entry = queue.current
        unsaved = " — unsaved changes" if session.dirty else ""
        self.image_label.setText(
            f"{queue.position + 1} / {len(queue)}: {entry.name} ({queue.status(queue.position)}){unsaved}"
        )
        selected = self.selected_row_id()
        self.table.setRowCount(len(session.rows))
        for i, row in enumerate(session.rows):
            box = "whole image" if row.box is None else ", ".join(f"{v:.0f}" for v in row.box.as_list())
            for col, text in enumerate((row.label, box, row.status)):
                self.table.setItem(i, col, QTableWidgetItem(text))
            if row.id == selected:
                self.table.selectRow(i)
        if selected is None and session.rows:
            self.table.selectRow(0)
        self._fill_advice(session)
        layer = self.shapes_layer
        if layer is not None:
            from napari_fracto.review.layer import REVIEW_METADATA, review_metadata

            layer.metadata[REVIEW_METADATA] = review_metadata(session)
        self._set_enabled()

    def _fill_advice(self, session: ReviewSession) -> None:
        selected = self.selected_advice_id()
        table = self.advice_table
        table.setRowCount(len(session.advice))
        for i, item in enumerate(session.advice):
            for col, text in enumerate((item.text, item.status)):
                cell = QTableWidgetItem(text)
                if not item.kept:
                    font = cell.font()
                    font.setStrikeOut(True)  # a rejected suggestion stays visible, crossed out
                    cell.setFont(font)
                table.setItem(i, col, cell)
            if item.id == selected:
                table.selectRow(i)
        if selected is None and session.advice:
            table.selectRow(0)

    def selected_advice_id(self) -> int | None:
        if self.session is None:
            return None
        model = self.advice_table.selectionModel()
        rows = model.selectedRows() if model else []
        if not rows:
            return None
        i = rows[0].row()
        return self.session.advice[i].id if i < len(self.session.advice) else None

    def selected_row_id(self) -> int | None:
        if self.session is None:
            return None
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        i = rows[0].row()
        return self.session.rows[i].id if i < len(self.session.rows) else None

    def _select_offset(self, step: int) -> None:
        n = self.table.rowCount()
        if n:
            current = self.table.currentRow()
            self.table.selectRow(min(max((current if current >= 0 else -step) + step, 0), n - 1))

    def _on_notes(self) -> None:
        if self.session is not None:
            self.session.notes = self.notes_edit.toPlainText()
            self._refresh_label_only()

    def _refresh_label_only(self) -> None:
        if self.queue is not None and self.session is not None:
            unsaved = " — unsaved changes" if self.session.dirty else ""
            entry = self.queue.current
            self.image_label.setText(
                f"{self.queue.position + 1} / {len(self.queue)}: {entry.name} "
                f"({self.queue.status(self.queue.position)}){unsaved}"
            )

    def _edit(self, func: Any, *args: Any) -> bool:
        """Run one review edit; a user error becomes a notification, the canvas follows the review."""
        from napari_fracto.review import ReviewError

        if self.session is None:
            return False
        try:
            func(*args)
        except ReviewError as exc:
            show_error(str(exc))
            return False
        self._render()
        self._refresh()
        return True

    # ---- actions (buttons and keys) -------------------------------------------------------------------
    def select_next_finding(self) -> None:
        self._select_offset(1)

    def select_previous_finding(self) -> None:
        self._select_offset(-1)

    def accept_selected(self) -> bool:
        row_id = self.selected_row_id()
        return row_id is not None and self._edit(self.session.accept, row_id)

    def reject_selected(self) -> bool:
        row_id = self.selected_row_id()
        return row_id is not None and self._edit(self.session.reject, row_id)

    def relabel_selected(self, label: str) -> bool:
        row_id = self.selected_row_id()
        if row_id is None:
            show_info("Select a finding in the list first, then choose its label.")
            return False
        return self._edit(self.session.relabel, row_id, label)

    def add_image_label(self, label: str) -> bool:
        return self._edit(self.session.add_label, label) if self.session else False

    def accept_selected_advice(self) -> bool:
        advice_id = self.selected_advice_id()
        return advice_id is not None and self._edit(self.session.accept_advice, advice_id)

    def reject_selected_advice(self) -> bool:
        advice_id = self.selected_advice_id()
        return advice_id is not None and self._edit(self.session.reject_advice, advice_id)

    def add_advice(self, text: str) -> bool:
        return self._edit(self.session.add_advice, text) if self.session else False

    def undo(self) -> None:
        if self.session is not None and (what := self.session.undo()):
            self.status_label.setText(f"Undone: {what}")
            self._render()
            self._refresh()

    def redo(self) -> None:
        if self.session is not None and (what := self.session.redo()):
            self.status_label.setText(f"Redone: {what}")
            self._render()
            self._refresh()
