"""vLLM's offline engine as a local backend (`--backend vllm`): continuous batching on a GPU, LoRA included.

For an archive on a machine with a CUDA GPU, vLLM schedules many requests at once far better than
transformers' `generate`. The engine is built on first use (vLLM is imported only then; without it,
making the backend fails at once with a message saying how to install it); concurrent `generate` calls
are handed to it together (`local_batch.BatchCollector`). The chat is rendered with the model's own chat
template from the same turns the transformers backend uses (`to_chat_messages`), so both backends show
the model the same prompt.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from napari_fracto.backends.base import BackendError, CancelledError, VLMReply, VLMRequest

INSTALL_HINT = (
    "--backend vllm needs vLLM, which runs on Linux with a CUDA GPU: pip install vllm (in its own "
    "environment if its torch differs), or use --backend transformers on this machine"
)
LORA_ID = 1  # one adapter per engine: the adapter this backend was made with


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def to_vllm_input(request: VLMRequest, render: Callable[[list[dict[str, Any]]], str]) -> dict[str, Any]:
    """One request as vLLM's engine takes it: the rendered prompt, its images, the sampling settings.

    `render` turns chat messages into the prompt text (the model's chat template). Images go in order
    of their placeholders; `json_schema` asks vLLM's structured output for the answer's schema.
    """
    from napari_fracto.backends.transformers_backend import to_chat_messages

    messages, images = to_chat_messages(request)
    data: dict[str, Any] = {"prompt": render(messages)}
    if images:
        data["multi_modal_data"] = {"image": images}
    sampling = {
        "max_tokens": max(1, int(request.max_new_tokens)),
        "temperature": max(float(request.temperature or 0.0), 0.0),
    }
    if request.json_schema:
        sampling["json_schema"] = request.json_schema
    return {"input": data, "sampling": sampling}


class VLLMBackend:
    """A Qwen3-VL model (Hub id or directory) in vLLM's offline engine, optionally with a LoRA adapter."""

    name = "vllm"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        adapter: str | os.PathLike[str] | None = None,
        dtype: str = "auto",
        max_image_tokens: int = 1024,
        batch_size: int = 64,
        trust_remote_code: bool = False,
        constrained: bool = True,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        if not str(model).strip():
            raise BackendError("No model given: pass a Hugging Face model id or a local model directory.")
        if not vllm_available():  # at once, not once per image of a batch
            raise BackendError(INSTALL_HINT)
        self.model = str(model)
        self.adapter = str(adapter) if adapter else None
        self.dtype = dtype
        self.max_image_tokens = int(max_image_tokens)
        self.batch_size = max(1, int(batch_size))
        self.trust_remote_code = bool(trust_remote_code)
        self.constrained = bool(constrained)
        self.engine_options = dict(engine_options or {})
        self._lock = threading.Lock()
        self._llm: Any = None
        from napari_fracto.backends.local_batch import BatchCollector

        self._collector = BatchCollector(self._run_rows, self.batch_size)

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def _ensure_loaded(self) -> None:
        if self._llm is not None:
            return
        from vllm import LLM

        options: dict[str, Any] = {
            "model": self.model,
            "dtype": self.dtype,
            "trust_remote_code": self.trust_remote_code,
            "max_num_seqs": self.batch_size,
            "limit_mm_per_prompt": {"image": 8},
            # the images arrive within the budget already (prepare); this keeps the engine's own resizing
            "mm_processor_kwargs": {"max_pixels": self.max_image_tokens * 32 * 32},
        }
        if self.adapter:
            from napari_fracto.backends.transformers_backend import _read_adapter_config

            config = _read_adapter_config(self.adapter)
            options.update(enable_lora=True, max_loras=1, max_lora_rank=_lora_rank(int(config.get("r", 16))))
        options.update(self.engine_options)
        try:
            self._llm = LLM(**options)
        except Exception as exc:
            raise BackendError(
                f"vLLM could not start '{self.model}': {type(exc).__name__}: {str(exc)[:300]}. Check that "
                "the GPU has room (lower the batch size or max_image_tokens) and that vLLM supports "
                "the model."
            ) from exc

    def generate(self, request: VLMRequest) -> VLMReply:
        """Answer one request; calls from several threads at once reach the engine together."""
        if request.cancel is not None and request.cancel.is_set():
            raise CancelledError("Cancelled before the model started.")
        from napari_fracto.backends.transformers_backend import to_chat_messages

        to_chat_messages(request)  # malformed requests fail before the engine starts
        return self._collector.submit(request)

    def _run_rows(self, requests: list[VLMRequest]) -> list[VLMReply | BaseException]:
        with self._lock:
            self._ensure_loaded()
            tokenizer = self._llm.get_tokenizer()

            def render(messages: list[dict[str, Any]]) -> str:
                return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

            outcomes: list[VLMReply | BaseException | None] = [None] * len(requests)
            rows, inputs, params = [], [], []
            for i, request in enumerate(requests):
                if request.cancel is not None and request.cancel.is_set():
                    outcomes[i] = CancelledError("Cancelled before the model started.")
                    continue
                converted = to_vllm_input(request, render)
                rows.append(i)
                inputs.append(converted["input"])
                params.append(self._sampling(converted["sampling"]))
            start = time.perf_counter()
            lora = self._lora()
            outputs = self._llm.generate(inputs, params, lora_request=lora, use_tqdm=False) if rows else []
            seconds = time.perf_counter() - start
        for i, output in zip(rows, outputs, strict=True):
            choice = output.outputs[0]
            outcomes[i] = VLMReply(
                text=choice.text.strip(),
                seconds=seconds,
                prompt_tokens=len(output.prompt_token_ids or []),
                completion_tokens=len(choice.token_ids),
                extra={"finish_reason": choice.finish_reason, "batch_size": len(rows), "engine": "vllm"},
            )
        return [o if o is not None else BackendError("no answer was generated") for o in outcomes]

    def _sampling(self, sampling: dict[str, Any]) -> Any:
        from vllm import SamplingParams

        schema = sampling.pop("json_schema", None)
        if schema is not None and self.constrained:
            sampling.update(_structured(schema))
        return SamplingParams(**sampling)

    def _lora(self) -> Any:
        if not self.adapter:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest("adapter", LORA_ID, os.path.expanduser(self.adapter))

    def close(self) -> None:
        """Drop the engine (its GPU memory goes with it); a later `generate` starts it again."""
        with self._lock:
            self._llm = None
        from napari_fracto.backends.transformers_backend import _free_accelerator_memory

        _free_accelerator_memory()

    def __repr__(self) -> str:
        adapter = f", adapter={self.adapter!r}" if self.adapter else ""
        return f"VLLMBackend({self.model!r}{adapter}, loaded={self.loaded})"


def _lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds `rank` (it supports a fixed set)."""
    return next((r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank), rank)


def _structured(schema: dict[str, Any]) -> dict[str, Any]:
    """SamplingParams arguments for a JSON schema, in whichever spelling this vLLM has."""
    try:
        from vllm.sampling_params import StructuredOutputsParams  # vLLM >= 0.11

        return {"structured_outputs": StructuredOutputsParams(json=schema)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}
