"""Entries as a reader sees them: every string redacted, every picture encoded, in plain dicts.

The HTML template and the PDF pages both render these views, so the two formats cannot say different
things. Strings coming from model output stay plain text here; the template escapes them.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from napari_fracto.findings import AnalysisResult, Finding
from napari_fracto.report import figures
from napari_fracto.report.entries import ImageEntry
from napari_fracto.report.redact import Redactor

CONTEXT_FIELDS = (
    ("material", "material"),
    ("sample_type", "sample type"),
    ("magnification", "magnification"),
    ("notes", "notes"),
)


@lru_cache(maxsize=16)
def _vocabulary(task: str) -> Any:
    from napari_fracto.vocabulary import load_vocabulary

    try:
        return load_vocabulary(task)
    except (KeyError, ValueError, OSError):
        return None


def colour_function(task: str) -> Callable[[str], str]:
    """The napari colour of each label of `task` (white for labels its vocabulary does not know)."""
    from napari_fracto.overlay import FALLBACK_COLOUR, label_colour

    vocab = _vocabulary(task)
    return (
        (lambda label: label_colour(label, vocab)) if vocab is not None else (lambda label: FALLBACK_COLOUR)
    )


def _confidence(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) and math.isfinite(value) else "–"


def verdict(entry: ImageEntry) -> tuple[str, bool]:
    """(sentence, ok): the verdict `overlay.verdict_text` gives, or why there is none."""
    from napari_fracto.overlay import verdict_text

    if entry.problem:
        return f"Not analysed: {entry.problem}", False
    if entry.result is None:
        return "No model prediction stored (reviewed by hand)", True
    return verdict_text(entry.result, _vocabulary(entry.task)), entry.result.parse_ok


def _provenance(result: AnalysisResult | None, request: Any, r: Redactor) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if request is None:
        return rows
    backend = request.backend
    add = rows.append
    add(("backend", r.text(backend.kind or (result.backend if result else "")) or "–"))
    add(("model", r.name(backend.model or (result.model if result else "")) or "–"))
    add(("adapter", r.name(backend.adapter or (result.adapter if result else "") or "") or "none"))
    if backend.base_url:
        add(("server", r.text(backend.base_url)))
    add(
        ("prompt version", r.text(request.prompt_version or (result.prompt_version if result else "")) or "–")
    )
    add(
        (
            "vocabulary version",
            r.text(request.vocabulary_version or (result.vocabulary_version if result else "")) or "–",
        )
    )
    add(("display options", request.display.describe() if request.display else "image as stored"))
    if request.crop is not None:
        c = request.crop
        add(("crop", f"rows {c.r0}:{c.r1}, columns {c.c0}:{c.c1}"))
    add(("complex part", request.complex_part))
    add(("tiles", f"{request.tiles} x {request.tiles}" if request.tiles > 1 else "whole image"))
    add(("image-token budget", str(request.max_image_tokens)))
    add(("longest answer", f"{request.max_new_tokens} tokens"))
    add(("advice asked", "yes" if request.advice else "no"))
    add(("in-context examples", str(len(request.examples)) if request.examples else "none"))
    if result is not None and result.seconds:
        add(("time", f"{result.seconds:.2f} s"))
    return rows


def _metadata(entry: ImageEntry, request: Any, r: Redactor) -> list[tuple[str, str]]:
    rows = [(k, r.text(v)) for k, v in entry.metadata.items()]
    shape = entry.result.image_shape if entry.result is not None and entry.result.image_shape else ()
    if shape:
        rows.insert(0, ("image size", " x ".join(str(s) for s in shape) + " px"))
    if request is not None:
        g = request.geometry
        if g.probe_shape:
            rows.append(("probe", f"{g.probe_shape[0]} x {g.probe_shape[1]} px"))
        evidence = entry.result.evidence if entry.result is not None else {}
        step = g.scan_step_px if g.scan_step_px is not None else evidence.get("scan_step_px")
        if isinstance(step, int | float):
            how = {"given": "from the scan positions", "searched": "searched in the spectrum"}
            found = "" if g.scan_step_px is not None else how.get(str(evidence.get("step_source")), "")
            rows.append(("scan step", f"{step:.3g} px" + (f" ({found})" if found else "")))
        if g.n_positions:
            rows.append(("scan positions", str(g.n_positions)))
        if request.recon_settings:
            rows.append(("reconstruction", r.text(request.recon_settings)))
    if entry.split:
        rows.append(("dataset split", entry.split))
    return rows


def _findings(entry: ImageEntry, colour: Callable[[str], str]) -> list[dict[str, str]]:
    result, review = entry.result, entry.review
    findings: Sequence[Finding] = result.findings if result is not None else ()
    decisions = list(review.decisions) if review is not None else []
    rows = []
    for i, f in enumerate(findings):
        rows.append(
            {
                "label": f.label,
                "colour": colour(f.label),
                "confidence": _confidence(f.confidence),
                "where": "box" if f.box is not None else "whole image",
                "decision": str(decisions[i].value) if i < len(decisions) else "",
            }
        )
    return rows


def _review(entry: ImageEntry, r: Redactor) -> dict[str, Any] | None:
    review = entry.review
    if review is None:
        return None
    predicted = [f.label for f in review.predicted]
    corrected = list(dict.fromkeys(f.label for f in review.corrected))
    return {
        "status": review.status.value,
        "reviewer": r.text(review.reviewer),
        "when": review.created_at,
        "notes": r.text(review.notes),
        "corrected": corrected,
        "added": [label for label in corrected if label not in predicted],
        "removed": [label for label in dict.fromkeys(predicted) if label not in corrected],
        "advice": [r.text(a) for a in review.advice],
    }


def _pictures(entry: ImageEntry, colour: Callable[[str], str], thumbnail: bool) -> tuple[Any, Any]:
    """(detail, thumbnail) with the model's boxes (solid) and, where the reviewer changed them, the
    corrected boxes (dashed); the image is read once for both."""
    source = entry.picture_source(figures.DETAIL_PX)
    if source is None:
        return None, None
    rgb, scale = source
    findings = list(entry.result.findings) if entry.result is not None else []
    corrected: list[Finding] = []
    if entry.review is not None and list(entry.review.corrected) != findings:
        corrected = list(entry.review.corrected)
    detail = figures.draw_boxes(rgb, findings, colour, box_scale=scale, dashed_findings=corrected)
    thumb = None
    if thumbnail:
        thumb = figures.draw_boxes(
            rgb,
            findings,
            colour,
            longest=figures.THUMB_PX,
            box_scale=scale,
            dashed_findings=corrected,
            labels=False,
        )
    return detail, thumb


def image_view(entry: ImageEntry, index: int, r: Redactor, *, thumbnail: bool = True) -> dict[str, Any]:
    """Everything one image's section shows."""
    from napari_fracto.ptycho.prepare import evidence_lines

    colour = colour_function(entry.task)
    result = entry.result
    request = entry.request
    sentence, ok = verdict(entry)
    evidence = dict(result.evidence) if result is not None else {}
    context = request.context if request is not None else None
    picture, thumb = _pictures(entry, colour, thumbnail)
    return {
        "anchor": f"image-{index}",
        "index": index,
        "title": r.name(entry.name),
        "task": entry.task,
        "picture": picture,
        "thumb": thumb,
        "dashed": entry.review is not None
        and picture is not None
        and list(entry.review.corrected) != list(result.findings if result else []),
        "image_problem": r.text(entry.image_problem),
        "verdict": r.text(sentence),
        "ok": ok,
        "findings": _findings(entry, colour),
        "unknown": [r.text(u) for u in (result.unknown_labels if result else [])],
        "advice": [r.text(a) for a in (result.advice if result else [])],
        "evidence": [r.text(line) for line in evidence_lines(evidence)] if evidence else [],
        "disagreements": [r.text(d) for d in evidence.get("disagreements", ())],
        "context": [
            (label, r.text(getattr(context, key)))
            for key, label in CONTEXT_FIELDS
            if context is not None and getattr(context, key)
        ],
        "metadata": _metadata(entry, request, r),
        "review": _review(entry, r),
        "provenance": _provenance(result, request, r),
        "explanation": r.text(getattr(result, "explanation", "") or ""),
        "problems": [r.text(p) for p in (result.problems if result else [])],
        "raw_text": r.text(result.raw_text) if result is not None else "",
        "legend": [
            (label, colour(label)) for label in dict.fromkeys(f["label"] for f in _findings(entry, colour))
        ],
    }


def _labels_of(result: AnalysisResult | None) -> set[str]:
    return set(result.labels) if result is not None and result.parse_ok else set()


def disagreements(entries: Sequence[ImageEntry], r: Redactor) -> list[dict[str, str]]:
    """Where backends disagree about an image, the evidence disagrees with the model, or the reviewer
    changed the model's answer: one row each, linked to the image."""
    rows = []
    for i, e in enumerate(entries):
        base = {"anchor": f"image-{i}", "title": r.name(e.name)}
        result = e.result
        for other in e.others:
            mine, theirs = _labels_of(result), _labels_of(other)
            if mine != theirs:
                who = lambda x: r.name(x.model) or x.backend  # noqa: E731
                text = (
                    f"{who(other)} said {', '.join(sorted(theirs)) or 'nothing'}; "
                    f"{who(result)} said {', '.join(sorted(mine)) or 'nothing'}"
                )
                rows.append({**base, "kind": "backends", "text": text})
        for d in result.evidence.get("disagreements", ()) if result is not None else ():
            rows.append({**base, "kind": "evidence", "text": r.text(d)})
        view = _review(e, r)
        if view and (view["added"] or view["removed"]):
            parts = []
            if view["added"]:
                parts.append("added " + ", ".join(view["added"]))
            if view["removed"]:
                parts.append("removed " + ", ".join(view["removed"]))
            rows.append({**base, "kind": "reviewer", "text": "; ".join(parts)})
    return rows


def failures(entries: Sequence[ImageEntry], r: Redactor) -> list[dict[str, str]]:
    """Images without a usable answer or picture, and why."""
    rows = []
    for i, e in enumerate(entries):
        base = {"anchor": f"image-{i}", "title": r.name(e.name)}
        if e.problem:
            rows.append({**base, "why": r.text(e.problem)})
            continue
        if e.result is not None and not e.result.parse_ok:
            why = "; ".join(e.result.problems) or "the answer was not in the expected format"
            rows.append({**base, "why": "answer unreadable: " + r.text(why)})
        if e.result is not None and "unavailable" in e.result.evidence:
            rows.append({**base, "why": "evidence: " + r.text(e.result.evidence["unavailable"])})
        if e.image_problem:
            rows.append({**base, "why": r.text(e.image_problem)})
    return rows


def summary_view(entries: Sequence[ImageEntry], r: Redactor) -> dict[str, Any]:
    """The batch/dataset summary: counts, charts, disagreements, failures."""
    from napari_fracto.report.entries import task_of

    task = task_of(entries)
    colour = colour_function(task)
    model_counts: Counter[str] = Counter()
    review_counts: Counter[str] = Counter()
    confidences: dict[str, list[float]] = defaultdict(list)
    reviewed = 0
    for e in entries:
        model_counts.update(_labels_of(e.result))
        if e.result is not None:
            for f in e.result.findings:
                if isinstance(f.confidence, int | float) and math.isfinite(f.confidence):
                    confidences[f.label].append(float(f.confidence))
        if e.review is not None and e.review.status.value == "reviewed":
            reviewed += 1
            review_counts.update(set(e.review.labels))
    series = ["model"] + (["after review"] if reviewed else [])
    labels = sorted(
        set(model_counts) | set(review_counts), key=lambda k: (-model_counts[k] - review_counts[k], k)
    )
    counts = {label: [model_counts[label], review_counts[label]][: len(series)] for label in labels}
    return {
        "task": task,
        "n_images": sum(1 for e in entries if not e.problem),
        "n_reviewed": reviewed,
        "n_parsed": sum(1 for e in entries if e.result is not None and e.result.parse_ok),
        "frequency_chart": figures.label_frequency_chart(counts, series, colour) if counts else None,
        "frequency_table": [(label, *counts[label]) for label in labels],
        "series": series,
        "confidence_chart": figures.confidence_chart(dict(confidences), colour) if confidences else None,
        "disagreements": disagreements(entries, r),
        "failures": failures(entries, r),
    }
