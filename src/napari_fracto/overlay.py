"""Turn an AnalysisResult into what a napari Shapes layer needs, and into one line of plain words.

Pure (numpy only, no Qt, no napari import) so the CLI, the batch report and tests share it; the Analyze
widget passes `ShapesSpec.layer_kwargs()` straight to `viewer.add_shapes`.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from napari_fracto.findings import AnalysisResult, Box

# Colour-blind-safe colours, bright enough to read on grey-scale micrographs (no black, no grey):
# Okabe & Ito (2008) without black, then Paul Tol's "muted" and "bright" colours that stay apart from
# them. Colour is never the only cue: every box also carries its label as text.
PALETTE: tuple[str, ...] = (
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#009E73",  # bluish green
    "#F0E442",  # yellow
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#44AA99",  # teal (Tol muted)
    "#999933",  # olive (Tol muted)
    "#AA3377",  # purple (Tol bright)
    "#88CCEE",  # cyan (Tol muted)
    "#EE6677",  # red (Tol bright)
)
# Labels the vocabulary does not know (e.g. a record from another vocabulary version).
FALLBACK_COLOUR = "#FFFFFF"
CANVAS_LINE_CHARS = 40  # characters per line of the canvas text overlay

FEATURE_COLUMNS: tuple[str, ...] = (
    "label",
    "confidence",
    "score",
    "backend",
    "model",
    "adapter",
    "prompt_version",
)

# Categories of the two tasks' verdicts: what the findings are called in the sentence.
_NOUNS = {"ptychography": ("artifact", "artifacts")}


class _Vocabulary(Protocol):
    def names(self) -> Sequence[str]: ...


@dataclass
class ShapesSpec:
    """Everything a Shapes layer of boxed findings needs; `data` rectangles are in (row, col) order."""

    name: str
    data: list[np.ndarray]
    features: dict[str, list[Any]]
    edge_color: list[str]
    text: dict[str, Any]
    scale: tuple[float, ...] | None = None
    translate: tuple[float, ...] | None = None
    units: tuple[str, ...] | None = None  # the image's units, so napari sees one unit across layers
    metadata: dict[str, Any] = field(default_factory=dict)
    plane: tuple[float, ...] = ()
    edge_width: float = 2.0

    def layer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `viewer.add_shapes` / `napari.layers.Shapes`."""
        kwargs: dict[str, Any] = {
            "name": self.name,
            "shape_type": "rectangle",
            "features": self.features,
            "face_color": "transparent",
            "edge_width": self.edge_width,
            "opacity": 1.0,  # napari's default 0.7 dulls the label colours on bright images
            "text": self.text,
            "metadata": self.metadata,
        }
        # napari rejects an empty colour list for zero shapes; per-shape colours only when there are shapes.
        if self.data:
            kwargs["edge_color"] = self.edge_color
        if self.scale is not None:
            kwargs["scale"] = self.scale
        if self.translate is not None:
            kwargs["translate"] = self.translate
        if self.units is not None:
            kwargs["units"] = self.units
        kwargs["ndim"] = 2 + len(self.plane)
        return kwargs


def update_findings_layer(layer: Any, spec: ShapesSpec) -> None:
    """Replace an existing findings layer's contents with `spec` (one data update, not remove + add, so
    napari redraws once and the layer keeps its place and the user's visibility choice)."""
    import pandas as pd

    layer.selected_data = set()
    with layer.events.blocker_all():
        layer.data = []
        if spec.scale is not None:
            layer.scale = spec.scale
        if spec.translate is not None:
            layer.translate = spec.translate
        if spec.units is not None:
            layer.units = spec.units
        layer.metadata = dict(spec.metadata)
        layer.features = pd.DataFrame({k: pd.Series([], dtype=object) for k in spec.features})
    if spec.data:
        layer.add_rectangles(spec.data, edge_color=spec.edge_color)
        layer.features = pd.DataFrame(spec.features)
    layer.text = spec.text
    layer.refresh()


def findings_layer_name(image_name: str) -> str:
    """The one name the findings layer of an image has, so re-running replaces it instead of stacking."""
    return f"{image_name} findings" if image_name else "findings"


def label_colour(label: str, vocab: _Vocabulary) -> str:
    """The fixed colour of a label: assigned by vocabulary order, so it never changes between images."""
    names = list(vocab.names())
    if label not in names:
        return FALLBACK_COLOUR
    return PALETTE[names.index(label) % len(PALETTE)]


def box_to_rectangle(box: Box, leading: Sequence[float] = ()) -> np.ndarray:
    """A pixel Box as a napari rectangle: corners [[y1, x1], [y1, x2], [y2, x2], [y2, x1]].

    `leading` are the data coordinates of the plane in a stack, so the box sits on that plane only.
    """
    corners = np.array(
        [[box.y1, box.x1], [box.y1, box.x2], [box.y2, box.x2], [box.y2, box.x1]],
        dtype=float,
    )
    if leading:
        corners = np.hstack([np.tile(np.asarray(leading, dtype=float), (4, 1)), corners])
    return corners


def _score(confidence: float | None) -> str:
    if confidence is None or not math.isfinite(confidence):
        return ""
    return f" {confidence:.2f}"


def findings_to_shapes(
    result: AnalysisResult,
    vocab: _Vocabulary,
    *,
    image_name: str = "",
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    units: Sequence[str] | None = None,
    plane: Sequence[float] = (),
) -> ShapesSpec:
    """Boxed findings of `result` as a ShapesSpec; image-level (unboxed) findings are left to the verdict.

    Pass the image layer's `scale`/`translate` so boxes sit on the image in physical units, and for a
    stack the data coordinates of the analysed plane (`plane`), so boxes appear on that plane only.
    """
    boxed = [f for f in result.findings if f.box is not None]
    data = [box_to_rectangle(f.box, plane) for f in boxed]  # type: ignore[arg-type]
    features: dict[str, list[Any]] = {
        "label": [f.label for f in boxed],
        "confidence": [math.nan if f.confidence is None else float(f.confidence) for f in boxed],
        "score": [_score(f.confidence) for f in boxed],
        "backend": [result.backend] * len(boxed),
        "model": [result.model] * len(boxed),
        "adapter": [result.adapter or ""] * len(boxed),
        "prompt_version": [result.prompt_version] * len(boxed),
    }
    text = {
        # `score` is the confidence already formatted, empty when the model gave none, so a missing
        # confidence shows as just the label instead of "label nan".
        "string": "{label}{score}",
        "size": 10,
        "color": "white",
        "anchor": "upper_left",
    }
    return ShapesSpec(
        name=findings_layer_name(image_name),
        data=data,
        features=features,
        edge_color=[label_colour(f.label, vocab) for f in boxed],
        text=text,
        scale=tuple(float(s) for s in scale) if scale is not None else None,
        translate=tuple(float(t) for t in translate) if translate is not None else None,
        units=tuple(str(u) for u in units) if units is not None else None,
        metadata={"napari_fracto": result.to_record()},
        plane=tuple(float(p) for p in plane),
    )


def verdict_text(result: AnalysisResult, vocab: _Vocabulary | None = None) -> str:
    """One sentence a scientist reads first: what was found, nothing found, or why the answer is unusable.

    Labels are listed in vocabulary order when a vocabulary is given (stable across runs), else in the
    order the model named them.
    """
    if not result.parse_ok:
        why = "; ".join(result.problems) if result.problems else "it was not in the expected format"
        return f"The model's answer could not be read: {why}"
    labels = result.labels
    exclusive: tuple[str, ...] = ()
    if vocab is not None:
        order = {name: i for i, name in enumerate(vocab.names())}
        labels = sorted(labels, key=lambda name: order.get(name, len(order)))
        exclusive = tuple(getattr(vocab, "exclusive_labels", ()))
    # An exclusive label ("No obvious artifacts") is a verdict, not a finding to count.
    found = [name for name in labels if name not in exclusive]
    singular, plural = _NOUNS.get(result.task, ("feature", "features"))
    if not found:
        said = [name for name in labels if name in exclusive]
        if said:
            return ", ".join(said)
        return f"No obvious {plural}" if result.task in _NOUNS else "No features recognised"
    listed = ", ".join(found)
    if result.task in _NOUNS:
        noun = singular if len(found) == 1 else plural
        return f"{len(found)} {noun} flagged: {listed}"
    return f"Found: {listed}" + _implied_modes_text(vocab, found)


def _implied_modes_text(vocab: Any, labels: list[str]) -> str:
    """'; suggests ductile overload' when the features found imply failure modes (`failure_modes`)."""
    if vocab is None or not getattr(vocab, "mode_task", ""):
        return ""
    from napari_fracto.failure_modes import implied_modes

    modes = implied_modes(vocab, labels)
    return f"; suggests {' or '.join(modes)}" if modes else ""


def unknown_labels_text(result: AnalysisResult) -> str:
    """The labels the model used that are not in the vocabulary (shown, never silently dropped)."""
    if not result.unknown_labels:
        return ""
    return "Not in the vocabulary: " + ", ".join(result.unknown_labels)


def advice_text(result: AnalysisResult) -> str:
    """The reconstruction advice as a list under the verdict; empty when none was asked or given."""
    if not result.advice:
        return ""
    return "Suggested fixes:\n" + "\n".join(f"• {item}" for item in result.advice)


def as_sentence(text: str) -> str:
    """`text` capitalised and ending with a full stop, for messages built from lower-case fragments."""
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def label_definition(vocab: Any, label: str) -> str:
    """The vocabulary's one-line definition of `label`, "" for a label it does not know."""
    try:
        entry = vocab.get(label)
    except (KeyError, LookupError):
        return ""
    return getattr(entry, "definition", "") or ""


def canvas_text(result: AnalysisResult, verdict: str) -> str:
    """The canvas summary: verdict, whole-image labels, a pointer to disagreeing evidence.

    Short lines, because napari does not wrap overlay text and a long line runs off a narrow canvas.
    """
    image_level = [f.label for f in result.findings if f.box is None]
    lines = [verdict]
    if image_level:
        lines.append("Whole image: " + ", ".join(dict.fromkeys(image_level)))
    disagreements = list(result.evidence.get("disagreements", ()))
    if disagreements:
        lines.append(f"Evidence disagrees ({len(disagreements)}): see the Analyze panel")
    return "\n".join("\n".join(textwrap.wrap(line, CANVAS_LINE_CHARS)) for line in lines)
