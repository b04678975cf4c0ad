"""The OpenAI backend against a real server: `transformers serve` with a tiny random Qwen3-VL on CPU.

The fake server covers error paths; this proves the happy path with a real OpenAI-compatible server,
including the trap that a server unable to build the image processor silently drops images: the prompt
token count must include exactly the image tokens Qwen3-VL's processor makes for that image.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from napari_fracto.backends.base import BackendError, Turn, VLMRequest
from napari_fracto.backends.openai_backend import OpenAIBackend
from napari_fracto.testing.serve import ServeError, TransformersServer

pytestmark = pytest.mark.slow  # a server subprocess (about 10 s to start on a busy 2-core machine)

SEM_IMAGE = "fractography/ceramic-sem/s1_1.jpg"


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """One `transformers serve` process for the whole session, stopped at its end."""
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        pytest.skip("transformers serving extras missing: pip install 'transformers[serving]'")
    from napari_fracto.testing.tiny_vlm import build_tiny_vlm

    model_dir = build_tiny_vlm(tmp_path_factory.mktemp("tiny-qwen3-vl"))
    with TransformersServer(model_dir, startup_timeout=240) as server:
        yield server


@pytest.fixture(scope="session")
def processor(served):
    from napari_fracto.backends.qwen_processor import load_processor

    return load_processor(served.model)


def image_tokens(processor, image: Image.Image) -> int:
    """How many image tokens Qwen3-VL's processor makes of `image` (after its own resizing)."""
    grid = processor.image_processor(images=[image], return_tensors="np")["image_grid_thw"]
    return int(grid.prod()) // processor.image_processor.merge_size**2


def sem_image(shared_data, width: int) -> Image.Image:
    image = Image.open(shared_data / SEM_IMAGE).convert("RGB")
    return image.resize((width, round(image.height * width / image.width)))


def request(*parts, max_new_tokens: int = 6) -> VLMRequest:
    return VLMRequest(
        [Turn("system", ["You label fractographs."]), Turn("user", ["Which features?", *parts])],
        max_new_tokens=max_new_tokens,
        json_schema={"type": "object", "properties": {"labels": {"type": "array"}}},
    )


@pytest.mark.parametrize("width", [320, 640])
def test_real_image_reaches_the_model_through_transformers_serve(served, processor, shared_data, width):
    backend = OpenAIBackend(served.model, base_url=served.base_url, timeout=60)
    image = sem_image(shared_data, width)
    text_only = backend.generate(request())
    with_image = backend.generate(request(image))
    # <|vision_start|> + the image pads + <|vision_end|>: nothing of the image was dropped.
    assert with_image.prompt_tokens - text_only.prompt_tokens == image_tokens(processor, image) + 2
    assert isinstance(with_image.text, str)
    assert 1 <= with_image.completion_tokens <= 6
    assert with_image.extra["served_model"].startswith(served.model)
    assert with_image.extra["json_schema_sent"] is True  # accepted (and ignored) by transformers serve


def test_wrong_model_name_names_the_one_served(served):
    backend = OpenAIBackend("qwen3-vl-4b", base_url=served.base_url, timeout=60)
    with pytest.raises(BackendError, match=r"'qwen3-vl-4b' is not served") as info:
        backend.generate(request())
    assert served.model in str(info.value)


def test_requests_from_several_threads_all_get_answers(served):
    backend = OpenAIBackend(served.model, base_url=served.base_url, timeout=60)
    requests = [request(Image.new("RGB", (64 * (i + 1), 64), (40 * i, 90, 200))) for i in range(4)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        replies = list(pool.map(backend.generate, requests))
    assert [r.completion_tokens >= 1 for r in replies] == [True] * 4
    assert len({r.prompt_tokens for r in replies}) >= 2  # wider images cost more tokens


def test_not_a_model_directory_is_refused_before_starting(tmp_path):
    with pytest.raises(ServeError, match=r"no config\.json"):
        TransformersServer(tmp_path)


def test_server_that_cannot_load_the_model_reports_its_log(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    server = TransformersServer(tmp_path, startup_timeout=120)
    # The server's own explanation leads the message, for the user to act on.
    with pytest.raises(ServeError, match=r"exited with code [1-9] before answering: \w+(Error|Exception): "):
        server.start()
    assert server.process is None
