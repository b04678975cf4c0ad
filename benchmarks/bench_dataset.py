"""Benchmark the corrections dataset as it grows: each operation's time and peak memory at N items.

    python benchmarks/bench_dataset.py [--sizes 1000 10000 100000] [--dir /tmp/bench-ds] [--qt]

Each dataset is built fast: one real `add_image` + `save_review` gives a realistic row (prediction,
box, whole request), which is then bulk-inserted N times in one transaction with distinct 8x8 images
(their files written without fsync). The inserts go through the database's own triggers, so the
counts and the item index are built as every writer builds them. What is measured is the real API:
`save_review` (a durable transaction each), `info()`, the CLI's `dataset info` (a new process), the
Review queue (open + first page, last page, next unreviewed, resume, a ranked explicit order), the
page list widget (`--qt`, offscreen), `iter_items` over everything, CSV export, reopening, and the
v3 -> v4 migration of the whole dataset. Time is one run (wall clock); peak memory is a second run
under tracemalloc (Python allocations; SQLite's own page cache, 2 MB by default, is not included).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_fracto.dataset import Dataset, store
from napari_fracto.dataset.export import export_csv
from napari_fracto.dataset.tools import info
from napari_fracto.findings import AnalysisResult, Box, Finding
from napari_fracto.review.queue import ReviewQueue

LABELS = ["cleavage facets", "river patterns", "equiaxed dimples", "fatigue striations", "mist"]
TASK = "fracture"


def _prediction(label: str) -> AnalysisResult:
    return AnalysisResult(
        task=TASK, findings=[Finding(label, 0.7, Box(1, 1, 6, 6))], raw_text='{"labels": []}',
        backend="bench", model="none", adapter=None, prompt_version="1", vocabulary_version="1.0",
        seconds=0.0, image_shape=(8, 8),
    )  # fmt: skip


def _npy(i: int) -> bytes:
    image = np.zeros((8, 8), np.uint32)
    image.flat[:2] = (i, 0xBEEF)
    buf = io.BytesIO()
    np.save(buf, image, allow_pickle=False)
    return buf.getvalue()


def build(root: Path, n: int) -> None:
    """N images with one review each (90 % reviewed or skipped first, the last 10 % unreviewed)."""
    with Dataset.create(root, name="bench") as ds:
        template_id = ds.add_image(np.full((8, 8), 7, np.uint8), task=TASK)
        ds.save_review(
            template_id, TASK, [Finding(LABELS[0], box=Box(2, 2, 7, 7))], prediction=_prediction(LABELS[0]),
            decisions=["edited"], reviewer="bench",
        )  # fmt: skip
        conn = ds._conn
        image = dict(conn.execute("SELECT * FROM images").fetchone())
        review = dict(conn.execute("SELECT * FROM reviews").fetchone())
        review.pop("review_id")
        image_rows, review_rows = [], []
        for i in range(n - 1):
            data = _npy(i)
            digest = hashlib.sha256(data).hexdigest()
            path = ds.blobs.path(digest, ".npy")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            image_rows.append({**image, "image_id": digest, "original_name": f"img{i:06d}.npy"})
            label = LABELS[i % len(LABELS)]
            status = "unreviewed" if i >= 0.9 * n else ("skipped" if i % 10 == 3 else "reviewed")
            corrected = json.dumps([{"label": label, "confidence": None, "box": [2, 2, 7, 7]}])
            request = review["request"].replace(template_id, digest)
            review_rows.append(
                {**review, "image_id": digest, "status": status, "corrected": corrected, "request": request}
            )
        with store.transaction(conn):
            cols = list(image)
            conn.executemany(
                f"INSERT INTO images ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})",
                image_rows,
            )
            cols = list(review)
            conn.executemany(
                f"INSERT INTO reviews ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})",
                review_rows,
            )


def _size(mb: float) -> str:
    return f"{mb:.1f} MB" if mb >= 1 else f"{mb * 1e3:.0f} kB"


def measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(seconds, peak MB of Python allocations, result): timed once, then run again under tracemalloc."""
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return seconds, peak, result


def _saves(ds: Dataset, count: int = 200) -> list[float]:
    ids = [i.image_id for i in ds.item_page(TASK, limit=count)]
    times = []
    for k, image_id in enumerate(ids):
        label = LABELS[k % len(LABELS)]
        t0 = time.perf_counter()
        ds.save_review(
            image_id, TASK, [Finding(label, box=Box(2, 2, 6, 6))], prediction=_prediction(label),
            decisions=["edited"], reviewer="bench",
        )  # fmt: skip
        times.append(time.perf_counter() - t0)
    return times


def _cli_info(root: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "napari_fracto", "dataset", "info", str(root)], check=True, capture_output=True
    )
    return time.perf_counter() - t0


_APP: Any = None


def _page_widget(queue: ReviewQueue) -> Callable[[], Any]:
    from qtpy.QtWidgets import QApplication

    from napari_fracto.widgets.review_pages import QueuePages

    global _APP
    _APP = QApplication.instance() or QApplication(["bench"])
    pages = QueuePages(lambda index: None)
    pages.follow(queue)

    def flip() -> float:
        """The longest Qt-thread time of one page turn, over the next 20 pages."""
        worst = 0.0
        for _ in range(20):
            t0 = time.perf_counter()
            pages.show_page((pages.number + 1) % queue.page_count)
            worst = max(worst, time.perf_counter() - t0)
        return worst

    return flip


def _migrate(root: Path) -> float:
    """Seconds to upgrade the dataset from v3 (its index and counts dropped) to v4."""
    with Dataset.open(root) as ds, store.transaction(ds._conn):
        names = ds._conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'index_%'").fetchall()
        for (name,) in names:
            ds._conn.execute(f"DROP TRIGGER {name}")
        ds._conn.execute("DROP TABLE item_status")
        ds._conn.execute("DROP TABLE counts")
        ds._conn.execute("DELETE FROM schema_version WHERE version = 4")
    for bak in root.glob("dataset.sqlite.v*.bak"):
        bak.unlink()
    t0 = time.perf_counter()
    Dataset.open(root).close()
    return time.perf_counter() - t0


def bench(root: Path, n: int, qt: bool) -> dict[str, str]:
    t0 = time.perf_counter()
    build(root, n)
    print(f"  built {n:,} items in {time.perf_counter() - t0:.1f} s", flush=True)
    out: dict[str, str] = {}

    def row(name: str, seconds: float, peak: float | None = None) -> None:
        shown = f"{seconds * 1e3:,.1f} ms" + (f", {_size(peak)}" if peak is not None else "")
        out[name] = shown
        print(f"  {name}: {shown}", flush=True)

    s, m, _ = measure(lambda: Dataset.open(root).close())
    ds = Dataset.open(root)
    row("Dataset.open", s, m)
    saves = _saves(ds)
    q = statistics.quantiles(saves, n=100)
    out["save_review"] = f"median {statistics.median(saves) * 1e3:.1f} ms, p95 {q[94] * 1e3:.1f} ms"
    print(f"  save_review: {out['save_review']}", flush=True)
    info(ds)  # the first call in a process loads the task's vocabulary (~0.3 s, at any size)
    s, m, _ = measure(lambda: info(ds))
    row("info()", s, m)
    row("`dataset info` (new process, imports included)", min(_cli_info(root) for _ in range(3)))

    def first_page() -> ReviewQueue:
        queue = ReviewQueue.from_dataset(ds, TASK)
        queue.page(queue.position // 100)
        return queue

    s, m, queue = measure(first_page)
    row("Review queue: open the whole dataset + first page", s, m)
    s, m, _ = measure(lambda: queue.page(queue.page_count - 1))
    row("Review queue: the last page (cold)", s, m)
    queue.go(0)
    s, m, found = measure(queue.next_unreviewed)
    assert found == int(0.9 * n) + 1, found  # the template image comes first
    row("Review queue: next unreviewed (90 % of the way in)", s, m)
    s, m, _ = measure(lambda: ReviewQueue.resume(ds))
    row("Review queue: resume after reopening", s, m)
    ranked = [i for i, _ in queue.pairs()][::-1]
    s, m, _ = measure(lambda: ReviewQueue.from_order(ds, TASK, ranked, key="bench-ranked"))
    row("Review queue: a ranked explicit order of every image", s, m)
    if qt:
        flip = _page_widget(queue)
        s, m, worst = measure(flip)
        row("Review page list: worst page turn of 20 (Qt thread)", worst, m)
    s, m, count = measure(lambda: sum(1 for _ in ds.iter_items(task=TASK)))
    assert count == n
    row("iter_items over every item (streamed)", s, m)
    csv_path = root.parent / "export.csv"
    s, m, rows = measure(lambda: export_csv(ds, csv_path, status=None))
    assert rows == n
    row("export CSV, every item (validation included)", s, m)
    ds.close()
    s = _migrate(root)
    row("migration v3 -> v4 (index + counts built)", s)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    out["size on disk"] = f"{size / 1e6:.0f} MB"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--dir", type=Path, help="where to build the datasets (default: a temp folder)")
    parser.add_argument("--qt", action="store_true", help="also time the page list widget (offscreen)")
    args = parser.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="bench-ds-"))
    results = {}
    for n in args.sizes:
        root = base / f"ds{n}"
        if root.exists():
            shutil.rmtree(root)
        print(f"{n:,} items", flush=True)
        results[n] = bench(root, n, args.qt)
        shutil.rmtree(root)
    names = list(results[args.sizes[0]])
    print("\n| operation | " + " | ".join(f"{n:,} items" for n in args.sizes) + " |")
    print("|---|" + "---|" * len(args.sizes))
    for name in names:
        print(f"| {name} | " + " | ".join(results[n].get(name, "—") for n in args.sizes) + " |")
    if args.dir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
