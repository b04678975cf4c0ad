"""The instrument's information bar under an SEM image: found, and left out of what the model sees.

Zeiss, FEI/Thermo, Tescan, JEOL and Hitachi burn a bar of text and a ruler (scale bar, kV, WD, Mag, logo)
into the bottom rows of the saved image. Shown to a model it reads as part of the fracture surface. The
bar is found from the pixels: a run of bottom rows that are mostly one flat background value (text on
black or white), under rows of image content; or, for FEI/Thermo, from the file's own
`[PrivateFei] DatabarHeight`. The result is a `request.Crop` of the rows above it, so `prepare` cuts it
off and boxes still come back in pixels of the whole image.

Only integer images are looked at (bars are rendered into 8/16-bit images; a float phase map never
has one), and a bar must be 2-30 % of the height, so an ordinary micrograph is never cut.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_fracto.request import Crop

#: a row is "flat" (bar background) when at least this share of its pixels has one value
FLAT_ROW = 0.5
#: rows above a bar are image content: their median flat share is below this
CONTENT_ROW = 0.3
MIN_FRACTION, MAX_FRACTION = 0.02, 0.30
_SAMPLE_COLUMNS = 2048  # rows are judged on at most this many columns: a 16k-wide image stays fast


def _gray(array: Any) -> np.ndarray | None:
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.dtype.kind not in "ui" or min(arr.shape) < 32:
        return None
    step = max(1, arr.shape[1] // _SAMPLE_COLUMNS)
    return arr[:, ::step]


def _flat_share(row: np.ndarray) -> float:
    _, counts = np.unique(row, return_counts=True)
    return float(counts.max()) / row.size


def bar_rows(array: Any) -> int:
    """How many bottom rows of `array` are an instrument data bar (0: none found)."""
    gray = _gray(array)
    if gray is None:
        return 0
    height = gray.shape[0]
    limit = int(height * MAX_FRACTION)
    if all(_flat_share(gray[-k]) < FLAT_ROW for k in (1, 2, 3)):
        return 0  # the bottom rows are image: there is no bar
    top, gap, flat = height, 0, 0
    for r in range(height - 1, height - 1 - limit - 1, -1):
        if _flat_share(gray[r]) >= FLAT_ROW:
            top, gap, flat = r, 0, flat + 1
        else:
            gap += 1
            if gap > 3:
                break
    rows = height - top
    if rows < max(3, int(height * MIN_FRACTION)) or rows > limit or flat < 0.8 * rows:
        return 0
    above = [_flat_share(gray[r]) for r in range(max(0, top - 12), top)]
    if not above or float(np.median(above)) >= CONTENT_ROW:
        return 0  # the rows above are flat too (a blank or synthetic image): no boundary, no bar
    return rows


def bar_crop(array: Any, known_rows: int | None = None) -> Crop | None:
    """The region without the data bar as a `Crop`, or None when there is none.

    `known_rows` is a bar height the file states (FEI/Thermo `DatabarHeight`); it is used when it fits.
    """
    arr = np.asarray(array) if not hasattr(array, "shape") else array
    height, width = int(arr.shape[0]), int(arr.shape[1])
    rows = known_rows if known_rows and 0 < known_rows <= height * MAX_FRACTION else bar_rows(arr)
    if not rows:
        return None
    return Crop(0, height - int(rows), 0, width)


def shown_shape(array: Any, crop: Crop | None) -> tuple[int, int]:
    """(width, height) of what the model is shown: the image without its bar."""
    height, width = int(np.shape(array)[0]), int(np.shape(array)[1])
    if crop is None:
        return width, height
    return crop.c1 - crop.c0, crop.r1 - crop.r0


__all__ = ["bar_crop", "bar_rows", "shown_shape"]
