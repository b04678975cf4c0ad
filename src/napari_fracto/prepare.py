"""`prepare(request, array)`: the one place an analysis request and a stored array become model input.

Analyze, the batch CLI, autolabel, evaluation, in-context examples and training call it, so the pixels an
adapter is trained on are the pixels it is later shown. `chat(...)` is the one place the chat is built.
No Qt or torch (PIL and numpy only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_fracto.request import AnalysisRequest, Crop, Geometry

if TYPE_CHECKING:
    from PIL.Image import Image

    from napari_fracto.backends.base import VLMRequest
    from napari_fracto.geometry import Region
    from napari_fracto.prompts import Example
    from napari_fracto.ptycho.prepare import ScanGeometry
    from napari_fracto.vocabulary import Vocabulary

MIN_TILE = 32


@dataclass
class Tile:
    """One region of the prepared plane and the image the model is shown for it (None: unusable)."""

    region: Region
    image: Image | None
    problem: str = ""


@dataclass
class ModelInput:
    """What the model is shown for a request: tiles of the prepared plane and where they sit."""

    plane: np.ndarray  # the plane after display options (cropped, ramp removed...), before tiling
    offset: tuple[int, int]  # (row, col) of the plane's top-left pixel in the stored array
    tiles: list[Tile]
    preprocessing: str  # what was done, in words, for the reviewer
    evidence_input: np.ndarray  # the complex object (or real phase) as shown, for the measures
    problems: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.plane.shape[1])

    @property
    def height(self) -> int:
        return int(self.plane.shape[0])


def resolve(request: AnalysisRequest, array: Any, geometry: ScanGeometry | None) -> AnalysisRequest:
    """Freeze what the live scan geometry decides into the request: the crop region and the scan facts.

    Done once, where the positions are known (Analyze, the CLI); afterwards the request alone reproduces
    the model input, without the product file.
    """
    from napari_fracto.ptycho.display import scanned_region

    if geometry is None:
        return request
    n = 0 if geometry.positions_px is None else len(geometry.positions_px)
    facts = Geometry(
        probe_shape=tuple(int(v) for v in geometry.probe_shape) if geometry.probe_shape else None,
        scan_step_px=geometry.scan_step_px,
        n_positions=n,
    )
    crop = request.crop
    display = request.display
    if display is not None and display.crop and crop is None and geometry.can_crop:
        shape = np.shape(array)[-2:]
        rows, cols = scanned_region(geometry.positions_px, geometry.probe_shape, shape)
        crop = Crop(int(rows.start), int(rows.stop), int(cols.start), int(cols.stop))
    return request.with_changes(geometry=facts, crop=crop)


def prepare(request: AnalysisRequest, array: Any) -> ModelInput:
    """The model input for `request` on `array` (the stored image or the layer's plane).

    Raises `imaging.ImageError` (a stack, an empty image) or ValueError for display options that do not
    fit the image, with messages that say what to do.
    """
    from napari_fracto import imaging
    from napari_fracto.ptycho.prepare import prepare_image

    plane = imaging.as_plane(array)  # `request.plane` names where the plane sat; `array` is that plane
    if request.phase_scale is not None and np.asarray(plane).dtype.kind in "iu":
        plane = np.asarray(plane, dtype=np.float64) * float(request.phase_scale)  # counts -> radians
    region = request.crop.as_slices() if request.crop is not None else None
    prepared = prepare_image(plane, request.display, part=request.complex_part, region=region)
    if request.display is None and request.crop is not None:  # an SEM image without its data bar
        prepared = _without_bar(prepared, request)
    shown = prepared.image
    height, width = shown.shape[:2]
    tiles: list[Tile] = []
    problems: list[str] = []
    regions = tile_regions(width, height, request.tiles)
    for index, tile_region in enumerate(regions):
        y0, x0 = int(tile_region.y0), int(tile_region.x0)
        part = shown[y0 : y0 + int(tile_region.height), x0 : x0 + int(tile_region.width)]
        try:
            image = imaging.prepare_model_image(
                part, request.max_image_tokens, complex_part=request.complex_part
            )
            tiles.append(Tile(tile_region, image))
        except imaging.ImageError as exc:
            if len(regions) == 1:
                raise
            problem = f"tile {index + 1} skipped: {exc}"  # e.g. a tile of NaN padding
            tiles.append(Tile(tile_region, None, problem))
            problems.append(problem)
    return ModelInput(
        shown, prepared.offset, tiles, prepared.preprocessing, prepared.evidence_input, problems
    )


def _without_bar(prepared: Any, request: AnalysisRequest) -> Any:
    """The stored image cut to `request.crop` (boxes map back through the offset), said in words."""
    from dataclasses import replace

    crop = request.crop
    cut = prepared.image[crop.as_slices()]
    text = f"instrument data bar left out: cropped to rows {crop.r0}:{crop.r1}, columns {crop.c0}:{crop.c1}"
    if not request.context.magnification.strip():
        text += (
            "; no pixel size in the file's metadata and the bar's scale is not read (no text recognition):"
            " type the magnification or pixel size into the context"
        )
    return replace(prepared, image=cut, offset=(crop.r0, crop.c0), preprocessing=text, evidence_input=cut)


def tile_regions(width: int, height: int, tiles: int) -> list[Region]:
    """`tiles` x `tiles` regions covering the image (one region for tiles <= 1)."""
    from napari_fracto import geometry

    if tiles <= 1:
        return [geometry.Region(0, 0, width, height)]
    side = max(-(-max(width, height) // tiles), MIN_TILE)
    return geometry.plan_tiles(width, height, side)


def example_image(array: Any, max_image_tokens: int) -> Image:
    """An in-context example's image as the model sees it: the stored image within the query's budget."""
    from napari_fracto.imaging import prepare_model_image

    return prepare_model_image(array, max_image_tokens)


def vocabularies(
    request: AnalysisRequest, vocab: Vocabulary | None = None
) -> tuple[Vocabulary, Vocabulary | None]:
    """The task's vocabulary (`vocab` when already loaded) and, when asked for, the advice vocabulary."""
    from napari_fracto.vocabulary import advice_vocabulary, load_vocabulary

    vocab = vocab or load_vocabulary(request.task)
    return vocab, advice_vocabulary(vocab.task) if request.advice else None


def chat(
    request: AnalysisRequest,
    image: Any,
    examples: Sequence[Example] = (),
    vocab: Vocabulary | None = None,
) -> VLMRequest:
    """The chat the model is sent for one image (or tile) of `request`; the same for training."""
    from napari_fracto import prompts

    vocab, advice_vocab = vocabularies(request, vocab)
    context = None if request.context.is_empty() else request.context
    return prompts.build_request(
        vocab,
        image,
        context=context,
        examples=examples,
        max_new_tokens=request.max_new_tokens,
        advice_vocab=advice_vocab,
        recon_settings=request.recon_settings.strip(),
        localise=vocab.boxes,  # a task defined without boxes is asked for labels only
    )


def example_refs(examples: Sequence[Example]) -> tuple[Any, ...]:
    """The chosen examples as they go in the request: dataset image id, exact answer text, context."""
    from napari_fracto.request import ExampleRef

    return tuple(ExampleRef(ex.image_id, ex.answer_text, ex.context) for ex in examples)
