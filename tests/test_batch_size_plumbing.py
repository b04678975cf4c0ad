"""`--batch-size` through `analyze`, `dataset autolabel` and `eval` (issue 11): the local model really
generates several images together there, and every answer is what one-at-a-time gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from PIL import Image

from napari_fracto.backends import local_batch
from napari_fracto.cli import main
from napari_fracto.dataset import Dataset
from napari_fracto.findings import Finding


@pytest.fixture
def batches(monkeypatch) -> list[int]:
    """The size of every batch the local model generated (the real generation runs)."""
    sizes: list[int] = []
    real = local_batch.generate_rows

    def spy(model, processor, requests, **kw):
        sizes.append(len(requests))
        return real(model, processor, requests, **kw)

    monkeypatch.setattr(local_batch, "generate_rows", spy)
    return sizes


def _folder(root: Path, n: int = 5) -> Path:
    """Images of different sizes, so the batch mixes vision grids and prompt lengths."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        side = (40, 64, 96, 52, 80)[i % 5]
        Image.fromarray(rng.integers(0, 255, (side, side + 8 * i), dtype=np.uint8)).save(root / f"im{i}.png")
    return root


def _local(model: Path, batch: int) -> list[str]:
    return ["--backend", "transformers", "--model", str(model), "--device", "cpu", "--max-image-tokens",
            "64", "--max-new-tokens", "16", "--batch-size", str(batch)]  # fmt: skip


def _records(path: Path) -> dict[str, str]:
    return {r["source"]: r["raw_text"] for r in map(json.loads, path.read_text().splitlines())}


def test_analyze_batch_size_batches_and_answers_the_same(tiny_vlm_dir, tmp_path, batches):
    folder = _folder(tmp_path / "in")
    assert main(["analyze", str(folder), "--task", "fracture", "--out", str(tmp_path / "one.jsonl"),
                 *_local(tiny_vlm_dir, 1)]) == 0  # fmt: skip
    assert set(batches) == {1}
    batches.clear()
    assert main(["analyze", str(folder), "--task", "fracture", "--out", str(tmp_path / "four.jsonl"),
                 *_local(tiny_vlm_dir, 4)]) == 0  # fmt: skip
    assert max(batches) > 1
    assert sum(batches) == 5
    one, four = _records(tmp_path / "one.jsonl"), _records(tmp_path / "four.jsonl")
    assert len(one) == 5
    assert one == four


def test_autolabel_batch_size_batches_and_stores_the_same(tiny_vlm_dir, tmp_path, batches):
    folder = _folder(tmp_path / "in")
    stored = {}
    for size in (1, 3):
        root = tmp_path / f"ds{size}"
        assert main(["dataset", "create", str(root)]) == 0
        assert main(["dataset", "autolabel", str(root), str(folder), "--task", "fracture",
                     *_local(tiny_vlm_dir, size)]) == 0  # fmt: skip
        with Dataset.open(root) as ds:
            stored[size] = {i.image.original_name: i.review.raw_text for i in ds.iter_items()}
    assert len(stored[1]) == 5
    assert stored[1] == stored[3]
    assert max(batches) > 1


def test_eval_batch_size_batches_and_scores_the_same(tiny_vlm_dir, tmp_path, batches):
    from napari_fracto.evaluation import runner
    from napari_fracto.evaluation.compare import make_config

    ds = Dataset.create(tmp_path / "ds")
    rng = np.random.default_rng(1)
    for i in range(5):
        image_id = ds.add_image(rng.integers(0, 255, (48 + 8 * i, 48), dtype=np.uint8), task="fracture")
        ds.save_review(image_id, "fracture", [Finding("equiaxed dimples")], reviewer="t")
        ds.set_split([image_id], "test")
    keys = {"kind": "transformers", "model": str(tiny_vlm_dir), "device": "cpu", "max_image_tokens": 64,
            "max_new_tokens": 16}  # fmt: skip
    one = runner.evaluate(ds, [make_config(keys | {"batch_size": 1})], tmp_path / "e1", resamples=0)
    assert set(batches) == {1}
    batches.clear()
    three = runner.evaluate(ds, [make_config(keys | {"batch_size": 3})], tmp_path / "e3", resamples=0)
    ds.close()
    assert max(batches) > 1
    texts = [{p.image_id: p.raw_text for p in run.results[0].predictions} for run in (one, three)]
    assert len(texts[0]) == 5
    assert texts[0] == texts[1]
    assert three.results[0].asked == 5
