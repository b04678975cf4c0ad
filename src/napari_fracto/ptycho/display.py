"""What a ptychography reconstruction looks like before anyone (scientist or model) judges it.

A raw object buffer carries a phase ramp (the object-probe ambiguity), wrapped phase, and unlit edges that
show only the initial guess. Each of these changes what a person sees and what the model is sent, so the
choices are explicit (`DisplayOptions`) and recorded (`DisplayOptions.describe`, `DisplayedObject.notes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Region = tuple[slice, slice]


def _as_2d(array: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise ValueError(f"{what} must be a 2-D image of at least 2x2 pixels, got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or infinite values; fill or crop them before display.")
    return arr


def _mask_array(mask: np.ndarray | Region | None, shape: tuple[int, int]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    if isinstance(mask, tuple) and all(isinstance(s, slice) for s in mask):
        out = np.zeros(shape, dtype=bool)
        out[mask] = True
        return out
    arr = np.asarray(mask, dtype=bool)
    if arr.shape != shape:
        raise ValueError(f"The mask has shape {arr.shape} but the image has shape {shape}.")
    if not arr.any():
        raise ValueError("The mask selects no pixels; pass None to use the whole image.")
    return arr


def estimate_phase_ramp(obj: np.ndarray, mask: np.ndarray | Region | None = None) -> tuple[float, float]:
    """Linear phase gradient (rad/pixel along rows, along columns) within `mask`.

    The least-squares plane fit is done on the wrap-free phase gradient (the amplitude-weighted mean of
    neighbour phase differences), so wrapped phase needs no unwrapping first. A real input is taken as phase.
    """
    arr = _as_2d(obj, "The object")
    field_ = arr.astype(np.complex128) if np.iscomplexobj(arr) else np.exp(1j * arr.astype(np.float64))
    m = _mask_array(mask, arr.shape)
    dy = field_[1:, :] * np.conj(field_[:-1, :])
    dx = field_[:, 1:] * np.conj(field_[:, :-1])
    gy = float(np.angle(dy[m[1:, :] & m[:-1, :]].sum()))
    gx = float(np.angle(dx[m[:, 1:] & m[:, :-1]].sum()))
    return gy, gx


def remove_phase_ramp(obj_complex: np.ndarray, mask: np.ndarray | Region | None = None) -> np.ndarray:
    """Subtract the best-fit phase plane (ramp and offset) measured within `mask` (e.g. the scanned region).

    Complex in, complex out (amplitude untouched); a real array is taken as phase and returned as phase.
    """
    arr = _as_2d(obj_complex, "The object")
    m = _mask_array(mask, arr.shape)
    gy, gx = estimate_phase_ramp(arr, m)
    yy, xx = np.indices(arr.shape, dtype=np.float64)
    ramp = gy * yy + gx * xx
    if np.iscomplexobj(arr):
        flat = arr * np.exp(-1j * ramp)
        offset = np.angle(flat[m].sum())
        return (flat * np.exp(-1j * offset)).astype(arr.dtype, copy=False)
    flat = arr.astype(np.float64) - ramp
    offset = np.angle(np.exp(1j * flat[m]).sum())
    return (flat - offset).astype(arr.dtype if arr.dtype.kind == "f" else np.float64, copy=False)


def unwrap_phase(phase: np.ndarray) -> np.ndarray:
    """Phase without 2-pi jumps (scikit-image's unwrapping): thick objects read smoothly."""
    from skimage.restoration import unwrap_phase as _unwrap

    arr = _as_2d(phase, "The phase")
    if np.iscomplexobj(arr):
        raise ValueError("unwrap_phase takes a real phase image; pass np.angle(obj) for a complex object.")
    wrapped = np.angle(np.exp(1j * arr.astype(np.float64)))
    return _unwrap(wrapped).astype(np.float32)


def _positions_array(positions_px: np.ndarray) -> np.ndarray:
    pos = np.asarray(positions_px, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or len(pos) == 0:
        raise ValueError(
            "Scan positions must be an (N, 2) array of (row, column) probe centres in pixels, "
            f"got {pos.shape}."
        )
    if not np.isfinite(pos).all():
        raise ValueError("Scan positions contain NaN or infinite values.")
    return pos


def scanned_region(
    positions_px: np.ndarray,
    probe_shape: tuple[int, ...],
    object_shape: tuple[int, ...],
    margin_px: float | None = None,
) -> Region:
    """Rows and columns of the object the scan illuminated well: probe centres +- `margin_px`.

    `positions_px` are (row, column) probe centres in pixels of the object array. The default margin is a
    quarter of the probe, where the illumination of a typical focused or defocused probe is still strong;
    beyond it the buffer mostly holds the initial guess.
    """
    pos = _positions_array(positions_px)
    ph, pw = (int(s) for s in tuple(probe_shape)[-2:])
    oh, ow = (int(s) for s in tuple(object_shape)[-2:])
    my = ph / 4 if margin_px is None else float(margin_px)
    mx = pw / 4 if margin_px is None else float(margin_px)
    y0 = max(int(np.floor(pos[:, 0].min() - my)), 0)
    y1 = min(int(np.ceil(pos[:, 0].max() + my)) + 1, oh)
    x0 = max(int(np.floor(pos[:, 1].min() - mx)), 0)
    x1 = min(int(np.ceil(pos[:, 1].max() + mx)) + 1, ow)
    if y1 - y0 < 2 or x1 - x0 < 2:
        raise ValueError(
            f"The scan positions (rows {pos[:, 0].min():.0f}-{pos[:, 0].max():.0f}, columns "
            f"{pos[:, 1].min():.0f}-{pos[:, 1].max():.0f}) do not fall inside the {oh}x{ow} object: "
            "are they in metres, or relative to the object centre rather than its corner?"
        )
    return slice(y0, y1), slice(x0, x1)


def crop_to_scanned(
    image: np.ndarray,
    positions_px: np.ndarray,
    probe_shape: tuple[int, ...],
    margin_px: float | None = None,
) -> np.ndarray:
    """`image` (..., H, W) cut to `scanned_region`: unlit edges neither draw the eye nor cost tokens."""
    arr = np.asarray(image)
    if arr.ndim < 2:
        raise ValueError(f"crop_to_scanned needs an image of 2 or more dimensions, got shape {arr.shape}.")
    rows, cols = scanned_region(positions_px, probe_shape, arr.shape, margin_px)
    return arr[..., rows, cols]


@dataclass
class DisplayedObject:
    """Phase and amplitude as shown, the crop applied (in the input's pixels) and what was done, in words."""

    phase: np.ndarray
    amplitude: np.ndarray
    region: Region | None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DisplayOptions:
    """How a reconstruction is prepared for display and for the model; `describe()` goes in the record."""

    ramp: bool = True
    unwrap: bool = False
    crop: bool = True

    def describe(self) -> str:
        done = []
        if self.crop:
            done.append("cropped to the scanned region")
        if self.ramp:
            done.append("phase ramp removed (plane fit over the scanned region)")
        if self.unwrap:
            done.append("phase unwrapped")
        return "; ".join(done) if done else "as reconstructed (no display processing)"

    def apply(
        self,
        obj: np.ndarray,
        positions_px: np.ndarray | None = None,
        probe_shape: tuple[int, ...] | None = None,
        region: Region | None = None,
    ) -> DisplayedObject:
        """Apply the options to a complex object (a real array is taken as phase, amplitude 1).

        Cropping needs the scanned `region` (as a stored request has it) or scan positions and the probe
        shape to find it; without them the object is shown whole and a note says so, rather than failing.
        """
        arr = _as_2d(obj, "The object")
        field_ = arr.astype(np.complex64) if np.iscomplexobj(arr) else np.exp(1j * arr).astype(np.complex64)
        notes: list[str] = []
        if region is not None:
            rows, cols = region
            if not (
                0 <= rows.start < rows.stop <= arr.shape[0] and 0 <= cols.start < cols.stop <= arr.shape[1]
            ):
                raise ValueError(
                    f"The scanned region rows {rows.start}:{rows.stop}, columns {cols.start}:{cols.stop} "
                    f"does not fit an image of shape {arr.shape}; analyse the image again to measure it."
                )
        elif positions_px is not None and probe_shape is not None:
            region = scanned_region(positions_px, probe_shape, arr.shape)
        if self.crop:
            if region is None:
                notes.append("not cropped: the file has no scan positions or probe")
            else:
                field_ = field_[region]
                rows, cols = region
                notes.append(f"cropped to rows {rows.start}:{rows.stop}, columns {cols.start}:{cols.stop}")
        if self.ramp:
            mask = None if self.crop or region is None else region
            gy, gx = estimate_phase_ramp(field_, mask)
            field_ = remove_phase_ramp(field_, mask)
            notes.append(f"phase ramp removed ({gy:.4f} rad/px along rows, {gx:.4f} rad/px along columns)")
        phase = np.angle(field_).astype(np.float32)
        if self.unwrap:
            phase = unwrap_phase(phase)
            notes.append("phase unwrapped")
        return DisplayedObject(
            phase=phase, amplitude=np.abs(field_).astype(np.float32), region=region, notes=notes
        )
