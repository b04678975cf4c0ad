"""Folders of images through one backend, several requests in flight, results written as they come.

Ptychography products are read whole (object, probe, scan positions) so display options and evidence
see the scan; other files are read as the napari viewer reads them.

Each finished image is appended to the JSONL file at once (and flushed), so an interrupted batch keeps
everything it finished; a file that cannot be read or analysed is reported and skipped.
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_fracto.findings import AnalysisContext, AnalysisResult
from napari_fracto.io.images import IMAGE_SUFFIXES
from napari_fracto.io.images import ImagePlane as AnalysisInput

if TYPE_CHECKING:
    import numpy as np

    from napari_fracto.backends.base import Backend

CSV_COLUMNS = ["source", "label", "confidence", "x1", "y1", "x2", "y2", "backend", "model", "adapter"]


@dataclass
class BatchSummary:
    analysed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    results: list[AnalysisResult] = field(default_factory=list)


def iter_image_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files given directly, and image files found (recursively, sorted) in folders given."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            yield path


def load_analysis_images(path: Path, part: str = "phase") -> list[tuple[str, np.ndarray]]:
    """The 2-D images (or RGB) in a file as the viewer reads them (see `io.images.reader_planes`)."""
    from napari_fracto.io.images import reader_planes

    return reader_planes(path, part)


def analysis_inputs(path: Path, part: str = "phase") -> list[AnalysisInput]:
    """The images of a file with what the analysis needs besides pixels (see `io.images.file_planes`).

    Review reads files through the same function, so a result's `source` names a plane Review finds.
    """
    from napari_fracto.io.images import file_planes

    return file_planes(path, part)


def run_batch(
    paths: Iterable[str | Path],
    *,
    backend: Backend,
    task: str,
    out_jsonl: Path | None = None,
    out_csv: Path | None = None,
    concurrency: int = 1,
    context: AnalysisContext | None = None,
    part: str = "phase",
    on_progress: Callable[[int, int], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    cancel: threading.Event | None = None,
    **analyze_options: Any,
) -> BatchSummary:
    """Analyse every image under `paths`; `concurrency` requests in flight (server backends batch them)."""
    from napari_fracto.analysis import analyze_array
    from napari_fracto.sem_context import sem_options

    files = list(iter_image_files(paths))
    summary = BatchSummary()
    lock = threading.Lock()
    jsonl = open(out_jsonl, "a", encoding="utf-8") if out_jsonl else None  # noqa: SIM115

    def fail(source: str, message: str) -> None:
        with lock:
            summary.failures.append((source, message))
        if on_failure:
            on_failure(source, message)

    def work(path: Path) -> list[AnalysisResult]:
        results = []
        for item in analysis_inputs(path, part):
            if cancel is not None and cancel.is_set():
                break
            options = dict(analyze_options)
            if item.geometry is not None:
                options["geometry"] = item.geometry
            if item.complex_part is not None:
                options["complex_part"] = item.complex_part
            try:
                results.append(
                    analyze_array(
                        item.array,
                        task=task,
                        backend=backend,
                        source=item.source,
                        **sem_options(item.source, item.array, context, display=options.get("display")),
                        cancel=cancel,
                        **options,
                    )
                )
            except (ValueError, RuntimeError) as exc:  # one bad plane does not sink its file
                fail(item.source, str(exc))
        return results

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            pending: dict[Future, Path] = {}
            queue = iter(files)
            done_count = 0

            def refill() -> None:
                while len(pending) < max(1, concurrency) * 2:
                    path = next(queue, None)
                    if path is None or (cancel is not None and cancel.is_set()):
                        return
                    pending[pool.submit(work, path)] = path

            refill()
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    path = pending.pop(future)
                    try:
                        results = future.result()
                    except Exception as exc:  # a bad file is reported and skipped, never the end of the batch
                        fail(str(path), str(exc) or type(exc).__name__)
                        results = []
                    for result in results:
                        summary.results.append(result)
                        summary.analysed += 1
                        if jsonl:
                            jsonl.write(json.dumps(result.to_record()) + "\n")
                            jsonl.flush()
                    done_count += 1
                    if on_progress:
                        on_progress(done_count, len(files))
                refill()
    finally:
        if jsonl:
            jsonl.close()
    if out_csv:
        write_csv(summary.results, out_csv)
    return summary


def write_csv(results: Iterable[AnalysisResult], path: Path) -> None:
    """One row per finding (box columns empty for image-level labels); images with no finding get one row."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for r in results:
            meta = [r.backend, r.model, r.adapter or ""]
            if not r.findings:
                writer.writerow([r.source, "", "", "", "", "", "", *meta])
            for f in r.findings:
                box = f.box.as_list() if f.box else ["", "", "", ""]
                conf = "" if f.confidence is None else f"{f.confidence:.3f}"
                writer.writerow([r.source, f.label, conf, *box, *meta])
