"""Reports people would rather look at than read: per image, per batch or dataset, per evaluation.

`make_report(INPUT, out_html, pdf=...)` is what `napari-fracto report` and the widgets' "Report…"
buttons call: INPUT is an `analyze` JSONL, a corrections dataset folder, or an `eval` output folder.
Modules: `entries` (loading), `views` (what a reader sees, redacted), `figures` (pictures and charts),
`html` (Jinja2 pages), `pdf` (Chromium or matplotlib), `evaluation` (eval folders), `redact` (paths and
keys). Pure: no Qt, no torch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_fracto.report.entries import ImageEntry, ReportError, entry_from_result
from napari_fracto.report.html import PER_PAGE, Report

__all__ = [
    "PER_PAGE",
    "ImageEntry",
    "Made",
    "Report",
    "ReportError",
    "entry_from_result",
    "make_report",
    "report_of",
    "write_report",
]


@dataclass
class Made:
    """What was written: the HTML pages (first one first), the PDF and the engine that drew it."""

    pages: list[Path] = field(default_factory=list)
    pdf: Path | None = None
    pdf_engine: str = ""
    images: int = 0


def input_kind(path: Path) -> str:
    """'evaluation', 'dataset' or 'jsonl' for what `path` is; ReportError for anything else."""
    from napari_fracto.dataset.store import DB_NAME

    if path.is_dir():
        if (path / "results.json").is_file():
            return "evaluation"
        if (path / DB_NAME).is_file():
            return "dataset"
        raise ReportError(
            f"{path.name} is neither a corrections dataset nor an `eval` output folder (no {DB_NAME} or "
            "results.json); give a dataset folder, an eval folder or an analyze JSONL file"
        )
    if not path.exists():
        raise ReportError(f"{path}: no such file or folder")
    if path.name == "results.json":
        return "evaluation"
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise ReportError(f"{path.name}: give an analyze JSONL (.jsonl), a dataset folder or an eval folder")


def report_of(
    source: Path,
    stack: contextlib.ExitStack,
    known: list[str],
    *,
    split: str | None = None,
    task: str | None = None,
    all_reviews: bool = False,
    dataset: Path | None = None,
    title: str = "",
    redactor: Any = None,
) -> Report:
    """The report INPUT stands for; a dataset it reads stays open in `stack` until the report is written.
    `known` collects the local paths the report must not show."""
    from napari_fracto.report import entries as load

    kind = input_kind(source)
    known.append(str(source.resolve()))
    if kind == "jsonl":
        items = load.from_jsonl(source)
        known.extend(
            str(Path(e.name).parent) for e in items if e.name.startswith(("/", "~")) or ":\\" in e.name
        )
        single = len(items) == 1
        name = items[0].name if single else source.name
        return Report(
            "image" if single else "batch",
            title or (f"Analysis of {Path(name).name}" if single else f"Batch report: {source.name}"),
            f"{len(items)} image(s) from {source.name}",
            items,
        )
    if kind == "dataset":
        from napari_fracto.dataset import Dataset

        ds = stack.enter_context(Dataset.open(source))
        items = load.from_dataset(ds, split=split, task=task, reviewed_only=not all_reviews)
        if not items:
            what = "reviewed " if not all_reviews else ""
            raise ReportError(
                f"{ds.name} has no {what}images{f' in the {split} split' if split else ''}; review some first"
                + ("" if all_reviews else ", or pass --all to include unreviewed predictions")
            )
        scope = (
            f"{split} split"
            if split
            else ("reviewed items" if not all_reviews else "all reviewed or predicted")
        )
        return Report(
            "dataset", title or f"Dataset report: {ds.name}", f"{len(items)} image(s), {scope}", items
        )
    from napari_fracto.report.evaluation import evaluation_view

    view = evaluation_view(source if source.is_dir() else source.parent, redactor, dataset=dataset)
    return Report(
        "evaluation",
        title or f"Evaluation report: {view['task']}, {view['split']} split",
        f"{len(view['rows'])} configuration(s)",
        evaluation=view,
    )


def write_report(
    report: Report,
    out: Path,
    redactor: Any,
    *,
    pdf: Path | None = None,
    per_page: int = PER_PAGE,
    pdf_engine: str = "auto",
) -> Made:
    """Write a built report as HTML pages (and a PDF)."""
    from napari_fracto.report.html import write_html
    from napari_fracto.report.pdf import write_pdf

    made = Made(images=len(report.entries))
    made.pages = write_html(report, out, redactor, per_page=per_page)
    if pdf is not None:
        made.pdf_engine = write_pdf(report, pdf, redactor, engine=pdf_engine)
        made.pdf = pdf
    return made


def make_report(
    source: str | Path,
    out: str | Path,
    *,
    pdf: str | Path | None = None,
    include_paths: bool = False,
    per_page: int = PER_PAGE,
    split: str | None = None,
    task: str | None = None,
    all_reviews: bool = False,
    dataset: str | Path | None = None,
    title: str = "",
    pdf_engine: str = "auto",
) -> Made:
    """INPUT (analyze JSONL, dataset folder or eval folder) as a self-contained HTML report (and PDF)."""
    from napari_fracto.report.redact import Redactor

    redactor = Redactor(include_paths=include_paths)
    with contextlib.ExitStack() as stack:
        report = report_of(
            Path(source).expanduser(),
            stack,
            redactor.known,
            split=split,
            task=task,
            all_reviews=all_reviews,
            dataset=Path(dataset) if dataset else None,
            title=title,
            redactor=redactor,
        )
        return write_report(
            report,
            Path(out),
            redactor,
            pdf=Path(pdf) if pdf else None,
            per_page=per_page,
            pdf_engine=pdf_engine,
        )
