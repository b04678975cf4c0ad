"""Records of the corrections dataset: images, reviews and the items tools iterate over.

Pure Python (no numpy, sqlite or Qt) and built on the shared types of `napari_fracto.findings`, so the
review widget, the CLI and training read the same objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from napari_fracto.errors import UserError
from napari_fracto.findings import AnalysisContext, AnalysisResult, Finding


class DatasetError(UserError, ValueError):
    """The dataset cannot do what was asked; the message says what to do instead."""


class DatasetVersionError(DatasetError):
    """The dataset was written by a newer napari-fracto than the one reading it."""


class Status(StrEnum):
    """Where an image stands in review. UNLABELLED means no review or prediction was saved yet."""

    UNREVIEWED = "unreviewed"  # a model prediction nobody has checked
    REVIEWED = "reviewed"
    SKIPPED = "skipped"
    UNLABELLED = "unlabelled"


class Decision(StrEnum):
    """What the reviewer did with one predicted finding."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    EDITED = "edited"  # kept, but its label or box was changed


SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageRecord:
    """One stored image. `image_id` is the sha256 of the stored bytes, so ids are stable across copies."""

    image_id: str
    kind: str  # "npy" (array saved losslessly) or "file" (original bytes of a TIFF/PNG/JPEG/...)
    suffix: str
    shape: tuple[int, ...]
    dtype: str
    height: int
    width: int
    original_name: str = ""
    task: str | None = None
    split: str | None = None
    added_at: str = ""


@dataclass(frozen=True)
class ReviewRecord:
    """One saved review (or unreviewed prediction) of one image; reviews are append-only.

    `predicted` are the model's findings (pixel boxes), `decisions` says per predicted finding whether the
    reviewer accepted, rejected or edited it, `corrected` is the answer the model should have given.
    `preprocessing` and `evidence` come from the prediction (ptychography display options, measures).
    """

    image_id: str
    task: str
    status: Status
    corrected: tuple[Finding, ...] = ()
    predicted: tuple[Finding, ...] = ()
    decisions: tuple[Decision, ...] = ()
    advice: tuple[str, ...] = ()
    predicted_advice: tuple[str, ...] = ()
    context: AnalysisContext = field(default_factory=AnalysisContext)
    raw_text: str = ""
    backend: str = ""
    model: str = ""
    adapter: str | None = None
    prompt_version: str = ""
    vocabulary_version: str = ""
    reviewer: str = ""
    created_at: str = ""
    notes: str = ""
    review_id: int | None = None
    # what was done to the image before the model saw it, and the evidence measured on it (schema v2)
    preprocessing: str = ""
    evidence: dict[str, Any] = field(default_factory=dict, hash=False)
    # what the model was asked (`request.AnalysisRequest`, schema v3); older rows get the one they stand for
    request: Any = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.request is None:
            from napari_fracto.request import legacy_request_of

            advice = bool(self.predicted_advice or self.advice)
            object.__setattr__(
                self, "request", legacy_request_of(self, image_id=self.image_id, advice=advice)
            )

    @property
    def has_prediction(self) -> bool:
        return bool(self.predicted or self.predicted_advice or self.raw_text or self.model)

    def prediction(self) -> AnalysisResult | None:
        """The model output this review was made from, whole (request, evidence...), or None."""
        if not self.has_prediction:
            return None

        return AnalysisResult(
            task=self.task,
            findings=list(self.predicted),
            raw_text=self.raw_text,
            backend=self.backend,
            model=self.model,
            adapter=self.adapter,
            prompt_version=self.prompt_version,
            vocabulary_version=self.vocabulary_version,
            seconds=0.0,
            image_shape=(),
            source=self.request.source,
            context=self.context,
            advice=list(self.predicted_advice),
            preprocessing=self.preprocessing,
            evidence=dict(self.evidence),
            request=self.request,
        )

    @property
    def labels(self) -> list[str]:
        """Distinct corrected labels in order of first appearance."""
        return list(dict.fromkeys(f.label for f in self.corrected))


@dataclass(frozen=True)
class Item:
    """An image with its current (latest) review, as the tools and the review queue see it."""

    image: ImageRecord
    review: ReviewRecord | None

    @property
    def image_id(self) -> str:
        return self.image.image_id

    @property
    def status(self) -> Status:
        return self.review.status if self.review else Status.UNLABELLED

    @property
    def task(self) -> str | None:
        return self.review.task if self.review else self.image.task

    @property
    def labels(self) -> list[str]:
        return self.review.labels if self.review else []


def check_findings(findings: Any, what: str) -> tuple[Finding, ...]:
    """Findings as a tuple, refusing anything a later export or training run would choke on."""
    out = []
    for i, f in enumerate(findings or ()):
        if isinstance(f, dict):
            f = Finding.from_dict(f)
        if not isinstance(f, Finding):
            raise DatasetError(f"{what}[{i}] is a {type(f).__name__}; pass napari_fracto.findings.Finding")
        if not f.label or not f.label.strip():
            raise DatasetError(f"{what}[{i}] has an empty label; give every finding a vocabulary label")
        if f.box is not None:
            coords = f.box.as_list()
            if not all(math.isfinite(c) for c in coords):
                raise DatasetError(f"{what}[{i}] ({f.label!r}) has a non-finite box {coords}")
            if f.box.x2 < f.box.x1 or f.box.y2 < f.box.y1:
                raise DatasetError(
                    f"{what}[{i}] ({f.label!r}) box {coords} has x2 < x1 or y2 < y1; "
                    "boxes are [x1, y1, x2, y2] in pixels with x = column, y = row"
                )
        out.append(f)
    return tuple(out)


def check_decisions(decisions: Any, n_predicted: int) -> tuple[Decision, ...]:
    """One decision per predicted finding; missing decisions default to pending."""
    if decisions is None:
        return (Decision.PENDING,) * n_predicted
    decisions = tuple(decisions)
    if len(decisions) != n_predicted:
        raise DatasetError(
            f"got {len(decisions)} decisions for {n_predicted} predicted findings; "
            "give exactly one accept/reject/edited/pending decision per predicted finding"
        )
    try:
        return tuple(Decision(d) for d in decisions)
    except ValueError as exc:
        allowed = ", ".join(d.value for d in Decision)
        raise DatasetError(f"unknown decision: {exc}; use one of {allowed}") from None


def check_status(status: Any) -> Status:
    try:
        status = Status(status)
    except ValueError:
        allowed = ", ".join(s.value for s in Status if s is not Status.UNLABELLED)
        raise DatasetError(f"unknown review status {status!r}; use one of {allowed}") from None
    if status is Status.UNLABELLED:
        raise DatasetError("'unlabelled' is not a review status: it is what an image without reviews has")
    return status
