"""In-context examples: selection from the train split, the leakage guard, and what reaches the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from napari_fracto import icl
from napari_fracto.analysis import analyze_array
from napari_fracto.dataset import Dataset
from napari_fracto.findings import AnalysisContext, Box, Finding
from napari_fracto.prompts import build_request
from napari_fracto.vocabulary import load_vocabulary

SIDE = 64


def blobs(seed: int) -> np.ndarray:
    """Smooth random texture: asymmetric, so its rotations and flips are different arrays."""
    noise = np.random.default_rng(seed).random((SIDE, SIDE))
    smooth = gaussian_filter(noise, 4)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def stripes(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.arange(SIDE)
    row = 127 + 120 * np.sin(2 * np.pi * x / 6 + rng.random() * 6)
    image = np.tile(row, (SIDE, 1)) + rng.normal(0, 5, (SIDE, SIDE))
    return np.clip(image, 0, 255).astype(np.uint8)


def add(ds: Dataset, array: np.ndarray, label: str, split: str, **context: str) -> str:
    image_id = ds.add_image(array, task="fracture")
    box = Finding(label, 0.9, Box(0, 0, array.shape[1] / 2, array.shape[0]))
    ds.save_review(image_id, "fracture", [box], context=AnalysisContext(**context), reviewer="test")
    ds.set_split([image_id], split)
    return image_id


@pytest.fixture
def dataset(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    yield ds
    ds.close()


def test_rotated_or_flipped_copies_of_the_query_are_never_chosen(dataset):
    query = blobs(1)
    copies = {
        add(dataset, query, "equiaxed dimples", "train"),
        add(dataset, np.rot90(query).copy(), "equiaxed dimples", "train"),
        add(dataset, np.flipud(np.rot90(query, 3)).copy(), "equiaxed dimples", "train"),
        add(dataset, query[::2, ::2].copy(), "equiaxed dimples", "train"),  # a half-size copy
    }
    others = {add(dataset, blobs(seed), "equiaxed dimples", "train") for seed in range(10, 14)}
    selector = icl.ExampleSelector(dataset, "fracture")
    similar = {c.image_id for c in selector.select(query, 8, method="similar")}
    assert similar == others
    for seed in range(10):
        chosen = {c.image_id for c in selector.select(query, 3, method="random", seed=seed)}
        assert len(chosen) == 3
        assert not chosen & copies


def test_similar_prefers_matching_texture_then_matching_metadata(dataset):
    striped = add(dataset, stripes(1), "river patterns", "train", material="steel")
    blob_steel = add(dataset, blobs(2), "equiaxed dimples", "train", material="steel")
    blob_alu = add(dataset, blobs(3), "equiaxed dimples", "train", material="aluminium")
    add(dataset, stripes(4), "river patterns", "test")  # other splits are never examples
    selector = icl.ExampleSelector(dataset, "fracture")
    assert len(selector.candidates) == 3
    assert selector.select(stripes(5), 1)[0].image_id == striped
    steel = AnalysisContext(material="Steel ")
    ranked = [c.image_id for c in selector.select(blobs(6), 3, context=steel)]
    assert ranked.index(blob_steel) < ranked.index(blob_alu)
    alu = [c.image_id for c in selector.select(blobs(6), 3, context=AnalysisContext(material="aluminium"))]
    assert alu.index(blob_alu) < alu.index(blob_steel)


def test_random_selection_is_reproducible_and_seeded(dataset):
    for seed in range(8):
        add(dataset, blobs(100 + seed), "equiaxed dimples", "train")
    selector = icl.ExampleSelector(dataset, "fracture")
    query = blobs(999)
    first = [c.image_id for c in selector.select(query, 4, method="random", seed=3)]
    again = [c.image_id for c in selector.select(query, 4, method="random", seed=3)]
    orders = {tuple(c.image_id for c in selector.select(query, 4, method="random", seed=s)) for s in range(6)}
    assert first == again
    assert len(orders) > 1


def test_bad_requests_are_clear(dataset):
    add(dataset, blobs(1), "equiaxed dimples", "train")
    selector = icl.ExampleSelector(dataset, "fracture")
    with pytest.raises(ValueError, match="similar, random"):
        selector.select(blobs(2), 1, method="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0 or more"):
        selector.select(blobs(2), -1)
    assert selector.select(blobs(2), 0) == []
    empty = icl.ExampleSelector(dataset, "ptychography")
    assert empty.select(blobs(2), 3) == []


def test_examples_carry_the_grid_answer_and_optional_context(dataset):
    add(dataset, blobs(1), "equiaxed dimples", "train", material="steel")
    selector = icl.ExampleSelector(dataset, "fracture")
    chosen = selector.select(blobs(2), 1)
    (example,) = selector.examples(chosen, max_image_tokens=16)
    answer = json.loads(example.answer_text)
    # The stored box covers the left half in pixels: [0, 0, 500, 1000] on the 0-1000 grid.
    assert answer == {
        "labels": [{"label": "equiaxed dimples", "confidence": 0.9, "bbox_2d": [0, 0, 500, 1000]}]
    }
    assert example.context.material == "steel"
    assert example.image.size[0] % 32 == 0
    (bare,) = selector.examples(chosen, with_context=False, max_image_tokens=16)
    assert bare.context is None


def test_features_are_cached_on_disk_per_image(dataset, tmp_path, monkeypatch):
    add(dataset, blobs(1), "equiaxed dimples", "train")
    icl.ExampleSelector(dataset, "fracture", cache=icl.FeatureCache(tmp_path / "cache")).select(blobs(2), 1)
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 2  # the candidate and the query

    def fail(array):
        raise AssertionError("features were recomputed despite the cache")

    monkeypatch.setattr(icl, "describe", fail)
    again = icl.ExampleSelector(dataset, "fracture", cache=icl.FeatureCache(tmp_path / "cache"))
    assert len(again.select(blobs(2), 1)) == 1


# --- what reaches the model ----------------------------------------------------------------------------


def _examples(dataset, k: int):
    for seed in range(k):
        add(dataset, blobs(seed), "equiaxed dimples", "train", material="steel")
    selector = icl.ExampleSelector(dataset, "fracture")
    return selector.examples(selector.select(blobs(50), k), max_image_tokens=16)


def test_k_examples_reach_an_openai_compatible_server_as_images(dataset):
    from napari_fracto.backends.openai_backend import OpenAIBackend
    from napari_fracto.testing.fake_openai_server import FakeOpenAIServer

    examples = _examples(dataset, 3)
    with FakeOpenAIServer(answer='{"labels": [{"label": "equiaxed dimples"}]}') as server:
        backend = OpenAIBackend("fake-model", base_url=server.base_url, api_key="x")
        result = analyze_array(blobs(50), task="fracture", backend=backend, examples=examples)
        (sent,) = server.chat_requests()
    assert result.labels == ["equiaxed dimples"]
    roles = [m["role"] for m in sent.body["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert len(sent.image_urls()) == 4
    assert all(url.startswith("data:image/png;base64,") for url in sent.image_urls())
    assistant = [m["content"] for m in sent.body["messages"] if m["role"] == "assistant"]
    assert assistant == [e.answer_text for e in examples]


@pytest.fixture(scope="module")
def tiny_model(request, tmp_path_factory):
    try:
        return request.getfixturevalue("tiny_vlm_dir")
    except pytest.FixtureLookupError:
        from napari_fracto.testing.tiny_vlm import build_tiny_vlm

        return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"))


def test_k_examples_become_k_plus_one_images_in_the_local_prompt(dataset, tiny_model):
    from napari_fracto.backends.transformers_backend import TransformersBackend, to_chat_messages
    from napari_fracto.imaging import prepare_model_image

    k = 2
    examples = _examples(dataset, k)
    query = prepare_model_image(blobs(50), 16)
    request = build_request(load_vocabulary("fracture"), query, examples=examples, max_new_tokens=4)
    assert [t.role for t in request.turns] == ["system", "user", "assistant", "user", "assistant", "user"]
    backend = TransformersBackend(str(tiny_model), device="cpu", dtype="float32")
    try:
        backend.load()
        messages, images = to_chat_messages(request)
        text = backend.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert text.count("<|vision_start|>") == k + 1
        assert text.count("<|im_start|>assistant") == k + 1  # k answers, then the generation prompt
        assert all(f"<|im_start|>assistant\n{e.answer_text}<|im_end|>" in text for e in examples)
        inputs = backend.processor(text=[text], images=images, return_tensors="np")
        image_token = backend.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        reply = backend.generate(request)
    finally:
        backend.close()
    is_image = np.asarray(inputs["input_ids"][0]) == image_token
    runs = int(np.count_nonzero(is_image[1:] & ~is_image[:-1]) + is_image[0])
    assert len(images) == k + 1
    assert len(inputs["image_grid_thw"]) == k + 1
    assert runs == k + 1  # each image's tokens form one block, in its own turn
    assert reply.extra["image_tokens"] == int(is_image.sum())


def test_example_chooser_gives_k_examples_and_clear_errors(dataset, tmp_path):
    for seed in range(4):
        add(dataset, blobs(seed), "equiaxed dimples", "train")
    add(dataset, blobs(9), "equiaxed dimples", "test")
    assert icl.example_chooser(dataset.root, "fracture", 0) is None
    with icl.example_chooser(dataset.root, "fracture", 2, "random") as choose:
        examples = choose(blobs(20))
    assert len(examples) == 2
    assert all('"equiaxed dimples"' in e.answer_text for e in examples)
    with pytest.raises(ValueError, match="no reviewed 'ptychography' images in its train split"):
        icl.example_chooser(dataset.root, "ptychography", 2)
    with pytest.raises(ValueError, match="no dataset at"):
        icl.example_chooser(tmp_path / "nowhere", "fracture", 2)
    with pytest.raises(ValueError, match="need a corrections dataset folder"):
        icl.example_chooser("", "fracture", 2)
    with pytest.raises(ValueError, match="unknown example selection"):
        icl.example_chooser(dataset.root, "fracture", 2, "nearest")
