"""Prompts for the VLM and the canonical answer format it is asked for (and fine-tuned on).

One function builds every request (zero-shot, few-shot, with or without boxes, with or without
parameter advice) so all backends, the benchmark and the training data see the same text.

Canonical answer (what `format_answer` writes and `parsing.parse_response` reads)::

    {"labels": [{"label": "cleavage facets", "confidence": 0.8, "bbox_2d": [x1, y1, x2, y2]}],
     "advice": ["Enable position correction"]}

`bbox_2d` is on Qwen3-VL's 0-1000 grid of the image sent; `confidence`, `bbox_2d` and `advice` are optional.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from napari_fracto.backends.base import Turn, VLMRequest
from napari_fracto.findings import AnalysisContext, Finding
from napari_fracto.geometry import GRID
from napari_fracto.vocabulary import Vocabulary

# Bump (as a string of an integer) whenever the text sent to the model or the answer format changes:
# results record it, and an adapter fine-tuned on one version may behave differently under another.
# Vocabulary edits do not need a bump (results record the vocabulary version separately).
PROMPT_VERSION = "1"


@dataclass(frozen=True)
class Example:
    """An in-context example: an image and the canonical answer for it (from `format_answer`)."""

    image: Any
    answer_text: str
    context: AnalysisContext | None = None
    image_id: str = ""  # the dataset image it shows, so the request can name it


def response_schema(
    vocab: Vocabulary, *, localise: bool = True, advice_vocab: Vocabulary | None = None
) -> dict[str, Any]:
    """JSON schema of the canonical answer, for servers that support structured output."""
    item: dict[str, Any] = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": vocab.names()},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["label"],
        "additionalProperties": False,
    }
    if localise:
        item["properties"]["bbox_2d"] = {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": GRID},
            "minItems": 4,
            "maxItems": 4,
        }
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"labels": {"type": "array", "items": item}},
        "required": ["labels"],
        "additionalProperties": False,
    }
    if advice_vocab is not None:
        schema["properties"]["advice"] = {
            "type": "array",
            "items": {"type": "string", "enum": advice_vocab.names()},
        }
    return schema


def _label_list(vocab: Vocabulary) -> str:
    return "\n".join(f"- {label.name}: {label.definition}" for label in vocab.labels)


def system_prompt(vocab: Vocabulary, *, localise: bool = True, advice_vocab: Vocabulary | None = None) -> str:
    """The system turn: the task, the labels with definitions, and the exact output format."""
    parts = [f"You are an expert in {vocab.title}."]
    if vocab.description:
        parts.append(vocab.description)
    parts.append(f"Use only these labels, spelled exactly as written:\n{_label_list(vocab)}")
    for name in vocab.exclusive_labels:
        parts.append(f'"{name}" means none of the other labels apply: never combine it with another label.')
    if localise:
        example = '{"labels": [{"label": "<label>", "confidence": 0.9, "bbox_2d": [x1, y1, x2, y2]}]'
        parts.append(
            "For every region where a label is visible, give a box bbox_2d = [x1, y1, x2, y2] in integer "
            f"coordinates from 0 to {GRID} relative to the image: (0, 0) is the top-left corner, "
            f"({GRID}, {GRID}) the bottom-right, x runs left to right and y top to bottom. "
            "A label may appear several times, once per region; omit bbox_2d for a label that covers "
            "the whole image."
        )
    else:
        example = '{"labels": [{"label": "<label>", "confidence": 0.9}]'
    if advice_vocab is not None:
        example += ', "advice": ["<advice>"]'
        parts.append(
            'Also recommend reconstruction parameter changes, as the list "advice", using only these '
            f"items spelled exactly as written:\n{_label_list(advice_vocab)}"
        )
        for name in advice_vocab.exclusive_labels:
            parts.append(f'"{name}" means no other advice applies: never combine it with other advice.')
    example += "}"
    if vocab.exclusive_labels:
        empty = f'If nothing else applies, give the single label "{vocab.exclusive_labels[0]}".'
    else:
        empty = 'If none of the labels is visible, answer {"labels": []}.'
    parts.append(
        "Set confidence to your probability (0 to 1) that the label is present. Answer with JSON only, "
        f"no other text, in this form:\n{example}\n{empty}"
    )
    return "\n\n".join(parts)


def context_text(context: AnalysisContext | None) -> str:
    """The sample context as prompt lines; empty when nothing is known (nothing is then inserted)."""
    if context is None or context.is_empty():
        return ""
    fields = [
        ("Material", context.material),
        ("Sample type", context.sample_type),
        ("Magnification", context.magnification),
        ("Instrument", context.instrument),
        ("Notes", context.notes),
    ]
    lines = [f"{name}: {value.strip()}" for name, value in fields if value and value.strip()]
    return "Sample information:\n" + "\n".join(lines) if lines else ""


def user_text(context: AnalysisContext | None = None, recon_settings: str = "") -> str:
    """The instruction that goes with each image (identical for examples and the query).

    `recon_settings` (ptychography: how the reconstruction was made, free text) is inserted only when
    given, like the context, so the prompt without it is unchanged.
    """
    text = "Which of the listed labels apply to this image? Answer with JSON in the given form."
    blocks = [context_text(context)]
    if recon_settings and recon_settings.strip():
        blocks.append("Reconstruction settings:\n" + recon_settings.strip())
    extra = "\n\n".join(b for b in blocks if b)
    return f"{extra}\n\n{text}" if extra else text


def build_request(
    vocab: Vocabulary,
    image: Any,
    *,
    context: AnalysisContext | None = None,
    examples: Sequence[Example] = (),
    max_new_tokens: int = 512,
    localise: bool = True,
    advice_vocab: Vocabulary | None = None,
    recon_settings: str = "",
) -> VLMRequest:
    """The chat request for one image: system turn, in-context examples as user/assistant turns, query.

    `recon_settings` belong to the query image only (examples carry their own context, not these).
    """
    turns = [Turn("system", [system_prompt(vocab, localise=localise, advice_vocab=advice_vocab)])]
    for example in examples:
        turns.append(Turn("user", [example.image, user_text(example.context)]))
        turns.append(Turn("assistant", [example.answer_text]))
    turns.append(Turn("user", [image, user_text(context, recon_settings)]))
    return VLMRequest(
        turns=turns,
        max_new_tokens=max_new_tokens,
        json_schema=response_schema(vocab, localise=localise, advice_vocab=advice_vocab),
    )


def _grid_int(value: float) -> int:
    return int(min(max(round(value), 0), GRID))


def format_answer(findings: Iterable[Finding], advice: Iterable[str] = ()) -> str:
    """The canonical JSON answer for findings whose boxes are on the 0-1000 grid (ints in the output).

    This exact text is the fine-tuning target and the in-context example answer, so it is compact,
    deterministic and read back unchanged by `parse_response`. Confidences are rounded to 2 decimals.
    """
    items = []
    for finding in findings:
        item: dict[str, Any] = {"label": finding.label}
        if finding.confidence is not None:
            item["confidence"] = round(min(max(float(finding.confidence), 0.0), 1.0), 2)
        if finding.box is not None:
            item["bbox_2d"] = [_grid_int(v) for v in finding.box.as_list()]
        items.append(item)
    answer: dict[str, Any] = {"labels": items}
    advice = list(advice)
    if advice:
        answer["advice"] = advice
    return json.dumps(answer, ensure_ascii=False)
