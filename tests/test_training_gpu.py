"""The throughput/memory benchmark path: shrunken on the CPU here, real-size Qwen3-VL on a CUDA GPU."""

from __future__ import annotations

import math

import pytest

from napari_fracto.training import bench
from napari_fracto.training.config import KNOWN_BASES, estimate_memory_gb


def test_benchmark_path_trains_a_shrunken_architecture_on_the_cpu(tmp_path, monkeypatch):
    small = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    monkeypatch.setitem(bench.PUBLISHED, "2B", small)
    monkeypatch.setattr(bench, "_VISION", {**bench._VISION, "depth": 2, "hidden_size": 32,
                                           "intermediate_size": 64, "num_heads": 2,
                                           "deepstack_visual_indexes": [1]})  # fmt: skip
    monkeypatch.setitem(bench._TEXT, "head_dim", 16)
    monkeypatch.setitem(bench._TEXT, "num_key_value_heads", 2)
    monkeypatch.setitem(bench._TEXT, "vocab_size", 1024)
    monkeypatch.setitem(
        bench._TEXT, "rope_parameters", {**bench._TEXT["rope_parameters"], "mrope_section": [4, 2, 2]}
    )
    model_dir = bench.build_model_dir("2B", tmp_path)
    result = bench.measure(model_dir, "lora", steps=2, warmup=1, max_image_tokens=16, image_side=64)
    assert result["steps_timed"] == 2
    assert result["samples_per_s"] > 0
    assert 0 < result["image_tokens"] <= 16
    assert 0 < result["trainable_params"] < result["total_params"]
    assert math.isfinite(result["final_loss"])


@pytest.mark.parametrize("size", ["2B", "4B"])
def test_real_size_config_matches_the_published_parameter_count(size):
    from transformers import AutoModelForImageTextToText

    from napari_fracto.testing.tiny_vlm import build_tokenizer

    torch = pytest.importorskip("torch")
    config = bench.real_size_config(size, build_tokenizer())
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    params = sum(p.numel() for p in model.parameters()) / 1e9
    assert params == pytest.approx(KNOWN_BASES[size].params_b, rel=0.05)
    vision = sum(p.numel() for p in model.model.visual.parameters()) / 1e9
    assert vision == pytest.approx(KNOWN_BASES[size].vision_b, rel=0.1)


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
