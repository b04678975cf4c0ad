"""Reconstructions in CXI files, as Ptychodus and other programs write them.

CXI numbers its images (`/entry_1/image_1`, `image_2`, ...) without saying which is which; the order
differs between programs (Ptychodus writes the probe as `image_1` and the object as `image_2`). So each
image is recognised by what it says about itself: its `data` `axes` attribute (`layer:y:x` for an
object, `coherent:incoherent:y:x` for a probe), its `data_type`, its title, or being the dataset that
`/entry_1/instrument_1/source_1/illumination` links to (the probe). Geometry comes from Ptychodus'
extension group `/entry_1/ptychodus/` (object and probe pixel sizes, object centre, position indexes,
losses, layer spacing) when present, else from each image's `image_size` (metres across the array),
else from `x_pixel_size`/`y_pixel_size` or the detector geometry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_PLANCK_EV_S = 4.135667696e-15
_LIGHT_M_S = 299_792_458.0
_ELECTRON_VOLT_J = 1.602176634e-19
_EXT = "entry_1/ptychodus"
_ILLUMINATION = "entry_1/instrument_1/source_1/illumination"
_PROBE_WORDS = ("probe", "illumination", "coherent", "incoherent", "mode")
_OBJECT_WORDS = ("object", "layer", "electron density", "transmission", "exit", "sample")


def is_cxi_reconstruction(f: Any) -> bool:
    """True when the file has at least one reconstructed image (`/entry_1/image_N/data`)."""
    return bool(_images(f))


def read_cxi_file(f: Any, path: Path) -> Any:
    """The `PtychoProduct` of an open CXI file (h5py.File)."""
    from napari_fracto.io.ptycho import PtychoFormatError, PtychoProduct

    images = _images(f)
    probes = [key for key in images if _is_probe(f, key)]
    objects = [key for key in images if key not in probes]
    if not objects:
        found = ", ".join(f"{k} ({_describe(f, k)})" for k in images) or "none"
        raise PtychoFormatError(
            f"{path.name}: no CXI image is an object (images: {found}); an object image has "
            "`axes` 'layer:y:x' or a data_type such as 'electron density'"
        )
    # prefer an image that says it is an object; else the first one that is not a probe
    object_key = next((k for k in objects if _says(f, k, _OBJECT_WORDS)), objects[0])
    obj = np.asarray(f[f"{object_key}/data"][()])
    probe = None
    if probes:
        probe = np.asarray(f[f"{probes[0]}/data"][()])
    elif _ILLUMINATION in f:
        probe = np.asarray(f[_ILLUMINATION][()])
    if probe is not None and probe.ndim == 4:  # (coherent/OPR modes, incoherent modes, y, x): the main one
        probe = probe[0]
    pixel = _pixel_size(f, object_key, obj.shape, "object")
    probe_pixel = _pixel_size(f, probes[0], probe.shape, "probe") if probes and probe is not None else None
    positions, indexes = _positions(f)
    centre = _ext_pair(f, "object_center_x_m", "object_center_y_m")
    if centre is None:  # CXI fixes no origin: like Ptychodus, centre the object on the scan
        centre = (0.0, 0.0)
        if positions is not None and len(positions):
            lo, hi = positions.min(0), positions.max(0)
            centre = (float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2))
    metadata: dict[str, Any] = {"source_path": str(path), "cxi_object": object_key}
    if probes:
        metadata["cxi_probe"] = probes[0]
    if "entry_1/instrument_1/source_1/energy" in f:
        metadata["photon_energy_eV"] = float(f["entry_1/instrument_1/source_1/energy"][()]) / _ELECTRON_VOLT_J
    epochs, losses = _dataset(f, f"{_EXT}/loss_epochs"), _dataset(f, f"{_EXT}/loss_values")
    spacing = _dataset(f, f"{_EXT}/object_layer_spacing_m")
    return PtychoProduct(
        object=obj,
        pixel_size_m=pixel,
        probe=probe,
        probe_pixel_size_m=probe_pixel,
        positions=positions if pixel is not None else None,  # metres need a pixel size to land anywhere
        position_units="m",
        position_indexes=indexes if pixel is not None else None,
        object_center_m=centre,
        layer_spacing_m=np.atleast_1d(spacing).astype(np.float64) if spacing is not None else np.zeros(0),
        loss_epochs=np.atleast_1d(epochs).astype(np.int64) if epochs is not None else np.zeros(0, np.int64),
        loss_values=np.atleast_1d(losses).astype(np.float64) if losses is not None else np.zeros(0),
        source_format="cxi",
        name=_text(f, "entry_1/title") or _text(f, "entry_1/sample_1/name") or path.stem,
        metadata=metadata,
    )


def _images(f: Any) -> list[str]:
    entry = f.get("entry_1")
    if entry is None or not hasattr(entry, "keys"):
        return []
    keys = [k for k in entry if k.startswith("image_") and k[6:].isdigit()]
    keys = [f"entry_1/{k}" for k in sorted(keys, key=lambda k: int(k[6:]))]
    return [k for k in keys if hasattr(f.get(f"{k}/data"), "shape")]


def _text(f: Any, key: str) -> str:
    if key not in f or not hasattr(f[key], "shape"):
        return ""
    value = f[key][()]
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _describe(f: Any, key: str) -> str:
    """What an image says about itself: axes, data_type and title, lower case."""
    axes = f[f"{key}/data"].attrs.get("axes", "")
    if isinstance(axes, bytes):
        axes = axes.decode(errors="replace")
    if isinstance(axes, np.ndarray):
        axes = ":".join(a.decode() if isinstance(a, bytes) else str(a) for a in axes.ravel())
    parts = [str(axes), _text(f, f"{key}/data_type"), _text(f, f"{key}/title")]
    return "; ".join(p for p in parts if p).lower()


def _says(f: Any, key: str, words: tuple[str, ...]) -> bool:
    said = _describe(f, key)
    return any(word in said for word in words)


def _is_probe(f: Any, key: str) -> bool:
    if _ILLUMINATION in f:
        try:
            if f[_ILLUMINATION].id == f[f"{key}/data"].id:  # the soft link Ptychodus writes
                return True
        except (KeyError, TypeError, ValueError):
            pass
    said = _describe(f, key)
    if "layer" in said or any(word in said for word in ("object", "electron density", "transmission")):
        return False
    return any(word in said for word in _PROBE_WORDS)


def _dataset(f: Any, key: str) -> Any:
    return f[key][()] if key in f and hasattr(f[key], "shape") else None


def _ext_pair(f: Any, x_key: str, y_key: str) -> tuple[float, float] | None:
    x, y = _dataset(f, f"{_EXT}/{x_key}"), _dataset(f, f"{_EXT}/{y_key}")
    if x is None or y is None:
        return None
    try:
        return float(np.asarray(x).ravel()[0]), float(np.asarray(y).ravel()[0])
    except (IndexError, TypeError, ValueError):
        return None


def _pixel_size(f: Any, key: str, shape: tuple[int, ...], what: str) -> tuple[float, float] | None:
    """(width, height) of one pixel in metres: Ptychodus' extension, image_size, x/y_pixel_size, geometry."""
    pair = _ext_pair(f, f"{what}_pixel_width_m", f"{what}_pixel_height_m")
    if pair is not None and pair[0] > 0 and pair[1] > 0:
        return pair
    size = _dataset(f, f"{key}/image_size")
    if size is not None and len(shape) >= 2:
        size = np.asarray(size, dtype=np.float64).ravel()
        if size.size >= 2 and size[0] > 0 and size[1] > 0:
            return float(size[0] / shape[-1]), float(size[1] / shape[-2])
    x, y = _dataset(f, f"{key}/x_pixel_size"), _dataset(f, f"{key}/y_pixel_size")
    if x is not None and y is not None:
        return float(x), float(y)
    return _detector_pixel_size(f) if what == "object" else None


def _detector_pixel_size(f: Any) -> tuple[float, float] | None:
    """lambda * z / (N * p) from the detector geometry and the diffraction patterns' shape."""
    det, src = "entry_1/instrument_1/detector_1", "entry_1/instrument_1/source_1/energy"
    needed = [f"{det}/distance", f"{det}/x_pixel_size", f"{det}/y_pixel_size", src, "entry_1/data_1/data"]
    if not all(k in f for k in needed):
        return None
    wavelength = _PLANCK_EV_S * _LIGHT_M_S / (float(f[src][()]) / _ELECTRON_VOLT_J)
    distance = float(f[f"{det}/distance"][()])
    ny, nx = f["entry_1/data_1/data"].shape[-2:]
    return (
        wavelength * distance / (nx * float(f[f"{det}/x_pixel_size"][()])),
        wavelength * distance / (ny * float(f[f"{det}/y_pixel_size"][()])),
    )


def _positions(f: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(x, y) metres of each scan point and Ptychodus' position indexes when the file has them."""
    for key in ("entry_1/sample_1/geometry_1/translation", "entry_1/data_1/translation"):
        if key in f:
            translation = np.asarray(f[key][()], dtype=np.float64)
            if translation.ndim != 2 or translation.shape[1] < 2:
                return None, None
            indexes = _dataset(f, f"{_EXT}/probe_position_indexes")
            if indexes is not None and len(np.atleast_1d(indexes)) != len(translation):
                indexes = None
            return translation[:, :2], None if indexes is None else np.asarray(indexes, dtype=np.int64)
    return None, None
