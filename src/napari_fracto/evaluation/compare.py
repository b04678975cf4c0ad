"""Evaluation configurations and the comparison file (TOML or JSON) that lists several of them.

A configuration is everything that changes a prediction: backend settings, adapter, k examples and how
they are picked, context on/off, advice on/off. Its `fingerprint` keys the prediction cache, so a
changed adapter file or prompt version is a new configuration while the same one is never run twice.

    [defaults]              # optional: applies to every entry
    shots = 0
    [[config]]
    name = "base"
    backend = "transformers"
    model = "Qwen/Qwen3-VL-2B-Instruct"
    [[config]]
    name = "fine-tuned"
    adapter = "runs/lora-1"
    shots = [0, 3]          # a list expands into one configuration per value
    select = "similar"
    example_features = "vision"   # rank examples by the model's vision tower (default: texture)
    context = false
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from napari_fracto.errors import UserError
from napari_fracto.settings import BackendSettings

# Backend settings that do not change what the model answers (so they do not invalidate the cache).
_NOT_PREDICTIVE = {"device", "timeout_s", "api_key_env", "trust_remote_code", "batch_size"}
_EVAL_FIELDS = {
    "name",
    "shots",
    "select",
    "example_features",
    "feature_model",
    "context",
    "advice",
    "seed",
    "tiles",
    "display",
    "complex_part",
    "samples",
    "temperature",
}


class ComparisonError(UserError, ValueError):
    """A comparison file or configuration is invalid; the message says where and what to change."""


class EvalConfig(BaseModel):
    """One row of the comparison table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    settings: BackendSettings = Field(default_factory=BackendSettings)
    shots: int = Field(0, ge=0, le=32)
    select: Literal["similar", "random"] = "similar"
    example_features: Literal["texture", "vision"] = "texture"
    feature_model: str = ""  # vision features from this model instead of the local backend's
    context: bool = True
    advice: bool = False
    seed: int = 0
    # Request settings that replace what each stored review asked; None keeps the stored request's own.
    tiles: int | None = Field(None, ge=1, le=8)
    display: dict[str, bool] | None = None  # {"ramp": ..., "unwrap": ..., "crop": ...}; {} for none
    complex_part: Literal["phase", "amplitude"] | None = None
    # Self-consistency: ask `samples` times at `temperature`; agreement is the confidence (consistency.py).
    samples: int = Field(1, ge=1, le=32)
    temperature: float = Field(0.7, gt=0, le=2)

    @property
    def label(self) -> str:
        """The name, or one made from what distinguishes this configuration."""
        return self.name or default_name(self)

    @property
    def uses_vision_features(self) -> bool:
        """Examples are ranked by a vision tower (k > 0, similar, vision features)."""
        return bool(self.shots) and self.select == "similar" and self.example_features == "vision"

    def fingerprint(self) -> str:
        """Hash of everything that changes predictions (prompt version and adapter files included)."""
        from napari_fracto.prompts import PROMPT_VERSION

        settings = {k: v for k, v in self.settings.model_dump().items() if k not in _NOT_PREDICTIVE}
        data = {
            "settings": settings,
            "adapter_files": adapter_fingerprint(self.settings.adapter),
            "shots": self.shots,
            "select": self.select if self.shots else "",
            "seed": self.seed if self.shots and self.select == "random" else 0,
            "context": self.context,
            "advice": self.advice,
            "tiles": self.tiles,
            "display": self.display,
            "complex_part": self.complex_part,
            "prompt_version": PROMPT_VERSION,
        }
        if self.samples > 1:  # only then, so configurations asked once keep their cached results
            data["self_consistency"] = [self.samples, self.temperature]
        if self.settings.kind == "probe":  # what it learnt from: new reviews make it a new configuration
            from napari_fracto.backends.probe import training_fingerprint

            data["probe_training"] = training_fingerprint(self.settings.model) if self.settings.model else ""
        if self.uses_vision_features:  # only then, so texture configurations keep their cached results
            data["example_features"] = ["vision", self.feature_model]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def parse_shots(text: str) -> list[int]:
    """ "0, 1, 3" -> [0, 1, 3] (duplicates dropped); the one reading of a shots list, CLI and widget."""
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ComparisonError(
            f"Shots must be numbers separated by commas, e.g. 0,1,3 (got {text!r})."
        ) from None
    if not values or any(v < 0 for v in values):
        raise ComparisonError(f"Shots must be numbers of 0 or more, e.g. 0,1,3 (got {text!r}).")
    return list(dict.fromkeys(values))


def default_name(config: EvalConfig) -> str:
    s = config.settings
    model = s.model.rstrip("/").rsplit("/", 1)[-1] or s.kind
    parts = [model]
    if s.adapter:
        parts.append("+ " + s.adapter.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1])
    parts.append(f"{config.shots}-shot" + (f" {config.select}" if config.shots else ""))
    if config.uses_vision_features:
        parts.append("vision features")
    if config.samples > 1:
        parts.append(f"{config.samples} samples")
    if not config.context:
        parts.append("no context")
    if config.advice:
        parts.append("advice")
    return " ".join(parts)


def adapter_fingerprint(adapter: str) -> str:
    """Names, sizes and modification times of a local adapter's files (re-training it changes this)."""
    if not adapter:
        return ""
    path = Path(adapter).expanduser()
    if not path.is_dir():
        return adapter  # a served LoRA name (vLLM) or a path that does not exist here
    h = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        stat = file.stat()
        h.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return h.hexdigest()


def make_config(
    entry: Mapping[str, Any], base: BackendSettings | None = None, *, where: str = "configuration"
) -> EvalConfig:
    """A configuration from flat keys: backend settings (`backend` = kind) next to the eval keys."""
    entry = dict(entry)
    if "backend" in entry:
        entry["kind"] = entry.pop("backend")
    unknown = set(entry) - _EVAL_FIELDS - set(BackendSettings.model_fields)
    if unknown:
        allowed = sorted(_EVAL_FIELDS | set(BackendSettings.model_fields) - {"kind"} | {"backend"})
        raise ComparisonError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(allowed)}"
        )
    if "api_key" in entry:
        raise ComparisonError(f"{where}: never put an API key in a file; set api_key_env instead")
    backend_keys = {k: v for k, v in entry.items() if k in BackendSettings.model_fields}
    eval_keys = {k: v for k, v in entry.items() if k in _EVAL_FIELDS}
    base_data = (base or BackendSettings()).model_dump()
    if backend_keys.get("kind") == "probe":  # no model: the probe learns from the dataset evaluated
        backend_keys.setdefault("model", "")
        backend_keys.setdefault("adapter", "")
    if backend_keys.get("kind") == "openai" and "model" not in backend_keys and base_data["kind"] != "openai":
        raise ComparisonError(f"{where}: an openai configuration needs `model` (the name the server serves)")
    try:
        settings = BackendSettings.model_validate(base_data | backend_keys)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ComparisonError(f"{where}: {problems}") from None
    if backend_keys.get("adapter"):  # by folder or registered name; its trained budget applies
        from napari_fracto.adapters import choose_adapter
        from napari_fracto.training.registry import RegistryError

        try:
            choice = choose_adapter(settings, keep_budget="max_image_tokens" in backend_keys)
        except RegistryError as exc:
            raise ComparisonError(f"{where}: {exc}") from None
        settings = choice.settings
        if "name" not in eval_keys and choice.name:
            eval_keys["name"] = choice.name
    try:
        return EvalConfig(settings=settings, **eval_keys)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'settings')}: {e['msg']}" for e in exc.errors()
        )
        raise ComparisonError(f"{where}: {problems}") from None


def expand(
    entries: Iterable[Mapping[str, Any]], base: BackendSettings | None = None, *, source: str = ""
) -> list[EvalConfig]:
    """Configurations from entries; `shots = [0, 1, 3]` gives one configuration per value."""
    configs: list[EvalConfig] = []
    for i, entry in enumerate(entries):
        where = f"{source} entry {i + 1}" if source else f"entry {i + 1}"
        if not isinstance(entry, Mapping):
            raise ComparisonError(f"{where}: expected a table of settings, got {type(entry).__name__}")
        shots = entry.get("shots", 0)
        values = list(shots) if isinstance(shots, list | tuple) else [shots]
        if not values:
            raise ComparisonError(f"{where}: shots is an empty list; give at least one number")
        for k in values:
            item = dict(entry) | {"shots": k}
            if len(values) > 1 and item.get("name"):
                item["name"] = f"{item['name']} {k}-shot"
            configs.append(make_config(item, base, where=where))
    names = [c.label for c in configs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ComparisonError(
            f"{source or 'comparison'}: several configurations are named {dupes}; give each a unique name"
        )
    return configs


def load_comparison(path: str | os.PathLike[str], base: BackendSettings | None = None) -> list[EvalConfig]:
    """Read a comparison file: TOML (`[defaults]`, `[[config]]`) or JSON (`{"defaults", "configs"}`)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ComparisonError(f"cannot read the comparison file {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except (ValueError, TypeError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise ComparisonError(f"{path} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise ComparisonError(f"{path}: expected a table with `config` entries at the top level")
    entries = data.get("config", data.get("configs"))
    if not entries or not isinstance(entries, list):
        raise ComparisonError(
            f'{path} lists no configurations: add [[config]] tables (TOML) or a "configs" list (JSON)'
        )
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ComparisonError(f"{path}: `defaults` must be a table of settings")
    extra = set(data) - {"config", "configs", "defaults"}
    if extra:
        raise ComparisonError(f"{path}: unknown top-level key(s) {sorted(extra)}; use defaults and config")
    return expand([defaults | dict(e) if isinstance(e, dict) else e for e in entries], base, source=str(path))
