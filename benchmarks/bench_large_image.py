"""Peak memory and time to open a 16k x 16k uint16 SEM image and prepare it for the model.

    python benchmarks/bench_large_image.py [--size 16384] [--tokens 1024] [--naive]
    python benchmarks/bench_large_image.py --png [--width 16000 --height 12000] [--rgb] [--jpeg]

Writes an uncompressed TIFF (512 MB at the default size) to a temporary folder, opens it with the
napari reader (memory-mapped), then runs `prepare_model_image`. Reports wall time, the peak of
Python/numpy allocations (tracemalloc) and the process's peak resident memory (Linux VmHWM, which
also counts memory-mapped file pages that were read). `--naive` adds the full-resolution path
(`to_model_rgb` on the whole image, then `fit_to_token_budget`) for comparison.

`--png` (or `--jpeg`) instead writes a 16000 x 12000 PNG (JPEG) with the same structure, beyond Pillow's
decompression-bomb limit, and reads it with the napari reader (`io.pil_images`: the format's plugin, banded
copy to numpy), then finds the data bar, checks it is a micrograph and prepares the model image; the
peak RSS is reported as a multiple of the decoded image (the issue's bound: at most 2x).
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


def _structured(width: int, height: int, channels: int) -> np.ndarray:
    cols = np.arange(width, dtype=np.float32)
    out = np.empty((height, width, channels) if channels > 1 else (height, width), np.uint8)
    for r0 in range(0, height, 1024):
        rows = np.arange(r0, min(r0 + 1024, height), dtype=np.float32)[:, None]
        band = (120 + 80 * np.sin(cols / 700) * np.cos(rows / 900) + (cols % 37)).clip(0, 255)
        out[r0 : r0 + band.shape[0]] = band.astype(np.uint8)[..., None] if channels > 1 else band
    return out


def bench_pil(width: int, height: int, channels: int, tokens: int, suffix: str, pillow: bool = False) -> None:
    """Write the image (in this process), then read and prepare it in a fresh one for a clean peak."""
    import subprocess
    import sys

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"large{suffix}"
        pixels = _structured(width, height, channels)
        Image.fromarray(pixels).save(path, **({"quality": 90} if suffix == ".jpg" else {"compress_level": 1}))
        decoded = pixels.nbytes / MB
        del pixels
        kind = "RGB" if channels > 1 else "grey"
        print(f"image {width} x {height} {kind} uint8 {suffix}: {path.stat().st_size / MB:.0f} MB on disk, "
              f"{decoded:.0f} MB decoded")  # fmt: skip
        code = f"""
import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
if {pillow}: sys.modules["imagecodecs"] = None  # as without the large-images extra: Pillow decodes
from bench_large_image import measure, _proc_status
from napari_fracto.io.readers import read_layers
from napari_fracto.imaging import prepare_model_image
from napari_fracto.sem_context import sem_options
import napari_fracto.io.pil_images, napari_fracto.micrograph_check, napari_fracto.databar, tifffile
from PIL import PngImagePlugin, JpegImagePlugin  # imports are not the image's memory
base = _proc_status("VmRSS")
[(data, _, _)] = measure("open with the napari reader", lambda: read_layers({str(path)!r}))
peaks = [_proc_status("VmHWM")]
opts = measure("data bar + micrograph check", lambda: sem_options({str(path)!r}, data, None))
peaks.append(_proc_status("VmHWM"))
image = measure("prepare_model_image ({tokens} tokens)", lambda: prepare_model_image(data, {tokens}))
peaks.append(_proc_status("VmHWM"))
peak = max(peaks) - base
print(f"whole run: peak RSS above start {{peak:.0f}} MB = {{peak / {decoded}:.2f}} x the decoded image")
"""
        subprocess.run([sys.executable, "-c", code], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="side of the square test image in pixels")
    parser.add_argument("--tokens", type=int, default=1024, help="image token budget of the model")
    parser.add_argument("--naive", action="store_true", help="also time the full-resolution path")
    parser.add_argument("--png", action="store_true", help="a PNG beyond Pillow's limit instead of TIFF")
    parser.add_argument("--jpeg", action="store_true", help="a JPEG beyond Pillow's limit instead of TIFF")
    parser.add_argument("--width", type=int, default=16000)
    parser.add_argument("--height", type=int, default=12000)
    parser.add_argument("--rgb", action="store_true", help="PNG/JPEG: three channels")
    parser.add_argument("--pillow", action="store_true", help="PNG/JPEG: decode with Pillow, not imagecodecs")
    args = parser.parse_args()
    if args.png or args.jpeg:
        suffix = ".jpg" if args.jpeg else ".png"
        bench_pil(args.width, args.height, 3 if args.rgb else 1, args.tokens, suffix, args.pillow)
        return
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
