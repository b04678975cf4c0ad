"""The Review dock widget: go through a queue of images, accept / reject / correct the model's findings on
the canvas, and save each review to the corrections dataset.

Thin on purpose: the review state, its undo log, the queue and the layer conversions live in
`napari_fracto.review` (no Qt). This module wires them to napari: it loads each image with the plugin's
reader, shows the kept boxes on a Shapes layer, and reads edits made there (draw, move, resize, delete)
back into the review.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QWidget,
)

from napari_fracto.loop_state import loop_state
from napari_fracto.widgets._binding import bind_text
from napari_fracto.widgets._common import (
    Outcome,
    fit_width,
    run_catching,
    show_error,
    show_info,
    show_warning,
)
from napari_fracto.widgets.review_canvas import CanvasMixin
from napari_fracto.widgets.review_form import KEYS, ReviewFormMixin, keys_help
from napari_fracto.widgets.review_panel import PanelMixin

if TYPE_CHECKING:
    import napari

    from napari_fracto.dataset import Dataset
    from napari_fracto.review import ReviewQueue, ReviewSession

logger = logging.getLogger(__name__)


class ReviewWidget(ReviewFormMixin, CanvasMixin, PanelMixin, QWidget):
    """Dock widget: open a dataset, queue images, review each one, save. Keys: see `keys_help()`."""

    image_loaded = Signal(int)  # queue index, after the image and its findings are on the canvas
    saved = Signal(object)  # the ReviewRecord just written

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.dataset: Dataset | None = None
        self.queue: ReviewQueue | None = None
        self.session: ReviewSession | None = None
        self.index: int | None = None
        self.shapes_layer: Any = None
        self._layers: list[Any] = []
        self._sessions: dict[str, ReviewSession] = {}  # unsaved edits survive next / previous
        self._vocab: Any = None
        self._advice_names: list[str] = []  # the advice vocabulary when the task has one
        self._syncing = False
        self._open_worker: Any = None
        self.state = loop_state(napari_viewer)
        self._build_ui()
        self._bind_keys()
        bind_text(self.dataset_edit, self.state, "dataset")
        bind_text(self.task_combo, self.state, "task")
        self.state.events.sent_to_review.connect(self._on_sent)
        self.image_loaded.connect(self._show_why)
        self._set_enabled()
        fit_width(self)

    # ---- the loop: images sent from Analyze ------------------------------------------------------------
    def _on_sent(self, image_ids: tuple[str, ...]) -> None:
        """Analyze sent images to the shared dataset: queue them here, first unreviewed on screen."""
        from napari_fracto.review import ReviewQueue

        if not image_ids:
            return
        root = Path(self.state.dataset).expanduser()
        is_open = self.dataset is not None and Path(self.dataset.root).resolve() == root.resolve()
        if not is_open and not self.open_dataset(root, resume=False):
            return
        ids = list(dict.fromkeys(image_ids))
        task = self.dataset.image(ids[0]).task or self.task_combo.currentText()
        self._start(
            ReviewQueue.from_order(
                self.dataset, task, ids, key="analyze", source="sent from Analyze", restore=False
            )
        )

    def papers_target(self) -> tuple[Path, str] | None:
        """Where "Add papers…" adds panels: the open dataset, under the chosen task."""
        if self.dataset is None or not self.task_combo.currentText():
            return None
        return Path(self.dataset.root), self.task_combo.currentText()

    def _on_papers_added(self, image_ids: tuple[str, ...]) -> None:
        """Panels came in from papers: queue them for review (Run the model asks with their context)."""
        from napari_fracto.review import ReviewQueue

        if not image_ids or self.dataset is None:
            return
        task = self.task_combo.currentText()
        self._start(
            ReviewQueue.from_order(
                self.dataset, task, image_ids, key="papers", source="papers", restore=False
            )
        )

    def _on_ranked(self, order: str, ranked: list[Any]) -> None:
        """A ranking of the unreviewed images came back: review them in that order, each with its why."""
        from napari_fracto.review import ReviewQueue

        if self.dataset is None:
            return
        ids = [r.item_id for r in ranked]
        task = self.task_combo.currentText()
        self._start(
            ReviewQueue.from_order(
                self.dataset, task, ids, key=f"order-{order}", source=f"{order} order", restore=False
            )
        )

    def _show_why(self, _index: int) -> None:
        current = self.queue.current if self.queue is not None else None
        self.teach.show_reasons(current.image_id if current is not None else None)

    def queue_entries(self) -> tuple[Path, str, Iterable[tuple[str, str]]] | None:
        """What "Run the model" works on: the dataset folder, the task and the queue's images (read page
        by page by the worker that iterates them)."""
        if self.dataset is None or self.queue is None:
            return None
        return Path(self.dataset.root), self.queue.task, self.queue.pairs()

    def _on_predicted(self, count: int) -> None:
        """New predictions are in the dataset: statuses and the unedited sessions come from there again."""
        if self.queue is None or not count:
            return
        self.queue.refresh()
        self._sessions = {k: v for k, v in self._sessions.items() if v.dirty}
        self.show_image(self.queue.position)

    # ---- opening --------------------------------------------------------------------------------------
    def open_dataset(self, path: str | Path, *, resume: bool = True) -> bool:
        """Open (or create) the dataset and continue its last queue where it was left."""
        from napari_fracto.dataset import Dataset, DatasetError
        from napari_fracto.review import ReviewQueue

        path = str(path).strip()
        if not path:
            show_error("Enter or pick a folder for the corrections dataset.")
            return False
        try:
            dataset = Dataset.open_or_create(path)
        except (DatasetError, OSError) as exc:
            show_error(f"Could not open the dataset: {exc}")
            return False
        self._close_dataset(keep_layers=True)  # the next image reuses them (new layers stall napari)
        self.dataset = dataset
        self.dataset_edit.setText(str(dataset.root))
        queue = ReviewQueue.resume(dataset) if resume else None
        if queue is None:
            self._remove_layers()
            self.progress_label.setText("Open a folder, a stack or results to review.")
            self._set_enabled()
            return True
        self._start(queue)
        return True

    def open_source(self, path: str | Path) -> bool:
        """Queue a folder, an image stack or a results .jsonl and show its first unreviewed image.

        The files are read and hashed into the dataset in a worker (a 500-image folder takes seconds);
        returns True once that started, and `image_loaded` follows when the first image is on screen.
        """
        from napari.qt.threading import create_worker

        from napari_fracto.review import ReviewQueue

        if not self._need_dataset():
            return False
        if self._open_worker is not None:
            show_info("Still opening the previous folder or file; wait for it to appear.")
            return False
        path = Path(path).expanduser()
        if not path.exists():
            self.error_panel.show_message(f"Cannot review {path}: it does not exist.")
            return False
        dataset, task = self.dataset, self.task_combo.currentText() or None
        self.error_panel.clear()
        self.status_label.setText(f"Opening {path.name} (reading and storing the images) …")
        worker = create_worker(
            run_catching, lambda: ReviewQueue.open(dataset, path, task), _start_thread=False
        )
        worker.returned.connect(lambda outcome: self._source_opened(outcome, dataset))
        self._open_worker = worker
        worker.start()
        return True

    def _source_opened(self, outcome: Outcome, dataset: Any) -> None:
        self._open_worker = None
        if dataset is not self.dataset:
            return  # another dataset was opened meanwhile
        if outcome.error:
            self.status_label.setText("Not opened.")
            self.error_panel.show_outcome(outcome)
            return
        self.status_label.setText("")
        self._start(outcome.value)

    def review_dataset(self) -> bool:
        """Queue every image of the chosen task in the dataset."""
        from napari_fracto.review import QueueError, ReviewQueue

        if not self._need_dataset():
            return False
        try:
            queue = ReviewQueue.from_dataset(self.dataset, self.task_combo.currentText())
        except (QueueError, ValueError) as exc:
            show_error(str(exc))
            return False
        self._start(queue)
        return True

    def _need_dataset(self) -> bool:
        if self.dataset is None:
            show_error("Open a corrections dataset first (the 'Dataset' field): reviews are saved there.")
            return False
        return True

    def _start(self, queue: ReviewQueue) -> None:
        from napari_fracto.vocabulary import load_vocabulary

        self.queue = queue
        self._sessions.clear()
        try:
            self._vocab = load_vocabulary(queue.task)
        except (LookupError, ValueError) as exc:
            show_error(f"No vocabulary for task {queue.task!r}: {exc}")
            return
        self.task_combo.setCurrentText(queue.task)
        self.label_combo.blockSignals(True)
        self.label_combo.clear()
        self.label_combo.addItems(self._vocab.names())
        self.label_combo.blockSignals(False)
        self._advice_names = advice_names(queue.task)
        self.advice_combo.clear()
        self.advice_combo.addItems(self._advice_names)
        self.advice_box.setVisible(bool(self._advice_names))
        if queue.problems:
            show_warning(f"{len(queue.problems)} item(s) left out: " + "; ".join(queue.problems[:3]))
        start = queue.position
        if queue.status(start) != "unreviewed":
            nxt = queue.next_unreviewed()
            start = start if nxt is None else nxt
        self.show_image(start)

    def save(self, status: str = "reviewed") -> Any:
        """Write this image's review to the dataset; returns the stored record (None on failure)."""
        from napari_fracto.review import QueueError

        if self.queue is None or self.session is None or self.index is None:
            return None
        try:
            record = self.queue.save(
                self.index,
                self.session,
                reviewer=self.reviewer_edit.text().strip() or None,
                status=status,
                vocabulary_version=getattr(self._vocab, "version", None),
            )
        except (QueueError, ValueError, OSError) as exc:
            show_error(str(exc))
            return None
        self.status_label.setText(
            f"Saved {self.queue.current.name} as {status} (review #{record.review_id})."
        )
        self._refresh()
        self.saved.emit(record)
        return record

    def skip(self) -> Any:
        record = self.save(status="skipped")
        if record is not None:
            self.next_unreviewed()
        return record

    def accept_all_and_next(self) -> Any:
        if self.session is None:
            return None
        self.session.accept_all()
        record = self.save()
        if record is not None:
            self.next_unreviewed()
        return record

    def next_image(self) -> None:
        if self.queue is not None:
            self.show_image(self.queue.position + 1)

    def previous_image(self) -> None:
        if self.queue is not None:
            self.show_image(self.queue.position - 1)

    def next_unreviewed(self) -> None:
        if self.queue is None:
            return
        nxt = self.queue.next_unreviewed()
        if nxt is None:
            self.status_label.setText(f"All done: {self.queue.progress_text()}.")
            show_info(f"No unreviewed image left ({self.queue.progress_text()}).")
            return
        self.show_image(nxt)

    def report_job(self) -> Any:
        """The Report… button's job: the open dataset's reviewed images of the task, or what is missing."""
        from napari_fracto.widgets.report_button import dataset_report_job

        if self.dataset is None:
            return "Open a dataset first: the report shows its reviewed images."
        return dataset_report_job(Path(self.dataset.root), self.task_combo.currentText())

    # ---- lifetime -------------------------------------------------------------------------------------
    def _close_dataset(self, *, keep_layers: bool = False) -> None:
        if not keep_layers:
            self._remove_layers()
        if self.dataset is not None:
            self.dataset.close()
        self.dataset = self.queue = self.session = self.index = None
        self._sessions.clear()

    def closeEvent(self, event: Any) -> None:
        unsaved = [s for s in self._sessions.values() if s.dirty]
        if unsaved:
            show_warning(f"{len(unsaved)} image(s) had unsaved review edits; they were not saved.")
        self._unbind_keys()
        if self.dataset is not None:
            self.dataset.close()
            self.dataset = None
        super().closeEvent(event)


def advice_names(task: str) -> list[str]:
    """The advice vocabulary of `task` (`<task>-advice`, e.g. ptychography's), or [] when it has none."""
    from napari_fracto.vocabulary import advice_vocabulary

    try:
        vocab = advice_vocabulary(task)
    except (LookupError, ValueError) as exc:
        show_warning(f"The advice vocabulary of {task!r} cannot be read ({exc}); advice is not reviewed.")
        return []
    return list(vocab.names()) if vocab is not None else []


__all__ = ["KEYS", "ReviewWidget", "advice_names", "keys_help"]
