"""Full-text JATS XML (PubMed Central, Europe PMC and most open-access publishers) with its figure files.

The article's `<fig>` elements give label, caption and `<graphic xlink:href>` (often without an
extension: looked up beside the XML); `<body>` paragraphs are the citing text; DOI and licence come from
`<article-meta>`. Figure files are only read from the article's own folder.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from napari_fracto.papers.model import Figure, Paper, PaperError

MAX_XML_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 60_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".gif")
_XLINK = "{http://www.w3.org/1999/xlink}href"


def _text(element: ET.Element | None) -> str:
    return re.sub(r"\s+", " ", "".join(element.itertext())).strip() if element is not None else ""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find_all(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root.iter() if isinstance(e.tag, str) and _local(e.tag) == name]


def _figure_file(folder: Path, href: str) -> Path | None:
    """The figure's file in the article's folder (never outside it), with or without its extension."""
    name = Path(href.replace("\\", "/")).name
    if not name or name in (".", ".."):
        return None
    candidates = [folder / name] + [folder / (name + s) for s in IMAGE_SUFFIXES]
    candidates += [folder / (Path(name).stem + s) for s in IMAGE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file() and candidate.suffix.lower() in IMAGE_SUFFIXES:
            resolved = candidate.resolve()
            if resolved.parent == folder.resolve():
                return resolved
    return None


def _load(path: Path) -> object:
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        if img.width * img.height > MAX_PIXELS:
            raise PaperError(f"{path.name}: {img.width} x {img.height} pixels is too large a figure")
        return np.asarray(img.convert("RGB"))


def is_jats(path: Path) -> bool:
    """Whether an XML file is a JATS/NLM article (its root element is <article>)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    return re.search(r"<article[\s>]", head) is not None


def read_jats(path: str | os.PathLike[str]) -> Paper:
    """Read a JATS article and its figure files; a PaperError for an unreadable article."""
    path = Path(path)
    if path.stat().st_size > MAX_XML_BYTES:
        raise PaperError(f"{path.name}: over {MAX_XML_BYTES // 2**20} MB of XML; is it one article?")
    try:
        root = ET.parse(path).getroot()  # expat: no external entities, entity expansion bounded
    except ET.ParseError as exc:
        raise PaperError(f"{path.name}: not well-formed XML ({exc}); is the file complete?") from None
    if _local(root.tag) != "article":
        raise PaperError(f"{path.name}: not a JATS article (root element <{_local(root.tag)}>)")
    paper = Paper(path=str(path))
    for element in _find_all(root, "article-id"):
        if element.get("pub-id-type") == "doi":
            paper.doi = _text(element)
    titles = _find_all(root, "article-title")
    paper.title = _text(titles[0]) if titles else ""
    for licence in _find_all(root, "license"):
        href = licence.get(_XLINK, "")
        paper.licence = href or _text(licence)[:200]
    for ref in _find_all(root, "license_ref"):
        paper.licence = paper.licence or _text(ref)
    in_figures = {id(p) for fig in _find_all(root, "fig") for p in fig.iter()}
    bodies = _find_all(root, "body")
    paper.paragraphs = [_text(p) for body in bodies for p in _find_all(body, "p") if id(p) not in in_figures]
    for fig in _find_all(root, "fig"):
        label = _text(next(iter(_find_all(fig, "label")), None))
        caption = _text(next(iter(_find_all(fig, "caption")), None))
        number = re.search(r"\d+", label or fig.get("id", ""))
        graphics = _find_all(fig, "graphic")
        href = graphics[0].get(_XLINK, "") if graphics else ""
        file = _figure_file(path.parent, href) if href else None
        if file is None:
            paper.left_out.append((label or "a figure", f"its image file {href!r} is not beside the XML"))
            continue
        paper.figures.append(
            Figure(
                number.group(0) if number else "?",
                f"{label}. {caption}".strip(". "),
                _load(file),
                file=file.name,
            )
        )
    return paper
