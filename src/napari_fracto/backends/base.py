"""The one small interface every VLM backend implements, and the neutral chat request it takes.

A request is a list of turns whose parts are text or PIL images, so prompts (and in-context examples,
which are image + answer turns) are built once and sent to any backend.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from napari_fracto.errors import UserError

if TYPE_CHECKING:
    from PIL.Image import Image


class BackendError(UserError, RuntimeError):
    """A backend failed in a way the user can act on; the message says what to do."""


class CancelledError(BackendError):
    """The user cancelled the request."""


@dataclass
class Turn:
    role: Literal["system", "user", "assistant"]
    parts: list[str | Image]


@dataclass
class VLMRequest:
    turns: list[Turn]
    max_new_tokens: int = 512
    json_schema: dict[str, Any] | None = None
    temperature: float = 0.0
    cancel: threading.Event | None = None

    def images(self) -> list[Image]:
        return [p for t in self.turns for p in t.parts if not isinstance(p, str)]


@dataclass
class VLMReply:
    text: str
    seconds: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """`name` is the backend kind ("transformers", "openai"), `model` the model id, `adapter` a LoRA path."""

    name: str
    model: str
    adapter: str | None

    def generate(self, request: VLMRequest) -> VLMReply: ...

    def close(self) -> None: ...
