"""The batch's JSONL of results, appended one whole line at a time and resumable after a kill.

An archive of thousands of images takes hours; a batch that is stopped (Ctrl-C, a kill, a full disk)
must not start again from zero, and must never leave a line that breaks the next run. Each record is
written with one `write` of the complete line and flushed, so a kill can only tear the last line; opening
the file again cuts such a torn tail off (and says so) before anything is appended.

`--resume` skips a plane when the file already holds a record for it asked the same way: the same source
(file and plane) and the same `ask_fingerprint` (what the request asked, the model that answered).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_fracto.findings import AnalysisResult
    from napari_fracto.request import AnalysisRequest

log = logging.getLogger(__name__)

# What a request asked before the image was seen; the crop, scan facts and chosen examples follow from
# the image, so they are not part of the key (their count is: `shots`).
#: Context fields a batch fills per file from the SEM's metadata (sem_context.fill_context): a resumed
#: batch compares what was asked for every file, so these are left out of the comparison.
FROM_INSTRUMENT = frozenset({"magnification", "instrument"})

ASKED = (
    "task",
    "complex_part",
    "display",
    "tiles",
    "max_image_tokens",
    "max_new_tokens",
    "context",
    "recon_settings",
    "phase_scale",
    "advice",
    "prompt_version",
    "vocabulary_version",
)
_READ_CHUNK = 1 << 16


def ask_fingerprint(request: AnalysisRequest, shots: int | None = None) -> str:
    """A short hash of what `request` asks and of the model that answers it (kind, model, adapter, host).

    `shots`: in-context examples asked for (default: as many as the request holds). The source is not
    part of it (it is the other half of a result's key).
    """
    return fingerprint_of(request.to_dict(), shots)


def fingerprint_of(data: dict[str, Any], shots: int | None = None) -> str:
    """`ask_fingerprint` of a request as `AnalysisRequest.to_dict` wrote it (a JSONL record's `request`)."""
    defaults = _defaults()
    asked = {key: data.get(key, defaults[key]) for key in ASKED}
    if isinstance(asked["context"], dict):  # filled per file from the instrument (sem_context), not asked
        asked["context"] = {k: v for k, v in asked["context"].items() if k not in FROM_INSTRUMENT}
    asked["backend"] = data.get("backend", defaults["backend"])
    asked["shots"] = len(data.get("examples") or ()) if shots is None else int(shots)
    return hashlib.sha256(json.dumps(asked, sort_keys=True, default=str).encode()).hexdigest()[:20]


_DEFAULTS: dict[str, Any] = {}


def _defaults() -> dict[str, Any]:
    """A default request's fields, for records written before a field existed."""
    if not _DEFAULTS:
        from napari_fracto.request import AnalysisRequest

        _DEFAULTS.update(AnalysisRequest(task="-").to_dict())
    return _DEFAULTS


def repair_tail(path: Path) -> int:
    """Cut a torn last line (no newline: a write that a kill interrupted) off `path`; bytes removed."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        end = size
        while end > 0:  # back to the last newline, a chunk at a time (the torn line may be long)
            start = max(0, end - _READ_CHUNK)
            fh.seek(start)
            cut = fh.read(end - start).rfind(b"\n")
            if cut >= 0:
                end = start + cut + 1
                break
            end = start
        fh.truncate(end)
        return size - end


def done_keys(path: Path, on_notice: Callable[[str], None] | None = None) -> set[tuple[str, str]]:
    """`(source, ask_fingerprint)` of every readable record in `path`, read one line at a time.

    Lines that are not records (edited by hand, another program's) are skipped with one notice; their
    planes are simply analysed again.
    """
    keys: set[tuple[str, str]] = set()
    bad = 0
    for line in _lines(path):
        key = _record_key(line)
        if key is None:
            bad += 1
        else:
            keys.add(key)
    if bad and on_notice is not None:
        on_notice(f"{path}: {bad} line(s) are not readable results; their images are analysed again")
    return keys


def _lines(path: Path) -> Iterator[str]:
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                yield line


def _record_key(line: str) -> tuple[str, str] | None:
    try:
        record = json.loads(line)
        request = record["request"]
        if not isinstance(request, dict) or not isinstance(record["source"], str):
            return None
        return record["source"], fingerprint_of(request)
    except (ValueError, KeyError, TypeError):
        return None


class ResultsLog:
    """An open JSONL of results: `append` writes one whole line and flushes it.

    Opening repairs a torn tail (reported through `on_notice`), so appending never glues a new record
    onto a half-written one. `done` holds what the file already holds when `resume`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        resume: bool = False,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        notice = on_notice or (lambda message: log.warning("%s", message))
        removed = repair_tail(self.path)
        if removed:
            notice(
                f"{self.path}: removed a half-written last line ({removed} bytes, left by an interrupted "
                "run); its image is analysed again"
            )
        self.done: set[tuple[str, str]] = done_keys(self.path, notice) if resume else set()
        self._fh: IO[str] | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def has(self, source: str, fingerprint: str) -> bool:
        return (source, fingerprint) in self.done

    def append(self, result: AnalysisResult) -> None:
        if self._fh is None:
            raise ValueError(f"{self.path} is closed")
        self._fh.write(json.dumps(result.to_record()) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
