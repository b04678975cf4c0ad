"""Where every imported panel came from, and the text sent with it to the model.

Provenance (file, page, figure, panel, bounds, caption and excerpts, DOI, licence, perceptual hash) is
kept in the dataset's `meta` table under `paper-item:<image id>`, one JSON value per item, so it outlives
every later review of the item; each imported paper's report (what was kept, what was left out and why)
under `paper:<file sha256>`. `dataset info` reads both (`per_paper`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from napari_fracto.findings import AnalysisContext

if TYPE_CHECKING:
    from napari_fracto.dataset import Dataset

ITEM_KEY = "paper-item:"
PAPER_KEY = "paper:"
MAX_CONTEXT = 4000  # characters of context per panel


@dataclass(frozen=True)
class Provenance:
    file: str
    figure: str
    panel: str = ""  # "" for a figure of one panel
    page: int | None = None
    bounds: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # panel in figure pixels
    figure_bounds: tuple[float, float, float, float] | None = None  # figure on the page, points
    figure_file: str = ""  # JATS: the figure's image file
    caption: str = ""
    caption_part: str = ""
    excerpts: tuple[str, ...] = ()
    title: str = ""
    doi: str = ""
    licence: str = ""
    paper_sha256: str = ""
    phash: str = ""
    wanted: tuple[str, ...] = ()  # labels of --want that the caption or excerpts mention

    @property
    def where(self) -> str:
        """'alumina.pdf p. 1 Fig. 1b': what a person looks up."""
        page = f" p. {self.page}" if self.page else ""
        return f"{self.file}{page} Fig. {self.figure}{self.panel}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("bounds", "figure_bounds", "excerpts", "wanted"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    def context(self) -> AnalysisContext:
        """What the model is told with the panel: the caption whole, the panel's part, the citing text."""
        source = self.title or self.file
        lines = [
            f"From the paper {source!r}" + (f" (doi:{self.doi})" if self.doi else "") + f", {self.where}."
        ]
        lines.append(f"Figure caption: {self.caption}")
        if self.caption_part:
            lines.append(f"This panel ({self.panel}): {self.caption_part}")
        for excerpt in self.excerpts:
            lines.append(f"The text says: {excerpt}")
        return AnalysisContext(notes="\n".join(lines)[:MAX_CONTEXT])


def item_provenance(ds: Dataset) -> dict[str, Provenance]:
    """Provenance of every imported panel, by image id."""
    out = {}
    for key, value in ds.meta.items():
        if key.startswith(ITEM_KEY):
            try:
                out[key[len(ITEM_KEY) :]] = Provenance.from_dict(json.loads(value))
            except (ValueError, TypeError):
                continue  # a damaged entry loses its provenance, never the dataset
    return out


@dataclass
class PaperInfo:
    file: str
    doi: str = ""
    licence: str = ""
    pages: int = 0
    items: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    figures: int = 0
    left_out: dict[str, int] = field(default_factory=dict)


def per_paper(ds: Dataset, task: str | None = None) -> dict[str, PaperInfo]:
    """Per imported paper: its items now (by status), what the import left out, DOI and licence."""
    papers: dict[str, PaperInfo] = {}
    for key, value in ds.meta.items():
        if key.startswith(PAPER_KEY):
            try:
                report = json.loads(value)
                papers[key[len(PAPER_KEY) :]] = PaperInfo(
                    file=str(report["file"]),
                    doi=str(report.get("doi", "")),
                    licence=str(report.get("licence", "")),
                    pages=int(report.get("pages", 0)),
                    left_out=dict(report.get("left_out", {})),
                )
            except (ValueError, TypeError, KeyError):
                continue
    provenance = item_provenance(ds)
    figures: dict[str, set[str]] = {}
    for item in ds.iter_items(task=task):
        prov = provenance.get(item.image.image_id)
        if prov is None or prov.paper_sha256 not in papers:
            continue
        info = papers[prov.paper_sha256]
        info.items += 1
        info.statuses[item.status.value] = info.statuses.get(item.status.value, 0) + 1
        figures.setdefault(prov.paper_sha256, set()).add(prov.figure)
    for sha, info in papers.items():
        info.figures = len(figures.get(sha, ()))
    return dict(sorted(papers.items(), key=lambda kv: kv[1].file))


def format_papers(papers: dict[str, PaperInfo]) -> list[str]:
    """Lines for `dataset info`."""
    if not papers:
        return []
    lines = ["", f"papers: {len(papers)}"]
    for info in papers.values():
        status = ", ".join(f"{k} {v}" for k, v in sorted(info.statuses.items())) or "none now"
        stated = "; ".join(p for p in (f"doi:{info.doi}" if info.doi else "", info.licence) if p)
        lines.append(
            f"  {info.file}: {info.items} panel(s) from {info.figures} figure(s) ({status})"
            + (f"; {stated}" if stated else "")
        )
        if info.left_out:
            lines.append(
                "    left out: " + ", ".join(f"{v} {k}" for k, v in Counter(info.left_out).most_common())
            )
    return lines
