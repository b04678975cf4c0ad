"""The run folder: where one training run keeps everything needed to trust, reuse and resume it.

Layout (default `<data dir>/runs/<time>-<name>`, never the current directory)::

    train_config.json   the exact TrainConfig used          dataset.json   dataset identity + hash
    versions.json       vocabulary/prompt/library versions   metrics.jsonl  every progress event
    epochs.json         metrics per epoch                    status.json    running/stopped/finished/failed
    checkpoints/        Trainer checkpoints (for --resume)   adapter/       the LoRA adapter (safetensors)
    evaluation.json     base vs adapter on the test split    README.md      the model card
    STOP                created by the widget to ask for a clean stop
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from napari_fracto.paths import atomic_write_text


def default_runs_dir() -> Path:
    from napari_fracto.paths import data_dir

    return data_dir() / "runs"


def new_run_dir(name: str, parent: Path | None = None) -> Path:
    """A fresh folder `<parent>/<UTC time>-<name>` (parent: the data dir's runs/)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._") or "run"
    base = (parent or default_runs_dir()) / f"{stamp}-{slug}"
    path, n = base, 2
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def _dump(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def stop_file(self) -> Path:
        return self.root / "STOP"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    def create(self) -> RunFolder:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def write_json(self, name: str, data: Any) -> Path:
        path = self.root / name
        _dump(path, data)
        return path

    def read_json(self, name: str, default: Any = None) -> Any:
        path = self.root / name
        if not path.is_file():
            return default
        return json.loads(path.read_text(encoding="utf-8"))

    def append_metric(self, event: dict[str, Any]) -> None:
        with open(self.metrics_file, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event) + "\n")

    def set_status(self, state: str, **extra: Any) -> None:
        self.write_json("status.json", {"state": state, "at": datetime.now(UTC).isoformat(), **extra})

    def status(self) -> dict[str, Any]:
        return self.read_json("status.json", {}) or {}

    def last_checkpoint(self) -> Path | None:
        """The newest complete Trainer checkpoint (highest step), or None."""
        found = []
        for path in self.checkpoints.glob("checkpoint-*"):
            match = re.fullmatch(r"checkpoint-(\d+)", path.name)
            if match and path.is_dir() and (path / "trainer_state.json").is_file():
                found.append((int(match.group(1)), path))
        return max(found)[1] if found else None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("napari-fracto", "torch", "transformers", "peft", "accelerate", "bitsandbytes"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def model_card(
    *,
    name: str,
    config: dict[str, Any],
    dataset: dict[str, Any],
    versions: dict[str, Any],
    epochs: list[dict[str, Any]],
    evaluation: dict[str, Any] | None,
) -> str:
    """The run's README.md: what was trained on what, how, and how it scored against its base model."""
    lines = [
        f"# {name}",
        "",
        f"LoRA adapter for `{config['base_model']}` fine-tuned by napari-fracto on the `{dataset['task']}` "
        f"task from the corrections dataset `{dataset['name']}`.",
        "",
        "## Use",
        "",
        f"- napari: Analyze widget, adapter `{name}` (registered), base model `{config['base_model']}`.",
        f"- CLI: `napari-fracto analyze IMAGES --task {dataset['task']} --model {config['base_model']} "
        "--adapter <this folder>/adapter`",
        "- vLLM: `napari-fracto export-adapter <this folder>` prints the serve command.",
        "",
        "## Training",
        "",
        f"- method: {config['method']} (rank {config['lora_rank']}, alpha {config['lora_alpha']}), "
        f"vision tower {'trained' if config['train_vision'] else 'frozen'}",
        f"- epochs {config['epochs']}, max steps {config['max_steps']}, lr {config['learning_rate']}, "
        f"batch {config['batch_size']} x accumulation {config['grad_accum']}, "
        f"image tokens <= {config['max_image_tokens'] or 'as each review was asked'}",
        f"- augmentation: rotation {'on' if config['rotate'] else 'off'}, "
        f"oversampling of rare labels {'on' if config['oversample'] else 'off'}",
        f"- dataset: {dataset['path']} (sha256 {dataset['sha256'][:16]}, reviewed images per split "
        f"{dataset['reviewed_per_split']})",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
    ]
    if epochs:
        lines += ["## Per epoch", "", "| epoch | train loss | eval loss |", "|---|---|---|"]
        lines += [
            f"| {_fmt(e.get('epoch'))} | {_fmt(e.get('loss'))} | {_fmt(e.get('eval_loss'))} |" for e in epochs
        ]
        lines.append("")
    lines += ["## Evaluation on the test split", ""]
    if not evaluation or not evaluation.get("results"):
        lines.append(f"Not evaluated: {(evaluation or {}).get('note', 'no test split')}.")
    else:
        lines += [
            f"{evaluation.get('n_images', '?')} test images. Micro-F1 over labels, precision of the "
            "predicted label sets, parse-failure rate.",
            "",
            "| model | micro-F1 | set precision | parse failures |",
            "|---|---|---|---|",
        ]
        for key, res in evaluation["results"].items():
            lines.append(
                f"| {key} | {_fmt(res.get('micro_f1'))} | {_fmt(res.get('set_precision'))} | "
                f"{_fmt(res.get('parse_failure_rate'))} |"
            )
        lines.append("")
        lines += ["Per label (adapter): precision / recall / F1", ""]
        for row in evaluation["results"].get("adapter", {}).get("per_label", []):
            lines.append(
                f"- {row['label']}: {_fmt(row.get('precision'))} / {_fmt(row.get('recall'))} / "
                f"{_fmt(row.get('f1'))}"
            )
    return "\n".join(lines) + "\n"
