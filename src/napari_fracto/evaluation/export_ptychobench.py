"""`eval --export-ptychobench FILE`: a run as PtychoBench results JSON, for their own bootstrap.py.

Layout (what `evaluation/bootstrap.py` and `ptychobench_loader.py` read, as their inference scripts
write it)::

    {"config": {"model_path", "selection_mode", "k_values", "num_test", ...},
     "similar" | "random": {"0-shot": {"overall": {"micro_f1", ...}, "per_sample_type": {...},
                                       "sample_distribution": {...},
                                       "raw_predictions": ["<answer>[Grid artifacts]</answer>", ...],
                                       "ground_truths": [...]}, "3-shot": {...}}}

`raw_predictions` are the answers as scored, written in PtychoBench's answer form (class names for
artifacts, letters for advice) so their loader reads back exactly the label sets scored here; the raw
model text stays in results.json. One file holds one model and one selection mode (configurations that
differ only in k); bootstrap.py tells the tasks apart by "param" in the file name, so advice goes to
`<stem>_param_rec.json` and the artifact file's name must not contain "param".
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from napari_fracto.evaluation.ptychobench import answer_string, classes, file_groups
from napari_fracto.evaluation.runner import ConfigResult, EvalRun, EvaluationError
from napari_fracto.evaluation.scoring import outcomes_of
from napari_fracto.metrics import PTYCHOBENCH, normalise, score
from napari_fracto.paths import atomic_write_text


def write_ptychobench(run: EvalRun, path: str | Path) -> list[Path]:
    """Write the run's PtychoBench results file(s); returns the paths written.

    Raises EvaluationError when the run cannot be expressed in their format (say why).
    """
    from napari_fracto.vocabulary import load_vocabulary

    path = Path(path)
    if run.scoring != PTYCHOBENCH.name:
        raise EvaluationError("the PtychoBench export needs the run scored with --scoring ptychobench")
    vocab = load_vocabulary(run.task)
    if not set(classes(False)) <= set(vocab.names()):
        raise EvaluationError(
            f"PtychoBench results hold ptychography artifacts; the task {run.task!r} is not that"
        )
    if "param" in path.name.lower():
        raise EvaluationError(
            f"{path.name}: PtychoBench's bootstrap.py reads any file named '*param*' as parameter advice; "
            "name the artifact file without 'param' (advice goes to <name>_param_rec.json beside it)"
        )
    exclusive = vocab.exclusive_labels
    groups = [g for g in file_groups([r.config for r in run.results]) if _scored(run, g)]
    if not groups:
        raise EvaluationError("no configuration produced scores: nothing to export")
    written = []
    for number, group in enumerate(groups):
        target = path if len(groups) == 1 else _numbered(path, number, run.results[group[0]].config.label)
        results = [run.results[i] for i in group]
        written.append(_write(target, run, results, False, exclusive))
        if any(r.advice_scores is not None for r in results):
            advice_target = target.with_name(f"{target.stem}_param_rec{target.suffix or '.json'}")
            written.append(_write(advice_target, run, results, True, ()))
    return written


def _scored(run: EvalRun, group: list[int]) -> bool:
    return any(run.results[i].scores is not None for i in group)


def _numbered(path: Path, number: int, label: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", re.sub(r"\s*\d+-shot.*$", "", label)).strip("-")[:40]
    return path.with_name(f"{path.stem}-{number + 1}-{slug or 'config'}{path.suffix or '.json'}")


def _write(target: Path, run: EvalRun, results: list[ConfigResult], advice: bool, exclusive: Any) -> Path:
    first = results[0].config
    entries: dict[str, Any] = {}
    for result in results:
        scores = result.advice_scores if advice else result.scores
        if scores is None:
            continue
        entries[f"{result.config.shots}-shot"] = _entry(run, result, scores, advice, exclusive)
    mode = first.select
    n = max((len(e["ground_truths"]) for e in entries.values()), default=0)
    data = {
        "config": {
            "model_path": first.settings.adapter or first.settings.model or first.settings.kind,
            "train_file": f"{run.dataset} (train split)",
            "test_file": f"{run.dataset} ({run.split} split)",
            "k_values": [r.config.shots for r in results if f"{r.config.shots}-shot" in entries],
            "selection_mode": mode,
            "num_test": n,
            "seed": first.seed,
            "napari_fracto": {
                "task": "parameter_recommendation" if advice else "artifact_detection",
                "scoring": run.scoring,
                "configurations": [
                    {"name": r.config.label, "fingerprint": r.fingerprint, "shots": r.config.shots}
                    for r in results
                ],
            },
        },
        mode: entries,
    }
    atomic_write_text(target, json.dumps(data, indent=2, ensure_ascii=False))
    return target


def _entry(run: EvalRun, result: ConfigResult, scores: Any, advice: bool, exclusive: Any) -> dict[str, Any]:
    truth = run.truth
    predictions = [p for p in result.predictions if p.image_id in truth]
    if advice:
        predictions = [p for p in predictions if truth[p.image_id]["advice"]]
    outcomes = outcomes_of(predictions, truth, advice=advice)
    raw = [answer_string(o.predicted if o.parse_ok else (), advice=advice) for o in outcomes]
    true = [answer_string(normalise(o.true, exclusive), advice=advice) for o in outcomes]
    types = [truth[p.image_id]["sample_type"] or "unknown" for p in predictions]
    per_type = {}
    for sample_type in dict.fromkeys(types):
        subset = [o for o, t in zip(outcomes, types, strict=True) if t == sample_type]
        s = score(subset, classes(advice), exclusive=exclusive, resamples=0, rules=PTYCHOBENCH)
        per_type[sample_type] = _overall(s) | {"n_samples": len(subset)}
    return {
        "overall": _overall(scores),
        "per_sample_type": per_type,
        "sample_distribution": dict(Counter(types)),
        "raw_predictions": raw,
        "ground_truths": true,
        "image_ids": [p.image_id for p in predictions],
        "bootstrap": {
            "n_bootstrap": scores.resamples,
            "mean": scores.bootstrap_mean.get("micro_f1"),
            "std": scores.bootstrap_std.get("micro_f1"),
            "ci": list(scores.ci.get("micro_f1", ())),
        },
    }


def _overall(scores: Any) -> dict[str, float | None]:
    names = ("micro_precision", "micro_recall", "micro_f1", "macro_f1")
    return {n: v if math.isfinite(v := getattr(scores, n)) else None for n in names}
