"""Choosing a fine-tuned adapter: by folder or registered name, with the request settings it was trained on.

An adapter answers best when asked as it was trained (image-token budget, display options, part, tiles);
the registry records those, and this is the one place that applies them: the Analyze widget, every
`--adapter NAME|DIR` flag and a comparison entry's `adapter = "NAME"` come through here. Pure (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from napari_fracto.settings import BackendSettings


@dataclass(frozen=True)
class AdapterChoice:
    """The settings to ask with, and the request settings the adapter was trained with ({} if unknown)."""

    settings: BackendSettings
    request_settings: dict[str, Any] = field(default_factory=dict)
    name: str = ""


def choose_adapter(settings: BackendSettings, *, keep_budget: bool = False) -> AdapterChoice:
    """`settings` with its adapter resolved to a folder, its image budget and its base's loading applied.

    `keep_budget`: the user chose the budget explicitly (a flag, a comparison key), so it stays. A server
    backend's adapter is a served LoRA name and passes through unchanged. Raises `RegistryError` for a
    name that is neither a folder nor registered, listing the registered names.
    """
    if not settings.adapter or settings.kind not in ("transformers", "vllm"):
        return AdapterChoice(settings)
    from napari_fracto.training.registry import resolve_adapter

    path, entry = resolve_adapter(settings.adapter)
    request_settings = dict(entry.request_settings) if entry is not None else {}
    update: dict[str, Any] = {"adapter": path}
    budget = request_settings.get("max_image_tokens")
    if budget and not keep_budget:
        update["max_image_tokens"] = int(budget)
    if entry is not None and entry.quantization != "none":  # a QLoRA adapter runs on its 4-bit base
        update["quantization"] = entry.quantization
    return AdapterChoice(
        settings.model_copy(update=update), request_settings, entry.name if entry is not None else ""
    )


def training_request_settings(requests: list[Any]) -> dict[str, Any]:
    """What an adapter's training chats asked, for the registry: the most common value of each setting."""
    from collections import Counter
    from dataclasses import asdict

    if not requests:
        return {}

    def common(values: list[Any]) -> Any:
        return Counter(values).most_common(1)[0][0]

    displays = [tuple(sorted(asdict(r.display).items())) if r.display else None for r in requests]
    display = common(displays)
    return {
        "max_image_tokens": common([r.max_image_tokens for r in requests]),
        "display": dict(display) if display else None,
        "complex_part": common([r.complex_part for r in requests]),
        "tiles": common([r.tiles for r in requests]),
        "task": requests[0].task,
        "prompt_version": common([r.prompt_version for r in requests]),
    }
