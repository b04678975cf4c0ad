"""Exports of the current reviews: chat JSONL for fine-tuning, a Hugging Face Parquet dataset, a flat CSV.

Every example is the review's stored request made into model input by `prepare.prepare` and its chat by
`prepare.chat` (the same pixels and text Analyze sent: display options, crop, tiles, image budget,
in-context examples), with `prompts.format_answer` of the corrected findings on the 0-1000 grid of the
tile as the answer, so training sees exactly the format the parser reads back. Each record also carries
the request itself, the evidence and what was done to the image.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_fracto.dataset.model import DatasetError, Item, Status
from napari_fracto.findings import Finding

if TYPE_CHECKING:
    from napari_fracto.dataset.core import Dataset


@dataclass(frozen=True)
class TrainingPair:
    """One example: the chat turns (images as placeholders naming their dataset image) and its parts."""

    item: Item
    messages: list[dict[str, Any]]
    prompt: str
    answer: str
    request: Any = None  # request.AnalysisRequest the example asks
    tile: int = 0
    quarter_turns: int = 0


def tile_findings(findings: Sequence[Finding], region: Any, offset: tuple[int, int]) -> list[Finding]:
    """Pixel findings of the stored image on the 0-1000 grid of `region` of the prepared plane.

    `offset` is where the prepared plane starts in the stored image (the crop); boxes wholly outside the
    region are left out, image-level findings (no box) belong to every region.
    """
    from napari_fracto.findings import Box
    from napari_fracto.geometry import pixels_to_grid

    row0, col0 = offset
    out = []
    for f in findings:
        if f.box is None:
            out.append(f)
            continue
        box = Box(f.box.x1 - col0, f.box.y1 - row0, f.box.x2 - col0, f.box.y2 - row0)
        grid = pixels_to_grid(box, region)
        if grid.width > 0 and grid.height > 0:
            out.append(Finding(f.label, f.confidence, grid))
    return out


def _plane_size(item: Item) -> tuple[tuple[int, int], tuple[int, int]]:
    """(width, height) of the prepared plane and its (row, col) offset, from the request alone."""
    request = item.review.request if item.review else None
    crop = request.crop if request is not None and request.display is not None else None
    if crop is not None and request.display.crop:
        return (crop.c1 - crop.c0, crop.r1 - crop.r0), (crop.r0, crop.c0)
    return (item.image.width, item.image.height), (0, 0)


def training_pairs(
    item: Item, *, quarter_turns: Sequence[int] = (0,), max_image_tokens: int | None = None
) -> list[TrainingPair]:
    """The examples of one reviewed item: one per tile of its request and per rotation asked for.

    Image placeholders are `{"type": "image", "image": <dataset image id>}`: the query's own id, then
    the in-context examples' ids in the order the chat shows them.
    """
    from napari_fracto.geometry import GRID, rotate_box
    from napari_fracto.prepare import chat, tile_regions, vocabularies
    from napari_fracto.prompts import format_answer

    review = item.review
    if review is None:
        raise DatasetError(f"image {item.image_id[:12]} has no review to export")
    request = review.request.with_changes(
        task=review.task, context=review.context, advice=bool(review.advice) or review.request.advice
    )
    if max_image_tokens is not None:
        request = request.with_changes(max_image_tokens=int(max_image_tokens))
    vocab, _ = vocabularies(request)
    (width, height), offset = _plane_size(item)
    examples = [_PlaceholderExample(e.image_id, e.answer_text, e.context) for e in request.examples]
    vlm_request = chat(request, _QueryImage(item.image_id), examples, vocab=vocab)
    messages_base: list[dict[str, Any]] = []
    for turn in vlm_request.turns:
        content = [
            {"type": "text", "text": part}
            if isinstance(part, str)
            else {"type": "image", "image": part.image_id}
            for part in turn.parts
        ]
        messages_base.append({"role": turn.role, "content": content})
    prompt = "\n\n".join(p for t in vlm_request.turns for p in t.parts if isinstance(p, str))
    pairs = []
    for index, region in enumerate(tile_regions(width, height, request.tiles)):
        findings = tile_findings(review.corrected, region, offset)
        for k in quarter_turns:
            turned = [
                Finding(f.label, f.confidence, rotate_box(f.box, k, GRID, GRID) if f.box else None)
                for f in findings
            ]
            answer = format_answer(turned, review.advice)
            messages = [*messages_base, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
            pairs.append(TrainingPair(item, messages, prompt, answer, request, index, k % 4))
    return pairs


@dataclass(frozen=True)
class _QueryImage:
    image_id: str


@dataclass(frozen=True)
class _PlaceholderExample:
    """An in-context example whose image is a placeholder naming its dataset image."""

    image_id: str
    answer_text: str
    context: Any = None

    @property
    def image(self) -> _QueryImage:
        return _QueryImage(self.image_id)


def placeholder_ids(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The dataset image ids of a chat's image placeholders, in the order the chat shows them."""
    return [
        str(part["image"])
        for message in messages
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "image"
    ]


def model_image(ds: Dataset, request: Any, image_id: str, tile: int = 0, quarter_turns: int = 0) -> Any:
    """The PIL image the model is shown for `tile` of `request` on the stored image, turned like its boxes."""
    import numpy as np
    from PIL import Image

    from napari_fracto.prepare import prepare

    model_input = prepare(request, ds.image_array(image_id))
    shown = model_input.tiles[tile]
    if shown.image is None:
        raise DatasetError(
            f"image {image_id[:12]}: {shown.problem}; leave it out of the dataset or re-review it"
        )
    if quarter_turns % 4 == 0:
        return shown.image
    return Image.fromarray(np.ascontiguousarray(np.rot90(np.asarray(shown.image), quarter_turns % 4)))


def refuse_invalid(ds: Dataset) -> None:
    """DatasetError listing what `validate` flags as errors: a crafted or damaged dataset is not exported."""
    from napari_fracto.dataset.tools import validate

    errors = [p for p in validate(ds) if p.severity == "error"]
    if errors:
        shown = "; ".join(f"{p.image_id[:12] + ': ' if p.image_id else ''}{p.message}" for p in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise DatasetError(
            f"not exported: `napari-fracto dataset validate {ds.root}` finds {len(errors)} error(s): "
            f"{shown}{more}. Fix or remove those images (or run `dataset doctor`), then export again"
        )


def _items(
    ds: Dataset, task: str | None, split: str | None, status: Status | str | None, *, check: bool = True
) -> Iterator[Item]:
    """The items to export, streamed a page at a time (memory stays flat over 100,000 reviews)."""
    if check:
        refuse_invalid(ds)
    items = ds.iter_items(task=task, split=split, status=status)
    first = next(items, None)
    if first is None:
        raise DatasetError(
            f"nothing to export (task={task or 'any'}, split={split or 'any'}, status={status or 'any'}); "
            "check `napari-fracto dataset info`"
        )
    return itertools.chain([first], items)


def model_png(ds: Dataset, item: Item, tile: int = 0, complex_part: str | None = None) -> bytes:
    """The image as the model is shown it for the item's request (8-bit RGB PNG)."""
    request = _request(item, complex_part)
    buf = io.BytesIO()
    model_image(ds, request, item.image_id, tile).save(buf, "PNG")
    return buf.getvalue()


def _request(item: Item, complex_part: str | None) -> Any:
    request = item.review.request
    return request.with_changes(complex_part=complex_part) if complex_part else request


def _model_image_file(ds: Dataset, item: Item, folder: Path, tile: int, complex_part: str | None) -> Path:
    """A PNG a trainer can open with PIL: the rendered model image of one tile (written once)."""
    suffix = f"_t{tile}" if tile else ""
    target = folder / f"{item.image_id}{suffix}.png"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(model_png(ds, item, tile, complex_part))
        os.replace(tmp, target)
    return target


def export_jsonl(
    ds: Dataset,
    out: str | os.PathLike[str],
    *,
    task: str | None = None,
    split: str | None = None,
    status: Status | str | None = Status.REVIEWED,
    complex_part: str | None = None,
) -> int:
    """Write one chat example per line (one per tile); model images go to `<out stem>_images/`.

    Each line has `messages` (image parts name the files in `images`, in order), `images`, and the
    review's whole `request`, `preprocessing` and `evidence`. Returns the number of lines.
    """
    from napari_fracto.prepare import example_image

    out = Path(out)
    items = _items(ds, task, split, status)
    folder = out.with_name(f"{out.stem}_images")
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = 0
    with open(out, "w", encoding="utf-8") as fh:
        for item in items:
            if item.review is None:
                continue
            for pair in training_pairs(item):
                paths = []
                for ref in placeholder_ids(pair.messages):
                    if ref == item.image_id:
                        paths.append(str(_model_image_file(ds, item, folder, pair.tile, complex_part)))
                    else:
                        target = folder / f"{ref}_example{pair.request.max_image_tokens}.png"
                        if not target.exists():
                            folder.mkdir(parents=True, exist_ok=True)
                            example_image(ds.image_array(ref), pair.request.max_image_tokens).save(target)
                        paths.append(str(target))
                messages = _name_images(pair.messages, paths)
                record = {
                    "messages": messages,
                    "images": paths,
                    "image_id": item.image_id,
                    "tile": pair.tile,
                    "task": item.task,
                    "split": item.image.split,
                    "status": item.review.status.value,
                    "request": pair.request.to_dict(),
                    "preprocessing": item.review.preprocessing,
                    "evidence": item.review.evidence,
                }
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                lines += 1
    return lines


def _name_images(messages: list[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """The chat with its image placeholders replaced, in order, by `names`."""
    queue = iter(names)
    return [
        {
            "role": m["role"],
            "content": [
                {"type": "image", "image": next(queue)} if part.get("type") == "image" else part
                for part in m["content"]
            ],
        }
        for m in messages
    ]


def _rows(ds: Dataset, items: Iterable[Item], complex_part: str | None) -> Iterator[dict[str, Any]]:
    for item in items:
        review = item.review
        if review is None:  # an unlabelled image (status "any"): nothing to learn from
            continue
        for pair in training_pairs(item):
            name = f"{item.image_id}{f'_t{pair.tile}' if pair.tile else ''}.png"
            yield {
                "image": {"bytes": model_png(ds, item, pair.tile, complex_part), "path": name},
                "image_id": item.image_id,
                "original_name": item.image.original_name,
                "task": review.task,
                "split": item.image.split or "",
                "status": review.status.value,
                "labels": review.labels,
                "findings": json.dumps([f.to_dict() for f in review.corrected]),
                "advice": list(review.advice),
                "context": json.dumps(review.context.to_dict()),
                "prompt": pair.prompt,
                "answer": pair.answer,
                "messages": json.dumps(
                    _name_images(pair.messages, [name] * len(placeholder_ids(pair.messages)))
                ),
                "request": json.dumps(pair.request.to_dict()),
                "evidence": json.dumps(review.evidence),
                "width": item.image.width,
                "height": item.image.height,
                "reviewer": review.reviewer,
                "reviewed_at": review.created_at,
            }


def export_parquet(
    ds: Dataset,
    out_dir: str | os.PathLike[str],
    *,
    task: str | None = None,
    split: str | None = None,
    status: Status | str | None = Status.REVIEWED,
    complex_part: str | None = None,
) -> dict[str, Path]:
    """A Hugging Face `datasets` dataset as Parquet files, one per split (`train.parquet`, ...).

    Load with `datasets.load_dataset("parquet", data_dir=out_dir)`. When some images are in no split
    yet, everything goes to one `data.parquet` (with a `split` column) instead.
    """
    import datasets

    splits = ds.item_splits(task, split, status)
    _items(ds, task, split, status)  # validated, and something matches
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "image_id": datasets.Value("string"),
            "original_name": datasets.Value("string"),
            "task": datasets.Value("string"),
            "split": datasets.Value("string"),
            "status": datasets.Value("string"),
            "labels": datasets.Sequence(datasets.Value("string")),
            "findings": datasets.Value("string"),
            "advice": datasets.Sequence(datasets.Value("string")),
            "context": datasets.Value("string"),
            "prompt": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "messages": datasets.Value("string"),
            "request": datasets.Value("string"),
            "evidence": datasets.Value("string"),
            "width": datasets.Value("int32"),
            "height": datasets.Value("int32"),
            "reviewer": datasets.Value("string"),
            "reviewed_at": datasets.Value("string"),
        }
    )
    groups: dict[str, str | None] = {"data": split}
    if None not in splits:
        groups = {str(s): str(s) for s in sorted(splits)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, part_split in groups.items():
        items = ds.iter_items(task=task, split=part_split, status=status)
        path = out_dir / f"{name}.parquet"
        if _write_parquet(path, _rows(ds, items, complex_part), features):
            written[name] = path
    if not written:
        raise DatasetError("nothing to export: only unlabelled images matched; pick a status")
    return written


def _write_parquet(path: Path, rows: Iterator[dict[str, Any]], features: Any, batch: int = 64) -> int:
    """Write `rows` as a Parquet file `datasets` loads with these features, `batch` rows at a time (an
    image dataset's row groups, and what is in memory at once); returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = features.arrow_schema
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    count = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            while chunk := list(itertools.islice(rows, batch)):
                encoded = [features.encode_example(r) for r in chunk]
                writer.write_table(pa.Table.from_pylist(encoded, schema=schema))
                count += len(chunk)
        if count:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


CSV_COLUMNS = [
    "image_id", "image_path", "original_name", "task", "split", "status", "label", "confidence",
    "x1", "y1", "x2", "y2", "reviewer", "reviewed_at", "review_id",
]  # fmt: skip


def export_csv(
    ds: Dataset,
    out: str | os.PathLike[str],
    *,
    task: str | None = None,
    split: str | None = None,
    status: Status | str | None = Status.REVIEWED,
) -> int:
    """One row per corrected finding (pixel boxes); an image reviewed as having none gets one empty row."""
    items = (i for i in _items(ds, task, split, status) if i.review is not None)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with open(out, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for item in items:
            review = item.review
            assert review is not None  # unlabelled items were left out above
            base = {
                "image_id": item.image_id,
                "image_path": str(ds.image_path(item.image_id)),
                "original_name": item.image.original_name,
                "task": review.task,
                "split": item.image.split or "",
                "status": review.status.value,
                "reviewer": review.reviewer,
                "reviewed_at": review.created_at,
                "review_id": review.review_id,
            }
            for finding in review.corrected or (None,):
                row = dict(base)
                if finding is not None:
                    row["label"] = finding.label
                    row["confidence"] = "" if finding.confidence is None else finding.confidence
                    if finding.box is not None:
                        row.update(zip(("x1", "y1", "x2", "y2"), finding.box.as_list(), strict=True))
                writer.writerow(row)
                rows += 1
    return rows
