"""Autolabel: run a model over unlabelled images and store its answers as unreviewed predictions.

Per-image context (text from the paper or lab book an image came from) measurably helps the model: give
it as a sidecar `<image stem>.txt` next to the image, or a CSV with a file-name column and either the
`AnalysisContext` fields (material, sample_type, magnification, notes) or one free-text column.
"""

from __future__ import annotations

import csv
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_fracto.dataset.importers import STORABLE
from napari_fracto.dataset.model import DatasetError
from napari_fracto.findings import AnalysisContext

if TYPE_CHECKING:
    from napari_fracto.backends.base import Backend
    from napari_fracto.dataset.core import Dataset

_FIELDS = ("material", "sample_type", "magnification", "notes")


@dataclass
class AutolabelSummary:
    predicted: int = 0
    already_labelled: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def read_context_csv(
    path: str | os.PathLike[str], *, file_column: str = "filename", text_column: str | None = None
) -> dict[str, AnalysisContext]:
    """Context per image from a CSV, keyed by file name (the column may also hold relative paths)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            if file_column not in columns:
                raise DatasetError(
                    f"{path} has no {file_column!r} column (columns: {', '.join(columns)}); "
                    "name the file-name column with --file-column"
                )
            if text_column and text_column not in columns:
                raise DatasetError(f"{path} has no {text_column!r} column (columns: {', '.join(columns)})")
            out: dict[str, AnalysisContext] = {}
            for row in reader:
                values = {f: (row.get(f) or "").strip() for f in _FIELDS if f in columns}
                if text_column:
                    extra = (row.get(text_column) or "").strip()
                    values["notes"] = "\n".join(v for v in (values.get("notes", ""), extra) if v)
                out[Path(row[file_column]).name] = AnalysisContext(**values)
            return out
    except OSError as exc:
        raise DatasetError(f"cannot read context CSV {path}: {exc}") from None


def context_for(
    path: Path, base: AnalysisContext, table: Mapping[str, AnalysisContext] | None = None
) -> AnalysisContext:
    """The base context, completed by the CSV row and the sidecar text file of this image."""
    ctx = base
    row = (table or {}).get(path.name)
    if row is not None:
        ctx = replace(ctx, **{f: getattr(row, f) for f in _FIELDS if getattr(row, f)})
    sidecar = path.with_suffix(".txt")
    from napari_fracto.io.sem_metadata import from_sidecar

    if sidecar.is_file() and from_sidecar(path) is None:  # a JEOL/Hitachi .txt is instrument metadata
        text = sidecar.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            ctx = replace(ctx, notes="\n".join(v for v in (ctx.notes, text) if v))
    return ctx


def autolabel(
    ds: Dataset,
    paths: Iterable[str | os.PathLike[str]],
    *,
    task: str,
    backend: Backend,
    context: AnalysisContext | None = None,
    contexts: Mapping[str, AnalysisContext] | None = None,
    part: str = "phase",
    relabel: bool = False,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    concurrency: int = 1,
    **analyze_options: Any,
) -> AutolabelSummary:
    """Add each image and store the model's answer as an unreviewed prediction.

    Images that already have a review or prediction are left alone unless `relabel`. Single-image files
    the dataset can store (.npy, TIFF, PNG, JPEG, BMP) are kept byte for byte (complex .npy included);
    other files and the planes of stacks are stored as the arrays the reader gives. A file that cannot
    be read or analysed is reported and skipped. `concurrency` model calls run at once (dataset writes
    stay in this thread), so a batching local backend or a server answers several together.
    """
    from napari_fracto.analysis import analyze_array
    from napari_fracto.batch import analysis_inputs, iter_image_files
    from napari_fracto.inflight import in_flight
    from napari_fracto.micrograph_check import check_micrograph
    from napari_fracto.sem_context import sem_options

    base = context or AnalysisContext()
    files = list(iter_image_files(paths))
    summary = AutolabelSummary()

    def planned() -> Any:
        """Per file, in this thread (the dataset's connection): its planes added, those to ask."""
        for done, path in enumerate(files, start=1):
            if cancel is not None and cancel.is_set():
                return
            asks: list[tuple[Any, str]] = []
            problem, ctx = None, base
            try:
                inputs = analysis_inputs(path, part)
                ctx = context_for(path, base, contexts)
                for item in inputs:
                    if analyze_options.get("display") is None:
                        check_micrograph(item.array)  # a label mask is reported, and never stored
                    # the stored image is the array analysed, so prepare(request, stored) shows the same
                    # pixels; a single-image file the dataset can keep is kept byte for byte
                    if len(inputs) == 1 and item.geometry is None and path.suffix.lower() in STORABLE:
                        image_id = ds.add_image(path, task=task)
                    else:
                        image_id = ds.add_image(item.array, task=task, name=item.source)
                    if not relabel and ds.latest_review(image_id) is not None:
                        summary.already_labelled += 1
                        continue
                    asks.append((item, image_id))
            except (ValueError, RuntimeError, OSError) as exc:  # ReaderError, DatasetError, ...
                problem = exc
            yield done, path, asks, ctx, problem

    def ask(job: Any) -> list[tuple[str, Any, Exception | None]]:
        """The model's answers for one file's planes (in a worker thread when `concurrency` > 1)."""
        _, _, asks, ctx, _ = job
        answers: list[tuple[str, Any, Exception | None]] = []
        for item, image_id in asks:  # the planes added before a problem are still asked
            try:
                result = analyze_array(
                    item.array, task=task, backend=backend, source=item.source, cancel=cancel,
                    complex_part=item.complex_part or part, geometry=item.geometry, **analyze_options,
                    **sem_options(item.source, item.array, ctx, display=analyze_options.get("display")),
                )  # fmt: skip
            except (ValueError, RuntimeError, OSError) as exc:  # ImageError, BackendError, ...
                answers.append((image_id, None, exc))
                break  # as before: a file's first failure ends that file
            answers.append((image_id, result, None))
        return answers

    for (done, path, _, _, problem), answers, error in in_flight(ask, planned(), concurrency):
        for image_id, result, failure in answers or []:
            if result is not None:
                ds.save_prediction(image_id, result, notes=f"autolabel of {result.source}")
                summary.predicted += 1
            problem = problem or failure
        problem = problem or error
        if problem is not None:
            summary.failures.append((str(path), str(problem)))
        if progress is not None:
            progress(done, len(files))
    return summary
