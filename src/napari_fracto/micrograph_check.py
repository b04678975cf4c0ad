"""Is this a micrograph at all? Label masks and binary images are recognised and not analysed.

Fractography collections keep their segmentation masks (PNG with values 0/1/2) beside the images; a
folder analysed as a whole would send them to the model as if they were fracture surfaces. A micrograph
has hundreds of grey levels (noise alone gives that); a mask or a thresholded image has a handful.
Only integer and boolean images are judged: float images (phase maps) are measurements, never masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_fracto.errors import UserError

#: at most this many distinct values (or colours) and an image is a label mask, not a micrograph
MAX_MASK_VALUES = 8
_SAMPLE = 1 << 20  # pixels looked at: a 16k x 16k image is judged on a regular 1-megapixel sample


class NotAMicrographError(UserError, ValueError):
    """The image is a label mask or a binary image; the message says what it holds and what to do."""


def _sample(arr: np.ndarray) -> np.ndarray:
    pixels = arr.shape[0] * arr.shape[1]
    step = max(1, int(np.sqrt(pixels / _SAMPLE)))
    return arr[::step, ::step]


def non_micrograph_reason(array: Any) -> str | None:
    """Why `array` is not a micrograph ("a label mask with values 0, 1, 2"), or None when it is one."""
    arr = np.asarray(array)
    if arr.dtype.kind not in "uib" or arr.ndim not in (2, 3) or min(arr.shape[:2]) < 16:
        return None
    sample = _sample(arr)
    if arr.ndim == 3:
        if arr.shape[-1] not in (3, 4):
            return None
        rgb = sample[..., :3].astype(np.uint64)  # one number a colour: unique of rows is slow
        codes = np.unique((rgb[..., 0] << 32) | (rgb[..., 1] << 16) | rgb[..., 2])
        values = np.stack([codes >> 32, (codes >> 16) & 0xFFFF, codes & 0xFFFF], axis=1)
        what = "colours"
    else:
        values = np.unique(sample)
        what = "values"
    count = len(values)
    if count < 2 or count > MAX_MASK_VALUES:
        return None  # one value: the constant-image message of `imaging` says it better
    shown = ", ".join(str(v.tolist()) for v in values[:MAX_MASK_VALUES])
    kind = "a binary (two-level) image" if count == 2 else "a label mask"
    return f"{kind} with only {count} distinct {what} ({shown})"


def check_micrograph(array: Any, source: str = "") -> None:
    """Raise `NotAMicrographError` for a label mask or binary image (the CLI skips it, Analyze says so)."""
    reason = non_micrograph_reason(array)
    if reason is not None:
        name = f"{source}: " if source else ""
        raise NotAMicrographError(
            f"{name}not analysed: this looks like {reason}, not a micrograph (a segmentation mask or a "
            "thresholded image). Analyse the micrograph it belongs to instead."
        )


__all__ = ["MAX_MASK_VALUES", "NotAMicrographError", "check_micrograph", "non_micrograph_reason"]
