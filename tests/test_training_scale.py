"""Decisions that matter at real scale, tested without a GPU: how the model is loaded under DDP, FSDP,
DeepSpeed and QLoRA, 4-bit loading for QLoRA adapters, and which preset `auto` applies to whose model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from napari_fracto.backends.base import BackendError
from napari_fracto.training import distributed
from napari_fracto.training.config import make_config, model_size
from napari_fracto.training.train import TrainingError, load_kwargs

torch = pytest.importorskip("torch")


def test_ddp_loads_each_rank_onto_its_own_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    kwargs = load_kwargs(make_config(dataset="-"), "cuda", torch.bfloat16, sharded=None)
    assert kwargs == {"dtype": torch.bfloat16, "device_map": {"": 3}}


@pytest.mark.parametrize("sharded", ["fsdp", "deepspeed"])
def test_sharded_training_loads_without_a_device_map(sharded):
    kwargs = load_kwargs(make_config(dataset="-"), "cuda", torch.bfloat16, sharded=sharded)
    assert "device_map" not in kwargs  # ZeRO-3 raises with one; FSDP would load the whole model per rank


def test_qlora_loads_nf4_with_the_vision_tower_and_head_kept_and_refuses_sharding():
    kwargs = load_kwargs(make_config(dataset="-", method="qlora"), "cuda", torch.bfloat16, sharded=None)
    quant = kwargs["quantization_config"]
    assert quant.load_in_4bit
    assert quant.bnb_4bit_quant_type == "nf4"
    assert quant.bnb_4bit_use_double_quant
    assert quant.bnb_4bit_compute_dtype == torch.bfloat16
    assert quant.llm_int8_skip_modules == ["model.visual", "lm_head"]
    with pytest.raises(TrainingError, match="plain DDP"):
        load_kwargs(make_config(dataset="-", method="qlora"), "cuda", torch.bfloat16, sharded="fsdp")


def test_sharding_is_read_from_the_arguments_and_accelerates_launch_environment(monkeypatch):
    from transformers import TrainingArguments

    plain = TrainingArguments(output_dir="unused", use_cpu=True, report_to="none")
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    assert distributed.sharding(plain) is None
    assert distributed.sharding(SimpleNamespace(fsdp=True, deepspeed=None, deepspeed_plugin=None)) == "fsdp"
    assert distributed.sharding(SimpleNamespace(fsdp=None, deepspeed="ds.json")) == "deepspeed"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --config_file fsdp.yaml` sets
    assert distributed.sharding(plain) == "fsdp"
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert distributed.sharding(plain) == "deepspeed"


def test_a_qlora_adapter_is_evaluated_and_served_on_its_4bit_base(tmp_path):
    from napari_fracto.backends.factory import make_backend
    from napari_fracto.settings import BackendSettings
    from napari_fracto.training.registry import AdapterEntry

    entry = AdapterEntry(name="a", path=str(tmp_path), base_model="m", task="fracture", method="qlora")
    assert entry.quantization == "4bit"
    assert AdapterEntry(name="b", path="", base_model="m", task="fracture").quantization == "none"
    assert BackendSettings().quantization == "none"  # off unless asked for
    backend = make_backend(BackendSettings(quantization=entry.quantization))
    assert backend.quantization == "4bit"


def test_4bit_loading_explains_what_it_needs(tiny_vlm_dir, monkeypatch):
    import importlib.util

    from napari_fracto.backends.transformers_backend import TransformersBackend, quantization_kwargs

    with pytest.raises(BackendError, match="needs a CUDA GPU"):
        TransformersBackend(tiny_vlm_dir, device="cpu", quantization="4bit").load()
    with pytest.raises(BackendError, match="Unknown quantization"):
        TransformersBackend(tiny_vlm_dir, quantization="8bit")
    assert quantization_kwargs("none", "cuda", torch.bfloat16) == {}
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a),
    )
    with pytest.raises(BackendError, match="pip install bitsandbytes"):
        quantization_kwargs("4bit", "cuda", torch.bfloat16)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    quant = quantization_kwargs("4bit", "cuda:0", torch.float16)["quantization_config"]
    assert quant.load_in_4bit
    assert quant.bnb_4bit_compute_dtype == torch.float16


def test_final_evaluation_of_a_qlora_run_asks_for_the_4bit_base(monkeypatch, tmp_path):
    from napari_fracto.evaluation import runner
    from napari_fracto.training.final_eval import evaluate_adapter

    seen = []

    def fake_evaluate(ds, configs, out_dir, **kwargs):
        seen.extend(configs)
        raise runner.EvaluationError("stop here")

    monkeypatch.setattr(runner, "evaluate", fake_evaluate)
    evaluate_adapter(None, "fracture", base_model="m", adapter=tmp_path, out_dir=tmp_path, device="cuda",
                     max_image_tokens=768, max_new_tokens=64, quantization="4bit")  # fmt: skip
    assert [c.settings.quantization for c in seen] == ["4bit", "4bit"]


def _model_dir(path, hidden, layers):
    path.mkdir()
    (path / "config.json").write_text(
        json.dumps({"text_config": {"hidden_size": hidden, "num_hidden_layers": layers}})
    )
    return str(path)


def test_model_size_from_a_local_folder_or_a_hub_id(tmp_path):
    assert model_size(_model_dir(tmp_path / "mine", 4096, 36)) == "8B"
    assert model_size(_model_dir(tmp_path / "tiny", 64, 2)) is None
    assert model_size("Qwen/Qwen3-VL-32B-Instruct") == "32B"
    assert model_size("someone/other-model") is None


def test_preset_auto_never_replaces_the_users_model(tmp_path):
    from napari_fracto.training.train import _resolve_preset

    events = []
    local = _model_dir(tmp_path / "my-8b", 4096, 36)
    config = _resolve_preset(make_config(dataset="-", base_model=local, preset="auto"), events.append, "cpu")
    assert config.base_model == local  # not Qwen/Qwen3-VL-8B-Instruct: offline use keeps working
    assert config.preset.startswith("8b-")
    tiny = _model_dir(tmp_path / "tiny", 64, 2)
    config = _resolve_preset(make_config(dataset="-", base_model=tiny, preset="auto"), events.append, "cpu")
    assert (config.base_model, config.preset) == (tiny, "auto")
    default = _resolve_preset(make_config(dataset="-", preset="auto"), events.append, "cpu")
    assert default.base_model.startswith("Qwen/Qwen3-VL-")
    assert [e["event"] for e in events] == ["memory"] * 3
