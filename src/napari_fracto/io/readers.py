"""The napari reader: SEM/optical images and ptychography reconstructions, with their pixel sizes.

TIFF goes through tifffile (8/16-bit, float, multi-page stacks; pixel size from Zeiss CZ_SEM, FEI/Thermo
metadata, ImageJ or centimetre resolution tags), PNG/JPEG/BMP through Pillow, .npy/.npz/.h5/.hdf5/.cxi
through numpy/h5py; ptychography products go to `napari_fracto.io.ptycho`. Complex arrays open as
"<name> phase" and "<name> amplitude". Every failure is a `ReaderError` that says what to do, so a bad
file gives a notification in napari rather than a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_fracto.errors import UserError
from napari_fracto.io.ptycho import (
    LayerDataTuple,
    PtychoFormatError,
    display_unit,
    is_ptycho_file,
    product_layers,
    read_product,
)

ReaderFunction = Callable[[str | Sequence[str]], list[LayerDataTuple]]

TIFF_SUFFIXES = {".tif", ".tiff"}
PIL_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
NUMPY_SUFFIXES = {".npy", ".npz"}
HDF5_SUFFIXES = {".h5", ".hdf5", ".cxi"}
SUPPORTED_SUFFIXES = TIFF_SUFFIXES | PIL_SUFFIXES | NUMPY_SUFFIXES | HDF5_SUFFIXES
#: Generic containers (npz/HDF5) open at most this many image datasets as layers.
MAX_GENERIC_LAYERS = 16
#: generic HDF5 stacks above this size open lazily (a plane is read when shown); smaller ones are read
LAZY_HDF5_BYTES = 64 * 2**20
#: TIFFs larger than this are memory-mapped when their layout allows it.
MEMMAP_BYTES = 64 * 2**20

_LENGTH_TO_M = {
    "m": 1.0,
    "mm": 1e-3,
    "µm": 1e-6,
    "μm": 1e-6,
    "um": 1e-6,
    "micron": 1e-6,
    "nm": 1e-9,
    "pm": 1e-12,
}


class ReaderError(UserError, ValueError):
    """A file could not be opened; the message names the file and says what to do."""


def napari_get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """npe2 reader hook: a reader for supported file names, else None so other readers can try."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(Path(p).suffix.lower() in SUPPORTED_SUFFIXES for p in paths):
        return None
    return read_layers


def read_layers(path: str | Sequence[str]) -> list[LayerDataTuple]:
    """Read one or several files into napari layer data tuples (raises `ReaderError`)."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    layers: list[LayerDataTuple] = []
    for p in paths:
        layers.extend(read_file(p))
    return layers


def read_file(path: str | Path) -> list[LayerDataTuple]:
    """Read one file; any failure becomes a `ReaderError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ReaderError(f"{path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise ReaderError(f"{path.name} is empty (0 bytes); the copy or save probably failed")
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            return read_tiff(path)
        if suffix in PIL_SUFFIXES:
            return read_pil(path)
        if suffix in NUMPY_SUFFIXES | HDF5_SUFFIXES:
            if suffix != ".npy" and is_ptycho_file(path):
                return product_layers(read_product(path))
            return read_numpy(path) if suffix in NUMPY_SUFFIXES else read_hdf5(path)
    except ReaderError:
        raise
    except PtychoFormatError as exc:
        raise ReaderError(f"{path.name}: {exc}") from exc
    except MemoryError as exc:
        raise ReaderError(
            f"{path.name} is too large to load into memory; crop or bin it first (e.g. save a smaller "
            "TIFF), or open an uncompressed TIFF which is memory-mapped"
        ) from exc
    except Exception as exc:  # a reader must never take napari down with an obscure traceback
        known = _known_problem(exc)
        if known is not None:
            raise ReaderError(f"{path.name}: {known}") from exc
        raise ReaderError(
            f"could not read {path.name}: {type(exc).__name__}: {exc}. The file may be truncated or corrupt; "
            "try re-exporting it from the instrument software"
        ) from exc
    raise ReaderError(
        f"{path.name}: unsupported file type {suffix!r}; supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}"
    )


def _known_problem(exc: Exception) -> str | None:
    """What an HDF5 or numpy error means for the user and what to do, for the errors we know; else None."""
    text = str(exc).lower()
    if "can't open file" in text or "unable to open external file" in text:
        return (
            "a dataset in it is an external link to another HDF5 file that is missing; copy that file next "
            "to this one (with the name the link expects), or open the file the link points to"
        )
    if "too many links" in text or "link traversal failed" in text:
        return (
            "a dataset in it is a link that leads back to itself (a link loop); the file was written "
            "wrongly: re-export it, or point the link at the real data with h5py"
        )
    if "object arrays cannot be loaded" in text or "pickle" in text:
        return (
            "it stores Python objects (pickled), which are never opened for safety; save plain numeric "
            "arrays with numpy.save/numpy.savez"
        )
    return None


# --- TIFF ----------------------------------------------------------------------------------------


def read_tiff(path: Path) -> list[LayerDataTuple]:
    """A TIFF as one image layer (stacks along the leading axes), with the SEM pixel size if known."""
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise ReaderError(
            f"{path.name} is not a valid TIFF ({exc}); the file is corrupt or not really a TIFF — "
            "re-export it, or rename it if it is another format"
        ) from exc
    with tif:
        if not tif.series:
            raise ReaderError(f"{path.name} contains no images")
        series = tif.series[0]
        axes = series.axes
        rgb = axes.endswith("S") and series.shape[-1] in (3, 4)
        pixel, source = tiff_pixel_size(tif)
        data = _tiff_data(path, tif, series)
        page = tif.pages.first
        if page.photometric == tifffile.PHOTOMETRIC.PALETTE and page.colormap is not None and not rgb:
            from napari_fracto.imaging import apply_palette

            data = apply_palette(data, page.colormap)  # Zeiss saves indexed images: show the colours
            rgb = data.ndim == len(series.shape) + 1
    if data.size == 0:
        raise ReaderError(f"{path.name} contains an empty image (shape {data.shape})")
    metadata: dict[str, Any] = {"source_path": str(path), "tiff_axes": axes}
    pixel, source = _with_instrument(path, metadata, pixel, source)
    geometry: dict[str, Any] = {}
    if pixel is not None:
        geometry = _physical_geometry(pixel, data.ndim - (1 if rgb else 0))
        metadata.update(pixel_size_m=pixel, pixel_size_source=source)
    if np.iscomplexobj(data):
        return complex_layers(data, path.stem, metadata, **geometry)
    kwargs: dict[str, Any] = {"name": path.stem, "rgb": rgb, "metadata": metadata, **geometry}
    return [(data, kwargs, "image")]


def _with_instrument(
    path: Path, metadata: dict[str, Any], pixel: tuple[float, float] | None, source: str
) -> tuple[tuple[float, float] | None, str]:
    """Record the SEM's settings (`metadata["instrument"]`); its pixel size when the tags gave none."""
    from napari_fracto.io.sem_metadata import read_instrument

    inst = read_instrument(path)
    if inst is None:
        return pixel, source
    metadata["instrument"] = inst.to_dict()
    if pixel is None and inst.pixel_size_um:
        return (inst.pixel_size_um * 1e-6,) * 2, inst.source
    return pixel, source


def _tiff_data(path: Path, tif: Any, series: Any) -> np.ndarray:
    """Memory-map big uncompressed TIFFs (a 16k x 16k SEM montage then costs no RAM), else read."""
    import tifffile

    if series.size * series.dtype.itemsize >= MEMMAP_BYTES:
        try:
            return tifffile.memmap(path, mode="r")
        except (ValueError, OSError):
            pass
    try:
        return series.asarray()
    except (ValueError, OSError, EOFError, IndexError, KeyError) as exc:
        raise ReaderError(
            f"{path.name} is truncated or corrupt (its image data could not be decoded: {exc}); "
            "re-export or re-copy the file"
        ) from exc


def tiff_pixel_size(tif: Any) -> tuple[tuple[float, float] | None, str]:
    """((x, y) pixel size in metres, where it came from) from SEM metadata or resolution tags."""
    sem = tif.sem_metadata if tif.is_sem else None
    if sem:
        entry = sem.get("ap_image_pixel_size") or sem.get("ap_pixel_size")
        if entry and len(entry) >= 2 and isinstance(entry[1], int | float):
            unit = entry[2] if len(entry) > 2 else "m"
            metres = _to_metres(entry[1], unit)
            if metres:
                return (metres, metres), "Zeiss CZ_SEM ap_image_pixel_size"
    fei = tif.fei_metadata if tif.is_fei else None
    if fei:
        for section in ("EScan", "Scan", "IScan"):
            values = fei.get(section) or {}
            x, y = values.get("PixelWidth"), values.get("PixelHeight", values.get("PixelWidth"))
            if _positive(x) and _positive(y):
                return (float(x), float(y)), f"FEI/Thermo metadata [{section}] PixelWidth"
    page = tif.pages.first
    ij = tif.imagej_metadata if tif.is_imagej else None
    xres, yres = page.tags.valueof("XResolution"), page.tags.valueof("YResolution")
    if xres and yres:
        px_per_unit_x, px_per_unit_y = _ratio(xres), _ratio(yres)
        if ij and ij.get("unit") and _to_metres(1.0, str(ij["unit"])) and px_per_unit_x and px_per_unit_y:
            unit_m = _to_metres(1.0, str(ij["unit"]))
            return (unit_m / px_per_unit_x, unit_m / px_per_unit_y), f"ImageJ resolution ({ij['unit']})"
        if page.tags.valueof("ResolutionUnit") == 3 and px_per_unit_x and px_per_unit_y:  # centimetre
            return (0.01 / px_per_unit_x, 0.01 / px_per_unit_y), "TIFF resolution tags (cm)"
    # Resolution in inches is nearly always a screen/printer DPI, not a physical pixel size: ignored.
    return None, ""


def _ratio(value: Any) -> float | None:
    try:
        number = value[0] / value[1] if isinstance(value, tuple) else float(value)
    except (TypeError, ZeroDivisionError, IndexError):
        return None
    return number if _positive(number) else None


def _to_metres(value: float, unit: str) -> float | None:
    factor = _LENGTH_TO_M.get(str(unit).strip())
    metres = float(value) * factor if factor else None
    return metres if _positive(metres) else None


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _physical_geometry(pixel: tuple[float, float], ndim: int) -> dict[str, Any]:
    """napari scale/units for (…, y, x) data with an (x, y) pixel size in metres."""
    unit, factor = display_unit(min(pixel))
    lead = ndim - 2
    return {
        "scale": (1.0,) * lead + (pixel[1] * factor, pixel[0] * factor),
        "units": ("pixel",) * lead + (unit, unit),
    }


# --- PNG / JPEG / BMP ----------------------------------------------------------------------------


def read_pil(path: Path) -> list[LayerDataTuple]:
    """Ordinary images via Pillow: RGB stays RGB (rgb=True), palettes become RGB(A), 16-bit stays 16-bit."""
    from PIL import Image, UnidentifiedImageError

    from napari_fracto.io.pil_images import TooLargeError, decode_direct, open_image, to_array

    try:
        with open_image(path) as image:
            direct = decode_direct(path, image)
            if direct is not None:
                return _pil_layer(path, direct)
            image.load()
            if image.mode in ("P", "PA"):
                image = image.convert("RGBA" if "transparency" in image.info or image.mode == "PA" else "RGB")
            elif image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                image = image.convert("RGB")
            elif image.mode == "LA":
                image = image.convert("L")
            data = to_array(image)
            mode = image.mode
    except TooLargeError as exc:
        raise ReaderError(str(exc)) from exc
    except Image.DecompressionBombError as exc:
        raise ReaderError(
            f"{path.name} has more pixels than Pillow opens safely ({exc}); save it as TIFF, which is "
            "memory-mapped, or crop it"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ReaderError(
            f"{path.name} is not a readable {path.suffix} image (corrupt, or another format with the "
            "wrong extension); re-export it"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ReaderError(f"{path.name} is truncated or corrupt ({exc}); re-export or re-copy it") from exc
    if mode == "1":
        data = data.astype(np.uint8) * np.uint8(255)
    return _pil_layer(path, data)


def _pil_layer(path: Path, data: np.ndarray) -> list[LayerDataTuple]:
    rgb = data.ndim == 3 and data.shape[-1] in (3, 4)
    metadata: dict[str, Any] = {"source_path": str(path)}
    kwargs: dict[str, Any] = {"name": path.stem, "rgb": rgb, "metadata": metadata}
    pixel, source = _with_instrument(path, metadata, None, "")  # JEOL/Hitachi sidecar .txt
    if pixel is not None:
        kwargs.update(_physical_geometry(pixel, 2))
        metadata.update(pixel_size_m=pixel, pixel_size_source=source)
    return [(data, kwargs, "image")]


# --- numpy and HDF5 ------------------------------------------------------------------------------


def complex_layers(data: Any, name: str, metadata: dict[str, Any], **geometry: Any) -> list[LayerDataTuple]:
    """A complex array as two layers, "<name> phase" (shown) and "<name> amplitude" (hidden)."""
    data = np.asarray(data)
    return [
        (
            np.abs(data),
            {
                "name": f"{name} amplitude",
                "visible": False,
                "metadata": {**metadata, "complex_part": "amplitude"},
                **geometry,
            },
            "image",
        ),
        (
            np.angle(data),
            {"name": f"{name} phase", "metadata": {**metadata, "complex_part": "phase"}, **geometry},
            "image",
        ),
    ]


def read_numpy(path: Path) -> list[LayerDataTuple]:
    """.npy (memory-mapped) or .npz: each 2-D+ numeric array becomes a layer, complex as phase + amplitude."""
    try:
        if path.suffix.lower() == ".npy":
            arrays = {path.stem: np.load(path, mmap_mode="r", allow_pickle=False)}
            return _array_layers(path, arrays, prefix_with_file=False)
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        if any(
            not isinstance(a, np.ndarray) for a in arrays.values()
        ):  # numpy hands back other members as bytes
            raise ReaderError(
                f"{path.name} holds members that are not numpy arrays (a pickle or another format), which "
                "are never loaded for safety; save plain numeric arrays with numpy.savez"
            )
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "python objects" in str(exc).lower():
            raise ReaderError(
                f"{path.name} stores Python objects (pickled), which are not opened for safety; save plain "
                "numeric arrays with numpy.save/numpy.savez"
            ) from exc
        raise ReaderError(f"{path.name} is not a valid numpy file ({exc}); re-save it") from exc
    except (OSError, EOFError) as exc:
        raise ReaderError(f"{path.name} is truncated or corrupt ({exc}); re-save or re-copy it") from exc
    return _array_layers(path, arrays, prefix_with_file=True)


def read_hdf5(path: Path) -> list[LayerDataTuple]:
    """Any HDF5 file: each numeric 2-4-D dataset becomes a layer (complex: phase + amplitude)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ReaderError(
            f"{path.name} is not a readable HDF5 file ({exc}); it may be truncated or corrupt"
        ) from exc
    found: dict[str, Any] = {}
    lazy: list[str] = []
    with f:

        def visit(name: str, obj: Any) -> None:
            if (
                isinstance(obj, h5py.Dataset)
                and obj.dtype.kind in "biufc"
                and 2 <= obj.ndim <= 4
                and obj.size
                and len(found) < MAX_GENERIC_LAYERS
            ):
                if obj.ndim >= 3 and obj.dtype.kind != "c" and obj.nbytes > LAZY_HDF5_BYTES:
                    lazy.append(name)
                    found[name] = None  # read plane by plane below, in the file's order
                else:
                    found[name] = obj[()]

        f.visititems(visit)
    if lazy:
        found.update(_lazy_hdf5(path, lazy))
    if not found:
        raise ReaderError(
            f"{path.name} has no image-like dataset (a numeric array with 2 to 4 dimensions); nothing to show"
        )
    return _array_layers(path, found, prefix_with_file=True)


def _lazy_hdf5(path: Path, names: list[str]) -> dict[str, Any]:
    """Big stacks (diffraction patterns, say) as dask arrays read one plane at a time when shown, so
    opening the file neither waits for nor holds the whole stack. The file stays open (read-only) for
    as long as the layers use it."""
    import dask.array as da
    import h5py

    f = h5py.File(path, "r")  # not closed here: the datasets below read from it on demand
    out = {}
    for name in names:
        dataset = f[name]
        planes = (1,) * (dataset.ndim - 2) + tuple(dataset.shape[-2:])
        out[name] = da.from_array(dataset, chunks=planes, name=f"napari-fracto {path.name} {name}")
    return out


def _array_layers(path: Path, arrays: dict[str, Any], *, prefix_with_file: bool) -> list[LayerDataTuple]:
    layers: list[LayerDataTuple] = []
    skipped = []
    for key, array in arrays.items():
        if array.dtype.kind not in "biufc" or array.ndim < 2 or array.size == 0:
            skipped.append(f"{key} {array.shape} {array.dtype}")
            continue
        if len(layers) >= 2 * MAX_GENERIC_LAYERS:
            break
        name = f"{path.stem} {key}" if prefix_with_file and len(arrays) > 1 else path.stem
        meta = {"source_path": str(path), "dataset": key}
        if np.iscomplexobj(array):
            layers.extend(complex_layers(array, name, meta))
        else:
            rgb = array.ndim == 3 and array.shape[-1] in (3, 4) and array.dtype == np.uint8
            layers.append((array, {"name": name, "rgb": rgb, "metadata": meta}, "image"))
    if not layers:
        raise ReaderError(
            f"{path.name} holds no image (numeric array with at least 2 dimensions); "
            f"it has: {'; '.join(skipped)}"
        )
    return layers
