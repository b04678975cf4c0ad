"""Prompts: what the model is told, in-context examples, and the canonical answer text."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from napari_fracto.findings import AnalysisContext, Box, Finding
from napari_fracto.parsing import parse_response
from napari_fracto.prompts import PROMPT_VERSION, Example, build_request, format_answer, response_schema
from napari_fracto.vocabulary import load_vocabulary


@pytest.fixture(autouse=True)
def _no_user_vocabularies(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_FRACTO_VOCAB_DIR", str(tmp_path))


@pytest.fixture
def fracture():
    return load_vocabulary("fracture")


@pytest.fixture
def ptycho():
    return load_vocabulary("ptychography")


@pytest.fixture
def advice():
    return load_vocabulary("ptychography-advice")


def _image(value=0):
    return Image.new("RGB", (8, 8), (value, value, value))


def test_prompt_version_is_a_string_integer():
    assert PROMPT_VERSION.isdigit()


def test_system_turn_lists_every_label_with_its_definition_and_the_grid(fracture):
    request = build_request(fracture, _image())
    system = request.turns[0]
    assert system.role == "system"
    text = system.parts[0]
    for label in fracture.labels:
        assert f"- {label.name}: {label.definition}" in text
    assert "0 to 1000" in text
    assert "bbox_2d" in text
    assert "never combine" not in text  # no exclusive label in this vocabulary


def test_query_is_the_last_user_turn_with_the_image(fracture):
    image = _image()
    request = build_request(fracture, image, max_new_tokens=77)
    assert [t.role for t in request.turns] == ["system", "user"]
    assert request.turns[-1].parts[0] is image
    assert request.images() == [image]
    assert request.max_new_tokens == 77
    assert request.json_schema == response_schema(fracture)


def test_context_is_inserted_only_when_given(fracture):
    with_context = build_request(
        fracture, _image(), context=AnalysisContext(material="Ti-6Al-4V", magnification="2000x")
    )
    query = with_context.turns[-1].parts[1]
    assert "Material: Ti-6Al-4V" in query
    assert "Magnification: 2000x" in query
    assert "Sample type" not in query
    assert "Notes" not in query
    without = build_request(fracture, _image(), context=AnalysisContext()).turns[-1].parts[1]
    assert "Material" not in without
    assert without == build_request(fracture, _image()).turns[-1].parts[1]


def test_examples_come_before_the_query_as_user_assistant_pairs(fracture):
    answer = format_answer([Finding("cleavage facets", 0.9, Box(10, 10, 500, 500))])
    examples = [
        Example(_image(1), answer, AnalysisContext(material="steel")),
        Example(_image(2), '{"labels": []}'),
    ]
    query_image = _image(3)
    request = build_request(fracture, query_image, examples=examples)
    assert [t.role for t in request.turns] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert request.turns[1].parts[0] is examples[0].image
    assert "Material: steel" in request.turns[1].parts[1]
    assert request.turns[2].parts == [answer]
    assert request.turns[4].parts == ['{"labels": []}']
    assert request.images() == [examples[0].image, examples[1].image, query_image]
    # the example's instruction is the same as the query's, so the model sees one consistent task
    assert request.turns[3].parts[1] == request.turns[5].parts[1]


def test_ptychography_prompt_states_exclusivity_and_asks_for_advice(ptycho, advice):
    text = build_request(ptycho, _image(), advice_vocab=advice).turns[0].parts[0]
    assert '"No obvious artifacts" means none of the other labels apply' in text
    assert '"advice"' in text
    assert "- Enable position correction:" in text
    assert '"No changes needed" means no other advice applies' in text
    plain = build_request(ptycho, _image()).turns[0].parts[0]
    assert "Enable position correction" not in plain
    assert '"advice"' not in plain


def test_label_only_prompt_does_not_ask_for_boxes(ptycho):
    request = build_request(ptycho, _image(), localise=False)
    assert "bbox_2d" not in request.turns[0].parts[0]
    assert "bbox_2d" not in json.dumps(request.json_schema)


def test_schema_enumerates_the_vocabulary(ptycho, advice):
    schema = response_schema(ptycho, advice_vocab=advice)
    item = schema["properties"]["labels"]["items"]
    assert item["properties"]["label"]["enum"] == ptycho.names()
    assert item["properties"]["bbox_2d"]["items"]["maximum"] == 1000
    assert schema["properties"]["advice"]["items"]["enum"] == advice.names()
    assert "advice" not in response_schema(ptycho)["properties"]


def test_format_answer_writes_the_canonical_json():
    text = format_answer(
        [Finding("cleavage facets", 0.876, Box(10.4, 19.6, 300.5, 1000.2)), Finding("mist")],
    )
    assert json.loads(text) == {
        "labels": [
            {"label": "cleavage facets", "confidence": 0.88, "bbox_2d": [10, 20, 300, 1000]},
            {"label": "mist"},
        ]
    }
    assert format_answer([]) == '{"labels": []}'


def test_format_answer_with_advice(ptycho, advice):
    text = format_answer([Finding("Phase ramp", 0.7)], advice=["Recenter diffraction patterns"])
    assert json.loads(text)["advice"] == ["Recenter diffraction patterns"]
    result = parse_response(text, ptycho, advice)
    assert result.advice == ("Recenter diffraction patterns",)
    assert result.findings == (Finding("Phase ramp", 0.7),)


def test_format_answer_round_trips_through_the_parser(fracture):
    findings = [
        Finding("cleavage facets", 0.9, Box(10, 20, 300, 400)),
        Finding("river patterns", 0.55, Box(40, 60, 120, 220)),
        Finding("cleavage facets", None, Box(600, 600, 900, 950)),
        Finding("secondary cracks", 0.3),
    ]
    result = parse_response(format_answer(findings), fracture)
    assert result.ok
    assert result.problems == ()
    assert result.unknown_labels == ()
    assert list(result.findings) == findings


def test_empty_answer_instruction_uses_the_exclusive_label_when_there_is_one(fracture, ptycho):
    assert 'answer {"labels": []}' in build_request(fracture, _image()).turns[0].parts[0]
    text = build_request(ptycho, _image()).turns[0].parts[0]
    assert 'give the single label "No obvious artifacts"' in text
    assert '{"labels": []}' not in text
