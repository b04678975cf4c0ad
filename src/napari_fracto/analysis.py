"""One image through one model: normalise, prompt, ask, parse, put the boxes back on the pixels.

Pure and blocking (no Qt): the widget runs it in a worker thread, the CLI in a thread pool. Raises
`imaging.ImageError` / `backends.base.BackendError` with messages meant for the user.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from napari_fracto.backends.base import CancelledError
from napari_fracto.findings import AnalysisContext, AnalysisResult, Box, Finding

if TYPE_CHECKING:
    import numpy as np

    from napari_fracto.backends.base import Backend
    from napari_fracto.prompts import Example
    from napari_fracto.ptycho.display import DisplayOptions
    from napari_fracto.ptycho.prepare import ScanGeometry
    from napari_fracto.vocabulary import Vocabulary

# Tasks whose images get quantitative evidence beside the model's verdict by default.
EVIDENCE_TASKS = {"ptychography"}


def analyze_array(
    array: np.ndarray,
    *,
    task: str | Vocabulary,
    backend: Backend,
    context: AnalysisContext | None = None,
    max_image_tokens: int = 1024,
    max_new_tokens: int = 512,
    tiles: int = 1,
    source: str = "",
    complex_part: str = "phase",
    examples: Sequence[Example] | Callable[[np.ndarray], Sequence[Example]] = (),
    advice: bool = False,
    display: DisplayOptions | None = None,
    geometry: ScanGeometry | None = None,
    evidence: bool | None = None,
    recon_settings: str = "",
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AnalysisResult:
    """Analyse one 2-D image (any dtype; RGB and complex included) and return findings in pixels.

    `tiles` > 1 splits the image into tiles x tiles regions, asked separately, so fine features of a
    large SEM image survive the image-token budget; boxes from each tile are mapped back to the image.
    `examples` are solved in-context examples, or a function choosing them for this image (see
    `icl.ExampleSelector`, which never picks the query itself).

    Ptychography: `display` (ramp removal, unwrapping, cropping to the scan in `geometry`) changes the
    image sent and is recorded in `preprocessing`; boxes still come back in pixels of `array`. `evidence`
    (default: on for the ptychography task) measures the image as sent and compares it with the model's
    labels. `recon_settings` (free text) goes in the prompt and, for the record, in `evidence`.
    """
    from napari_fracto import geometry as geo
    from napari_fracto import imaging, parsing, prompts
    from napari_fracto.ptycho.prepare import evidence_record, prepare_image
    from napari_fracto.vocabulary import advice_vocabulary, load_vocabulary

    vocab = load_vocabulary(task) if isinstance(task, str) else task
    advice_vocab = advice_vocabulary(vocab.task) if advice else None
    context = context or AnalysisContext()
    plane = imaging.as_plane(array)  # validates: a stack or an empty array never reaches the model
    prepared = prepare_image(plane, display, geometry, part=complex_part)
    plane = prepared.image
    row0, col0 = prepared.offset
    height, width = plane.shape[:2]
    recon_settings = recon_settings.strip()
    regions = _regions(width, height, tiles)
    if callable(examples):
        examples = examples(plane)

    started = time.perf_counter()
    findings: list[Finding] = []
    unknown: list[str] = []
    advice_out: list[str] = []
    problems: list[str] = []
    texts: list[str] = []
    parse_ok = False
    for index, region in enumerate(regions):
        if cancel is not None and cancel.is_set():
            raise CancelledError("Analysis cancelled.")
        tile = plane[region.y0 : region.y0 + region.height, region.x0 : region.x0 + region.width]
        try:
            image = imaging.prepare_model_image(tile, max_image_tokens, complex_part=complex_part)
        except imaging.ImageError as exc:
            if len(regions) == 1:
                raise
            problems.append(f"tile {index + 1} skipped: {exc}")  # e.g. a tile of NaN padding
            continue
        request = prompts.build_request(
            vocab,
            image,
            context=None if context.is_empty() else context,
            examples=examples,
            max_new_tokens=max_new_tokens,
            advice_vocab=advice_vocab,
            recon_settings=recon_settings,
        )
        request.json_schema = prompts.response_schema(vocab, advice_vocab=advice_vocab)
        request.cancel = cancel
        reply = backend.generate(request)
        texts.append(reply.text if len(regions) == 1 else f"[tile {index + 1} {region}]\n{reply.text}")
        parsed = parsing.parse_response(reply.text, vocab, advice_vocab=advice_vocab)
        parse_ok = parse_ok or parsed.ok
        problems.extend(parsed.problems)
        unknown.extend(parsed.unknown_labels)
        advice_out.extend(parsed.advice)
        for finding in parsed.findings:
            box = None
            if finding.box is not None:
                box = geo.grid_to_pixels(finding.box, region, width, height)
                if box is None:
                    problems.append(f"dropped an empty or out-of-image box for '{finding.label}'")
                elif row0 or col0:  # back onto the pixels of the uncropped image
                    box = Box(box.x1 + col0, box.y1 + row0, box.x2 + col0, box.y2 + row0)
            findings.append(Finding(finding.label, finding.confidence, box))
        if progress is not None:
            progress(index + 1, len(regions))

    if not texts:
        raise imaging.ImageError("no part of the image could be shown to the model: " + "; ".join(problems))
    findings = _dedupe(findings)
    measured: dict[str, Any] = {}
    if evidence if evidence is not None else vocab.task in EVIDENCE_TASKS:
        labels = list(dict.fromkeys(f.label for f in findings)) if parse_ok else None
        measured = evidence_record(prepared.evidence_input, geometry, labels)
    if recon_settings:
        measured["reconstruction_settings"] = recon_settings
    return AnalysisResult(
        task=vocab.task,
        findings=findings,
        raw_text="\n\n".join(texts),
        backend=backend.name,
        model=backend.model,
        adapter=backend.adapter,
        prompt_version=prompts.PROMPT_VERSION,
        vocabulary_version=vocab.version,
        seconds=time.perf_counter() - started,
        image_shape=tuple(int(n) for n in array.shape),
        source=source,
        context=context,
        unknown_labels=list(dict.fromkeys(unknown)),
        advice=list(dict.fromkeys(advice_out)),
        parse_ok=parse_ok,
        problems=problems,
        preprocessing=prepared.preprocessing,
        evidence=measured,
    )


def _regions(width: int, height: int, tiles: int) -> list[Any]:
    from napari_fracto import geometry

    if tiles <= 1:
        return [geometry.Region(0, 0, width, height)]
    tile = max(-(-max(width, height) // tiles), 32)
    return geometry.plan_tiles(width, height, tile)


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """An image-level label named by several tiles is one finding; boxed findings are all kept."""
    boxed = [f for f in findings if f.box is not None]
    boxed_labels = {f.label for f in boxed}
    image_level: dict[str, Finding] = {}
    for f in findings:
        if f.box is None and f.label not in boxed_labels:
            best = image_level.get(f.label)
            if best is None or (f.confidence or 0) > (best.confidence or 0):
                image_level[f.label] = f
    order = list(dict.fromkeys(f.label for f in findings))
    return sorted(boxed + list(image_level.values()), key=lambda f: order.index(f.label))
