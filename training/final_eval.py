"""The final test-split evaluation of a run: the base model and base + adapter, side by side.

Uses the project's evaluation runner (`napari_fracto.evaluation.runner.evaluate`), so the numbers are the
same metrics, prompts and parser as `napari-fracto eval` and the Analyze widget: per-label precision,
recall and F1, micro-F1, the precision of predicted label sets and the parse-failure rate.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_fracto.dataset import Dataset

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("n_images", "micro_precision", "micro_recall", "micro_f1", "macro_f1", "set_precision",
                "parse_failure_rate")  # fmt: skip


def summarise(scores: dict[str, Any] | None) -> dict[str, Any]:
    if not scores:
        return {}
    out = {k: scores.get(k) for k in SUMMARY_KEYS}
    out["per_label"] = [
        {k: row.get(k) for k in ("label", "precision", "recall", "f1", "support")}
        for row in scores.get("per_label", [])
    ]
    out["ci"] = scores.get("ci", {})
    return out


def evaluate_adapter(
    ds: Dataset,
    task: str,
    *,
    base_model: str,
    adapter: Path,
    out_dir: Path,
    device: str,
    max_image_tokens: int,
    max_new_tokens: int,
    quantization: str = "none",
    resamples: int = 1000,
    progress: Any = None,
) -> dict[str, Any]:
    """Scores of base and adapter on the reviewed test images; {"note": why} when there are none."""
    from napari_fracto.evaluation.compare import EvalConfig
    from napari_fracto.evaluation.report import to_json
    from napari_fracto.evaluation.runner import EvaluationError, evaluate
    from napari_fracto.settings import BackendSettings

    common = {
        "kind": "transformers",
        "model": base_model,
        "device": device,
        "max_image_tokens": max(16, max_image_tokens),
        "max_new_tokens": max(8, max_new_tokens),
        "quantization": quantization,  # a QLoRA run is evaluated on the 4-bit base it trained on
    }
    configs = [
        EvalConfig(name="base", settings=BackendSettings(**common)),
        EvalConfig(name="adapter", settings=BackendSettings(**common, adapter=str(adapter))),
    ]
    try:
        run = evaluate(ds, configs, out_dir, split="test", task=task, resamples=resamples, progress=progress)
    except EvaluationError as exc:
        log.warning("No final evaluation: %s", exc)
        return {"note": str(exc), "results": {}}
    data = to_json(run)
    results = {}
    errors = {}
    for res in data["results"]:
        key = res["config"].get("name") or "?"
        if res.get("error"):
            errors[key] = res["error"]
        results[key] = summarise(res.get("scores"))
    return {
        "split": "test",
        "n_images": len(run.image_ids),
        "skipped": run.skipped,
        "results": results,
        "errors": errors,
    }
