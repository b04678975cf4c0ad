"""Datasets from other people (issue 17): imports stay inside their folders, crafted rows are refused."""

from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest
from PIL import Image

from napari_fracto.dataset import Dataset, DatasetError
from napari_fracto.dataset.export import export_csv, export_jsonl
from napari_fracto.dataset.importers import import_class_folders, import_ptychobench
from napari_fracto.dataset.store import DB_NAME
from napari_fracto.dataset.tools import has_errors, validate
from napari_fracto.findings import Finding


def _png(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, size=(16, 24), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _sample(image_path: str) -> dict:
    return {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image", "image_path": image_path}, {"type": "text", "text": "?"}],
            },
            {"role": "assistant", "content": "<answer>[Blurring]</answer>"},
        ]
    }


def test_ptychobench_paths_cannot_reach_outside_their_folders(tmp_path):
    outside = _png(tmp_path / "private" / "secret.png", 1)
    bench = tmp_path / "bench"
    _png(bench / "images" / "ok.png", 2)
    samples = [_sample("../private/secret.png"), _sample(str(outside)), _sample("/data/upload/1/ok.png")]
    (bench / "test.json").parent.mkdir(parents=True, exist_ok=True)
    (bench / "test.json").write_text(json.dumps(samples))
    with Dataset.create(tmp_path / "ds") as ds:
        summary = import_ptychobench(ds, bench / "test.json")
        stored = {ds.image(i.image.image_id).original_name for i in ds.iter_items()}
    assert summary.images == 1  # the Label Studio style absolute path is found by its name in images/
    assert stored == {"ok.png"}
    assert len(summary.skipped) == 2
    assert all("secret.png" in s and "not found" in s for s in summary.skipped)


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_class_folder_import_does_not_follow_symlinks_out(tmp_path):
    secret = _png(tmp_path / "private" / "secret.png", 3)
    root = tmp_path / "classes"
    _png(root / "dimples" / "a.png", 4)
    (root / "dimples" / "link.png").symlink_to(secret)
    with Dataset.create(tmp_path / "ds") as ds:
        summary = import_class_folders(ds, root, task="fracture")
        names = {ds.image(i.image.image_id).original_name for i in ds.iter_items()}
    assert summary.images == 1
    assert names == {"a.png"}
    assert any("leads outside" in s for s in summary.skipped)


@pytest.fixture
def crafted(tmp_path):
    """A dataset whose one image id was rewritten to climb out of the export folder."""
    root = tmp_path / "ds"
    with Dataset.create(root) as ds:
        image_id = ds.add_image(np.full((8, 8), 3, dtype=np.uint8))
        ds.save_review(image_id, "fracture", [Finding("dimples")])
    evil = "../../../escaped"
    with sqlite3.connect(root / DB_NAME) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        for (trigger,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f"DROP TRIGGER {trigger}")  # whoever crafts a file is not bound by our triggers
        conn.execute("UPDATE images SET image_id = ? WHERE image_id = ?", (evil, image_id))
        conn.execute("UPDATE reviews SET image_id = ? WHERE image_id = ?", (evil, image_id))
    conn.close()
    return root


def test_validate_flags_an_image_id_that_is_not_a_hash(crafted):
    with Dataset.open(crafted) as ds:
        problems = validate(ds)
    assert has_errors(problems)
    assert any("not a sha256 content hash" in p.message for p in problems)


def test_export_refuses_a_crafted_dataset_and_writes_nothing_outside(crafted, tmp_path):
    out = tmp_path / "export" / "deep" / "train.jsonl"
    out.parent.mkdir(parents=True)
    with Dataset.open(crafted) as ds:
        for export in (export_jsonl, export_csv):
            with pytest.raises(DatasetError, match="dataset validate"):
                export(ds, out)
        with pytest.raises(DatasetError, match="not a sha256"):
            ds.image_array(next(ds.iter_items()).image.image_id)
    assert not list(tmp_path.rglob("escaped*"))
    assert not out.exists()
