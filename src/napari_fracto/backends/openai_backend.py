"""Any OpenAI-compatible chat endpoint as a backend: OpenAI, Gemini, vLLM, `transformers serve`.

Retries, error messages and the "server ignores structured output" fallback live here so the widget,
CLI and batch runner all get the same behaviour. The API key is never put in a message, log line or repr.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from napari_fracto import remote_hosts
from napari_fracto.backends.base import BackendError, CancelledError, VLMReply, VLMRequest
from napari_fracto.remote_hosts import GEMINI_HOST, OPENAI_DEFAULT_URL, endpoint_url

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

__all__ = ["GEMINI_HOST", "OPENAI_DEFAULT_URL", "OpenAIBackend", "is_remote", "remote_warning"]
# Local servers (vLLM, transformers serve) accept any key, but the client refuses to send none.
DUMMY_KEY = "not-needed"
# A server asking us to wait longer than this is out of quota, not briefly busy: give up and say so.
MAX_RETRY_AFTER_S = 60.0
# How servers phrase "no such model" in a 400 rather than a 404 (`transformers serve` says "Server is
# pinned to 'X'; requested 'Y'").
_MODEL_MISSING_HINTS = ("not found", "does not exist", "not served", "unknown", "invalid model", "not loaded")

# A chat answer is a few kB; a body larger than this is a broken or hostile server, not an answer.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
# zlib level of the PNGs sent: 1 is lossless like any level, several times faster than the default 6,
# and on microscope images (noise-rich) barely larger.
PNG_COMPRESS_LEVEL = 1
# Characters of answer text kept (the parser reads 100,000; the rest would only bloat JSONL records).
MAX_ANSWER_CHARS = 200_000
# Models that think before answering: they refuse temperature 0 (OpenAI) and accept a reasoning effort.
_REASONING_MODEL = re.compile(r"^(?:o\d|gpt-5|gemini-(?:2\.5|[3-9]))", re.IGNORECASE)
# Optional parameters a server may reject, and words its 400 message uses for each.
_DROPPABLE = {
    "response_format": ("response_format", "json_schema", "response_schema"),  # Gemini names response_schema
    "temperature": ("temperature",),
    "reasoning_effort": ("reasoning_effort", "reasoning effort"),
}

# Endpoints ((base_url, model) pairs) that rejected a request parameter; shared by every backend
# instance so a widget that re-creates its backend does not pay the failed request again.
_REJECTED: dict[tuple[str, str], set[str]] = {}
_REJECTED_LOCK = threading.Lock()


def is_remote(base_url: str | None) -> bool:
    """True unless the endpoint is loopback or a host confirmed in this session (see remote_hosts)."""
    return not remote_hosts.is_local_host(base_url, remote_hosts.CONSENT.confirmed())


def remote_warning(base_url: str | None) -> str | None:
    """The consent question for `base_url` naming its real host; None when local or already confirmed."""
    return remote_hosts.CONSENT.warning(base_url)


def image_data_url(image: Image) -> str:
    """A PIL image as a base64 PNG data URL (lossless, accepted by every OpenAI-compatible server).

    Fast rather than small: zlib level 1 encodes in a fraction of the default's time (the default's
    ~30 ms per image was most of the client's work in a batch), and a grey image sent as RGB is sent
    as one grey channel (the same pixels, a third of the bytes to compress, encode and send).
    """
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image = _grey_if_equal_channels(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _grey_if_equal_channels(image: Image) -> Image:
    """The image as one grey channel when its three channels are equal (lossless), else as it is."""
    if image.mode != "RGB":
        return image
    import numpy as np
    from PIL import Image as PILImage

    pixels = np.asarray(image)
    if np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2]):
        return PILImage.fromarray(np.ascontiguousarray(pixels[..., 0]), mode="L")
    return image


def to_openai_messages(request: VLMRequest) -> list[dict[str, Any]]:
    """The neutral turns as chat messages: text parts and images as `image_url` data URLs."""
    messages: list[dict[str, Any]] = []
    for turn in request.turns:
        if all(isinstance(p, str) for p in turn.parts) and turn.role != "user":
            # Some servers accept only a plain string for system and assistant turns.
            messages.append({"role": turn.role, "content": "\n".join(turn.parts)})  # type: ignore[arg-type]
            continue
        content = [
            {"type": "text", "text": p}
            if isinstance(p, str)
            else {"type": "image_url", "image_url": {"url": image_data_url(p)}}
            for p in turn.parts
        ]
        messages.append({"role": turn.role, "content": content})
    return messages


_GEMINI_UNSUPPORTED = ("additionalProperties", "$schema", "$id", "$defs", "title", "default")


def gemini_schema(schema: Any) -> Any:
    """The schema in the subset Gemini's OpenAI endpoint accepts (it rejects additionalProperties & co.)."""
    if isinstance(schema, dict):
        return {k: gemini_schema(v) for k, v in schema.items() if k not in _GEMINI_UNSUPPORTED}
    if isinstance(schema, list):
        return [gemini_schema(v) for v in schema]
    return schema


def _response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """Wrap a bare JSON schema as OpenAI's `json_schema` response format (already wrapped ones pass)."""
    if "schema" in schema and "name" in schema:
        return {"type": "json_schema", "json_schema": schema}
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def _retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `retry-after` seconds or HTTP date)."""
    if headers is None:
        return None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class OpenAIBackend:
    """A model behind an OpenAI-compatible `/v1/chat/completions` endpoint.

    `adapter` is the name under which the server serves a LoRA adapter (vLLM `--lora-modules
    NAME=PATH`); requests then ask for that name. Safe to call `generate` from several threads.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "",
        timeout: float = 120.0,
        max_retries: int = 3,
        adapter: str | None = None,
        use_json_schema: bool = True,
        retry_backoff: float = 1.0,
    ) -> None:
        if not model or not str(model).strip():
            raise BackendError("no model name given: set the model the server serves (e.g. gpt-4o-mini)")
        if timeout <= 0:
            raise BackendError(f"timeout must be positive, got {timeout}")
        if max_retries < 0:
            raise BackendError(f"max_retries must be 0 or more, got {max_retries}")
        self.model = str(model).strip()
        self.adapter = adapter
        self.base_url = endpoint_url(base_url)
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(
                f"base URL {self.base_url!r} is not an http(s) URL: use e.g. http://127.0.0.1:8000/v1"
            )
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.use_json_schema = use_json_schema
        self.retry_backoff = float(retry_backoff)
        # The key belongs to this endpoint only (remote_hosts): never another provider's variable.
        self._key_env = (
            remote_hosts.key_variable(self.base_url, api_key_env) or "the variable named by --api-key-env"
        )
        try:
            key = remote_hosts.require_key(self.base_url, api_key_env, api_key) or DUMMY_KEY
        except remote_hosts.RemoteHostError as exc:
            raise BackendError(str(exc)) from None
        self._secret = key
        import openai

        # Retries are ours (cancel-aware, Retry-After capped), so the client must not retry as well.
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout, max_retries=0)

    @property
    def served_model(self) -> str:
        """The model name sent in requests: the adapter's served name when one is set."""
        return self.adapter or self.model

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.served_model!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        self._client.close()

    # -- secrets ---------------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        """Remove the key from text that came from a server (some echo it in error messages)."""
        if self._secret and self._secret != DUMMY_KEY:
            text = text.replace(self._secret, "***")
        return text

    def _server_message(self, exc: Any) -> str:
        body = getattr(exc, "body", None)
        message: Any = None
        if isinstance(body, dict):
            error = body.get("error")
            message = (error.get("message") if isinstance(error, dict) else error) or body.get("detail")
            message = message or body.get("message")
        if not message:
            message = getattr(exc, "message", None) or str(exc)
        text = " ".join(str(message).split())
        return self._redact(text[:400])

    # -- rejected parameters (per endpoint) --------------------------------------------------------------

    def _rejected(self) -> set[str]:
        with _REJECTED_LOCK:
            return set(_REJECTED.get((self.base_url, self.served_model), ()))

    def _reject(self, parameter: str) -> None:
        with _REJECTED_LOCK:
            _REJECTED.setdefault((self.base_url, self.served_model), set()).add(parameter)
        log.info("%s rejected %s; sending requests without it from now on", self.base_url, parameter)

    def _params(self, request: VLMRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
        rejected = self._rejected()
        params: dict[str, Any] = {"model": self.served_model, "messages": messages}
        if "temperature" not in rejected:
            params["temperature"] = request.temperature
        if _REASONING_MODEL.match(self.served_model) and "reasoning_effort" not in rejected:
            params["reasoning_effort"] = "low"  # the token limit includes thinking: keep it short
        tokens_key = "max_completion_tokens" if "max_tokens" in rejected else "max_tokens"
        params[tokens_key] = request.max_new_tokens
        if self.use_json_schema and request.json_schema and "response_format" not in rejected:
            schema = request.json_schema
            if urlsplit(self.base_url).hostname == GEMINI_HOST:
                schema = gemini_schema(schema)
            params["response_format"] = _response_format(schema)
        return params

    # -- the request -------------------------------------------------------------------------------------

    def generate(self, request: VLMRequest) -> VLMReply:
        """Send one chat request; retry 429/5xx/timeouts with backoff; raise BackendError with advice."""
        if not request.turns:
            raise BackendError("empty request: the prompt has no turns")
        start = time.perf_counter()
        messages = to_openai_messages(request)
        attempt = 0
        while True:
            self._check_cancel(request)
            try:
                completion = self._attempt(request, messages)
                break
            except _Retry as retry:
                if attempt >= self.max_retries:
                    raise BackendError(f"{retry} (gave up after {attempt + 1} attempts)") from None
                wait = retry.wait if retry.wait is not None else self.retry_backoff * 2**attempt
                log.warning("%s; retrying in %.1f s (%d of %d)", retry, wait, attempt + 1, self.max_retries)
                attempt += 1
                if request.cancel is not None and request.cancel.wait(wait):
                    raise CancelledError("cancelled while waiting to retry") from None
                if request.cancel is None:
                    time.sleep(wait)
        reply = self._reply(completion, time.perf_counter() - start, attempt, request)
        reply.extra["json_schema_sent"] = bool(
            self.use_json_schema and request.json_schema and "response_format" not in self._rejected()
        )
        return reply

    @staticmethod
    def _check_cancel(request: VLMRequest) -> None:
        if request.cancel is not None and request.cancel.is_set():
            raise CancelledError("cancelled")

    def _attempt(self, request: VLMRequest, messages: list[dict[str, Any]]) -> Any:
        """One request, re-sent at once without a parameter the server rejected. Raises _Retry or
        BackendError; the error is raised outside the `except` so no openai exception (whose text may
        hold server-echoed secrets) is chained to it."""
        import openai

        for _ in range(len(_DROPPABLE) + 2):  # as is, then without each rejected optional parameter
            params = self._params(request, messages)
            problem: BackendError | _Retry | None = None
            try:
                return self._create(params)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                text = self._server_message(exc)
                lowered = text.lower()
                dropped = next(
                    (
                        name
                        for name, words in _DROPPABLE.items()
                        if name in params and any(w in lowered for w in words)
                    ),
                    None,
                )
                if dropped is not None:
                    self._reject(dropped)
                    continue
                if "max_tokens" in params and "max_completion_tokens" in lowered:
                    self._reject("max_tokens")
                    continue
                problem = self._bad_request(exc.status_code, text)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                problem = BackendError(
                    f"the API key was rejected by {self.base_url} (HTTP {exc.status_code}): check "
                    f"{self._key_env} or the key in the backend settings ({self._server_message(exc)})"
                )
            except openai.NotFoundError as exc:
                problem = BackendError(self._not_found_message(self._server_message(exc)))
            except openai.RateLimitError as exc:
                problem = self._rate_limited(exc)
            except openai.APITimeoutError:
                problem = _Retry(f"no answer from {self.base_url} within {self.timeout:g} s")
            except openai.APIConnectionError as exc:
                problem = self._connection_problem(exc)
            except openai.APIStatusError as exc:
                text = f"{self.base_url} answered HTTP {exc.status_code}: {self._server_message(exc)}"
                problem = (
                    _Retry(text, _retry_after(exc.response.headers))
                    if exc.status_code >= 500
                    else (BackendError(text))
                )
            raise problem
        raise BackendError(f"{self.base_url} rejected the request's parameters repeatedly")

    def _create(self, params: dict[str, Any]) -> Any:
        """One HTTP request under a deadline for the whole of it (a server trickling its body cannot hold
        it past `timeout`) and a cap on the body's size; the body is decoded here so a 200 that is not
        JSON gets a message saying so. Status errors are raised by the client as usual."""
        from openai.types.chat import ChatCompletion

        deadline = time.monotonic() + self.timeout
        chunks: list[bytes] = []
        size = 0
        with self._client.chat.completions.with_streaming_response.create(**params) as response:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise BackendError(
                        f"{self.base_url} sent an answer larger than {MAX_RESPONSE_BYTES // 2**20} MB; a "
                        "chat answer is a few kB: check the base URL and lower max_new_tokens"
                    )
                if time.monotonic() > deadline:
                    raise _Retry(
                        f"no complete answer from {self.base_url} within {self.timeout:g} s (it was still "
                        f"sending, {size} bytes so far); raise the timeout if the server is just slow"
                    )
                chunks.append(chunk)
        body = b"".join(chunks)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise BackendError(
                f"{self.base_url} answered HTTP 200 with a body that is not JSON ({exc}; it starts "
                f"{self._redact(body[:60].decode('utf-8', 'replace'))!r}): is the base URL the server's "
                "OpenAI-compatible /v1 endpoint?"
            ) from None
        if not isinstance(data, dict):
            raise BackendError(
                f"{self.base_url} answered with a JSON {type(data).__name__}, not a chat completion"
            )
        return ChatCompletion.construct(**data)

    def _bad_request(self, status: int, text: str) -> BackendError:
        lowered = text.lower()
        if "pinned to" in lowered or (
            "model" in lowered and any(hint in lowered for hint in _MODEL_MISSING_HINTS)
        ):
            return BackendError(self._not_found_message(text))
        return BackendError(f"{self.base_url} rejected the request (HTTP {status}): {text}")

    def _rate_limited(self, exc: Any) -> BackendError | _Retry:
        wait = _retry_after(exc.response.headers)
        text = f"{self.base_url} is rate limiting (HTTP 429): {self._server_message(exc)}"
        if wait is not None and wait > MAX_RETRY_AFTER_S:
            return BackendError(
                f"{text}; it asks to wait {wait:.0f} s: try again later, lower the batch concurrency, "
                "or check the account's quota"
            )
        return _Retry(text, wait)

    def _connection_problem(self, exc: Any) -> BackendError | _Retry:
        cause = exc.__cause__
        if cause is not None and type(cause).__name__ == "ConnectError":
            return BackendError(
                f"no server at {self.base_url}: start it (for a local model: `transformers serve MODEL_DIR "
                "--port 8000` or `vllm serve MODEL --port 8000`) or correct the base URL"
            )
        return _Retry(f"connection to {self.base_url} failed ({type(cause or exc).__name__})")

    def _not_found_message(self, text: str) -> str:
        served = self._served_models()
        message = f"model {self.served_model!r} is not served at {self.base_url} ({text})"
        if served:
            return f"{message}; it serves: {', '.join(served[:20])}. Set the model name to one of them"
        return f"{message}; check the model name and the base URL"

    def _served_models(self) -> list[str]:
        """The ids `/v1/models` lists, or [] when the server does not answer it."""
        try:
            return [m.id for m in self._client.with_options(timeout=10.0).models.list()]
        except Exception as exc:  # any failure only means we cannot suggest names
            log.debug("could not list models at %s: %s", self.base_url, type(exc).__name__)
            return []

    def _reply(self, completion: Any, seconds: float, retries: int, request: VLMRequest) -> VLMReply:
        choices = getattr(completion, "choices", None) or []
        if not choices:
            raise BackendError(f"{self.base_url} answered without any choices: is it a chat endpoint?")
        choice = choices[0]
        message = choice.message
        usage = getattr(completion, "usage", None)
        extra: dict[str, Any] = {
            "served_model": getattr(completion, "model", None),
            "finish_reason": choice.finish_reason,
            "retries": retries,
        }
        if getattr(message, "refusal", None):
            extra["refusal"] = self._redact(str(message.refusal))
        text = message.content if isinstance(message.content, str) else ""
        if choice.finish_reason == "length":
            cut = (
                f"the answer was cut off by the token limit (max_new_tokens={request.max_new_tokens}); raise "
                "it (reasoning models spend part of it thinking)"
            )
            if not text.strip():
                raise BackendError(f"{self.base_url}: {cut.replace('the answer was', 'no answer:')}")
            extra["cut_off"] = cut
        if len(text) > MAX_ANSWER_CHARS:
            extra["truncated_from_chars"] = len(text)
            text = text[:MAX_ANSWER_CHARS]
        return VLMReply(
            text=text,
            seconds=seconds,
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            extra=extra,
        )
