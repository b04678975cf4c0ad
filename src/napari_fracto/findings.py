"""The result types every part of napari-fracto speaks: findings, analysis context and results.

Pure Python (no numpy, Qt or torch) so parsing, the dataset, metrics and the CLI share them cheaply.
Coordinates are pixels of the original image, x = column, y = row, unless a docstring says otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Box:
    """Axis-aligned rectangle; pixel coordinates of the original image unless stated otherwise."""

    x1: float
    y1: float
    x2: float
    y2: float

    def as_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1


@dataclass(frozen=True)
class Finding:
    """One label the model gave, optionally localised.

    `label` is the canonical vocabulary name. Parsers return `box` on Qwen3-VL's 0-1000 relative grid;
    `napari_fracto.geometry` converts it to pixels before a Finding leaves the analysis pipeline.
    """

    label: str
    confidence: float | None = None
    box: Box | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": self.confidence,
            "box": self.box.as_list() if self.box else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        box = data.get("box")
        return cls(
            label=str(data["label"]),
            confidence=data.get("confidence"),
            box=Box(*map(float, box)) if box else None,
        )


@dataclass(frozen=True)
class AnalysisContext:
    """What the scientist knows about the sample; context-aware prompts measurably help the model."""

    material: str = ""
    sample_type: str = ""
    magnification: str = ""  # with the scale and field of view when the instrument says (io.sem_metadata)
    notes: str = ""
    instrument: str = ""  # SEM settings from the file's metadata: model, kV, WD, detector, tilt

    def is_empty(self) -> bool:
        return not any((self.material, self.sample_type, self.magnification, self.notes, self.instrument))

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class ParseResult:
    """What a parser made of a model's text. Never raised from: `ok` is False when nothing parsed."""

    findings: tuple[Finding, ...] = ()
    unknown_labels: tuple[str, ...] = ()
    advice: tuple[str, ...] = ()
    ok: bool = True
    problems: tuple[str, ...] = ()


@dataclass
class AnalysisResult:
    """One analysed image: what the model said, what it meant, and who said it (for reproducibility)."""

    task: str
    findings: list[Finding]
    raw_text: str
    backend: str
    model: str
    adapter: str | None
    prompt_version: str
    vocabulary_version: str
    seconds: float
    image_shape: tuple[int, ...]
    source: str = ""
    context: AnalysisContext = field(default_factory=AnalysisContext)
    unknown_labels: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    parse_ok: bool = True
    problems: list[str] = field(default_factory=list)
    # What was done to the image before the model saw it (ptychography display options), and cheap
    # quantitative evidence measured on it; both kept so a reviewer can check the model's opinion.
    preprocessing: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    # What was asked (`request.AnalysisRequest`): the one record every stage passes on. A result made
    # without one (older files, hand-built results) gets the request its own fields stand for.
    request: Any = None

    def __post_init__(self) -> None:
        if self.request is None:
            from napari_fracto.request import legacy_request_of

            self.request = legacy_request_of(self, source=self.source, advice=bool(self.advice))

    @property
    def labels(self) -> list[str]:
        """Distinct labels in the order the model first named them."""
        return list(dict.fromkeys(f.label for f in self.findings))

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict: one line of `napari-fracto analyze --out results.jsonl`."""
        return {
            "source": self.source,
            "task": self.task,
            "labels": self.labels,
            "findings": [f.to_dict() for f in self.findings],
            "unknown_labels": list(self.unknown_labels),
            "advice": list(self.advice),
            "parse_ok": self.parse_ok,
            "problems": list(self.problems),
            "raw_text": self.raw_text,
            "backend": self.backend,
            "model": self.model,
            "adapter": self.adapter,
            "prompt_version": self.prompt_version,
            "vocabulary_version": self.vocabulary_version,
            "seconds": round(self.seconds, 4),
            "image_shape": list(self.image_shape),
            "context": self.context.to_dict(),
            "preprocessing": self.preprocessing,
            "evidence": dict(self.evidence),
            "request": self.request.to_dict(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AnalysisResult:
        """Read back what `to_record` wrote (a record without `request` gets the one it stands for)."""
        from napari_fracto.request import AnalysisRequest

        request = record.get("request")
        return cls(
            task=record["task"],
            findings=[Finding.from_dict(f) for f in record.get("findings", [])],
            raw_text=record.get("raw_text", ""),
            backend=record.get("backend", ""),
            model=record.get("model", ""),
            adapter=record.get("adapter"),
            prompt_version=record.get("prompt_version", ""),
            vocabulary_version=record.get("vocabulary_version", ""),
            seconds=float(record.get("seconds", 0.0)),
            image_shape=tuple(record.get("image_shape", ())),
            source=record.get("source", ""),
            context=AnalysisContext(**record.get("context", {})),
            unknown_labels=list(record.get("unknown_labels", [])),
            advice=list(record.get("advice", [])),
            parse_ok=bool(record.get("parse_ok", True)),
            problems=list(record.get("problems", [])),
            preprocessing=record.get("preprocessing", ""),
            evidence=dict(record.get("evidence", {})),
            request=AnalysisRequest.from_dict(request) if request is not None else None,
        )
