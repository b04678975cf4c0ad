"""npe2 writer: a findings Shapes layer to JSON or CSV with pixel boxes (File > Save Selected Layers).

Boxes are `[x1, y1, x2, y2]` in pixels of the image (x = column, y = row): the bounding box of each shape,
so a rotated or non-rectangular shape is written as the rectangle around it. Labels and confidences come
from the layer's `features`; the model, prompt and raw answer from `metadata["napari_fracto"]` (what the
Analyze widget stores); image-level labels from the Review widget's `metadata["napari_fracto_review"]`,
else from the model's unboxed findings. Other Shapes layers are written too, with empty labels.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from napari_fracto.errors import UserError

FORMAT = "napari-fracto findings"
FORMAT_VERSION = 2  # 2: the whole analysis record (request included) under 'analysis'
CSV_COLUMNS = ("label", "confidence", "x1", "y1", "x2", "y2", "plane", "source")


class WriterError(UserError, ValueError):
    """The layer cannot be written as asked; the message says what to do."""


def _column(features: Any, name: str, n: int) -> list[Any]:
    if features is None:
        return [None] * n
    try:
        values = list(features[name]) if name in features else []
    except (KeyError, TypeError):
        values = []
    return values + [None] * (n - len(values)) if len(values) < n else values[:n]


def _confidence(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def findings_table(data: Sequence[Any], attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON document of a Shapes layer: provenance plus one finding per shape and image-level label."""
    import numpy as np

    from napari_fracto.review.layer import REVIEW_METADATA, rectangle_to_box

    metadata = attributes.get("metadata") or {}
    record = metadata.get("napari_fracto") or {}
    review = metadata.get(REVIEW_METADATA) or {}
    features = attributes.get("features")
    n = len(data)
    labels = _column(features, "label", n)
    confidences = _column(features, "confidence", n)
    findings: list[dict[str, Any]] = []
    for corners, label, conf in zip(data, labels, confidences, strict=True):
        corners = np.asarray(corners, dtype=float)
        if corners.ndim != 2 or corners.shape[1] < 2 or not np.isfinite(corners).all():
            raise WriterError(
                f"a shape has unusable vertices {corners.tolist()}; delete or redraw it and save again"
            )
        box = rectangle_to_box(corners)
        plane = [round(v) for v in corners[0, :-2]]
        findings.append(
            {
                "label": "" if label is None else str(label),
                "confidence": _confidence(conf),
                "box": [round(v, 3) for v in box.as_list()],
                "plane": plane or None,
            }
        )
    if REVIEW_METADATA in metadata:
        image_level = list(review.get("image_level", []))
    else:
        image_level = [f["label"] for f in record.get("findings", []) if not f.get("box")]
    for label in dict.fromkeys(image_level):
        findings.append({"label": str(label), "confidence": None, "box": None, "plane": None})
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "layer": attributes.get("name", ""),
        "source": record.get("source", ""),
        "task": review.get("task") or record.get("task", ""),
        "image_id": review.get("image_id", ""),
        "coordinates": "pixels of the image, box = [x1, y1, x2, y2], x = column, y = row",
        "findings": findings,
        "model": {
            key: record.get(key)
            for key in ("backend", "model", "adapter", "prompt_version", "vocabulary_version")
            if key in record
        },
        "raw_text": record.get("raw_text", ""),
        # what the model was asked and answered, whole, so Review can take this file as it is
        "analysis": dict(record) if record else None,
    }


def _csv_text(doc: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for f in doc["findings"]:
        box = f["box"] or ["", "", "", ""]
        conf = "" if f["confidence"] is None else f["confidence"]
        plane = " ".join(str(p) for p in f["plane"]) if f["plane"] else ""
        writer.writerow([f["label"], conf, *box, plane, doc["source"]])
    return buf.getvalue()


def write_findings(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer for Shapes: `.json` (full record) or `.csv` (one row per finding)."""
    from napari_fracto.paths import atomic_write_text

    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise WriterError(
            f"cannot write findings as {suffix or 'a file without extension'}; use .json or .csv"
        )
    doc = findings_table(list(data or []), attributes or {})
    text = json.dumps(doc, indent=2, ensure_ascii=False) if suffix == ".json" else _csv_text(doc)
    atomic_write_text(target, text)
    return [str(target)]
