"""Text of a page as lines and blocks (paragraphs, captions), from positioned runs of text, in one or two
columns. Coordinates: points from the page's top-left corner (x0, top, x1, bottom)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from napari_fracto.papers.model import Bounds


@dataclass
class Line:
    bounds: Bounds
    text: str


def _column(b: Bounds, width: float) -> str:
    """'L' or 'R' for a line in one half of a two-column page, 'S' for one spanning the middle."""
    middle = width / 2
    if b[2] <= middle + 6:
        return "L"
    if b[0] >= middle - 6:
        return "R"
    return "S"


def lines_of(runs: list[Line]) -> list[Line]:
    """Runs whose middles fall within one another's height, joined left to right into lines (ligatures
    and dashes come as runs of their own, with their own heights)."""
    groups: list[list[Line]] = []
    for run in sorted(runs, key=lambda r: (r.bounds[1] + r.bounds[3]) / 2):
        middle = (run.bounds[1] + run.bounds[3]) / 2
        if groups:
            top = min(r.bounds[1] for r in groups[-1])
            bottom = max(r.bounds[3] for r in groups[-1])
            centre = (top + bottom) / 2
            if top <= middle <= bottom or run.bounds[1] <= centre <= run.bounds[3]:
                groups[-1].append(run)
                continue
        groups.append([run])
    out: list[Line] = []
    for group in groups:
        for run in sorted(group, key=lambda r: r.bounds[0]):
            if out and out[-1] is not None and _same_line(out[-1], run):
                last = out[-1].bounds
                height = max(last[3] - last[1], run.bounds[3] - run.bounds[1], 1.0)
                space = "" if run.bounds[0] - last[2] < 0.25 * height else " "
                bounds = (last[0], min(last[1], run.bounds[1]), run.bounds[2], max(last[3], run.bounds[3]))
                out[-1] = Line(bounds, out[-1].text + space + run.text)
            else:
                out.append(run)
        out.append(None)  # type: ignore[arg-type]  # a line ends with its group
    return [line for line in out if line is not None]


def _same_line(line: Line, run: Line) -> bool:
    """Close enough on the same line to be one piece of text (not the next column, not a panel letter)."""
    height = max(line.bounds[3] - line.bounds[1], 1.0)
    return -2 <= run.bounds[0] - line.bounds[2] < 1.5 * height


def blocks_of(lines: list[Line], width: float) -> list[Line]:
    """Lines of one column that follow each other closely, joined into blocks (paragraphs, captions).

    A block ends at a wider gap than the line spacing, at a change of column, or where a new caption
    starts ("Fig. 2." under the end of a paragraph).
    """
    from napari_fracto.papers.captions import CAPTION_START, TABLE_START

    ordered = sorted(
        lines, key=lambda ln: ({"S": 0, "L": 0, "R": 1}[_column(ln.bounds, width)], ln.bounds[1])
    )
    blocks: list[Line] = []
    previous: Line | None = None
    for line in ordered:
        starts = CAPTION_START.match(line.text) or TABLE_START.match(line.text)
        if previous is not None and blocks and not starts:
            b, p = blocks[-1].bounds, previous.bounds
            height = max(p[3] - p[1], 1.0)
            same_column = {_column(p, width), _column(line.bounds, width)} != {"L", "R"}
            if same_column and 0 <= line.bounds[1] - p[3] < 0.8 * height and line.bounds[0] < b[2]:
                text = _join(blocks[-1].text, line.text)
                bounds = (min(b[0], line.bounds[0]), b[1], max(b[2], line.bounds[2]), line.bounds[3])
                blocks[-1] = Line(bounds, text)
                previous = line
                continue
        blocks.append(Line(line.bounds, line.text.strip()))
        previous = line
    return blocks


def _join(text: str, more: str) -> str:
    """Join two lines of a paragraph; a line ending in a hyphen runs on ("near-" "surface": near-surface)."""
    more = more.strip()
    if re.search(r"[a-z]-$", text) and more[:1].islower():
        return text + more
    return f"{text} {more}"
