"""The throughput/memory benchmark path: shrunken on the CPU here, real-size Qwen3-VL on a CUDA GPU."""

from __future__ import annotations

import math

import pytest

from napari_fracto.training import bench
from napari_fracto.training.config import KNOWN_BASES, estimate_memory_gb
from napari_fracto.training.memory import ARCHITECTURES


def test_benchmark_path_trains_a_shrunken_architecture_on_the_cpu(tmp_path, monkeypatch):
    from napari_fracto.training.memory import Architecture

    small = Architecture(64, 128, 2, 4, True, vision_depth=2, vision_hidden=32, vision_intermediate=64,
                         deepstack=(1,), kv_heads=2, head_dim=16, vocab_size=1024, vision_heads=2,
                         mrope_section=(4, 2, 2))  # fmt: skip
    monkeypatch.setitem(ARCHITECTURES, "2B", small)
    model_dir = bench.build_model_dir("2B", tmp_path)
    result = bench.measure(model_dir, "lora", steps=2, warmup=1, max_image_tokens=16, image_side=64)
    assert result["steps_timed"] == 2
    assert result["samples_per_s"] > 0
    assert 0 < result["image_tokens"] <= 16
    assert 0 < result["trainable_params"] < result["total_params"]
    assert math.isfinite(result["final_loss"])
    derived = bench.add_derived({**result, "device": "NVIDIA H200"}, "2B", batch_size=1)
    tokens_per_s = result["samples_per_s"] * result["tokens_per_sample"]
    assert derived["tokens_per_s"] == pytest.approx(tokens_per_s, 0.01)
    # MFU = 6 x path parameters x tokens/s / bf16 peak (989 TFLOP/s on an H200)
    assert derived["mfu"] == pytest.approx(6 * bench.path_params("2B") * tokens_per_s / 989e12, 0.01)
    assert derived["estimated_gb"] > 0
    inference = bench.measure_inference(model_dir, images=2, max_new_tokens=4, side=64, max_image_tokens=16)
    assert inference["images_per_s"] > 0
    assert inference["batched"].startswith("missing")


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_real_size_2b_trains_on_the_gpu_within_the_memory_estimate(tmp_path, method, record_property):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if method == "qlora":
        pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes")
    model_dir = bench.build_model_dir("2B", tmp_path)
    result = bench.measure(model_dir, method, steps=5)
    for key, value in result.items():
        record_property(key, value)
    print(result)
    assert result["samples_per_s"] > 0
    assert math.isfinite(result["final_loss"])
    estimate = estimate_memory_gb(KNOWN_BASES["2B"], method)
    assert 0.3 * estimate < result["peak_gb"] < 1.5 * estimate
