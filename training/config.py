"""Training configuration (pydantic, saved verbatim in every run folder) and presets chosen by GPU memory.

Pure: imports neither torch nor transformers, so the CLI, the widget and the memory table load instantly.
The memory figures are estimates (weights + LoRA optimiser state + activations with gradient checkpointing
+ CUDA overhead), calibrated on published rules of thumb (LLaMA-Factory: ~2 GB per billion parameters for
16-bit LoRA, ~0.5-0.7 GB for 4-bit QLoRA); they tell a user what will fit before they wait, not a guarantee.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from napari_fracto.errors import UserError

Method = Literal["lora", "qlora"]
Device = Literal["auto", "cuda", "cpu"]

CONFIG_FILE = "train_config.json"


class ConfigError(UserError, ValueError):
    """The training configuration is invalid; the message says which setting and what to change."""


@dataclass(frozen=True)
class BaseModelInfo:
    """A Qwen3-VL base the presets know: Hub id, parameters (billions) of the model and its vision tower."""

    model: str
    params_b: float
    vision_b: float
    hidden_size: int
    layers: int


# Parameter counts of the published Qwen3-VL Instruct models (model cards / config.json).
KNOWN_BASES: dict[str, BaseModelInfo] = {
    "2B": BaseModelInfo("Qwen/Qwen3-VL-2B-Instruct", 2.1, 0.41, 2048, 28),
    "4B": BaseModelInfo("Qwen/Qwen3-VL-4B-Instruct", 4.4, 0.41, 2560, 36),
    "8B": BaseModelInfo("Qwen/Qwen3-VL-8B-Instruct", 8.8, 0.58, 4096, 36),
    "32B": BaseModelInfo("Qwen/Qwen3-VL-32B-Instruct", 33.4, 0.58, 5120, 64),
}
CUDA_OVERHEAD_GB = 1.5  # CUDA context, allocator fragmentation, kernels


def estimate_memory_gb(
    base: BaseModelInfo,
    method: Method,
    *,
    lora_rank: int = 16,
    batch_size: int = 1,
    max_image_tokens: int = 768,
    text_tokens: int = 1024,
) -> float:
    """Estimated peak GPU memory (GB) for LoRA/QLoRA fine-tuning of `base` with gradient checkpointing.

    Weights: 2 bytes/param in bf16; for QLoRA ~0.55 bytes/param for the quantised language model (NF4 +
    double-quantised scales) while the vision tower stays bf16. LoRA weights, grads and AdamW state: 16
    bytes per LoRA parameter. Activations with checkpointing: one hidden state per layer and token kept,
    plus one layer's full activations (~34 x hidden per token) recomputed at a time, in bf16.
    """
    gb = 1e9
    lm_b = base.params_b - base.vision_b
    if method == "qlora":
        weights = lm_b * 1e9 * 0.55 + base.vision_b * 1e9 * 2
    else:
        weights = base.params_b * 1e9 * 2
    # LoRA on 7 linear layers per block: about rank * (in + out) params each; ~ rank * 2 * 5.5 * hidden.
    lora_params = base.layers * lora_rank * 2 * 5.5 * base.hidden_size
    lora_state = lora_params * 16
    tokens = batch_size * (max_image_tokens + text_tokens)
    activations = tokens * base.hidden_size * 2 * (base.layers + 34)
    logits = tokens * 151_936 * 4  # fp32 logits for the loss
    return (weights + lora_state + activations + logits) / gb + CUDA_OVERHEAD_GB


@dataclass(frozen=True)
class Preset:
    """A named starting point: base model, method, batch size and image-token budget."""

    name: str
    size: str
    method: Method
    batch_size: int = 1
    grad_accum: int = 8
    max_image_tokens: int = 768

    @property
    def base(self) -> BaseModelInfo:
        return KNOWN_BASES[self.size]

    def memory_gb(self, lora_rank: int = 16) -> float:
        return estimate_memory_gb(
            self.base,
            self.method,
            lora_rank=lora_rank,
            batch_size=self.batch_size,
            max_image_tokens=self.max_image_tokens,
        )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("2b-lora", "2B", "lora", batch_size=2, grad_accum=4),
        Preset("2b-qlora", "2B", "qlora", batch_size=1),
        Preset("4b-lora", "4B", "lora", batch_size=1),
        Preset("4b-qlora", "4B", "qlora", batch_size=1),
        Preset("8b-lora", "8B", "lora", batch_size=1),
        Preset("8b-qlora", "8B", "qlora", batch_size=1),
        Preset("32b-qlora", "32B", "qlora", batch_size=1, max_image_tokens=512),
    )
}
# Preferred order when choosing automatically: the largest base that fits, LoRA before QLoRA at a size.
_PREFERENCE = ("32b-qlora", "8b-lora", "8b-qlora", "4b-lora", "4b-qlora", "2b-lora", "2b-qlora")
HEADROOM = 0.9  # use at most 90 % of the free memory


def choose_preset(free_gb: float | None) -> Preset:
    """The largest preset whose estimate fits in 90 % of `free_gb`; the smallest if none fits or unknown."""
    if free_gb is not None:
        for name in _PREFERENCE:
            if PRESETS[name].memory_gb() <= free_gb * HEADROOM:
                return PRESETS[name]
    return PRESETS["2b-qlora"] if free_gb is not None else PRESETS["2b-lora"]


def memory_table(free_gb: float | None = None, chosen: str | None = None) -> str:
    """A plain-text table of every preset's estimated memory, marking what fits and the chosen one."""
    lines = [
        f"{'preset':<11} {'base model':<28} {'method':<6} {'batch':>5} {'img tok':>7} {'est. GB':>8}  fits"
    ]
    for preset in PRESETS.values():
        est = preset.memory_gb()
        fits = "?" if free_gb is None else ("yes" if est <= free_gb * HEADROOM else "no")
        mark = " <- chosen" if preset.name == chosen else ""
        lines.append(
            f"{preset.name:<11} {preset.base.model:<28} {preset.method:<6} {preset.batch_size:>5} "
            f"{preset.max_image_tokens:>7} {est:>8.1f}  {fits}{mark}"
        )
    head = "free GPU memory: unknown" if free_gb is None else f"free GPU memory: {free_gb:.1f} GB"
    return head + " (estimates; see docs/training.md)\n" + "\n".join(lines)


def free_gpu_memory_gb() -> float | None:
    """Free memory of the current CUDA device in GB, or None without CUDA (imports torch)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info()
    return free / 1e9


class TrainConfig(BaseModel):
    """Everything that determines a training run; written to `<run>/train_config.json` exactly as used."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="corrections dataset folder")
    task: str | None = Field(None, description="task to train on (default: the dataset's only task)")
    base_model: str = Field("Qwen/Qwen3-VL-2B-Instruct", description="Hub id or local model directory")
    preset: str | None = None
    method: Method = "lora"
    device: Device = "auto"
    output_dir: str | None = Field(None, description="run folder (default: <data dir>/runs/<name>)")
    name: str | None = Field(None, description="adapter name in the registry (default: from the run)")
    # LoRA
    lora_rank: int = Field(16, ge=1, le=256)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    train_vision: bool = Field(False, description="also put LoRA on the vision tower and merger")
    # optimisation
    epochs: float = Field(3.0, gt=0)
    max_steps: int = Field(-1, description="stop after this many optimiser steps (-1: use epochs)")
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(8, ge=1)
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    gradient_checkpointing: bool = True
    # None: each review as Analyze asked it (its request's budget); a number (or a preset's) overrides it,
    # and the adapter's registry entry records it so Analyze then asks with the same budget
    max_image_tokens: int | None = Field(None, ge=16)
    seed: int = 0
    # data
    rotate: bool = Field(True, description="add 90/180/270-degree rotated copies (boxes rotated too)")
    oversample: bool = Field(True, description="repeat images of rare labels")
    max_repeat: int = Field(4, ge=1, description="most copies oversampling makes of one image")
    complex_part: Literal["phase", "amplitude"] | None = None  # None: the part each request asked for
    # logging and evaluation
    logging_steps: int = Field(1, ge=1)
    eval_each_epoch: bool = True
    final_eval: bool = Field(True, description="evaluate base and adapter on the test split at the end")
    eval_max_new_tokens: int = Field(512, ge=1)

    @field_validator("dataset", "base_model")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not str(value).strip():
            raise ValueError("must not be empty")
        return str(value)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value != "auto" and value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; choose auto or one of {', '.join(PRESETS)}")
        return value

    def with_preset(self, preset: Preset) -> TrainConfig:
        """This configuration with the preset's base model, method, batch and image budget."""
        return self.model_copy(
            update={
                "preset": preset.name,
                "base_model": preset.base.model,
                "method": preset.method,
                "batch_size": preset.batch_size,
                "grad_accum": preset.grad_accum,
                "max_image_tokens": preset.max_image_tokens,
            }
        )

    def save(self, folder: Path) -> Path:
        from napari_fracto.paths import atomic_write_text

        path = Path(folder) / CONFIG_FILE
        atomic_write_text(path, self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> TrainConfig:
        path = Path(folder) / CONFIG_FILE
        if not path.is_file():
            raise ConfigError(f"{folder} has no {CONFIG_FILE}: it is not a training run folder")
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, ValidationError) as exc:
            raise ConfigError(f"{path} is not a valid training configuration: {exc}") from None


def make_config(**values: object) -> TrainConfig:
    """A validated TrainConfig; a bad value raises ConfigError naming the setting (never a pydantic dump)."""
    try:
        return TrainConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid training setting: {problems}") from None
