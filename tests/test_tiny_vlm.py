"""The offline tiny Qwen3-VL: a model directory that loads like a download and behaves like Qwen3-VL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

EXPECTED_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
}


def test_directory_has_the_files_of_a_hub_download(tiny_vlm_dir: Path):
    assert {p.name for p in tiny_vlm_dir.iterdir()} >= EXPECTED_FILES
    config = json.loads((tiny_vlm_dir / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl"
    assert config["architectures"] == ["Qwen3VLForConditionalGeneration"]
    assert config["text_config"]["num_hidden_layers"] == 2
    assert config["text_config"]["hidden_size"] == 64
    assert config["vision_config"]["depth"] == 2
    assert config["vision_config"]["hidden_size"] == 32
    assert config["vision_config"]["patch_size"] == 16
    assert config["vision_config"]["spatial_merge_size"] == 2
    pre = json.loads((tiny_vlm_dir / "preprocessor_config.json").read_text())
    assert (pre["patch_size"], pre["merge_size"], pre["processor_class"]) == (16, 2, "Qwen3VLProcessor")


def test_special_token_ids_agree_between_tokenizer_and_config(tiny_vlm_dir: Path):
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_vlm_dir)
    config = AutoConfig.from_pretrained(tiny_vlm_dir)
    ids = tokenizer.convert_tokens_to_ids
    assert config.image_token_id == ids("<|image_pad|>")
    assert config.video_token_id == ids("<|video_pad|>")
    assert config.vision_start_token_id == ids("<|vision_start|>")
    assert config.vision_end_token_id == ids("<|vision_end|>")
    assert tokenizer.eos_token == "<|im_end|>"
    assert config.text_config.vocab_size == len(tokenizer)
    # Qwen's order: <|endoftext|>, <|im_start|>, <|im_end|> are consecutive, the vision tokens follow.
    assert ids("<|im_start|>") == ids("<|endoftext|>") + 1 == ids("<|im_end|>") - 1


def test_tokenizer_round_trips_model_answers(tiny_vlm_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_vlm_dir)
    answer = (
        '{"labels": [{"label": "cleavage facets", "confidence": 0.8, "bbox_2d": [0, 12, 999, 1000]}]} µm Ü'
    )
    ids = tokenizer(answer)["input_ids"]
    assert tokenizer.decode(ids) == answer
    # Trained on the vocabulary words: a label is a few tokens, not one per byte.
    assert len(tokenizer("dimples")["input_ids"]) <= 2
    assert tokenizer.decode(tokenizer("<|im_start|>user")["input_ids"], skip_special_tokens=True) == "user"


def test_chat_template_renders_like_qwen3_vl(tiny_vlm_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_vlm_dir)
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "You are an expert."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "{}"}]},
        {"role": "user", "content": "Again"},
    ]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are an expert.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe.<|im_end|>\n"
        "<|im_start|>assistant\n{}<|im_end|>\n"
        "<|im_start|>user\nAgain<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # No default system prompt, and vision ids on request, as in the official template.
    labelled = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "image"}]}],
        tokenize=False,
        add_vision_id=True,
    )
    assert labelled == (
        "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>"
        "Picture 2: <|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"
    )


def test_loads_through_the_auto_classes(tiny_vlm_dir: Path):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert sum(p.numel() for p in model.parameters()) < 2_000_000


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path):
    from safetensors.torch import load_file

    from napari_fracto.testing.tiny_vlm import build_tiny_vlm

    a = load_file(build_tiny_vlm(tmp_path / "a", seed=1) / "model.safetensors")
    b = load_file(build_tiny_vlm(tmp_path / "b", seed=1) / "model.safetensors")
    c = load_file(build_tiny_vlm(tmp_path / "c", seed=2) / "model.safetensors")
    assert a.keys() == b.keys() == c.keys()
    assert all((a[k] == b[k]).all() for k in a)
    assert any(not (a[k] == c[k]).all() for k in a)


def test_builder_refuses_a_file_as_output(tmp_path: Path):
    from napari_fracto.testing.tiny_vlm import build_tiny_vlm

    target = tmp_path / "model"
    target.write_text("not a directory")
    with pytest.raises(FileExistsError, match="is a file"):
        build_tiny_vlm(target)


def test_cli_builds_a_model_in_a_subprocess(tmp_path: Path):
    out = tmp_path / "cli-model"
    result = subprocess.run(
        [sys.executable, "-m", "napari_fracto.testing.tiny_vlm", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    assert "model.safetensors" in result.stdout
    assert {p.name for p in out.iterdir()} >= EXPECTED_FILES


def test_cli_reports_an_unusable_output_path(tmp_path: Path, capsys):
    from napari_fracto.testing.tiny_vlm import main

    target = tmp_path / "taken"
    target.write_text("x")
    assert main([str(target)]) == 2
    assert "is a file" in capsys.readouterr().err
