"""The analysis request: everything that decides what a model is shown and asked, frozen and versioned.

Analyze, the batch CLI, autolabel, evaluation, in-context examples and training all pass this one record
(with its result, `findings.AnalysisResult`), so an adapter is trained on exactly what it will later be
asked. It is stored whole in the dataset, in a findings layer's metadata, in the CLI's JSONL and in the
writer's JSON, and read back whole from each (`to_dict` / `from_dict`). Older records are upgraded by
`from_legacy`. No Qt or torch; `napari_fracto.prepare` turns it into model input.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from napari_fracto.errors import UserError
from napari_fracto.findings import AnalysisContext
from napari_fracto.ptycho.display import DisplayOptions

REQUEST_VERSION = 1
DEFAULT_IMAGE_TOKENS = 1024
DEFAULT_NEW_TOKENS = 512
COMPLEX_PARTS = ("phase", "amplitude")


class RequestError(UserError, ValueError):
    """A stored request cannot be read; the message says which field and what to do."""


@dataclass(frozen=True)
class Crop:
    """The scanned region actually cut out, in pixels of the stored plane (rows r0:r1, columns c0:c1)."""

    r0: int
    r1: int
    c0: int
    c1: int

    def as_slices(self) -> tuple[slice, slice]:
        return slice(self.r0, self.r1), slice(self.c0, self.c1)


@dataclass(frozen=True)
class Geometry:
    """What is known of the scan (positions themselves stay in the product file: they can be 10^5 points)."""

    probe_shape: tuple[int, int] | None = None
    scan_step_px: float | None = None
    n_positions: int = 0


@dataclass(frozen=True)
class ExampleRef:
    """One solved in-context example: the dataset image it shows and the exact answer text it carried."""

    image_id: str
    answer_text: str
    context: AnalysisContext | None = None


@dataclass(frozen=True)
class BackendRef:
    """Which model answered (never a key): backend kind, model id or folder, adapter, server host."""

    kind: str = ""
    model: str = ""
    adapter: str | None = None
    base_url: str = ""


@dataclass(frozen=True)
class AnalysisRequest:
    """One image's analysis, as asked. Change a field with `replace`; never copy fields into another shape."""

    task: str
    source: str = ""  # the file (or layer name) the image came from
    image_id: str = ""  # sha256 of the stored image, once it is in a dataset
    plane: tuple[int, ...] = ()  # leading indices of the plane in an N-D stack
    complex_part: str = "phase"
    display: DisplayOptions | None = None  # None: the image as stored (no ptychography display processing)
    crop: Crop | None = None
    geometry: Geometry = field(default_factory=Geometry)
    tiles: int = 1
    max_image_tokens: int = DEFAULT_IMAGE_TOKENS
    max_new_tokens: int = DEFAULT_NEW_TOKENS
    context: AnalysisContext = field(default_factory=AnalysisContext)
    recon_settings: str = ""
    advice: bool = False
    examples: tuple[ExampleRef, ...] = ()
    # radians per stored value of an integer phase image (a 16-bit phase TIFF); None: values are radians
    phase_scale: float | None = None
    backend: BackendRef = field(default_factory=BackendRef)
    prompt_version: str = ""
    vocabulary_version: str = ""
    version: int = REQUEST_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task.strip():
            raise RequestError("a request needs a task, e.g. 'fracture' or 'ptychography'")
        if self.complex_part not in COMPLEX_PARTS:
            raise RequestError(f"complex_part must be 'phase' or 'amplitude', not {self.complex_part!r}")
        if int(self.tiles) < 1:
            raise RequestError(f"tiles must be 1 or more, got {self.tiles}")
        if int(self.max_image_tokens) < 1 or int(self.max_new_tokens) < 1:
            raise RequestError("max_image_tokens and max_new_tokens must be at least 1")
        if self.phase_scale is not None and not (0 < float(self.phase_scale) < float("inf")):
            raise RequestError(
                f"phase_scale must be a positive number of radians per value, not {self.phase_scale}"
            )

    def with_changes(self, **changes: Any) -> AnalysisRequest:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; `from_dict(to_dict(r)) == r`."""
        out = asdict(self)
        out["plane"] = list(self.plane)
        out["examples"] = [
            {**asdict(e), "context": e.context.to_dict() if e.context else None} for e in self.examples
        ]
        if self.geometry.probe_shape is not None:
            out["geometry"]["probe_shape"] = list(self.geometry.probe_shape)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> AnalysisRequest:
        """A request read back from JSON; refuses what a newer napari-fracto wrote, names a bad field."""
        if not isinstance(data, dict):
            raise RequestError(f"an analysis request is a JSON object, got {type(data).__name__}")
        version = data.get("version", REQUEST_VERSION)
        if not isinstance(version, int) or version > REQUEST_VERSION:
            raise RequestError(
                f"this analysis request is version {version}, newer than this napari-fracto reads "
                f"({REQUEST_VERSION}); upgrade napari-fracto to read it"
            )
        try:
            return cls(
                task=str(data["task"]),
                source=str(data.get("source", "")),
                image_id=str(data.get("image_id", "")),
                plane=tuple(int(i) for i in data.get("plane", ())),
                complex_part=str(data.get("complex_part", "phase")),
                display=_build(DisplayOptions, data.get("display")),
                crop=_build(Crop, data.get("crop"), int),
                geometry=_geometry(data.get("geometry")),
                tiles=int(data.get("tiles", 1)),
                max_image_tokens=int(data.get("max_image_tokens", DEFAULT_IMAGE_TOKENS)),
                max_new_tokens=int(data.get("max_new_tokens", DEFAULT_NEW_TOKENS)),
                context=_context(data.get("context")),
                recon_settings=str(data.get("recon_settings", "")),
                advice=bool(data.get("advice", False)),
                examples=tuple(_example(e) for e in data.get("examples", ())),
                phase_scale=None if data.get("phase_scale") is None else float(data["phase_scale"]),
                backend=_build(BackendRef, data.get("backend")) or BackendRef(),
                prompt_version=str(data.get("prompt_version", "")),
                vocabulary_version=str(data.get("vocabulary_version", "")),
                version=REQUEST_VERSION,
            )
        except RequestError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise RequestError(f"unreadable analysis request ({type(exc).__name__}: {exc})") from None


def _build(cls: type, data: Any, cast: Any = None) -> Any:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise RequestError(f"{cls.__name__.lower()} must be a JSON object, got {data!r}")
    names = {f.name for f in fields(cls)}
    values = {k: (cast(v) if cast else v) for k, v in data.items() if k in names}
    return cls(**values)


def _geometry(data: Any) -> Geometry:
    if not data:
        return Geometry()
    probe = data.get("probe_shape")
    step = data.get("scan_step_px")
    return Geometry(
        probe_shape=(int(probe[0]), int(probe[1])) if probe else None,
        scan_step_px=float(step) if step is not None else None,
        n_positions=int(data.get("n_positions", 0)),
    )


def _context(data: Any) -> AnalysisContext:
    if not data:
        return AnalysisContext()
    known = AnalysisContext.__dataclass_fields__
    return AnalysisContext(**{k: str(v) for k, v in dict(data).items() if k in known})


def _example(data: Any) -> ExampleRef:
    context = _context(data.get("context")) if data.get("context") else None
    return ExampleRef(str(data["image_id"]), str(data["answer_text"]), context)


def public_url(url: str) -> str:
    """A server URL safe to store: no user, password, query or fragment (keys never go in a record)."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# --- records written before the request existed ----------------------------------------------------

_CROPPED_TO = re.compile(r"cropped to rows (\d{1,9}):(\d{1,9}), columns (\d{1,9}):(\d{1,9})")


def display_from_text(preprocessing: str) -> tuple[DisplayOptions | None, Crop | None, str]:
    """Display options (and the crop done) recovered from a v2 `preprocessing` text, and the part sent.

    The text was written by `DisplayOptions.describe()` plus the notes of what was done, so the phrases
    are known; an empty text means the image went as stored.
    """
    text = preprocessing or ""
    part = "amplitude" if "(amplitude sent)" in text else "phase"
    if not text.strip():
        return None, None, part
    display = DisplayOptions(
        ramp="phase ramp removed" in text,
        unwrap="phase unwrapped" in text,
        crop="cropped to the scanned region" in text,
    )
    match = _CROPPED_TO.search(text)
    crop = Crop(*(int(g) for g in match.groups())) if match else None
    return display, crop, part


def from_legacy(
    *,
    task: str,
    context: AnalysisContext | None = None,
    preprocessing: str = "",
    evidence: dict[str, Any] | None = None,
    backend: str = "",
    model: str = "",
    adapter: str | None = None,
    prompt_version: str = "",
    vocabulary_version: str = "",
    source: str = "",
    image_id: str = "",
    advice: bool = False,
) -> AnalysisRequest:
    """The request an older record (dataset schema <= 2, a JSONL line without `request`) stands for."""
    display, crop, part = display_from_text(preprocessing)
    evidence = evidence or {}
    step = evidence.get("scan_step_px")
    return AnalysisRequest(
        task=task,
        source=source,
        image_id=image_id,
        complex_part=part,
        display=display,
        crop=crop,
        geometry=Geometry(scan_step_px=float(step) if isinstance(step, int | float) else None),
        context=context or AnalysisContext(),
        recon_settings=str(evidence.get("reconstruction_settings", "")),
        advice=advice,
        backend=BackendRef(backend, model, adapter),
        prompt_version=prompt_version,
        vocabulary_version=vocabulary_version,
    )


def legacy_request_of(record: Any, **extra: Any) -> AnalysisRequest:
    """`from_legacy` of an object with a result's or a review's fields (task, context, provenance...)."""
    names = ("task", "context", "preprocessing", "evidence", "backend", "model", "adapter", "prompt_version",
             "vocabulary_version")  # fmt: skip
    return from_legacy(**{name: getattr(record, name) for name in names}, **extra)
