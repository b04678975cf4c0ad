"""The OpenAI-compatible backend over real HTTP against the scripted fake server: what goes over the
wire, retries, fallbacks, cancellation, error messages, and that the API key never leaks."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from napari_fracto.backends.base import Backend, BackendError, CancelledError, Turn, VLMRequest
from napari_fracto.backends.openai_backend import OpenAIBackend, is_remote, remote_warning
from napari_fracto.testing.fake_openai_server import IMAGE_TOKENS, FakeOpenAIServer

SECRET = "sk-test-SECRET123"
SCHEMA = {"type": "object", "properties": {"labels": {"type": "array"}}, "required": ["labels"]}
ANSWER = '{"labels": [{"label": "dimples", "confidence": 0.9}]}'


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch):
    """The developer's own keys and base URL must not change what these tests send."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def make_request(image: Image.Image | None = None, **kwargs) -> VLMRequest:
    image = image if image is not None else Image.new("RGB", (40, 24), (200, 30, 10))
    turns = [
        Turn("system", ["You label fractographs."]),
        Turn("user", ["Which features?", image]),
    ]
    return VLMRequest(turns, max_new_tokens=kwargs.pop("max_new_tokens", 77), json_schema=SCHEMA, **kwargs)


def backend_for(server: FakeOpenAIServer, **kwargs) -> OpenAIBackend:
    kwargs.setdefault("retry_backoff", 0.01)
    return OpenAIBackend(kwargs.pop("model", "fake-model"), base_url=server.base_url, **kwargs)


def test_request_carries_image_schema_and_token_limit_and_reply_has_usage():
    with FakeOpenAIServer(answer=ANSWER) as server:
        backend = backend_for(server)
        assert isinstance(backend, Backend)
        reply = backend.generate(make_request())
    (sent,) = server.chat_requests()
    body = sent.body
    assert body["model"] == "fake-model"
    assert body["max_tokens"] == 77
    assert body["temperature"] == 0.0
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][0]["content"] == "You label fractographs."
    assert sent.image_urls()[0].startswith("data:image/png;base64,")
    (png,) = sent.images()
    received = Image.open(io.BytesIO(png))
    assert received.format == "PNG"
    assert received.size == (40, 24)
    assert received.convert("RGB").getpixel((5, 5)) == (200, 30, 10)
    assert reply.text == ANSWER
    assert reply.prompt_tokens == 5 + IMAGE_TOKENS  # the fake counts 5 words of text + one image
    assert reply.completion_tokens == len(ANSWER.split())
    assert reply.extra["served_model"] == "fake-model"
    assert reply.extra["json_schema_sent"] is True
    assert reply.seconds > 0


@pytest.mark.parametrize("mode", ["I;16", "RGBA", "F", "P"])
def test_any_pil_mode_arrives_as_a_decodable_png(mode):
    image = Image.new(mode, (16, 12))
    with FakeOpenAIServer() as server:
        backend_for(server).generate(make_request(image))
    (png,) = server.chat_requests()[0].images()
    assert Image.open(io.BytesIO(png)).size == (16, 12)


def test_local_server_gets_a_dummy_key_and_an_explicit_key_is_sent():
    with FakeOpenAIServer() as server:
        backend_for(server).generate(make_request())
        backend_for(server, api_key="sk-local").generate(make_request())
    first, second = server.chat_requests()
    assert first.authorization == "Bearer not-needed"
    assert second.authorization == "Bearer sk-local"


def test_base_url_comes_from_the_environment_and_openai_key_only_when_named(monkeypatch):
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
        OpenAIBackend("fake-model").generate(make_request())
        OpenAIBackend("fake-model", api_key_env="OPENAI_API_KEY").generate(make_request())
    unnamed, named = server.chat_requests()
    assert unnamed.authorization == "Bearer not-needed"  # OPENAI_API_KEY belongs to api.openai.com
    assert named.authorization == "Bearer sk-env"


def test_remote_endpoint_without_key_says_which_variable_to_set(monkeypatch):
    with pytest.raises(BackendError, match="OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o-mini")
    gemini = "https://generativelanguage.googleapis.com/v1beta/openai/"
    with pytest.raises(BackendError, match="GEMINI_API_KEY"):
        OpenAIBackend("gemini-2.5-flash", base_url=gemini)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("GEMINI_API_KEY", "gm-key")
    backend = OpenAIBackend("gemini-2.5-flash", base_url=gemini)
    assert backend._client.api_key == "gm-key"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": ""}, "no model name"),
        ({"model": "m", "base_url": "localhost:8000"}, "not an http"),
        ({"model": "m", "base_url": "http://127.0.0.1:1/v1", "timeout": 0}, "timeout"),
    ],
)
def test_bad_settings_give_an_actionable_error(kwargs, message):
    with pytest.raises(BackendError, match=message):
        OpenAIBackend(**kwargs)


@pytest.mark.parametrize("status", [400, 422])
def test_server_rejecting_response_format_is_retried_without_it_and_remembered(status):
    with FakeOpenAIServer(answer=ANSWER, reject_response_format=status) as server:
        backend = backend_for(server)
        first = backend.generate(make_request())
        second = backend.generate(make_request())
        other_instance = backend_for(server).generate(make_request())
    bodies = [r.body for r in server.chat_requests()]
    assert ["response_format" in b for b in bodies] == [True, False, False, False]
    assert first.text == second.text == other_instance.text == ANSWER
    assert first.extra["json_schema_sent"] is False


def test_use_json_schema_false_never_sends_response_format():
    with FakeOpenAIServer() as server:
        backend_for(server, use_json_schema=False).generate(make_request())
    assert "response_format" not in server.chat_requests()[0].body


def test_max_tokens_rejected_falls_back_to_max_completion_tokens():
    with FakeOpenAIServer(answer=ANSWER, reject_max_tokens=True) as server:
        reply = backend_for(server).generate(make_request(max_new_tokens=33))
    last = server.chat_requests()[-1].body
    assert reply.text == ANSWER
    assert "max_tokens" not in last
    assert last["max_completion_tokens"] == 33


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_errors_are_retried_until_success(status):
    with FakeOpenAIServer(answer=ANSWER, fail_status=status, fail_times=2) as server:
        reply = backend_for(server).generate(make_request())
    assert len(server.chat_requests()) == 3
    assert reply.text == ANSWER
    assert reply.extra["retries"] == 2


def test_retry_after_is_respected():
    with FakeOpenAIServer(fail_status=429, fail_times=1, retry_after="1") as server:
        start = time.perf_counter()
        backend_for(server, retry_backoff=0.0).generate(make_request())
        elapsed = time.perf_counter() - start
    assert elapsed >= 0.95


def test_retry_after_beyond_a_minute_gives_up_at_once_with_advice():
    with (
        FakeOpenAIServer(fail_status=429, fail_times=5, retry_after="3600") as server,
        pytest.raises(BackendError, match=r"3600 s.*(concurrency|quota)"),
    ):
        backend_for(server).generate(make_request())
    assert len(server.chat_requests()) == 1


def test_persistent_server_error_gives_up_after_max_retries():
    with (
        FakeOpenAIServer(fail_status=500, fail_times=99, fail_message="GPU on fire") as server,
        pytest.raises(BackendError, match=r"HTTP 500: GPU on fire.*3 attempts"),
    ):
        backend_for(server, max_retries=2).generate(make_request())
    assert len(server.chat_requests()) == 3


def test_client_errors_are_not_retried():
    with (
        FakeOpenAIServer(fail_status=400, fail_times=99, fail_message="image too large") as server,
        pytest.raises(BackendError, match=r"rejected the request.*image too large"),
    ):
        backend_for(server).generate(make_request())
    assert len(server.chat_requests()) == 1


@pytest.mark.parametrize("status", [404, 400])
def test_unknown_model_lists_the_served_models(status):
    with (
        FakeOpenAIServer(models=("qwen3-vl-4b", "my-lora"), unknown_model_status=status) as server,
        pytest.raises(BackendError, match=r"'qwen3-vl-8b' is not served.*qwen3-vl-4b, my-lora"),
    ):
        backend_for(server, model="qwen3-vl-8b").generate(make_request())


def test_adapter_name_is_requested_as_the_model():
    with FakeOpenAIServer(models=("base", "fracture-lora")) as server:
        backend = backend_for(server, model="base", adapter="fracture-lora")
        reply = backend.generate(make_request())
    assert server.chat_requests()[0].body["model"] == "fracture-lora"
    assert reply.extra["served_model"] == "fracture-lora"


def test_no_server_says_how_to_start_one_without_retrying():
    with FakeOpenAIServer() as server:
        url = server.base_url
    backend = OpenAIBackend("m", base_url=url, retry_backoff=1.0)
    start = time.perf_counter()
    with pytest.raises(BackendError, match=r"no server at http://127\.0\.0\.1.*transformers serve"):
        backend.generate(make_request())
    assert time.perf_counter() - start < 3.0  # retrying would back off 1 + 2 + 4 s


def test_timeout_is_retried_then_reported():
    with FakeOpenAIServer(delay=3.0) as server:
        backend = backend_for(server, timeout=0.3, max_retries=1)
        with pytest.raises(BackendError, match=r"no answer .* within 0\.3 s.*2 attempts"):
            backend.generate(make_request())
        assert len(server.chat_requests()) == 2


def test_cancel_during_backoff_stops_at_once():
    cancel = threading.Event()
    with FakeOpenAIServer(fail_status=503, fail_times=99) as server:
        backend = backend_for(server, retry_backoff=30.0)
        threading.Timer(0.3, cancel.set).start()
        start = time.perf_counter()
        with pytest.raises(CancelledError):
            backend.generate(make_request(cancel=cancel))
        assert time.perf_counter() - start < 5
        assert len(server.chat_requests()) == 1


def test_cancelled_request_is_never_sent():
    cancel = threading.Event()
    cancel.set()
    with FakeOpenAIServer() as server, pytest.raises(CancelledError):
        backend_for(server).generate(make_request(cancel=cancel))
    assert server.chat_requests() == []


def test_empty_request_is_refused():
    with FakeOpenAIServer() as server, pytest.raises(BackendError, match="no turns"):
        backend_for(server).generate(VLMRequest(turns=[]))


def test_requests_from_a_thread_pool_are_in_flight_together():
    n, delay = 8, 0.4

    def answer(body):
        return json.dumps({"labels": [], "echo": body["messages"][1]["content"][0]["text"]})

    with FakeOpenAIServer(answer=answer, delay=delay) as server:
        backend = backend_for(server)
        requests = [
            VLMRequest([Turn("system", ["s"]), Turn("user", [f"image {i}", Image.new("L", (8, 8))])])
            for i in range(n)
        ]
        with ThreadPoolExecutor(max_workers=n) as pool:
            replies = list(pool.map(backend.generate, requests))
    assert [json.loads(r.text)["echo"] for r in replies] == [f"image {i}" for i in range(n)]
    assert server.max_in_flight >= n // 2  # the speed-up this buys is measured in benchmarks/


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key_message_is_actionable_and_never_shows_the_key(status, caplog):
    caplog.set_level(logging.DEBUG)
    script = (
        {"require_key": "sk-other", "echo_key_in_errors": True}
        if status == 401
        else {"fail_status": 403, "fail_times": 9, "fail_message": f"key {SECRET} may not use this model"}
    )
    with FakeOpenAIServer(**script) as server:
        backend = backend_for(server, api_key=SECRET)
        with pytest.raises(BackendError) as info:
            backend.generate(make_request())
    assert SECRET in json.dumps([r.authorization for r in server.chat_requests()])  # it was sent ...
    message = str(info.value)
    assert "API key was rejected" in message
    assert "--api-key-env" in message
    shown = [
        message,
        repr(info.value),
        "".join(traceback.format_exception(info.value)),
        repr(backend),
        str(backend),
        caplog.text,
    ]
    assert not [text for text in shown if SECRET in text]  # ... and shown nowhere


def test_key_absent_from_successful_reply_and_logs(caplog):
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(answer=ANSWER, require_key=SECRET, fail_status=500, fail_times=1) as server:
        backend = backend_for(server, api_key=SECRET)
        reply = backend.generate(make_request())
    assert reply.text == ANSWER
    assert SECRET not in repr(reply)
    assert SECRET not in caplog.text
    assert "retrying" in caplog.text  # the retry was logged, without the key


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000/v1",
        "http://127.0.0.1:8000/v1",
        "http://[::1]:8000/v1",
        "http://127.1:8000/v1",
        "http://2130706433/v1",
        "http://[::ffff:127.0.0.1]/v1",
    ],
)
def test_loopback_hosts_in_any_form_are_local(url):
    assert not is_remote(url)
    assert remote_warning(url) is None


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://192.168.1.20:8000/v1", "192.168.1.20"),
        ("http://10.0.0.5/v1", "10.0.0.5"),
        ("http://gpu-node-3:8000/v1", "gpu-node-3"),
        ("http://workstation.local:8000/v1", "workstation.local"),
    ],
)
def test_lan_hosts_need_the_users_yes_once(url, host):
    from napari_fracto.remote_hosts import CONSENT

    assert host in remote_warning(url)
    CONSENT.confirm(url)
    try:
        assert remote_warning(url) is None
    finally:
        CONSENT.forget()


@pytest.mark.parametrize(
    ("url", "host"),
    [
        (None, "api.openai.com"),
        ("https://api.openai.com/v1", "api.openai.com"),
        ("https://generativelanguage.googleapis.com/v1beta/openai/", "generativelanguage.googleapis.com"),
        ("http://8.8.8.8:8000/v1", "8.8.8.8"),
        ("https://vlm.example.org/v1", "vlm.example.org"),
    ],
)
def test_public_hosts_are_remote_and_the_warning_names_them(url, host):
    assert is_remote(url)
    warning = remote_warning(url)
    assert host in warning
    assert "unpublished" in warning


# ---------------------------------------------------------------- hostile servers and reasoning models


def test_a_server_trickling_its_body_is_cut_at_the_whole_request_deadline():
    with FakeOpenAIServer(answer=ANSWER, trickle_s=0.05) as server:  # the body would take ~15 s
        backend = backend_for(server, timeout=1.0, max_retries=0)
        start = time.monotonic()
        with pytest.raises(BackendError, match=r"no complete answer .* within 1 s"):
            backend.generate(make_request())
        assert time.monotonic() - start < 4


def test_an_oversize_body_is_refused_not_stored():
    with (
        FakeOpenAIServer(answer=ANSWER, pad_answer_to=9 * 2**20) as server,
        pytest.raises(BackendError, match="larger than 8 MB"),
    ):
        backend_for(server).generate(make_request())


def test_a_long_answer_is_kept_only_up_to_the_cap():
    from napari_fracto.backends.openai_backend import MAX_ANSWER_CHARS

    with FakeOpenAIServer(answer=ANSWER, pad_answer_to=MAX_ANSWER_CHARS + 5000) as server:
        reply = backend_for(server).generate(make_request())
    assert len(reply.text) == MAX_ANSWER_CHARS
    assert reply.text.startswith(ANSWER)
    assert reply.extra["truncated_from_chars"] == MAX_ANSWER_CHARS + 5000


def test_a_200_that_is_not_json_says_so_and_what_to_check():
    with (
        FakeOpenAIServer(raw_body=b'{"choices": [{"message": oops}]}') as server,
        pytest.raises(BackendError) as info,
    ):
        backend_for(server).generate(make_request())
    message = str(info.value)
    assert "answered HTTP 200 with a body that is not JSON" in message
    assert "/v1 endpoint" in message


def test_reasoning_model_rejecting_temperature_is_retried_without_it_and_remembered():
    with FakeOpenAIServer(answer=ANSWER, models=("gpt-5-mini",), reasoning_models=("gpt-5-mini",)) as server:
        backend = backend_for(server, model="gpt-5-mini")
        assert backend.generate(make_request()).text == ANSWER
        assert backend_for(server, model="gpt-5-mini").generate(make_request()).text == ANSWER
    first, retried, later = server.chat_requests()
    assert first.body["temperature"] == 0
    assert "temperature" not in retried.body
    assert "temperature" not in later.body  # remembered: no failed request the second time
    assert first.body["reasoning_effort"] == "low"


def test_empty_answer_cut_by_the_token_limit_says_to_raise_it():
    with (
        FakeOpenAIServer(answer="", finish_length=True) as server,
        pytest.raises(BackendError, match=r"cut off by the token limit \(max_new_tokens=77\); raise it"),
    ):
        backend_for(server).generate(make_request())


def test_cut_answer_with_text_is_returned_and_flagged():
    with FakeOpenAIServer(answer='{"labels": [{"label": "dimples"}, {"lab', finish_length=True) as server:
        reply = backend_for(server).generate(make_request())
    assert reply.text.startswith('{"labels"')
    assert "max_new_tokens=77" in reply.extra["cut_off"]


def test_gemini_style_schema_rejection_falls_back_to_no_schema():
    with FakeOpenAIServer(answer=ANSWER, reject_schema_like_gemini=True) as server:
        reply = backend_for(server).generate(make_request())
    with_schema, without = server.chat_requests()
    assert "response_format" in with_schema.body
    assert "response_format" not in without.body
    assert reply.text == ANSWER
    assert reply.extra["json_schema_sent"] is False


def test_gemini_gets_the_schema_subset_it_accepts():
    from napari_fracto.backends.openai_backend import gemini_schema
    from napari_fracto.prompts import response_schema
    from napari_fracto.vocabulary import load_vocabulary

    schema = response_schema(load_vocabulary("fracture"))
    subset = gemini_schema(schema)
    assert "additionalProperties" in json.dumps(schema)
    assert "additionalProperties" not in json.dumps(subset)
    assert subset["properties"]["labels"]["items"]["properties"]["label"]["enum"]  # the vocabulary stays
