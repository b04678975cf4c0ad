"""One image through one model: normalise, prompt, ask, parse, put the boxes back on the pixels.

Pure and blocking (no Qt): the widget runs it in a worker thread, the CLI in a thread pool. Raises
`imaging.ImageError` / `backends.base.BackendError` with messages meant for the user.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_fracto.backends.base import CancelledError
from napari_fracto.findings import AnalysisContext, AnalysisResult, Box, Finding

if TYPE_CHECKING:
    from napari_fracto.backends.base import Backend
    from napari_fracto.prompts import Example
    from napari_fracto.ptycho.display import DisplayOptions
    from napari_fracto.ptycho.prepare import ScanGeometry
    from napari_fracto.request import AnalysisRequest, Crop
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
    crop: Crop | None = None,
    phase_scale: float | None = None,
) -> AnalysisResult:
    """Analyse one 2-D image (any dtype; RGB and complex included) and return findings in pixels.

    The keyword options become one `request.AnalysisRequest` (see `run_request`, which does the work).
    `tiles` > 1 splits the image into tiles x tiles regions, asked separately, so fine features of a
    large SEM image survive the image-token budget; boxes from each tile are mapped back to the image.
    `examples` are solved in-context examples, or a function choosing them for this image (see
    `icl.ExampleSelector`, which never picks the query itself).

    Ptychography: `display` (ramp removal, unwrapping, cropping to the scan in `geometry`) changes the
    image sent and is recorded in `preprocessing`; boxes still come back in pixels of `array`. `evidence`
    (default: on for the ptychography task) measures the image as sent and compares it with the model's
    labels. `recon_settings` (free text) goes in the prompt and, for the record, in `evidence`.
    `crop` (an SEM image without its data bar, `sem_context.sem_options`) is the region the model is shown.
    `phase_scale` (radians per value) makes an integer phase image radians, for the display and evidence.
    """
    from napari_fracto.vocabulary import load_vocabulary

    vocab = load_vocabulary(task) if isinstance(task, str) else task
    request = analysis_request(
        vocab,
        source=source,
        complex_part=complex_part,
        display=display,
        crop=crop,
        tiles=tiles,
        max_image_tokens=max_image_tokens,
        max_new_tokens=max_new_tokens,
        context=context,
        recon_settings=recon_settings,
        advice=advice,
        phase_scale=phase_scale,
    )
    return run_request(
        request,
        array,
        backend,
        examples=examples,
        geometry=geometry,
        evidence=evidence,
        cancel=cancel,
        progress=progress,
        vocab=vocab,
    )


def analysis_request(
    vocab: Vocabulary,
    *,
    source: str = "",
    complex_part: str = "phase",
    display: DisplayOptions | None = None,
    crop: Crop | None = None,
    tiles: int = 1,
    max_image_tokens: int = 1024,
    max_new_tokens: int = 512,
    context: AnalysisContext | None = None,
    recon_settings: str = "",
    advice: bool = False,
    phase_scale: float | None = None,
) -> AnalysisRequest:
    """The request `analyze_array`'s options ask (the batch's resume check builds it the same way)."""
    from napari_fracto.prompts import PROMPT_VERSION
    from napari_fracto.request import AnalysisRequest

    return AnalysisRequest(
        task=vocab.task,
        source=source,
        complex_part=complex_part,
        display=display,
        crop=crop,
        tiles=max(int(tiles), 1),
        max_image_tokens=max_image_tokens,
        max_new_tokens=max_new_tokens,
        context=context or AnalysisContext(),
        recon_settings=recon_settings.strip(),
        advice=advice,
        phase_scale=phase_scale,
        prompt_version=PROMPT_VERSION,
        vocabulary_version=vocab.version,
    )


def backend_ref(backend: Backend) -> Any:
    """The `request.BackendRef` a result of `backend` carries (never a key; the server's public URL)."""
    from napari_fracto.request import BackendRef, public_url

    return BackendRef(
        kind=backend.name,
        model=backend.model,
        adapter=backend.adapter,
        base_url=public_url(str(getattr(backend, "base_url", "") or "")),
    )


def run_request(
    request: AnalysisRequest,
    array: np.ndarray,
    backend: Backend,
    *,
    examples: Sequence[Example] | Callable[[np.ndarray], Sequence[Example]] = (),
    geometry: ScanGeometry | None = None,
    evidence: bool | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    vocab: Vocabulary | None = None,
) -> AnalysisResult:
    """Ask `backend` what `request` asks of `array`; the result carries the request as it was answered.

    `geometry` (scan positions) is resolved into the request's crop and used for the evidence; a stored
    request (evaluation, re-analysis) already has its crop. `examples` not given: none, or the request's
    own when it names examples (they must then be given as images, e.g. by evaluation).
    """
    from napari_fracto import geometry as geo
    from napari_fracto import imaging, parsing, prompts
    from napari_fracto.prepare import chat, example_refs, prepare, resolve, vocabularies
    from napari_fracto.ptycho.prepare import evidence_record

    vocab, advice_vocab = vocabularies(request, vocab)
    request = resolve(request, array, geometry)
    model_input = prepare(request, array)
    if callable(examples):
        examples = examples(model_input.plane)
    examples = list(examples)
    request = request.with_changes(
        examples=example_refs(examples),
        backend=backend_ref(backend),
        prompt_version=prompts.PROMPT_VERSION,
        vocabulary_version=vocab.version,
    )
    row0, col0 = model_input.offset
    width, height = model_input.width, model_input.height
    tiles = model_input.tiles
    started = time.perf_counter()
    findings: list[Finding] = []
    unknown: list[str] = []
    advice_out: list[str] = []
    problems: list[str] = list(model_input.problems)
    texts: list[str] = []
    second: list[dict[str, Any]] = []  # a second opinion's answers (second_opinion.SecondOpinionBackend)
    parse_ok = False
    for index, tile in enumerate(tiles):
        if cancel is not None and cancel.is_set():
            raise CancelledError("Analysis cancelled.")
        if tile.image is None:
            continue
        vlm_request = chat(request, tile.image, examples, vocab=vocab)
        vlm_request.cancel = cancel
        reply = backend.generate(vlm_request)
        region = tile.region
        texts.append(reply.text if len(tiles) == 1 else f"[tile {index + 1} {region}]\n{reply.text}")
        parsed = parsing.parse_response(reply.text, vocab, advice_vocab=advice_vocab)
        parse_ok = parse_ok or parsed.ok
        if reply.extra.get("cut_off"):  # a server said the answer hit the token limit: say so beside it
            problems.append(str(reply.extra["cut_off"]))
        if "second_opinion" in reply.extra:
            second.append(reply.extra["second_opinion"])
        if reply.extra.get("notice") and reply.extra["notice"] not in problems:  # e.g. the probe's limits
            problems.append(str(reply.extra["notice"]))
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
            progress(index + 1, len(tiles))

    if not texts:
        raise imaging.ImageError("no part of the image could be shown to the model: " + "; ".join(problems))
    findings = _dedupe(findings)
    measured: dict[str, Any] = {}
    if evidence if evidence is not None else vocab.task in EVIDENCE_TASKS:
        labels = list(dict.fromkeys(f.label for f in findings)) if parse_ok else None
        measured = evidence_record(model_input.evidence_input, geometry, labels, model_input.offset)
    if request.recon_settings:
        measured["reconstruction_settings"] = request.recon_settings
    if second:
        from napari_fracto.second_opinion import record

        firsts = {f.label: f.confidence for f in findings}
        measured["second_opinion"] = record(firsts, second, vocab)
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
        image_shape=tuple(int(n) for n in np.shape(array)),
        source=request.source,
        context=request.context,
        unknown_labels=list(dict.fromkeys(unknown)),
        advice=list(dict.fromkeys(advice_out)),
        parse_ok=parse_ok,
        problems=problems,
        preprocessing=model_input.preprocessing,
        evidence=measured,
        request=request,
    )


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
