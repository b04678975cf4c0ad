"""Bring labelled images in: PtychoBench JSON splits and folder-per-class image sets.

PtychoBench format (crumeike/PtychoBench, `training/data_loader.py` and `inference/vlm_inference.py`;
the data itself is shared by Argonne on request): `annotations/artifact_detection_split/{train,test}.json`,
each a list of samples::

    {"messages": [{"role": "user", "content": [{"type": "text", "text": "..."},
                                               {"type": "image", "image_path": "/data/upload/1/af70-x.png"}]},
                  {"role": "assistant", "content": [
                      {"type": "text", "text": "<answer>[Grid artifacts, Blurring]</answer>"}]}],
     "metadata": {"sample_type": "Integrated circuits", "instrument": "Velociprobe", ...}}

Images are looked up by file name in `images/` (PtychoBench's own loader ignores the stored folders), and
the split comes from the JSON file name. Labels are mapped through the vocabulary's synonyms; any label
that maps to nothing is reported, never silently dropped.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from napari_fracto.dataset.blobs import confined
from napari_fracto.dataset.label_mapping import FolderMatch, match_folder
from napari_fracto.dataset.model import DatasetError, Status
from napari_fracto.findings import AnalysisContext, Finding

if TYPE_CHECKING:
    from napari_fracto.dataset.core import Dataset

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "dev": "val", "test": "test", "testing": "test"}  # fmt: skip
STORABLE = (".npy", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class ImportSummary:
    images: int = 0
    reviews: int = 0
    unchanged: int = 0
    splits: Counter[str] = field(default_factory=Counter)
    unknown_labels: Counter[str] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)  # "what: why", one per input not imported

    def describe(self) -> str:
        lines = [f"{self.images} image(s), {self.reviews} review(s) saved, {self.unchanged} already present"]
        if self.splits:
            lines.append("splits: " + ", ".join(f"{k} {v}" for k, v in sorted(self.splits.items())))
        if self.unknown_labels:
            lines.append(
                "labels not in the vocabulary (add them as synonyms to a user vocabulary and import again): "
                + ", ".join(f"{k!r} x{v}" for k, v in self.unknown_labels.most_common())
            )
        lines.extend(f"skipped {s}" for s in self.skipped)
        return "\n".join(lines)


def parse_answer_labels(text: str) -> list[str]:
    """Label strings of a PtychoBench answer: `<answer>[A, B]</answer>` (tags or brackets optional)."""
    match = _ANSWER.search(text)
    body = match.group(1) if match else text
    body = body.strip().strip("[]")
    return [part.strip().strip("'\"") for part in body.split(",") if part.strip().strip("'\"")]


def _content_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content", [])
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [p for p in content if isinstance(p, dict)]


def _sample_image_and_answer(sample: Any) -> tuple[str, str]:
    if not isinstance(sample, dict) or not isinstance(sample.get("messages"), list):
        raise ValueError("not a PtychoBench sample (no 'messages' list)")
    image = ""
    answer_parts = []
    for message in sample["messages"]:
        for part in _content_parts(message):
            if message.get("role") == "user" and part.get("type") == "image":
                image = image or str(part.get("image_path") or part.get("image") or "")
            if message.get("role") == "assistant" and part.get("type") == "text":
                answer_parts.append(str(part.get("text", "")))
    if not image:
        raise ValueError("no image_path in the user turn")
    if not answer_parts:
        raise ValueError("no assistant answer")
    return image, "\n".join(answer_parts)


def _context(metadata: dict[str, Any]) -> AnalysisContext:
    notes = [f"{k}: {v}" for k, v in metadata.items() if k not in ("sample_type", "material") and v]
    return AnalysisContext(
        material=str(metadata.get("material", "") or ""),
        sample_type=str(metadata.get("sample_type", "") or ""),
        notes="; ".join(notes),
    )


def _find_image(name: str, json_file: Path, images_dir: Path | None) -> Path | None:
    """The image a JSON entry names, looked up only inside the folders it may come from.

    A JSON file from someone else may name `../../secret` or `/etc/...`: only the base name is used
    (in --images DIR, beside the JSON and in the nearby `images/` folders), a relative name only below the
    JSON's folder, and a match that resolves (symlinks followed) outside its folder is refused.
    """
    base = PurePosixPath(name.replace("\\", "/")).name
    if base in ("", ".", ".."):
        return None
    folders = [images_dir] if images_dir else []
    folders += [json_file.parent / "images", json_file.parent.parent / "images"]
    folders += [json_file.parent.parent.parent / "images"]
    candidates = [(folder, folder / base) for folder in folders]
    relative = PurePosixPath(name.replace("\\", "/"))
    if not relative.is_absolute() and ".." not in relative.parts and not PureWindowsPath(name).drive:
        candidates.insert(1 if images_dir else 0, (json_file.parent, json_file.parent / relative))
    for folder, candidate in candidates:
        if candidate.is_file():
            try:
                return confined(folder, candidate)
            except DatasetError:
                continue
    return None


def _map_labels(raw: Iterable[str], vocab: Any, summary: ImportSummary) -> tuple[list[str], list[str]]:
    labels, unknown = [], []
    for text in raw:
        canonical = vocab.canonical(text)
        if canonical is None:
            unknown.append(text)
            summary.unknown_labels[text] += 1
        elif canonical not in labels:
            labels.append(canonical)
    return labels, unknown


def _save(
    ds: Dataset,
    image_id: str,
    task: str,
    labels: list[str],
    notes: str,
    reviewer: str,
    context: AnalysisContext | None,
    summary: ImportSummary,
) -> None:
    """Save unless the current review already says exactly this (re-importing adds no duplicates)."""
    latest = ds.latest_review(image_id, task)
    if latest is not None and latest.labels == labels and latest.notes == notes:
        summary.unchanged += 1
        return
    ds.save_review(
        image_id,
        task,
        [Finding(label) for label in labels],
        status=Status.REVIEWED,
        context=context,
        reviewer=reviewer,
        notes=notes,
    )
    summary.reviews += 1


def _json_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        nested = source / "annotations" / "artifact_detection_split"
        folder = nested if nested.is_dir() else source
        files = sorted(p for p in folder.glob("*.json") if p.stem.lower() in _SPLIT_NAMES)
        if files:
            return files
    raise DatasetError(
        f"no PtychoBench split files at {source}: give train.json/test.json or the folder holding them "
        "(or the dataset root with annotations/artifact_detection_split/)"
    )


def import_ptychobench(
    ds: Dataset,
    source: str | os.PathLike[str],
    *,
    images_dir: str | os.PathLike[str] | None = None,
    task: str = "ptychography",
    reviewer: str = "PtychoBench annotators",
) -> ImportSummary:
    """Import PtychoBench artifact-detection splits (a JSON file, its folder, or the dataset root)."""
    from napari_fracto.vocabulary import load_vocabulary

    vocab = load_vocabulary(task)
    summary = ImportSummary()
    splits: dict[str, str] = {}
    for sample in ptychobench_samples(ds, _json_files(Path(source)), images_dir, task, summary.skipped):
        json_file, image_id, answer, split = sample.json_file, sample.image_id, sample.answer, sample.split
        summary.images += 1
        labels, unknown = _map_labels(parse_answer_labels(answer), vocab, summary)
        notes = f"imported from PtychoBench {json_file.name}"
        if unknown:
            notes += f"; labels not in the vocabulary: {', '.join(unknown)}"
        _save(ds, image_id, task, labels, notes, reviewer, _context(sample.metadata), summary)
        if split:
            splits[image_id] = split
            summary.splits[split] += 1
    if splits:
        ds.set_splits(splits)
    return summary


@dataclass(frozen=True)
class PtychoBenchSample:
    """One sample of a PtychoBench split file, its image stored in the dataset."""

    json_file: Path
    image_id: str
    answer: str
    split: str | None
    metadata: dict[str, Any]


def ptychobench_samples(
    ds: Dataset,
    json_files: Iterable[Path],
    images_dir: str | os.PathLike[str] | None,
    task: str,
    skipped: list[str],
) -> Iterator[PtychoBenchSample]:
    """The samples of PtychoBench split files (artifact or parameter splits alike), each image added to
    `ds`; what cannot be used is appended to `skipped` with where and why. Unreadable files raise."""
    images = Path(images_dir) if images_dir else None
    for json_file in json_files:
        try:
            samples = json.loads(json_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read {json_file} as JSON: {exc}") from None
        if not isinstance(samples, list):
            raise DatasetError(f"{json_file} holds a {type(samples).__name__}; PtychoBench splits are lists")
        split = _SPLIT_NAMES.get(json_file.stem.lower())
        for index, sample in enumerate(samples):
            where = f"{json_file.name}[{index}]"
            try:
                image_name, answer = _sample_image_and_answer(sample)
            except ValueError as exc:
                skipped.append(f"{where}: {exc}")
                continue
            path = _find_image(image_name, json_file, images)
            if path is None:
                skipped.append(f"{where}: image {Path(image_name).name} not found (pass --images DIR)")
                continue
            try:
                image_id = ds.add_image(path, task=task)
            except DatasetError as exc:
                skipped.append(f"{where}: {exc}")
                continue
            metadata = sample.get("metadata") if isinstance(sample.get("metadata"), dict) else {}
            yield PtychoBenchSample(json_file, image_id, answer, split, metadata)


def plan_class_folders(
    root: str | os.PathLike[str],
    vocab: Any,
    mapping: Mapping[str, tuple[str, ...]] | None = None,
    suffixes: Sequence[str] = STORABLE,
) -> list[tuple[FolderMatch, list[Path]]]:
    """Each class folder's labels (see `label_mapping.match_folder`) and the image files under it.

    Nothing is written: the CLI's dry run prints this, and an import that would match nothing stops here
    before a dataset is created.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder of class folders")
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name.lower()
    )
    if not folders:
        raise DatasetError(f"{root} has no class folders; put each class's images in a folder named after it")
    plan = []
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        plan.append((match_folder(folder.name, vocab, mapping), files))
    return plan


def import_class_folders(
    ds: Dataset,
    root: str | os.PathLike[str],
    *,
    task: str,
    reviewer: str | None = None,
    suffixes: Sequence[str] = STORABLE,
    mapping: Mapping[str, tuple[str, ...]] | None = None,
) -> ImportSummary:
    """Import `root/<class name>/<image>`: the folder name is the label (words, synonyms or `mapping`).

    The same image (by content) in several class folders gets all their labels: multi-label sets work.
    """
    from napari_fracto.vocabulary import load_vocabulary

    root = Path(root)
    vocab = load_vocabulary(task)
    plan = plan_class_folders(root, vocab, mapping, suffixes)
    summary = ImportSummary()
    labels_of: dict[str, list[str]] = {}
    for match, _ in plan:
        folder = root / match.folder
        if not match.matched:
            summary.unknown_labels[match.folder] += 1
            summary.skipped.append(f"folder {match.folder!r}: {match.how}")
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            try:
                path = confined(root, path)  # a symlink out of the class folders is not imported
            except DatasetError as exc:
                summary.skipped.append(str(exc))
                continue
            if path.suffix.lower() not in suffixes:
                if not path.name.startswith("."):
                    summary.skipped.append(f"{path}: not an image type the dataset stores")
                continue
            try:
                image_id = ds.add_image(path, task=task)
            except DatasetError as exc:
                summary.skipped.append(f"{path}: {exc}")
                continue
            if image_id not in labels_of:
                summary.images += 1
            labels_of.setdefault(image_id, [])
            for label in match.labels:
                if label not in labels_of[image_id]:
                    labels_of[image_id].append(label)
    for image_id, labels in labels_of.items():
        _save(ds, image_id, task, labels, f"imported from class folders {root.name}", reviewer or "", None,
              summary)  # fmt: skip
    return summary


__all__ = [
    "ImportSummary",
    "import_class_folders",
    "import_ptychobench",
    "parse_answer_labels",
    "plan_class_folders",
]
