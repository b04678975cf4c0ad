"""Folders of images through one backend, several requests in flight, results written as they come.

Ptychography products are read whole (object, probe, scan positions) so display options and evidence
see the scan; other files are read as the napari viewer reads them.

Each finished image is appended to the JSONL file at once (and flushed), so an interrupted batch keeps
everything it finished, and `resume` skips it next time (`results_log`); a file that cannot be read or
analysed is reported and skipped. Results stream out; none need stay in memory.
"""

from __future__ import annotations

import csv
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
    skipped: int = 0  # planes the results file already held (resume)
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
    resume: bool = False,
    keep_results: bool = True,
    on_result: Callable[[AnalysisResult], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
    **analyze_options: Any,
) -> BatchSummary:
    """Analyse every image under `paths`; `concurrency` requests in flight (server backends batch them).

    Results stream out as they finish (JSONL line, CSV rows, `on_result`); `keep_results=False` keeps
    none in memory, so memory stays flat over any number of files. `resume` skips the planes `out_jsonl`
    already holds asked the same way (`results_log`); `on_progress(done, total)` counts the files left.
    """
    from napari_fracto.analysis import analyze_array
    from napari_fracto.results_log import ResultsLog
    from napari_fracto.sem_context import sem_options

    if resume and out_jsonl is None:
        raise ValueError("resuming needs the results file: give --out results.jsonl")
    summary = BatchSummary()
    lock = threading.Lock()
    results_log = ResultsLog(out_jsonl, resume=resume, on_notice=on_notice) if out_jsonl else None
    asked = _AskedBefore(task, backend, context, analyze_options, results_log)
    files = [p for p in iter_image_files(paths) if not asked.whole_file(p, part)]
    summary.skipped = asked.skipped
    csv_out = _CsvRows(out_csv) if out_csv else None

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
            if asked.plane(item.source, options):
                continue
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
                        summary.analysed += 1
                        if keep_results:
                            summary.results.append(result)
                        if results_log is not None:
                            results_log.append(result)
                        if csv_out is not None:
                            csv_out.write(result)
                        if on_result is not None:
                            on_result(result)
                    done_count += 1
                    if on_progress:
                        on_progress(done_count, len(files))
                refill()
    finally:
        if results_log is not None:
            results_log.close()
        if csv_out is not None:
            csv_out.close()
    summary.skipped = asked.skipped
    return summary


class _AskedBefore:
    """Which planes the results file already holds, asked as this batch asks (for `resume`)."""

    _REQUEST_OPTIONS = (
        "display",
        "tiles",
        "max_image_tokens",
        "max_new_tokens",
        "recon_settings",
        "advice",
        "phase_scale",
    )

    def __init__(self, task: str, backend: Backend, context: Any, options: dict, log: Any) -> None:
        self.log = log
        self.skipped = 0
        self._lock = threading.Lock()
        self._fingerprints: dict[str, str] = {}
        if log is None or not log.done:
            self.log = None
            return
        from napari_fracto.analysis import backend_ref
        from napari_fracto.vocabulary import load_vocabulary

        self.vocab = load_vocabulary(task)
        self.backend = backend_ref(backend)
        self.context = context
        self.options = {k: options[k] for k in self._REQUEST_OPTIONS if k in options}
        examples = options.get("examples", ())
        self.shots = getattr(examples, "shots", None)
        if self.shots is None:
            self.shots = 0 if callable(examples) else len(examples)
        self._default_part = str(options.get("complex_part", "phase"))

    def _fingerprint(self, complex_part: str) -> str:
        """The same for every source (the source is the key's other half): computed once per part."""
        from napari_fracto.analysis import analysis_request
        from napari_fracto.results_log import ask_fingerprint

        if complex_part not in self._fingerprints:
            request = analysis_request(
                self.vocab, complex_part=complex_part, context=self.context, **self.options
            ).with_changes(backend=self.backend)
            self._fingerprints[complex_part] = ask_fingerprint(request, self.shots)
        return self._fingerprints[complex_part]

    def _held(self, source: str, complex_part: str) -> bool:
        if self.log is None or not self.log.has(source, self._fingerprint(complex_part)):
            return False
        with self._lock:
            self.skipped += 1
        return True

    def whole_file(self, path: Path, part: str) -> bool:
        """A one-plane file (named by its path) already done: skipped without reading it."""
        if self.log is None:
            return False
        return any(self._held(str(path), p) for p in dict.fromkeys([self._default_part, part]))

    def plane(self, source: str, options: dict) -> bool:
        """A plane of a file already done (checked once the file is read)."""
        if self.log is None:
            return False
        return self._held(source, str(options.get("complex_part", self._default_part)))


class _CsvRows:
    """The CSV written row by row as results come (nothing kept in memory)."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.writer(self._fh)
        self._writer.writerow(CSV_COLUMNS)

    def write(self, result: AnalysisResult) -> None:
        self._writer.writerows(csv_rows(result))

    def close(self) -> None:
        self._fh.close()


def csv_rows(result: AnalysisResult) -> list[list[Any]]:
    """One row per finding (box columns empty for image-level labels); an image with none gets one row."""
    meta = [result.backend, result.model, result.adapter or ""]
    if not result.findings:
        return [[result.source, "", "", "", "", "", "", *meta]]
    rows = []
    for f in result.findings:
        box = f.box.as_list() if f.box else ["", "", "", ""]
        conf = "" if f.confidence is None else f"{f.confidence:.3f}"
        rows.append([result.source, f.label, conf, *box, *meta])
    return rows


def write_csv(results: Iterable[AnalysisResult], path: Path) -> None:
    """One row per finding (box columns empty for image-level labels); images with no finding get one row."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for result in results:
            writer.writerows(csv_rows(result))
