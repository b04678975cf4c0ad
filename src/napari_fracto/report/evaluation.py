"""An `eval` output folder as a report: the comparison table with intervals, the chart, per-label F1,
and each configuration's errors (false positives and misses) shown on the images they were made on.

The table and chart are the evaluation's own (`evaluation.report.table_rows` / `chart_figure`) on the run
read back from results.json; the images and the truth come from the dataset the run names (or
`dataset=` when it moved).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_fracto.evaluation.report import COLUMNS, load_run, table_rows
from napari_fracto.report import figures
from napari_fracto.report.redact import Redactor
from napari_fracto.report.views import colour_function

EXAMPLES_PER_CONFIG = 4


def _dataset_path(run_dataset: str, folder: Path, override: Path | None) -> Path | None:
    if override is not None:
        return override
    from napari_fracto.dataset.store import DB_NAME

    path = Path(run_dataset).expanduser()
    for candidate in (path, folder / path, folder.parent / path, folder.parent):
        if (candidate / DB_NAME).is_file():
            return candidate
    return None


def _error_examples(run: Any, ds: Any, r: Redactor, per_config: int) -> tuple[list[dict[str, Any]], str]:
    """Per configuration, up to `per_config` images it got wrong, with the reviewer's boxes drawn."""
    from napari_fracto.dataset import Status

    if ds is None:
        return [], "the dataset this evaluation ran on was not found, so its images cannot be shown"
    colour = colour_function(run.task)
    items = {i.image_id: i for i in ds.iter_items(task=run.task, split=run.split, status=Status.REVIEWED)}
    sections = []
    for result in run.results:
        examples = []
        for p in result.predictions:
            item = items.get(p.image_id)
            if item is None or item.review is None:
                continue
            truth = set(item.review.labels)
            predicted = set(p.labels) if p.parse_ok else set()
            fp, missed = sorted(predicted - truth), sorted(truth - predicted)
            if not (fp or missed or not p.parse_ok):
                continue
            picture, problem = None, ""
            try:
                from napari_fracto.report.entries import display_rgb

                rgb = display_rgb(ds.image_array(p.image_id), item.review.request.complex_part)
                picture = figures.draw_boxes(rgb, item.review.corrected, colour, longest=figures.THUMB_PX * 2)
            except (ValueError, OSError, KeyError) as exc:
                problem = f"image not shown: {exc}"
            examples.append(
                {
                    "title": r.name(item.image.original_name or p.image_id[:12]),
                    "picture": picture,
                    "image_problem": r.text(problem),
                    "false_positives": [r.text(x) for x in fp],
                    "missed": missed,
                    "truth": sorted(truth),
                    "parse_ok": p.parse_ok,
                }
            )
            if len(examples) >= per_config:
                break
        n_wrong = sum(
            1
            for p in result.predictions
            if p.image_id in items
            and (not p.parse_ok or set(p.labels) != set(items[p.image_id].review.labels))
        )
        sections.append({"config": r.text(result.config.label), "examples": examples, "n_wrong": n_wrong})
    return sections, ""


def evaluation_view(
    folder: Path, r: Redactor, *, dataset: Path | None = None, per_config: int = EXAMPLES_PER_CONFIG
) -> dict[str, Any]:
    """Everything an evaluation report shows."""
    from napari_fracto.dataset import Dataset, DatasetError

    run = load_run(folder)
    rows = table_rows(run)
    f1: dict[str, dict[str, float | None]] = {}
    names = [res.config.label for res in run.results if res.scores is not None]
    for res in run.results:
        for ls in res.scores.per_label if res.scores else []:
            if ls.support or ls.fp:
                f1.setdefault(ls.label, {})[res.config.label] = ls.f1
    path = _dataset_path(run.dataset, folder if folder.is_dir() else folder.parent, dataset)
    r.known.extend([run.dataset, str(path or ""), str(folder.resolve())])
    ds = None
    note = ""
    try:
        ds = Dataset.open(path) if path is not None else None
    except DatasetError as exc:
        note = f"the dataset could not be opened ({exc}), so its images cannot be shown"
    try:
        examples, missing = _error_examples(run, ds, r, per_config)
    finally:
        if ds is not None:
            ds.close()
    confidence = next((res.scores.confidence for res in run.results if res.scores), 0.95)
    return {
        "task": run.task,
        "split": run.split,
        "dataset": r.name(run.dataset),
        "n_images": run.n_images,
        "started_at": run.started_at,
        "columns": list(COLUMNS),
        "rows": [[r.text(row[c]) for c in COLUMNS] for row in rows],
        "confidence": f"{confidence:.0%}",
        "chart": figures.evaluation_chart(run),
        "f1_chart": figures.per_label_f1_chart(f1, names) if f1 and names else None,
        "f1_table": [(label, [_f(f1[label].get(n)) for n in names]) for label in f1],
        "f1_names": [r.text(n) for n in names],
        "examples": examples,
        "examples_note": r.text(note or missing),
        "skipped": [(r.text(k[:12]), r.text(v)) for k, v in run.skipped.items()],
    }


def _f(value: float | None) -> str:
    import math

    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}"
