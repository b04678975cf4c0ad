"""The pipeline: papers -> figures -> panels -> micrographs only, reprints once -> unreviewed dataset items
with their caption and citing text as context (what `dataset autolabel` then sends to the model).

Each paper is read and judged whole in memory before anything is written, so an encrypted, damaged,
scanned or cancelled paper leaves nothing in the dataset, and the batch goes on to the next file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_fracto.papers.model import Figure, Paper, PaperError
from napari_fracto.papers.provenance import ITEM_KEY, PAPER_KEY, Provenance, item_provenance
from napari_fracto.papers.report import PaperReport, PapersSummary

if TYPE_CHECKING:
    import numpy as np

    from napari_fracto.dataset import Dataset

PAPER_SUFFIXES = (".pdf", ".xml", ".nxml")
MIN_PANEL_PX = 32


@dataclass
class Candidate:
    figure: Figure
    panel: str
    bounds: tuple[float, float, float, float]
    pixels: Any
    caption_part: str


def paper_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """PDF and JATS XML files among `paths` (folders searched recursively), in a stable order."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PAPER_SUFFIXES)
        else:
            out.append(path)
    return list(dict.fromkeys(out))


def display_name(path: Path) -> str:
    """The paper's file name; a JATS article (often `article.xml`) with its folder's name."""
    return f"{path.parent.name}/{path.name}" if path.suffix.lower() != ".pdf" else path.name


def read_paper(path: Path, cancel: threading.Event | None = None) -> Paper:
    """A PDF or a JATS article; PaperError says why a file cannot be used."""
    if not path.is_file():
        raise PaperError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".pdf":
            from napari_fracto.papers.pdf import read_pdf

            return read_pdf(path, cancel)
        if suffix in (".xml", ".nxml"):
            from napari_fracto.papers.jats import is_jats, read_jats

            if not is_jats(path):
                raise PaperError(f"{path.name}: not a JATS article (no <article> element)")
            return read_jats(path)
    except PaperError:
        raise
    except (RuntimeError, ValueError, OSError, MemoryError) as exc:  # pdfium, PIL, a file gone mid-read
        raise PaperError(f"{path.name}: cannot be read ({type(exc).__name__}: {exc})") from None
    raise PaperError(f"{path.name}: not a paper this reads (PDF, or JATS .xml/.nxml with its figure files)")


def candidates(paper: Paper) -> list[Candidate]:
    """Every panel of every figure, with its letter, bounds in the figure and its part of the caption."""
    from napari_fracto.papers.captions import caption_parts
    from napari_fracto.papers.panels import panel_letters, reading_order, split_panels

    out = []
    for figure in paper.figures:
        if figure.pieces:
            bounds = reading_order([p.bounds for p in figure.pieces])
        else:
            bounds = split_panels(figure.image)
        letters = panel_letters(bounds, figure.letters)
        lead, parts = caption_parts(figure.caption)
        for letter, (x0, top, x1, bottom) in zip(letters, bounds, strict=True):
            r0, r1, c0, c1 = round(top), round(bottom), round(x0), round(x1)
            pixels = figure.image[max(0, r0) : r1, max(0, c0) : c1]
            if min(pixels.shape[:2]) < MIN_PANEL_PX:
                continue
            part = parts.get(letter, "") if letter else ""
            out.append(
                Candidate(figure, letter, (x0, top, x1, bottom), pixels, part or ("" if parts else lead))
            )
    return out


def _grey_if_grey(pixels: np.ndarray) -> np.ndarray:
    """A grey image rendered as RGB is stored as one channel (what the model is sent is the same)."""
    import numpy as np

    if (
        pixels.ndim == 3
        and np.array_equal(pixels[..., 0], pixels[..., 1])
        and np.array_equal(pixels[..., 1], pixels[..., 2])
    ):
        return np.ascontiguousarray(pixels[..., 0])
    return np.ascontiguousarray(pixels)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def judge(
    paper: Paper, report: PaperReport, seen: Any, wanted: dict[str, re.Pattern[str]] | None, sha: str
) -> list[tuple[Any, Provenance]]:
    """The panels to keep, with their provenance; everything else counted in `report` with a reason."""
    from napari_fracto.papers.citations import excerpts
    from napari_fracto.papers.classify import classify
    from napari_fracto.papers.dedup import dhash

    name = display_name(Path(paper.path))
    for what, why in paper.left_out:
        kind = "table" if what.startswith("Table") else "vector drawing" if "vector" in why else "other"
        report.left_out[kind] += 1
        report.reasons.append(f"{what}: {why}")
    kept = []
    for c in candidates(paper):
        where = f"Fig. {c.figure.number}{c.panel}"
        verdict = classify(c.pixels, c.caption_part or c.figure.caption)
        if not verdict.keep:
            report.left_out[verdict.kind] += 1
            report.reasons.append(f"{where}: {verdict.reason}")
            continue
        quotes = tuple(excerpts(paper.paragraphs, c.figure.number, c.panel or None))
        prov = Provenance(
            file=name,
            figure=c.figure.number,
            panel=c.panel,
            page=c.figure.page,
            bounds=tuple(round(v, 1) for v in c.bounds),
            figure_file=c.figure.file,
            figure_bounds=tuple(round(v, 1) for v in c.figure.bounds) if c.figure.bounds else None,
            caption=c.figure.caption,
            caption_part=c.caption_part,
            excerpts=quotes,
            title=paper.title,
            doi=paper.doi,
            licence=paper.licence,
            paper_sha256=sha,
            phash=dhash(c.pixels),
        )
        if wanted is not None:
            text = " ".join((c.caption_part or c.figure.caption, *quotes))
            hits = tuple(label for label, pattern in wanted.items() if pattern.search(text))
            if not hits:
                report.left_out["not about a wanted label"] += 1
                continue
            prov = replace(prov, wanted=hits)
        earlier = seen.match(prov.phash)
        if earlier is not None:
            report.left_out["duplicate"] += 1
            report.reasons.append(f"{where}: the same image as {earlier}, kept once")
            continue
        seen.add(prov.phash, prov.where)
        kept.append((_grey_if_grey(c.pixels), prov))
    return kept


def _write(
    ds: Dataset, task: str, kept: list[tuple[Any, Provenance]], report: PaperReport, paper: Paper, sha: str
) -> None:
    """Store each panel with its provenance and an unreviewed review carrying the context in its request."""
    from napari_fracto.dataset.model import Status
    from napari_fracto.request import AnalysisRequest

    for pixels, prov in kept:
        image_id = ds.add_image(pixels, task=task, name=prov.where)
        ds.set_meta(ITEM_KEY + image_id, json.dumps(prov.to_dict(), ensure_ascii=False))
        context = prov.context()
        request = AnalysisRequest(task=task, source=prov.where, image_id=image_id, context=context)
        ds.save_review(
            image_id,
            task,
            (),
            status=Status.UNREVIEWED,
            context=context,
            request=request,
            reviewer="import-papers",
            notes=f"imported from {prov.where}",
        )
        report.image_ids.append(image_id)
        report.kept += 1
    ds.set_meta(
        PAPER_KEY + sha,
        json.dumps(
            {
                "file": report.file,
                "path": paper.path,
                "doi": paper.doi,
                "licence": paper.licence,
                "pages": paper.pages,
                "title": paper.title,
                "kept": report.kept,
                "left_out": dict(report.left_out),
            },
            ensure_ascii=False,
        ),
    )


def import_papers(
    ds: Dataset,
    paths: Iterable[str | os.PathLike[str]],
    *,
    task: str,
    want: Sequence[str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: threading.Event | None = None,
) -> PapersSummary:
    """Import the micrograph panels of papers as unreviewed items; `want` ([] = the rare labels) keeps only
    panels whose caption or citing text mention one of those labels."""
    from napari_fracto.papers.dedup import Seen
    from napari_fracto.papers.want import label_patterns, rare_labels

    wanted = label_patterns(task, list(want) or rare_labels(ds, task)) if want is not None else None
    seen = Seen([(p.phash, p.where) for p in item_provenance(ds).values() if p.phash])
    files = paper_files(paths)
    summary = PapersSummary()
    for done, path in enumerate(files):
        if cancel is not None and cancel.is_set():
            summary.cancelled = True
            break
        if progress is not None:
            progress(done, len(files), f"reading {path.name}")
        try:
            paper = read_paper(path, cancel)
            sha = _sha256(path)
            report = PaperReport(
                display_name(path), pages=paper.pages, figures=len(paper.figures), notes=list(paper.notes)
            )
            kept = judge(paper, report, seen, wanted, sha)
        except PaperError as exc:
            if cancel is not None and cancel.is_set():
                summary.cancelled = True
                break
            summary.failed.append((str(path), str(exc)))
            continue
        _write(ds, task, kept, report, paper, sha)
        summary.papers.append(report)
    if progress is not None:
        progress(len(files), len(files), "done")
    return summary
