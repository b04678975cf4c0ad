"""The probe backend: learns from reviewed train images, retrains as reviews are saved, answers like a VLM."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

pytest.importorskip("sklearn")

from napari_fracto.analysis import analyze_array
from napari_fracto.backends.factory import make_backend
from napari_fracto.backends.probe import NOTICE, ProbeError, ProbeModel
from napari_fracto.dataset import Dataset
from napari_fracto.findings import Finding
from napari_fracto.metrics import ImageOutcome, score
from napari_fracto.settings import BackendSettings
from napari_fracto.testing.labelled_cases import ptycho_crops
from napari_fracto.vocabulary import load_vocabulary


def blobs(seed: int) -> np.ndarray:
    smooth = gaussian_filter(np.random.default_rng(seed).random((64, 64)), 4)
    return ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)


def stripes(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    row = 127 + 120 * np.sin(2 * np.pi * np.arange(64) / 6 + rng.random() * 6)
    return np.clip(np.tile(row, (64, 1)) + rng.normal(0, 5, (64, 64)), 0, 255).astype(np.uint8)


def speckle(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((64, 64)) * 255).astype(np.uint8)


def review(ds: Dataset, array: np.ndarray, labels: list[str], split: str = "train") -> str:
    image_id = ds.add_image(array, task="fracture")
    ds.save_review(image_id, "fracture", [Finding(label, None) for label in labels], reviewer="test")
    ds.set_split([image_id], split)
    return image_id


def test_probe_learns_separable_synthetic_features():
    vocab = load_vocabulary("fracture")
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (30, 5)), rng.normal(4, 1, (30, 5))])
    targets = [{"equiaxed dimples"}] * 30 + [{"fatigue striations", "beach marks"}] * 30
    model = ProbeModel.fit(X, targets, vocab)
    test = np.vstack([rng.normal(0, 1, (10, 5)), rng.normal(4, 1, (10, 5))])
    predicted = model.predict_sets(test)
    assert predicted[:10] == [{"equiaxed dimples"}] * 10
    assert predicted[10:] == [{"fatigue striations", "beach marks"}] * 10


def test_probe_refuses_to_train_on_too_little():
    with pytest.raises(ProbeError, match="at least 2 reviewed"):
        ProbeModel.fit(np.zeros((1, 3)), [{"mist"}], load_vocabulary("fracture"))


def test_probe_backend_answers_analyze_and_retrains_when_reviews_are_saved(tmp_path):
    path = tmp_path / "ds"
    with Dataset.create(path) as ds:
        for seed in range(6):
            review(ds, blobs(seed), ["equiaxed dimples"])
            review(ds, stripes(seed), ["fatigue striations"])
    backend = make_backend(BackendSettings(kind="probe", model=str(path)))
    backend.recheck_s = 0.0
    try:
        result = analyze_array(blobs(100), task="fracture", backend=backend)
        assert result.labels == ["equiaxed dimples"]
        assert result.findings[0].box is None
        assert 0.5 <= result.findings[0].confidence <= 1
        assert NOTICE in result.problems  # it says it gives image-level labels only
        assert result.request.backend.kind == "probe"
        assert analyze_array(stripes(100), task="fracture", backend=backend).labels == ["fatigue striations"]
        assert "secondary cracks" not in analyze_array(speckle(100), task="fracture", backend=backend).labels

        with Dataset.open(path) as ds:  # the reviewer teaches it a third texture
            for seed in range(6):
                review(ds, speckle(seed), ["secondary cracks"])
        assert analyze_array(speckle(100), task="fracture", backend=backend).labels == ["secondary cracks"]
    finally:
        backend.close()


def test_probe_backend_says_what_to_do_without_reviews(tmp_path):
    Dataset.create(tmp_path / "empty").close()
    backend = make_backend(BackendSettings(kind="probe", model=str(tmp_path / "empty")))
    with pytest.raises(ProbeError, match="no reviewed images"):
        analyze_array(blobs(1), task="fracture", backend=backend)
    backend.close()


def test_probe_learns_the_shipped_ptychography_cases(tmp_path):
    """Trained on crops of the Pty-chi cases, it labels unseen crops of them well (micro-F1 >= 0.8)."""
    vocab = load_vocabulary("ptychography")
    path = tmp_path / "ds"
    with Dataset.create(path) as ds:
        for case in ptycho_crops(48, seed=1):
            image_id = ds.add_image(case.array, task="ptychography")
            ds.save_review(image_id, "ptychography", [Finding(x, None) for x in case.labels], reviewer="t")
            ds.set_split([image_id], "train")
    backend = make_backend(BackendSettings(kind="probe", model=str(path)))
    try:
        outcomes = [
            ImageOutcome.make(
                analyze_array(c.array, task=vocab, backend=backend, evidence=False).labels, c.labels
            )
            for c in ptycho_crops(24, seed=2)
        ]
    finally:
        backend.close()
    scores = score(outcomes, vocab.names(), exclusive=vocab.exclusive_labels, resamples=0)
    assert scores.micro_f1 >= 0.8
