"""Supervised fine-tuning examples from the corrections dataset's stored split.

Each example is the exact chat Analyze sent for the review's stored request (`prepare.chat`), shown the
exact pixels (`prepare.prepare(request, stored array)`: display options, crop, tiles, image-token budget,
in-context examples), with the exact answer it parses (`prompts.format_answer`, boxes on the 0-1000 grid of
the tile), so a fine-tuned model needs no other code path. Augmentation happens here, on the train split
only: 90-degree rotations of the model image and its grid boxes (`geometry.rotate_box`, which matches
numpy.rot90 exactly) and oversampling of images that carry rare labels. A leak guard drops train/val
images that are the same picture as a test image, even rotated, flipped or stored again (`icl.is_copy`),
so no augmented copy of a
test image is ever trained on. No torch import: the processor and tensors live in `collate.py`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from napari_fracto.errors import UserError

if TYPE_CHECKING:
    from napari_fracto.dataset import Dataset, Item

log = logging.getLogger(__name__)

TURNS = (0, 1, 2, 3)  # quarter turns counter-clockwise, like numpy.rot90


class TrainingDataError(UserError, ValueError):
    """The dataset cannot give training examples as asked; the message says what to do."""


@dataclass(frozen=True)
class SFTExample:
    """One training example: which image and tile, how it is rotated, the request and the chat.

    In `messages` the images are placeholders ({"type": "image", "image": "<image id>"}); `ExampleImages`
    renders them from the request when the Trainer asks.
    """

    image_id: str
    quarter_turns: int
    messages: list[dict[str, Any]]
    answer: str
    labels: tuple[str, ...]
    request: Any = None  # request.AnalysisRequest of the review
    tile: int = 0


def repeat_factors(items: Sequence[Item], max_repeat: int) -> dict[str, int]:
    """Copies per image so rare labels are seen more: max count / count of the image's rarest label, capped.

    An image with no labels (or only common ones) gets 1. Counting is over `items` (the train split).
    """
    counts = Counter(label for item in items for label in set(item.labels))
    if not counts:
        return {item.image_id: 1 for item in items}
    most = max(counts.values())
    factors = {}
    for item in items:
        labels = set(item.labels)
        if not labels:
            factors[item.image_id] = 1
            continue
        rarest = min(counts[label] for label in labels)
        factors[item.image_id] = int(min(max_repeat, max(1, math.floor(most / rarest + 0.5))))
    return factors


def leaked_ids(
    ds: Dataset, task: str, candidates: Sequence[Item], *, cache_dir: Any = None
) -> dict[str, str]:
    """Ids of `candidates` that are a test image (same content, or a rotated/flipped/resampled copy).

    Returns {candidate id: test id it copies}. Unreadable images are left to the training loader to report.
    """
    from napari_fracto.dataset import Status
    from napari_fracto.icl import FeatureCache, is_copy

    tests = [i for i in ds.iter_items(task=task, split="test") if i.status is not Status.UNLABELLED]
    if not tests or not candidates:
        return {}
    cache = FeatureCache(cache_dir)

    def key(image_id: str) -> Any:
        return cache.get(image_id, lambda: ds.image_array(image_id))

    test_keys = {}
    for t in tests:
        try:
            test_keys[t.image_id] = key(t.image_id)
        except (ValueError, OSError) as exc:
            log.warning("Cannot check test image %s for copies: %s", t.image_id[:12], exc)
    leaked = {}
    for item in candidates:
        try:
            k = key(item.image_id)
        except (ValueError, OSError):
            continue
        for test_id, tk in test_keys.items():
            if item.image_id == test_id or is_copy(tk, k):
                leaked[item.image_id] = test_id
                break
    return leaked


def reviewed_items(ds: Dataset, task: str, split: str) -> list[Item]:
    from napari_fracto.dataset import Status

    return list(ds.iter_items(task=task, split=split, status=Status.REVIEWED))


def build_examples(
    ds: Dataset,
    task: str,
    split: str = "train",
    *,
    rotate: bool = True,
    oversample: bool = True,
    max_repeat: int = 4,
    guard_leaks: bool = True,
    cache_dir: Any = None,
    max_image_tokens: int | None = None,
) -> list[SFTExample]:
    """SFT examples of the reviewed `task` images in `split`; augmentation only for the train split.

    Each review is asked as its stored request asked it; `max_image_tokens` (None: the request's own)
    overrides the image budget, which the adapter then records so Analyze asks the same.
    Raises TrainingDataError when the split holds no reviewed images.
    """
    from napari_fracto.dataset.export import training_pairs

    items = reviewed_items(ds, task, split)
    if guard_leaks and split != "test":
        leaked = leaked_ids(ds, task, items, cache_dir=cache_dir)
        for image_id, test_id in leaked.items():
            log.warning(
                "Left out %s image %s: it is test image %s (or a rotated/flipped copy)",
                split,
                image_id[:12],
                test_id[:12],
            )
        items = [i for i in items if i.image_id not in leaked]
    if not items:
        raise TrainingDataError(
            f"no reviewed {task} images in the {split} split of {ds.root}; review images and assign splits "
            f"(`napari-fracto dataset split {ds.root}`) first"
        )
    augment = split == "train"
    turns = TURNS if (rotate and augment) else (0,)
    factors = repeat_factors(items, max_repeat) if (oversample and augment) else {}
    examples = []
    for item in items:
        for pair in training_pairs(item, quarter_turns=turns, max_image_tokens=max_image_tokens):
            example = SFTExample(
                item.image_id,
                pair.quarter_turns,
                pair.messages,
                pair.answer,
                tuple(item.labels),
                pair.request,
                pair.tile,
            )
            examples.extend([example] * factors.get(item.image_id, 1))
    return examples


def dataset_fingerprint(ds: Dataset, task: str) -> dict[str, Any]:
    """What the run was trained on: dataset identity, schema, and a hash of every split's reviews."""
    from napari_fracto.dataset import SPLITS

    h = hashlib.sha256()
    per_split = {}
    for split in SPLITS:
        items = reviewed_items(ds, task, split)
        per_split[split] = len(items)
        for item in items:
            review_id = item.review.review_id if item.review else None
            h.update(f"{split}:{item.image_id}:{review_id};".encode())
    meta = ds.meta
    return {
        "path": str(ds.root),
        "name": ds.name,
        "created_at": meta.get("created_at", ""),
        "schema_version": ds.schema_version,
        "reviews": ds.review_count(),
        "task": task,
        "reviewed_per_split": per_split,
        "sha256": h.hexdigest(),
    }


def resolve_task(ds: Dataset, task: str | None) -> str:
    """The task to train: the one given, or the only task with reviewed images in the dataset."""
    from napari_fracto.dataset import Status

    tasks = sorted({i.task for i in ds.iter_items(status=Status.REVIEWED) if i.task})
    if task:
        if task not in tasks:
            found = ", ".join(tasks) or "none"
            raise TrainingDataError(f"no reviewed '{task}' images in {ds.root} (tasks with reviews: {found})")
        return task
    if len(tasks) == 1:
        return tasks[0]
    if not tasks:
        raise TrainingDataError(f"{ds.root} has no reviewed images; review some in napari first")
    raise TrainingDataError(f"{ds.root} holds several tasks ({', '.join(tasks)}); choose one with --task")


class ExampleImages:
    """A list-like of {"messages", "images", "image_id"} for the Trainer: images rendered on access.

    Rendering on access (not up front) keeps memory flat for large datasets. The query image is
    `prepare(request, stored array)`'s tile, rotated like the example's boxes; in-context example images
    are rendered as Analyze rendered them (`prepare.example_image`), in the order the chat shows them.
    """

    def __init__(self, ds: Dataset, examples: Sequence[SFTExample], complex_part: str | None = None) -> None:
        self.ds = ds
        self.examples = list(examples)
        self.complex_part = complex_part  # None: the request's own part

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from napari_fracto.dataset.export import model_image, placeholder_ids

        ex = self.examples[index]
        request = ex.request
        if self.complex_part and request.complex_part != self.complex_part:
            request = request.with_changes(complex_part=self.complex_part)
        images = []
        for ref in placeholder_ids(ex.messages):
            if ref == ex.image_id:
                images.append(model_image(self.ds, request, ex.image_id, ex.tile, ex.quarter_turns))
            else:
                from napari_fracto.prepare import example_image

                images.append(example_image(self.ds.image_array(ref), request.max_image_tokens))
        return {"messages": ex.messages, "images": images, "image": images[-1], "image_id": ex.image_id}
