"""What a paper is made of once read: figures (pixels, where they were, caption) and body paragraphs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from napari_fracto.errors import UserError

if TYPE_CHECKING:
    import numpy as np

# (x0, top, x1, bottom): PDF points from the page's top-left corner, or pixels of a figure image
Bounds = tuple[float, float, float, float]


class PaperError(UserError, ValueError):
    """A paper cannot be read (encrypted, damaged, scanned, too large); the message says what to do."""


@dataclass
class Piece:
    """One raster piece of a figure: its pixels and where they sit in the figure image (pixels)."""

    bounds: Bounds
    letter: str = ""  # a panel letter printed as text beside the piece, when there is one


@dataclass
class Figure:
    """One figure: its image (H x W or H x W x 3, uint8), its number and caption, where it was found.

    `pieces` are the raster images the figure was drawn from when there were several (each one panel);
    empty when the figure is one image (panels are then found by its gutters).
    """

    number: str
    caption: str
    image: np.ndarray
    page: int | None = None  # 1-based page of a PDF; None for a JATS figure file
    bounds: Bounds | None = None  # on the page, in points
    file: str = ""  # the figure file of a JATS article
    pieces: list[Piece] = field(default_factory=list)
    letters: list[Piece] = field(default_factory=list)  # panel letters set as text over the figure


@dataclass
class Paper:
    """A paper as read: its figures, body paragraphs and what it states about itself."""

    path: str
    pages: int = 0
    title: str = ""
    doi: str = ""
    licence: str = ""
    figures: list[Figure] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)
    # figures seen but not extracted, as (number, why): vector drawings, tables
    left_out: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "page 4 is a scanned image: skipped"
