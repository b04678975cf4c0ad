"""One analysis record: what Analyze asked travels whole through every store and is what training asks."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_fracto.analysis import analyze_array
from napari_fracto.batch import analysis_inputs
from napari_fracto.cli import main
from napari_fracto.dataset import Dataset
from napari_fracto.dataset import store as store_mod
from napari_fracto.findings import AnalysisContext, AnalysisResult, Box, Finding
from napari_fracto.io.writers import findings_table
from napari_fracto.overlay import findings_to_shapes
from napari_fracto.ptycho.display import DisplayOptions
from napari_fracto.request import (
    AnalysisRequest,
    BackendRef,
    Crop,
    ExampleRef,
    Geometry,
    RequestError,
    from_legacy,
    public_url,
)
from napari_fracto.review.sources import collect_findings_file, findings_file_record
from napari_fracto.testing.scripted import ScriptedBackend
from napari_fracto.training import data
from napari_fracto.vocabulary import load_vocabulary

ANSWER = json.dumps(
    {"labels": [{"label": "Grid artifacts", "confidence": 0.7, "bbox_2d": [100, 100, 400, 300]}]}
)
PRODUCT = "ptychography/ptychi-sim/g_raster_grid_product.h5"

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
contexts = st.builds(AnalysisContext, material=text, sample_type=text, magnification=text, notes=text)
requests = st.builds(
    AnalysisRequest,
    task=st.sampled_from(["fracture", "ptychography"]),
    source=text,
    image_id=st.text("0123456789abcdef", max_size=64),
    plane=st.lists(st.integers(0, 9), max_size=2).map(tuple),
    complex_part=st.sampled_from(["phase", "amplitude"]),
    display=st.none()
    | st.builds(DisplayOptions, ramp=st.booleans(), unwrap=st.booleans(), crop=st.booleans()),
    crop=st.none()
    | st.builds(Crop, st.integers(0, 10), st.integers(11, 99), st.integers(0, 10), st.integers(11, 99)),
    geometry=st.builds(
        Geometry,
        probe_shape=st.none() | st.tuples(st.integers(1, 99), st.integers(1, 99)),
        scan_step_px=st.none() | st.floats(0.5, 50),
        n_positions=st.integers(0, 10_000),
    ),
    tiles=st.integers(1, 4),
    max_image_tokens=st.integers(16, 4096),
    max_new_tokens=st.integers(8, 2048),
    context=contexts,
    recon_settings=text,
    advice=st.booleans(),
    examples=st.lists(
        st.builds(
            ExampleRef, st.text("0123456789abcdef", min_size=1, max_size=8), text, st.none() | contexts
        ),
        max_size=3,
    ).map(tuple),
    backend=st.builds(BackendRef, kind=text, model=text, adapter=st.none() | text, base_url=st.just("")),
    prompt_version=text,
    vocabulary_version=text,
)


_LABEL = {"ptychography": "Grid artifacts", "fracture": "cleavage facets"}


def _result(request: AnalysisRequest) -> AnalysisResult:
    return AnalysisResult(
        task=request.task,
        findings=[
            Finding(
                "Grid artifacts" if request.task == "ptychography" else "cleavage facets",
                0.5,
                Box(1, 2, 8, 9),
            )
        ],
        raw_text="{}",
        backend=request.backend.kind,
        model=request.backend.model,
        adapter=request.backend.adapter,
        prompt_version=request.prompt_version,
        vocabulary_version=request.vocabulary_version,
        seconds=0.1,
        image_shape=(16, 16),
        source=request.source,
        context=request.context,
        preprocessing="cropped to the scanned region",
        evidence={"flags": ["Grid artifacts"], "grid_period_px": 10.0},
        request=request,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests)
def test_a_request_survives_json_jsonl_layer_and_writer_whole(request):
    assert AnalysisRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request
    result = _result(request)
    line = json.dumps(result.to_record())  # one line of `analyze --out results.jsonl`
    assert AnalysisResult.from_record(json.loads(line)).request == request
    overlay = findings_to_shapes(result, load_vocabulary(request.task))  # the findings layer's metadata
    assert AnalysisResult.from_record(overlay.metadata["napari_fracto"]).request == request
    doc = findings_table(overlay.data, {"name": "findings", "metadata": overlay.metadata, "features": None})
    back = findings_file_record(json.loads(json.dumps(doc)))  # File > Save's JSON, read back
    assert AnalysisResult.from_record(back).request == request
    assert AnalysisResult.from_record(back).evidence == result.evidence


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests)
def test_a_request_survives_the_dataset_and_a_saved_review_keeps_the_prediction_whole(
    tmp_path_factory, request
):
    root = tmp_path_factory.mktemp("ds")
    with Dataset.create(root / "ds") as ds:
        image_id = ds.add_image(np.arange(256, dtype=np.float32).reshape(16, 16))
        ds.save_prediction(image_id, _result(request))
        stored = ds.latest_review(image_id)
        assert stored.request == request.with_changes(image_id=image_id)
        # a review saved from the stored prediction loses nothing of it (the v2 data-loss bug)
        prediction = stored.prediction()
        ds.save_review(image_id, request.task, prediction.findings, prediction=prediction)
    with Dataset.open(root / "ds") as ds:
        reviewed = ds.latest_review(image_id)
        assert reviewed.request == request.with_changes(image_id=image_id)
        assert reviewed.preprocessing == "cropped to the scanned region"
        assert reviewed.evidence["grid_period_px"] == 10.0


def test_a_newer_or_broken_request_is_refused_with_what_to_do():
    with pytest.raises(RequestError, match="upgrade napari-fracto"):
        AnalysisRequest.from_dict({"task": "fracture", "version": 99})
    with pytest.raises(RequestError, match="tiles"):
        AnalysisRequest.from_dict({"task": "fracture", "tiles": 0})
    with pytest.raises(RequestError, match="unreadable"):
        AnalysisRequest.from_dict({"task": "fracture", "crop": {"r0": "x"}})


def test_keys_and_queries_never_reach_the_record():
    assert (
        public_url("https://user:sk-secret@api.example.org:8443/v1?key=abc#x")
        == "https://api.example.org:8443/v1"
    )


def test_v2_rows_gain_the_structured_request_their_text_stood_for(tmp_path):
    root = tmp_path / "v2"
    root.mkdir()
    conn = sqlite3.connect(root / "dataset.sqlite")
    conn.row_factory = sqlite3.Row
    store_mod._create_v1(conn)
    store_mod._migrate_1_to_2(conn)
    for version in (1, 2):
        conn.execute("INSERT INTO schema_version VALUES (?, '0.1.0', '2025-06-01T00:00:00+00:00', '0.1.0')",
                     (version,))  # fmt: skip
    conn.execute("INSERT INTO meta VALUES ('name', 'v2 set')")
    conn.execute(
        "INSERT INTO images (image_id, kind, suffix, shape, dtype, height, width, added_at)"
        " VALUES ('abc', 'npy', '.npy', '[64, 64]', 'complex64', 64, 64, '2025-06-01T00:00:00+00:00')"
    )
    preprocessing = (
        "cropped to the scanned region; phase ramp removed (plane fit over the scanned region). Done: "
        "cropped to rows 4:60, columns 8:56; phase ramp removed (0.0100 rad/px along rows, 0.0 along columns)"
    )
    conn.execute(
        "INSERT INTO reviews (image_id, task, status, corrected, created_at, preprocessing, evidence, model)"
        " VALUES ('abc', 'ptychography', 'unreviewed', '[]', '2025-06-01T00:00:01+00:00', ?, ?, 'm')",
        (preprocessing, json.dumps({"reconstruction_settings": "ePIE, 200 iterations", "scan_step_px": 10})),
    )
    conn.commit()
    conn.close()
    with Dataset.open(root) as ds:
        assert ds.schema_version == store_mod.SCHEMA_VERSION
        request = ds.latest_review("abc").request
        assert request.display == DisplayOptions(ramp=True, unwrap=False, crop=True)
        assert request.crop == Crop(4, 60, 8, 56)
        assert request.recon_settings == "ePIE, 200 iterations"
        assert request.geometry.scan_step_px == 10
        assert request.image_id == "abc"
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            ds._conn.execute("UPDATE reviews SET notes = 'x'")


def test_legacy_records_without_display_text_ask_for_the_image_as_stored():
    request = from_legacy(task="fracture", preprocessing="")
    assert request.display is None
    assert request.crop is None


def _query_pixels(vlm_request) -> np.ndarray:
    return np.asarray(vlm_request.turns[-1].parts[0])


def _texts(vlm_request) -> list[str]:
    return [p for t in vlm_request.turns for p in t.parts if isinstance(p, str)]


def test_the_training_chat_is_the_chat_analyze_sent_text_and_pixels(shared_data, tmp_path):
    """A ptychography product with ramp removal, cropping, advice and reconstruction settings."""
    (item,) = analysis_inputs(shared_data / PRODUCT)
    backend = ScriptedBackend(ANSWER)
    result = analyze_array(
        item.array,
        task="ptychography",
        backend=backend,
        geometry=item.geometry,
        display=DisplayOptions(ramp=True, unwrap=False, crop=True),
        advice=True,
        recon_settings="ePIE, 300 iterations, 1 probe mode",
        context=AnalysisContext(sample_type="Integrated circuits"),
        max_image_tokens=256,
        source=item.source,
    )
    (sent,) = backend.requests
    assert result.request.crop is not None  # the crop was measured from the positions and frozen
    with Dataset.create(tmp_path / "ds") as ds:
        image_id = ds.add_image(item.array, task="ptychography")
        ds.save_prediction(image_id, result)
        prediction = ds.latest_review(image_id).prediction()
        ds.save_review(image_id, "ptychography", prediction.findings, prediction=prediction,
                       advice=["Enable position correction"])  # fmt: skip
        ds.set_split([image_id], "train")
        (example,) = data.build_examples(ds, "ptychography", "train", rotate=False, oversample=False,
                                         guard_leaks=False)  # fmt: skip
        shown = data.ExampleImages(ds, [example])[0]
    trained_texts = [p["text"] for m in example.messages[:-1] for p in m["content"] if p["type"] == "text"]
    assert trained_texts == _texts(sent)
    assert "ePIE, 300 iterations" in " ".join(trained_texts)
    assert np.array_equal(np.asarray(shown["image"]), _query_pixels(sent))
    # the answer trains the box the reviewer kept, on the grid of the image the model was shown
    answer = json.loads(example.answer)
    assert answer["labels"][0]["label"] == "Grid artifacts"
    assert answer["labels"][0]["bbox_2d"] == pytest.approx([100, 100, 400, 300], abs=2)


def test_training_shows_tiles_and_in_context_examples_as_analyze_did(tmp_path):
    rng = np.random.default_rng(3)
    with Dataset.create(tmp_path / "ds") as ds:
        example_id = ds.add_image((rng.random((96, 96)) * 255).astype(np.uint8), task="fracture")
        ds.save_review(example_id, "fracture", [Finding("cleavage facets")])
        ds.set_split([example_id], "train")
        from napari_fracto.icl import ExampleSelector

        selector = ExampleSelector(ds, "fracture")
        query = (rng.random((128, 256)) * 255).astype(np.uint8)
        backend = ScriptedBackend(json.dumps({"labels": [{"label": "river patterns"}]}))

        def choose(plane):
            chosen = selector.select(plane, 1)
            return selector.examples(chosen, max_image_tokens=64)

        result = analyze_array(query, task="fracture", backend=backend, tiles=2, max_image_tokens=64,
                               examples=choose)  # fmt: skip
        assert [e.image_id for e in result.request.examples] == [example_id]
        query_id = ds.add_image(query, task="fracture")
        ds.save_prediction(query_id, result)
        prediction = ds.latest_review(query_id).prediction()
        ds.save_review(query_id, "fracture", prediction.findings, prediction=prediction)
        ds.set_split([query_id], "val")
        examples = data.build_examples(ds, "fracture", "val", guard_leaks=False)
        assert len(examples) == len(backend.requests) == 2  # one per tile, as asked
        for example, sent in zip(examples, backend.requests, strict=True):
            rendered = data.ExampleImages(ds, [example])[0]
            assert len(rendered["images"]) == 2  # the in-context example's image, then the tile
            sent_images = [np.asarray(p) for t in sent.turns for p in t.parts if not isinstance(p, str)]
            for got, want in zip(rendered["images"], sent_images, strict=True):
                assert np.array_equal(np.asarray(got), want)
            texts = [p["text"] for m in example.messages[:-1] for p in m["content"] if p["type"] == "text"]
            assert texts == _texts(sent)


def test_a_review_file_saved_from_napari_opens_in_review(tmp_path, shared_data):
    image_path = shared_data / "fractography" / "ceramic-sem"
    source = sorted(image_path.glob("*.jpg"))[0]
    from napari_fracto.batch import load_analysis_images

    ((name, array),) = load_analysis_images(source)
    result = analyze_array(array, task="fracture", backend=ScriptedBackend(
        json.dumps({"labels": [{"label": "intergranular facets", "bbox_2d": [0, 0, 500, 500]}]})),
        source=name)  # fmt: skip
    overlay = findings_to_shapes(result, load_vocabulary("fracture"))
    doc = findings_table(overlay.data, {"name": "findings", "metadata": overlay.metadata, "features": None})
    saved = tmp_path / "ceramic_findings.json"
    saved.write_text(json.dumps(doc))
    with Dataset.create(tmp_path / "ds") as ds:
        collected = collect_findings_file(ds, saved)
        (entry,) = collected.entries
        stored = ds.latest_review(entry.image_id)
        assert stored.predicted[0].label == "intergranular facets"
        assert stored.request.source == name


def test_cli_autolabel_with_display_flags_then_export_keeps_the_request_and_evidence(shared_data, tmp_path,
                                                                                      capsys):  # fmt: skip
    from napari_fracto.testing.fake_openai_server import FakeOpenAIServer

    ds = str(tmp_path / "ds")
    assert main(["dataset", "create", ds]) == 0
    with FakeOpenAIServer(answer=ANSWER, models=("m",)) as server:
        code = main(
            ["dataset", "autolabel", ds, str(shared_data / PRODUCT), "--task", "ptychography",
             "--remove-ramp", "--crop-scanned", "--backend", "openai", "--model", "m",
             "--base-url", server.base_url, "--max-image-tokens", "64"]
        )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    out = tmp_path / "out.jsonl"
    assert main(["dataset", "export", ds, str(out), "--status", "any"]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["request"]["display"] == {"ramp": True, "unwrap": False, "crop": True}
    assert record["request"]["crop"] is not None
    assert record["request"]["max_image_tokens"] == 64
    assert "grid_period_px" in record["evidence"]
    assert "cropped to rows" in record["preprocessing"]


def test_review_of_analyze_jsonl_stores_the_product_plane_as_it_was_analysed(shared_data, tmp_path, capsys):
    from napari_fracto.review.sources import collect_results
    from napari_fracto.testing.fake_openai_server import FakeOpenAIServer

    out = tmp_path / "results.jsonl"
    with FakeOpenAIServer(answer=ANSWER, models=("m",)) as server:
        code = main(
            ["analyze", str(shared_data / PRODUCT), "--task", "ptychography", "--crop-scanned",
             "--remove-ramp", "--backend", "openai", "--model", "m", "--base-url", server.base_url,
             "--max-image-tokens", "64", "--out", str(out)]
        )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    (item,) = analysis_inputs(shared_data / PRODUCT)
    with Dataset.create(tmp_path / "ds") as ds:
        (entry,) = collect_results(ds, out).entries
        stored = ds.image_array(entry.image_id)
        assert np.iscomplexobj(stored)
        assert np.array_equal(stored, item.array)
        assert ds.latest_review(entry.image_id).request.crop is not None


def test_evaluation_re_asks_the_stored_request_and_flags_override_it(shared_data, tmp_path):
    from napari_fracto.evaluation.compare import EvalConfig
    from napari_fracto.evaluation.runner import evaluate
    from napari_fracto.prepare import prepare
    from napari_fracto.settings import BackendSettings

    (item,) = analysis_inputs(shared_data / PRODUCT)
    result = analyze_array(item.array, task="ptychography", backend=ScriptedBackend(ANSWER),
                           geometry=item.geometry, display=DisplayOptions(ramp=True, unwrap=False, crop=True),
                           max_image_tokens=64)  # fmt: skip
    backend = ScriptedBackend(ANSWER)
    with Dataset.create(tmp_path / "ds") as ds:
        image_id = ds.add_image(item.array, task="ptychography")
        ds.save_review(image_id, "ptychography", result.findings, prediction=result)
        ds.set_split([image_id], "test")
        settings_ = BackendSettings(max_image_tokens=64)
        configs = [
            EvalConfig(name="as asked", settings=settings_),
            EvalConfig(name="uncropped", settings=settings_, display={}),
        ]
        evaluate(ds, configs, tmp_path / "eval", backend_factory=lambda s: backend, resamples=0)
    as_asked, uncropped = (np.asarray(r.turns[-1].parts[0]) for r in backend.requests)
    expected = prepare(result.request, item.array).tiles[0].image
    assert np.array_equal(as_asked, np.asarray(expected))  # cropped and ramp-free, as Analyze sent it
    # the override shows the whole buffer, not the scanned region
    assert uncropped.shape != as_asked.shape or not np.array_equal(uncropped, as_asked)
