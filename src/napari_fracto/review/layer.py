"""A review on napari's Shapes layer and back: the layer shows the kept boxes of a review, each shape
named by its row id in the `finding_id` feature, so edits on the canvas map back to the right finding.

Pure (numpy only). The shapes are built by `napari_fracto.overlay.findings_to_shapes`, the one builder of
findings layers, with two columns added: `finding_id` and `mark` (a short review status in the text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from napari_fracto.findings import AnalysisResult, Box
from napari_fracto.overlay import ShapesSpec, findings_to_shapes
from napari_fracto.review.session import ReviewSession

#: `finding_id` of a shape the reviewer drew that the review has not taken in yet.
NEW_SHAPE = -1
REVIEW_METADATA = "napari_fracto_review"
_MARKS = {"accepted": "[ok] ", "edited": "[edited] ", "added": "[added] ", "pending": ""}


def review_shapes(
    session: ReviewSession,
    vocab: Any,
    *,
    image_name: str = "",
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
) -> ShapesSpec:
    """The Shapes layer of a review: kept boxed findings, the model's record in the metadata."""
    rows = session.shown_boxes()
    base = session.prediction or AnalysisResult(
        task=session.task,
        findings=[],
        raw_text="",
        backend="",
        model="",
        adapter=None,
        prompt_version="",
        vocabulary_version="",
        seconds=0.0,
        image_shape=(),
    )
    # the model's confidence stays visible on boxes the reviewer has not changed
    shown = replace(
        base,
        findings=[
            replace(r.finding(), confidence=r.original.confidence)
            if r.original is not None and not r.edited
            else r.finding()
            for r in rows
        ],
    )
    spec = findings_to_shapes(shown, vocab, image_name=image_name, scale=scale, translate=translate)
    spec.features["finding_id"] = [r.id for r in rows]
    spec.features["mark"] = [_MARKS.get(r.status, "") for r in rows]
    spec.text = {**spec.text, "string": "{mark}{label}{score}"}
    spec.metadata = {"napari_fracto": base.to_record(), REVIEW_METADATA: review_metadata(session)}
    return spec


def review_metadata(session: ReviewSession) -> dict[str, Any]:
    """What the writer needs beyond the boxes: the image-level labels and the kept advice of the review."""
    return {
        "task": session.task,
        "image_id": session.image_id,
        "image_level": [r.label for r in session.rows if r.box is None and not r.rejected],
        "advice": session.kept_advice(),
    }


def rectangle_to_box(corners: Any) -> Box:
    """The pixel Box around a napari shape's vertices (last two columns are row, col)."""
    yx = np.asarray(corners, dtype=float)[:, -2:]
    (y1, x1), (y2, x2) = yx.min(axis=0), yx.max(axis=0)
    return Box(float(x1), float(y1), float(x2), float(y2))


def read_layer(
    data: Sequence[Any], finding_ids: Sequence[Any], labels: Sequence[Any], default_label: str
) -> tuple[dict[int, Box], list[tuple[int, str, Box]]]:
    """Split a Shapes layer into known shapes (row id -> box) and new ones (shape index, label, box).

    A shape is new when its `finding_id` is missing or `NEW_SHAPE`, or repeats an id already seen (a
    copied and pasted shape keeps its id).
    """
    known: dict[int, Box] = {}
    new: list[tuple[int, str, Box]] = []
    for index, corners in enumerate(data):
        box = rectangle_to_box(corners)
        raw = finding_ids[index] if index < len(finding_ids) else NEW_SHAPE
        try:
            row_id = int(raw)
        except (TypeError, ValueError):
            row_id = NEW_SHAPE
        if row_id == NEW_SHAPE or row_id in known:
            label = labels[index] if index < len(labels) else ""
            label = label if isinstance(label, str) and label else default_label
            new.append((index, label, box))
        else:
            known[row_id] = box
    return known, new
