"""Adapters by registered name on every command, asked with the request settings they were trained on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_fracto.cli import main
from napari_fracto.dataset import Dataset
from napari_fracto.evaluation.compare import ComparisonError, load_comparison
from napari_fracto.findings import Finding
from napari_fracto.training.registry import AdapterEntry, register_adapter


@pytest.fixture
def lora(tiny_vlm_dir, tmp_path):
    """A real (random) LoRA adapter of the tiny model, registered as 'steel-v2' with a 64-token budget."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(tiny_vlm_dir))
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    folder = tmp_path / "runs" / "steel" / "adapter"
    peft_model.save_pretrained(str(folder))
    register_adapter(
        AdapterEntry(
            "steel-v2", str(folder), str(tiny_vlm_dir), "fracture",
            request_settings={"max_image_tokens": 64, "display": None, "complex_part": "phase", "tiles": 1},
        )
    )  # fmt: skip
    return folder


def _image(tmp_path):
    from PIL import Image

    path = tmp_path / "steel.png"
    Image.fromarray((np.random.default_rng(0).random((96, 128)) * 255).astype(np.uint8)).save(path)
    return path


def test_analyze_takes_a_registered_adapter_name_and_its_budget(lora, tiny_vlm_dir, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    code = main(
        ["analyze", str(_image(tmp_path)), "--task", "fracture", "--model", str(tiny_vlm_dir),
         "--adapter", "steel-v2", "--device", "cpu", "--max-new-tokens", "8", "--out", str(out)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["adapter"] == str(lora)
    assert record["request"]["backend"]["adapter"] == str(lora)
    assert record["request"]["max_image_tokens"] == 64  # the budget the adapter was trained with


def test_an_unknown_adapter_name_says_which_are_registered(lora, tiny_vlm_dir, tmp_path, capsys):
    code = main(
        ["analyze", str(_image(tmp_path)), "--task", "fracture", "--model", str(tiny_vlm_dir),
         "--adapter", "steel-v9", "--device", "cpu"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "steel-v9" in err
    assert "steel-v2" in err
    assert "Traceback" not in err


def test_comparison_entries_take_names_and_base_never_inherits_an_adapter(lora, tiny_vlm_dir, tmp_path):
    path = tmp_path / "compare.toml"
    path.write_text(
        f'[defaults]\nmodel = "{tiny_vlm_dir}"\n[[config]]\nname = "base"\n[[config]]\nadapter = "steel-v2"\n'
    )
    base, tuned = load_comparison(path)
    assert base.settings.adapter == ""
    assert tuned.settings.adapter == str(lora)
    assert tuned.label == "steel-v2"
    assert tuned.settings.max_image_tokens == 64
    assert base.fingerprint() != tuned.fingerprint()
    path.write_text('[[config]]\nadapter = "nope"\n')
    with pytest.raises(ComparisonError, match="registered: steel-v2"):
        load_comparison(path)


def test_eval_cli_compares_base_with_the_named_adapter(lora, tiny_vlm_dir, tmp_path, capsys, monkeypatch):
    from napari_fracto.settings import BackendSettings, save_settings

    # Analyze saved the adapter as the current choice: the "base" row must still be the bare base model
    save_settings(BackendSettings(model=str(tiny_vlm_dir), adapter=str(lora), device="cpu"))
    with Dataset.create(tmp_path / "ds") as ds:
        for seed in range(2):
            iid = ds.add_image((np.random.default_rng(seed).random((64, 64)) * 255).astype(np.uint8))
            ds.save_review(iid, "fracture", [Finding("cleavage facets")])
            ds.set_split([iid], "test")
    compare = tmp_path / "c.toml"
    compare.write_text('[[config]]\nname = "base"\n[[config]]\nname = "tuned"\nadapter = "steel-v2"\n')
    out = tmp_path / "eval"
    code = main(
        ["eval", "--dataset", str(tmp_path / "ds"), "--compare", str(compare), "--max-new-tokens", "8",
         "--resamples", "0", "--out", str(out)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None
    files = {p.name for p in out.iterdir()}
    assert report is not None, files
    configs = {r["config"]["name"]: r["config"] for r in report["results"]}
    assert configs["base"]["settings"]["adapter"] == ""
    assert configs["tuned"]["settings"]["adapter"] == str(lora)
    assert configs["base"]["fingerprint"] != configs["tuned"]["fingerprint"]
