"""Turn any microscope array into the 8-bit RGB picture a vision-language model is shown.

This is the one place where dtypes are normalised, so the image the model sees does not depend on which
reader, widget or command produced the array. Pure numpy + Pillow (no Qt, no torch).

Large images never become float64 copies: statistics come from a strided sample, the stretch runs in
row bands, and `prepare_model_image` block-averages the array down to about the model's pixel budget
before anything else is done to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from napari_fracto.errors import UserError

if TYPE_CHECKING:
    from PIL.Image import Image

    from napari_fracto.findings import Box

ComplexPart = Literal["phase", "amplitude"]

#: Robust contrast stretch: these percentiles of the finite pixels map to black and white.
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
#: Percentile statistics are taken from a strided sample of at most this many pixels.
SAMPLE_PIXELS = 2_000_000
#: Float work is done in row bands of about this many pixels (16 MB of float32 per channel).
BAND_PIXELS = 4_000_000


class ImageError(UserError, ValueError):
    """The array cannot be shown to the model as it is; the message says what to do."""


def to_model_rgb(array: Any, *, complex_part: ComplexPart = "phase") -> np.ndarray:
    """Normalise one image plane to a (H, W, 3) uint8 RGB array for the model.

    8-bit images (grey or RGB) and bool masks are shown as they are; every other dtype gets a robust
    0.5-99.5 % percentile stretch over its finite pixels (NaN/inf become black). Complex arrays show
    their phase or amplitude. Alpha channels are dropped, singleton axes squeezed. Stacks, empty,
    all-NaN and constant images raise `ImageError` with what to do instead.
    """
    a = as_plane(array)
    if complex_part not in ("phase", "amplitude"):
        raise ImageError(f"complex_part must be 'phase' or 'amplitude', not {complex_part!r}")
    if a.ndim == 3:
        a = a[..., :3]
    height, width = a.shape[:2]
    if a.dtype == np.bool_:
        _check_not_constant(a, complex_part)
        grey = a.astype(np.uint8) * np.uint8(255)
        return np.repeat(grey[..., None], 3, axis=2)
    if a.dtype == np.uint8:
        _check_not_constant(a, complex_part)
        if a.ndim == 3:
            return np.ascontiguousarray(a)
        return np.repeat(a[..., None], 3, axis=2)
    lo, hi = _stretch_limits(a, complex_part)
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, BAND_PIXELS // max(1, width * (a.shape[2] if a.ndim == 3 else 1)))
    gain = np.float32(255.0 / (hi - lo))
    for r0 in range(0, height, rows):
        band = _real_part(a[r0 : r0 + rows], complex_part)
        band -= np.float32(lo)
        band *= gain
        band[~np.isfinite(band)] = 0  # NaN/inf are black, before clipping turns +inf white
        np.clip(band, 0, 255, out=band)
        band = np.rint(band, out=band).astype(np.uint8)
        out[r0 : r0 + rows] = band if band.ndim == 3 else band[..., None]
    return out


def fit_to_token_budget(rgb: np.ndarray | Image, max_image_tokens: int, patch: int = 32) -> Image:
    """Resize an RGB image so each side is a multiple of `patch` and (w/patch)*(h/patch) <= budget.

    Qwen3-VL spends one token per 32x32 pixels (16 px patches merged 2x2); resizing here, keeping the
    aspect ratio, means the backend's own processor does not resize again and cost is predictable.
    Images are never enlarged beyond rounding up to one patch multiple.
    """
    from PIL import Image as PILImage

    if max_image_tokens < 1:
        raise ImageError(f"max_image_tokens must be at least 1, got {max_image_tokens}")
    if patch < 1:
        raise ImageError(f"patch must be at least 1 pixel, got {patch}")
    image = rgb if isinstance(rgb, PILImage.Image) else PILImage.fromarray(_check_rgb(rgb), mode="RGB")
    image = image.convert("RGB")
    width, height = image.size
    cols, rows = token_grid(width, height, max_image_tokens, patch)
    size = (cols * patch, rows * patch)
    if size == image.size:
        return image
    return image.resize(size, PILImage.Resampling.LANCZOS, reducing_gap=3.0)


def token_grid(width: int, height: int, max_image_tokens: int, patch: int = 32) -> tuple[int, int]:
    """The (columns, rows) of patches an image of this size gets within the token budget."""
    if width < 1 or height < 1:
        raise ImageError(f"cannot size an empty image ({width} x {height} px)")
    scale = min(1.0, math.sqrt(max_image_tokens * patch * patch / (width * height)))
    cols = max(1, round(width * scale / patch))
    rows = max(1, round(height * scale / patch))
    while cols * rows > max_image_tokens:
        # Shrink the side that is currently the larger relative to the image's own aspect ratio.
        if cols > 1 and (rows == 1 or cols / width >= rows / height):
            cols -= 1
        else:
            rows -= 1
    return cols, rows


def prepare_model_image(
    array: Any,
    max_image_tokens: int,
    *,
    complex_part: ComplexPart = "phase",
    patch: int = 32,
) -> Image:
    """Array -> PIL RGB image within the token budget, without ever copying a huge array to float.

    Block-averages by an integer factor first (so a 16k x 16k uint16 image is read band by band),
    then normalises with `to_model_rgb`, then resizes exactly with `fit_to_token_budget`. The result
    always covers the whole field of view, so 0-1000 grid boxes map back onto the original pixels.
    """
    if max_image_tokens < 1:
        raise ImageError(f"max_image_tokens must be at least 1, got {max_image_tokens}")
    a = as_plane(array)
    height, width = a.shape[:2]
    cols, rows = token_grid(width, height, max_image_tokens, patch)
    factor = min(width // (cols * patch), height // (rows * patch))
    if factor >= 2:
        a = block_mean(a, factor, complex_part=complex_part)
    return fit_to_token_budget(to_model_rgb(a, complex_part=complex_part), max_image_tokens, patch)


def block_mean(array: Any, factor: int, *, complex_part: ComplexPart = "phase") -> np.ndarray:
    """Average `factor` x `factor` pixel blocks (edge blocks may be smaller), ignoring NaN/inf.

    Works in bands of rows so only a band is ever float. uint8 and bool inputs come back as uint8
    (bool as 0-255 grey) because they are display-ready; complex inputs come back as float32 phase
    (of the averaged field, which does not suffer from averaging wrapped angles) or amplitude.
    """
    a = as_plane(array)
    if factor < 1:
        raise ImageError(f"block factor must be at least 1, got {factor}")
    height, width = a.shape[:2]
    out_h, out_w = -(-height // factor), -(-width // factor)
    channels = a.shape[2:]
    col_starts = np.arange(0, width, factor)
    rows_per_band = factor * max(1, BAND_PIXELS // max(1, width * factor * (channels[0] if channels else 1)))
    is_complex = np.iscomplexobj(a)
    keep_complex = is_complex and complex_part == "phase"
    out = np.empty((out_h, out_w, *channels), dtype=np.complex64 if keep_complex else np.float32)
    for r0 in range(0, height, rows_per_band):
        band = a[r0 : r0 + rows_per_band]
        if keep_complex:
            band = band.astype(np.complex64)
        else:
            band = _real_part(band, complex_part) if is_complex else band.astype(np.float32)
        row_starts = np.arange(0, band.shape[0], factor)
        if a.dtype.kind in "biu":  # no NaN possible: counts are the block areas
            sums = np.add.reduceat(np.add.reduceat(band, col_starts, axis=1), row_starts, axis=0)
            block_rows = np.diff(np.append(row_starts, band.shape[0]))
            block_cols = np.diff(np.append(col_starts, width))
            counts = np.multiply.outer(block_rows, block_cols).astype(np.float32)
            if channels:
                counts = counts[..., None]
        else:
            finite = np.isfinite(band)
            band[~finite] = 0
            sums = np.add.reduceat(np.add.reduceat(band, col_starts, axis=1), row_starts, axis=0)
            counts = np.add.reduceat(
                np.add.reduceat(finite.astype(np.float32), col_starts, axis=1), row_starts, axis=0
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            block = sums / counts
        block[np.broadcast_to(counts == 0, block.shape)] = np.nan
        o0 = r0 // factor
        out[o0 : o0 + block.shape[0]] = block
    if keep_complex:
        return np.angle(out).astype(np.float32)
    if a.dtype == np.bool_:
        return np.rint(np.nan_to_num(out) * 255).astype(np.uint8)
    if a.dtype == np.uint8:
        return np.rint(np.nan_to_num(out)).astype(np.uint8)
    return out


def displayed_plane(layer_data: Any, current_step: Sequence[float], *, rgb: bool = False) -> Any:
    """The 2-D plane (or RGB plane) of an n-D layer that napari is showing.

    `current_step` gives the index along each leading axis; pass
    `layer.world_to_data(viewer.dims.point)` (or `viewer.dims.current_step` for an unscaled layer).
    napari aligns dimensions to the right, so the layer's axes are the last entries of `current_step`.
    Multiscale data (a list of levels) uses the full-resolution level. Returns a view, not a copy.
    """
    data = layer_data[0] if isinstance(layer_data, list | tuple) else layer_data
    plane_ndim = 3 if rgb else 2
    ndim = len(data.shape)
    leading = ndim - plane_ndim
    if leading < 0:
        raise ImageError(f"a layer of shape {tuple(data.shape)} has no 2-D plane to analyse")
    if leading == 0:
        return data
    layer_dims = ndim - (1 if rgb else 0)  # the colour axis is not a viewer dimension
    steps = list(current_step)[-layer_dims:][:leading]
    steps = [0] * (leading - len(steps)) + steps
    index = tuple(
        int(min(max(round(float(s)), 0), n - 1)) for s, n in zip(steps, data.shape[:leading], strict=True)
    )
    return data[index]


def crop(array: Any, region: Box) -> Any:
    """The part of `array` inside `region` (pixel Box, x = column), clipped to the image; a view."""
    height, width = array.shape[:2]
    x1, x2 = min(max(math.floor(region.x1), 0), width), min(max(math.ceil(region.x2), 0), width)
    y1, y2 = min(max(math.floor(region.y1), 0), height), min(max(math.ceil(region.y2), 0), height)
    if x2 <= x1 or y2 <= y1:
        raise ImageError(
            f"the region {region.as_list()} does not overlap the {width} x {height} px image; "
            "draw the region inside the image"
        )
    return array[y1:y2, x1:x2]


# --- helpers -------------------------------------------------------------------------------------


def as_plane(array: Any) -> np.ndarray:
    """Validate and squeeze to (H, W) or (H, W, 3|4) without copying."""
    if array is None:
        raise ImageError("no image: select an image layer first")
    a = np.asarray(array)
    if a.dtype.kind not in "biufc":
        raise ImageError(
            f"cannot show an array of dtype {a.dtype} to the model; it needs numbers (integers, floats, "
            "complex or booleans)"
        )
    if a.size == 0:
        raise ImageError(f"the image is empty (shape {a.shape}); open or select an image that has pixels")
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim < 2:
        raise ImageError(f"expected a 2-D image, got an array of shape {a.shape}")
    if a.ndim == 3 and a.shape[-1] in (3, 4) and a.dtype.kind != "c":
        return a
    if a.ndim >= 3:
        n = int(np.prod(a.shape[:-2]))
        raise ImageError(
            f"this is a stack of {n} images (shape {a.shape}); pick a plane in napari (the widget sends "
            "the displayed plane) or take one plane, e.g. array[0], before analysing"
        )
    return a


def _real_part(a: np.ndarray, complex_part: ComplexPart) -> np.ndarray:
    """A float32 copy of `a`, or its phase/amplitude if complex."""
    if np.iscomplexobj(a):
        part = np.angle(a) if complex_part == "phase" else np.abs(a)
        return part.astype(np.float32, copy=False)
    return a.astype(np.float32)


def _sample(a: np.ndarray) -> np.ndarray:
    """A strided view with at most about SAMPLE_PIXELS pixels, for statistics."""
    height, width = a.shape[:2]
    step = max(1, math.ceil(math.sqrt(height * width / SAMPLE_PIXELS)))
    return a[::step, ::step]


def _finite_values(a: np.ndarray, complex_part: ComplexPart) -> np.ndarray:
    values = _real_part(a, complex_part).ravel()
    return values[np.isfinite(values)]


def _stretch_limits(a: np.ndarray, complex_part: ComplexPart) -> tuple[float, float]:
    """Percentile limits from a sample; falls back to min/max, then to the whole image."""
    values = _finite_values(_sample(a), complex_part)
    if values.size:
        lo, hi = (float(v) for v in np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE]))
        if hi > lo:
            return lo, hi
        lo, hi = float(values.min()), float(values.max())
        if hi > lo:
            return lo, hi
    lo, hi = _full_min_max(a, complex_part)
    if hi > lo:
        return lo, hi
    raise ImageError(_constant_message(lo))


def _full_min_max(a: np.ndarray, complex_part: ComplexPart) -> tuple[float, float]:
    """Min and max of finite pixels over the whole image, band by band; NaN if there are none."""
    lo, hi = math.inf, -math.inf
    rows = max(1, BAND_PIXELS // max(1, a.shape[1]))
    for r0 in range(0, a.shape[0], rows):
        values = _finite_values(a[r0 : r0 + rows], complex_part)
        if values.size:
            lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    if lo == math.inf:
        raise ImageError(
            "every pixel is NaN or infinite, so there is nothing to show the model; check the "
            "reconstruction or pick another plane"
        )
    return lo, hi


def _check_not_constant(a: np.ndarray, complex_part: ComplexPart) -> None:
    sample = _sample(a)
    if sample.min() != sample.max():
        return
    lo, hi = float(a.min()), float(a.max())
    if lo == hi:
        raise ImageError(_constant_message(lo))


def _constant_message(value: float) -> str:
    return (
        f"the image is constant (every pixel is {value:g}), so there is nothing for the model to see; "
        "check that the right layer or plane is selected"
    )


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(
            f"fit_to_token_budget needs a (H, W, 3) uint8 array from to_model_rgb, got shape {rgb.shape} "
            f"dtype {rgb.dtype}"
        )
    if rgb.size == 0:
        raise ImageError("the image is empty; open or select an image that has pixels")
    return np.ascontiguousarray(rgb)


def apply_palette(indices: Any, colormap: Any) -> np.ndarray:
    """Colours of an indexed (palette) image: what the instrument showed, not the raw indices.

    `colormap` is TIFF's (3, N) table (16-bit, or 8-bit values). A grey palette (R = G = B, the Zeiss
    case) gives one grey channel, anything else RGB; 8-bit where the table allows it.
    """
    table = np.asarray(colormap)
    if table.ndim != 2 or table.shape[0] != 3:
        raise ImageError(f"a palette must be a 3 x N colour table, got shape {table.shape}")
    if table.max(initial=0) > 255:
        table = np.round(table / 257.0) if np.all(table % 257 == 0) else table
    dtype = np.uint8 if table.max(initial=0) <= 255 else np.uint16
    table = table.astype(dtype)
    idx = np.clip(np.asarray(indices), 0, table.shape[1] - 1)
    if np.array_equal(table[0], table[1]) and np.array_equal(table[1], table[2]):
        return table[0][idx]
    return np.moveaxis(table[:, idx], 0, -1)
