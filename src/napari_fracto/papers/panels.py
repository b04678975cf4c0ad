"""Multi-panel figures split into panels: blank gutters cut recursively (an XY cut), read row by row.

A gutter is a run of rows (or columns) of one tone (white or black) across the part being cut; pieces
smaller than `MIN_PANEL` pixels or a tenth of the figure are kept with their neighbour (scale bars,
letters), so a micrograph with a dark band is not cut in two by it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari_fracto.papers.model import Bounds, Piece

if TYPE_CHECKING:
    import numpy as np

MIN_PANEL = 48  # pixels
MIN_FRACTION = 0.1  # of the figure's height or width
TONE_SPREAD = 12  # grey levels a gutter row may vary by
MAX_DEPTH = 4


def gray(image: np.ndarray) -> np.ndarray:
    """uint8 grey levels of an H x W (x C) image."""
    import numpy as np

    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr[..., :3].mean(axis=2)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _blank(lines: np.ndarray) -> np.ndarray:
    """Per line (row of `lines`): all one tone."""
    return (lines.max(axis=1).astype(int) - lines.min(axis=1)) <= TONE_SPREAD


def _trim(g: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """The box without its blank border; None when nothing but blank is left."""
    import numpy as np

    r0, r1, c0, c1 = box
    part = g[r0:r1, c0:c1]
    rows = np.flatnonzero(~_blank(part))
    cols = np.flatnonzero(~_blank(part.T))
    if rows.size == 0 or cols.size == 0:
        return None
    return r0 + int(rows[0]), r0 + int(rows[-1]) + 1, c0 + int(cols[0]), c0 + int(cols[-1]) + 1


def _cuts(blank: np.ndarray, offset: int, min_size: int) -> list[tuple[int, int]]:
    """Spans between gutters along one axis, each at least `min_size` long (short spans join a neighbour)."""
    spans: list[tuple[int, int]] = []
    start = None
    for i, is_blank in enumerate(blank):
        if not is_blank and start is None:
            start = i
        elif is_blank and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(blank)))
    merged: list[tuple[int, int]] = []
    for span in spans:
        if merged and (span[1] - span[0] < min_size or merged[-1][1] - merged[-1][0] < min_size):
            merged[-1] = (merged[-1][0], span[1])
        else:
            merged.append(span)
    return [(offset + a, offset + b) for a, b in merged]


def _split(g: np.ndarray, box: tuple[int, int, int, int], min_h: int, min_w: int, depth: int) -> list:
    trimmed = _trim(g, box)
    if trimmed is None:
        return []
    r0, r1, c0, c1 = trimmed
    if depth >= MAX_DEPTH:
        return [trimmed]
    part = g[r0:r1, c0:c1]
    rows = _cuts(_blank(part), r0, min_h)
    if len(rows) > 1:
        return [p for a, b in rows for p in _split(g, (a, b, c0, c1), min_h, min_w, depth + 1)]
    cols = _cuts(_blank(part.T), c0, min_w)
    if len(cols) > 1:
        return [p for a, b in cols for p in _split(g, (r0, r1, a, b), min_h, min_w, depth + 1)]
    return [trimmed]


def reading_order(bounds: list[Bounds]) -> list[Bounds]:
    """Row by row (a panel starting above the middle of the row's first panel is in that row), left to
    right."""
    rest = sorted(bounds, key=lambda b: (b[1], b[0]))
    out: list[Bounds] = []
    while rest:
        first = rest[0]
        middle = (first[1] + first[3]) / 2
        row = [b for b in rest if b[1] < middle]
        out += sorted(row, key=lambda b: b[0])
        rest = [b for b in rest if b[1] >= middle]
    return out


def split_panels(image: np.ndarray) -> list[Bounds]:
    """Panel bounds (x0, top, x1, bottom) in pixels of `image`, in reading order; one panel if no gutter."""
    g = gray(image)
    h, w = g.shape
    min_h = max(MIN_PANEL, int(MIN_FRACTION * h))
    min_w = max(MIN_PANEL, int(MIN_FRACTION * w))
    boxes = _split(g, (0, h, 0, w), min_h, min_w, 0)
    boxes = [b for b in boxes if b[1] - b[0] >= MIN_PANEL // 2 and b[3] - b[2] >= MIN_PANEL // 2]
    if not boxes:
        return [(0.0, 0.0, float(w), float(h))]
    return reading_order([(float(c0), float(r0), float(c1), float(r1)) for r0, r1, c0, c1 in boxes])


def _inside(point: tuple[float, float], b: Bounds, margin: float) -> bool:
    return b[0] - margin <= point[0] <= b[2] + margin and b[1] - margin <= point[1] <= b[3] + margin


def panel_letters(panels: list[Bounds], letters: list[Piece]) -> list[str]:
    """A letter per panel: the printed ones where each panel has exactly one of its own, else a, b, c…"""
    default = [chr(ord("a") + i) for i in range(len(panels))] if len(panels) > 1 else [""]
    if not letters or len(panels) < 2:
        return default
    found: list[str] = []
    for b in panels:
        margin = 0.04 * max(b[2] - b[0], b[3] - b[1])
        own = [
            p.letter
            for p in letters
            if _inside(((p.bounds[0] + p.bounds[2]) / 2, (p.bounds[1] + p.bounds[3]) / 2), b, margin)
        ]
        if len(set(own)) != 1:
            return default
        found.append(own[0])
    return found if len(set(found)) == len(found) else default
