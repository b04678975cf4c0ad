"""Specialist and generalist together: both asked, both recorded, one Cancel; combination rules."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import tifffile

from napari_fracto.analysis import analyze_array
from napari_fracto.backends.base import CancelledError
from napari_fracto.cli import main
from napari_fracto.dataset import Dataset
from napari_fracto.review.teach_inputs import teach_queue
from napari_fracto.second_opinion import SecondOpinionBackend, combine
from napari_fracto.testing.fake_openai_server import FakeOpenAIServer
from napari_fracto.testing.scripted import ScriptedBackend

SPECIALIST = (
    '{"labels": [{"label": "equiaxed dimples", "confidence": 0.9}, {"label": "mist", "confidence": 0.6}]}'
)
GENERALIST = (
    '{"labels": [{"label": "equiaxed dimples"}, {"label": "secondary cracks"}]}\n'
    "Cup-like dimples everywhere; one long crack runs across the top."
)


def test_cli_second_opinion_records_both_with_per_label_agreement(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "img.tif", (np.arange(64 * 64).reshape(64, 64)).astype(np.uint16))
    out = tmp_path / "out.jsonl"
    with FakeOpenAIServer(answer=SPECIALIST) as first, FakeOpenAIServer(answer=GENERALIST) as second:
        config = tmp_path / "generalist.toml"
        config.write_text(
            f'name = "generalist"\nbackend = "openai"\nmodel = "fake-model"\nbase_url = "{second.base_url}"\n'
        )
        code = main(
            ["analyze", str(tmp_path / "img.tif"), "--task", "fracture", "--backend", "openai",
             "--base-url", first.base_url, "--model", "fake-model", "--second-opinion", str(config),
             "--out", str(out)]
        )  # fmt: skip
        assert code == 0, capsys.readouterr().err
        assert len(first.chat_requests()) == 1
        assert len(second.chat_requests()) == 1
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert [f["label"] for f in record["findings"]] == ["equiaxed dimples", "mist"]  # the first answers
    opinion = record["evidence"]["second_opinion"]
    assert opinion["source"] == "generalist"
    assert opinion["labels"] == {"equiaxed dimples": None, "secondary cracks": None}
    assert opinion["agreement"] == {
        "equiaxed dimples": "both",
        "mist": "first only",
        "secondary cracks": "second only",
    }
    assert "one long crack runs across the top" in opinion["text"]  # the generalist's explanation


def test_bad_second_opinion_file_is_one_clear_error(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "img.tif", np.arange(32 * 32, dtype=np.uint16).reshape(32, 32))
    config = tmp_path / "bad.toml"
    config.write_text('backend = "openai"\nmodle = "x"\n')
    code = main(
        ["analyze", str(tmp_path / "img.tif"), "--task", "fracture", "--backend", "openai", "--model", "m",
         "--base-url", "http://127.0.0.1:9/v1", "--second-opinion", str(config)]
    )  # fmt: skip
    assert code == 2
    assert "unknown key(s) modle" in capsys.readouterr().err


def test_both_are_asked_at_once_and_one_cancel_stops_both():
    first = ScriptedBackend(SPECIALIST, delay=30)
    second = ScriptedBackend(GENERALIST, delay=30)
    backend = SecondOpinionBackend(first, second)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.perf_counter()
    image = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    with pytest.raises(CancelledError):
        analyze_array(image, task="fracture", backend=backend, cancel=cancel)
    assert time.perf_counter() - started < 5
    assert len(first.requests) == 1
    assert len(second.requests) == 1  # asked in parallel, not after the first
    backend.close()


def test_combination_rules():
    specialist = {"mist": 0.95, "hackle": 0.5, "fracture mirror": None}
    generalist = {"fracture mirror": None, "tear ridges": None}
    assert combine("agreement", specialist, generalist) == ["fracture mirror"]
    assert combine("either", specialist, generalist) == ["mist", "hackle", "fracture mirror", "tear ridges"]
    assert combine("veto", specialist, generalist) == ["mist", "fracture mirror"]  # hackle vetoed
    with pytest.raises(ValueError, match="unknown combination rule"):
        combine("vote", specialist, generalist)


def test_a_stored_disagreement_feeds_the_queue(tmp_path):
    rng = np.random.default_rng(0)
    with Dataset.create(tmp_path / "ds") as ds:
        ids = []
        for k, answer in enumerate([SPECIALIST, SPECIALIST]):
            other = GENERALIST if k == 1 else SPECIALIST
            backend = SecondOpinionBackend(ScriptedBackend(answer), ScriptedBackend(other), second_name="api")
            image = (rng.random((32, 32)) * 255).astype(np.uint8)
            result = analyze_array(image, task="fracture", backend=backend)
            ids.append(ds.add_image(image, task="fracture"))
            ds.save_prediction(ids[-1], result)
        ranked, _ = teach_queue(ds, "fracture", probe=False)
    assert ranked[0].item_id == ids[1]
    assert any("api" in r and "disagree on: mist, secondary cracks" in r for r in ranked[0].reasons)


def test_eval_scores_the_combination_rules_as_rows(tmp_path, capsys):
    from napari_fracto.findings import Finding

    rng = np.random.default_rng(1)
    with Dataset.create(tmp_path / "ds") as ds:
        for _ in range(3):
            image_id = ds.add_image((rng.random((32, 32)) * 255).astype(np.uint8), task="fracture")
            ds.save_review(image_id, "fracture", [Finding("equiaxed dimples", None)], reviewer="t")
            ds.set_split([image_id], "test")
    with FakeOpenAIServer(answer=SPECIALIST) as first, FakeOpenAIServer(answer=GENERALIST) as second:
        compare = tmp_path / "compare.toml"
        compare.write_text(
            f'[[config]]\nname = "specialist"\nbackend = "openai"\nmodel = "fake-model"\n'
            f'base_url = "{first.base_url}"\n'
            f'[[config]]\nname = "generalist"\nbackend = "openai"\nmodel = "fake-model"\n'
            f'base_url = "{second.base_url}"\n'
        )
        code = main(
            ["eval", "--dataset", str(tmp_path / "ds"), "--compare", str(compare), "--resamples", "0",
             "--combine", "specialist,generalist", "--out", str(tmp_path / "out")]
        )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    f1 = {r["config"]["name"]: r["scores"]["micro_f1"] for r in saved["results"]}
    assert f1["specialist"] == pytest.approx(2 / 3)  # dimples right, mist wrong on each image
    assert f1["specialist + generalist: agreement only"] == 1.0
    assert f1["specialist with generalist veto"] == 1.0  # mist (0.6) vetoed by the generalist
    assert f1["specialist + generalist: either"] == pytest.approx(0.5)
    with pytest.raises(SystemExit):
        main(["eval", "--dataset", str(tmp_path / "ds"), "--combine", "only-one"])
    assert "--combine takes two configuration names" in capsys.readouterr().err


def test_a_failing_second_opinion_keeps_the_first_answer_and_says_why():
    from napari_fracto.testing.scripted import failing_backend

    backend = SecondOpinionBackend(ScriptedBackend(SPECIALIST), failing_backend(), second_name="api")
    image = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    result = analyze_array(image, task="fracture", backend=backend)
    assert result.labels == ["equiaxed dimples", "mist"]
    opinion = result.evidence["second_opinion"]
    assert "refused the connection" in opinion["error"]
    assert opinion["agreement"] == {}
