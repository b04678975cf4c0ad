"""Micrograph or not: plots, schematics, photographs of specimens and tables are left out, with a reason.

The image decides first: a plot or a schematic is mostly blank background and flat filled areas; a
photograph of a specimen or a set-up is in colour, where SEM and most optical fractographs are grey. The
panel's caption then names what was seen ("schematic of the test", "load versus displacement"), and a
caption that names a non-micrograph outright overrides an image that looks like one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

BLANK_LIMIT = 0.45  # fraction of near-white pixels above which an image is a drawing
FLAT_LIMIT = 0.5  # fraction of pixels in perfectly flat areas above which an image is a drawing
CHROMA_LIMIT = 28.0  # mean (max - min) over RGB above which an image is a colour photograph

_MICRO = re.compile(
    r"\b(SEM|TEM|micrograph|fractograph|microscop|BSE|SE image|optical image of the fracture)", re.I
)
_KINDS = (
    ("schematic", re.compile(r"\b(schematic|illustration|diagram|sketch|drawing|model of)\b", re.I)),
    (
        "plot",
        re.compile(r"\b(plot|curve|graph|versus|vs\.|histogram|spectrum|spectra|chart|distribution)\b", re.I),
    ),
    ("photograph", re.compile(r"\b(photograph|photo|macrograph|specimen geometry|set-?up|camera)\b", re.I)),
    ("table", re.compile(r"^\s*table\b", re.I)),
)


@dataclass(frozen=True)
class Verdict:
    keep: bool
    kind: str  # "micrograph", "plot", "schematic", "photograph", "drawing", "table"
    reason: str


def measures(image: np.ndarray) -> dict[str, float]:
    """Blank fraction, flat fraction and colourfulness of an image (uint8, grey or RGB)."""
    import numpy as np

    arr = np.asarray(image)
    rgb = arr[..., :3].astype(np.int16) if arr.ndim == 3 else None
    grey = rgb.mean(axis=2) if rgb is not None else arr.astype(np.float32)
    step = max(1, int(np.sqrt(grey.size / 250_000)))  # a quarter megapixel is plenty for these counts
    grey = grey[::step, ::step]
    # flat: no step between neighbours; drawings are filled areas, micrographs and photographs have noise
    flat = (np.abs(np.diff(grey, axis=0))[:, :-1] <= 1) & (np.abs(np.diff(grey, axis=1))[:-1, :] <= 1)
    chroma = 0.0
    if rgb is not None:
        sub = rgb[::step, ::step]
        chroma = float((sub.max(axis=2) - sub.min(axis=2)).mean())
    return {
        "blank": float((grey >= 240).mean()),
        "flat": float(flat.mean()) if flat.size else 1.0,
        "chroma": chroma,
    }


def _named(text: str) -> str | None:
    for kind, pattern in _KINDS:
        if pattern.search(text):
            return kind
    return None


def classify(image: np.ndarray, caption: str = "") -> Verdict:
    """Keep micrographs; say what anything else is and why it was left out."""
    m = measures(image)
    named = _named(caption) if caption and not _MICRO.search(caption) else None
    if m["blank"] > BLANK_LIMIT or m["flat"] > FLAT_LIMIT:
        kind = named if named in ("plot", "schematic", "table") else "drawing"
        label = {"drawing": "plot or schematic"}.get(kind, kind)
        return Verdict(False, kind, f"{label}: {m['blank']:.0%} blank, {m['flat']:.0%} in flat areas")
    if m["chroma"] > CHROMA_LIMIT:
        return Verdict(
            False, "photograph", f"colour photograph (colourfulness {m['chroma']:.0f}), not a micrograph"
        )
    if named:
        return Verdict(False, named, f"the caption calls it a {named}")
    return Verdict(True, "micrograph", "micrograph")
