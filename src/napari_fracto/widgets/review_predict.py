"""Review's "Run the model" section: predictions for the queue's images that have none yet.

The model runs in a worker with the viewer's shared model and adapter (what Analyze uses), on the
images the queue holds with nothing saved (unlabelled: no prediction, no review; a stored prediction,
e.g. one sent from Analyze with its display options, is never overwritten); each
result is stored whole with `Dataset.save_prediction`, so Review shows it as the findings to check.
The worker opens its own dataset connection; the Qt thread only starts it and shows progress.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_fracto.loop_state import LoopState
from napari_fracto.widgets._common import (
    Outcome,
    ProgressRelay,
    add_run_controls,
    run_catching,
)

if TYPE_CHECKING:
    from napari_fracto.backends.base import Backend
    from napari_fracto.settings import BackendSettings


def default_make_backend(settings: BackendSettings, api_key: str | None) -> Backend:
    from napari_fracto.backends.factory import make_backend

    return make_backend(settings, api_key=api_key)


def shared_settings(state: LoopState) -> BackendSettings:
    """The saved backend settings with the viewer's shared model, backend, device and adapter."""
    from napari_fracto.settings import load_settings

    update: dict[str, Any] = {"adapter": state.adapter}
    if state.model:
        update["model"] = state.model
    if state.kind in ("transformers", "openai"):
        update["kind"] = state.kind
    if state.device in ("auto", "cuda", "mps", "cpu"):
        update["device"] = state.device
    return load_settings().model_copy(update=update)


def predict_unreviewed(
    dataset: Path,
    task: str,
    entries: Sequence[tuple[str, str]],
    settings: BackendSettings,
    make_backend: Callable[[BackendSettings, str | None], Backend],
    cancel: threading.Event,
    progress: Callable[[int, int, str], None],
) -> int:
    """Predict every (image id, name) of `entries` with nothing saved (unlabelled); returns how many
    predictions were stored. Worker-thread code (own dataset connection, own backend)."""
    from napari_fracto.analysis import analyze_array
    from napari_fracto.backends.base import CancelledError
    from napari_fracto.dataset import Dataset
    from napari_fracto.dataset.model import Status
    from napari_fracto.papers.teacher import answer_stored, awaits_answer

    done = 0
    with Dataset.open(dataset) as ds:
        todo = []
        for image_id, name in entries:
            review = ds.latest_review(image_id, task)
            if review is None or review.status is Status.UNLABELLED or awaits_answer(review):
                todo.append((image_id, name))
        if not todo:
            return 0
        progress(0, len(todo), f"loading {settings.model} …")
        backend = make_backend(settings, None)
        try:
            for i, (image_id, name) in enumerate(todo):
                if cancel.is_set():
                    raise CancelledError("cancelled")
                budgets = {
                    "max_image_tokens": settings.max_image_tokens,
                    "max_new_tokens": settings.max_new_tokens,
                }
                if awaits_answer(ds.latest_review(image_id, task)):  # imported with its context (papers)
                    result = answer_stored(ds, image_id, task, backend, cancel, **budgets)
                else:
                    result = analyze_array(
                        ds.image_array(image_id), task=task, backend=backend, source=name, cancel=cancel,
                        **budgets,
                    )  # fmt: skip
                ds.save_prediction(image_id, result)
                done += 1
                progress(i + 1, len(todo), f"{i + 1} / {len(todo)} predicted ({name})")
        finally:
            backend.close()
    return done


class PredictSection(QWidget):
    """Run / Cancel and a progress bar; `finished(count)` once the predictions are stored."""

    finished = Signal(int)

    def __init__(self, state: LoopState, queue_entries: Callable[[], tuple[Path, str, list] | None]) -> None:
        super().__init__()
        self.state = state
        self.queue_entries = queue_entries
        self.make_backend: Callable[[BackendSettings, str | None], Backend] = default_make_backend
        self._cancel: threading.Event | None = None
        self._relay = ProgressRelay(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        run = add_run_controls(
            layout,
            "Run the model on unlabelled",
            self.start,
            self.cancel,
            tooltip="Predict the queue's images that have no prediction yet, with Analyze's model and "
            "adapter.",
        )
        self.run = run
        self._relay.progress.connect(run.show_progress)
        self.run_button, self.cancel_button, self.progress_bar = run.start, run.cancel, run.progress
        self.status_label, self.error_panel = run.status, run.errors

    @property
    def busy(self) -> bool:
        return self._cancel is not None

    def start(self) -> None:
        from napari.qt.threading import create_worker

        if self.busy:
            return
        got = self.queue_entries()
        if got is None:
            self.error_panel.show_message("Open a dataset and a queue first: the model runs over the queue.")
            self.finished.emit(0)
            return
        root, task, entries = got
        settings = shared_settings(self.state)
        if not settings.model:
            self.error_panel.show_message("Choose a model in the Analyze panel first.")
            self.finished.emit(0)
            return
        cancel = threading.Event()
        self._cancel = cancel
        self.run.running("Starting …")

        def job() -> int:
            return predict_unreviewed(root, task, entries, settings, self.make_backend, cancel, self._relay)

        worker = create_worker(run_catching, job, _start_thread=False)
        worker.returned.connect(self._returned)
        self._worker = worker
        worker.start()

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self.status_label.setText("Cancelling after the current image …")

    def _returned(self, outcome: Outcome) -> None:
        self._cancel = None
        self._worker = None
        self.run.idle()
        count = 0
        if outcome.cancelled:
            self.status_label.setText("Cancelled; the predictions made so far are stored.")
        elif outcome.error:
            self.status_label.setText("Failed.")
            self.error_panel.show_outcome(outcome)
        else:
            count = int(outcome.value)
            self.status_label.setText(
                f"{count} prediction(s) stored."
                if count
                else "Every image of the queue has a prediction already."
            )
        self.finished.emit(count)
