"""The local Hugging Face backend, run on the random tiny Qwen3-VL (no downloads, CPU, seconds)."""

from __future__ import annotations

import importlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from PIL import Image

from napari_fracto.backends.base import Backend, BackendError, CancelledError, Turn, VLMRequest
from napari_fracto.backends.transformers_backend import TransformersBackend


def _image(size: int = 256, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))


def _request(image: Image.Image | None = None, max_new_tokens: int = 12, **kw) -> VLMRequest:
    parts = [image if image is not None else _image(), "Which fracture features do you see? Answer in JSON."]
    return VLMRequest(
        turns=[Turn("system", ["You are a fractography expert."]), Turn("user", parts)],
        max_new_tokens=max_new_tokens,
        **kw,
    )


def _torchvision_works() -> bool:
    try:
        importlib.import_module("torchvision")
    except (
        Exception
    ):  # absent, or the wheel does not match torch ("operator torchvision::nms does not exist")
        return False
    return True


@pytest.fixture(scope="module")
def backend(tiny_vlm_dir: Path) -> TransformersBackend:
    b = TransformersBackend(str(tiny_vlm_dir), max_image_tokens=64)
    yield b
    b.close()


@pytest.fixture(scope="module")
def lora_dir(tiny_vlm_dir: Path, tmp_path_factory) -> Path:
    """A LoRA adapter on the tiny model's language model with random B, so it changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir)
    torch.manual_seed(0)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
        init_lora_weights=False,
    )
    out = tmp_path_factory.mktemp("lora") / "adapter"
    get_peft_model(model, config).save_pretrained(out)
    return out


# -- contract and basic generation ---------------------------------------------------------------------


def test_constructing_is_cheap_and_meets_the_backend_protocol(tiny_vlm_dir: Path):
    b = TransformersBackend(str(tiny_vlm_dir))
    assert isinstance(b, Backend)
    assert (b.name, b.model, b.adapter) == ("transformers", str(tiny_vlm_dir), None)
    assert not b.loaded  # nothing loads until the first generate


def test_generates_text_from_an_image_and_a_prompt(backend: TransformersBackend):
    reply = backend.generate(_request())
    assert backend.loaded
    assert isinstance(reply.text, str)
    assert reply.text
    assert reply.completion_tokens == 12  # a random model does not stop on its own
    assert reply.prompt_tokens > reply.extra["image_tokens"] == 64  # 256x256 px = 8x8 tokens of 32x32 px
    assert reply.seconds > 0
    assert reply.extra["finish_reason"] == "length"
    assert reply.extra["device"] == "cpu" or not reply.extra["device"].startswith("cpu")


def test_greedy_decoding_is_deterministic_across_calls_and_loads(backend, tiny_vlm_dir: Path):
    first = backend.generate(_request()).text
    assert backend.generate(_request()).text == first
    fresh = TransformersBackend(str(tiny_vlm_dir), max_image_tokens=64)
    try:
        assert fresh.generate(_request()).text == first
    finally:
        fresh.close()


def test_output_depends_on_the_image(backend: TransformersBackend):
    texts = {backend.generate(_request(_image(seed=s), max_new_tokens=8)).text for s in range(3)}
    assert len(texts) > 1


def test_sampling_with_temperature_still_answers(backend: TransformersBackend):
    reply = backend.generate(_request(temperature=1.0, max_new_tokens=6))
    assert reply.completion_tokens == 6


def test_text_only_request_works(backend: TransformersBackend):
    reply = backend.generate(VLMRequest([Turn("user", ["Hello"])], max_new_tokens=4))
    assert reply.extra["image_tokens"] == 0
    assert reply.completion_tokens == 4


def test_in_context_examples_with_two_images(backend: TransformersBackend):
    request = VLMRequest(
        turns=[
            Turn("user", [_image(seed=1), "Example."]),
            Turn("assistant", ['{"labels": [{"label": "dimples"}]}']),
            Turn("user", [_image(size=128, seed=2), "Now this one."]),
        ],
        max_new_tokens=4,
    )
    # Both images count; the 128 px one is scaled up to Qwen3-VL's minimum of 64 tokens (65,536 px).
    assert backend.generate(request).extra["image_tokens"] == 64 + 64


# -- image-token budget --------------------------------------------------------------------------------


def test_image_token_budget_is_respected(tiny_vlm_dir: Path):
    small = TransformersBackend(str(tiny_vlm_dir), max_image_tokens=16)
    large = TransformersBackend(str(tiny_vlm_dir), max_image_tokens=64)
    try:
        a = small.generate(_request(max_new_tokens=2))
        b = large.generate(_request(max_new_tokens=2))
        big_image = small.generate(_request(_image(size=1024), max_new_tokens=2))
    finally:
        small.close()
        large.close()
    assert (a.extra["image_tokens"], b.extra["image_tokens"]) == (16, 64)
    assert b.prompt_tokens - a.prompt_tokens == 64 - 16
    assert big_image.extra["image_tokens"] <= 16  # a 1024 px image (1024 tokens) is scaled down to the budget


def test_zero_budget_is_refused():
    with pytest.raises(BackendError, match="max_image_tokens"):
        TransformersBackend("some/model", max_image_tokens=0)


# -- torchvision-free processor ------------------------------------------------------------------------


def test_image_only_processor_is_used_when_torchvision_does_not_work(backend: TransformersBackend):
    from napari_fracto.backends.qwen_processor import is_image_only

    backend.generate(_request(max_new_tokens=1))
    assert is_image_only(backend.processor) is (not _torchvision_works())
    if not _torchvision_works():
        assert backend.generate(_request(max_new_tokens=1)).extra["processor"] == "ImageOnlyQwen3VLProcessor"


def test_load_processor_sees_through_a_bare_tokenizer(tiny_vlm_dir: Path, tmp_path: Path):
    """AutoProcessor on a directory saved by the image-only class returns just a tokenizer; we must not."""
    import shutil

    from transformers import AutoProcessor

    from napari_fracto.backends.qwen_processor import (
        build_image_only_processor,
        is_image_only,
        load_processor,
    )

    saved = tmp_path / "saved"
    build_image_only_processor(tiny_vlm_dir).save_pretrained(saved)
    shutil.copy(tiny_vlm_dir / "config.json", saved / "config.json")
    assert getattr(AutoProcessor.from_pretrained(saved), "image_processor", None) is None  # the trap

    processor = load_processor(saved)
    assert is_image_only(processor)
    inputs = processor(text=["<|vision_start|><|image_pad|><|vision_end|>hi"], images=[_image(64)])
    assert inputs["image_grid_thw"].tolist() == [[1, 16, 16]]  # scaled up to the 65,536 px minimum
    with pytest.raises(BackendError, match="images only"):
        processor(text=["x"], videos=[np.zeros((2, 32, 32, 3), np.uint8)])


def test_registered_image_only_processor_makes_autoprocessor_work(
    tiny_vlm_dir: Path, tmp_path: Path, monkeypatch
):
    """After registering, a plain `AutoProcessor` (as in `transformers serve`) builds a working processor."""
    import shutil

    from transformers import AutoProcessor
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    from napari_fracto.backends.qwen_processor import (
        build_image_only_processor,
        register_image_only_processor,
    )

    # Undo the registration after this test (it is process-wide).
    monkeypatch.setattr(PROCESSOR_MAPPING, "_extra_content", dict(PROCESSOR_MAPPING._extra_content))
    saved = tmp_path / "saved"
    build_image_only_processor(tiny_vlm_dir).save_pretrained(saved)
    shutil.copy(tiny_vlm_dir / "config.json", saved / "config.json")

    cls = register_image_only_processor()
    processor = AutoProcessor.from_pretrained(saved)
    assert isinstance(processor, cls)
    out = processor(
        text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[_image(64)], return_tensors="np"
    )
    assert int((out["input_ids"] == processor.image_token_id).sum()) == 64  # scaled up to the minimum


# -- LoRA adapters -------------------------------------------------------------------------------------


def test_lora_adapter_changes_the_output_and_round_trips(backend, tiny_vlm_dir: Path, lora_dir: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from napari_fracto.backends.qwen_processor import load_processor, set_image_token_budget
    from napari_fracto.backends.transformers_backend import to_chat_messages

    request = _request(max_new_tokens=16)
    base_text = backend.generate(request).text
    tuned = TransformersBackend(str(tiny_vlm_dir), adapter=str(lora_dir), max_image_tokens=64)
    again = TransformersBackend(str(tiny_vlm_dir), adapter=str(lora_dir), max_image_tokens=64)
    try:
        tuned_text = tuned.generate(request).text
        assert tuned.adapter == str(lora_dir)
        assert tuned_text != base_text
        assert again.generate(request).text == tuned_text
    finally:
        tuned.close()
        again.close()

    # The same adapter applied by hand gives the same tokens: the backend adds nothing of its own.
    model = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir), lora_dir
    ).eval()
    processor = load_processor(tiny_vlm_dir)
    set_image_token_budget(processor, 64)
    messages, images = to_chat_messages(request)
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=images, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    expected = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert tuned_text == expected.strip()


def test_adapter_for_another_base_model_is_refused_clearly(lora_dir: Path, tmp_path: Path):
    from napari_fracto.testing.tiny_vlm import build_tiny_vlm

    other = build_tiny_vlm(tmp_path / "other-base", hidden_size=32)
    b = TransformersBackend(str(other), adapter=str(lora_dir))
    with pytest.raises(BackendError, match="does not fit the model") as err:
        b.load()
    assert "trained on" in str(err.value)


def test_adapter_directory_without_adapter_config_is_refused(tiny_vlm_dir: Path, tmp_path: Path):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(BackendError, match=r"adapter_config\.json"):
        TransformersBackend(str(tiny_vlm_dir), adapter=str(tmp_path)).load()
    with pytest.raises(BackendError, match="does not exist"):
        TransformersBackend(str(tiny_vlm_dir), adapter=str(tmp_path / "missing")).load()


# -- cancel and threads --------------------------------------------------------------------------------


class _CancelAfter(threading.Event):
    """Behaves as if the user pressed Cancel once the model has produced `n` tokens."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.checks, self.n = 0, n

    def is_set(self) -> bool:
        self.checks += 1
        if self.checks > self.n:
            self.set()
        return super().is_set()


def test_cancel_stops_generation_early(backend: TransformersBackend):
    cancel = _CancelAfter(5)
    with pytest.raises(CancelledError):
        backend.generate(_request(max_new_tokens=2000, cancel=cancel))
    assert cancel.checks < 20  # stopped after a few tokens, not 2000
    assert backend.generate(_request(max_new_tokens=3)).completion_tokens == 3  # still usable


def test_cancel_from_another_thread(backend: TransformersBackend):
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    try:
        with pytest.raises(CancelledError):
            backend.generate(_request(max_new_tokens=3000, cancel=cancel))
    finally:
        timer.cancel()


def test_cancelled_before_start_does_not_load(tiny_vlm_dir: Path):
    b = TransformersBackend(str(tiny_vlm_dir))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        b.generate(_request(cancel=cancel))
    assert not b.loaded


def test_concurrent_requests_run_one_at_a_time_with_the_same_answers(backend: TransformersBackend):
    expected = backend.generate(_request()).text
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(backend.generate(_request()).text)) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [expected] * 3


# -- clear errors --------------------------------------------------------------------------------------


def test_missing_model_directory(tmp_path: Path):
    with pytest.raises(BackendError, match="does not exist"):
        TransformersBackend(str(tmp_path / "no" / "model")).load()


def test_directory_without_config_json(tmp_path: Path):
    with pytest.raises(BackendError, match=r"no config\.json"):
        TransformersBackend(str(tmp_path)).load()


def test_uncached_hub_id_offline_says_what_to_do():
    b = TransformersBackend("napari-fracto-tests/no-such-model", local_files_only=True)
    with pytest.raises(BackendError) as err:
        b.load()
    message = str(err.value)
    assert (
        "'napari-fracto-tests/no-such-model' is not in the Hugging Face cache and cannot be downloaded"
        in message
    )
    assert "HF_HOME" in message
    assert "local model directory" in message


def test_first_use_announces_the_download(monkeypatch, caplog):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the download itself fails fast
    b = TransformersBackend("napari-fracto-tests/Tiny-VL-2B-Instruct", local_files_only=False)
    with caplog.at_level("WARNING"), pytest.raises(BackendError, match="cannot be downloaded"):
        b.load()
    assert "will be downloaded" in caplog.text
    assert "roughly 4 GB" in caplog.text


def test_invalid_model_id():
    with pytest.raises(BackendError, match="neither an existing directory nor a valid"):
        TransformersBackend("not a model id").load()


def test_model_needing_remote_code_is_refused_with_advice(tmp_path: Path):
    config = {"model_type": "napari_fracto_custom", "auto_map": {"AutoConfig": "configuration_x.XConfig"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(BackendError, match="trust_remote_code"):
        TransformersBackend(str(tmp_path)).load()


@pytest.mark.parametrize(
    ("turns", "match"),
    [
        ([], "no turns"),
        ([Turn("user", [np.zeros((4, 4))])], "parts must be text or PIL images"),
        ([Turn("assistant", [Image.new("RGB", (8, 8))])], "only user turns"),
        ([Turn("tool", ["x"])], "role 'tool'"),  # type: ignore[arg-type]
    ],
)
def test_malformed_requests_are_refused_before_loading(tiny_vlm_dir: Path, turns, match):
    b = TransformersBackend(str(tiny_vlm_dir))
    with pytest.raises(BackendError, match=match):
        b.generate(VLMRequest(turns=turns))
    assert not b.loaded


def test_out_of_memory_suggests_a_smaller_budget(backend: TransformersBackend, monkeypatch):
    import torch

    backend.load()

    def boom(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(backend._hf_model, "generate", boom)
    with pytest.raises(BackendError, match="Out of memory") as err:
        backend.generate(_request())
    assert "max_image_tokens" in str(err.value)
    assert "smaller model" in str(err.value)


def test_close_frees_the_model_and_a_later_call_reloads(tiny_vlm_dir: Path):
    b = TransformersBackend(str(tiny_vlm_dir), max_image_tokens=16)
    first = b.generate(_request(max_new_tokens=4)).text
    b.close()
    assert not b.loaded
    assert b.processor is None
    assert b.generate(_request(max_new_tokens=4)).text == first


# -- device and dtype ----------------------------------------------------------------------------------


def test_auto_device_and_dtype_choices():
    import torch

    from napari_fracto.backends.devices import resolve_device, resolve_dtype

    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto") == expected
    assert resolve_device("CPU") == "cpu"
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("auto", "mps") is torch.float16
    assert resolve_dtype("bf16", "cpu") is torch.bfloat16
    assert resolve_dtype("torch.float16", "cpu") is torch.float16
    if torch.cuda.is_available():
        major, _ = torch.cuda.get_device_capability()
        assert resolve_dtype("auto", "cuda") is (torch.bfloat16 if major >= 8 else torch.float16)


def test_bad_device_and_dtype_names_are_explained():
    import torch

    from napari_fracto.backends.devices import resolve_device, resolve_dtype

    with pytest.raises(BackendError, match="Unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(BackendError, match="Unknown dtype 'int3'"):
        resolve_dtype("int3")
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_explicit_dtype_is_applied(tiny_vlm_dir: Path):
    b = TransformersBackend(str(tiny_vlm_dir), dtype="bfloat16", device="cpu", max_image_tokens=16)
    try:
        reply = b.generate(_request(max_new_tokens=2))
    finally:
        b.close()
    assert reply.extra["dtype"] == "bfloat16"
