"""Review's order section: queue the dataset's unreviewed images in the order that teaches most (or at
random, or in file order), ranked in a worker (`review.teach_inputs.teach_queue` does the work), with
why each image comes where it does shown beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QLabel, QVBoxLayout, QWidget

from napari_fracto.widgets._common import Outcome, add_run_controls, hbox, run_catching

ORDERS = {
    "teach": "what teaches most first",
    "random": "random (seeded)",
    "file": "as added",
}


class TeachSection(QWidget):
    """Order combo, "Review in this order" / Cancel and the reasons of the image in view.

    `ranked(order, list of review.teach_order.Ranked)` is emitted when a ranking is ready.
    """

    ranked = Signal(str, object)

    def __init__(self, target: Callable[[], tuple[Path, str] | None]) -> None:
        super().__init__()
        self.target = target  # the open dataset's folder and the task, or None
        self.reasons: dict[str, tuple[str, ...]] = {}
        self._worker: Any = None
        self._generation = 0  # a cancelled ranking's result is ignored when it comes back
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.order_combo = QComboBox()
        for name, text in ORDERS.items():
            self.order_combo.addItem(f"{name}: {text}", name)
        self.order_combo.setToolTip(
            "teach: unreviewed images ranked by disagreement between opinions (stored predictions, the "
            "probe), uncertain confidences, disagreement with the ptychography evidence, rare labels and "
            "distance from what is reviewed; each image shows why it comes next."
        )
        layout.addWidget(hbox(QLabel("Order"), self.order_combo))
        run = add_run_controls(
            layout,
            "Review in this order",
            self.start,
            self.cancel,
            tooltip="Queue the dataset's unreviewed images of the task in the chosen order (ranked in the "
            "background: image features are computed for the teach order).",
        )
        self.run = run
        self.start_button, self.cancel_button, self.progress_bar = run.start, run.cancel, run.progress
        self.status_label, self.error_panel = run.status, run.errors
        self.why_label = QLabel("")
        self.why_label.setWordWrap(True)
        layout.addWidget(self.why_label)

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def order(self) -> str:
        return str(self.order_combo.currentData())

    def start(self) -> bool:
        """Rank in a worker; False (with a message) when no dataset is open or a ranking runs already."""
        from napari.qt.threading import create_worker

        target = self.target()
        if self.busy:
            return False
        if target is None:
            self.error_panel.show_message("Open a dataset and choose the task first.")
            return False
        root, task = target
        order = self.order()
        self._generation += 1
        generation = self._generation
        self.run.running(f"Ranking the unreviewed {task} images ({order}) …")

        def job() -> Any:
            from napari_fracto.dataset import Dataset
            from napari_fracto.review.teach_inputs import teach_queue

            with Dataset.open(root) as ds:
                return teach_queue(ds, task, order=order)

        worker = create_worker(run_catching, job, _start_thread=False)
        worker.returned.connect(lambda outcome: self._returned(outcome, order, generation))
        self._worker = worker
        worker.start()
        return True

    def cancel(self) -> None:
        """The ranking cannot stop half-way; its result is dropped when it comes back."""
        self._generation += 1
        self._idle("Cancelled.")

    def _idle(self, text: str) -> None:
        self._worker = None
        self.run.idle(text)

    def _returned(self, outcome: Outcome, order: str, generation: int) -> None:
        if generation != self._generation:
            return
        if outcome.error:
            self._idle("Not ranked.")
            self.error_panel.show_outcome(outcome)
            return
        ranked, notes = outcome.value
        if not ranked:
            self._idle("No unreviewed images of this task in the dataset.")
            return
        self.reasons = {r.item_id: tuple(r.reasons) for r in ranked}
        self._idle(f"{len(ranked)} unreviewed image(s), {ORDERS[order]}." + "".join(f" {n}" for n in notes))
        self.ranked.emit(order, list(ranked))

    def show_reasons(self, image_id: str | None) -> None:
        """Why the image in view comes where it does (nothing for images not ranked here)."""
        why = self.reasons.get(image_id or "", ())
        self.why_label.setText("Why next: " + "; ".join(why) if why else "")


__all__ = ["ORDERS", "TeachSection"]
