"""What Analyze reads from napari's layers: the plane on screen, and a ptychography product's siblings.

No Qt: napari's layer and viewer models only (napari itself imported where needed), so the logic is
testable without a widget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari_fracto.ptycho.prepare import ScanGeometry

# metadata key of a derived display layer: the name of the layer it shows (never analysed itself)
DISPLAY_OF = "napari_fracto_display_of"


@dataclass
class Plane:
    """The 2-D image (RGB allowed) the user is looking at, and where it sits in its layer."""

    array: Any
    leading: tuple[int, ...]
    source: str


def displayed_plane(layer: Any, viewer: Any) -> Plane:
    """The plane of `layer` shown in the viewer: the whole image in 2-D, the current slice of a stack.

    Raises ValueError (shown to the user) when no single 2-D plane is displayed.
    """
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    ndim = int(layer.ndim)
    base = str(getattr(layer.source, "path", None) or layer.name)
    if ndim == 2:
        return Plane(data, (), base)
    if viewer.dims.ndisplay != 2:
        raise ValueError(
            f"'{layer.name}' is shown in 3-D. Analyze works on one 2-D plane: switch the viewer to 2-D "
            "(the 2D/3D button at the bottom left) and pick a plane with the sliders."
        )
    world_ndim = viewer.dims.ndim
    if sorted(viewer.dims.displayed) != [world_ndim - 2, world_ndim - 1]:
        raise ValueError(
            "Analyze works on the image's last two axes (rows and columns); the viewer shows other axes. "
            "Use 'Roll dimensions' or reset the axis order, then analyse again."
        )
    from napari_fracto.imaging import displayed_plane as plane_of

    coords = layer.world_to_data(viewer.dims.point)
    shape = layer.data[0].shape if getattr(layer, "multiscale", False) else layer.data.shape
    # the same rounding and clipping as imaging.displayed_plane, to name the plane and place the boxes
    leading = tuple(int(min(max(round(float(c)), 0), shape[i] - 1)) for i, c in enumerate(coords[: ndim - 2]))
    label = ", ".join(str(i) for i in leading)
    return Plane(plane_of(data, coords[: ndim - 2], rgb=bool(layer.rgb)), leading, f"{base} [plane {label}]")


def display_layer_name(image_name: str) -> str:
    """The derived layer that shows an image with the ptychography display options applied."""
    return f"{image_name} (display)"


@dataclass
class PtychoParts:
    """The layers one ptychography product opened as: the phase, its amplitude, and the scan geometry."""

    phase: Any
    amplitude: Any
    geometry: ScanGeometry

    def complex_object(self) -> np.ndarray:
        phase = np.asarray(self.phase.data, dtype=np.float64)
        if self.amplitude is None:
            return phase
        return np.asarray(self.amplitude.data) * np.exp(1j * phase)


def ptycho_parts(viewer: Any, layer: Any) -> PtychoParts | None:
    """The phase layer's siblings as the reader names them ('<name> amplitude', '... scan positions',
    '... probe amplitude'), or None when `layer` is not the phase of a 2-D reconstruction."""
    from napari.layers import Image, Points

    from napari_fracto.ptycho.prepare import ScanGeometry

    meta = getattr(layer, "metadata", {}) or {}
    if not isinstance(layer, Image) or meta.get("complex_part") != "phase" or layer.ndim != 2 or layer.rgb:
        return None
    base = layer.name.removesuffix(" phase")
    layers = viewer.layers

    def sibling(suffix: str, kind: type) -> Any:
        name = f"{base} {suffix}"
        return layers[name] if name in layers and isinstance(layers[name], kind) else None

    amplitude = sibling("amplitude", Image)
    if amplitude is not None and amplitude.data.shape != layer.data.shape:
        amplitude = None
    points = sibling("scan positions", Points)
    probe = sibling("probe amplitude", Image)
    world = None
    if points is not None and len(points.data):
        world = np.asarray(points.data, dtype=float) * np.asarray(points.scale) + np.asarray(points.translate)
    extent = None
    if probe is not None:
        extent = tuple(
            float(n) * float(s) for n, s in zip(probe.data.shape[-2:], probe.scale[-2:], strict=True)
        )
    step = meta.get("scan_step_px")
    geometry = ScanGeometry.from_world_points(
        world, layer.scale, layer.translate, extent, float(step) if isinstance(step, int | float) else None
    )
    return PtychoParts(layer, amplitude, geometry)


def canvas_text_overlay(viewer: Any) -> Any:
    """The canvas text overlay (`viewer.canvas.overlays.text` since napari 0.9; `text_overlay` before)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    if overlays is not None and "text" in overlays:
        return overlays["text"]
    return viewer.text_overlay
