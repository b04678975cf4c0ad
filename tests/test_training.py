"""CPU fine-tuning of the tiny random Qwen3-VL: loss falls, adapters round-trip, stop/resume, export."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_fracto.dataset import Dataset
from napari_fracto.findings import Box, Finding
from napari_fracto.training.config import make_config
from napari_fracto.training.registry import list_adapters
from napari_fracto.training.train import StopRequest, resume, run_training

LABELS = [["equiaxed dimples"], ["cleavage facets"], ["equiaxed dimples", "tear ridges"], ["cleavage facets"]]
SPLITS = ["train", "train", "train", "train", "val", "test"]


def make_dataset(path) -> str:
    rng = np.random.default_rng(0)
    ds = Dataset.create(path)
    for i, split in enumerate(SPLITS):
        image = (rng.random((48, 64)) * 255).astype(np.uint8)
        iid = ds.add_image(image, task="fracture")
        labels = LABELS[i % len(LABELS)]
        ds.save_review(
            iid, "fracture", [Finding(labels[0], 0.9, Box(8, 4, 40, 30))] + [Finding(x) for x in labels[1:]]
        )
        ds.set_split([iid], split)
    ds.close()
    return str(path)


def tiny_config(dataset, model, out, **extra):
    values = dict(
        dataset=dataset, base_model=str(model), device="cpu", output_dir=str(out), max_steps=8, batch_size=2,
        grad_accum=1, learning_rate=5e-3, warmup_ratio=0.0, max_image_tokens=16, rotate=False,
        eval_max_new_tokens=8, seed=0,
    )  # fmt: skip
    return make_config(**(values | extra))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_vlm_dir):
    """One finished run (vision LoRA on, so export has something to drop), shared by the tests below."""
    root = tmp_path_factory.mktemp("training")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAPARI_FRACTO_DATA_DIR", str(root / "data"))
        events = []
        config = tiny_config(
            make_dataset(root / "ds"), tiny_vlm_dir, root / "run", train_vision=True, name="tiny-fracture"
        )
        outcome = run_training(config, emit=events.append)
        registered = list_adapters(task="fracture")
    return {
        "root": root,
        "events": events,
        "outcome": outcome,
        "registered": registered,
        "model": tiny_vlm_dir,
    }


def test_a_few_steps_lower_the_loss_and_the_run_folder_is_complete(trained):
    losses = [e["loss"] for e in trained["events"] if e["event"] == "log"]
    assert len(losses) == 8
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3
    log = next(e for e in trained["events"] if e["event"] == "log")
    assert {"step", "epoch", "loss", "eta_s", "total_steps"} <= set(log)
    run = trained["outcome"].run_dir
    files = [
        "train_config.json",
        "dataset.json",
        "versions.json",
        "metrics.jsonl",
        "epochs.json",
        "evaluation.json",
        "README.md",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
    ]
    for name in files:
        assert (run / name).is_file(), name
    assert json.loads((run / "train_config.json").read_text())["max_steps"] == 8
    assert json.loads((run / "versions.json").read_text())["vocabulary_version"]
    assert len(json.loads((run / "dataset.json").read_text())["sha256"]) == 64
    card = (run / "README.md").read_text()
    assert "micro-F1" in card
    assert "tiny-fracture" in card


def test_adapter_is_registered_with_base_and_adapter_scores(trained):
    (entry,) = [e for e in trained["registered"] if e.name == "tiny-fracture"]
    assert entry.path == str(trained["outcome"].adapter)
    assert set(entry.evaluation) == {"base", "adapter"}
    evaluation = json.loads((trained["outcome"].run_dir / "evaluation.json").read_text())
    assert evaluation["n_images"] == 1
    assert {"micro_f1", "set_precision", "per_label"} <= set(evaluation["results"]["adapter"])


def test_adapter_round_trips_to_identical_outputs(trained):
    from PIL import Image

    from napari_fracto.backends.base import Turn, VLMRequest
    from napari_fracto.backends.transformers_backend import TransformersBackend

    image = Image.fromarray((np.random.default_rng(3).random((48, 64, 3)) * 255).astype(np.uint8))
    request = VLMRequest([Turn("user", [image, "Which labels apply?"])], max_new_tokens=12)

    def answer(adapter):
        backend = TransformersBackend(trained["model"], adapter=adapter, device="cpu", max_image_tokens=16)
        try:
            return backend.generate(request).text
        finally:
            backend.close()

    adapter = str(trained["outcome"].adapter)
    first, second = answer(adapter), answer(adapter)
    assert first == second
    assert first != answer(None)  # the adapter changed the model, so the round trip is not vacuous


def test_export_for_vllm_keeps_only_language_model_tensors(trained, tmp_path):
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText

    from napari_fracto.training.export import export_for_vllm

    result = export_for_vllm(trained["outcome"].adapter, out=tmp_path / "vllm", name="tiny")
    with safe_open(str(result.path / "adapter_model.safetensors"), framework="pt") as fh:
        keys = list(fh.keys())
    assert keys
    assert not any("visual" in k for k in keys)
    assert result.dropped > 0
    assert "--enable-lora" in result.command
    assert '"name": "tiny"' in result.command
    assert "--max-lora-rank 16" in result.command
    # Sized from the run (16 image tokens, 8 answer tokens): 4 images x 16 + 2048 text + 8 -> 3072, not the
    # 262,144-token default whose KV cache does not fit a 24-48 GB GPU.
    assert "--max-model-len 3072" in result.command
    assert '"image": 4' in result.command
    assert '"longest_edge": 16384' in result.command  # 16 tokens x 32 x 32 pixels, as trained
    assert any("--enable-tower-connector-lora" in note for note in result.notes)  # vision LoRA was on
    base = AutoModelForImageTextToText.from_pretrained(trained["model"])
    PeftModel.from_pretrained(base, str(result.path))  # loads as a plain peft adapter


def test_merged_export_answers_like_base_plus_adapter(trained, tmp_path):
    from PIL import Image

    from napari_fracto.backends.base import Turn, VLMRequest
    from napari_fracto.backends.transformers_backend import TransformersBackend
    from napari_fracto.training.export import merge_adapter

    merged = merge_adapter(trained["outcome"].adapter, out=tmp_path / "merged")
    text_config = json.loads((merged / "config.json").read_text())["text_config"]
    # vLLM releases on transformers 4.x find M-RoPE in rope_scaling; transformers 5 reads rope_parameters.
    assert text_config["rope_scaling"]["mrope_section"] == text_config["rope_parameters"]["mrope_section"]
    assert text_config["rope_theta"] == text_config["rope_parameters"]["rope_theta"]
    image = Image.fromarray((np.random.default_rng(4).random((48, 64, 3)) * 255).astype(np.uint8))
    request = VLMRequest([Turn("user", [image, "Which labels apply?"])], max_new_tokens=12)
    with_adapter = TransformersBackend(
        trained["model"], adapter=str(trained["outcome"].adapter), device="cpu", max_image_tokens=16
    )
    plain = TransformersBackend(merged, device="cpu", max_image_tokens=16)
    assert with_adapter.generate(request).text == plain.generate(request).text


def test_stop_saves_a_checkpoint_and_resume_continues_from_it(tmp_path, tiny_vlm_dir, monkeypatch):
    monkeypatch.setenv("NAPARI_FRACTO_DATA_DIR", str(tmp_path / "data"))
    stop = StopRequest()
    events = []

    def emit(event):
        events.append(event)
        if event["event"] == "log" and event["step"] == 3:
            stop.set()  # what Ctrl-C / SIGTERM / the STOP file do

    config = tiny_config(
        make_dataset(tmp_path / "ds"), tiny_vlm_dir, tmp_path / "run", max_steps=6, final_eval=False
    )
    outcome = run_training(config, emit=emit, stop=stop)
    assert (outcome.state, outcome.step) == ("stopped", 3)
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-3").is_dir()
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "stopped"
    assert not (tmp_path / "run" / "adapter").exists()

    resumed_events = []
    outcome = resume(tmp_path / "run", emit=resumed_events.append)
    start = next(e for e in resumed_events if e["event"] == "start")
    steps = [e["step"] for e in resumed_events if e["event"] == "log"]
    assert start["step"] == 3
    assert steps == [4, 5, 6]
    assert outcome.state == "finished"
    assert (outcome.adapter / "adapter_model.safetensors").is_file()


def test_resume_refuses_when_the_dataset_changed(tmp_path, tiny_vlm_dir, monkeypatch):
    from napari_fracto.training.train import TrainingError

    monkeypatch.setenv("NAPARI_FRACTO_DATA_DIR", str(tmp_path / "data"))
    dataset = make_dataset(tmp_path / "ds")
    stop = StopRequest()
    stop.set()
    run_training(
        tiny_config(dataset, tiny_vlm_dir, tmp_path / "run", final_eval=False), emit=lambda e: None, stop=stop
    )
    with Dataset.open(dataset) as ds:
        item = next(ds.iter_items(split="train"))
        ds.save_review(item.image_id, "fracture", [Finding("tear ridges")])
    with pytest.raises(TrainingError, match="dataset changed"):
        resume(tmp_path / "run", emit=lambda e: None)


def _cli(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "napari_fracto.training", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_cli_refuses_without_cuda_unless_device_cpu(tmp_path, tiny_vlm_dir):
    import os

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal only happens without it")
    env = os.environ | {"NAPARI_FRACTO_DATA_DIR": str(tmp_path / "data")}
    dataset = make_dataset(tmp_path / "ds")
    refused = _cli("train", dataset, "--model", str(tiny_vlm_dir), "--out", str(tmp_path / "r1"), env=env)
    assert refused.returncode == 2
    assert "--device cpu" in refused.stderr
    error = json.loads(refused.stdout.strip().splitlines()[-1])
    assert error["event"] == "error"
    assert "CUDA" in error["message"]
    assert not (tmp_path / "r1").exists()


def test_cli_reports_bad_input_clearly(tmp_path):
    import os

    env = os.environ | {"NAPARI_FRACTO_DATA_DIR": str(tmp_path / "data")}
    missing = _cli("train", str(tmp_path / "nowhere"), "--device", "cpu", env=env)
    assert missing.returncode == 2
    assert "no dataset" in missing.stderr
    bad = _cli("train", str(tmp_path), "--lora-rank", "0", "--device", "cpu", env=env)
    assert bad.returncode == 2
    assert "lora_rank" in bad.stderr
    export = _cli("export-adapter", "no-such-adapter", env=env)
    assert export.returncode == 2
    assert "registered" in export.stderr
    assert "Traceback" not in missing.stderr + bad.stderr + export.stderr
