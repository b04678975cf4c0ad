"""Benchmark the corrections dataset: save latency as it grows, and open/query time at N records.

    python benchmarks/bench_dataset.py [--n 10000] [--dir /tmp/bench-ds]

Every record goes through the real path (add_image of a small 64x64 uint16 image, then save_review with a
prediction and a box), so each save is one durable transaction (WAL, synchronous=FULL, fsync).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_fracto.dataset import Dataset
from napari_fracto.dataset.tools import info
from napari_fracto.findings import AnalysisResult, Box, Finding

LABELS = ["cleavage facets", "river patterns", "equiaxed dimples", "fatigue striations", "mist"]


def _ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    median, p95, worst = statistics.median(values) * 1e3, q[94] * 1e3, max(values) * 1e3
    return f"median {median:.2f} ms, p95 {p95:.2f} ms, max {worst:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, help="where to build the dataset (default: a temp folder)")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-ds-")) / "ds"
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(0)
    add_times, save_times = [], []
    with Dataset.create(root, name="bench") as ds:
        for i in range(args.n):
            image = rng.integers(0, 65535, size=(64, 64), dtype=np.uint16)
            t0 = time.perf_counter()
            image_id = ds.add_image(image, task="fracture")
            t1 = time.perf_counter()
            label = LABELS[i % len(LABELS)]
            prediction = AnalysisResult(
                task="fracture", findings=[Finding(label, 0.7, Box(4, 4, 40, 40))], raw_text="{}",
                backend="bench", model="none", adapter=None, prompt_version="1", vocabulary_version="1.0",
                seconds=0.0, image_shape=(64, 64),
            )  # fmt: skip
            ds.save_review(
                image_id,
                "fracture",
                [Finding(label, box=Box(5, 5, 41, 41))],
                prediction=prediction,
                decisions=["edited"],
                reviewer="bench",
            )
            save_times.append(time.perf_counter() - t1)
            add_times.append(t1 - t0)
            if (i + 1) % 2000 == 0:
                recent = save_times[-500:]
                print(f"{i + 1:>6} records: last 500 saves median {statistics.median(recent) * 1e3:.2f} ms")
    print(f"add_image (64x64 uint16, fsynced file): {_ms(add_times)}")
    print(f"save_review (one durable transaction):  {_ms(save_times)}")

    t0 = time.perf_counter()
    ds = Dataset.open(root)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    items = list(ds.iter_items(task="fracture"))
    t_iter = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds.latest_review(items[len(items) // 2].image_id)
    t_latest = time.perf_counter() - t0
    t0 = time.perf_counter()
    info(ds)
    t_info = time.perf_counter() - t0
    ds.close()
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"open at {args.n} records: {t_open * 1e3:.1f} ms")
    print(f"iter_items (all {len(items)} with latest review): {t_iter * 1e3:.0f} ms")
    print(f"latest_review of one image: {t_latest * 1e3:.2f} ms; info(): {t_info * 1e3:.0f} ms")
    print(f"dataset size on disk: {size / 1e6:.1f} MB at {root}")
    if args.dir is None:
        shutil.rmtree(root.parent)


if __name__ == "__main__":
    main()
