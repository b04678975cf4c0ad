"""Build the backend that a `BackendSettings` describes; the one place that knows every backend class."""

from __future__ import annotations

import os

from napari_fracto.backends.base import Backend
from napari_fracto.settings import BackendSettings


def resolve_api_key(settings: BackendSettings, api_key: str | None = None) -> str | None:
    """An explicitly given key wins; otherwise the environment variable named in the settings."""
    if api_key:
        return api_key
    return os.environ.get(settings.api_key_env) or None


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
        )
    from napari_fracto.backends.openai_backend import OpenAIBackend

    return OpenAIBackend(
        settings.model,
        base_url=settings.base_url or None,
        api_key=resolve_api_key(settings, api_key),
        timeout=settings.timeout_s,
        adapter=settings.adapter or None,
    )
