"""Ptychography reconstructions in the field's own formats, and their napari layers.

Formats: Ptychodus product HDF5 (`object`, `probe`, `probe_position_*_m`, losses), CXI (object and
probe images told apart by their own attributes, Ptychodus' `/entry_1/ptychodus` extension read; see
`ptycho_cxi`), PtychoPINN-style .npz (`objectGuess`, `probeGuess`,
`xcoords`/`ycoords` in object pixels) and plain complex .npy. Everything lands in one `PtychoProduct`.

Coordinates. Ptychodus puts the object centre at (`center_x_m`, `center_y_m`) and maps a scan
position x (metres) to the object pixel coordinate `(x - center_x) / pixel_width + W / 2`, counted
from the left edge of the array. In napari a pixel's centre sits at its index, so the image layer is
translated by `center + pixel * (0.5 - W / 2)` and the scan points are drawn at their metres:
points and object then line up (checked on the Pty-chi files: the reconstructed region is exactly
the scan's extent plus half a probe). Pixel-unit positions (.npz) are probe centres in object pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from napari_fracto.errors import UserError

LayerDataTuple = tuple[Any, dict[str, Any], str]
PositionUnits = Literal["m", "px"]

_H5_SUFFIXES = {".h5", ".hdf5", ".cxi"}


class PtychoFormatError(UserError, ValueError):
    """The file is not a ptychography product this module understands; the message says why."""


@dataclass
class PtychoProduct:
    """One reconstruction: complex object, probe, scan positions and how it converged.

    `positions` is (N, 2) as (x, y); `position_units` says whether they are metres relative to the
    Ptychodus object centre ("m") or probe centres in object pixels ("px").
    """

    object: np.ndarray
    pixel_size_m: tuple[float, float] | None = None
    probe: np.ndarray | None = None
    probe_pixel_size_m: tuple[float, float] | None = None
    positions: np.ndarray | None = None
    position_units: PositionUnits = "m"
    position_indexes: np.ndarray | None = None
    object_center_m: tuple[float, float] = (0.0, 0.0)
    layer_spacing_m: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loss_epochs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    loss_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    source_format: str = ""
    name: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        obj = np.asarray(self.object)
        if obj.ndim == 2:
            obj = obj[None]
        if obj.ndim != 3 or obj.size == 0:
            raise PtychoFormatError(
                f"the object must be a 2-D image or (layers, H, W), got shape {obj.shape}"
            )
        self.object = obj
        if self.probe is not None:
            probe = np.asarray(self.probe)
            while probe.ndim > 3 and probe.shape[0] == 1:  # (OPR modes, modes, h, w) with one OPR mode
                probe = probe[0]
            self.probe = probe[None] if probe.ndim == 2 else probe
        if self.positions is not None:
            pos = np.asarray(self.positions, dtype=np.float64)
            if pos.ndim != 2 or pos.shape[1] != 2:
                raise PtychoFormatError(f"scan positions must be (N, 2) as (x, y), got shape {pos.shape}")
            self.positions = pos

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of one object layer."""
        return self.object.shape[-2], self.object.shape[-1]

    def positions_in_pixels(self) -> np.ndarray | None:
        """Scan positions as (x, y) object pixel coordinates (napari convention: pixel centre = index)."""
        if self.positions is None:
            return None
        if self.position_units == "px":
            return self.positions.copy()
        if self.pixel_size_m is None:
            raise PtychoFormatError("positions in metres need the object pixel size to map onto pixels")
        height, width = self.shape
        (dx, dy), (cx, cy) = self.pixel_size_m, self.object_center_m
        x = (self.positions[:, 0] - cx) / dx + width / 2 - 0.5
        y = (self.positions[:, 1] - cy) / dy + height / 2 - 0.5
        return np.column_stack([x, y])

    def positions_in_metres(self) -> np.ndarray | None:
        """Scan positions as (x, y) metres in Ptychodus' frame (object centre at `object_center_m`)."""
        if self.positions is None or self.position_units == "m":
            return None if self.positions is None else self.positions.copy()
        if self.pixel_size_m is None:
            raise PtychoFormatError(
                "these scan positions are in pixels and the file gives no pixel size; set "
                "product.pixel_size_m = (width_m, height_m) first"
            )
        height, width = self.shape
        (dx, dy), (cx, cy) = self.pixel_size_m, self.object_center_m
        x = cx + dx * (self.positions[:, 0] + 0.5 - width / 2)
        y = cy + dy * (self.positions[:, 1] + 0.5 - height / 2)
        return np.column_stack([x, y])


# --- detection and dispatch ----------------------------------------------------------------------


def is_ptycho_file(path: str | Path) -> bool:
    """True when `path` looks like a ptychography product (cheap: reads names, not data)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in _H5_SUFFIXES:
            import h5py

            with h5py.File(path, "r") as f:
                return _is_ptychodus(f) or _is_cxi_reconstruction(f)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return "objectGuess" in npz.files
    except (OSError, ValueError):
        return False
    return False


def read_product(path: str | Path) -> PtychoProduct:
    """Read any supported ptychography file into a `PtychoProduct`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _H5_SUFFIXES:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if _is_ptychodus(f):
                    return _read_ptychodus(f, path)
                if _is_cxi_reconstruction(f):
                    return _read_cxi(f, path)
        except OSError as exc:
            raise PtychoFormatError(f"{path.name} is not a readable HDF5 file ({exc})") from exc
        raise PtychoFormatError(
            f"{path.name} has neither a Ptychodus product layout (datasets 'object' and 'probe') nor a "
            "CXI reconstruction (/entry_1/image_N/data)"
        )
    if suffix == ".npz":
        return read_npz(path)
    if suffix == ".npy":
        return read_npy(path)
    raise PtychoFormatError(f"{path.name}: ptychography products are .h5/.hdf5/.cxi/.npz/.npy files")


def read_ptychodus_product(path: str | Path) -> PtychoProduct:
    """Read a Ptychodus product HDF5 file (the layout Ptychodus 1.x writes and reads)."""
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as f:
        if not _is_ptychodus(f):
            raise PtychoFormatError(f"{path.name} is not a Ptychodus product (needs 'object' and 'probe')")
        return _read_ptychodus(f, path)


def read_cxi(path: str | Path) -> PtychoProduct:
    """Read a reconstruction from a CXI file: the object image, the probe image, translations, geometry."""
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as f:
        if not _is_cxi_reconstruction(f):
            raise PtychoFormatError(f"{path.name} has no reconstructed image (/entry_1/image_N/data)")
        return _read_cxi(f, path)


def read_npz(path: str | Path) -> PtychoProduct:
    """Read a PtychoPINN-style .npz: `objectGuess`, optional `probeGuess`, `xcoords`/`ycoords` (pixels)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as npz:
        if "objectGuess" not in npz.files:
            raise PtychoFormatError(f"{path.name} has no 'objectGuess' array (it has {', '.join(npz.files)})")
        not_arrays = [k for k in npz.files if not isinstance(npz[k], np.ndarray)]  # numpy hands back bytes
        if not_arrays:
            raise PtychoFormatError(
                f"{', '.join(not_arrays[:5])} in {path.name}: not numpy arrays (a pickle or another "
                "format in the archive), never loaded for safety; save plain arrays with numpy.savez"
            )
        positions = None
        if "xcoords" in npz.files and "ycoords" in npz.files:
            positions = np.column_stack([npz["xcoords"].ravel(), npz["ycoords"].ravel()])
        extra = {
            k: npz[k].item()
            for k in npz.files
            if npz[k].ndim == 0 and npz[k].dtype.kind in "biuf"  # scalars only: JSON-friendly metadata
        }
        return PtychoProduct(
            object=npz["objectGuess"],
            probe=npz["probeGuess"] if "probeGuess" in npz.files else None,
            positions=positions,
            position_units="px",
            source_format="npz (objectGuess)",
            name=path.stem,
            metadata={"source_path": str(path), "arrays": list(npz.files), **extra},
        )


def read_npy(path: str | Path) -> PtychoProduct:
    """A plain complex .npy object, (H, W) or (layers, H, W); no pixel size, probe or positions."""
    path = Path(path)
    obj = np.load(path, allow_pickle=False)
    if not np.iscomplexobj(obj):
        raise PtychoFormatError(f"{path.name} holds {obj.dtype} data; a ptychography object is complex")
    return PtychoProduct(object=obj, source_format="npy", name=path.stem, metadata={"source_path": str(path)})


def write_ptychodus_product(path: str | Path, product: PtychoProduct) -> None:
    """Write `product` in Ptychodus' product HDF5 layout, so Ptychodus (and this module) can read it back."""
    import h5py

    if product.pixel_size_m is None:
        raise PtychoFormatError(
            "a Ptychodus product needs the object pixel size in metres; set product.pixel_size_m first"
        )
    positions = product.positions_in_metres()
    if positions is None:
        positions = np.zeros((0, 2))
    indexes = product.position_indexes
    if indexes is None:
        indexes = np.arange(len(positions))
    probe = product.probe if product.probe is not None else np.zeros((1, 0, 0), dtype=np.complex64)
    probe_pixel = product.probe_pixel_size_m or product.pixel_size_m
    with h5py.File(path, "w") as f:
        f.attrs["name"] = product.name or Path(path).stem
        for key, value in product.metadata.items():
            if isinstance(value, str | int | float | bool | np.number | np.bool_):
                f.attrs[key] = value
        for key, default in (
            ("comments", ""),
            ("detector_object_distance_m", 0.0),
            ("photon_energy_eV", 0.0),
            ("probe_photon_count", 0.0),
            ("exposure_time_s", 0.0),
        ):
            if key not in f.attrs:
                f.attrs[key] = default
        f.create_dataset("probe_position_indexes", data=np.asarray(indexes, dtype=np.int64))
        f.create_dataset("probe_position_x_m", data=positions[:, 0])
        f.create_dataset("probe_position_y_m", data=positions[:, 1])
        h5_probe = f.create_dataset("probe", data=probe)
        h5_probe.attrs["pixel_width_m"], h5_probe.attrs["pixel_height_m"] = probe_pixel
        h5_object = f.create_dataset("object", data=product.object)
        h5_object.attrs["center_x_m"], h5_object.attrs["center_y_m"] = product.object_center_m
        h5_object.attrs["pixel_width_m"], h5_object.attrs["pixel_height_m"] = product.pixel_size_m
        f.create_dataset("object_layer_spacing_m", data=np.asarray(product.layer_spacing_m, dtype=np.float64))
        f.create_dataset("loss_epochs", data=np.asarray(product.loss_epochs, dtype=np.int64))
        f.create_dataset("loss_values", data=np.asarray(product.loss_values, dtype=np.float64))


# --- napari layers -------------------------------------------------------------------------------


def display_unit(pixel_size_m: float) -> tuple[str, float]:
    """("nm", 1e9) for pixels under 100 nm, else ("µm", 1e6): readable coordinates and scale bars."""
    return ("nm", 1e9) if pixel_size_m < 1e-7 else ("µm", 1e6)


def product_layers(product: PtychoProduct) -> list[LayerDataTuple]:
    """Object phase and amplitude, probe amplitude and scan positions as napari layer data tuples.

    Physical products are in nm or µm with scan points at their measured place on the object;
    pixel-only products are in pixels. Multislice objects and probe modes are stacks along axis 0.
    The amplitude and probe layers start hidden so the phase (what ptychographers read first) shows.
    """
    name = product.name or "object"
    height, width = product.shape
    base_meta = {
        "source_format": product.source_format,
        "pixel_size_m": product.pixel_size_m,
        **{k: v for k, v in product.metadata.items() if isinstance(v, str | int | float | bool)},
    }
    if product.loss_values.size:
        base_meta["final_loss"] = float(product.loss_values[-1])
    obj = product.object[0] if product.object.shape[0] == 1 else product.object
    stack = obj.ndim == 3
    if product.pixel_size_m is not None:
        (dx, dy), (cx, cy) = product.pixel_size_m, product.object_center_m
        unit, factor = display_unit(min(dx, dy))
        scale = (dy * factor, dx * factor)
        translate = ((cy + dy * (0.5 - height / 2)) * factor, (cx + dx * (0.5 - width / 2)) * factor)
        units: tuple[str, ...] = (unit, unit)
    else:
        unit, factor, scale, translate, units = "pixel", 1.0, (1.0, 1.0), (0.0, 0.0), ("pixel", "pixel")
    lead_scale, lead_translate, lead_units = ((1.0,), (0.0,), ("pixel",)) if stack else ((), (), ())
    geometry = {
        "scale": lead_scale + scale,
        "translate": lead_translate + translate,
        "units": lead_units + units,
    }
    layers: list[LayerDataTuple] = [
        (
            np.abs(obj),
            {
                "name": f"{name} amplitude",
                "colormap": "gray",
                "visible": False,
                "metadata": {**base_meta, "complex_part": "amplitude"},
                **geometry,
            },
            "image",
        ),
        (
            np.angle(obj),
            {
                "name": f"{name} phase",
                "colormap": "gray",
                "metadata": {**base_meta, "complex_part": "phase"},
                **geometry,
            },
            "image",
        ),
    ]
    if product.probe is not None and product.probe.size:
        layers.append(_probe_layer(product, name, unit, factor, _centre_display(product, factor)))
    points = _points_layer(product, name, unit, factor, scale)
    if points is not None:
        layers.append(points)
    return layers


def _centre_display(product: PtychoProduct, factor: float) -> tuple[float, float]:
    """Object centre as (row, col) in display units (pixels for pixel-only products)."""
    if product.pixel_size_m is None:
        height, width = product.shape
        return (height / 2 - 0.5, width / 2 - 0.5)
    cx, cy = product.object_center_m
    return (cy * factor, cx * factor)


def _probe_layer(
    product: PtychoProduct, name: str, unit: str, factor: float, centre: tuple[float, float]
) -> LayerDataTuple:
    probe = product.probe
    assert probe is not None
    amplitude = np.abs(probe[0] if probe.shape[0] == 1 else probe)
    ph, pw = probe.shape[-2:]
    if product.pixel_size_m is not None:
        pdx, pdy = product.probe_pixel_size_m or product.pixel_size_m
        scale = (pdy * factor, pdx * factor)
    else:
        scale = (1.0, 1.0)
    translate = (centre[0] - scale[0] * (ph - 1) / 2, centre[1] - scale[1] * (pw - 1) / 2)
    units = (unit, unit)
    if amplitude.ndim == 3:
        scale, translate, units = (1.0, *scale), (0.0, *translate), ("pixel", *units)
    kwargs = {
        "name": f"{name} probe amplitude",
        "colormap": "magma",
        "visible": False,
        "scale": scale,
        "translate": translate,
        "units": units,
        "metadata": {"source_format": product.source_format, "probe_modes": int(probe.shape[0])},
    }
    return amplitude, kwargs, "image"


def _points_layer(
    product: PtychoProduct, name: str, unit: str, factor: float, pixel_scale: tuple[float, float]
) -> LayerDataTuple | None:
    if product.positions is None or not len(product.positions):
        return None
    if product.position_units == "m":
        if product.pixel_size_m is None:
            return None
        xy = product.positions * factor
    elif product.pixel_size_m is not None:
        metres = product.positions_in_metres()
        assert metres is not None
        xy = metres * factor
    else:
        xy = product.positions
    data = np.column_stack([xy[:, 1], xy[:, 0]])  # napari points are (row, col) = (y, x)
    indexes = product.position_indexes
    if indexes is None or len(indexes) != len(data):
        indexes = np.arange(len(data))
    size = 2.0 * min(pixel_scale)
    kwargs = {
        "name": f"{name} scan positions",
        "size": size,
        "face_color": "cyan",
        "border_width": 0,
        "units": (unit, unit),
        "features": {"index": np.asarray(indexes, dtype=np.int64)},
        "metadata": {"position_units": product.position_units, "source_format": product.source_format},
    }
    return data, kwargs, "points"


# --- format internals ----------------------------------------------------------------------------


def _is_ptychodus(f: Any) -> bool:
    return "object" in f and "probe" in f and hasattr(f["object"], "shape")


def _is_cxi_reconstruction(f: Any) -> bool:
    from napari_fracto.io.ptycho_cxi import is_cxi_reconstruction

    return is_cxi_reconstruction(f)


def _attr_float(obj: Any, key: str, default: float | None = None) -> float | None:
    try:
        return float(obj.attrs[key])
    except (KeyError, TypeError, ValueError):
        return default


def _read_ptychodus(f: Any, path: Path) -> PtychoProduct:
    h5_object, h5_probe = f["object"], f["probe"]
    width_m, height_m = _attr_float(h5_object, "pixel_width_m"), _attr_float(h5_object, "pixel_height_m")
    pixel = (width_m, height_m) if width_m and height_m else None
    pw, ph = _attr_float(h5_probe, "pixel_width_m"), _attr_float(h5_probe, "pixel_height_m")
    positions = indexes = None
    if "probe_position_x_m" in f and "probe_position_y_m" in f:
        positions = np.column_stack([f["probe_position_x_m"][()], f["probe_position_y_m"][()]])
        if "probe_position_indexes" in f:
            indexes = f["probe_position_indexes"][()]
    loss_key = "loss_values" if "loss_values" in f else "costs" if "costs" in f else None
    loss_values = f[loss_key][()] if loss_key else np.zeros(0)
    loss_epochs = f["loss_epochs"][()] if "loss_epochs" in f else np.arange(len(loss_values))
    metadata = {key: _plain(value) for key, value in f.attrs.items()}
    if "probe_energy_eV" in metadata and "photon_energy_eV" not in metadata:  # older Ptychodus name
        metadata["photon_energy_eV"] = metadata["probe_energy_eV"]
    metadata["source_path"] = str(path)
    return PtychoProduct(
        object=h5_object[()],
        pixel_size_m=pixel,
        probe=h5_probe[()],
        probe_pixel_size_m=(pw, ph) if pw and ph else None,
        positions=positions,
        position_units="m",
        position_indexes=indexes,
        object_center_m=(
            _attr_float(h5_object, "center_x_m", 0.0),
            _attr_float(h5_object, "center_y_m", 0.0),
        ),
        layer_spacing_m=f["object_layer_spacing_m"][()] if "object_layer_spacing_m" in f else np.zeros(0),
        loss_epochs=np.asarray(loss_epochs),
        loss_values=np.asarray(loss_values, dtype=np.float64),
        source_format="ptychodus-h5",
        name=str(metadata.get("name") or path.stem.removesuffix("_product")),
        metadata=metadata,
    )


def _read_cxi(f: Any, path: Path) -> PtychoProduct:
    from napari_fracto.io.ptycho_cxi import read_cxi_file

    return read_cxi_file(f, path)


def _plain(value: Any) -> Any:
    """HDF5 attribute -> plain Python (bytes decoded, numpy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        return value.item() if value.size == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


__all__ = [
    "PtychoFormatError",
    "PtychoProduct",
    "display_unit",
    "is_ptycho_file",
    "product_layers",
    "read_cxi",
    "read_npy",
    "read_npz",
    "read_product",
    "read_ptychodus_product",
    "write_ptychodus_product",
]
