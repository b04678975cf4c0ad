"""Training configuration (pydantic, saved verbatim in every run folder) and presets chosen by GPU memory.

Pure: imports neither torch nor transformers, so the CLI, the widget and the memory table load instantly.
The memory figures are estimates counted from the published architectures (`memory.py`: weights in the
dtypes they have during training, LoRA optimiser state, activations with gradient checkpointing, CUDA
overhead); they tell a user what will fit before they wait, not a guarantee.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from napari_fracto.errors import UserError
from napari_fracto.training.memory import ARCHITECTURES, Architecture, memory_breakdown

Method = Literal["lora", "qlora"]
Device = Literal["auto", "cuda", "cpu"]

CONFIG_FILE = "train_config.json"


class ConfigError(UserError, ValueError):
    """The training configuration is invalid; the message says which setting and what to change."""


@dataclass(frozen=True)
class BaseModelInfo:
    """A Qwen3-VL base the presets know: its Hub id and published architecture (see `memory.py`)."""

    model: str
    size: str

    @property
    def arch(self) -> Architecture:
        return ARCHITECTURES[self.size]

    @property
    def params_b(self) -> float:
        return self.arch.total_params / 1e9

    @property
    def vision_b(self) -> float:
        return self.arch.vision_params / 1e9


KNOWN_BASES: dict[str, BaseModelInfo] = {
    size: BaseModelInfo(f"Qwen/Qwen3-VL-{size}-Instruct", size) for size in ("2B", "4B", "8B", "32B")
}


def estimate_memory_gb(
    base: BaseModelInfo,
    method: Method,
    *,
    lora_rank: int = 16,
    batch_size: int = 1,
    max_image_tokens: int = 768,
    text_tokens: int = 1024,
    train_vision: bool = False,
) -> float:
    """Estimated peak GPU memory (GB) for LoRA/QLoRA fine-tuning of `base` (`memory.memory_breakdown`)."""
    return memory_breakdown(
        base.arch,
        method,
        lora_rank=lora_rank,
        batch_size=batch_size,
        max_image_tokens=max_image_tokens,
        text_tokens=text_tokens,
        train_vision=train_vision,
    )["total"]


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


def choose_preset(free_gb: float | None, size: str | None = None) -> Preset:
    """The largest preset whose estimate fits in 90 % of `free_gb`; the smallest if none fits or unknown.

    `size` ("2B", ... from `model_size`) restricts the choice to presets of that base."""
    names = [n for n in _PREFERENCE if size is None or PRESETS[n].size == size]
    if not names:
        raise ConfigError(f"no preset for a {size} base; choose --method and --batch-size yourself")
    if free_gb is not None:
        for name in names:
            if PRESETS[name].memory_gb() <= free_gb * HEADROOM:
                return PRESETS[name]
        return PRESETS[names[-1]]
    lora = [n for n in names if PRESETS[n].method == "lora"]
    return PRESETS[lora[-1] if lora else names[-1]]


def model_size(base_model: str) -> str | None:
    """ "2B"/"4B"/"8B"/"32B" for a known Qwen3-VL: a local folder by its config.json, a Hub id by its name."""
    folder = Path(base_model).expanduser()
    if (folder / "config.json").is_file():
        try:
            text = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("text_config", {})
        except (OSError, ValueError):
            return None
        for size, arch in ARCHITECTURES.items():
            if (text.get("hidden_size"), text.get("num_hidden_layers")) == (arch.hidden_size, arch.layers):
                return size
        return None
    match = re.search(r"Qwen3-VL-(\d+B)\b", base_model, flags=re.IGNORECASE)
    size = match.group(1).upper() if match else None
    return size if size in ARCHITECTURES else None


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


def free_gpu_memory_gb(device: int | None = None) -> float | None:
    """Free memory of CUDA device `device` (default: the current one) in GB, or None without CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(device)
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

    def with_preset(self, preset: Preset, *, keep_model: bool = False) -> TrainConfig:
        """This configuration with the preset's base model (unless `keep_model`: e.g. a local folder),
        method, batch and image budget."""
        return self.model_copy(
            update={
                "preset": preset.name,
                "base_model": self.base_model if keep_model else preset.base.model,
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


def quantization_for(method: str) -> str:
    """How a base must be loaded to run an adapter trained with `method` (BackendSettings.quantization):
    a QLoRA adapter on its 4-bit base, as it was trained (a bf16 32B base would need 66 GB)."""
    return "4bit" if method == "qlora" else "none"


def make_config(**values: object) -> TrainConfig:
    """A validated TrainConfig; a bad value raises ConfigError naming the setting (never a pydantic dump)."""
    try:
        return TrainConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid training setting: {problems}") from None
