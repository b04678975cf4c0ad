"""Peak memory and time to open a 16k x 16k uint16 SEM image and prepare it for the model.

    python benchmarks/bench_large_image.py [--size 16384] [--tokens 1024] [--naive]

Writes an uncompressed TIFF (512 MB at the default size) to a temporary folder, opens it with the
napari reader (memory-mapped), then runs `prepare_model_image`. Reports wall time, the peak of
Python/numpy allocations (tracemalloc) and the process's peak resident memory (Linux VmHWM, which
also counts memory-mapped file pages that were read). `--naive` adds the full-resolution path
(`to_model_rgb` on the whole image, then `fit_to_token_budget`) for comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_fracto.imaging import fit_to_token_budget, prepare_model_image, to_model_rgb
from napari_fracto.io.readers import read_layers

MB = 2**20


def _proc_status(key: str) -> float:
    """VmRSS/VmHWM in MB from /proc (Linux); NaN elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    return float("nan")


def _reset_peak_rss() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def measure(label: str, fn: Callable[[], Any]) -> Any:
    _reset_peak_rss()
    rss_before = _proc_status("VmRSS")
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm = _proc_status("VmHWM")
    print(
        f"{label:<38} {seconds:7.2f} s   numpy/python peak {peak / MB:8.1f} MB   "
        f"process peak RSS {hwm:8.1f} MB (+{hwm - rss_before:.1f} MB)"
    )
    return result


def write_test_tiff(path: Path, size: int) -> None:
    """A 16-bit image with structure at several scales, written band by band (no full copy in RAM)."""
    with tifffile.TiffWriter(path, bigtiff=size * size * 2 > 2**31) as tif:
        cols = np.arange(size, dtype=np.float32)

        def bands():
            for r0 in range(0, size, 1024):
                rows = np.arange(r0, min(r0 + 1024, size), dtype=np.float32)[:, None]
                band = 20000 + 15000 * np.sin(cols / 700) * np.cos(rows / 900) + (cols % 97) * 50
                yield band.astype(np.uint16)

        tif.write(bands(), shape=(size, size), dtype=np.uint16, rowsperstrip=1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="side of the square test image in pixels")
    parser.add_argument("--tokens", type=int, default=1024, help="image token budget of the model")
    parser.add_argument("--naive", action="store_true", help="also time the full-resolution path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "large.tif"
        write_test_tiff(path, args.size)
        print(f"image {args.size} x {args.size} uint16, {path.stat().st_size / MB:.0f} MB on disk")
        [(data, _, _)] = measure("open with the napari reader", lambda: read_layers(str(path)))
        print(f"  reader returned {type(data).__name__} {data.shape} {data.dtype}")
        image = measure(
            f"prepare_model_image ({args.tokens} tokens)", lambda: prepare_model_image(data, args.tokens)
        )
        print(f"  model image {image.size[0]} x {image.size[1]} px")
        if args.naive:
            measure(
                "naive: to_model_rgb + fit_to_token_budget",
                lambda: fit_to_token_budget(to_model_rgb(data), args.tokens),
            )


if __name__ == "__main__":
    main()
