"""A review queue: an ordered list of dataset images with a status each (unreviewed, reviewed, skipped),
"37 / 120 reviewed", and navigation (next, previous, next unreviewed), read a page at a time.

Statuses are the dataset's latest reviews, so two windows or the CLI writing to the same dataset agree.
The queue itself (which images, in which order, where the reviewer was) is kept in the dataset's `meta`
table, so closing napari and opening the dataset again continues where the reviewer left off. A queue
of the whole dataset (`from_dataset`) keeps only its order's name there and reads its pages from the
dataset's index (`review.order`), so 100,000 images open as fast as 100.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from napari_fracto.dataset.model import DatasetError, ReviewRecord, Status
from napari_fracto.review.order import (
    PAGE_SIZE,
    REVIEWED,
    SKIPPED,
    UNREVIEWED,
    DatasetOrder,
    IdsOrder,
    Order,
    QueueEntries,
)
from napari_fracto.review.session import ReviewSession
from napari_fracto.review.sources import QueueEntry, QueueError, collect

if TYPE_CHECKING:
    from napari_fracto.dataset import Dataset

__all__ = ["PAGE_SIZE", "QueueEntry", "QueueError", "ReviewQueue"]

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


class ReviewQueue:
    """Images of one task to review, in order; open with `open`, `from_dataset`, `from_order` or `resume`.

    `entries` may be a sequence of `QueueEntry` (an explicit order) or an `Order` (`review.order`).
    """

    def __init__(
        self,
        dataset: Dataset,
        task: str,
        entries: Sequence[QueueEntry] | Order,
        *,
        key: str,
        source: str = "",
        problems: Sequence[str] = (),
    ) -> None:
        order = entries if hasattr(entries, "next_todo") else IdsOrder(dataset, task, entries)
        if not len(order):
            raise QueueError("nothing to review: the queue has no images")
        self.dataset = dataset
        self.task = task
        self.order: Order = order
        self.key = key
        self.source = source
        self.problems = list(problems)
        self._position = 0

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
        """Every image of `task` in the dataset (e.g. after `napari-fracto dataset autolabel`), paged."""
        order = DatasetOrder(dataset, task)
        if not len(order):
            raise QueueError(
                f"the dataset has no {task!r} images; add some with 'Open folder…' or "
                "`napari-fracto dataset import`"
            )
        queue = cls(dataset, task, order, key=f"dataset:{task}")
        queue._restore_position()
        queue._persist()
        return queue

    @classmethod
    def from_order(
        cls,
        dataset: Dataset,
        task: str,
        image_ids: Sequence[str],
        *,
        key: str,
        source: str = "",
        restore: bool = True,
    ) -> ReviewQueue:
        """The dataset images `image_ids` in that order (e.g. a ranking of what to review first), each
        named by its original file name; ids not in the dataset are left out. Remembered under `key`;
        `restore` False starts at the first image (a new set or a new ranking, not the one left)."""
        entries = [QueueEntry(str(i), "") for i in image_ids]  # named from the dataset
        queue = cls(dataset, task, entries, key=key, source=source)
        if restore:
            queue._restore_position()
        queue._persist()
        return queue

    @classmethod
    def resume(cls, dataset: Dataset) -> ReviewQueue | None:
        """The queue last used with this dataset, or None when there is none (or it cannot be read)."""
        key = dataset.get_meta(_LAST)
        text = dataset.get_meta(_PREFIX + key) if key else None
        if not text:
            return None
        try:
            saved = json.loads(text)
            task = str(saved["task"])
            if saved.get("order") == "dataset":
                order: Sequence[QueueEntry] | Order = DatasetOrder(dataset, task)
            else:
                order = [QueueEntry(str(i), str(n)) for i, n in saved["entries"]]
            queue = cls(dataset, task, order, key=key, source=saved.get("source", ""))
        except (ValueError, KeyError, TypeError, QueueError):
            return None
        queue._restore_position()
        return queue

    def _persist(self) -> None:
        saved = {"task": self.task, "source": self.source, **self.order.to_saved()}
        self.dataset.set_meta(_PREFIX + self.key, json.dumps(saved, ensure_ascii=False))
        self.dataset.set_meta(_LAST, self.key)

    def _restore_position(self) -> None:
        try:
            saved = int(self.dataset.get_meta(f"{_PREFIX}{self.key}:position") or "0")
        except ValueError:
            saved = 0
        self._position = min(max(saved, 0), len(self) - 1)

    # ---- state --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.order)

    @property
    def entries(self) -> QueueEntries:
        """Every entry, as a sequence read a page at a time."""
        return QueueEntries(self.order)

    def pairs(self) -> Iterator[tuple[str, str]]:
        """(image id, name) of every entry in order, read lazily; safe to iterate in a worker thread."""
        return self.order.pairs()

    def refresh(self) -> None:
        """Re-read statuses from the dataset (another window or the CLI may have saved meanwhile).

        A whole-dataset queue forgets its pages (the next read is one index query); an explicit order
        reads its images' statuses in chunks, never their reviews.
        """
        self.order.refresh()
        self._position = min(self._position, max(len(self) - 1, 0))

    def entry(self, index: int) -> QueueEntry:
        return self.entries[index]

    def status(self, index: int) -> str:
        rows = self.order.page(index, 1)
        return rows[0][1] if rows else UNREVIEWED

    def page(self, number: int) -> list[tuple[int, QueueEntry, str]]:
        """Page `number` (0-based, `PAGE_SIZE` entries): (index, entry, status) for each."""
        start = max(int(number), 0) * PAGE_SIZE
        return [(start + i, e, s) for i, (e, s) in enumerate(self.order.page(start, PAGE_SIZE))]

    @property
    def page_count(self) -> int:
        return max(1, -(-len(self) // PAGE_SIZE))

    def statuses(self) -> list[str]:
        """Every entry's status (reads every page: for small queues and tests)."""
        return [s for start in range(0, len(self), PAGE_SIZE) for _, s in self.order.page(start, PAGE_SIZE)]

    def counts(self) -> dict[str, int]:
        return self.order.counts()

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
        return self.entry(self._position)

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
        if include_current and self.status(self._position) == UNREVIEWED:
            return self._position
        return self.order.next_todo(self._position)

    # ---- reviews ------------------------------------------------------------------------------------
    def latest_review(self, index: int) -> ReviewRecord | None:
        return self.dataset.latest_review(self.entry(index).image_id, self.task)

    def session(
        self, index: int, labels: Sequence[str] = (), advice_labels: Sequence[str] = ()
    ) -> ReviewSession:
        """The review of image `index` as last saved (or its stored prediction, or empty)."""
        entry = self.entry(index)
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
        entry = self.entry(index)
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
        self.order.saved(index, entry.image_id, _status(record))
        return record

    def skip(self, index: int, session: ReviewSession, *, reviewer: str | None = None) -> ReviewRecord:
        """Mark image `index` skipped (e.g. out of focus); its prediction stays for a later look."""
        return self.save(index, session, reviewer=reviewer, status=SKIPPED)
