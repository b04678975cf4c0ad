"""A scripted OpenAI-compatible HTTP server on 127.0.0.1 for the protocol's error paths and benchmarks.

Real servers cannot be told to answer 429 twice and then succeed, or to reject `response_format`; this
one can, and it records every request so tests can check what actually went over the wire. The happy
path is also tested against a real server (`transformers serve`, see `napari_fracto.testing.serve`).

    with FakeOpenAIServer(answer='{"labels": []}', fail_status=429, fail_times=2) as server:
        backend = OpenAIBackend("fake-model", base_url=server.base_url)
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_MODEL = "fake-model"
# Tokens the fake charges per image, so tests can see images counted in `usage.prompt_tokens`.
IMAGE_TOKENS = 64


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")

    def image_urls(self) -> list[str]:
        """Every `image_url` URL in the chat messages, in order."""
        urls = []
        for message in (self.body or {}).get("messages", []):
            content = message.get("content")
            if isinstance(content, list):
                urls += [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
        return urls

    def images(self) -> list[bytes]:
        """The images' bytes, decoded from base64 data URLs (raises ValueError for any other URL)."""
        decoded = []
        for url in self.image_urls():
            if not url.startswith("data:image/") or ";base64," not in url:
                raise ValueError(f"not a base64 data URL: {url[:40]}")
            decoded.append(base64.b64decode(url.split(",", 1)[1], validate=True))
        return decoded


@dataclass
class Script:
    """How the server behaves. The first `fail_times` chat requests answer `fail_status`."""

    answer: str | Callable[[dict[str, Any]], str] = '{"labels": []}'
    models: tuple[str, ...] = (DEFAULT_MODEL,)
    fail_status: int | None = None
    fail_times: int = 0
    fail_message: str = "scripted failure"
    retry_after: str | None = None
    delay: float = 0.0
    reject_response_format: int | None = None  # e.g. 400 or 422: reject requests carrying response_format
    reject_max_tokens: bool = False  # answer 400 like OpenAI's reasoning models do for `max_tokens`
    require_key: str | None = None  # answer 401 unless the bearer token equals it
    echo_key_in_errors: bool = False  # a careless server that repeats the key it got in its 401 text
    unknown_model_status: int = 404
    trickle_s: float = 0.0  # seconds between the bytes of a 200 body: a server that never quite finishes
    raw_body: bytes | None = None  # sent as the 200 body instead of a completion (e.g. malformed JSON)
    pad_answer_to: int = 0  # pad the answer text with spaces to this many characters (an oversize body)
    reasoning_models: tuple[str, ...] = ()  # reject any temperature but 1, as OpenAI's gpt-5/o-series do
    finish_length: bool = False  # answer with finish_reason "length" (the text is the answer, maybe "")
    reject_schema_like_gemini: bool = False  # 400 naming response_schema, as Gemini's OpenAI endpoint does


@dataclass
class _State:
    script: Script
    requests: list[RecordedRequest] = field(default_factory=list)
    chat_calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    closing: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as real servers (uvicorn) set it: headers and body go out as separate writes, and with
    # Nagle's algorithm each answer stalled ~40 ms on the client's delayed ACK, a latency no real server
    # has, which flattered every concurrency-1 figure measured against this server.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_slowly(self, data: bytes, pause: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        for i in range(len(data)):
            if self.server.state.closing.wait(pause):
                return
            try:
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
            except OSError:  # the client gave up
                return

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": "fake_error", "code": status}}, headers)

    def _record(self) -> RecordedRequest:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        record = RecordedRequest(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
        )
        with self.server.state.lock:
            self.server.state.requests.append(record)
        return record

    def _authorised(self, record: RecordedRequest) -> bool:
        script = self.server.state.script
        if script.require_key is None or record.authorization == f"Bearer {script.require_key}":
            return True
        got = record.authorization.removeprefix("Bearer ")
        shown = got if script.echo_key_in_errors else got[:3] + "***"
        self._error(401, f"Incorrect API key provided: {shown}")
        return False

    def do_GET(self) -> None:
        record = self._record()
        if not self._authorised(record):
            return
        if self.path.rstrip("/").endswith("/v1/models"):
            data = [{"id": m, "object": "model", "owned_by": "fake"} for m in self.server.state.script.models]
            self._send(200, {"object": "list", "data": data})
        elif self.path.rstrip("/").endswith("/health"):
            self._send(200, {"status": "ok"})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        record = self._record()
        if not self.path.rstrip("/").endswith("/v1/chat/completions"):
            self._error(404, f"no route {self.path}")
            return
        state = self.server.state
        with state.lock:
            state.chat_calls += 1
            call = state.chat_calls
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            self._chat(record, call)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _chat(self, record: RecordedRequest, call: int) -> None:
        script = self.server.state.script
        if script.delay:
            self.server.state.closing.wait(script.delay)
        if not self._authorised(record):
            return
        body = record.body or {}
        if script.fail_status is not None and call <= script.fail_times:
            headers = {"Retry-After": script.retry_after} if script.retry_after is not None else None
            self._error(script.fail_status, script.fail_message, headers)
            return
        if body.get("model") not in script.models:
            self._error(script.unknown_model_status, f"The model `{body.get('model')}` does not exist")
            return
        if script.reject_response_format and "response_format" in body:
            self._error(script.reject_response_format, "response_format is not supported by this server")
            return
        if script.reject_max_tokens and "max_tokens" in body:
            self._error(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
            )
            return
        if body.get("model") in script.reasoning_models and body.get("temperature", 1) != 1:
            self._error(
                400,
                f"Unsupported value: 'temperature' does not support {body.get('temperature')} with this "
                "model. Only the default (1) value is supported.",
            )
            return
        if script.reject_schema_like_gemini and "response_format" in body:
            self._error(
                400,
                'Invalid JSON payload received. Unknown name "additionalProperties" at '
                "'generation_config.response_schema.properties[0].value': Cannot find field.",
            )
            return
        if script.raw_body is not None:
            self._send_raw(script.raw_body)
            return
        text = script.answer(body) if callable(script.answer) else script.answer
        text = text.ljust(script.pad_answer_to)
        completion = _completion(body, text, len(record.image_urls()))
        if script.finish_length:
            completion["choices"][0]["finish_reason"] = "length"
        if script.trickle_s:
            self._send_slowly(json.dumps(completion).encode(), script.trickle_s)
            return
        self._send(200, completion)

    def _send_raw(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _completion(body: dict[str, Any], text: str, n_images: int) -> dict[str, Any]:
    words = sum(
        len(p.get("text", "").split()) if isinstance(p, dict) else len(str(p).split())
        for m in body.get("messages", [])
        for p in (m.get("content") if isinstance(m.get("content"), list) else [m.get("content") or ""])
    )
    prompt_tokens = words + IMAGE_TOKENS * n_images
    completion_tokens = len(text.split())
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class FakeOpenAIServer:
    """Context manager running the scripted server on 127.0.0.1 at a free port, in a thread."""

    def __init__(self, script: Script | None = None, **script_fields: Any) -> None:
        self.script = script or Script(**script_fields)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._state = _State(self.script)

    def __enter__(self) -> FakeOpenAIServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.state = self._state
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving; delayed handlers are woken so nothing lingers."""
        if self._httpd is None:
            return
        self._state.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the fake server is not running: use it as a context manager")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    @property
    def max_in_flight(self) -> int:
        """The most chat requests the server was handling at the same moment."""
        return self._state.max_in_flight
