"""Reading a large dataset a page at a time: current statuses and counts from the v4 index (`index.py`).

Nothing here builds review records or parses findings: a page of 100 items of a 100,000-image dataset
is one index range read, and the counts are rows kept up to date by SQLite triggers. `Dataset` inherits
these methods (`ItemPages`); they use its connection and lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from napari_fracto.dataset.model import DatasetError, Status

#: how many ids one `IN (...)` query looks up (well under SQLite's 32,766 variables)
_CHUNK = 500


@dataclass(frozen=True)
class ItemStatus:
    """Where one image of a task stands, without its review: what a queue shows for each entry."""

    image_id: str
    name: str  # the original file name, or the start of the id
    status: Status  # UNLABELLED while the image has no review of the task
    order: int  # the image's place in the dataset (insertion order): a page cursor
    split: str | None = None
    review_id: int | None = None


@dataclass
class TaskCounts:
    """One task's counts as the index keeps them (every image of the task counted once)."""

    statuses: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    # label -> {"reviewed": images, "unreviewed": images}, current reviews only, skipped ones left out
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    boxes: int = 0

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


@dataclass
class DatasetCounts:
    images: int = 0
    reviews: int = 0
    untasked: int = 0  # images with neither a task nor a review
    tasks: dict[str, TaskCounts] = field(default_factory=dict)


def _statuses(status: Status | str | Collection[Status | str] | None) -> list[str]:
    if status is None:
        return []
    values = [status] if isinstance(status, str) else list(status)
    try:
        return [Status(s).value for s in values]
    except ValueError:
        allowed = ", ".join(s.value for s in Status)
        raise DatasetError(f"unknown status in {values!r}; use one of {allowed}") from None


def _item(row: sqlite3.Row) -> ItemStatus:
    return ItemStatus(
        image_id=row["image_id"],
        name=row["original_name"] or row["image_id"][:12],
        status=Status(row["status"]),
        order=int(row["seq"]),
        split=row["split"],
        review_id=row["review_id"],
    )


_PAGE_COLUMNS = "p.image_id, p.status, p.seq, p.review_id, i.original_name, i.split"


class ItemPages:
    """Paged, index-only reads of a dataset (mixed into `Dataset`)."""

    _conn: sqlite3.Connection
    _lock: threading.RLock

    def counts(self) -> DatasetCounts:
        """Images, reviews, and per task statuses, splits, images per label and boxes: one small read."""
        with self._lock:
            rows = self._conn.execute("SELECT task, what, key, n FROM counts WHERE n != 0").fetchall()
        out = DatasetCounts()
        for task, what, key, n in rows:
            if task == "":
                if key in ("images", "reviews", "untasked"):
                    setattr(out, key, int(n))
                continue
            t = out.tasks.setdefault(task, TaskCounts())
            if what == "status":
                t.statuses[key] = int(n)
            elif what == "split":
                t.splits[key] = int(n)
            elif what == "boxes":
                t.boxes = int(n)
            elif what.startswith("label:"):
                t.labels.setdefault(key, {"reviewed": 0, "unreviewed": 0})[what[6:]] = int(n)
        return out

    def item_count(self, task: str, status: Status | str | Collection[Status | str] | None = None) -> int:
        """How many images the task has (with one of `status`, when given), from the counts."""
        wanted = _statuses(status)
        sql = "SELECT COALESCE(SUM(n), 0) FROM counts WHERE task = ? AND what = 'status'"
        args: list[Any] = [task]
        if wanted:
            sql += f" AND key IN ({', '.join('?' * len(wanted))})"
            args.extend(wanted)
        with self._lock:
            return int(self._conn.execute(sql, args).fetchone()[0])

    def item_page(
        self,
        task: str,
        *,
        after: int | None = None,
        offset: int = 0,
        limit: int = 100,
        status: Status | str | Collection[Status | str] | None = None,
    ) -> list[ItemStatus]:
        """Up to `limit` images of `task` in dataset order, from `offset` or after the order key `after`
        (the last `order` of the previous page: the cheapest way to walk every page)."""
        wanted = _statuses(status)
        where, args = ["task = ?"], [task]
        if wanted:
            where.append(f"status IN ({', '.join('?' * len(wanted))})")
            args.extend(wanted)
        if after is not None:
            where.append("seq > ?")
            args.append(int(after))
        sql = (
            f"SELECT {_PAGE_COLUMNS} FROM (SELECT image_id, status, seq, review_id FROM item_status "
            f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT ? OFFSET ?) p "
            "JOIN images i ON i.image_id = p.image_id ORDER BY p.seq"
        )
        with self._lock:
            rows = self._conn.execute(sql, [*args, max(int(limit), 0), max(int(offset), 0)]).fetchall()
        return [_item(r) for r in rows]

    def iter_item_statuses(
        self, task: str, status: Status | str | Collection[Status | str] | None = None, page: int = 1000
    ) -> Iterator[ItemStatus]:
        """Every image of `task` in order, a page at a time (the lock is not held between pages)."""
        after = None
        while True:
            items = self.item_page(task, after=after, limit=page, status=status)
            yield from items
            if len(items) < page:
                return
            after = items[-1].order

    def item_position(
        self, task: str, order: int, status: Status | str | Collection[Status | str] | None = None
    ) -> int:
        """How many images of `task` (with one of `status`) come before the order key `order`."""
        wanted = _statuses(status)
        sql = "SELECT COUNT(*) FROM item_status WHERE task = ? AND seq < ?"
        args: list[Any] = [task, int(order)]
        if wanted:
            sql += f" AND status IN ({', '.join('?' * len(wanted))})"
            args.extend(wanted)
        with self._lock:
            return int(self._conn.execute(sql, args).fetchone()[0])

    def item_statuses(self, task: str, image_ids: Sequence[str]) -> list[ItemStatus]:
        """The given images in the given order (an explicit ordering, e.g. a ranking), each with its
        status for `task` (UNLABELLED when it has no review of it); ids not in the dataset are left out."""
        found: dict[str, ItemStatus] = {}
        for start in range(0, len(image_ids), _CHUNK):
            chunk = list(dict.fromkeys(image_ids[start : start + _CHUNK]))
            marks = ", ".join("?" * len(chunk))
            sql = (
                "SELECT i.image_id, COALESCE(p.status, 'unlabelled') AS status, i.rowid AS seq, "
                "p.review_id, i.original_name, i.split FROM images i LEFT JOIN item_status p "
                f"ON p.image_id = i.image_id AND p.task = ? WHERE i.image_id IN ({marks})"
            )
            with self._lock:
                rows = self._conn.execute(sql, [task, *chunk]).fetchall()
            found.update((r["image_id"], _item(r)) for r in rows)
        return [found[i] for i in image_ids if i in found]

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """One `meta` value (reading `meta` whole also reads every saved queue)."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else str(row[0])


__all__ = ["DatasetCounts", "ItemPages", "ItemStatus", "TaskCounts"]
