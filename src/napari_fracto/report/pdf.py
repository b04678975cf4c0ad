"""The report as a PDF: headless Chromium printing the HTML when one is installed (the same page, as
the browser lays it out), else matplotlib's PdfPages (a dependency already, nothing to install) drawing
the same views page by page: pictures with their text, charts, tables as aligned text.

`engine="chromium"` or `"matplotlib"` forces one; `NAPARI_FRACTO_CHROMIUM` names a browser binary.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from napari_fracto.report.entries import ReportError
from napari_fracto.report.html import Report, entry_views, render_single
from napari_fracto.report.redact import Redactor

BROWSERS = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "microsoft-edge",
    "msedge",
)
_MAC_CHROME = "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"
CHROMIUM_TIMEOUT_S = 300
A4 = (8.27, 11.69)
LINE_CHARS = 95


def find_chromium() -> str | None:
    """A Chromium-family browser to print with, or None."""
    named = os.environ.get("NAPARI_FRACTO_CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return _MAC_CHROME if Path(_MAC_CHROME).is_file() else None


def write_pdf(report: Report, out: Path, r: Redactor, *, engine: str = "auto") -> str:
    """Write the PDF; returns the engine used ("chromium" or "matplotlib")."""
    if engine not in ("auto", "chromium", "matplotlib"):
        raise ReportError(f"unknown PDF engine {engine!r}; use auto, chromium or matplotlib")
    out.parent.mkdir(parents=True, exist_ok=True)
    browser = find_chromium() if engine != "matplotlib" else None
    if engine == "chromium" and browser is None:
        raise ReportError(
            "no Chromium or Chrome found for the PDF; install one or use --pdf-engine matplotlib"
        )
    if browser is not None:
        _chromium_pdf(browser, render_single(report, r), out)
        return "chromium"
    _matplotlib_pdf(report, out, r)
    return "matplotlib"


def _chromium_pdf(browser: str, html: str, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="napari-fracto-report-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        target = Path(tmp) / "report.pdf"
        command = [
            browser,
            "--headless",
            "--disable-gpu",
            "--no-pdf-header-footer",
            "--no-first-run",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--print-to-pdf={target}",
            page.as_uri(),
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise ReportError(
                f"the browser took over {CHROMIUM_TIMEOUT_S} s to print the PDF; use --pdf-engine matplotlib"
            ) from None
        if not target.is_file() or target.stat().st_size == 0:
            tail = " / ".join((done.stderr or "").strip().splitlines()[-3:]) or f"exit {done.returncode}"
            raise ReportError(
                f"the browser ({Path(browser).name}) printed no PDF ({tail}); use --pdf-engine matplotlib"
            )
        shutil.move(str(target), out)


# --- matplotlib pages --------------------------------------------------------------------------------


class _Pages:
    """A4 pages: a picture at the top (optional) and wrapped text below, flowing onto new pages."""

    def __init__(self, pdf: Any) -> None:
        self.pdf = pdf
        self.fig: Any = None
        self.y = 0.0

    def new(self) -> None:
        self.flush()
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=A4)
        self.y = 0.955

    def flush(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            self.fig = None

    def text(self, line: str, *, size: float = 9, weight: str = "normal", mono: bool = False) -> None:
        height = size / 72 / A4[1] * 1.45
        chars = int(LINE_CHARS * 9 / size * (0.85 if mono else 1))
        for part in textwrap.wrap(line, chars, replace_whitespace=False) or [""]:
            if self.fig is None or self.y - height < 0.04:
                self.new()
            self.fig.text(
                0.06,
                self.y,
                part,
                fontsize=size,
                weight=weight,
                va="top",
                family="monospace" if mono else None,
            )
            self.y -= height

    def picture(self, picture: Any, max_height: float = 0.5) -> None:
        from PIL import Image

        if picture is None:
            return
        aspect = picture.height / picture.width
        width = 0.88
        height = width * aspect * A4[0] / A4[1]
        if height > max_height:
            width, height = width * max_height / height, max_height
        if self.fig is None or self.y - height < 0.04:
            self.new()
        ax = self.fig.add_axes((0.06, self.y - height, width, height))
        ax.imshow(Image.open(io.BytesIO(picture.data)))
        ax.set_axis_off()
        self.y -= height + 0.01

    def rows(self, title: str, rows: Any) -> None:
        rows = list(rows)
        if rows:
            self.text(title, size=10, weight="bold")
            for k, v in rows:
                self.text(f"{k}: {v}")


def _image_pages(pages: _Pages, v: dict[str, Any]) -> None:
    pages.new()
    pages.text(v["title"], size=13, weight="bold")
    pages.text(v["verdict"], size=11, weight="bold")
    if v["picture"] is not None:
        pages.picture(v["picture"])
    else:
        pages.text(v["image_problem"] or "no image")
    if v["legend"]:
        pages.text(
            "Colours: "
            + ", ".join(label for label, _ in v["legend"])
            + ("; solid: the model's boxes, dashed: the reviewer's correction" if v["dashed"] else "")
        )
    if v["findings"]:
        pages.text("Labels", size=10, weight="bold")
        for f in v["findings"]:
            decision = f" · reviewer: {f['decision']}" if f["decision"] else ""
            pages.text(f"{f['label']} · confidence {f['confidence']} · {f['where']}{decision}")
    for title, key in (("Not in the vocabulary", "unknown"), ("Problems", "problems")):
        if v[key]:
            pages.text(f"{title}: " + "; ".join(v[key]))
    if v["explanation"]:
        pages.text("The model's explanation", size=10, weight="bold")
        pages.text(v["explanation"])
    for title, key in (
        ("Suggested fixes", "advice"),
        ("Evidence", "evidence"),
        ("Evidence disagrees", "disagreements"),
    ):
        if v[key]:
            pages.text(title, size=10, weight="bold")
            for line in v[key]:
                pages.text("• " + line)
    review = v["review"]
    if review:
        rows = [
            ("status", review["status"]),
            ("reviewer", review["reviewer"]),
            ("when", review["when"]),
            ("labels after review", ", ".join(review["corrected"]) or "none"),
        ]
        rows += [(k, ", ".join(review[k])) for k in ("added", "removed") if review[k]]
        rows += [("notes", review["notes"])] if review["notes"] else []
        pages.rows("Review", rows)
    pages.rows("Sample", v["context"])
    pages.rows("Image and instrument", v["metadata"])
    pages.rows("Provenance", v["provenance"])


def _summary_pages(pages: _Pages, s: dict[str, Any]) -> None:
    pages.text(
        f"{s['n_images']} image(s) · {s['n_parsed']} answer(s) read · {s['n_reviewed']} reviewed", size=10
    )
    for title, chart in (
        ("Label frequencies", s["frequency_chart"]),
        ("Confidence per label", s["confidence_chart"]),
    ):
        pages.text(title, size=11, weight="bold")
        pages.picture(chart, 0.4)
    for title, key, fmt in (
        ("Disagreements", "disagreements", "{title} ({kind}): {text}"),
        ("Failures", "failures", "{title}: {why}"),
    ):
        pages.text(f"{title} ({len(s[key])})", size=11, weight="bold")
        for row in s[key]:
            pages.text(fmt.format(**row))
        if not s[key]:
            pages.text("None.")


def _evaluation_pages(pages: _Pages, e: dict[str, Any]) -> None:
    pages.text(
        f"Task {e['task']}, split {e['split']}, {e['n_images']} reviewed image(s) of {e['dataset']}. "
        f"Brackets: {e['confidence']} bootstrap intervals over images."
    )
    for row in e["rows"]:
        pages.text(row[0], size=10, weight="bold")
        pages.text(" · ".join(f"{c}: {v}" for c, v in zip(e["columns"][1:], row[1:], strict=True)))
    pages.picture(e["chart"], 0.35)
    pages.text("Per-label F1", size=11, weight="bold")
    pages.picture(e["f1_chart"], 0.45)
    for s in e["examples"]:
        pages.new()
        pages.text(f"Errors of {s['config']}: {s['n_wrong']} image(s) wrong", size=12, weight="bold")
        for x in s["examples"]:
            pages.picture(x["picture"], 0.25)
            pages.text(x["title"], weight="bold")
            if x["false_positives"]:
                pages.text("false positive: " + ", ".join(x["false_positives"]))
            if x["missed"]:
                pages.text("missed: " + ", ".join(x["missed"]))
            pages.text("true: " + (", ".join(x["truth"]) or "none") + " (boxes: the reviewer's)")


def _matplotlib_pdf(report: Report, out: Path, r: Redactor) -> None:
    from matplotlib.backends.backend_pdf import PdfPages

    from napari_fracto.report.views import summary_view

    tmp = out.with_name(out.name + ".part")
    with PdfPages(tmp) as pdf:
        pages = _Pages(pdf)
        pages.text(r.text(report.title), size=16, weight="bold")
        pages.text(r.text(report.subtitle))
        chunk = 20  # images are read and drawn a few at a time: a large batch never sits in memory
        views_first: list[dict[str, Any]] = []
        if report.kind in ("batch", "dataset"):
            views_first = entry_views(report, report.entries[:chunk], r)
            _summary_pages(pages, summary_view(report.entries, r))
        if report.evaluation is not None:
            _evaluation_pages(pages, report.evaluation)
        for start in range(0, len(report.entries), chunk):
            views = (
                views_first
                if start == 0 and views_first
                else entry_views(report, report.entries[start : start + chunk], r, start)
            )
            for v in views:
                _image_pages(pages, v)
        pages.flush()
    os.replace(tmp, out)
