"""Image features from a Qwen3-VL model's own vision tower, for "similar" in-context example selection.

An option beside the default texture features (`icl.texture_features`): they need the model's weights,
but they rank examples by what the model itself sees. The image goes through the same preparation as a
prompt image (`imaging.prepare_model_image`), the processor (pixel values + image_grid_thw), the model's
visual encoder (merged patch tokens), then a mean over the tokens, L2-normalised, as float32.

The model is loaded by `TransformersBackend` (never a second loader); pass the analysis backend itself
when it is local, so one model serves both. torch/transformers are imported only when features are
computed.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_fracto.backends.base import BackendError

if TYPE_CHECKING:
    from napari_fracto.backends.transformers_backend import TransformersBackend

DEFAULT_IMAGE_TOKENS = 256  # enough for a global look; a full-size image would cost as much as a prompt


class VisionFeatures:
    """`icl.Features` from a local backend's vision tower; `name` keys the cache by model, adapter files
    and resolution, so vectors of different models (or of texture) never mix."""

    normalised = True  # unit vectors: the selector compares them by plain distance, not z-scores

    def __init__(
        self,
        backend: TransformersBackend,
        *,
        max_image_tokens: int = DEFAULT_IMAGE_TOKENS,
        owns_backend: bool = False,
    ) -> None:
        if int(max_image_tokens) < 1:
            raise ValueError(f"max_image_tokens must be at least 1, got {max_image_tokens}")
        self.backend = backend
        self.owns_backend = owns_backend  # close() frees the model only when it is ours, not the analysis one
        # the processor never goes above the backend's own budget, so neither do we
        self.max_image_tokens = min(int(max_image_tokens), int(backend.max_image_tokens))
        self.name = feature_name(backend.model, backend.adapter or "", self.max_image_tokens)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """The image's embedding (raises `imaging.ImageError` for unusable images, `BackendError` when
        the model cannot load)."""
        from napari_fracto.imaging import prepare_model_image

        image = prepare_model_image(array, self.max_image_tokens)
        with self.backend.using_model() as (model, processor):
            return embed_image(model, processor, image)

    def close(self) -> None:
        """Free the model when it was loaded for the features alone."""
        if self.owns_backend:
            self.backend.close()

    def __repr__(self) -> str:
        return f"VisionFeatures({self.backend.model!r}, max_image_tokens={self.max_image_tokens})"


def feature_name(model: str, adapter: str, max_image_tokens: int) -> str:
    """A file-safe cache name for one model + adapter (its files' sizes and times) + resolution."""
    from napari_fracto.evaluation.compare import adapter_fingerprint

    key = f"{os.path.normpath(str(model))}|{adapter_fingerprint(adapter)}|{max_image_tokens}"
    return "vision-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def embed_image(model: Any, processor: Any, image: Any) -> np.ndarray:
    """Mean of the vision tower's output tokens for one PIL image, L2-normalised float32."""
    import torch

    inputs = processor.image_processor(images=[image], return_tensors="pt")
    pixel_values = inputs["pixel_values"].to(model.device)
    grid = inputs["image_grid_thw"].to(model.device)
    with torch.inference_mode():
        output = model.get_image_features(pixel_values, grid)
    pooled = output.pooler_output if hasattr(output, "pooler_output") else output[0]
    tokens = pooled[0] if isinstance(pooled, list | tuple) else pooled  # one image: its merged tokens
    vector = tokens.float().mean(dim=0).cpu().numpy().astype(np.float32)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise BackendError(
            f"The vision tower of '{getattr(model, 'name_or_path', 'the model')}' gave no usable "
            "features for this image (zero or not finite); use texture features instead."
        )
    return vector / norm


def vision_features(
    *,
    backend: Any = None,
    model: str = "",
    device: str = "auto",
    dtype: str = "auto",
    max_image_tokens: int = DEFAULT_IMAGE_TOKENS,
) -> VisionFeatures:
    """Vision-tower features from `model` (a Hub id or local Qwen3-VL directory) when given, else from
    the local analysis `backend` (shared, so the model loads once).

    Raises ValueError (a message for the user) when neither gives a local model, e.g. with a server.
    """
    from napari_fracto.backends.transformers_backend import TransformersBackend

    if str(model).strip():
        return VisionFeatures(
            TransformersBackend(model, device=device, dtype=dtype, max_image_tokens=max_image_tokens),
            max_image_tokens=max_image_tokens,
            owns_backend=True,
        )
    if isinstance(backend, TransformersBackend):
        return VisionFeatures(backend, max_image_tokens=max_image_tokens)
    raise ValueError(
        "vision example features need a local Qwen3-VL model: use the transformers backend, or give a "
        "feature model (--feature-model, a Hub id or model directory), or use texture features"
    )
