"""Exports of the current reviews: chat JSONL for fine-tuning, a Hugging Face Parquet dataset, a flat CSV.

Prompt text comes from `napari_fracto.prompts` (the same text the Analyze widget sends) and the answer is
`prompts.format_answer` with pixel boxes put on the 0-1000 grid, so training sees exactly the format the
parser reads back. Images are given to the model as `imaging.to_model_rgb` renders them (phase of complex
data by default); 8-bit PNG/JPEG originals are used as they are.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_fracto.dataset.model import DatasetError, Item, Status
from napari_fracto.findings import Finding

if TYPE_CHECKING:
    from napari_fracto.dataset.core import Dataset

_READY_SUFFIXES = (".png", ".jpg", ".jpeg")
_IMAGE = object()  # stands for the image in a prompt built once as text


@dataclass(frozen=True)
class TrainingPair:
    """One exported example: the chat turns (image as a placeholder dict) and what they were made of."""

    item: Item
    messages: list[dict[str, Any]]
    prompt: str
    answer: str


def grid_findings(findings: tuple[Finding, ...], width: int, height: int) -> list[Finding]:
    """Findings with pixel boxes converted to the model's 0-1000 grid of the whole image."""
    from napari_fracto.geometry import Region, pixels_to_grid

    region = Region.full(width, height)
    return [
        Finding(f.label, f.confidence, pixels_to_grid(f.box, region) if f.box is not None else None)
        for f in findings
    ]


def _advice_vocab(task: str, wanted: bool) -> Any | None:
    if not wanted:
        return None
    from napari_fracto.vocabulary import advice_vocabulary

    return advice_vocabulary(task)


def training_pair(item: Item, image_ref: str) -> TrainingPair:
    """The chat-message example for one reviewed item (`image_ref`: path or name of its model image)."""
    from napari_fracto import prompts
    from napari_fracto.vocabulary import load_vocabulary

    review = item.review
    if review is None:
        raise DatasetError(f"image {item.image_id[:12]} has no review to export")
    vocab = load_vocabulary(review.task)
    context = None if review.context.is_empty() else review.context
    request = prompts.build_request(
        vocab, _IMAGE, context=context, advice_vocab=_advice_vocab(review.task, bool(review.advice))
    )
    answer = prompts.format_answer(
        grid_findings(review.corrected, item.image.width, item.image.height), review.advice
    )
    messages: list[dict[str, Any]] = []
    for turn in request.turns:
        content = [
            {"type": "image", "image": image_ref} if part is _IMAGE else {"type": "text", "text": part}
            for part in turn.parts
        ]
        messages.append({"role": turn.role, "content": content})
    messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    prompt = "\n\n".join(p for t in request.turns for p in t.parts if isinstance(p, str))
    return TrainingPair(item, messages, prompt, answer)


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


def _items(ds: Dataset, task: str | None, split: str | None, status: Status | str | None) -> list[Item]:
    refuse_invalid(ds)
    items = list(ds.iter_items(task=task, split=split, status=status))
    if not items:
        raise DatasetError(
            f"nothing to export (task={task or 'any'}, split={split or 'any'}, status={status or 'any'}); "
            "check `napari-fracto dataset info`"
        )
    return items


def model_png(ds: Dataset, image_id: str, complex_part: str = "phase") -> bytes:
    """The image as the model sees it (8-bit RGB PNG)."""
    from PIL import Image

    from napari_fracto.imaging import to_model_rgb

    buf = io.BytesIO()
    Image.fromarray(to_model_rgb(ds.image_array(image_id), complex_part=complex_part)).save(buf, "PNG")
    return buf.getvalue()


def _model_image_file(ds: Dataset, item: Item, folder: Path, complex_part: str) -> Path:
    """A file a trainer can open with PIL: the original when it already is 8-bit PNG/JPEG, else a render."""
    image = item.image
    if image.kind == "file" and image.suffix in _READY_SUFFIXES and image.dtype == "uint8":
        return ds.image_path(image.image_id)
    target = folder / f"{image.image_id}.png"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(model_png(ds, image.image_id, complex_part))
        os.replace(tmp, target)
    return target


def export_jsonl(
    ds: Dataset,
    out: str | os.PathLike[str],
    *,
    task: str | None = None,
    split: str | None = None,
    status: Status | str | None = Status.REVIEWED,
    complex_part: str = "phase",
) -> int:
    """Write one chat example per line; images that need rendering go to `<out stem>_images/`."""
    out = Path(out)
    items = _items(ds, task, split, status)
    folder = out.with_name(f"{out.stem}_images")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for item in items:
            path = _model_image_file(ds, item, folder, complex_part)
            pair = training_pair(item, str(path))
            record = {
                "messages": pair.messages,
                "images": [str(path)],
                "image_id": item.image_id,
                "task": item.task,
                "split": item.image.split,
            }
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(items)


def _rows(ds: Dataset, items: list[Item], complex_part: str) -> Iterator[dict[str, Any]]:
    for item in items:
        review = item.review
        assert review is not None  # _items with a status filter never yields unlabelled items
        name = f"{item.image_id}.png"
        pair = training_pair(item, name)
        yield {
            "image": {"bytes": model_png(ds, item.image_id, complex_part), "path": name},
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
            "messages": json.dumps(pair.messages),
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
    complex_part: str = "phase",
) -> dict[str, Path]:
    """A Hugging Face `datasets` dataset as Parquet files, one per split (`train.parquet`, ...).

    Load with `datasets.load_dataset("parquet", data_dir=out_dir)`. When some images are in no split
    yet, everything goes to one `data.parquet` (with a `split` column) instead.
    """
    import datasets

    items = [i for i in _items(ds, task, split, status) if i.review is not None]
    if not items:
        raise DatasetError("nothing to export: only unlabelled images matched; pick a status")
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
            "width": datasets.Value("int32"),
            "height": datasets.Value("int32"),
            "reviewer": datasets.Value("string"),
            "reviewed_at": datasets.Value("string"),
        }
    )
    groups: dict[str, list[Item]] = {}
    if all(i.image.split for i in items):
        for i in items:
            groups.setdefault(str(i.image.split), []).append(i)
    else:
        groups["data"] = items
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, group in groups.items():
        part = datasets.Dataset.from_list(list(_rows(ds, group, complex_part)), features=features)
        path = out_dir / f"{name}.parquet"
        part.to_parquet(str(path))
        written[name] = path
    return written


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
    items = [i for i in _items(ds, task, split, status) if i.review is not None]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with open(out, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for item in items:
            review = item.review
            assert review is not None
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
