"""In-context example selection by the VLM's own vision-tower features (the tiny random Qwen3-VL)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from napari_fracto import icl, icl_vision
from napari_fracto.dataset import Dataset
from napari_fracto.findings import Finding

SIDE = 64
DIMPLES = '{"labels": [{"label": "equiaxed dimples", "confidence": 0.9}]}'


def blobs(seed: int) -> np.ndarray:
    """Smooth random texture, asymmetric, so its rotations are different arrays."""
    smooth = gaussian_filter(np.random.default_rng(seed).random((SIDE, SIDE)), 4)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def add(ds: Dataset, array: np.ndarray, split: str = "train") -> str:
    image_id = ds.add_image(array, task="fracture")
    ds.save_review(image_id, "fracture", [Finding("equiaxed dimples", 0.9)], reviewer="test")
    ds.set_split([image_id], split)
    return image_id


@pytest.fixture
def dataset(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    yield ds
    ds.close()


@pytest.fixture(scope="module")
def tiny_model(request, tmp_path_factory):
    try:
        return request.getfixturevalue("tiny_vlm_dir")
    except pytest.FixtureLookupError:
        from napari_fracto.testing.tiny_vlm import build_tiny_vlm

        return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"))


@pytest.fixture(scope="module")
def tiny_backend(tiny_model):
    from napari_fracto.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(str(tiny_model), device="cpu", dtype="float32", max_image_tokens=64)
    yield backend
    backend.close()


@pytest.fixture
def embed_calls(monkeypatch):
    """Counts how often the vision tower actually runs."""
    calls: list[int] = []
    real = icl_vision.embed_image

    def counting(model, processor, image):
        calls.append(1)
        return real(model, processor, image)

    monkeypatch.setattr(icl_vision, "embed_image", counting)
    return calls


def test_vectors_are_unit_length_with_the_vision_towers_output_width(tiny_backend, tiny_model):
    features = icl_vision.vision_features(backend=tiny_backend)
    assert features.backend is tiny_backend  # the local analysis model is shared, not loaded twice
    width = json.loads((tiny_model / "config.json").read_text())["vision_config"]["out_hidden_size"]
    first = features(blobs(1))
    assert first.shape == (width,)
    assert first.dtype == np.float32
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(features(blobs(1).copy()), first)  # deterministic
    assert not np.allclose(features(blobs(2)), first)  # and it does look at the image


def test_vision_features_need_a_local_model(tiny_backend):
    from napari_fracto.backends.openai_backend import OpenAIBackend

    server = OpenAIBackend("served", base_url="http://127.0.0.1:9/v1", api_key="x")
    with pytest.raises(ValueError, match="feature model"):
        icl_vision.vision_features(backend=server)
    with pytest.raises(ValueError, match="at least 1"):
        icl_vision.VisionFeatures(tiny_backend, max_image_tokens=0)


def test_cache_names_separate_models_and_resolutions(tiny_backend, tmp_path):
    from napari_fracto.backends.transformers_backend import TransformersBackend

    name = icl_vision.VisionFeatures(tiny_backend).name
    assert name == icl_vision.VisionFeatures(tiny_backend).name
    assert name != icl_vision.VisionFeatures(tiny_backend, max_image_tokens=16).name
    other = TransformersBackend(str(tmp_path / "other-model"), max_image_tokens=64)
    assert name != icl_vision.VisionFeatures(other).name
    assert name != "texture"


def test_selector_caches_vision_vectors_apart_from_texture(dataset, tiny_backend, tmp_path, embed_calls):
    for seed in range(3):
        add(dataset, blobs(seed))
    features = icl_vision.VisionFeatures(tiny_backend)
    cache = icl.FeatureCache(tmp_path / "cache")
    texture = icl.ExampleSelector(dataset, "fracture", cache=cache)
    vision = icl.ExampleSelector(dataset, "fracture", cache=cache, features=features)
    query = blobs(50)
    assert len(texture.select(query, 2)) == 2
    assert embed_calls == []  # texture never runs the model
    assert len(vision.select(query, 2)) == 2
    assert len(embed_calls) == 4  # three candidates and the query, once each
    vision.select(query, 2)
    assert len(embed_calls) == 4  # the second time, all from memory
    # Same images, both kinds, one cache: separate entries with their own vectors and folders.
    image_id = texture.candidates[0].image_id
    as_texture = cache.get(image_id, lambda: None)
    as_vision = cache.get(image_id, lambda: None, features)
    assert as_texture.features.shape != as_vision.features.shape
    folders = sorted(p.name for p in (tmp_path / "cache").glob("*/*") if p.is_dir())
    assert folders == sorted(["texture", features.name])
    # A new session reads the vectors from disk: the model does not run again.
    again = icl.ExampleSelector(
        dataset, "fracture", cache=icl.FeatureCache(tmp_path / "cache"), features=features
    )
    assert [c.image_id for c in again.select(query, 3)] == [c.image_id for c in vision.select(query, 3)]
    assert len(embed_calls) == 4


def test_leakage_guard_holds_with_vision_features(dataset, tiny_backend):
    query = blobs(7)
    copies = {
        add(dataset, query),
        add(dataset, np.rot90(query).copy()),
        add(dataset, np.fliplr(query).copy()),
    }
    others = {add(dataset, blobs(seed)) for seed in (20, 21)}
    selector = icl.ExampleSelector(dataset, "fracture", features=icl_vision.VisionFeatures(tiny_backend))
    chosen = {c.image_id for c in selector.select(query, 5)}
    assert chosen == others
    assert not chosen & copies


# --- the command lines ------------------------------------------------------------------------------------


def test_analyze_cli_puts_k_examples_picked_by_vision_features_in_the_prompt(
    dataset, tiny_model, tmp_path, embed_calls, capsys
):
    import tifffile

    from napari_fracto.cli import main
    from napari_fracto.testing.fake_openai_server import FakeOpenAIServer

    for seed in range(3):
        add(dataset, blobs(seed))
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "query.tif", blobs(99))
    common = ["analyze", str(folder), "--task", "fracture", "--backend", "openai", "--examples-from",
              str(dataset.root), "--shots", "2", "--example-features", "vision"]  # fmt: skip
    with FakeOpenAIServer(answer=DIMPLES) as server:
        base = ["--base-url", server.base_url, "--model", server.script.models[0]]
        assert main([*common, *base]) == 2  # a server has no vision tower to lend
        assert "--feature-model" in capsys.readouterr().err
        assert main([*common, *base, "--feature-model", str(tiny_model)]) == 0
        (request,) = server.chat_requests()
    assert len(request.images()) == 3  # two examples and the query
    assert len(embed_calls) == 4  # the three candidates and the query went through the vision tower


def test_eval_runs_a_vision_configuration_and_keeps_texture_fingerprints(dataset, tiny_model, tmp_path):
    from napari_fracto.evaluation import runner
    from napari_fracto.evaluation.compare import EvalConfig, expand
    from napari_fracto.testing.scripted import ScriptedBackend

    for seed in range(3):
        add(dataset, blobs(seed))
    add(dataset, blobs(40), split="test")
    texture, vision, shared = expand(
        [
            {"name": "texture", "shots": 2},
            {"name": "vision", "shots": 2, "example_features": "vision", "feature_model": str(tiny_model)},
            {"name": "from backend", "shots": 2, "example_features": "vision"},
        ]
    )
    assert texture.fingerprint() == EvalConfig(name="texture", shots=2).fingerprint()
    assert vision.fingerprint() != texture.fingerprint()
    assert EvalConfig(shots=2, select="random", example_features="vision").label.endswith("random")
    backends: list[ScriptedBackend] = []

    def factory(settings):
        backends.append(ScriptedBackend(DIMPLES, model=settings.model))
        return backends[-1]

    run = runner.evaluate(dataset, [texture, vision, shared], tmp_path / "eval", backend_factory=factory)
    by_name = {r.config.label: r for r in run.results}
    assert [len(p.examples) for p in by_name["vision"].predictions] == [2]
    assert by_name["vision"].error == ""
    assert [len(r.turns) for b in backends for r in b.requests] == [6, 6]  # system + 2 x 2 + query
    # A scripted backend is no local model: that configuration stops with a message naming the key.
    assert "feature_model" in by_name["from backend"].error
    assert len(list((tmp_path / "eval" / "cache").glob("*/vision-*/*.npz"))) == 4  # cached for re-runs
