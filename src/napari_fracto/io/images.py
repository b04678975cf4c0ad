"""The image planes of a file: the one place a file becomes arrays outside the napari viewer.

The CLI (`analyze`, `dataset autolabel`) and Review queues both ask this module, so they cannot disagree
about what a file holds, how its planes are named, or which array is the object of a ptychography
product. Decoding itself stays in `io.readers` (the napari reader) and `io.ptycho` (products).

Pure: numpy, tifffile, Pillow, h5py; no Qt, no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from napari_fracto.io.ptycho import PtychoProduct
    from napari_fracto.ptycho.prepare import ScanGeometry

#: The suffixes read here: exactly what the napari reader opens.
IMAGE_SUFFIXES = frozenset(
    {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".npy", ".npz", ".h5", ".hdf5", ".cxi"}
)


_SOURCE = re.compile(
    r"^(?P<path>.*?\.(?:tiff?|png|jpe?g|bmp|npy|npz|h5|hdf5|cxi))(?P<rest>(?: \[[^\]]*\])*)$", re.IGNORECASE
)
_NPY_PART = re.compile(r"^(?P<path>.*\.npy) \[(?P<stem>.+) (?:phase|amplitude)\]$", re.IGNORECASE)


def split_source(source: str) -> tuple[str, str]:
    """A record's source split into the file and what names a part of it: `/d/f.npz [f obj phase]` is
    (`/d/f.npz`, ` [f obj phase]`); a source naming a whole file has an empty part."""
    match = _SOURCE.match(source)
    return (match["path"], match["rest"]) if match else (source, "")


def plane_label(index: tuple[int, ...]) -> str:
    """How a plane of a stack is named everywhere (CLI records, Review, the viewer): its index on each
    leading axis, as napari's sliders show it: `[plane 3]`, `[plane 1, 2]`."""
    return f"[plane {', '.join(str(i) for i in index)}]"


def source_file(source: str) -> str:
    """The file a plane-less source names: `<dir>/x.npy [x phase]` (a complex .npy) names `<dir>/x.npy`.

    The reader splits a complex .npy into phase and amplitude layers, so `analyze` records the part;
    whoever stores the file (Review) keeps the complex array whole and needs only the file.
    """
    match = _NPY_PART.match(source)
    if match and Path(match["path"]).stem == match["stem"]:
        return match["path"]
    return source


@dataclass
class ImagePlane:
    """One image to analyse: its name for the record, the array, and (ptychography) the scan geometry."""

    source: str
    array: Any
    geometry: ScanGeometry | None = None
    complex_part: str | None = None


def is_probe_layer(layer_kwargs: dict[str, Any]) -> bool:
    """True for a layer the reader marks as a probe: a ptychography product's probe layer (metadata
    `probe_modes`), or an array stored as `probe...` inside a container (.npz/.h5). Decided from what
    the reader records, never from the file name: `e_wrong_probe_fixed_object.npy` is an object."""
    meta = layer_kwargs.get("metadata") or {}
    if "probe_modes" in meta:
        return True
    dataset = str(meta.get("dataset", ""))
    source = Path(str(meta.get("source_path", "")))
    if not dataset or source.suffix.lower() == ".npy":  # a .npy's only array is named after the file
        return False
    return dataset.rsplit("/", 1)[-1].lower().startswith("probe")


def reader_planes(path: Path, part: str = "phase") -> list[tuple[str, np.ndarray]]:
    """The 2-D images (or RGB) in a file as the napari reader shows them: planes of a stack are separate.

    Complex data is split by the reader into phase and amplitude layers; `part` picks which one is kept.
    Probe layers are left out. Names are `<path>`, `<path> [<layer>]` and `... [plane i, j]` (`plane_label`).
    """
    from napari_fracto.io.readers import ReaderError, napari_get_reader

    if not path.exists():
        raise ReaderError(f"{path}: no such file.")
    reader = napari_get_reader(str(path))
    if reader is None:
        raise ReaderError(f"{path}: not a format napari-fracto reads ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    images: list[tuple[str, Any]] = []
    layers = [layer for layer in reader(str(path)) if (layer[2] if len(layer) > 2 else "image") == "image"]
    names = [str(layer[1].get("name", "")) if len(layer) > 1 else "" for layer in layers]
    other = "amplitude" if part == "phase" else "phase"  # a complex array's other part; real arrays stay
    for layer, name in zip(layers, names, strict=True):
        data = layer[0]
        kwargs = layer[1] if len(layer) > 1 else {}
        if is_probe_layer(kwargs) or name.endswith(f" {other}"):
            continue
        rgb = bool(kwargs.get("rgb", False))
        spatial = 3 if rgb else 2
        label = f"{path}" if len(layers) == 1 or not name else f"{path} [{name}]"
        if data.ndim <= spatial:
            images.append((label, data))
        else:
            import numpy as np

            lead = data.shape[: data.ndim - spatial]
            images.extend((f"{label} {plane_label(idx)}", data[idx]) for idx in np.ndindex(*lead))
    if not images:
        raise ReaderError(f"{path}: holds no image napari-fracto can analyse.")
    return images


def _product(path: Path) -> PtychoProduct | None:
    """The ptychography product in `path`, or None when it is not one (format errors: `ReaderError`)."""
    from napari_fracto.io.ptycho import PtychoFormatError, is_ptycho_file, read_product
    from napari_fracto.io.readers import ReaderError

    if not (path.exists() and is_ptycho_file(path)):
        return None
    try:
        return read_product(path)
    except PtychoFormatError as exc:
        raise ReaderError(str(exc)) from exc


def file_planes(path: Path, part: str = "phase") -> list[ImagePlane]:
    """The images of a file with what the analysis needs besides pixels.

    A ptychography product (Ptychodus .h5, CXI, .npz with objectGuess) is read whole: the complex object
    (one plane per slice of a multislice object, named `[plane i]` like other stacks) with its scan
    positions and probe size, so display options can crop to the scan and evidence knows the scan step.
    Any other file is read as the viewer reads it (`reader_planes`).
    """
    product = _product(path)
    if product is None:
        return [ImagePlane(source, array) for source, array in reader_planes(path, part)]
    from napari_fracto.ptycho.prepare import ScanGeometry

    geometry = ScanGeometry.from_product(product)
    obj = product.object
    if obj.shape[0] == 1:
        return [ImagePlane(str(path), obj[0], geometry, part)]
    return [ImagePlane(f"{path} [plane {i}]", obj[i], geometry, part) for i in range(obj.shape[0])]


def header_shape(path: Path) -> tuple[int, ...] | None:
    """The image shape read cheaply from the header, for files a dataset can store byte for byte.

    None when the header does not tell (containers, products): read the data with `image_data`.
    """
    suffix = path.suffix.lower()
    if suffix in (".png", ".jpg", ".jpeg", ".bmp"):
        return (0, 0)  # always one image
    if suffix in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return tuple(int(s) for s in tif.series[0].shape)
    if suffix == ".npy":
        import numpy as np

        return tuple(int(s) for s in np.load(path, mmap_mode="r", allow_pickle=False).shape)
    return None


def image_data(path: Path) -> np.ndarray:
    """The whole image data of a file (all planes, complex kept): what a dataset stores of it.

    A ptychography product gives its object (one slice: 2-D), the array `file_planes` analyses.
    """
    import numpy as np

    from napari_fracto.io.readers import ReaderError, read_file

    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    product = _product(path)
    if product is not None:
        obj = np.asarray(product.object)
        return obj[0] if obj.ndim == 3 and obj.shape[0] == 1 else obj
    layers = [layer for layer in read_file(path) if layer[2] == "image"]
    if not layers:
        raise ReaderError(f"{path.name} holds no image")
    return np.asarray(layers[0][0])
