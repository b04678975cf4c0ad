"""Benchmark papers -> training set: pages per second read, panels per paper, and the whole import.

    python benchmarks/bench_papers.py [--copies 10] [--dir /tmp/bench-papers]

The test corpus (`napari_fracto.testing.paper_corpus`: a one-column and a two-column PDF with multi-panel
figures made of the shared micrographs, a JATS article, and the bad files) is made `--copies` times with
different micrographs per copy, so reprint detection sees many distinct panels. Reading (pdfium text and
rendering) and the full import (panels, classification, dedup, excerpts, dataset writes) are timed apart.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from napari_fracto.dataset import Dataset
from napari_fracto.papers.collect import candidates, import_papers, paper_files, read_paper
from napari_fracto.papers.model import PaperError
from napari_fracto.testing.paper_corpus import make_corpus

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fractography" / "ceramic-sem"


def _variants(sources: list[Path], copy: int, folder: Path) -> list[Path]:
    """The micrographs turned, flipped and cropped differently for each copy: distinct panels, no reprints."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, source in enumerate(sources):
        with Image.open(source) as img:
            arr = np.rot90(np.asarray(img.convert("L")), k=copy % 4)
        if (copy // 4) % 2:
            arr = arr[:, ::-1]
        shift = 64 * (copy // 8)
        path = folder / f"{i}.png"
        Image.fromarray(np.ascontiguousarray(arr[shift:, shift:])).save(path)
        out.append(path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-papers-"))
    if root.exists():
        shutil.rmtree(root)
    sources = sorted(SHARED.glob("*.jpg"))
    if not sources:
        raise SystemExit(f"no micrographs at {SHARED}")
    t0 = time.perf_counter()
    for copy in range(args.copies):
        make_corpus(
            root / "corpus" / f"copy{copy:03d}", _variants(sources, copy, root / "sources" / str(copy))
        )
    print(f"made {args.copies} corpus copies in {time.perf_counter() - t0:.1f} s")
    files = paper_files([root / "corpus"])
    pages = panels = papers = failed = 0
    t0 = time.perf_counter()
    for path in files:
        try:
            paper = read_paper(path)
        except PaperError:
            failed += 1
            continue
        papers += 1
        pages += paper.pages  # JATS articles have no pages: pages are PDF pages
        panels += len(candidates(paper))
    read_s = time.perf_counter() - t0
    print(
        f"read {len(files)} files ({papers} papers, {failed} refused, {pages} PDF pages) in {read_s:.2f} s: "
        f"{pages / read_s:.1f} pages/s, {panels / papers:.2f} candidate panels per paper"
    )
    with Dataset.create(root / "ds") as ds:
        t0 = time.perf_counter()
        summary = import_papers(ds, [root / "corpus"], task="fracture")
        import_s = time.perf_counter() - t0
    kept, n = summary.kept, len(summary.papers)
    left = sum(sum(p.left_out.values()) for p in summary.papers)
    dup = sum(p.left_out["duplicate"] for p in summary.papers)
    print(
        f"import: {import_s:.2f} s for {len(files)} files ({pages / import_s:.1f} PDF pages/s); {kept} "
        f"panels kept ({kept / n:.2f} per paper), {left} left out ({dup} duplicates), "
        f"{len(summary.failed)} refused"
    )


if __name__ == "__main__":
    main()
