"""Backend settings that persist between sessions, in the platform's config directory.

The API key is deliberately not a field: it comes from the environment or is typed into the widget and
lives only in memory, so it can never be written to disk with the settings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from napari_fracto.paths import atomic_write_text, config_dir

logger = logging.getLogger(__name__)

DEFAULT_LOCAL_MODEL = "Qwen/Qwen3-VL-2B-Instruct"
SETTINGS_FILE = "backend.json"
# Written into every settings file before keys were tied to their host; read as "the provider's own".
_OLD_DEFAULT_KEY_ENV = "OPENAI_API_KEY"


class BackendSettings(BaseModel):
    """Which model answers, and how. Extra keys (for example an API key) are refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    kind: Literal["transformers", "openai", "vllm", "probe"] = "transformers"  # probe: model = dataset folder
    model: str = DEFAULT_LOCAL_MODEL
    base_url: str = ""
    adapter: str = ""
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_image_tokens: int = Field(1024, ge=16, le=16384)
    max_new_tokens: int = Field(512, ge=8, le=8192)
    timeout_s: float = Field(120.0, gt=0)
    # The environment variable holding this endpoint's key. Empty: the provider's own, for its own host
    # only (OPENAI_API_KEY for api.openai.com, GEMINI_API_KEY for Gemini); see remote_hosts.
    api_key_env: str = ""
    trust_remote_code: bool = False
    # "4bit": load the local model in NF4 (bitsandbytes, CUDA only), as a QLoRA adapter was trained.
    quantization: Literal["none", "4bit"] = "none"
    # Local backend: decode under the answer's JSON schema (needs the `constrained` extra, xgrammar).
    constrained_decoding: bool = True
    # Local backend: the most requests generated together when several are in flight (a batch, a
    # folder); 1 answers one at a time. More fills a GPU better and needs more memory.
    batch_size: int = Field(1, ge=1, le=256)


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


def load_settings(path: Path | None = None) -> BackendSettings:
    """The saved settings, or the defaults when none are saved or the file is unreadable (logged)."""
    path = path or settings_path()
    if not path.exists():
        return BackendSettings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("api_key", None)  # never trust a key that somebody put in the file by hand
        if data.get("api_key_env") == _OLD_DEFAULT_KEY_ENV:
            data["api_key_env"] = ""  # the old default, saved for everyone: not a choice of this endpoint
        return BackendSettings.model_validate(data)
    except (OSError, ValueError, ValidationError) as exc:
        logger.warning("Ignoring unreadable settings file %s (%s); using defaults.", path, exc)
        return BackendSettings()


def save_settings(settings: BackendSettings, path: Path | None = None) -> Path:
    path = path or settings_path()
    atomic_write_text(path, settings.model_dump_json(indent=2))
    return path
