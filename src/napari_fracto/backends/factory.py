"""Build the backend that a `BackendSettings` describes; the one place that knows every backend class."""

from __future__ import annotations

from napari_fracto.backends.base import Backend
from napari_fracto.settings import BackendSettings


def make_backend(settings: BackendSettings, api_key: str | None = None) -> Backend:
    """A ready backend; construction is cheap (models load on first use)."""
    if settings.kind == "transformers":
        from napari_fracto.backends.transformers_backend import TransformersBackend

        return TransformersBackend(
            settings.model,
            adapter=settings.adapter or None,
            device=settings.device,
            dtype=settings.dtype,
            max_image_tokens=settings.max_image_tokens,
            trust_remote_code=settings.trust_remote_code,
            quantization=settings.quantization,
            constrained=settings.constrained_decoding,
            batch_size=settings.batch_size,
        )
    if settings.kind == "vllm":
        from napari_fracto.backends.vllm_backend import VLLMBackend
        from napari_fracto.inflight import in_flight_for

        return VLLMBackend(
            settings.model,
            adapter=settings.adapter or None,
            dtype=settings.dtype,
            max_image_tokens=settings.max_image_tokens,
            batch_size=in_flight_for(settings),
            trust_remote_code=settings.trust_remote_code,
            constrained=settings.constrained_decoding,
        )
    if settings.kind == "probe":  # a classifier trained on the reviews of the dataset folder `model`
        from napari_fracto.backends.probe import ProbeBackend

        return ProbeBackend(settings.model)
    from napari_fracto.backends.openai_backend import OpenAIBackend

    return OpenAIBackend(
        settings.model,
        base_url=settings.base_url or None,
        api_key=api_key,  # None: the backend reads only the variable that belongs to this endpoint
        api_key_env=settings.api_key_env,
        timeout=settings.timeout_s,
        adapter=settings.adapter or None,
    )
