"""Memory and time of a streaming batch as the folder grows, and of resuming it.

`napari-fracto analyze FOLDER --out results.jsonl` over thousands of files must keep memory flat (results
stream to the file, none are kept) and `--resume` must skip what is done without reading those files.
This runs `run_batch` (the CLI's path, `keep_results=False` as the CLI does) with a backend that answers
at once and keeps nothing, so the figures are the client's own: reading, normalising, prompt, parsing,
writing.

    .venv/bin/python benchmarks/bench_batch_stream.py --files 1000 10000

For each size it prints the seconds and the growth of peak memory (tracemalloc, Python allocations) of
the batch, then of a `--resume` run over the finished file (everything skipped).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

from napari_fracto.backends.base import VLMReply, VLMRequest
from napari_fracto.batch import run_batch

ANSWER = '{"labels": [{"label": "equiaxed dimples", "confidence": 0.8, "bbox_2d": [10, 10, 400, 300]}]}'


class _Instant:
    """Answers at once and keeps nothing (the scripted test backend records every request)."""

    name, model, adapter = "instant", "instant", None

    def generate(self, request: VLMRequest) -> VLMReply:
        return VLMReply(text=ANSWER)

    def close(self) -> None:
        pass


def _folder(root: Path, n: int, side: int) -> Path:
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 255, (side, side), dtype=np.uint8)
    for i in range(n):
        Image.fromarray(np.roll(tile, i, axis=1)).save(root / f"im{i:05d}.png", compress_level=1)
    return root


def _measure(folder: Path, out: Path, resume: bool, concurrency: int) -> tuple[float, float, int]:
    tracemalloc.start()
    start = time.perf_counter()
    summary = run_batch(
        [folder],
        backend=_Instant(),
        task="fracture",
        out_jsonl=out,
        resume=resume,
        keep_results=False,
        concurrency=concurrency,
    )
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if summary.failures:
        raise SystemExit(f"failures: {summary.failures[:3]}")
    return seconds, peak / 2**20, summary.skipped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    print(f"{'files':>7} {'run':<7} {'seconds':>8} {'ms/file':>8} {'peak MiB':>9} {'skipped':>8}")
    for n in args.files:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "in").mkdir()
            folder = _folder(Path(tmp) / "in", n, args.size)
            out = Path(tmp) / "results.jsonl"
            for label, resume in (("batch", False), ("resume", True)):
                seconds, peak, skipped = _measure(folder, out, resume, args.concurrency)
                per_file = seconds / n * 1000
                print(f"{n:>7} {label:<7} {seconds:>8.2f} {per_file:>8.2f} {peak:>9.1f} {skipped:>8}")


if __name__ == "__main__":
    main()
