"""What a review queue holds, in which order, read a page at a time.

Two kinds: `DatasetOrder`, every image of a task in the order it was added (read from the dataset's
index one page at a time, so a queue of 100,000 images opens in milliseconds and holds one page), and
`IdsOrder`, an explicit sequence of images: a folder, a stack, a results file, images sent from Analyze,
or a ranking computed elsewhere (e.g. which unreviewed images would teach the model most). Both answer
the same questions, so `ReviewQueue` does not care which it has.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, overload

from napari_fracto.dataset.model import Status
from napari_fracto.dataset.pages import TaskCounts
from napari_fracto.review.sources import QueueEntry

if TYPE_CHECKING:
    from napari_fracto.dataset import Dataset
    from napari_fracto.dataset.pages import ItemStatus

UNREVIEWED, REVIEWED, SKIPPED = "unreviewed", "reviewed", "skipped"
PAGE_SIZE = 100
_KEEP_PAGES = 8  # pages a DatasetOrder keeps in memory (the ones around the reviewer)
_TODO = (Status.UNREVIEWED, Status.UNLABELLED)


def status_text(status: Status | str | None) -> str:
    """The queue's three states: an unreviewed prediction and no prediction at all are both to do."""
    if status == Status.REVIEWED.value:
        return REVIEWED
    if status == Status.SKIPPED.value:
        return SKIPPED
    return UNREVIEWED


class Order(Protocol):
    """The images of a queue, in order (index 0 .. len-1)."""

    task: str

    def __len__(self) -> int: ...
    def page(self, start: int, limit: int) -> list[tuple[QueueEntry, str]]: ...
    def counts(self) -> dict[str, int]: ...
    def next_todo(self, index: int) -> int | None: ...
    def saved(self, index: int, image_id: str, status: str) -> None: ...
    def refresh(self) -> None: ...
    def to_saved(self) -> dict[str, Any]: ...
    def pairs(self) -> Iterator[tuple[str, str]]: ...


class DatasetOrder:
    """Every image of `task` in the dataset, in the order added; pages read from the dataset's index."""

    def __init__(self, dataset: Dataset, task: str) -> None:
        self.dataset, self.task = dataset, task
        self._pages: OrderedDict[int, list[tuple[QueueEntry, str]]] = OrderedDict()
        self._orders: dict[int, list[int]] = {}
        self.refresh()

    def refresh(self) -> None:
        """Forget the pages read and the length (another window or the CLI may have saved meanwhile)."""
        self._pages.clear()
        self._orders.clear()
        self._len = self.dataset.item_count(self.task)

    def __len__(self) -> int:
        return self._len

    def _load(self, number: int) -> list[tuple[QueueEntry, str]]:
        if number in self._pages:
            self._pages.move_to_end(number)
            return self._pages[number]
        items = self.dataset.item_page(self.task, offset=number * PAGE_SIZE, limit=PAGE_SIZE)
        rows = [(QueueEntry(i.image_id, i.name), status_text(i.status)) for i in items]
        self._pages[number] = rows
        self._orders[number] = [i.order for i in items]
        while len(self._pages) > _KEEP_PAGES:
            old, _ = self._pages.popitem(last=False)
            self._orders.pop(old, None)
        return rows

    def page(self, start: int, limit: int) -> list[tuple[QueueEntry, str]]:
        out: list[tuple[QueueEntry, str]] = []
        index = max(start, 0)
        end = min(start + limit, len(self))
        while index < end:
            rows = self._load(index // PAGE_SIZE)
            offset = index % PAGE_SIZE
            if offset >= len(rows):
                break  # the dataset changed under us; refresh() reads it again
            take = rows[offset : offset + (end - index)]
            out.extend(take)
            index += len(take)
        return out

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((UNREVIEWED, REVIEWED, SKIPPED), 0)
        for status, n in self.dataset.counts().tasks.get(self.task, TaskCounts()).statuses.items():
            counts[status_text(status)] += n
        return counts

    def next_todo(self, index: int) -> int | None:
        """The first image still to do after `index` (wrapping around), found in the index, not by paging."""
        self.page(index, 1)
        orders = self._orders.get(index // PAGE_SIZE, [])
        after = orders[index % PAGE_SIZE] if index % PAGE_SIZE < len(orders) else None
        found = self.dataset.item_page(self.task, after=after, limit=1, status=_TODO)
        if not found:  # wrap around to the start
            found = self.dataset.item_page(self.task, limit=1, status=_TODO)
        if not found:
            return None
        return self.dataset.item_position(self.task, found[0].order)

    def saved(self, index: int, image_id: str, status: str) -> None:
        rows = self._pages.get(index // PAGE_SIZE)
        offset = index % PAGE_SIZE
        if rows is not None and offset < len(rows) and rows[offset][0].image_id == image_id:
            rows[offset] = (rows[offset][0], status)

    def to_saved(self) -> dict[str, Any]:
        return {"order": "dataset"}

    def pairs(self) -> Iterator[tuple[str, str]]:
        """(id, name) of every image, read page by page through a connection of its own (a worker may
        iterate while the queue is in use, or after its dataset was closed)."""
        from napari_fracto.dataset import Dataset

        with Dataset.open(self.dataset.root) as ds:
            for item in ds.iter_item_statuses(self.task):
                yield item.image_id, item.name


class IdsOrder:
    """An explicit sequence of images (ids not in the dataset are left out); statuses read in chunks."""

    def __init__(self, dataset: Dataset, task: str, entries: Sequence[QueueEntry]) -> None:
        self.dataset, self.task = dataset, task
        self._given = list(entries)
        self.refresh()

    def refresh(self) -> None:
        """Read the status of every image of the sequence again (about 1 ms per 1,000 images)."""
        items: list[ItemStatus] = self.dataset.item_statuses(self.task, [e.image_id for e in self._given])
        known = {i.image_id: i for i in items}
        self.entries = [  # an entry without a name is named by its original file name
            e if e.name else QueueEntry(e.image_id, known[e.image_id].name)
            for e in self._given
            if e.image_id in known
        ]
        self._status = {i: status_text(item.status) for i, item in known.items()}

    def __len__(self) -> int:
        return len(self.entries)

    def page(self, start: int, limit: int) -> list[tuple[QueueEntry, str]]:
        return [(e, self._status.get(e.image_id, UNREVIEWED)) for e in self.entries[start : start + limit]]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((UNREVIEWED, REVIEWED, SKIPPED), 0)
        for e in self.entries:
            counts[self._status.get(e.image_id, UNREVIEWED)] += 1
        return counts

    def next_todo(self, index: int) -> int | None:
        n = len(self.entries)
        for step in range(1, n + 1):
            i = (index + step) % n
            if self._status.get(self.entries[i].image_id, UNREVIEWED) == UNREVIEWED:
                return i
        return None

    def saved(self, index: int, image_id: str, status: str) -> None:
        self._status[image_id] = status

    def to_saved(self) -> dict[str, Any]:
        return {"entries": [[e.image_id, e.name] for e in self.entries]}

    def pairs(self) -> Iterator[tuple[str, str]]:
        return iter([(e.image_id, e.name) for e in self.entries])


class QueueEntries(Sequence[QueueEntry]):
    """A queue's entries as a sequence read page by page (iterating a 100,000-image queue holds a page)."""

    def __init__(self, order: Order) -> None:
        self._order = order

    def __len__(self) -> int:
        return len(self._order)

    @overload
    def __getitem__(self, index: int) -> QueueEntry: ...
    @overload
    def __getitem__(self, index: slice) -> list[QueueEntry]: ...
    def __getitem__(self, index: int | slice) -> QueueEntry | list[QueueEntry]:
        n = len(self)
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return [e for e, _ in self._order.page(start, max(stop - start, 0))]
        if index < 0:
            index += n
        rows = self._order.page(index, 1) if 0 <= index < n else []
        if not rows:
            raise IndexError(index)
        return rows[0][0]

    def __iter__(self) -> Iterator[QueueEntry]:
        for start in range(0, len(self), PAGE_SIZE):
            yield from (e for e, _ in self._order.page(start, PAGE_SIZE))
