"""`dataset info` and `dataset validate`: what is in a dataset, and whether it can be trusted.

Label counts are images per label in the current (latest) review, so rare labels, the ones targeted
collection lifts most, stand out, including vocabulary labels with no example at all.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from napari_fracto.dataset.core import Dataset
from napari_fracto.dataset.model import DatasetError, ImageRecord, ReviewRecord, Status

DEFAULT_RARE = 10


def _vocabulary(task: str) -> Any | None:
    """The task's vocabulary, or None when the task has none installed."""
    from napari_fracto.vocabulary import VocabularyError, load_vocabulary

    try:
        return load_vocabulary(task)
    except (VocabularyError, KeyError, OSError):
        return None


@dataclass
class TaskInfo:
    statuses: dict[str, int] = field(default_factory=dict)
    # label -> {"reviewed": images, "unreviewed": images}
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    boxes: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    rare: list[str] = field(default_factory=list)


@dataclass
class DatasetInfo:
    name: str
    path: str
    schema_version: int
    images: int
    reviews: int
    tasks: dict[str, TaskInfo]
    rare_threshold: int
    unlabelled: int = 0
    papers: dict[str, Any] = field(default_factory=dict)  # per imported paper (papers.provenance.PaperInfo)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def info(ds: Dataset, *, task: str | None = None, rare: int = DEFAULT_RARE) -> DatasetInfo:
    """Counts per task, status, split and label; labels with fewer than `rare` reviewed images flagged.

    Read from the counts the database keeps up to date on every save (`dataset.index`), so it takes
    the same few milliseconds at 100 images and at 100,000. An image reviewed for two tasks counts in
    each; images per label count the current review of each image (skipped ones left out).
    """
    stored = ds.counts()
    tasks: dict[str, TaskInfo] = {}
    for name, counted in sorted(stored.tasks.items()):
        if (task and name != task) or not counted.total:
            continue
        t = TaskInfo(
            statuses=dict(counted.statuses),
            labels={k: dict(v) for k, v in counted.labels.items()},
            boxes=counted.boxes,
            splits=dict(counted.splits),
        )
        vocab = _vocabulary(name)
        for label in vocab.names() if vocab else ():
            t.labels.setdefault(label, {"reviewed": 0, "unreviewed": 0})
        t.labels = dict(sorted(t.labels.items(), key=lambda kv: (-kv[1]["reviewed"], kv[0])))
        t.rare = [label for label, n in t.labels.items() if n["reviewed"] < rare]
        tasks[name] = t
    return DatasetInfo(
        name=ds.name,
        path=str(ds.root),
        schema_version=ds.schema_version,
        images=stored.images,
        reviews=stored.reviews,
        tasks=tasks,
        rare_threshold=rare,
        unlabelled=0 if task else stored.untasked,
        papers=_papers(ds, task),
    )


def _papers(ds: Dataset, task: str | None) -> dict[str, Any]:
    from napari_fracto.papers.provenance import per_paper

    return per_paper(ds, task)


def format_info(report: DatasetInfo) -> str:
    lines = [
        f"Dataset {report.name!r} at {report.path} (schema v{report.schema_version})",
        f"{report.images} image(s), {report.reviews} review(s) saved in all",
    ]
    if report.unlabelled:
        lines.append(f"{report.unlabelled} image(s) without task or review (run autolabel, or review them)")
    for name, t in report.tasks.items():
        total = sum(t.statuses.values())
        reviewed = t.statuses.get("reviewed", 0)
        lines.append("")
        lines.append(f"task {name}: {reviewed} / {total} reviewed")
        lines.append("  status: " + ", ".join(f"{k} {v}" for k, v in sorted(t.statuses.items())))
        lines.append("  split:  " + ", ".join(f"{k} {v}" for k, v in sorted(t.splits.items())))
        lines.append(f"  boxes:  {t.boxes}")
        lines.append(f"  {'label':<32} {'reviewed':>8} {'unreviewed':>10}")
        for label, n in t.labels.items():
            flag = f"  <- rare (< {report.rare_threshold})" if label in t.rare else ""
            lines.append(f"  {label:<32} {n['reviewed']:>8} {n['unreviewed']:>10}{flag}")
    from napari_fracto.papers.provenance import format_papers

    lines += format_papers(report.papers)
    return "\n".join(lines)


# --- validate -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong, precise enough to find and fix it."""

    message: str
    image_id: str = ""
    review_id: int | None = None
    severity: str = "error"  # "error" fails validation, "warning" does not

    def __str__(self) -> str:
        where = f"image {self.image_id[:12]}" if self.image_id else ""
        if self.review_id is not None:
            where += f" review {self.review_id}"
        return f"{self.severity}: {where + ': ' if where else ''}{self.message}"


def _box_problems(review: ReviewRecord, image: ImageRecord) -> list[str]:
    out = []
    for i, f in enumerate(review.corrected):
        if f.box is None:
            continue
        x1, y1, x2, y2 = f.box.as_list()
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            out.append(f"finding {i} ({f.label!r}): box {f.box.as_list()} is not finite")
        elif x2 <= x1 or y2 <= y1:
            out.append(f"finding {i} ({f.label!r}): box {f.box.as_list()} has no area")
        elif x1 < 0 or y1 < 0 or x2 > image.width or y2 > image.height:
            out.append(
                f"finding {i} ({f.label!r}): box [x1={x1:g}, y1={y1:g}, x2={x2:g}, y2={y2:g}] lies outside "
                f"the {image.width}x{image.height} (width x height) image"
            )
    return out


def _label_problems(review: ReviewRecord, vocab: Any | None) -> list[str]:
    if vocab is None:
        return [f"no vocabulary for task {review.task!r}; install or add {review.task}.toml"]
    out = []
    for label in review.labels:
        canonical = vocab.canonical(label)
        if canonical is None:
            out.append(f"label {label!r} is not in the {review.task} vocabulary")
        elif canonical != label:
            out.append(f"label {label!r} is a variant of {canonical!r}; store the canonical name")
    return out


def validate(ds: Dataset, *, check_hashes: bool = True) -> list[Problem]:
    """Every problem that would corrupt training or evaluation: missing or altered images, labels outside
    the vocabulary, boxes outside their images. Checks the current review of each image."""
    problems: list[Problem] = []
    with ds._lock:
        result = ds._conn.execute("PRAGMA quick_check").fetchall()
    if [r[0] for r in result] != ["ok"]:
        problems.extend(Problem(f"database: {r[0]}") for r in result)
    vocabularies: dict[str, Any] = {}
    for item in ds.iter_items():
        image = item.image
        try:
            ds.blobs.relpath(image.image_id, image.suffix)  # refuses an id that is not a hash
            if check_hashes:
                issue = ds.blobs.verify(image.image_id, image.suffix)
                if issue:
                    problems.append(Problem(issue, image.image_id))
            elif not ds.blobs.path(image.image_id, image.suffix).is_file():
                problems.append(Problem("image file missing", image.image_id))
        except DatasetError as exc:  # an id that is not a hash, a path leaving the store: crafted
            problems.append(Problem(str(exc), str(image.image_id)[:80]))
            continue
        review = item.review
        if review is None or review.status is Status.SKIPPED:
            continue
        if review.task not in vocabularies:
            vocabularies[review.task] = _vocabulary(review.task)
        for message in _label_problems(review, vocabularies[review.task]):
            problems.append(Problem(message, image.image_id, review.review_id))
        for message in _box_problems(review, image):
            problems.append(Problem(message, image.image_id, review.review_id))
    for leftover in ds.blobs.leftovers():
        problems.append(
            Problem(f"unfinished write left behind (safe to delete): {leftover}", severity="warning")
        )
    problems.extend(_unused_files(ds))
    return problems


def _unused_files(ds: Dataset) -> list[Problem]:
    """Image files no row names, one `images/<ab>/` folder at a time (memory stays flat at any size)."""
    out: list[Problem] = []
    if not ds.blobs.root.is_dir():
        return out
    for shard in sorted(p for p in ds.blobs.root.iterdir() if p.is_dir()):
        with ds._lock:
            rows = ds._conn.execute(
                "SELECT image_id, suffix FROM images WHERE image_id >= ? AND image_id < ?",
                (shard.name, shard.name + "\U0010ffff"),  # the ids starting with the folder's name
            ).fetchall()
        known = {f"{r[0]}{r[1]}" for r in rows}
        for path in shard.iterdir():
            if path.is_file() and not path.name.startswith(".tmp-") and path.name not in known:
                out.append(Problem(f"image file not in the database (unused): {path}", severity="warning"))
    return out


def has_errors(problems: list[Problem]) -> bool:
    return any(p.severity == "error" for p in problems)


def label_counts(ds: Dataset, task: str, status: Status = Status.REVIEWED) -> Counter[str]:
    """Images per label among current reviews with `status`."""
    return Counter(label for item in ds.iter_items(task=task, status=status) for label in item.labels)


__all__ = [
    "DEFAULT_RARE",
    "DatasetInfo",
    "Problem",
    "format_info",
    "has_errors",
    "info",
    "label_counts",
    "validate",
]
