"""Calibration in eval (ECE, reliability plot) and the probe as an eval row beside the VLMs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from napari_fracto.backends.factory import make_backend
from napari_fracto.dataset import Dataset
from napari_fracto.evaluation import runner
from napari_fracto.evaluation.calibration import calibration
from napari_fracto.evaluation.compare import make_config
from napari_fracto.evaluation.report import markdown_table, write_reports
from napari_fracto.findings import Finding
from napari_fracto.testing.scripted import ScriptedBackend


def test_ece_of_a_calibrated_and_an_overconfident_model():
    rng = np.random.default_rng(0)
    conf = rng.random(20_000)
    calibrated = calibration((c, rng.random() < c) for c in conf)
    assert calibrated.ece < 0.02
    overconfident = calibration((0.9, k % 2 == 0) for k in range(1000))  # says 0.9, right half the time
    assert overconfident.ece == pytest.approx(0.4)
    assert [(b.n, b.accuracy) for b in overconfident.bins] == [(1000, 0.5)]
    assert calibration([]) is None


def blobs(seed: int) -> np.ndarray:
    smooth = gaussian_filter(np.random.default_rng(seed).random((64, 64)), 4)
    return ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)


def stripes(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    row = 127 + 120 * np.sin(2 * np.pi * np.arange(64) / 6 + rng.random() * 6)
    return np.clip(np.tile(row, (64, 1)) + rng.normal(0, 5, (64, 64)), 0, 255).astype(np.uint8)


@pytest.fixture
def dataset(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    for seed in range(8):
        for make, label in ((blobs, "equiaxed dimples"), (stripes, "fatigue striations")):
            image_id = ds.add_image(make(seed), task="fracture")
            ds.save_review(image_id, "fracture", [Finding(label, None)], reviewer="t")
            ds.set_split([image_id], "train" if seed < 6 else "test")
    yield ds
    ds.close()


def factory(settings):
    """The VLM always says dimples at 0.9 (right half the time); the probe row is the real probe."""
    if settings.kind == "probe":
        return make_backend(settings)
    return ScriptedBackend('{"labels": [{"label": "equiaxed dimples", "confidence": 0.9}]}')


def test_eval_has_a_probe_row_and_calibration_of_each_row(dataset, tmp_path):
    pytest.importorskip("sklearn")
    configs = [
        make_config({"name": "vlm", "backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}),
        make_config({"name": "probe", "backend": "probe"}),
    ]
    run = runner.evaluate(dataset, configs, tmp_path / "out", backend_factory=factory, resamples=0)
    vlm, probe = run.results
    assert vlm.scores.micro_f1 == pytest.approx(0.5)
    assert vlm.calibration.ece == pytest.approx(0.4)
    assert probe.scores.micro_f1 == 1.0  # learnt from the train split, scored on the test split
    assert probe.calibration is not None
    assert probe.calibration.ece < vlm.calibration.ece
    paths = write_reports(run, tmp_path / "out")
    assert paths["reliability"].stat().st_size > 1000
    table = markdown_table(run)
    assert "| ECE |" in table
    assert "0.400" in table
    saved = json.loads(paths["json"].read_text())
    assert saved["results"][0]["calibration"]["ece"] == pytest.approx(0.4)


def test_new_train_reviews_make_the_probe_a_new_configuration(dataset, tmp_path):
    pytest.importorskip("sklearn")
    config = make_config({"backend": "probe", "model": str(dataset.root)})
    before = config.fingerprint()
    image_id = dataset.add_image(blobs(99), task="fracture")
    dataset.save_review(image_id, "fracture", [Finding("equiaxed dimples", None)], reviewer="t")
    assert config.fingerprint() == before  # not in the train split: nothing the probe learns from
    dataset.set_split([image_id], "train")
    assert config.fingerprint() != before
