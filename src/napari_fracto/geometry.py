"""Box geometry between the model's 0-1000 grid and image pixels, tiling, and 90-degree rotations.

Qwen3-VL answers boxes on a grid of 0..GRID relative to the image it was sent, so resizing never changes
them; only cropping/tiling does, which `Region` (the part of the original image that was sent) captures.
Boxes are `findings.Box(x1, y1, x2, y2)`, x = column, y = row, with pixel *edges* as coordinates: a box
covering pixel columns 3 and 4 has x1 = 3, x2 = 5.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from napari_fracto.findings import Box, Finding

GRID = 1000


@dataclass(frozen=True)
class Region:
    """The rectangle of the original image (pixels) that a model saw: the whole image or one tile."""

    x0: float
    y0: float
    width: float
    height: float

    @classmethod
    def full(cls, width: float, height: float) -> Region:
        return cls(0, 0, width, height)

    def as_box(self) -> Box:
        return Box(self.x0, self.y0, self.x0 + self.width, self.y0 + self.height)


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def grid_to_pixels(box: Box, region: Region, image_width: float, image_height: float) -> Box | None:
    """A model box (0-1000 grid of `region`) in pixels of the whole image; None if under 1 px wide or high.

    Coordinates are clamped to the grid first (models do answer -5 or 1003), then to the image; reversed
    corners are put in order.
    """
    gx1, gx2 = sorted((_clamp(box.x1, 0, GRID), _clamp(box.x2, 0, GRID)))
    gy1, gy2 = sorted((_clamp(box.y1, 0, GRID), _clamp(box.y2, 0, GRID)))
    # Multiply before dividing: exact for whole numbers, so pixels -> grid -> pixels round-trips.
    x1 = _clamp(region.x0 + gx1 * region.width / GRID, 0, image_width)
    x2 = _clamp(region.x0 + gx2 * region.width / GRID, 0, image_width)
    y1 = _clamp(region.y0 + gy1 * region.height / GRID, 0, image_height)
    y2 = _clamp(region.y0 + gy2 * region.height / GRID, 0, image_height)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return Box(x1, y1, x2, y2)


def pixels_to_grid(box: Box, region: Region) -> Box:
    """A pixel box in `region`'s 0-1000 grid (for training targets and in-context examples).

    Parts outside the region are clamped away; a box wholly outside comes back with zero width or height.
    """
    if region.width <= 0 or region.height <= 0:
        raise ValueError(f"Region {region} has no area; give a width and height of at least 1 pixel.")
    w, h = region.width, region.height
    x1, x2 = sorted(((box.x1 - region.x0) * GRID / w, (box.x2 - region.x0) * GRID / w))
    y1, y2 = sorted(((box.y1 - region.y0) * GRID / h, (box.y2 - region.y0) * GRID / h))
    return Box(_clamp(x1, 0, GRID), _clamp(y1, 0, GRID), _clamp(x2, 0, GRID), _clamp(y2, 0, GRID))


def _axis_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    # Spread the tiles evenly so the last one ends at the edge; the overlap is then at least `overlap`.
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]


def plan_tiles(width: int, height: int, tile: int, overlap: int = 0) -> list[Region]:
    """Tiles of `tile` x `tile` pixels (smaller only where the image is) that cover the whole image.

    Neighbouring tiles overlap by at least `overlap` pixels so features on a tile edge are seen whole
    in one tile; order is row by row, left to right.
    """
    if width < 1 or height < 1:
        raise ValueError(f"Cannot tile an image of {width} x {height} pixels: it has no area.")
    if tile < 1:
        raise ValueError(f"Tile size must be at least 1 pixel, got {tile}.")
    if not 0 <= overlap < tile:
        raise ValueError(
            f"Tile overlap must be between 0 and the tile size minus 1 ({tile - 1}), got {overlap}."
        )
    xs, ys = _axis_starts(width, tile, overlap), _axis_starts(height, tile, overlap)
    tw, th = min(tile, width), min(tile, height)
    return [Region(x, y, tw, th) for y in ys for x in xs]


def rotate_box(box: Box, quarter_turns: int, width: float, height: float) -> Box:
    """Where `box` lands after `numpy.rot90(image, quarter_turns)` of a `height` x `width` image.

    Counter-clockwise like rot90; negative turns go clockwise. Used to augment training data, so it must
    match rot90 exactly (tested against a rotated marked array).
    """
    x1, y1, x2, y2 = box.x1, box.y1, box.x2, box.y2
    w, h = width, height
    for _ in range(quarter_turns % 4):
        # rot90 (k=1): new[row, col] = old[col, w - 1 - row]; new image is w high and h wide.
        x1, y1, x2, y2 = y1, w - x2, y2, w - x1
        w, h = h, w
    return Box(x1, y1, x2, y2)


def box_area(box: Box) -> float:
    return max(box.width, 0.0) * max(box.height, 0.0)


def intersection_area(a: Box, b: Box) -> float:
    w = min(a.x2, b.x2) - max(a.x1, b.x1)
    h = min(a.y2, b.y2) - max(a.y1, b.y1)
    return w * h if w > 0 and h > 0 else 0.0


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when either has no area)."""
    inter = intersection_area(a, b)
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def merge_tile_findings(
    findings: Iterable[Finding], iou_threshold: float = 0.5, containment: float = 0.9
) -> list[Finding]:
    """Drop duplicates that overlapping tiles report for the same feature (pixel boxes, same label).

    Two boxes of a label are the same feature when their IoU reaches `iou_threshold` or when most
    (`containment`) of the smaller lies inside the larger (a feature cut by one tile's edge, seen whole in
    the next). The most confident (then the larger) one is kept. Label-only findings are merged per label,
    and dropped when the label also has a box.
    """
    items = list(findings)
    order = sorted(
        range(len(items)),
        key=lambda i: (
            -(items[i].confidence if items[i].confidence is not None else -1.0),
            -(box_area(items[i].box) if items[i].box else 0.0),
            i,
        ),
    )
    kept: list[int] = []
    boxed_labels = {f.label for f in items if f.box is not None}
    for i in order:
        f = items[i]
        if f.box is None:
            if f.label in boxed_labels or any(items[k].label == f.label for k in kept):
                continue
            kept.append(i)
            continue
        duplicate = False
        for k in kept:
            other = items[k]
            if other.label != f.label or other.box is None:
                continue
            inter = intersection_area(f.box, other.box)
            smaller = min(box_area(f.box), box_area(other.box))
            if iou(f.box, other.box) >= iou_threshold or (smaller > 0 and inter / smaller >= containment):
                duplicate = True
                break
        if not duplicate:
            kept.append(i)
    return [items[i] for i in sorted(kept)]
