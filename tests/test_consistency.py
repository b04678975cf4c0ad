"""Self-consistency over real HTTP: k samples at a temperature, per-label agreement as the confidence."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from napari_fracto.analysis import analyze_array
from napari_fracto.backends.openai_backend import OpenAIBackend
from napari_fracto.consistency import SelfConsistentBackend
from napari_fracto.testing.fake_openai_server import FakeOpenAIServer
from napari_fracto.vocabulary import load_vocabulary

SAMPLES = [
    '{"labels": [{"label": "equiaxed dimples", "confidence": 0.99, "bbox_2d": [0, 0, 500, 500]}, '
    '{"label": "fatigue striations", "confidence": 0.99}]}',
    '{"labels": [{"label": "equiaxed dimples", "confidence": 0.99}, {"label": "mist", "confidence": 0.99}]}',
    '{"labels": [{"label": "equiaxed dimples"}, {"label": "fatigue striations"}]}',
    "I am not sure what this is.",
    '{"labels": [{"label": "equiaxed dimples"}, {"label": "fatigue striations"}]}',
]


def test_agreement_over_samples_is_the_confidence():
    answers = itertools.cycle(SAMPLES)
    image = (np.random.default_rng(0).random((40, 60)) * 255).astype(np.uint8)
    with FakeOpenAIServer(answer=lambda body: next(answers)) as server:
        inner = OpenAIBackend("fake-model", base_url=server.base_url, retry_backoff=0.01)
        backend = SelfConsistentBackend(inner, load_vocabulary("fracture"), k=5, temperature=0.8)
        result = analyze_array(image, task="fracture", backend=backend)
        sent = server.chat_requests()
    assert len(sent) == 5
    assert {r.body["temperature"] for r in sent} == {0.8}
    confidence = {f.label: f.confidence for f in result.findings}
    assert confidence == {"equiaxed dimples": 0.8, "fatigue striations": 0.6}  # mist (1 in 5) is dropped
    (dimples,) = [f for f in result.findings if f.label == "equiaxed dimples"]
    assert dimples.box is not None  # the first sample's box, mapped onto the pixels
    assert dimples.box.x2 == pytest.approx(30, abs=1)
    assert json.loads(result.raw_text)["labels"][0]["confidence"] == 0.8


def test_bad_settings_are_refused():
    inner = OpenAIBackend("fake-model", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="at least 2 samples"):
        SelfConsistentBackend(inner, load_vocabulary("fracture"), k=1)
    with pytest.raises(ValueError, match="temperature above 0"):
        SelfConsistentBackend(inner, load_vocabulary("fracture"), temperature=0)


def test_eval_configuration_with_samples_is_calibrated_by_agreement(tmp_path):
    """An eval row with samples = 5 asks five times per image; its confidences are the agreement."""
    from napari_fracto.dataset import Dataset
    from napari_fracto.evaluation import runner
    from napari_fracto.evaluation.compare import make_config
    from napari_fracto.findings import Finding

    answers = itertools.cycle(SAMPLES)
    with Dataset.create(tmp_path / "ds") as ds:
        for seed in range(3):
            image = (np.random.default_rng(seed).random((40, 60)) * 255).astype(np.uint8)
            image_id = ds.add_image(image, task="fracture")
            ds.save_review(image_id, "fracture", [Finding("equiaxed dimples", None)], reviewer="t")
            ds.set_split([image_id], "test")
        with FakeOpenAIServer(answer=lambda body: next(answers)) as server:
            entry = {"backend": "openai", "model": "fake-model", "base_url": server.base_url, "samples": 5}
            config = make_config(entry)
            assert "5 samples" in config.label
            assert config.fingerprint() != make_config(entry | {"samples": 1}).fingerprint()
            run = runner.evaluate(ds, [config], tmp_path / "out", resamples=0)
            assert len(server.chat_requests()) == 15
    (result,) = run.results
    assert {p.confidences["equiaxed dimples"] for p in result.predictions} == {0.8}
    assert result.calibration.n_claims == 6  # dimples (0.8) and striations (0.6) on each of 3 images
