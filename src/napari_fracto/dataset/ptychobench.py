"""Import a PtychoBench parameter-recommendation split: advice for reconstructions, as letters A-X.

Same sample layout as the artifact split (`importers.py`), under
`annotations/parameter_recommendation_split/{train,test}.json`; the answer is letters,
`<answer>J, K, L</answer>`, letter i being `PARAM_CLASSES[i]` (their `ptychobench_loader.py`). An item
that is not a single letter A-X is reported, never guessed.

The advice is added to the image's current review of the task, whose labels are kept (import the
artifact split first and both end up on one review). An image that has no reviewed labels yet is saved
as *unreviewed* with its advice: an empty reviewed label set would claim "No obvious artifacts".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from napari_fracto.dataset.importers import (
    _SPLIT_NAMES,
    ImportSummary,
    _context,
    parse_answer_labels,
    ptychobench_samples,
)
from napari_fracto.dataset.model import DatasetError, Status

if TYPE_CHECKING:
    from napari_fracto.dataset.core import Dataset

SPLIT_FOLDER = "parameter_recommendation_split"


@dataclass
class ParamImportSummary(ImportSummary):
    unlabelled: int = 0  # images saved unreviewed: advice but no reviewed labels yet

    def describe(self) -> str:
        text = super().describe()
        if self.unlabelled:
            text += (
                f"\n{self.unlabelled} image(s) have advice but no reviewed artifact labels: saved unreviewed "
                "(import the artifact split first, or review them)"
            )
        return text


def _split_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        nested = source / "annotations" / SPLIT_FOLDER
        folder = nested if nested.is_dir() else source
        files = sorted(p for p in folder.glob("*.json") if p.stem.lower() in _SPLIT_NAMES)
        if files:
            return files
    raise DatasetError(
        f"no PtychoBench parameter split files at {source}: give train.json/test.json, the folder holding "
        f"them, or the dataset root with annotations/{SPLIT_FOLDER}/"
    )


def advice_of(answer: str, advice_vocab: object, summary: ImportSummary) -> tuple[list[str], list[str]]:
    """Canonical advice names of a letter answer, and the items that are not letters A-X."""
    from napari_fracto.evaluation.ptychobench import letter_map

    letters = letter_map(advice_vocab)
    advice, unknown = [], []
    for item in parse_answer_labels(answer):
        name = letters.get(item)
        if name is None:
            unknown.append(item)
            summary.unknown_labels[item] += 1
        elif name not in advice:
            advice.append(name)
    return advice, unknown


def import_ptychobench_params(
    ds: Dataset,
    source: str | os.PathLike[str],
    *,
    images_dir: str | os.PathLike[str] | None = None,
    task: str = "ptychography",
    reviewer: str = "PtychoBench annotators",
) -> ParamImportSummary:
    """Import PtychoBench parameter-recommendation splits (a JSON file, its folder, or the dataset root)."""
    from napari_fracto.vocabulary import advice_vocabulary

    advice_vocab = advice_vocabulary(task)
    if advice_vocab is None:
        raise DatasetError(
            f"the task {task!r} has no advice vocabulary; PtychoBench advice is ptychography's"
        )
    summary = ParamImportSummary()
    splits: dict[str, str] = {}
    for sample in ptychobench_samples(ds, _split_files(Path(source)), images_dir, task, summary.skipped):
        summary.images += 1
        advice, unknown = advice_of(sample.answer, advice_vocab, summary)
        _save_advice(
            ds,
            sample.image_id,
            task,
            advice,
            unknown,
            sample.json_file.name,
            reviewer,
            sample.metadata,
            summary,
        )
        if sample.split:
            splits[sample.image_id] = sample.split
            summary.splits[sample.split] += 1
    if splits:
        ds.set_splits(splits)
    return summary


def _save_advice(
    ds: Dataset,
    image_id: str,
    task: str,
    advice: list[str],
    unknown: list[str],
    file_name: str,
    reviewer: str,
    metadata: dict,
    summary: ParamImportSummary,
) -> None:
    """Add the advice to the current review (labels, boxes and context kept); nothing if it holds it."""
    latest = ds.latest_review(image_id, task)
    if latest is not None and list(latest.advice) == advice:
        summary.unchanged += 1
        return
    notes = f"advice imported from PtychoBench {file_name}"
    if unknown:
        notes += f"; not letters A-X: {', '.join(unknown)}"
    labelled = latest is not None and latest.status == Status.REVIEWED
    if not labelled:
        notes += "; artifact labels not reviewed yet"
        summary.unlabelled += 1
    context = latest.context if latest is not None and not latest.context.is_empty() else _context(metadata)
    ds.save_review(
        image_id,
        task,
        latest.corrected if latest is not None else (),
        advice=advice,
        status=Status.REVIEWED if labelled else Status.UNREVIEWED,
        context=context,
        reviewer=reviewer,
        notes=f"{latest.notes}; {notes}" if latest is not None and latest.notes else notes,
        request=latest.request if latest is not None else None,
    )
    summary.reviews += 1
