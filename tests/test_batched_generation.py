"""Batched local generation (issue 11): requests generated together answer exactly what they answer alone.

Run on the random tiny Qwen3-VL through the user's loading path, with images of different sizes and
prompts of different lengths, so left padding, per-image vision grids and per-row ends are all exercised.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from PIL import Image

from napari_fracto.backends.base import BackendError, CancelledError, Turn, VLMRequest
from napari_fracto.backends.transformers_backend import TransformersBackend


def _image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def _mixed_requests() -> list[VLMRequest]:
    """Different image sizes and aspect ratios, prompt lengths, token limits; a text-only one."""
    return [
        VLMRequest([Turn("user", [_image(256, 256, 0), "Which features?"])], max_new_tokens=24),
        VLMRequest(
            [
                Turn("system", ["You are a fractography expert who answers only in JSON, briefly."]),
                Turn("user", [_image(96, 300, 1), "Which fracture features do you see in this image?"]),
            ],
            max_new_tokens=9,
        ),
        VLMRequest([Turn("user", ["No image at all, just a question."])], max_new_tokens=17),
        VLMRequest([Turn("user", [_image(40, 40, 2), "x"])], max_new_tokens=30),
    ]


def _same(a, b) -> None:
    assert (a.text, a.completion_tokens, a.prompt_tokens) == (b.text, b.completion_tokens, b.prompt_tokens)
    assert a.extra["image_tokens"] == b.extra["image_tokens"]
    assert a.extra["finish_reason"] == b.extra["finish_reason"]


@pytest.fixture(scope="module")
def backend(tiny_vlm_dir: Path) -> TransformersBackend:
    b = TransformersBackend(str(tiny_vlm_dir), max_image_tokens=64, device="cpu", constrained=False)
    yield b
    b.close()


@pytest.fixture(scope="module")
def one_at_a_time(backend: TransformersBackend) -> list:
    return [backend.generate(r) for r in _mixed_requests()]


def test_a_batch_answers_token_for_token_what_each_answers_alone(backend, one_at_a_time):
    batched = backend.generate_batch(_mixed_requests())
    assert [r.extra["batch_size"] for r in batched] == [4] * 4
    for alone, together in zip(one_at_a_time, batched, strict=True):
        _same(alone, together)
    # each row stopped at its own limit, not the longest row's
    assert [r.completion_tokens for r in batched] == [24, 9, 17, 30]
    assert len({r.text for r in batched}) == 4  # the rows did not get each other's answers


def test_order_in_the_batch_does_not_change_an_answer(backend, one_at_a_time):
    reversed_replies = backend.generate_batch(_mixed_requests()[::-1])
    for alone, together in zip(one_at_a_time[::-1], reversed_replies, strict=True):
        _same(alone, together)


def test_concurrent_callers_are_batched_and_each_gets_its_own_answer(tiny_vlm_dir: Path, one_at_a_time):
    b = TransformersBackend(
        str(tiny_vlm_dir), max_image_tokens=64, device="cpu", constrained=False, batch_size=4
    )
    b.load()
    requests = _mixed_requests()
    replies: dict[int, object] = {}
    start = threading.Barrier(len(requests))

    def call(i: int) -> None:
        start.wait()
        replies[i] = b.generate(requests[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    b.close()
    assert sorted(replies) == [0, 1, 2, 3]
    for i, alone in enumerate(one_at_a_time):
        _same(alone, replies[i])
    assert max(r.extra["batch_size"] for r in replies.values()) > 1  # they really ran together


def test_a_lone_caller_with_a_batch_size_is_answered_at_once(tiny_vlm_dir: Path, one_at_a_time):
    b = TransformersBackend(
        str(tiny_vlm_dir), max_image_tokens=64, device="cpu", constrained=False, batch_size=8
    )
    replies = [b.generate(r) for r in _mixed_requests()]
    b.close()
    for alone, reply in zip(one_at_a_time, replies, strict=True):
        _same(alone, reply)
        assert reply.extra["batch_size"] == 1


def test_cancelling_one_row_leaves_the_others_answered(backend, one_at_a_time):
    requests = _mixed_requests()
    requests[0].cancel = threading.Event()
    requests[0].cancel.set()
    with pytest.raises(CancelledError):
        backend.generate_batch(requests)  # the batch API raises the first row's error...
    from napari_fracto.backends.local_batch import generate_rows

    with backend.using_model() as (model, processor):  # ...the rows themselves are answered
        outcomes = generate_rows(model, processor, requests, constrained=False, oom_hint="")
    assert isinstance(outcomes[0], CancelledError)
    for alone, outcome in zip(one_at_a_time[1:], outcomes[1:], strict=True):
        _same(alone, outcome)


def test_sampled_and_greedy_rows_can_share_a_batch(backend, one_at_a_time):
    requests = _mixed_requests()
    requests[2].temperature = 0.9
    replies = backend.generate_batch(requests)
    for i in (0, 1, 3):
        _same(one_at_a_time[i], replies[i])
    assert replies[2].completion_tokens == 17


def test_a_bad_batch_size_is_refused(tiny_vlm_dir: Path):
    with pytest.raises(BackendError, match="batch_size"):
        TransformersBackend(str(tiny_vlm_dir), batch_size=0)


SHORT_SCHEMA = {
    "type": "object",
    "properties": {"labels": {"type": "array", "maxItems": 2, "items": {"enum": ["dimples", "striations"]}}},
    "required": ["labels"],
    "additionalProperties": False,
}


def test_constrained_rows_end_on_their_own_while_others_run_on(tiny_vlm_dir: Path):
    pytest.importorskip("xgrammar")

    def requests() -> list[VLMRequest]:
        made = _mixed_requests()  # limits 24, 9, 17, 30
        made[0].json_schema = SHORT_SCHEMA
        made[0].max_new_tokens = 200
        made[3].json_schema = SHORT_SCHEMA
        made[3].max_new_tokens = 200
        made[1].json_schema = SHORT_SCHEMA  # cut at its own limit (9) before the grammar's end
        made[2].max_new_tokens = 120
        return made

    b = TransformersBackend(str(tiny_vlm_dir), max_image_tokens=64, device="cpu")
    alone = [b.generate(r) for r in requests()]
    together = b.generate_batch(requests())
    b.close()
    for a, t in zip(alone, together, strict=True):
        _same(a, t)
    for reply in (together[0], together[3]):  # ended by the grammar, valid JSON of the schema
        assert reply.extra["constrained"] is True
        assert reply.extra["finish_reason"] == "stop"
        assert reply.completion_tokens < 120
        assert set(json.loads(reply.text)["labels"]) <= {"dimples", "striations"}
    assert together[2].extra["constrained"] is False
    assert together[2].completion_tokens == 120  # the unconstrained row ran on past the grammar rows' ends
    assert together[1].completion_tokens == 9  # a constrained row cut at its own limit broke nothing
