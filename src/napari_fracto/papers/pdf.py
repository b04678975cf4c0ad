"""PDFs read with pypdfium2 (Apache-2.0/BSD-3): figures with their page positions, captions, body text.

A figure is a cluster of raster images on a page with the caption next to it; it is rendered from the
page at the images' own resolution, so a figure drawn from several pieces (one image per panel, letters
set as text) comes out whole, and each piece is remembered as a panel. A caption with no raster image is
a vector drawing (a plot or a schematic) and is reported, not extracted.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

from napari_fracto.papers.layout import Line, blocks_of, lines_of
from napari_fracto.papers.model import Bounds, Figure, Paper, PaperError, Piece

MAX_BYTES = 300 * 1024 * 1024
MAX_PAGES = 600
MAX_SIDE = 3000  # pixels of a rendered figure's longer side
MIN_IMAGE_PT = 36  # images smaller than half an inch are logos and icons
GAP_PT = 15  # images closer than this belong to one figure
CAPTION_REACH_PT = 90
_DOI = re.compile(r"\b(10\.\d{4,9}/[^\s\"<>]+[^\s\"<>.,;)])")
_LICENCE = re.compile(
    r"\b(CC[ -]BY(?:[ -](?:NC|ND|SA))*(?:[ -]\d\.\d)?|CC0|Creative Commons [A-Za-z -]*?Licen[cs]e)"
)
_PDFIUM = threading.Lock()  # PDFium is not thread-safe: one document is read at a time in a process
_LETTER = re.compile(r"^\(?([a-z])\)?$")


def _pdfium() -> Any:
    try:
        import pypdfium2
    except ImportError:
        raise PaperError("reading PDFs needs pypdfium2: pip install 'napari-fracto[papers]'") from None
    return pypdfium2


def open_pdf(path: Path) -> Any:
    """The pdfium document, or a PaperError that says what is wrong with the file and what to do."""
    pdfium = _pdfium()
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise PaperError(
            f"{path.name}: {size / 2**20:.0f} MB is over the {MAX_BYTES // 2**20} MB limit; split it"
        )
    try:
        doc = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise PaperError(
                f"{path.name}: the PDF is encrypted (password protected); save an unprotected copy and "
                "import that"
            ) from None
        raise PaperError(f"{path.name}: not a readable PDF ({exc}); is the file complete?") from None
    if len(doc) > MAX_PAGES:
        pages = len(doc)
        doc.close()
        raise PaperError(f"{path.name}: {pages} pages is over the {MAX_PAGES}-page limit; split it")
    return doc


def _top_left(bounds: tuple[float, float, float, float], height: float) -> Bounds:
    left, bottom, right, top = bounds
    return (left, height - top, right, height - bottom)


def _runs(page: Any, height: float) -> list[Line]:
    text = page.get_textpage()
    runs = []
    for i in range(text.count_rects()):
        rect = text.get_rect(i)
        content = (
            text.get_text_bounded(*rect).replace("\x02", "-").replace("\r", " ").replace("\n", " ").strip()
        )
        if content:
            runs.append(Line(_top_left(rect, height), content))
    text.close()
    return runs


def _images(page: Any, height: float) -> list[tuple[Bounds, float]]:
    """Raster images on the page: bounds and native pixels per point."""
    raw = _pdfium().raw
    out = []
    for obj in page.get_objects(filter=(raw.FPDF_PAGEOBJ_IMAGE,), max_depth=4):
        b = _top_left(obj.get_bounds(), height)
        w, h = b[2] - b[0], b[3] - b[1]
        if w < MIN_IMAGE_PT or h < MIN_IMAGE_PT:
            continue
        px_w, px_h = obj.get_px_size()
        out.append((b, max(px_w / w, px_h / h)))
    return out


def _near(a: Bounds, b: Bounds, gap: float) -> bool:
    return a[0] - gap <= b[2] and b[0] - gap <= a[2] and a[1] - gap <= b[3] and b[1] - gap <= a[3]


def _clusters(images: list[tuple[Bounds, float]]) -> list[list[tuple[Bounds, float]]]:
    groups: list[list[tuple[Bounds, float]]] = []
    for image in images:
        joined = [g for g in groups if any(_near(image[0], other[0], GAP_PT) for other in g)]
        merged = [image] + [m for g in joined for m in g]
        groups = [g for g in groups if g not in joined] + [merged]
    return groups


def _union(bounds: list[Bounds]) -> Bounds:
    return (
        min(b[0] for b in bounds),
        min(b[1] for b in bounds),
        max(b[2] for b in bounds),
        max(b[3] for b in bounds),
    )


def _caption_for(region: Bounds, captions: list[Line]) -> Line | None:
    """The caption just below the figure (or else just above it), overlapping it horizontally."""

    def overlaps(c: Line) -> bool:
        return c.bounds[0] < region[2] and region[0] < c.bounds[2]

    below = [c for c in captions if overlaps(c) and 0 <= c.bounds[1] - region[3] + 4 <= CAPTION_REACH_PT]
    above = [c for c in captions if overlaps(c) and 0 <= region[1] - c.bounds[3] + 4 <= CAPTION_REACH_PT]
    if below:
        return min(below, key=lambda c: c.bounds[1])
    return max(above, key=lambda c: c.bounds[3]) if above else None


def _render(page: Any, region: Bounds, scale: float, width: float, height: float) -> Any:
    import numpy as np

    longest = max(region[2] - region[0], region[3] - region[1])
    scale = max(1.0, min(scale, 4.0, MAX_SIDE / max(longest, 1.0)))
    crop = (region[0], height - region[3], width - region[2], region[1])
    bitmap = page.render(scale=scale, crop=tuple(max(0.0, c) for c in crop))
    image = np.asarray(bitmap.to_pil().convert("RGB"))
    bitmap.close()
    return image, scale


def _figure(
    page: Any,
    number: int,
    caption: Line,
    cluster: list[tuple[Bounds, float]],
    lines: list[Line],
    size: tuple[float, float],
) -> Figure:
    """The figure drawn by these images, rendered whole, with its pieces and printed letters in its pixels."""
    from napari_fracto.papers.captions import caption_number

    region = _union([b for b, _ in cluster])
    image, scale = _render(page, region, max(s for _, s in cluster), *size)

    def to_px(b: Bounds) -> Bounds:
        return (
            (b[0] - region[0]) * scale,
            (b[1] - region[1]) * scale,
            (b[2] - region[0]) * scale,
            (b[3] - region[1]) * scale,
        )

    letters = [
        Piece(to_px(ln.bounds), m.group(1))
        for ln in lines
        if _near(ln.bounds, region, 0) and (m := _LETTER.match(ln.text.strip()))
    ]
    pieces = [Piece(to_px(b)) for b, _ in cluster] if len(cluster) > 1 else []
    return Figure(
        caption_number(caption.text) or "?",
        caption.text,
        image,
        page=number,
        bounds=region,
        pieces=pieces,
        letters=letters,
    )


def _figures_on(page: Any, number: int, paper: Paper) -> list[Line]:
    """Add the page's figures to `paper`; return its text blocks that are not captions."""
    from napari_fracto.papers.captions import TABLE_START, caption_number

    width, height = page.get_size()
    runs = _runs(page, height)
    images = _images(page, height)
    if not runs and images and sum((b[2] - b[0]) * (b[3] - b[1]) for b, _ in images) > 0.6 * width * height:
        paper.notes.append(
            f"page {number} is a scanned image without text: skipped (run OCR on the PDF first)"
        )
        return []
    lines = lines_of(runs)
    blocks = blocks_of(lines, width)
    captions = [b for b in blocks if caption_number(b.text)]
    for table in (b for b in blocks if TABLE_START.match(b.text)):
        paper.left_out.append((f"Table {TABLE_START.match(table.text).group(1)}", "a table"))
    by_caption: dict[int, list[tuple[Bounds, float]]] = {}  # images sharing a caption are one figure
    for cluster in _clusters(images):
        caption = _caption_for(_union([b for b, _ in cluster]), captions)
        if caption is None:
            paper.left_out.append((f"page {number} image", "an image without a caption (logo or decoration)"))
            continue
        by_caption.setdefault(captions.index(caption), []).extend(cluster)
    used = [captions[i] for i in by_caption]
    for index, pieces_on_page in by_caption.items():
        paper.figures.append(_figure(page, number, captions[index], pieces_on_page, lines, (width, height)))
    for caption in captions:
        if caption not in used:
            paper.left_out.append(
                (f"Fig. {caption_number(caption.text)}", "a vector drawing (plot or schematic)")
            )
    return [b for b in blocks if b not in captions and not TABLE_START.match(b.text)]


def read_pdf(path: str | os.PathLike[str], cancel: Any = None) -> Paper:
    """Read a PDF's figures and text; a PaperError for a file that cannot be used as a whole."""
    path = Path(path)
    with _PDFIUM:
        return _read(path, cancel)


def _read(path: Path, cancel: Any) -> Paper:
    doc = open_pdf(path)
    try:
        paper = Paper(path=str(path), pages=len(doc))
        paper.title = str(doc.get_metadata_dict().get("Title", "") or "")
        body: list[str] = []
        for index in range(len(doc)):
            if cancel is not None and cancel.is_set():
                raise PaperError(f"{path.name}: cancelled")
            page = doc[index]
            try:
                body += [b.text for b in _figures_on(page, index + 1, paper)]
            finally:
                page.close()
        paper.paragraphs = [p for p in body if len(p) >= 40]
        if not body and len(paper.notes) == paper.pages:
            raise PaperError(
                f"{path.name}: every page is a scanned image (no text layer); run OCR on it first"
            )
        text = " ".join(body[:40])
        if m := _DOI.search(text):
            paper.doi = m.group(1)
        if m := _LICENCE.search(text):
            paper.licence = m.group(1)
        return paper
    finally:
        doc.close()
