"""Review's queue list: one page of the queue (image, status), earlier and later pages on demand.

A queue of 100,000 images is never listed whole: the list shows the page of the image in view (100
entries, read from the dataset's index in a few milliseconds), "◀ Page" and "Page ▶" read the one
before or after, and clicking an entry shows that image. Filling the list is skipped when the page and
its statuses are unchanged, so edits on the canvas do not redraw it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from qtpy.QtWidgets import (
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_fracto.widgets._common import hbox

if TYPE_CHECKING:
    from napari_fracto.review import ReviewQueue


class QueuePages(QWidget):
    """The page list of a review queue; `show_image(index)` is called when the reviewer picks an entry."""

    def __init__(self, show_image: Callable[[int], object]) -> None:
        super().__init__()
        self._show_image = show_image
        self.queue: ReviewQueue | None = None
        self.number = 0  # the page shown (0-based)
        self._shown: tuple | None = None  # what the table holds now, to skip refilling it
        self._followed: tuple[int, int] | None = None  # (queue, image) the page last followed
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.page_label = QLabel("")
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["#", "Image", "Status"])
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.setMaximumHeight(180)
        self.table.setToolTip("One page of the queue; click an image to review it.")
        self.table.cellClicked.connect(self._picked)
        self.previous_button = QPushButton("◀ Page")
        self.previous_button.clicked.connect(lambda: self.show_page(self.number - 1))
        self.next_button = QPushButton("Page ▶")
        self.next_button.clicked.connect(lambda: self.show_page(self.number + 1))
        layout.addWidget(hbox(self.page_label, self.previous_button, self.next_button))
        layout.addWidget(self.table)
        self.setVisible(False)

    def follow(self, queue: ReviewQueue | None) -> None:
        """Show the page holding the queue's current image when that image changed; otherwise keep the
        page the reviewer turned to (its statuses brought up to date)."""
        self.queue = queue
        self.setVisible(queue is not None)
        if queue is None:
            self._followed = None
            return
        followed = (id(queue), queue.position)
        if followed != self._followed:
            self._followed = followed
            self.number = queue.position // _page_size()
        self.show_page(self.number)

    def show_page(self, number: int) -> None:
        """Show page `number` (clamped) without changing the image in view."""
        queue = self.queue
        if queue is None:
            return
        self.number = min(max(int(number), 0), queue.page_count - 1)
        rows = queue.page(self.number)
        current = queue.position
        shown = (id(queue), self.number, current, tuple((i, e.image_id, s) for i, e, s in rows))
        first = rows[0][0] + 1 if rows else 0
        self.page_label.setText(
            f"Page {self.number + 1:,} / {queue.page_count:,} "
            f"(images {first:,}–{first + len(rows) - 1:,} of {len(queue):,})"
        )
        self.previous_button.setEnabled(self.number > 0)
        self.next_button.setEnabled(self.number < queue.page_count - 1)
        if shown == self._shown:
            return
        self._shown = shown
        self.table.setRowCount(len(rows))
        for r, (index, entry, status) in enumerate(rows):
            for col, text in enumerate((str(index + 1), entry.name, status)):
                self.table.setItem(r, col, QTableWidgetItem(text))
            if index == current:
                self.table.selectRow(r)
        if not any(index == current for index, _, _ in rows):
            self.table.clearSelection()

    def rows(self) -> list[tuple[str, str, str]]:
        """What the list shows: (number, image name, status) per row."""
        return [
            tuple(self.table.item(r, c).text() for c in range(3))  # type: ignore[misc]
            for r in range(self.table.rowCount())
        ]

    def _picked(self, row: int, _column: int) -> None:
        item = self.table.item(row, 0)
        if item is not None:
            self._show_image(int(item.text()) - 1)


def _page_size() -> int:
    from napari_fracto.review.queue import PAGE_SIZE

    return PAGE_SIZE
