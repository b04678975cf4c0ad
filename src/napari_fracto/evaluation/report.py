"""An evaluation run as files: results.json (everything), results.csv and per_label.csv, results.md
(the comparison table) and chart.png (micro-F1, macro-F1 and set precision with 95 % intervals).

matplotlib is used through its object API with the Agg canvas, so no GUI backend is touched (safe in
napari's process and on headless machines).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from napari_fracto.evaluation.runner import ConfigResult, EvalRun
from napari_fracto.evaluation.scoring import predicted, predicted_advice
from napari_fracto.metrics import Scores
from napari_fracto.paths import atomic_write_text

COLUMNS = (
    "configuration",
    "images",
    "micro-F1",
    "macro-F1",
    "set precision",
    "parse failures",
    "latency mean (s)",
    "latency median (s)",
    "advice micro-F1",
    "new / cached",
    "ECE",  # expected calibration error, where answers carry confidences (evaluation/calibration.py)
    "failure-mode micro-F1",  # the modes the labels imply, for a task with a mode level (failure_modes)
)
CHART_METRICS = (("micro_f1", "micro-F1"), ("macro_f1", "macro-F1"), ("set_precision", "set precision"))


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _with_ci(scores: Scores | None, name: str) -> str:
    if scores is None:
        return "–"
    text = _fmt(getattr(scores, name))
    if name in scores.ci and text != "–":
        lo, hi = scores.ci[name]
        text += f" [{_fmt(lo)}, {_fmt(hi)}]"
    return text


def table_rows(run: EvalRun) -> list[dict[str, str]]:
    """One row of display strings per configuration (the Markdown table and the widget's table)."""
    rows = []
    for r in run.results:
        s = r.scores
        rows.append(
            {
                "configuration": r.config.label + (f" (stopped: {r.error})" if r.error else ""),
                "images": str(s.n_images if s else 0),
                "micro-F1": _with_ci(s, "micro_f1"),
                "macro-F1": _with_ci(s, "macro_f1"),
                "set precision": _with_ci(s, "set_precision"),
                "parse failures": f"{s.parse_failures} ({_fmt(100 * s.parse_failure_rate, 0)} %)"
                if s
                else "–",
                "latency mean (s)": _fmt(s.latency_mean, 2) if s else "–",
                "latency median (s)": _fmt(s.latency_median, 2) if s else "–",
                "advice micro-F1": _with_ci(r.advice_scores, "micro_f1"),
                "failure-mode micro-F1": _with_ci(r.mode_scores, "micro_f1"),
                "ECE": _fmt(r.calibration.ece) if r.calibration else "–",
                "new / cached": f"{r.asked} / {r.cached}",
            }
        )
    return rows


def markdown_table(run: EvalRun) -> str:
    rows = table_rows(run)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(row[c].replace("|", "\\|") for c in COLUMNS) + " |")
    confidence = next((r.scores.confidence for r in run.results if r.scores), 0.95)
    header = (
        f"Task {run.task}, split {run.split}, {run.n_images} reviewed image(s) of {run.dataset}. "
        f"Brackets: {confidence:.0%} bootstrap intervals over images."
    )
    if run.scoring != "default":
        header += f" Scoring rules: {run.scoring}."
    if run.skipped:
        header += f" {len(run.skipped)} image(s) skipped (unreadable; see results.json)."
    return header + "\n\n" + "\n".join(lines) + "\n"


def _config_dict(r: ConfigResult) -> dict[str, Any]:
    settings = r.config.settings.model_dump(exclude={"api_key_env"})
    return {
        "name": r.config.label,
        "fingerprint": r.fingerprint,
        "settings": settings,
        "shots": r.config.shots,
        "select": r.config.select,
        "context": r.config.context,
        "advice": r.config.advice,
        "seed": r.config.seed,
        "tiles": r.config.tiles,
    }


def to_json(run: EvalRun) -> dict[str, Any]:
    return {
        "dataset": run.dataset,
        "task": run.task,
        "split": run.split,
        "started_at": run.started_at,
        "scoring": run.scoring,
        "images": run.image_ids,
        "skipped": run.skipped,
        "results": [
            {
                "config": _config_dict(r),
                "error": r.error,
                "asked": r.asked,
                "cached": r.cached,
                "scores": r.scores.to_dict() if r.scores else None,
                "advice_scores": r.advice_scores.to_dict() if r.advice_scores else None,
                "mode_scores": r.mode_scores.to_dict() if r.mode_scores else None,
                "calibration": r.calibration.to_dict() if r.calibration else None,
                "predictions": [
                    {
                        "image_id": p.image_id,
                        "labels": p.labels,
                        "advice": p.advice,
                        "given": predicted(p),
                        "given_advice": predicted_advice(p),
                        "truth": run.truth.get(p.image_id, {}).get("labels"),
                        "truth_advice": run.truth.get(p.image_id, {}).get("advice"),
                        "parse_ok": p.parse_ok,
                        "seconds": round(p.seconds, 4),
                        "examples": p.examples,
                        "raw_text": p.raw_text,
                    }
                    for p in r.predictions
                ],
            }
            for r in run.results
        ],
    }


def _csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _num(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6g}"


def write_csv(run: EvalRun, out: Path) -> tuple[Path, Path]:
    """results.csv (one row per configuration, numbers only) and per_label.csv."""
    names = ["micro_precision", "micro_recall", "micro_f1", "macro_f1", "set_precision", "parse_failure_rate"]
    header = ["configuration", "fingerprint", "images", *names]
    header += [f"{n}_{end}" for n in names for end in ("low", "high")]
    header += [
        "parse_failures",
        "latency_mean",
        "latency_median",
        "advice_micro_f1",
        "asked",
        "cached",
        "error",
    ]
    rows = []
    label_rows = []
    for r in run.results:
        s = r.scores
        row: list[Any] = [r.config.label, r.fingerprint[:16], s.n_images if s else 0]
        row += [_num(getattr(s, n)) if s else "" for n in names]
        row += [_num(s.ci.get(n, (math.nan,) * 2)[i]) if s else "" for n in names for i in (0, 1)]
        row += [
            s.parse_failures if s else "",
            _num(s.latency_mean) if s else "",
            _num(s.latency_median) if s else "",
        ]
        row += [_num(r.advice_scores.micro_f1) if r.advice_scores else "", r.asked, r.cached, r.error]
        rows.append(row)
        for kind, scores in (("label", s), ("advice", r.advice_scores), ("failure mode", r.mode_scores)):
            for ls in scores.per_label if scores else []:
                label_rows.append(
                    [
                        r.config.label,
                        kind,
                        ls.label,
                        ls.tp,
                        ls.fp,
                        ls.fn,
                        ls.support,
                        _num(ls.precision),
                        _num(ls.recall),
                        _num(ls.f1),
                    ]
                )
    results = out / "results.csv"
    per_label = out / "per_label.csv"
    _csv(results, header, rows)
    _csv(
        per_label,
        ["configuration", "kind", "label", "tp", "fp", "fn", "support", "precision", "recall", "f1"],
        label_rows,
    )
    return results, per_label


def write_chart(run: EvalRun, path: Path) -> Path:
    """chart.png: `chart_figure` saved."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chart_figure(run).savefig(path)
    return path


def chart_figure(run: EvalRun) -> Any:
    """Grouped horizontal bars per configuration with bootstrap intervals as error bars (also in reports)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = [r for r in run.results if r.scores is not None]
    n = max(len(results), 1)
    fig = Figure(figsize=(8, 1.6 + 0.7 * n), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    height = 0.8 / len(CHART_METRICS)
    y = np.arange(len(results))
    for j, (name, title) in enumerate(CHART_METRICS):
        values, errors = [], [[], []]
        for r in results:
            v = getattr(r.scores, name)
            v = v if math.isfinite(v) else 0.0
            lo, hi = r.scores.ci.get(name, (v, v))
            lo, hi = (lo if math.isfinite(lo) else v), (hi if math.isfinite(hi) else v)
            values.append(v)
            errors[0].append(max(v - lo, 0.0))
            errors[1].append(max(hi - v, 0.0))
        ax.barh(y + (j - 1) * height, values, height, xerr=errors, label=title, capsize=2)
    ax.set_yticks(y, [r.config.label for r in results])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (bars: 95 % bootstrap interval)")
    ax.set_title(f"{run.task} · {run.split} split · {run.n_images} images")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize="small")
    if not results:
        ax.text(
            0.5, 0.5, "no configuration produced scores", ha="center", va="center", transform=ax.transAxes
        )
    return fig


def write_reports(run: EvalRun, out_dir: str | Path) -> dict[str, Path]:
    """Write every output file into `out_dir`; returns them by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    atomic_write_text(paths["json"], json.dumps(to_json(run), indent=2, ensure_ascii=False))
    atomic_write_text(paths["markdown"], markdown_table(run))
    paths["csv"], paths["per_label_csv"] = write_csv(run, out)
    paths["chart"] = write_chart(run, out / "chart.png")
    from napari_fracto.evaluation.calibration import write_reliability

    reliability = write_reliability(run.results, out / "reliability.png")
    if reliability is not None:
        paths["reliability"] = reliability
    return paths


def _scores_from(data: Any) -> Scores | None:
    from napari_fracto.metrics import LabelScore

    if not isinstance(data, dict):
        return None
    nan = float("nan")
    floats = {k: (nan if v is None else v) for k, v in data.items() if k not in ("per_label", "ci")}
    per_label = [
        LabelScore(**{k: (nan if v is None else v) for k, v in s.items() if k != "support"})
        for s in data.get("per_label", [])
    ]
    ci = {k: tuple(nan if x is None else float(x) for x in v) for k, v in data.get("ci", {}).items()}
    return Scores(**floats, per_label=per_label, ci=ci)  # type: ignore[arg-type]


def load_run(folder: str | Path) -> EvalRun:
    """An evaluation read back from the results.json `write_reports` wrote (for reports made later)."""
    from dataclasses import fields

    from napari_fracto.evaluation.compare import EvalConfig
    from napari_fracto.evaluation.runner import EvaluationError, Prediction

    path = Path(folder) / "results.json" if Path(folder).is_dir() else Path(folder)
    known = {f.name for f in fields(Prediction)}  # results.json also keeps each prediction's truth
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        results = []
        for r in data["results"]:
            config = dict(r["config"])
            config.pop("fingerprint", None)
            results.append(
                ConfigResult(
                    config=EvalConfig.model_validate(config),
                    fingerprint=str(r["config"].get("fingerprint", "")),
                    predictions=[
                        Prediction(**{k: v for k, v in p.items() if k in known})
                        for p in r.get("predictions", [])
                    ],
                    scores=_scores_from(r.get("scores")),
                    advice_scores=_scores_from(r.get("advice_scores")),
                    mode_scores=_scores_from(r.get("mode_scores")),
                    asked=int(r.get("asked", 0)),
                    cached=int(r.get("cached", 0)),
                    error=str(r.get("error", "")),
                )
            )
        return EvalRun(
            dataset=str(data["dataset"]),
            task=str(data["task"]),
            split=str(data["split"]),
            image_ids=list(data.get("images", [])),
            results=results,
            skipped=dict(data.get("skipped", {})),
            started_at=str(data.get("started_at", "")),
        )
    except FileNotFoundError:
        raise EvaluationError(f"{path} not found; give the output folder of `napari-fracto eval`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise EvaluationError(
            f"{path.name} is not an evaluation napari-fracto wrote ({type(exc).__name__}: {exc}); "
            "run `napari-fracto eval` again"
        ) from None
