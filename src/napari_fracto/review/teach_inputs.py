"""What the teach order knows about a dataset: opinions, evidence and features of its unreviewed images.

Opinions come from what is stored (the prediction of each unreviewed item, and a second opinion stored
beside it under `evidence["second_opinion"]`) and, when scikit-learn is installed and the train split
has at least two reviewed images, from the probe trained on them. Features are the probe's (texture of
the image as the model is shown it). No Qt, no torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_fracto.review.teach_order import QueueItem, Ranked, rank

if TYPE_CHECKING:
    from napari_fracto.dataset import Dataset, Item

log = logging.getLogger(__name__)
SECOND_OPINION_KEY = "second_opinion"


@dataclass
class QueueInputs:
    items: list[QueueItem]
    reviewed_features: np.ndarray
    label_counts: dict[str, int]
    notes: list[str] = field(default_factory=list)  # what was left out and why (no probe, unreadable image)


def source_name(backend: str, model: str) -> str:
    """A short name for an opinion: backend kind and the last part of the model id."""
    short = str(model or "").rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    return f"{backend or 'model'}:{short}" if short else (backend or "model")


def stored_opinions(item: Item, vocab: Any) -> dict[str, dict[str, float | None]]:
    """The stored prediction and second opinion of an item, as label -> confidence."""
    from napari_fracto.backends.probe import target_labels

    review = item.review
    if review is None or not review.has_prediction:
        return {}
    opinion: dict[str, float | None] = {}
    for finding in review.predicted:
        label = vocab.canonical(finding.label) or finding.label
        old = opinion.get(label)
        conf = finding.confidence
        opinion[label] = conf if old is None else max(old, conf if conf is not None else old)
    if not opinion:  # "nothing found" is the opinion "the exclusive label" (e.g. No obvious artifacts)
        opinion = dict.fromkeys(target_labels([], vocab))
    out = {source_name(review.backend, review.model): opinion}
    second = review.evidence.get(SECOND_OPINION_KEY) if isinstance(review.evidence, dict) else None
    if isinstance(second, dict) and isinstance(second.get("labels"), dict) and not second.get("error"):
        labels = {
            str(k): (float(v) if isinstance(v, int | float) else None) for k, v in second["labels"].items()
        }
        out[str(second.get("source") or "second opinion")] = labels
    return out


def queue_inputs(dataset: Dataset, task: str, *, probe: bool = True) -> QueueInputs:
    """Everything `teach_order.rank` needs about the unreviewed images of `task`."""
    from napari_fracto.backends.probe import ProbeError, ProbeTrainer, target_labels
    from napari_fracto.dataset import Status
    from napari_fracto.vocabulary import load_vocabulary

    vocab = load_vocabulary(task)
    trainer = ProbeTrainer(dataset)
    notes: list[str] = []
    model = None
    if probe:
        try:
            model = trainer.model(task)
        except ProbeError as exc:
            notes.append(f"no probe opinion: {exc}")
    counts: dict[str, int] = {}
    reviewed: list[np.ndarray] = []
    items: list[QueueItem] = []
    for item in dataset.iter_items(task=task):
        if item.status is Status.SKIPPED:
            continue
        try:
            vector = trainer.vector(item)
        except (ValueError, OSError) as exc:  # unreadable image: ranked without features
            notes.append(f"{item.image_id[:12]}: no features ({exc})")
            vector = None
        if item.status is Status.REVIEWED:
            for label in target_labels(item.labels, vocab):
                counts[label] = counts.get(label, 0) + 1
            if vector is not None:
                reviewed.append(vector)
            continue
        opinions = stored_opinions(item, vocab)
        if model is not None and vector is not None:
            probabilities = model.predict_proba(vector)[0]
            opinions["probe"] = {lab: float(p) for lab, p in zip(model.labels, probabilities, strict=True)}
        evidence = item.review.evidence if item.review is not None else {}
        disagreements = evidence.get("disagreements") if isinstance(evidence, dict) else None
        items.append(
            QueueItem(
                item.image_id,
                opinions,
                vector,
                tuple(str(d) for d in disagreements or ()),
            )
        )
    dim = reviewed[0].shape[0] if reviewed else 0
    return QueueInputs(items, np.array(reviewed).reshape(len(reviewed), dim), counts, notes)


def teach_queue(
    dataset: Dataset,
    task: str,
    *,
    order: str = "teach",
    n: int | None = None,
    seed: int = 0,
    probe: bool = True,
) -> tuple[list[Ranked], list[str]]:
    """The unreviewed images of `task` in `order` (first `n`), with reasons, and notes on what was missing."""
    if order == "teach":
        inputs = queue_inputs(dataset, task, probe=probe)
    else:  # file and random orders need no opinions or features
        from napari_fracto.dataset import Status

        ids = [
            i.image_id
            for i in dataset.iter_items(task=task)
            if i.status in (Status.UNREVIEWED, Status.UNLABELLED)
        ]
        inputs = QueueInputs([QueueItem(i) for i in ids], np.empty((0, 0)), {})
    ranked = rank(
        inputs.items,
        order=order,  # type: ignore[arg-type]  # checked by rank
        reviewed_features=inputs.reviewed_features if len(inputs.reviewed_features) else None,
        label_counts=inputs.label_counts,
        seed=seed,
        n=n,
    )
    return ranked, inputs.notes
