"""Reports as self-contained HTML: one file per page, images inline as data URIs, no script at all.

Rendering uses Jinja2 with autoescaping on, so whatever a model answered (labels, advice, raw text) is
text on the page and never markup; the page's Content-Security-Policy forbids scripts and outside
resources as a second fence. A batch larger than `per_page` images becomes `report.html`,
`report-2.html`, ... with links between them (the summary, over all images, is on the first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from napari_fracto.report.entries import ImageEntry
from napari_fracto.report.redact import Redactor

PER_PAGE = 50


@dataclass
class Report:
    """What one report shows: per image (one entry), per batch/dataset (entries) or per evaluation."""

    kind: str  # "image", "batch", "dataset" or "evaluation"
    title: str
    subtitle: str = ""
    entries: list[ImageEntry] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None


def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=PackageLoader("napari_fracto.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def page_name(out: Path, number: int) -> str:
    return out.name if number == 1 else f"{out.stem}-{number}{out.suffix}"


def entry_views(report: Report, entries: Sequence[ImageEntry], r: Redactor, offset: int = 0) -> list[dict]:
    """The views of `entries` (numbered from `offset`); reads their images (once)."""
    from napari_fracto.report.views import image_view

    return [
        image_view(e, offset + i, r, thumbnail=report.kind != "image")
        for i, e in enumerate(entries)
        if not e.problem
    ]


def render_page(
    report: Report,
    views: Sequence[dict[str, Any]],
    r: Redactor,
    *,
    offset: int = 0,
    count: int = 0,
    pages: Sequence[dict[str, Any]] = (),
    page_of: dict[str, str] | None = None,
    summary: dict[str, Any] | None = None,
) -> str:
    """One HTML page showing `views` (`count` entries from `offset`), with the summary when given."""
    from napari_fracto import __version__

    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=r.text(report.title),
            subtitle=r.text(report.subtitle),
            made=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            version=__version__,
            pages=list(pages),
            page_of=page_of or {},
            summary=summary,
            grid=report.kind != "image" and bool(views),
            images=views,
            first=offset + 1,
            last=offset + count,
            total=len(report.entries),
            evaluation=report.evaluation,
        )
    )


def write_html(report: Report, out: Path, r: Redactor, *, per_page: int = PER_PAGE) -> list[Path]:
    """Write the report's pages next to `out` (the first page is `out` itself); returns them."""
    from napari_fracto.paths import atomic_write_text
    from napari_fracto.report.views import summary_view

    per_page = max(1, int(per_page))
    entries = report.entries
    chunks = [entries[i : i + per_page] for i in range(0, len(entries), per_page)] or [[]]
    names = [page_name(out, n) for n in range(1, len(chunks) + 1)]
    page_of = {f"image-{i}": names[i // per_page] for i in range(len(entries))}
    out.parent.mkdir(parents=True, exist_ok=True)
    first_views = entry_views(report, chunks[0], r)
    # Later pages first: reading their images finds the unreadable ones the summary's failures list.
    for n in range(1, len(chunks)):
        views = entry_views(report, chunks[n], r, n * per_page)
        atomic_write_text(out.parent / names[n], _page(report, views, r, n, chunks, names, page_of, None))
    summary = summary_view(entries, r) if report.kind in ("batch", "dataset") else None
    atomic_write_text(out, _page(report, first_views, r, 0, chunks, names, page_of, summary))
    return [out.parent / name for name in names]


def _page(
    report: Report,
    views: list,
    r: Redactor,
    n: int,
    chunks: list,
    names: list,
    page_of: dict,
    summary: dict[str, Any] | None,
) -> str:
    pages = [{"number": k + 1, "href": name, "current": k == n} for k, name in enumerate(names)]
    per_page = len(chunks[0])
    return render_page(
        report,
        views,
        r,
        offset=n * per_page,
        count=len(chunks[n]),
        pages=pages,
        page_of=page_of,
        summary=summary,
    )


def render_single(report: Report, r: Redactor) -> str:
    """The whole report as one page (what the PDF prints: every image, no page links)."""
    from napari_fracto.report.views import summary_view

    views = entry_views(report, report.entries, r)
    summary = summary_view(report.entries, r) if report.kind in ("batch", "dataset") else None
    anchors = {f"image-{i}": "" for i in range(len(report.entries))}
    return render_page(report, views, r, count=len(report.entries), page_of=anchors, summary=summary)
