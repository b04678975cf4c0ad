"""An image-only Qwen3-VL processor, and a loader that falls back to it when torchvision is missing.

Transformers builds a video processor for Qwen3-VL, and that needs torchvision, which many napari
environments lack (and which does not import beside CPU torch 2.13 wheels). Images alone never need it:
the PIL image processor does the work. `load_processor` uses the standard `AutoProcessor` when it works
and this image-only processor otherwise, so a model directory from the Hub loads either way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from napari_fracto.backends.base import BackendError

log = logging.getLogger(__name__)


def _processor_class() -> type:
    """Define the subclass lazily so importing this module does not import transformers."""
    global _IMAGE_ONLY_CLASS
    if _IMAGE_ONLY_CLASS is None:
        from transformers import Qwen3VLProcessor

        class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
            """Qwen3VLProcessor without the video processor (so without torchvision); images and text only."""

            def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
                super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

            def __call__(self, images=None, text=None, videos=None, **kwargs):
                if videos is not None:
                    raise BackendError(
                        "This Qwen3-VL processor handles images only (torchvision is not installed); "
                        "install torchvision matching your torch to process videos."
                    )
                return super().__call__(images=images, text=text, **kwargs)

        ImageOnlyQwen3VLProcessor.__module__ = __name__
        ImageOnlyQwen3VLProcessor.__qualname__ = "ImageOnlyQwen3VLProcessor"
        _IMAGE_ONLY_CLASS = ImageOnlyQwen3VLProcessor
    return _IMAGE_ONLY_CLASS


_IMAGE_ONLY_CLASS: type | None = None


def __getattr__(name: str) -> Any:
    """`from napari_fracto.backends.qwen_processor import ImageOnlyQwen3VLProcessor` imports transformers."""
    if name == "ImageOnlyQwen3VLProcessor":
        return _processor_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def image_only_processor_class() -> type:
    """The `ImageOnlyQwen3VLProcessor` class (a `transformers.Qwen3VLProcessor` subclass)."""
    return _processor_class()


def is_image_only(processor: Any) -> bool:
    """True when `processor` is the image-only fallback rather than the standard processor."""
    return _IMAGE_ONLY_CLASS is not None and isinstance(processor, _IMAGE_ONLY_CLASS)


def build_image_only_processor(model_dir_or_id: str | Path, **kwargs: Any) -> Any:
    """Build the image-only processor from a model directory or Hub id (tokenizer + PIL image processor).

    Built from its parts rather than `from_pretrained` on the class, so the directory's own
    `processor_class` entries ("Qwen3VLProcessor") cannot redirect it back to the video-needing class.
    """
    from transformers import AutoImageProcessor, AutoTokenizer

    source = str(model_dir_or_id)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    image_processor = AutoImageProcessor.from_pretrained(source, backend="pil", **kwargs)
    chat_template = getattr(tokenizer, "chat_template", None) or _read_chat_template(source, **kwargs)
    if not chat_template:
        raise BackendError(
            f"'{source}' has no chat template (chat_template.json, chat_template.jinja or in "
            "tokenizer_config.json); it does not look like an instruction-tuned Qwen3-VL model."
        )
    return _processor_class()(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template
    )


def _read_chat_template(source: str, **kwargs: Any) -> str | None:
    """The template from chat_template.jinja or chat_template.json, local or in the Hugging Face cache."""
    import json

    for name in ("chat_template.jinja", "chat_template.json"):
        path = Path(source) / name
        if not path.is_file():
            try:
                from huggingface_hub import hf_hub_download

                path = Path(
                    hf_hub_download(
                        source,
                        name,
                        local_files_only=kwargs.get("local_files_only", False),
                        revision=kwargs.get("revision"),
                    )
                )
            except Exception:  # absent from the repo, or offline: try the next name
                continue
        text = path.read_text(encoding="utf-8")
        return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return None


def load_processor(model_dir_or_id: str | Path, **kwargs: Any) -> Any:
    """The processor for a Qwen3-VL model: `AutoProcessor` when it works, else the image-only one.

    `AutoProcessor` fails without torchvision (the video processor), and on a directory saved by the
    image-only class it silently returns a bare tokenizer; both cases fall back. `kwargs` go to
    `from_pretrained` (e.g. `local_files_only`, `revision`, `trust_remote_code`).
    """
    from transformers import AutoProcessor

    source = str(model_dir_or_id)
    try:
        processor = AutoProcessor.from_pretrained(source, **kwargs)
    except ImportError as exc:
        log.info("AutoProcessor failed for %s (%s); using the image-only Qwen3-VL processor", source, exc)
        return build_image_only_processor(source, **kwargs)
    except ValueError as exc:
        # A processor class AutoProcessor does not know (e.g. one saved by the image-only class).
        if "trust_remote_code" in str(exc):
            raise
        log.info("AutoProcessor failed for %s (%s); using the image-only Qwen3-VL processor", source, exc)
        return build_image_only_processor(source, **kwargs)
    if getattr(processor, "image_processor", None) is None:
        log.info(
            "AutoProcessor returned %s without an image processor for %s; using the image-only one",
            type(processor).__name__,
            source,
        )
        return build_image_only_processor(source, **kwargs)
    return processor


def register_image_only_processor() -> type:
    """Let `AutoProcessor` build the image-only processor in this process; returns the registered class.

    For `transformers serve` started in-process without torchvision, where a failing `AutoProcessor`
    makes the server quietly answer text-only. It covers directories whose processor config names
    `ImageOnlyQwen3VLProcessor` (saved by it; otherwise `AutoProcessor` returns a bare tokenizer) and
    Qwen3-VL directories that name no processor class. Hub-style directories name "Qwen3VLProcessor", which
    `AutoProcessor` resolves before any registration: for those, route loading through `load_processor`.
    """
    from transformers import AutoProcessor, Qwen3VLConfig

    cls = _processor_class()
    AutoProcessor.register(Qwen3VLConfig, cls, exist_ok=True)
    return cls


def set_image_token_budget(processor: Any, max_image_tokens: int, min_image_tokens: int = 64) -> None:
    """Cap the vision tokens per image by resizing: pixels = tokens * (patch_size * merge_size) ** 2.

    Hub defaults allow ~16k tokens per image, far too many for a laptop; call-time `max_pixels` is
    deprecated, so the budget lives on the image processor's `size`.
    """
    if max_image_tokens < 1:
        raise BackendError(f"max_image_tokens must be at least 1, got {max_image_tokens}.")
    image_processor = processor.image_processor
    side = int(getattr(image_processor, "patch_size", 16)) * int(getattr(image_processor, "merge_size", 2))
    longest = max_image_tokens * side * side
    shortest = min(min_image_tokens, max_image_tokens) * side * side
    image_processor.size = {"shortest_edge": shortest, "longest_edge": longest}
