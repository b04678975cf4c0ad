"""`--backend vllm` (issue 11): a clear message without vLLM, and the request -> engine input conversion
(both testable anywhere); the engine itself only where vLLM and a CUDA GPU are present."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_fracto.backends.base import BackendError, Turn, VLMRequest
from napari_fracto.backends.factory import make_backend
from napari_fracto.backends.vllm_backend import VLLMBackend, to_vllm_input, vllm_available
from napari_fracto.cli import main
from napari_fracto.settings import BackendSettings


def _image(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _two_image_request() -> VLMRequest:
    example, query = _image(40, 30, 0), _image(64, 64, 1)
    return VLMRequest(
        [
            Turn("system", ["You are a fractography expert."]),
            Turn("user", [example, "Example."]),
            Turn("assistant", ['{"labels": []}']),
            Turn("user", [query, "Which features?"]),
        ],
        max_new_tokens=77,
        json_schema={"type": "object"},
    )


def test_the_request_becomes_the_chat_template_prompt_with_its_images_in_order(tiny_vlm_dir):
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_vlm_dir)
    request = _two_image_request()
    converted = to_vllm_input(
        request, lambda m: tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
    )
    prompt = converted["input"]["prompt"]
    assert prompt.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert prompt.index("Example.") < prompt.index('{"labels": []}') < prompt.index("Which features?")
    assert prompt.rstrip().endswith("<|im_start|>assistant")
    images = converted["input"]["multi_modal_data"]["image"]
    assert [im.size for im in images] == [(40, 30), (64, 64)]  # placeholders and images in the same order
    assert converted["sampling"] == {"max_tokens": 77, "temperature": 0.0, "json_schema": {"type": "object"}}


def test_the_same_prompt_as_the_transformers_backend_renders(tiny_vlm_dir):
    pytest.importorskip("transformers")
    from napari_fracto.backends.qwen_processor import load_processor
    from napari_fracto.backends.transformers_backend import to_chat_messages

    processor = load_processor(tiny_vlm_dir)
    request = _two_image_request()

    def render(messages):
        return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    assert to_vllm_input(request, render)["input"]["prompt"] == render(to_chat_messages(request)[0])


def test_a_text_only_request_sends_no_images():
    converted = to_vllm_input(VLMRequest([Turn("user", ["hello"])], max_new_tokens=5), json.dumps)
    assert "multi_modal_data" not in converted["input"]
    assert "json_schema" not in converted["sampling"]


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed here")
def test_without_vllm_the_message_says_how_to_get_it(tmp_path, capsys):
    with pytest.raises(BackendError, match="pip install vllm"):
        make_backend(BackendSettings(kind="vllm", model="Qwen/Qwen3-VL-2B-Instruct"))
    Image.fromarray(np.zeros((8, 8), np.uint8) + 3).save(tmp_path / "a.png")
    assert main(["analyze", str(tmp_path / "a.png"), "--task", "fracture", "--backend", "vllm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --backend vllm needs vLLM")  # one line before any image, no traceback
    assert "Traceback" not in err


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not (vllm_available() and _cuda()), reason="needs vLLM and a CUDA GPU")
def test_vllm_engine_answers_the_tiny_model(tiny_vlm_dir):
    backend = VLLMBackend(str(tiny_vlm_dir), max_image_tokens=64, batch_size=4, constrained=False,
                          engine_options={"gpu_memory_utilization": 0.3, "max_model_len": 2048})  # fmt: skip
    reply = backend.generate(VLMRequest([Turn("user", [_image(64, 64, 2), "x"])], max_new_tokens=8))
    backend.close()
    assert reply.completion_tokens == 8
