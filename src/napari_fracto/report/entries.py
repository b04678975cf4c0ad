"""What a report is made of: one `ImageEntry` per analysed image, loaded from where results live.

An entry keeps the records whole (the `AnalysisResult` with its request, the dataset review) plus the
picture as shown (RGB uint8, or why there is none); `views` turns entries into what a reader sees.
Sources: an `analyze` JSONL (images read back from the files the records name), a corrections dataset
(its reviewed items, or a split), or an in-memory result (the Analyze widget). Pure: no Qt, no torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_fracto.errors import UserError
from napari_fracto.findings import AnalysisResult

if TYPE_CHECKING:
    import numpy as np

    from napari_fracto.dataset import Dataset, ReviewRecord

MAX_JSONL_BYTES = 512 * 1024 * 1024
_TRAILING_PART = re.compile(r"^(?P<head>.*) \[[^\[\]]*\]$")


class ReportError(UserError, ValueError):
    """A report cannot be made from what was given; the message says what to give instead."""


@dataclass
class ImageEntry:
    """One image of a report: the model's result (if any), the review (if any) and the picture."""

    name: str  # the source as recorded (redacted when shown)
    task: str
    result: AnalysisResult | None = None
    review: ReviewRecord | None = None
    loader: Callable[[], Any] | None = None  # reads the plane when the entry is drawn (never kept)
    image_problem: str = ""  # why there is no image (set by `picture_source` when reading fails)
    metadata: dict[str, Any] = field(default_factory=dict)  # instrument metadata read from the file
    split: str | None = None
    others: list[AnalysisResult] = field(default_factory=list)  # other backends' results for this image
    problem: str = ""  # a record that could not be read at all (failures section)

    def picture_source(self, longest: int) -> tuple[np.ndarray, float] | None:
        """(RGB uint8 at most `longest` px, scale from file pixels), read now; None with `image_problem`
        set when the image cannot be read. Nothing is kept, so a large batch never holds its images."""
        if self.loader is None:
            self.image_problem = self.image_problem or "no image stored with this record"
            return None
        part = self.request.complex_part if self.request is not None else "phase"
        try:
            array = self.loader()
            if array is None:
                self.image_problem = "no image given"
                return None
            return _shrink(display_rgb(array, part), longest)
        except (UserError, OSError, ValueError, KeyError, MemoryError) as exc:
            self.image_problem = f"image not shown: {exc}"
            return None

    @property
    def request(self) -> Any:
        if self.result is not None:
            return self.result.request
        return self.review.request if self.review is not None else None


def display_rgb(array: Any, complex_part: str = "phase") -> np.ndarray:
    """The image as a person sees it: the same normalisation the model input gets (`to_model_rgb`)."""
    from napari_fracto.imaging import to_model_rgb

    return to_model_rgb(
        array, complex_part=complex_part if complex_part in ("phase", "amplitude") else "phase"
    )


def _shrink(rgb: np.ndarray, longest: int) -> tuple[np.ndarray, float]:
    import numpy as np
    from PIL import Image

    height, width = rgb.shape[:2]
    scale = min(1.0, longest / max(height, width))
    if scale >= 1.0:
        return rgb, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS)), scale


def entry_from_result(result: AnalysisResult, array: Any | None, *, name: str = "") -> ImageEntry:
    """An entry for a result held in memory (Analyze's current image) with its plane's pixels."""
    return ImageEntry(name or result.source or "image", result.task, result=result, loader=lambda: array)


# --- analyze JSONL ---------------------------------------------------------------------------------


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, record or None, problem) per non-empty line; a bad line is a failure, not a stop."""
    if path.stat().st_size > MAX_JSONL_BYTES:
        raise ReportError(f"{path.name} is over {MAX_JSONL_BYTES // 2**20} MB; split it into smaller files")
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, None, f"line {number} is not JSON ({exc.msg})"
                continue
            if not isinstance(record, dict) or "task" not in record:
                yield number, None, f"line {number} is not an analyze record (no 'task')"
                continue
            yield number, record, ""


def _candidate_files(source: str, base: Path) -> Iterator[Path]:
    """The file a source names: itself, or with its trailing ' [...]' parts taken off one by one."""
    from napari_fracto.io.images import source_file

    text = source
    while True:
        for raw in (source_file(text), text):
            path = Path(raw).expanduser()
            for candidate in (path,) if path.is_absolute() else (base / path, Path.cwd() / path):
                if candidate.is_file():
                    yield candidate
        match = _TRAILING_PART.match(text)
        if not match:
            return
        text = match["head"]


def _load_plane(source: str, base: Path, part: str, cache: dict[Path, Any]) -> tuple[Any, dict[str, Any]]:
    """The plane `source` names (as `analyze` named it), read the way `analyze` read it."""
    from napari_fracto.io.images import file_planes

    path = next(_candidate_files(source, base), None)
    if path is None:
        raise ReportError(f"image not found: {source}; keep the images where they were analysed")
    key = (path, part)
    if key not in cache:
        cache.clear()  # one file's planes in memory at a time
        cache[key] = file_planes(path, part)
    planes = cache[key]
    for plane in planes:
        if plane.source == source:
            return plane.array, _file_metadata(path)
    if len(planes) == 1:
        return planes[0].array, _file_metadata(path)
    raise ReportError(f"{path.name} has no plane named like {source!r}; analyse the file again")


def _file_metadata(path: Path) -> dict[str, Any]:
    """Instrument metadata worth showing: the pixel size a TIFF's tags give (SEM instruments)."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return {}
    try:
        import tifffile

        from napari_fracto.io.readers import tiff_pixel_size

        with tifffile.TiffFile(path) as tif:
            pixel, where = tiff_pixel_size(tif)
    except Exception:  # metadata is a nicety; an odd tag never stops a report
        return {}
    if not pixel:
        return {}
    return {"pixel size": f"{pixel[0] * 1e9:.4g} nm ({where})"}


def from_jsonl(path: Path, *, images: bool = True) -> list[ImageEntry]:
    """One entry per image of an `analyze` JSONL; several records of one image (other backends) are kept
    together, the last as the entry's result and the others for the disagreements section."""
    entries: dict[str, ImageEntry] = {}
    failures: list[ImageEntry] = []
    for number, record, problem in _records(path):
        if record is None:
            failures.append(ImageEntry(f"{path.name}:{number}", "", problem=problem))
            continue
        try:
            result = AnalysisResult.from_record(record)
        except (UserError, KeyError, TypeError, ValueError) as exc:
            failures.append(
                ImageEntry(f"{path.name}:{number}", str(record.get("task", "")), problem=str(exc))
            )
            continue
        key = result.source or f"{path.name}:{number}"
        if key in entries:
            entries[key].others.append(entries[key].result)  # type: ignore[arg-type]
            entries[key].result = result
        else:
            entries[key] = ImageEntry(key, result.task, result=result)
    if not entries and not failures:
        raise ReportError(f"{path.name} holds no records; write one with `napari-fracto analyze ... --out`")
    cache: dict[Any, Any] = {}
    for entry in entries.values():
        if images:
            entry.loader = _jsonl_loader(entry, path.parent, cache)
    return [*entries.values(), *failures]


def _jsonl_loader(entry: ImageEntry, base: Path, cache: dict[Any, Any]) -> Callable[[], Any]:
    part = entry.request.complex_part if entry.request is not None else "phase"

    def load() -> Any:
        array, entry.metadata = _load_plane(entry.name, base, part, cache)
        return array

    return load


# --- corrections dataset ---------------------------------------------------------------------------


def from_dataset(
    ds: Dataset,
    *,
    split: str | None = None,
    task: str | None = None,
    reviewed_only: bool = True,
    limit: int | None = None,
) -> list[ImageEntry]:
    """One entry per item of an open dataset: its reviewed items (or all with a review), optionally of
    one split. Images are the stored ones (read from `ds` when drawn: keep it open until then)."""
    from napari_fracto.dataset import Status

    status = Status.REVIEWED if reviewed_only else None
    items = [i for i in ds.iter_items(task=task, split=split, status=status) if i.review is not None]
    if limit is not None:
        items = items[:limit]
    entries = []
    for item in items:
        review = item.review
        assert review is not None
        entries.append(
            ImageEntry(
                item.image.original_name or item.image_id[:12],
                review.task,
                result=review.prediction(),
                review=review,
                split=item.image.split,
                loader=lambda i=item.image_id: ds.image_array(i),
            )
        )
    return entries


def task_of(entries: Iterable[ImageEntry]) -> str:
    """The one task of the entries, or 'mixed'."""
    tasks = {e.task for e in entries if e.task}
    return tasks.pop() if len(tasks) == 1 else ("mixed" if tasks else "")
