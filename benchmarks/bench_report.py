"""Time and peak memory of `napari-fracto report` over a batch of SEM-sized images.

A batch report reads each image once (thumbnail and picture together), never holds the batch's pixels
(entries read their plane when drawn), and writes HTML pages of `--per-page` images. This makes N grey
1280 x 960 PNGs (smoothed noise) with a scripted answer each (the real pipeline, `analyze_array`), then
times the HTML pages alone and with each PDF engine, with the peak resident memory of each run (a fresh
process each).

    .venv/bin/python benchmarks/bench_report.py --images 200 --per-page 50
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ANSWER = json.dumps(
    {
        "labels": [
            {"label": "equiaxed dimples", "confidence": 0.8, "bbox_2d": [100, 100, 500, 400]},
            {"label": "cleavage facets", "confidence": 0.6, "bbox_2d": [550, 500, 900, 950]},
        ]
    }
)

CHILD = """
import resource, sys, time
from napari_fracto.report import make_report
start = time.perf_counter()
made = make_report(sys.argv[1], sys.argv[2], pdf=sys.argv[3] or None, per_page=int(sys.argv[4]),
                   pdf_engine=sys.argv[5])
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, len(made.pages))
"""


def _batch(folder: Path, n: int) -> Path:
    from scipy.ndimage import gaussian_filter

    from napari_fracto.analysis import analyze_array
    from napari_fracto.testing.scripted import ScriptedBackend

    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):  # smoothed noise: compresses like a micrograph, not like pure noise
        smooth = gaussian_filter(rng.random((960, 1280), dtype=np.float32), 2)
        array = ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)
        path = folder / f"sem{i:04d}.png"
        Image.fromarray(array).save(path)
        result = analyze_array(array, task="fracture", backend=ScriptedBackend(ANSWER), source=str(path))
        lines.append(json.dumps(result.to_record()))
    out = folder / "batch.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--per-page", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        jsonl = _batch(folder, args.images)
        print(f"{args.images} images of 1280 x 960, {args.per_page} a page")
        for engine in ("none", "matplotlib", "chromium"):
            pdf = str(folder / f"{engine}.pdf") if engine != "none" else ""
            html = folder / f"{engine}.html"
            start = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(jsonl),
                    str(html),
                    pdf,
                    str(args.per_page),
                    engine if engine != "none" else "auto",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode:
                print(f"{engine}: failed: {done.stderr.strip().splitlines()[-1]}")
                continue
            seconds, peak_mb, pages = done.stdout.split()
            size = sum(p.stat().st_size for p in folder.glob(f"{engine}*.html")) / 2**20
            pdf_mb = Path(pdf).stat().st_size / 2**20 if pdf else 0.0
            print(
                f"PDF {engine:10s}: {float(seconds):6.1f} s, peak RSS {float(peak_mb):6.0f} MB, {pages} HTML "
                f"page(s) {size:.1f} MB, PDF {pdf_mb:.1f} MB (wall {time.perf_counter() - start:.1f} s)"
            )


if __name__ == "__main__":
    main()
