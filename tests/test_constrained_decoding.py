"""Grammar-constrained decoding (issue 17): under the schema even the random tiny model answers valid,
in-vocabulary JSON; off, it answers noise. Needs the optional `constrained` extra (xgrammar)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_fracto import parsing, prompts
from napari_fracto.backends.constrained import MAX_LABELS, bounded_schema
from napari_fracto.backends.transformers_backend import TransformersBackend
from napari_fracto.vocabulary import load_vocabulary

VOCAB = load_vocabulary("fracture")


def test_every_array_of_the_schema_gets_a_bound_so_decoding_can_end():
    schema = bounded_schema(prompts.response_schema(VOCAB))
    assert schema["properties"]["labels"]["maxItems"] == MAX_LABELS
    box = schema["properties"]["labels"]["items"]["properties"]["bbox_2d"]
    assert box["maxItems"] == 4  # an existing bound is kept


def _request(max_new_tokens: int):
    pixels = np.random.default_rng(3).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    request = prompts.build_request(VOCAB, Image.fromarray(pixels), max_new_tokens=max_new_tokens)
    request.json_schema = prompts.response_schema(VOCAB)
    return request


def test_constrained_tiny_model_answers_valid_json_in_the_vocabulary(tiny_vlm_dir):
    pytest.importorskip("xgrammar")
    backend = TransformersBackend(str(tiny_vlm_dir), max_image_tokens=64, device="cpu")
    reply = backend.generate(_request(1024))
    assert reply.extra["constrained"] is True
    answer = json.loads(reply.text)
    assert all(item["label"] in VOCAB.names() for item in answer["labels"])
    result = parsing.parse_response(reply.text, VOCAB)
    assert result.ok
    # the schema cannot order a box's corners: a random model may reverse them, which the parser fixes
    assert all("corners reversed" in p for p in result.problems), result.problems


def test_the_off_switch_gives_unconstrained_noise(tiny_vlm_dir):
    backend = TransformersBackend(str(tiny_vlm_dir), max_image_tokens=64, device="cpu", constrained=False)
    reply = backend.generate(_request(64))
    assert reply.extra["constrained"] is False
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.text)
