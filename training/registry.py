"""Fine-tuned adapters by name: a small JSON registry in the data directory, so Analyze can list them.

`<data dir>/adapters.json` maps a name to the adapter folder, its base model, task and the evaluation of
base vs adapter on the test split. Written atomically; an unreadable file is reported, never overwritten
silently. Pure Python (no torch).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from napari_fracto.errors import UserError

log = logging.getLogger(__name__)

REGISTRY_FILE = "adapters.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class RegistryError(UserError, ValueError):
    """The adapter registry cannot do what was asked; the message says what to do."""


@dataclass(frozen=True)
class AdapterEntry:
    """One registered adapter. `evaluation` holds {"base": {...}, "adapter": {...}} test-split scores."""

    name: str
    path: str
    base_model: str
    task: str
    created_at: str = ""
    run_dir: str = ""
    method: str = "lora"
    vocabulary_version: str = ""
    prompt_version: str = ""
    evaluation: dict[str, Any] = field(default_factory=dict)
    # how it must be asked: what its training chats asked (image-token budget, display options, part,
    # tiles); choosing the adapter (Analyze, --adapter NAME, a comparison entry) applies these
    request_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def quantization(self) -> str:
        """BackendSettings.quantization to load this adapter's base with ("4bit" for QLoRA)."""
        from napari_fracto.training.config import quantization_for

        return quantization_for(self.method)

    @property
    def exists(self) -> bool:
        return (Path(self.path) / "adapter_config.json").is_file()


def registry_path() -> Path:
    from napari_fracto.paths import data_dir

    return data_dir() / REGISTRY_FILE


def _read(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(
            f"cannot read the adapter registry {path} ({exc}); fix or delete that file"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("adapters", {}), dict):
        raise RegistryError(f"{path} is not an adapter registry; fix or delete that file")
    return data.get("adapters", {})


def _write(path: Path, adapters: dict[str, dict[str, Any]]) -> None:
    from napari_fracto.paths import atomic_write_text

    atomic_write_text(path, json.dumps({"version": 1, "adapters": adapters}, indent=2) + "\n")


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise RegistryError(
            f"adapter name {name!r} is not allowed: use 1-80 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def register_adapter(entry: AdapterEntry, *, overwrite: bool = True) -> AdapterEntry:
    """Add (or replace) an adapter under its name; the folder must hold adapter_config.json."""
    check_name(entry.name)
    if not entry.exists:
        raise RegistryError(f"{entry.path} holds no adapter_config.json: not a LoRA adapter folder")
    path = registry_path()
    adapters = _read(path)
    if entry.name in adapters and not overwrite:
        raise RegistryError(f"an adapter named {entry.name!r} is already registered; choose another name")
    if not entry.created_at:
        entry = AdapterEntry(
            **{**asdict(entry), "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        )
    adapters[entry.name] = asdict(entry)
    _write(path, adapters)
    return entry


def list_adapters(task: str | None = None, base_model: str | None = None) -> list[AdapterEntry]:
    """Registered adapters whose folder still exists, newest first; filter by task and base model."""
    try:
        raw = _read(registry_path())
    except RegistryError as exc:
        log.warning("%s", exc)
        return []
    entries = []
    for name, data in raw.items():
        try:
            entry = AdapterEntry(**{**data, "name": name})
        except TypeError:
            log.warning("Ignoring malformed registry entry %r in %s", name, registry_path())
            continue
        if not entry.exists:
            continue
        if task and entry.task != task:
            continue
        if base_model and Path(entry.base_model).name != Path(base_model).name:
            continue
        entries.append(entry)
    return sorted(entries, key=lambda e: e.created_at, reverse=True)


def get_adapter(name: str) -> AdapterEntry:
    for entry in list_adapters():
        if entry.name == name:
            return entry
    raise RegistryError(
        f"no adapter named {name!r}; registered: {', '.join(e.name for e in list_adapters()) or 'none'}"
    )


def resolve_adapter(ref: str) -> tuple[str, AdapterEntry | None]:
    """An adapter given by folder or by registered name: (folder, its entry or None).

    A folder that exists wins (an unregistered adapter still works); else the name must be registered.
    A served LoRA name (vLLM) is not looked up here: the server backend passes it through.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        for entry in list_adapters():
            if Path(entry.path).resolve() == path.resolve():
                return str(path), entry
        return str(path), None
    if _NAME.match(ref or "") and "/" not in ref:
        entry = get_adapter(ref)
        return entry.path, entry
    raise RegistryError(
        f"{ref!r} is neither an adapter folder nor a registered adapter name; registered: "
        f"{', '.join(e.name for e in list_adapters()) or 'none'}"
    )


def unregister_adapter(name: str) -> bool:
    """Forget an adapter (its files stay); True if it was registered."""
    path = registry_path()
    adapters = _read(path)
    if name not in adapters:
        return False
    del adapters[name]
    _write(path, adapters)
    return True


def unique_name(stem: str) -> str:
    """`stem`, or `stem-2`, `stem-3`, ... so a new run never replaces another's registration."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "adapter"
    taken = set(_read(registry_path()))
    if stem not in taken:
        return stem[:80]
    n = 2
    while f"{stem}-{n}" in taken:
        n += 1
    return f"{stem}-{n}"[:80]


@dataclass(frozen=True)
class AdapterChoice:
    """One registered adapter as the Analyze widget lists it; `fits` is False for another base model."""

    name: str
    path: str
    base_model: str
    fits: bool
    tooltip: str

    @property
    def text(self) -> str:
        base = self.base_model.rstrip("/").rsplit("/", 1)[-1]
        return f"{self.name} ({base})" if self.fits else f"{self.name} (for {base}, not this model)"


def evaluation_summary(evaluation: dict[str, Any]) -> str:
    """Base vs adapter on the test split, in one line per score ("" when the registry has none)."""
    base, adapted = evaluation.get("base") or {}, evaluation.get("adapter") or {}
    lines = []
    for key, title in (
        ("micro_f1", "micro-F1"),
        ("macro_f1", "macro-F1"),
        ("set_precision", "set precision"),
    ):
        a, b = adapted.get(key), base.get(key)
        if isinstance(a, int | float):
            was = f"base {b:.2f} → " if isinstance(b, int | float) else ""
            lines.append(f"{title}: {was}adapter {a:.2f}")
    n = adapted.get("n_images") or base.get("n_images")
    if lines and n:
        lines.insert(0, f"Test split ({n} images):")
    return "\n".join(lines)


def adapter_choices(task: str, model: str) -> list[AdapterChoice]:
    """The adapters registered for `task` (newest first), marked when trained on another base model."""
    wanted = Path(model.strip()).name if model.strip() else ""
    out = []
    for entry in list_adapters(task=task):
        fits = not wanted or Path(entry.base_model).name == wanted
        lines = [f"{entry.path}", f"Base model: {entry.base_model}", f"Method: {entry.method}"]
        if entry.created_at:
            lines.append(f"Trained: {entry.created_at}")
        summary = evaluation_summary(entry.evaluation)
        lines.append(summary or "No evaluation recorded.")
        if not fits:
            lines.insert(
                0,
                f"Trained on {entry.base_model}, not on the model set above ({model.strip()}): "
                "set that model to use this adapter.",
            )
        out.append(AdapterChoice(entry.name, entry.path, entry.base_model, fits, "\n".join(lines)))
    return out
