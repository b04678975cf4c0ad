"""Batches read each file as the viewer does; only probe layers (as the reader marks them) are left out."""

from __future__ import annotations

import json

import numpy as np

from napari_fracto.batch import load_analysis_images, run_batch
from napari_fracto.testing.scripted import ScriptedBackend

ANSWER = json.dumps({"labels": [{"label": "Noisy artifacts", "confidence": 0.7}]})


def _object(side: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.exp(1j * rng.normal(0, 0.5, (side, side))).astype(np.complex64)


def test_an_object_whose_file_name_says_probe_is_analysed(tmp_path):
    """Regression: `e_wrong_probe_fixed_object.npy` was skipped as 'holds no image'."""
    path = tmp_path / "e_wrong_probe_fixed_object.npy"
    obj = _object()
    np.save(path, obj)

    images = load_analysis_images(path)
    assert [name for name, _ in images] == [f"{path} [e_wrong_probe_fixed_object phase]"]
    np.testing.assert_allclose(images[0][1], np.angle(obj))

    backend = ScriptedBackend(ANSWER)
    summary = run_batch([tmp_path], backend=backend, task="ptychography", evidence=False)
    assert summary.failures == []
    assert summary.analysed == 1
    assert summary.results[0].labels == ["Noisy artifacts"]
    assert len(backend.requests) == 1


def test_the_probe_of_a_ptychography_product_is_not_analysed(tmp_path):
    path = tmp_path / "scan.npz"
    np.savez(path, objectGuess=_object(), probeGuess=_object(16))
    names = [name for name, _ in load_analysis_images(path)]
    assert names == [f"{path} [scan phase]"]
    assert [name for name, _ in load_analysis_images(path, part="amplitude")] == [f"{path} [scan amplitude]"]


def test_a_probe_array_inside_a_plain_container_is_not_analysed(tmp_path):
    path = tmp_path / "probe_study.npz"  # 'probe' in the file name too: only the array names decide
    np.savez(path, object=_object(), probe=_object(16))
    names = [name for name, _ in load_analysis_images(path)]
    assert names == [f"{path} [probe_study object phase]"]
