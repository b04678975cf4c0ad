"""Bring what a user wants to review into the dataset: a folder of images, a stack, or the JSONL output
of `napari-fracto analyze`. Each image (each plane of a stack) is stored once, by content; predictions
from a results file are stored as unreviewed reviews, once, however often the file is opened.

Pure (numpy, tifffile, h5py through the readers); no Qt.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_fracto.dataset.model import DatasetError
from napari_fracto.errors import UserError
from napari_fracto.findings import AnalysisResult

if TYPE_CHECKING:
    import numpy as np

    from napari_fracto.dataset import Dataset

JSONL_SUFFIXES = (".jsonl", ".ndjson")
_PLANE = re.compile(r"^ \[plane (?P<index>\d+(?:, *\d+)*)\]$")


class QueueError(UserError, ValueError):
    """A review queue cannot be built from what was given; the message says what to do."""


@dataclass(frozen=True)
class QueueEntry:
    """One image of a queue: its dataset id and the name shown to the reviewer."""

    image_id: str
    name: str


@dataclass
class Collected:
    """What a source gave: entries in order, the task, and what could not be used (never silent)."""

    entries: list[QueueEntry] = field(default_factory=list)
    task: str = ""
    problems: list[str] = field(default_factory=list)


def _supported() -> set[str]:
    from napari_fracto.io.readers import SUPPORTED_SUFFIXES

    return set(SUPPORTED_SUFFIXES)


def _is_rgb(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and shape[-1] in (3, 4)


def _single(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 or _is_rgb(shape)


def _file_shape(path: Path) -> tuple[int, ...] | None:
    """The image shape read cheaply from the header (see `io.images.header_shape`)."""
    from napari_fracto.io.images import header_shape

    return header_shape(path)


def load_array(path: Path) -> np.ndarray:
    """The image data of any file the napari reader opens; ptychography objects stay complex.

    Read by `io.images.image_data`, the module `analyze` reads files with, so the planes Review stores
    are the arrays the CLI analysed.
    """
    from napari_fracto.io.images import image_data

    return image_data(path)


def _leading(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[:-3] if _is_rgb(shape[-3:]) and len(shape) > 3 else shape[:-2]


def _planes(array: np.ndarray) -> list[tuple[tuple[int, ...], np.ndarray]]:
    import numpy as np

    return [(idx, np.asarray(array[idx])) for idx in np.ndindex(*_leading(array.shape))]


def _plane_name(name: str, idx: tuple[int, ...]) -> str:
    from napari_fracto.io.images import plane_label

    return f"{name} {plane_label(idx)}"


def _plane_index(stack: np.ndarray, index: tuple[int, ...]) -> tuple[int, ...]:
    """A plane's index on the stack's leading axes; a single number on a stack of more leading axes is
    the flat index older CLI records wrote."""
    import numpy as np

    lead = _leading(stack.shape)
    if len(index) == 1 and len(lead) > 1 and index[0] < int(np.prod(lead)):
        return tuple(int(i) for i in np.unravel_index(index[0], lead))
    return index


def add_file(ds: Dataset, path: Path, task: str) -> list[QueueEntry]:
    """Store one file: itself when it is a single image, else each plane of the stack (raises QueueError)."""
    try:
        shape = _file_shape(path)
        if shape is not None and _single(shape):
            return [QueueEntry(ds.add_image(path, task=task), path.name)]
        if shape is None and not _is_product(path):  # a container (.npz, .h5): its arrays as analysed
            return _container_entries(ds, path, task)
        array = load_array(path)
        if _single(array.shape):
            return [QueueEntry(ds.add_image(array, task=task, name=path.name), path.name)]
        return [
            QueueEntry(
                ds.add_image(plane, task=task, name=_plane_name(path.name, idx)), _plane_name(path.name, idx)
            )
            for idx, plane in _planes(array)
        ]
    except (DatasetError, QueueError):
        raise
    except (OSError, ValueError, KeyError) as exc:  # readers' errors say what is wrong with the file
        raise QueueError(f"cannot read {path.name}: {exc}") from None


def _is_product(path: Path) -> bool:
    from napari_fracto.io.ptycho import is_ptycho_file

    return is_ptycho_file(path)


def _container_entries(ds: Dataset, path: Path, task: str) -> list[QueueEntry]:
    """Every image of a container, each plane of each array, named as `analyze` names it."""
    import numpy as np

    from napari_fracto.io.images import file_planes

    entries = []
    for plane in file_planes(path):
        name = path.name + plane.source.removeprefix(str(path))
        entries.append(QueueEntry(ds.add_image(np.asarray(plane.array), task=task, name=name), name))
    return entries


def collect_folder(ds: Dataset, folder: Path, task: str) -> Collected:
    supported = _supported()
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in supported)
    if not files:
        raise QueueError(
            f"{folder} holds no images napari-fracto reads ({', '.join(sorted(supported))}); "
            "pick another folder"
        )
    out = Collected(task=task)
    for path in files:
        try:
            out.entries.extend(add_file(ds, path, task))
        except (DatasetError, QueueError) as exc:
            out.problems.append(str(exc))
    return out


def _resolve(source: str, base: Path) -> Path:
    path = Path(source).expanduser()
    if path.is_absolute():
        return path
    for root in (base, Path.cwd()):
        if (root / path).exists():
            return root / path
    return base / path


def _already_stored(ds: Dataset, image_id: str, result: AnalysisResult) -> bool:
    wanted = [f.to_dict() for f in result.findings]
    return any(
        r.raw_text == result.raw_text
        and r.model == result.model
        and r.prompt_version == result.prompt_version
        and [f.to_dict() for f in r.predicted] == wanted
        for r in ds.history(image_id)
        if r.task == result.task
    )


def _product_plane(ds: Dataset, path: Path, suffix: str, task: str) -> QueueEntry | None:
    """A ptychography product's object plane stored as `analyze` analysed it (complex, whole), else None.

    Stored so, `prepare(request, stored)` shows the model the pixels it was shown when analysed.
    """
    from napari_fracto.io.images import file_planes
    from napari_fracto.io.ptycho import is_ptycho_file

    if not is_ptycho_file(path):
        return None
    try:
        inputs = file_planes(path)
    except (OSError, ValueError, KeyError) as exc:
        raise QueueError(f"cannot read {path.name}: {exc}") from None
    for item in inputs:
        if item.source == str(path) + suffix or len(inputs) == 1:
            name = path.name + suffix
            return QueueEntry(ds.add_image(item.array, task=task, name=name), name)
    raise QueueError(f"{path.name} has no{suffix or ' such plane'}; analyse the file again")


def _add_source(ds: Dataset, source: str, base: Path, task: str, cache: dict[Any, Any]) -> QueueEntry:
    """Store the image a record's `source` names: a file, a plane of a stack, or a named array (part) of a
    container, named as `analyze` and the viewer name them (`io.images`)."""
    from napari_fracto.io.images import source_file, split_source

    file_part, rest = split_source(source)
    path = _resolve(file_part, base)
    if not path.is_file():
        raise QueueError(
            f"image not found: {path}; keep the images where they were analysed, or fix 'source'"
        )
    product = _product_plane(ds, path, rest, task)
    if product is not None:
        return product
    if not rest or source_file(source) != source:  # a whole file (a complex .npy is stored complex)
        entries = add_file(ds, path, task)
        if len(entries) != 1:
            raise QueueError(f"{path.name} is a stack, but its result names no plane")
        return entries[0]
    match = _PLANE.match(rest)
    if match is None:
        return _add_part(ds, path, rest, task, cache)
    if path not in cache:
        cache.clear()  # one stack in memory at a time
        cache[path] = _read(path, load_array)
    idx = _plane_index(cache[path], tuple(int(i) for i in match["index"].split(",")))
    try:
        plane = cache[path][idx]
    except IndexError:
        raise QueueError(f"{path.name} has no plane {match['index']}") from None
    name = _plane_name(path.name, idx)
    return QueueEntry(ds.add_image(plane, task=task, name=name), name)


def _read(path: Path, read: Any) -> Any:
    try:
        return read(path)
    except (OSError, ValueError, KeyError) as exc:  # readers' errors say what is wrong with the file
        raise QueueError(f"cannot read {path.name}: {exc}") from None


def _add_part(ds: Dataset, path: Path, rest: str, task: str, cache: dict[Any, Any]) -> QueueEntry:
    """A named array of a container (`f.npz [f obj phase]`, `f.h5 [data] [plane 2]`): the image the
    reader gave `analyze` under that name, the part (phase or amplitude) included."""
    from napari_fracto.io.images import reader_planes

    part = "amplitude" if "amplitude]" in rest else "phase"
    key = (path, part)  # the planes of one file and part, cached together
    if key not in cache:
        cache.clear()
        cache[key] = dict(_read(path, lambda p: reader_planes(p, part)))
    wanted = f"{path}{rest}"
    if wanted not in cache[key]:
        names = ", ".join(name.removeprefix(str(path)).strip() for name in list(cache[key])[:8])
        raise QueueError(f"{path.name} has no{rest}; it holds {names}")
    name = path.name + rest
    return QueueEntry(ds.add_image(cache[key][wanted], task=task, name=name), name)


def collect_results(ds: Dataset, jsonl: Path, task: str | None = None) -> Collected:
    """Images and predictions of a results file; records of another task than `task` are left out."""
    try:
        lines = jsonl.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise QueueError(f"cannot read {jsonl}: {exc}") from None
    records = [(f"{jsonl.name} line {n}", line) for n, line in enumerate(lines, 1) if line.strip()]
    return _collect_records(ds, jsonl, records, task)


def findings_file_record(doc: Any) -> dict[str, Any] | None:
    """The analysis record of a findings JSON written by File > Save (None: not such a file).

    Format 2 keeps the whole record; an older file is read back from its findings and provenance.
    """
    from napari_fracto.io.writers import FORMAT

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return None
    if isinstance(doc.get("analysis"), dict):
        return doc["analysis"]
    return {
        "task": doc.get("task", ""),
        "source": doc.get("source", ""),
        "findings": [
            {"label": f.get("label", ""), "confidence": f.get("confidence"), "box": f.get("box")}
            for f in doc.get("findings", [])
        ],
        "raw_text": doc.get("raw_text", ""),
        **(doc.get("model") or {}),
    }


def collect_findings_file(ds: Dataset, path: Path, task: str | None = None) -> Collected:
    """The image and prediction of a findings JSON saved from napari (File > Save of a findings layer)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise QueueError(f"cannot read {path} as JSON: {exc}") from None
    record = findings_file_record(doc)
    if record is None:
        raise QueueError(
            f"{path.name} is not a napari-fracto findings file (File > Save of a findings layer) nor a "
            "results .jsonl; open one of those, a folder or an image"
        )
    return _collect_records(ds, path, [(path.name, record)], task)


def _collect_records(
    ds: Dataset, origin: Path, records: list[tuple[str, Any]], task: str | None
) -> Collected:
    """Store the images and predictions of analysis records (JSON text or dicts), named by `where`."""
    out = Collected(task=task or "")
    cache: dict[Any, Any] = {}  # one file's arrays (by path, or by path and part)
    other_tasks: set[str] = set()
    seen: set[str] = set()
    jsonl = origin
    for where, line in records:
        try:
            record = json.loads(line) if isinstance(line, str) else line
            result = AnalysisResult.from_record(record)
        except (ValueError, KeyError, TypeError) as exc:
            out.problems.append(f"{where}: not an analysis record ({exc})")
            continue
        if not out.task:
            out.task = result.task
        if result.task != out.task:
            other_tasks.add(result.task)
            continue
        if not result.source:
            out.problems.append(f"{where}: no 'source' image path; it cannot be shown")
            continue
        try:
            entry = _add_source(ds, result.source, jsonl.parent, out.task, cache)
            if not _already_stored(ds, entry.image_id, result):
                ds.save_prediction(entry.image_id, result)
        except (DatasetError, QueueError) as exc:
            out.problems.append(f"{where}: {exc}")
            continue
        if entry.image_id not in seen:
            seen.add(entry.image_id)
            out.entries.append(entry)
    if other_tasks:
        out.problems.append(
            f"left out records of task(s) {', '.join(sorted(other_tasks))}: "
            "open the file again with that task"
        )
    if not out.entries:
        why = "; ".join(out.problems[:3]) or "the file is empty"
        raise QueueError(f"nothing to review in {jsonl.name}: {why}")
    return out


def collect(ds: Dataset, source: str | Path, task: str | None) -> Collected:
    """A folder, a results file (.jsonl) or an image/stack file, stored in `ds` (raises QueueError)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise QueueError(f"{path} does not exist; pick a folder, an image stack or a results .jsonl file")
    if path.suffix.lower() in JSONL_SUFFIXES:
        return collect_results(ds, path, task)
    if path.suffix.lower() == ".json":
        return collect_findings_file(ds, path, task)
    if not task:
        raise QueueError("choose the task (e.g. 'fracture' or 'ptychography') for these images")
    if path.is_dir():
        return collect_folder(ds, path, task)
    if path.suffix.lower() not in _supported():
        raise QueueError(
            f"cannot review {path.name}: open a folder, a results .jsonl, or an image file "
            f"({', '.join(sorted(_supported()))})"
        )
    return Collected(entries=add_file(ds, path, task), task=task)
