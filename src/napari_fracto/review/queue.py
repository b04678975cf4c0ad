"""A review queue: an ordered list of dataset images with a status each (unreviewed, reviewed, skipped),
"37 / 120 reviewed", and navigation (next, previous, next unreviewed).

Statuses are the dataset's latest reviews, so two windows or the CLI writing to the same dataset agree.
The queue itself (which images, in which order, where the reviewer was) is kept in the dataset's `meta`
table, so closing napari and opening the dataset again continues where the reviewer left off.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from napari_fracto.dataset.model import DatasetError, ReviewRecord, Status
from napari_fracto.review.session import ReviewSession
from napari_fracto.review.sources import QueueEntry, QueueError, collect

if TYPE_CHECKING:
    from napari_fracto.dataset import Dataset

__all__ = ["QueueEntry", "QueueError", "ReviewQueue"]

UNREVIEWED, REVIEWED, SKIPPED = "unreviewed", "reviewed", "skipped"
_PREFIX = "review_queue:"
_LAST = _PREFIX + "last"


def _status(review: ReviewRecord | None) -> str:
    if review is None:
        return UNREVIEWED
    if review.status is Status.REVIEWED:
        return REVIEWED
    if review.status is Status.SKIPPED:
        return SKIPPED
    return UNREVIEWED


def _status_text(status: str | None) -> str:
    if status == Status.REVIEWED.value:
        return REVIEWED
    if status == Status.SKIPPED.value:
        return SKIPPED
    return UNREVIEWED


def _latest_statuses(dataset: Dataset, task: str) -> list[tuple[str, str | None]]:
    """(image id, status of its latest review of `task` or None) for the task's images, in one query.

    Reads the dataset's connection directly (as `dataset.tools.validate` does): the Dataset API has no
    status-only listing, and building every review record is what made reopening a large dataset stall.
    """
    sql = (
        "SELECT i.image_id, r.status FROM images i LEFT JOIN reviews r ON r.review_id = "
        "(SELECT MAX(review_id) FROM reviews WHERE image_id = i.image_id AND task = ?) "
        "WHERE COALESCE(r.task, i.task) = ?"
    )
    with dataset._lock:
        return [(row[0], row[1]) for row in dataset._conn.execute(sql, (task, task)).fetchall()]


def _image_ids(dataset: Dataset) -> set[str]:
    with dataset._lock:
        return {row[0] for row in dataset._conn.execute("SELECT image_id FROM images").fetchall()}


class ReviewQueue:
    """Images of one task to review, in order; open with `open`, `from_dataset` or `resume`."""

    def __init__(
        self,
        dataset: Dataset,
        task: str,
        entries: Sequence[QueueEntry],
        *,
        key: str,
        source: str = "",
        problems: Sequence[str] = (),
    ) -> None:
        if not entries:
            raise QueueError("nothing to review: the queue has no images")
        self.dataset = dataset
        self.task = task
        self.entries = list(entries)
        self.key = key
        self.source = source
        self.problems = list(problems)
        self._status: dict[str, str] = {}
        self._position = 0
        self.refresh()

    # ---- opening ------------------------------------------------------------------------------------
    @classmethod
    def open(cls, dataset: Dataset, source: str | Path, task: str | None = None) -> ReviewQueue:
        """Queue a folder, an image stack or a results .jsonl (stored in `dataset`); remembered there."""
        path = Path(source).expanduser().resolve()
        got = collect(dataset, path, task)
        queue = cls(dataset, got.task, got.entries, key=str(path), source=str(path), problems=got.problems)
        queue._restore_position()
        queue._persist()
        return queue

    @classmethod
    def from_dataset(cls, dataset: Dataset, task: str) -> ReviewQueue:
        """Every image of `task` in the dataset (e.g. after `napari-fracto dataset autolabel`)."""
        entries = [
            QueueEntry(item.image_id, item.image.original_name or item.image_id[:12])
            for item in dataset.iter_items(task=task)
        ]
        if not entries:
            raise QueueError(
                f"the dataset has no {task!r} images; add some with 'Open folder…' or "
                "`napari-fracto dataset import`"
            )
        queue = cls(dataset, task, entries, key=f"dataset:{task}")
        queue._restore_position()
        queue._persist()
        return queue

    @classmethod
    def resume(cls, dataset: Dataset) -> ReviewQueue | None:
        """The queue last used with this dataset, or None when there is none (or it cannot be read)."""
        meta = dataset.meta
        key = meta.get(_LAST)
        text = meta.get(_PREFIX + key) if key else None
        if not text:
            return None
        try:
            saved = json.loads(text)
            entries = [QueueEntry(str(i), str(n)) for i, n in saved["entries"]]
            known = _image_ids(dataset)
            entries = [e for e in entries if e.image_id in known]
            queue = cls(dataset, saved["task"], entries, key=key, source=saved.get("source", ""))
        except (ValueError, KeyError, TypeError, QueueError):
            return None
        queue._restore_position()
        return queue

    def _persist(self) -> None:
        saved = {
            "task": self.task,
            "source": self.source,
            "entries": [[e.image_id, e.name] for e in self.entries],
        }
        self.dataset.set_meta(_PREFIX + self.key, json.dumps(saved, ensure_ascii=False))
        self.dataset.set_meta(_LAST, self.key)

    def _restore_position(self) -> None:
        try:
            saved = int(self.dataset.meta.get(f"{_PREFIX}{self.key}:position", "0"))
        except ValueError:
            saved = 0
        self._position = min(max(saved, 0), len(self) - 1)

    # ---- state --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def refresh(self) -> None:
        """Re-read every status from the dataset (another window or the CLI may have saved meanwhile).

        One query for the latest status per image, without reading the reviews themselves: a queue of
        10,000 reviewed images refreshes in milliseconds instead of parsing every review's findings.
        """
        self._status = {
            image_id: _status_text(status) for image_id, status in _latest_statuses(self.dataset, self.task)
        }

    def status(self, index: int) -> str:
        return self._status.get(self.entries[index].image_id, UNREVIEWED)

    def statuses(self) -> list[str]:
        return [self.status(i) for i in range(len(self))]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((UNREVIEWED, REVIEWED, SKIPPED), 0)
        for s in self.statuses():
            counts[s] += 1
        return counts

    def progress_text(self) -> str:
        """'37 / 120 reviewed', with the skipped count when there are any."""
        counts = self.counts()
        text = f"{counts[REVIEWED]} / {len(self)} reviewed"
        return text + (f", {counts[SKIPPED]} skipped" if counts[SKIPPED] else "")

    @property
    def position(self) -> int:
        return self._position

    @property
    def current(self) -> QueueEntry:
        return self.entries[self._position]

    def go(self, index: int) -> int:
        """Make `index` the current image (clamped) and remember it in the dataset."""
        index = min(max(int(index), 0), len(self) - 1)
        if index != self._position:
            self._position = index
            self.dataset.set_meta(f"{_PREFIX}{self.key}:position", str(index))
        return index

    def next(self) -> int:
        return self.go(self._position + 1)

    def previous(self) -> int:
        return self.go(self._position - 1)

    def next_unreviewed(self, *, include_current: bool = False) -> int | None:
        """Index of the next unreviewed image after the current one (wrapping around), or None."""
        n = len(self)
        start = 0 if include_current else 1
        for step in range(start, n + start):
            i = (self._position + step) % n
            if self.status(i) == UNREVIEWED:
                return i
        return None

    # ---- reviews ------------------------------------------------------------------------------------
    def latest_review(self, index: int) -> ReviewRecord | None:
        return self.dataset.latest_review(self.entries[index].image_id, self.task)

    def session(
        self, index: int, labels: Sequence[str] = (), advice_labels: Sequence[str] = ()
    ) -> ReviewSession:
        """The review of image `index` as last saved (or its stored prediction, or empty)."""
        entry = self.entries[index]
        image = self.dataset.image(entry.image_id)
        size = (image.height, image.width)
        review = self.latest_review(index)
        if review is None:
            return ReviewSession(
                self.task,
                labels=labels,
                image_size=size,
                image_id=entry.image_id,
                advice_labels=advice_labels,
            )
        return ReviewSession.from_review(review, labels=labels, image_size=size, advice_labels=advice_labels)

    def save(
        self,
        index: int,
        session: ReviewSession,
        *,
        reviewer: str | None = None,
        status: str = REVIEWED,
        vocabulary_version: str | None = None,
    ) -> ReviewRecord:
        """Append the review of image `index` to the dataset (history keeps earlier ones)."""
        entry = self.entries[index]
        if session.task != self.task:
            raise QueueError(f"this review is for task {session.task!r}, the queue is {self.task!r}")
        kwargs = session.save_kwargs(reviewer)
        previous = self.latest_review(index)
        if kwargs["prediction"] is None and previous is not None and not previous.request.context.is_empty():
            # reviewed without a model answer: keep the request an import stored (a paper's caption and text)
            kwargs.update(context=previous.request.context, request=previous.request)
        try:
            record = self.dataset.save_review(
                entry.image_id,
                self.task,
                status=status,
                vocabulary_version=vocabulary_version,
                **kwargs,
            )
        except DatasetError as exc:
            raise QueueError(f"could not save the review of {entry.name}: {exc}") from None
        session.mark_saved()
        self._status[entry.image_id] = _status(record)
        return record

    def skip(self, index: int, session: ReviewSession, *, reviewer: str | None = None) -> ReviewRecord:
        """Mark image `index` skipped (e.g. out of focus); its prediction stays for a later look."""
        return self.save(index, session, reviewer=reviewer, status=SKIPPED)
