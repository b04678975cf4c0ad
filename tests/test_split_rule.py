"""The small-dataset split rule: stratified by label, no split asked for is ever left empty."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from napari_fracto.dataset import Dataset, DatasetError
from napari_fracto.dataset.split import ensure_each_split, split_dataset
from napari_fracto.findings import Finding


def _dataset(root, n: int, labels=("equiaxed dimples", "cleavage facets")) -> Dataset:
    ds = Dataset.create(root)
    rng = np.random.default_rng(n)
    for i in range(n):
        iid = ds.add_image((rng.random((16, 16)) * 255).astype(np.uint8), task="fracture")
        ds.save_review(iid, "fracture", [Finding(labels[i % len(labels)])])
    return ds


def test_six_images_become_four_one_one_not_six_zero_zero(tmp_path):
    with _dataset(tmp_path / "ds", 6) as ds:
        counts = split_dataset(ds)
    assert counts == {"train": 4, "val": 1, "test": 1}


def test_too_few_images_are_refused_and_nothing_is_stored(tmp_path):
    with _dataset(tmp_path / "ds", 2) as ds:
        with pytest.raises(DatasetError, match=r"2 image.*train/val/test"):
            split_dataset(ds)
        assert all(item.image.split is None for item in ds.iter_items())
        # a split nobody asked for may stay empty
        assert split_dataset(ds, fractions=(0.5, 0, 0.5)) == {"train": 1, "val": 0, "test": 1}


def test_large_datasets_keep_their_stratified_split(tmp_path):
    with _dataset(tmp_path / "ds", 40) as ds:
        counts = split_dataset(ds)
        by_label = Counter((item.labels[0], item.image.split) for item in ds.iter_items())
    assert counts == {"train": 32, "val": 4, "test": 4}
    assert by_label[("equiaxed dimples", "test")] == by_label[("cleavage facets", "test")] == 2


def test_the_rule_moves_images_only_from_the_largest_split():
    assert ensure_each_split([0, 0, 0, 0, 0], [0.8, 0.1, 0.1]) == [0, 0, 0, 2, 1]
    assert ensure_each_split([0, 1, 2], [0.8, 0.1, 0.1]) == [0, 1, 2]
    # images already in val and test count: the new ones may all go to train
    assert ensure_each_split([0, 0], [0.8, 0.1, 0.1], existing=[3, 1, 1]) == [0, 0]


def test_the_cli_uses_the_same_rule(tmp_path, capsys):
    from napari_fracto.cli import main

    _dataset(tmp_path / "ds", 6).close()
    assert main(["dataset", "split", str(tmp_path / "ds")]) == 0
    assert "train 4, val 1, test 1" in capsys.readouterr().out
    _dataset(tmp_path / "small", 2).close()
    assert main(["dataset", "split", str(tmp_path / "small")]) != 0
    assert "cannot fill" in capsys.readouterr().err
