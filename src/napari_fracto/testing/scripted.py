"""A backend that answers from a script: for tests of slow, failing or malformed models, and demos.

It implements the same `Backend` protocol as the real backends and honours cancellation the same way, so
the code under test cannot tell it apart from a model that happens to say exactly this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from napari_fracto.backends.base import BackendError, CancelledError, VLMReply, VLMRequest

Answer = str | BaseException | Callable[[VLMRequest], str]


class ScriptedBackend:
    name = "scripted"

    def __init__(self, answers: Answer | list[Answer], *, delay: float = 0.0, model: str = "script") -> None:
        self._answers = answers if isinstance(answers, list) else [answers]
        self.delay = delay
        self.model = model
        self.adapter: str | None = None
        self.requests: list[VLMRequest] = []
        self._lock = threading.Lock()

    def generate(self, request: VLMRequest) -> VLMReply:
        with self._lock:
            index = len(self.requests)
            self.requests.append(request)
        answer = self._answers[min(index, len(self._answers) - 1)]
        started = time.perf_counter()
        deadline = started + self.delay
        while time.perf_counter() < deadline:
            if request.cancel is not None and request.cancel.wait(0.01):
                raise CancelledError("Analysis cancelled.")
        if request.cancel is not None and request.cancel.is_set():
            raise CancelledError("Analysis cancelled.")
        if isinstance(answer, BaseException):
            raise answer
        text = answer(request) if callable(answer) else answer
        return VLMReply(text=text, seconds=time.perf_counter() - started)

    def close(self) -> None:
        pass


def failing_backend(
    message: str = "The server at http://127.0.0.1:9 refused the connection.",
) -> ScriptedBackend:
    return ScriptedBackend(BackendError(message))
