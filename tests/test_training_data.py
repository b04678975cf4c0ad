"""Training data, configuration, registry and progress protocol: the pure parts of napari_fracto.training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_fracto.dataset import Dataset
from napari_fracto.findings import Box, Finding
from napari_fracto.parsing import parse_response
from napari_fracto.training import config as cfg
from napari_fracto.training import data
from napari_fracto.training.progress import TrainStatus, parse_line
from napari_fracto.training.registry import (
    AdapterEntry,
    RegistryError,
    list_adapters,
    register_adapter,
    unique_name,
)
from napari_fracto.vocabulary import load_vocabulary


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_FRACTO_DATA_DIR", str(tmp_path / "data"))


def _marked(height: int, width: int, box: Box, seed: int = 0) -> np.ndarray:
    """Dim noise with the box's pixels bright, so the box can be found again after rotation."""
    rng = np.random.default_rng(seed)
    a = (rng.random((height, width)) * 60).astype(np.uint8)
    a[int(box.y1) : int(box.y2), int(box.x1) : int(box.x2)] = 250
    return a


def _bright_box(a: np.ndarray) -> Box:
    rows, cols = np.nonzero(a > 200)
    return Box(cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


def test_rotated_examples_keep_the_box_on_the_feature(tmp_path):
    box = Box(20, 8, 60, 40)
    image = _marked(64, 128, box)  # multiples of Qwen3-VL's 32 px: the model is shown every pixel
    ds = Dataset.create(tmp_path / "ds")
    iid = ds.add_image(image, task="fracture")
    ds.save_review(iid, "fracture", [Finding("cleavage facets", 0.9, box)])
    ds.set_split([iid], "train")
    examples = data.build_examples(ds, "fracture", "train", oversample=False)
    assert sorted(e.quarter_turns for e in examples) == [0, 1, 2, 3]
    vocab = load_vocabulary("fracture")
    images = data.ExampleImages(ds, examples)
    for i, ex in enumerate(examples):
        rendered = np.asarray(images[i]["image"].convert("L"))
        assert rendered.shape == np.rot90(image, ex.quarter_turns).shape
        parsed = parse_response(ex.answer, vocab)
        (finding,) = parsed.findings
        h, w = rendered.shape
        truth = _bright_box(rendered)  # where the feature really is in the rotated image
        grid = [truth.x1 / w * 1000, truth.y1 / h * 1000, truth.x2 / w * 1000, truth.y2 / h * 1000]
        assert finding.box.as_list() == pytest.approx(grid, abs=0.51), ex.quarter_turns
    # The chat is the one Analyze sends: system prompt, user turn with the image, then the answer.
    roles = [m["role"] for m in examples[0].messages]
    assert roles == ["system", "user", "assistant"]
    assert any(part.get("type") == "image" for part in examples[0].messages[1]["content"])
    ds.close()


def _dataset(tmp_path, labels_per_image, splits):
    ds = Dataset.create(tmp_path / "ds")
    ids = []
    for i, (labels, split) in enumerate(zip(labels_per_image, splits, strict=True)):
        iid = ds.add_image(_marked(32, 32, Box(2, 2, 6 + i, 6 + i), seed=i), task="fracture")
        ds.save_review(iid, "fracture", [Finding(label) for label in labels])
        ds.set_split([iid], split)
        ids.append(iid)
    return ds, ids


def test_oversampling_repeats_rare_labels_and_augmentation_stays_in_train(tmp_path):
    common, rare = "equiaxed dimples", "fatigue striations"
    ds, ids = _dataset(
        tmp_path, [[common], [common], [common], [common, rare], [common], [common]],
        ["train", "train", "train", "train", "val", "test"],
    )  # fmt: skip
    plain = data.build_examples(ds, "fracture", "train", rotate=False, oversample=False)
    assert len(plain) == 4
    over = data.build_examples(ds, "fracture", "train", rotate=False, oversample=True, max_repeat=3)
    per_image = {i: sum(e.image_id == i for e in over) for i in ids[:4]}
    assert per_image == {ids[0]: 1, ids[1]: 1, ids[2]: 1, ids[3]: 3}  # rare: 4 / 1 capped at 3
    rotated = data.build_examples(ds, "fracture", "train", rotate=True, oversample=False)
    assert len(rotated) == 16
    val = data.build_examples(ds, "fracture", "val")  # never augmented
    assert [(e.image_id, e.quarter_turns) for e in val] == [(ids[4], 0)]
    ds.close()


def test_a_rotated_copy_of_a_test_image_never_reaches_training(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    test_image = _marked(48, 48, Box(5, 5, 30, 12), seed=7)
    test_id = ds.add_image(test_image, task="fracture")
    copy_id = ds.add_image(np.rot90(test_image).copy(), task="fracture")  # stored again, rotated
    other_id = ds.add_image(_marked(48, 48, Box(20, 30, 44, 46), seed=8), task="fracture")
    for iid in (test_id, copy_id, other_id):
        ds.save_review(iid, "fracture", [Finding("cleavage facets")])
    ds.set_splits({test_id: "test", copy_id: "train", other_id: "train"})
    examples = data.build_examples(ds, "fracture", "train")
    assert {e.image_id for e in examples} == {other_id}
    ds.close()


def test_empty_split_and_unknown_task_say_what_to_do(tmp_path):
    ds, _ = _dataset(tmp_path, [["equiaxed dimples"]], ["test"])
    with pytest.raises(data.TrainingDataError, match="split"):
        data.build_examples(ds, "fracture", "train")
    with pytest.raises(data.TrainingDataError, match="ptychography"):
        data.resolve_task(ds, "ptychography")
    assert data.resolve_task(ds, None) == "fracture"
    ds.close()


def test_dataset_fingerprint_changes_when_a_review_changes(tmp_path):
    ds, ids = _dataset(tmp_path, [["equiaxed dimples"], ["cleavage facets"]], ["train", "test"])
    before = data.dataset_fingerprint(ds, "fracture")
    assert before["reviewed_per_split"] == {"train": 1, "val": 0, "test": 1}
    ds.save_review(ids[0], "fracture", [Finding("tear ridges")])
    assert data.dataset_fingerprint(ds, "fracture")["sha256"] != before["sha256"]
    ds.close()


def test_presets_follow_free_memory_and_the_table_shows_estimates():
    assert cfg.choose_preset(80).name == "32b-qlora"
    assert cfg.choose_preset(16).name in {"4b-lora", "8b-qlora"}
    small = cfg.choose_preset(8)
    assert small.memory_gb() <= 8 * cfg.HEADROOM
    # QLoRA needs less than LoRA for the same base (fp32 non-4-bit weights eat part of it); bigger bases more.
    assert cfg.PRESETS["8b-qlora"].memory_gb() < 0.75 * cfg.PRESETS["8b-lora"].memory_gb()
    assert (
        cfg.PRESETS["2b-lora"].memory_gb()
        < cfg.PRESETS["4b-lora"].memory_gb()
        < cfg.PRESETS["8b-lora"].memory_gb()
    )
    table = cfg.memory_table(24.0, "8b-qlora")
    assert "24.0 GB" in table
    assert "<- chosen" in table
    assert table.count("\n") == len(cfg.PRESETS) + 1


def test_config_errors_name_the_setting(tmp_path):
    with pytest.raises(cfg.ConfigError, match="lora_rank"):
        cfg.make_config(dataset="x", lora_rank=0)
    with pytest.raises(cfg.ConfigError, match="preset"):
        cfg.make_config(dataset="x", preset="70b-magic")
    c = cfg.make_config(dataset="x", preset="4b-qlora").with_preset(cfg.PRESETS["4b-qlora"])
    assert (c.base_model, c.method) == ("Qwen/Qwen3-VL-4B-Instruct", "qlora")
    c.save(tmp_path)
    assert cfg.TrainConfig.load(tmp_path) == c
    with pytest.raises(cfg.ConfigError, match="not a training run"):
        cfg.TrainConfig.load(tmp_path / "nowhere")


def _adapter_dir(path):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    return path


def test_registry_lists_adapters_by_task_and_skips_deleted_folders(tmp_path):
    a = register_adapter(
        AdapterEntry("steel-v1", str(_adapter_dir(tmp_path / "a")), "Qwen/Qwen3-VL-2B-Instruct", "fracture")
    )
    register_adapter(
        AdapterEntry(
            "ptycho-v1", str(_adapter_dir(tmp_path / "b")), "Qwen/Qwen3-VL-2B-Instruct", "ptychography"
        )
    )
    assert [e.name for e in list_adapters(task="fracture")] == ["steel-v1"]
    assert {e.name for e in list_adapters()} == {"steel-v1", "ptycho-v1"}
    assert a.created_at
    assert unique_name("steel-v1") == "steel-v1-2"
    (tmp_path / "b" / "adapter_config.json").unlink()
    assert [e.name for e in list_adapters()] == ["steel-v1"]
    with pytest.raises(RegistryError, match="not allowed"):
        register_adapter(AdapterEntry("../evil", str(tmp_path / "a"), "m", "fracture"))
    with pytest.raises(RegistryError, match=r"adapter_config\.json"):
        register_adapter(AdapterEntry("none", str(tmp_path / "missing"), "m", "fracture"))


def test_progress_status_follows_the_json_lines():
    status = TrainStatus()
    assert status.feed("Loading weights: 100%") is None
    assert status.feed("{'loss': 1.0}") is None  # a library's print, not the protocol
    lines = [
        {"event": "start", "step": 0, "total_steps": 4},
        {"event": "log", "step": 1, "epoch": 0.25, "total_steps": 4, "loss": 2.5, "eta_s": 30},
        {"event": "log", "step": 2, "epoch": 0.5, "total_steps": 4, "loss": 2.0, "eta_s": 10},
        {"event": "eval", "step": 2, "eval_loss": 2.2},
    ]
    for line in lines:
        status.feed(json.dumps(line))
    assert (status.state, status.step, status.total_steps) == ("training", 2, 4)
    assert status.losses == [(1, 2.5), (2, 2.0)]
    assert status.eval_losses == [(2, 2.2)]
    assert "step 2/4" in status.progress_text()
    assert "ETA 0:10" in status.progress_text()
    status.feed(
        json.dumps(
            {"event": "evaluation", "results": {"adapter": {"micro_f1": 0.5}, "base": {"micro_f1": 0.1}}}
        )
    )
    status.feed(
        json.dumps({"event": "done", "adapter": "/x/adapter", "name": "steel", "run_dir": "/x", "step": 4})
    )
    assert status.state == "finished"
    assert "steel" in status.message
    assert [k for k, _ in status.comparison_rows()] == ["base", "adapter"]
    assert parse_line('{"event": "error", "message": "no GPU"}')["message"] == "no GPU"
