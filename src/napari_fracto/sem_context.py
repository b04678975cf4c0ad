"""What an SEM file adds to an analysis request: the instrument context and the data bar left out.

Analyze, the batch CLI and autolabel call `sem_options` with the file an image came from (a layer opened
by napari's own reader included: its `layer.source.path`), so all three fill the same context fields and
cut the same bar. Fields the user filled are kept; the file only fills what is empty.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from napari_fracto.databar import bar_crop, shown_shape
from napari_fracto.findings import AnalysisContext
from napari_fracto.io.sem_metadata import Instrument, fill_context, read_instrument

_PLANE_SUFFIX = re.compile(r"(?: \[[^\]]*\])+$")  # "x.tif [plane 3]", "x.npy [x phase]"


def source_path(source: str) -> Path | None:
    """The file a request's `source` names (plane and layer suffixes removed), if it exists."""
    if not source:
        return None
    for candidate in (source, _PLANE_SUFFIX.sub("", source)):
        path = Path(candidate)
        try:
            if path.is_file():
                return path
        except (OSError, ValueError):
            return None
    return None


@lru_cache(maxsize=256)
def _cached(path: str, stamp: int) -> Instrument | None:
    return read_instrument(path)


def instrument_of(source: str) -> Instrument | None:
    """The instrument metadata of the file behind `source` (read once per file version), or None."""
    path = source_path(source)
    if path is None:
        return None
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    return _cached(str(path), stamp)


def sem_options(
    source: str, array: Any, context: AnalysisContext | None, *, display: Any = None
) -> dict[str, Any]:
    """`context` (filled from the instrument) and `crop` (without the data bar) for `analyze_array`.

    With ptychography `display` options the crop is theirs (the scanned region): no bar is looked for.
    A label mask or binary image raises `micrograph_check.NotAMicrographError` (a ValueError): the CLI
    skips it with that message, Analyze shows it.
    """
    from napari_fracto.micrograph_check import check_micrograph

    if display is None:
        check_micrograph(array)
    inst = instrument_of(source)
    bar = display is None and _is_image(array)
    crop = bar_crop(array, inst.bar_rows if inst else None) if bar else None
    width, height = shown_shape(array, crop)
    return {"context": fill_context(context, inst, width, height), "crop": crop}


def _is_image(array: Any) -> bool:
    shape = getattr(array, "shape", ())
    return len(shape) == 2 or (len(shape) == 3 and shape[-1] in (3, 4))


__all__ = ["instrument_of", "sem_options", "source_path"]
