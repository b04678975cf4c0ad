"""Run a Qwen3-VL model locally with Hugging Face transformers, optionally with a LoRA adapter.

Constructing the backend is cheap; the model loads on the first `generate` (or `load()`), so napari starts
fast and a wrong setting shows up as a `BackendError` whose message says what to do. One generation runs at
a time (a lock), and `request.cancel` stops its row between tokens. With `batch_size` > 1, requests from
several threads are generated together (`local_batch`), padded on the left, each stopping at its own end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from napari_fracto.backends.base import BackendError, CancelledError, VLMReply, VLMRequest

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen3-VL-2B-Instruct"


class TransformersBackend:
    """A local Hugging Face image-text-to-text model (Qwen3-VL) behind the `Backend` interface.

    `model` is a Hub id or a local model directory; `adapter` a PEFT LoRA directory trained on that model.
    `max_image_tokens` caps the vision tokens per image (one token per 32x32 pixels for Qwen3-VL); larger
    images are downscaled. `quantization="4bit"` loads the base in NF4 (bitsandbytes, CUDA only), as
    QLoRA adapters were trained; the default loads it in `dtype`. `local_files_only=None` follows
    HF_HUB_OFFLINE. With `constrained` and xgrammar installed, `request.json_schema` is enforced while
    decoding. `batch_size` is the most requests generated together when callers run concurrently.
    """

    name = "transformers"

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        adapter: str | os.PathLike[str] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        max_image_tokens: int = 1024,
        trust_remote_code: bool = False,
        local_files_only: bool | None = None,
        quantization: str = "none",
        constrained: bool = True,
        batch_size: int = 1,
    ) -> None:
        if not str(model).strip():
            raise BackendError(
                "No model given: pass a Hugging Face model id (e.g. Qwen/Qwen3-VL-2B-Instruct) "
                "or a local model directory."
            )
        if int(max_image_tokens) < 1:
            raise BackendError(f"max_image_tokens must be at least 1, got {max_image_tokens}.")
        self.model = str(model)
        self.adapter = str(adapter) if adapter else None
        self.device = device
        self.dtype = dtype
        self.max_image_tokens = int(max_image_tokens)
        self.trust_remote_code = bool(trust_remote_code)
        self.local_files_only = local_files_only
        if quantization not in ("none", "4bit"):
            raise BackendError(f"Unknown quantization '{quantization}'; choose 'none' or '4bit'.")
        self.quantization = quantization
        self.constrained = bool(constrained)  # decode under the request's JSON schema when xgrammar is there
        if int(batch_size) < 1:
            raise BackendError(f"batch_size must be at least 1, got {batch_size}.")
        self.batch_size = int(batch_size)
        self._collector = None
        if self.batch_size > 1:
            from napari_fracto.backends.local_batch import BatchCollector

            self._collector = BatchCollector(self._run_rows, self.batch_size)
        self._lock = threading.Lock()
        self._hf_model: Any = None
        self._processor: Any = None
        self._device: str | None = None

    # -- loading ---------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._hf_model is not None

    @property
    def processor(self) -> Any:
        """The loaded processor (None before loading); the image-only one when torchvision is absent."""
        return self._processor

    def load(self) -> None:
        """Load the model, processor and adapter now (e.g. in a worker thread) instead of on first use."""
        with self._lock:
            self._ensure_loaded()

    @contextlib.contextmanager
    def using_model(self) -> Iterator[tuple[Any, Any]]:
        """The loaded (model, processor), held exclusively: no generation or close() runs meanwhile.

        For other uses of the same weights (vision-tower features for example selection) without a
        second copy of the model in memory.
        """
        with self._lock:
            self._ensure_loaded()
            yield self._hf_model, self._processor

    def _offline(self) -> bool:
        if self.local_files_only is not None:
            return bool(self.local_files_only)
        return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}

    def _ensure_loaded(self) -> None:
        if self._hf_model is not None:
            return
        from napari_fracto.backends.devices import resolve_device, resolve_dtype
        from napari_fracto.backends.qwen_processor import load_processor, set_image_token_budget

        source = _check_model_source(self.model, offline=self._offline())
        if self.adapter:
            _read_adapter_config(self.adapter)  # fail before the (slow) base model load
        device = resolve_device(self.device)
        torch_dtype = resolve_dtype(self.dtype, device)
        kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        quantized = quantization_kwargs(self.quantization, device, torch_dtype)
        if self._offline():
            kwargs["local_files_only"] = True
        try:
            # The config first: it is small, so a wrong id, no network or remote code fail fast and clearly.
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(source, **kwargs)
            model = _load_model(source, config, device, torch_dtype, {**kwargs, **quantized})
            processor = load_processor(source, **kwargs)
        except BackendError:
            raise
        except Exception as exc:
            raise _explain_load_error(exc, self.model, self._offline()) from exc
        if self.adapter:
            model = _apply_adapter(model, self.adapter, self.model)
        model.eval()
        set_image_token_budget(processor, self.max_image_tokens)
        self._hf_model, self._processor, self._device = model, processor, device
        log.info(
            "Loaded %s%s on %s (%s)",
            self.model,
            f" + {self.adapter}" if self.adapter else "",
            device,
            torch_dtype,
        )

    # -- generation ------------------------------------------------------------------------------------

    def generate(self, request: VLMRequest) -> VLMReply:
        """Answer one chat request; greedy when `temperature == 0`. Raises CancelledError when cancelled.

        With `batch_size` > 1, calls from several threads at once are generated together (see
        `local_batch.BatchCollector`); each caller still gets its own reply.
        """
        if request.cancel is not None and request.cancel.is_set():
            raise CancelledError("Cancelled before the model started.")
        to_chat_messages(request)  # malformed requests fail here, before the model loads
        if self._collector is not None:
            return self._collector.submit(request)
        outcome = self._run_rows([request])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def generate_batch(self, requests: list[VLMRequest]) -> list[VLMReply]:
        """Answer several requests in one batched generation (any number; `batch_size` does not apply).

        Greedy answers are the same, token for token, as one at a time. Raises the first row's error.
        """
        for request in requests:
            to_chat_messages(request)
        outcomes = self._run_rows(list(requests))
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes  # type: ignore[return-value]

    def _run_rows(self, requests: list[VLMRequest]) -> list[Any]:
        from napari_fracto.backends.local_batch import generate_rows

        if all(r.cancel is not None and r.cancel.is_set() for r in requests):
            return [CancelledError("Cancelled before the model started.") for _ in requests]
        with self._lock:
            self._ensure_loaded()
            return generate_rows(
                self._hf_model,
                self._processor,
                requests,
                constrained=self.constrained,
                oom_hint=(
                    f"Lower the batch size (now {self.batch_size}) or max_image_tokens (now "
                    f"{self.max_image_tokens}), send smaller or fewer images, or choose a smaller model "
                    "(e.g. Qwen/Qwen3-VL-2B-Instruct)."
                ),
            )

    def close(self) -> None:
        """Drop the model and free accelerator memory; a later `generate` loads it again."""
        with self._lock:
            self._hf_model = None
            self._processor = None
        _free_accelerator_memory()

    def __repr__(self) -> str:
        adapter = f", adapter={self.adapter!r}" if self.adapter else ""
        return f"TransformersBackend({self.model!r}{adapter}, device={self.device!r}, loaded={self.loaded})"


# -- request conversion --------------------------------------------------------------------------------


def to_chat_messages(request: VLMRequest) -> tuple[list[dict[str, Any]], list[Any]]:
    """Neutral turns -> chat-template messages (image placeholders) plus the images in order of appearance."""
    from PIL import Image

    if not request.turns:
        raise BackendError("The request has no turns: nothing to send to the model.")
    messages: list[dict[str, Any]] = []
    images: list[Any] = []
    for i, turn in enumerate(request.turns):
        if turn.role not in ("system", "user", "assistant"):
            raise BackendError(f"Turn {i} has role '{turn.role}'; use 'system', 'user' or 'assistant'.")
        content: list[dict[str, Any]] = []
        for j, part in enumerate(turn.parts):
            if isinstance(part, str):
                content.append({"type": "text", "text": part})
            elif isinstance(part, Image.Image):
                if turn.role != "user":
                    raise BackendError(
                        f"Turn {i} ({turn.role}) holds an image; only user turns may hold images."
                    )
                content.append({"type": "image"})
                images.append(part if part.mode == "RGB" else part.convert("RGB"))
            else:
                raise BackendError(
                    f"Part {j} of turn {i} is a {type(part).__name__}; parts must be text or PIL images "
                    "(convert arrays with napari_fracto.imaging.to_model_rgb first)."
                )
        messages.append({"role": turn.role, "content": content})
    return messages, images


# -- loading helpers -----------------------------------------------------------------------------------

_PATH_LIKE = re.compile(r"^(~|\.{1,2}[\\/]|[\\/]|[A-Za-z]:[\\/])")


def _check_model_source(model: str, *, offline: bool) -> str:
    """The directory or Hub id to load from; clear errors for missing directories and uncached offline ids."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BackendError(f"'{model}' is a file; pass the model directory that holds config.json.")
        if not (path / "config.json").is_file():
            raise BackendError(
                f"'{model}' has no config.json, so it is not a Hugging Face model directory. Pass the folder "
                "that holds config.json and the *.safetensors weights (or a model id such as "
                f"{DEFAULT_MODEL})."
            )
        return str(path)
    if _PATH_LIKE.match(model) or model.count("/") > 1:
        raise BackendError(f"The model directory '{model}' does not exist.")

    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(model, "config.json")
    except HFValidationError as exc:
        raise BackendError(
            f"'{model}' is neither an existing directory nor a valid Hugging Face model id "
            f"(like {DEFAULT_MODEL})."
        ) from exc
    if not isinstance(cached, str):
        if offline:
            raise BackendError(
                _not_cached_message(model, "offline mode is on (HF_HUB_OFFLINE / local_files_only)")
            )
        log.warning(
            "The model '%s' is not in the Hugging Face cache yet; it will be downloaded now into %s (%s). "
            "This happens once.",
            model,
            _hf_cache_dir(),
            _size_hint(model),
        )
        unreachable = _hub_unreachable()
        if unreachable:  # fail in seconds instead of ~30 s of download retries with no sign in the UI
            raise BackendError(_not_cached_message(model, unreachable))
    return model


def _hub_unreachable(timeout_s: float = 3.0) -> str:
    """Why the Hub cannot be reached ("" when it can): one TCP connection, a few seconds at most."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        return f"{host} cannot be reached ({exc.strerror or exc})"
    return ""


def _not_cached_message(model: str, why: str) -> str:
    return (
        f"The model '{model}' is not in the Hugging Face cache and cannot be downloaded: {why}. "
        f"Connect to the internet once so it is cached, set HF_HOME to a cache that holds it, "
        "or pass a local model directory."
    )


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _size_hint(model: str) -> str:
    """A rough download size from the parameter count in the name (weights ship as 16-bit)."""
    match = re.search(r"(\d+(?:\.\d+)?)[Bb](?![a-z])", model.split("/")[-1])
    if not match:
        return "size unknown; Qwen3-VL models are several GB"
    gigabytes = float(match.group(1)) * 2
    return f"roughly {gigabytes:.0f} GB" if gigabytes >= 1 else f"roughly {gigabytes * 1000:.0f} MB"


def quantization_kwargs(quantization: str, device: str, torch_dtype: Any) -> dict[str, Any]:
    """from_pretrained arguments for `quantization` ("none" or "4bit"); 4-bit needs CUDA and bitsandbytes."""
    if quantization != "4bit":
        return {}
    if not device.startswith("cuda"):
        raise BackendError(
            f"4-bit loading (quantization='4bit', for QLoRA adapters) needs a CUDA GPU; the device is "
            f"'{device}'. Use a CUDA machine, or set quantization to 'none' to load the base unquantised "
            "(needs about four times the memory)."
        )
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise BackendError(
            "4-bit loading needs the bitsandbytes package: pip install bitsandbytes (or set quantization "
            "to 'none')."
        )
    from napari_fracto.backends.devices import four_bit_config

    return {"quantization_config": four_bit_config(torch_dtype)}


def _load_model(source: str, config: Any, device: str, torch_dtype: Any, kwargs: dict[str, Any]) -> Any:
    from transformers import AutoModelForImageTextToText

    if device != "cpu":
        kwargs = {**kwargs, "device_map": device}  # straight onto the accelerator, no host-memory copy
    return AutoModelForImageTextToText.from_pretrained(source, config=config, dtype=torch_dtype, **kwargs)


def _explain_load_error(exc: Exception, model: str, offline: bool) -> BackendError:
    """Turn transformers / hub exceptions into messages a napari user can act on."""
    text = str(exc)
    lowered = text.lower()
    if "trust_remote_code" in text or "custom code" in lowered:
        return BackendError(
            f"The model '{model}' needs its own Python code from its repository. Only if you trust its "
            f"authors, enable trust_remote_code. ({_first_line(text)})"
        )
    if _is_out_of_memory(exc):
        _free_accelerator_memory()
        return BackendError(
            f"Out of memory loading '{model}'. Choose a smaller model (e.g. Qwen/Qwen3-VL-2B-Instruct), "
            "a lower-precision dtype, or device='cpu' if the GPU is too small."
        )
    if "does not recognize this architecture" in lowered or "unrecognized configuration class" in lowered:
        return BackendError(
            f"This transformers version cannot run '{model}' (unknown architecture); upgrade transformers "
            f"or choose a Qwen3-VL model. ({_first_line(text)})"
        )
    if isinstance(exc, OSError) or "connect" in lowered or "offline" in lowered:
        why = "offline mode is on" if offline else f"the download failed ({_first_line(text)})"
        return BackendError(_not_cached_message(model, why))
    return BackendError(f"Could not load the model '{model}': {type(exc).__name__}: {_first_line(text)}")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text)[:300]


def _read_adapter_config(adapter: str) -> dict[str, Any]:
    path = Path(adapter).expanduser()
    if not path.is_dir():
        raise BackendError(f"The LoRA adapter directory '{adapter}' does not exist.")
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise BackendError(
            f"'{adapter}' has no adapter_config.json, so it is not a PEFT/LoRA adapter directory. Pass the "
            "folder written by the fine-tuning step (with adapter_config.json and adapter_model.safetensors)."
        )
    if not (path / "adapter_model.safetensors").is_file() and any(path.glob("adapter_model*.bin")):
        raise BackendError(
            f"'{adapter}' holds its weights only as a pickle (adapter_model.bin), which is never loaded: a "
            "pickle can run code. Use an adapter saved as adapter_model.safetensors (peft's default; re-save "
            "it with save_pretrained(..., safe_serialization=True) where you trust the file)."
        )
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendError(f"Cannot read {config_file}: {exc}") from exc


def _apply_adapter(model: Any, adapter: str, model_name: str) -> Any:
    """Wrap `model` with the LoRA adapter; a mismatched base model gives a clear BackendError."""
    from peft import PeftModel

    config = _read_adapter_config(adapter)
    base = config.get("base_model_name_or_path") or "unknown"
    if Path(str(base)).name != Path(model_name).name:
        log.warning("Adapter %s was trained on '%s' but is being loaded onto '%s'", adapter, base, model_name)
    try:
        return PeftModel.from_pretrained(model, str(Path(adapter).expanduser()), is_trainable=False)
    except Exception as exc:
        raise BackendError(
            f"The LoRA adapter '{adapter}' does not fit the model '{model_name}': it was trained on "
            f"'{base}'. Load it with that base model, or pick an adapter trained on this one. "
            f"({_first_line(str(exc))})"
        ) from exc


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom_type) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _free_accelerator_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            torch.mps.empty_cache()
    except Exception:  # freeing is best effort; never hide the real error
        log.debug("could not empty the accelerator cache", exc_info=True)
