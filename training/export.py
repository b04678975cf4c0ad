"""Serving a fine-tuned adapter: a language-model-only LoRA for vLLM, or weights merged into the base.

vLLM applies LoRA to the language model only unless started with `--enable-tower-connector-lora` (recent
releases), so the vLLM export keeps only language-model tensors and prints the exact `vllm serve ...
--enable-lora --lora-modules ...` command, with a context length, image limit and image size that match
what the adapter was trained for (vLLM's default, Qwen3-VL's full 262,144-token context, needs ~28-36 GiB
of KV cache and does not start on 24-48 GB GPUs). `--merge` writes a full model directory (base +
adapter merged, processor and chat template included) that any server loads as a plain model; its
config.json carries the transformers-4.x rope keys (`rope_scaling` with `mrope_section`, `rope_theta`) beside
transformers 5's `rope_parameters`, so vLLM releases that read the older keys still apply M-RoPE.
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_fracto.errors import UserError
from napari_fracto.request import DEFAULT_IMAGE_TOKENS

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # --max-lora-rank values vLLM accepts
IMAGES_PER_PROMPT = 4  # the image plus up to three in-context examples
TEXT_TOKENS = 2048  # system prompt, vocabulary, context and example answers
TOWER_LORA_NOTE = (
    "this adapter also trained the vision tower; the vLLM copy leaves those tensors out (vLLM serves "
    "language-model LoRA only). Recent vLLM releases can serve them with --enable-tower-connector-lora "
    "pointed at the original adapter folder; otherwise export with --merge to keep them."
)
_MODEL_FILE_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken")
_NOT_COPIED = {"config.json", "model.safetensors.index.json", "generation_config.json"}


class ExportError(UserError, ValueError):
    """The adapter cannot be exported as asked; the message says what to do."""


@dataclass(frozen=True)
class VLLMExport:
    path: Path
    base_model: str
    name: str
    rank: int
    kept: int
    dropped: int
    command: str
    notes: tuple[str, ...] = ()


def resolve_adapter(source: str | Path) -> Path:
    """An adapter folder from a run folder, an adapter folder or a registered adapter name."""
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / ADAPTER_CONFIG).is_file():
            return path
        if (path / "adapter" / ADAPTER_CONFIG).is_file():
            return path / "adapter"
        raise ExportError(
            f"{path} holds no {ADAPTER_CONFIG}: give a finished training run folder or its adapter/ folder"
        )
    from napari_fracto.training.registry import RegistryError, get_adapter

    try:
        return Path(get_adapter(str(source)).path)
    except RegistryError as exc:
        raise ExportError(f"{source!r} is neither a folder nor a registered adapter ({exc})") from None


def read_adapter_config(adapter: Path) -> dict[str, Any]:
    try:
        return json.loads((adapter / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {adapter / ADAPTER_CONFIG}: {exc}") from None


def _run_name(adapter: Path) -> str:
    from napari_fracto.training.registry import list_adapters

    for entry in list_adapters():
        if Path(entry.path).resolve() == adapter.resolve():
            return entry.name
    return adapter.parent.name if adapter.name == "adapter" else adapter.name


def is_language_model_key(key: str) -> bool:
    """True for LoRA tensors of the language model (not the vision tower or its merger)."""
    return ".visual." not in key and not key.startswith("visual.")


def vllm_rank(rank: int) -> int:
    for allowed in VLLM_RANKS:
        if rank <= allowed:
            return allowed
    raise ExportError(f"LoRA rank {rank} is above vLLM's maximum ({VLLM_RANKS[-1]}); use --merge instead")


@dataclass(frozen=True)
class ServeLimits:
    """What one request needs: image-token budget per image (as trained), images, answer length."""

    max_image_tokens: int = DEFAULT_IMAGE_TOKENS
    images: int = IMAGES_PER_PROMPT
    max_new_tokens: int = 512
    patch: int = 32  # pixels per token side: patch 16 x spatial merge 2

    @property
    def max_model_len(self) -> int:
        """Images + text + answer, rounded up to 1024: the KV cache vLLM reserves instead of 262,144."""
        need = self.images * self.max_image_tokens + TEXT_TOKENS + self.max_new_tokens
        return -(-need // 1024) * 1024

    def flags(self) -> str:
        size = {"longest_edge": self.max_image_tokens * self.patch**2,
                "shortest_edge": min(64, self.max_image_tokens) * self.patch**2}  # fmt: skip
        return (
            f"--max-model-len {self.max_model_len} "
            f"--limit-mm-per-prompt {shlex.quote(json.dumps({'image': self.images, 'video': 0}))} "
            f"--mm-processor-kwargs {shlex.quote(json.dumps({'size': size}))}"
        )


def run_limits(adapter: Path) -> ServeLimits:
    """The image budget and answer length of the run that trained `adapter` (defaults without one)."""
    from napari_fracto.training.config import ConfigError, TrainConfig
    from napari_fracto.training.registry import list_adapters

    try:
        config = TrainConfig.load(adapter.parent)
    except ConfigError:
        return ServeLimits()
    budget = config.max_image_tokens
    if budget is None:  # as each review was asked: what the registry recorded for this adapter
        entries = [e for e in list_adapters() if Path(e.path).resolve() == adapter.resolve()]
        budget = entries[0].request_settings.get("max_image_tokens") if entries else None
    return ServeLimits(
        max_image_tokens=int(budget or DEFAULT_IMAGE_TOKENS), max_new_tokens=config.eval_max_new_tokens
    )


def vllm_command(base_model: str, name: str, path: Path, rank: int, limits: ServeLimits | None = None) -> str:
    module = json.dumps({"name": name, "path": str(path), "base_model_name": base_model})
    return (
        f"vllm serve {shlex.quote(base_model)} --enable-lora --max-lora-rank {vllm_rank(rank)} "
        f"--lora-modules {shlex.quote(module)} {(limits or ServeLimits()).flags()}"
    )


def export_for_vllm(
    adapter: Path, *, out: Path | None = None, base_model: str | None = None, name: str | None = None
) -> VLLMExport:
    """Copy the adapter keeping only language-model LoRA tensors; returns where and the serve command."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    adapter = Path(adapter)
    config = read_adapter_config(adapter)
    weights = adapter / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ExportError(f"{adapter} has no {ADAPTER_WEIGHTS}; was the run finished?")
    base = base_model or config.get("base_model_name_or_path") or ""
    if not base:
        raise ExportError("the adapter does not record its base model; pass --base-model")
    out = Path(out) if out else (adapter.parent / "export-vllm")
    if out.resolve() == adapter.resolve():
        raise ExportError("the output folder must differ from the adapter folder")
    tensors, dropped = {}, 0
    with safe_open(str(weights), framework="pt") as fh:
        metadata = fh.metadata()
        for key in fh.keys():  # noqa: SIM118 (safe_open is not iterable)
            if is_language_model_key(key):
                tensors[key] = fh.get_tensor(key)
            else:
                dropped += 1
    if not tensors:
        raise ExportError(f"{adapter} holds no language-model LoRA tensors; use --merge instead")
    target = config.get("target_modules")
    if isinstance(target, str):
        from napari_fracto.training.train import LM_LINEAR

        target = LM_LINEAR if dropped else target
    elif isinstance(target, list):
        target = [t for t in target if "visual" not in t]
    config = {**config, "target_modules": target, "base_model_name_or_path": base}
    config.pop("modules_to_save", None)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / ADAPTER_WEIGHTS), metadata=metadata or {"format": "pt"})
    (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    name = name or _run_name(adapter)
    rank = int(config.get("r", 16))
    command = vllm_command(base, name, out.resolve(), rank, run_limits(adapter))
    notes = (TOWER_LORA_NOTE,) if dropped else ()
    return VLLMExport(out, base, name, rank, len(tensors), dropped, command, notes)


def _copy_processor_files(base_model: str, out: Path) -> None:
    """Tokenizer, chat template and preprocessor configs of the base, so the merged folder is complete."""
    source = Path(base_model).expanduser()
    if not source.is_dir():
        from huggingface_hub import snapshot_download

        source = Path(snapshot_download(base_model, allow_patterns=[f"*{s}" for s in _MODEL_FILE_SUFFIXES]))
    for file in source.iterdir():
        if file.is_file() and file.suffix in _MODEL_FILE_SUFFIXES and file.name not in _NOT_COPIED:
            shutil.copy2(file, out / file.name)


def merge_adapter(adapter: Path, *, out: Path | None = None, base_model: str | None = None) -> Path:
    """Base + adapter merged into plain weights, saved as a complete model directory."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    adapter = Path(adapter)
    config = read_adapter_config(adapter)
    base = base_model or config.get("base_model_name_or_path") or ""
    if not base:
        raise ExportError("the adapter does not record its base model; pass --base-model")
    out = Path(out) if out else (adapter.parent / "merged")
    try:
        model = AutoModelForImageTextToText.from_pretrained(base, dtype="auto")
    except OSError as exc:
        raise ExportError(f"cannot load the base model {base!r}: {str(exc).splitlines()[0]}") from None
    try:
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except Exception as exc:
        raise ExportError(f"the adapter {adapter} does not fit {base!r}: {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        merged.save_pretrained(str(out), safe_serialization=True)
    add_legacy_rope_keys(out / "config.json")
    _copy_processor_files(base, out)
    return out


def add_legacy_rope_keys(config_file: Path) -> None:
    """Write `rope_scaling` (with `mrope_section`) and `rope_theta` beside transformers 5's `rope_parameters`,
    as the published Qwen3-VL configs have them, for readers on transformers 4.x (vLLM 0.11-era)."""
    data = json.loads(config_file.read_text(encoding="utf-8"))
    for section in (data, data.get("text_config")):
        params = section.get("rope_parameters") if isinstance(section, dict) else None
        if not isinstance(params, dict):
            continue
        if "rope_theta" in params:
            section.setdefault("rope_theta", params["rope_theta"])
        section.setdefault("rope_scaling", {k: v for k, v in params.items() if k != "rope_theta"})
    config_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
