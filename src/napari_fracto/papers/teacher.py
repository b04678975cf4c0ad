"""Teacher labels: ask a model (typically a strong API model) about items already in the dataset, each
with the request stored with it, so an imported panel's caption and citing text go with it.

`dataset autolabel DATASET --task T` without image paths runs this; Review's "Add papers…" offers it.
The stored request is re-asked as it is (its context included), with only the token budgets and tiles
of this run; results are stored as unreviewed predictions for a person to review.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from napari_fracto.dataset.autolabel import AutolabelSummary
from napari_fracto.dataset.model import Status

if TYPE_CHECKING:
    from napari_fracto.backends.base import Backend
    from napari_fracto.dataset import Dataset
    from napari_fracto.dataset.model import ReviewRecord
    from napari_fracto.findings import AnalysisResult


def awaiting(ds: Dataset, task: str, image_ids: Iterable[str] | None = None) -> list[str]:
    """Items of `task` whose current review is unreviewed and holds no model answer yet."""
    wanted = set(image_ids) if image_ids is not None else None
    return [
        item.image.image_id
        for item in ds.iter_items(task=task, status=Status.UNREVIEWED)
        if awaits_answer(item.review) and (wanted is None or item.image.image_id in wanted)
    ]


def awaits_answer(review: ReviewRecord | None) -> bool:
    """An unreviewed review with no model answer yet: an imported item waiting for its teacher label."""
    return review is not None and review.status is Status.UNREVIEWED and not review.has_prediction


def answer_stored(
    ds: Dataset,
    image_id: str,
    task: str,
    backend: Backend,
    cancel: threading.Event | None = None,
    **changes: Any,
) -> AnalysisResult:
    """Ask `backend` the item's stored request (its context included), with `changes` (token budgets,
    tiles)."""
    from napari_fracto.analysis import run_request

    review = ds.latest_review(image_id, task)
    request = review.request.with_changes(image_id=image_id, task=task, **changes)
    return run_request(request, ds.image_array(image_id), backend, cancel=cancel)


def autolabel_stored(
    ds: Dataset,
    *,
    task: str,
    backend: Backend,
    image_ids: Iterable[str] | None = None,
    max_image_tokens: int | None = None,
    max_new_tokens: int | None = None,
    tiles: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> AutolabelSummary:
    """Predict every item awaiting an answer (see `awaiting`) with its stored request; failures reported."""
    todo = awaiting(ds, task, image_ids)
    summary = AutolabelSummary()
    changes = {
        k: v
        for k, v in (
            ("max_image_tokens", max_image_tokens),
            ("max_new_tokens", max_new_tokens),
            ("tiles", tiles),
        )
        if v is not None
    }
    for done, image_id in enumerate(todo, start=1):
        if cancel is not None and cancel.is_set():
            break
        source = ds.image(image_id).original_name or image_id[:12]
        try:
            result = answer_stored(ds, image_id, task, backend, cancel, **changes)
            ds.save_prediction(image_id, result, notes=f"teacher label of {source}")
            summary.predicted += 1
        except (ValueError, RuntimeError, OSError) as exc:  # BackendError, ImageError, a missing file
            summary.failures.append((source, str(exc)))
        if progress is not None:
            progress(done, len(todo))
    return summary
