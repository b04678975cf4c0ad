"""The evaluation runner, its cache, comparison files, reports and `napari-fracto eval`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from napari_fracto.backends.base import BackendError
from napari_fracto.dataset import Dataset
from napari_fracto.evaluation import runner
from napari_fracto.evaluation.compare import ComparisonError, EvalConfig, expand, load_comparison, make_config
from napari_fracto.evaluation.report import markdown_table, write_reports
from napari_fracto.evaluation.runner import EvaluationError
from napari_fracto.findings import AnalysisContext, Finding
from napari_fracto.settings import BackendSettings
from napari_fracto.testing.scripted import ScriptedBackend

DIMPLES = '{"labels": [{"label": "equiaxed dimples", "confidence": 0.9}]}'


def texture(seed: int, side: int = 48) -> np.ndarray:
    smooth = gaussian_filter(np.random.default_rng(seed).random((side, side)), 3)
    return ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)


def add(ds, seed, labels, split, task="fracture", advice=(), **context) -> str:
    image_id = ds.add_image(texture(seed), task=task, name=f"img{seed}.npy")
    findings = [Finding(label) for label in labels]
    ds.save_review(image_id, task, findings, advice=advice, context=AnalysisContext(**context), reviewer="t")
    ds.set_split([image_id], split)
    return image_id


@pytest.fixture
def dataset(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    add(ds, 1, ["equiaxed dimples"], "test", material="steel")
    add(ds, 2, ["cleavage facets"], "test")
    add(ds, 3, ["equiaxed dimples", "fatigue striations"], "test")
    add(ds, 10, ["equiaxed dimples"], "train")
    add(ds, 11, ["river patterns"], "train")
    add(ds, 12, ["secondary cracks"], "train")
    yield ds
    ds.close()


class Factory:
    """Builds ScriptedBackends and remembers them, so tests see every request that was made."""

    def __init__(self, answer=DIMPLES):
        self.answer = answer
        self.backends: list[ScriptedBackend] = []

    def __call__(self, settings: BackendSettings) -> ScriptedBackend:
        backend = ScriptedBackend(self.answer, model=settings.model)
        self.backends.append(backend)
        return backend

    @property
    def requests(self):
        return [r for b in self.backends for r in b.requests]


def evaluate(dataset, configs, out, factory=None, **kw):
    """The runner with a scripted backend factory and a quick bootstrap."""
    kw.setdefault("resamples", 50)
    return runner.evaluate(dataset, configs, out, backend_factory=factory, **kw)


def config(**keys) -> EvalConfig:
    return make_config({"model": "m"} | keys)


def test_scores_match_the_hand_count(dataset, tmp_path):
    factory = Factory()
    run = evaluate(dataset, [config(name="always dimples")], tmp_path / "out", factory)
    (result,) = run.results
    s = result.scores
    # Truth: {dimples}, {cleavage}, {dimples, striations}; always answering dimples: TP 2, FP 1, FN 2.
    assert s.n_images == 3
    assert s.micro_f1 == pytest.approx(4 / 7)
    assert s.set_precision == pytest.approx(2 / 3)
    assert s.parse_failures == 0
    assert result.asked == 3
    assert len(factory.requests) == 3


def test_second_run_is_served_from_the_cache_and_only_new_work_is_asked(dataset, tmp_path):
    out = tmp_path / "out"
    evaluate(dataset, [config()], out, Factory())
    again = Factory()
    run = evaluate(dataset, [config()], out, again)
    assert again.backends == []  # not even built
    assert (run.results[0].asked, run.results[0].cached) == (0, 3)
    assert run.results[0].scores.micro_f1 == pytest.approx(4 / 7)

    add(dataset, 4, ["equiaxed dimples"], "test")
    more = Factory()
    run = evaluate(dataset, [config(), config(context=False)], out, more)
    assert [(r.asked, r.cached) for r in run.results] == [(1, 3), (4, 0)]
    assert len(more.requests) == 5


def test_changed_context_is_asked_again_only_where_context_is_used(dataset, tmp_path):
    out = tmp_path / "out"
    evaluate(dataset, [config(), config(context=False)], out, Factory())
    item = next(i for i in dataset.iter_items(split="test") if i.review.context.material == "steel")
    dataset.save_review(item.image_id, "fracture", item.review.corrected, context=AnalysisContext("iron"))
    run = evaluate(dataset, [config(), config(context=False)], out, Factory())
    assert [r.asked for r in run.results] == [1, 0]


def test_k_shot_prompts_use_train_examples_only(dataset, tmp_path):
    factory = Factory()
    run = evaluate(dataset, [config(shots=2, select="random", seed=4)], tmp_path / "out", factory)
    train = {i.image_id for i in dataset.iter_items(split="train")}
    for prediction in run.results[0].predictions:
        assert len(prediction.examples) == 2
        assert set(prediction.examples) <= train
    for request in factory.requests:
        assert len(request.images()) == 3
        assert [t.role for t in request.turns] == ["system", "user", "assistant", "user", "assistant", "user"]


def test_advice_is_scored_against_the_corrected_advice(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    add(ds, 1, ["Halo artifacts"], "test", task="ptychography", advice=["Enable position correction"])
    add(ds, 2, [], "test", task="ptychography", advice=["No changes needed"])
    answer = '{"labels": [{"label": "Halo artifacts"}], "advice": ["Enable position correction"]}'
    run = evaluate(ds, [config(advice=True)], tmp_path / "out", Factory(answer))
    ds.close()
    result = run.results[0]
    # Labels: TP halo; image 2 is clean ("No obvious artifacts") but the model named halo: FP + FN.
    assert result.scores.micro_f1 == pytest.approx(2 / 4)
    assert result.advice_scores.micro_f1 == pytest.approx(2 / 4)
    assert result.advice_scores.n_images == 2


def test_a_failing_backend_stops_its_configuration_only(dataset, tmp_path):
    def factory(settings):
        if settings.model == "down":
            return ScriptedBackend(BackendError("The server refused the connection."))
        return ScriptedBackend(DIMPLES)

    run = evaluate(dataset, [config(model="down"), config(model="up")], tmp_path / "out", factory)
    assert "refused" in run.results[0].error
    assert run.results[0].scores is None
    assert run.results[1].scores.n_images == 3
    assert "stopped" in markdown_table(run)


def test_clear_errors_for_empty_splits_and_mixed_tasks(dataset, tmp_path):
    with pytest.raises(EvaluationError, match="no reviewed"):
        evaluate(dataset, [config()], tmp_path / "out", Factory(), split="val")
    add(dataset, 20, ["Blurring"], "test", task="ptychography")
    with pytest.raises(EvaluationError, match="--task"):
        evaluate(dataset, [config()], tmp_path / "out", Factory())
    run = evaluate(dataset, [config()], tmp_path / "out", Factory(), task="ptychography")
    assert run.n_images == 1


def test_reports_are_written_and_readable(dataset, tmp_path):
    out = tmp_path / "out"
    run = evaluate(dataset, [config(name="A"), config(name="B", shots=1)], out, Factory())
    paths = write_reports(run, out)
    data = json.loads(paths["json"].read_text())
    assert [r["config"]["name"] for r in data["results"]] == ["A", "B"]
    assert data["results"][0]["scores"]["micro_f1"] == pytest.approx(4 / 7, abs=1e-6)
    with open(paths["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["configuration"] for r in rows] == ["A", "B"]
    assert float(rows[0]["micro_f1_low"]) <= float(rows[0]["micro_f1"]) <= float(rows[0]["micro_f1_high"])
    with open(paths["per_label_csv"], newline="") as fh:
        dimples = [
            r for r in csv.DictReader(fh) if r["label"] == "equiaxed dimples" and r["configuration"] == "A"
        ]
    assert (dimples[0]["tp"], dimples[0]["fp"]) == ("2", "1")
    md = paths["markdown"].read_text()
    assert "| A | 3 | 0.571 [" in md
    with Image.open(paths["chart"]) as chart:
        assert chart.format == "PNG"
        assert chart.size[0] > 300


# --- comparison files ----------------------------------------------------------------------------------


def test_toml_comparison_with_defaults_and_shot_lists(tmp_path):
    path = tmp_path / "compare.toml"
    lora = tmp_path / "runs" / "lora"
    lora.mkdir(parents=True)
    path.write_text(
        '[defaults]\nmodel = "Qwen/Qwen3-VL-2B-Instruct"\nselect = "random"\n'
        '[[config]]\nname = "base"\n'
        f'[[config]]\nname = "tuned"\nadapter = "{lora}"\nshots = [0, 3]\ncontext = false\n'
        '[[config]]\nbackend = "openai"\nmodel = "gpt-x"\nbase_url = "http://127.0.0.1:8000/v1"\n'
    )
    configs = load_comparison(path)
    assert [c.label for c in configs] == ["base", "tuned 0-shot", "tuned 3-shot", "gpt-x 0-shot"]
    assert configs[2].settings.adapter == str(lora)
    assert configs[2].shots == 3
    assert configs[2].select == "random"
    assert not configs[2].context
    assert configs[3].settings.kind == "openai"
    json_path = tmp_path / "compare.json"
    json_path.write_text(json.dumps({"configs": [{"name": "x", "shots": 1}]}))
    assert load_comparison(json_path)[0].shots == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[config]]\nmodle = 'x'\n", "unknown key"),
        ("[[config]]\napi_key = 'sk-123'\n", "api_key"),
        ("[[config]]\nshots = -1\n", "shots"),
        ("[[config]]\nname = 'a'\n[[config]]\nname = 'a'\n", "unique"),
        ("[config\n", "not valid TOML"),
        ("[defaults]\nshots = 1\n", "no configurations"),
    ],
)
def test_bad_comparison_files_say_what_to_fix(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ComparisonError, match=message):
        load_comparison(path)
    with pytest.raises(ComparisonError, match="cannot read"):
        load_comparison(tmp_path / "missing.toml")


def test_fingerprint_follows_what_changes_predictions(tmp_path):
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"1")
    a = config(adapter=str(adapter))
    assert a.fingerprint() == config(adapter=str(adapter), device="cpu", timeout_s=5).fingerprint()
    assert a.fingerprint() != config(adapter=str(adapter), shots=1).fingerprint()
    before = a.fingerprint()
    (adapter / "adapter_model.safetensors").write_bytes(b"22")  # re-trained in place
    assert a.fingerprint() != before
    assert expand([{"shots": [0, 1]}])[1].shots == 1


# --- the command line, against the fake OpenAI-compatible server ----------------------------------------


def test_cli_runs_shots_against_a_server_and_reruns_from_cache(dataset, tmp_path, monkeypatch, capsys):
    from napari_fracto import cli
    from napari_fracto.testing.fake_openai_server import FakeOpenAIServer

    monkeypatch.setattr(cli, "EXTRA_COMMANDS", [*cli.EXTRA_COMMANDS, "napari_fracto.evaluation.cli"])
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    out = tmp_path / "eval"
    with FakeOpenAIServer(answer=DIMPLES) as server:
        argv = [
            "eval",
            "--dataset",
            str(dataset.root),
            "--backend",
            "openai",
            "--model",
            "fake-model",
            "--base-url",
            server.base_url,
            "--shots",
            "0,1",
            "--out",
            str(out),
            "--resamples",
            "100",
        ]
        assert cli.main(argv) == 0
        first = len(server.chat_requests())
        assert [len(r.image_urls()) for r in server.chat_requests()] == [1, 1, 1, 2, 2, 2]
        assert cli.main(argv) == 0
        assert len(server.chat_requests()) == first
    printed = capsys.readouterr().out
    assert "fake-model 1-shot similar" in printed
    for name in ("results.json", "results.csv", "per_label.csv", "results.md", "chart.png"):
        assert (out / name).is_file()
    assert cli.main(["eval", "--dataset", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "no dataset" in capsys.readouterr().err


def test_fractographs_are_scored_at_the_failure_mode_level_too(dataset, tmp_path):
    """Always answering dimples implies ductile overload: right on the two ductile images (dimples), wrong on
    cleavage (transgranular) and half right on dimples + striations (ductile and fatigue)."""
    run = evaluate(dataset, [config(name="always dimples")], tmp_path / "out", Factory())
    (result,) = run.results
    modes = result.mode_scores
    # truth modes: {ductile}, {transgranular}, {ductile, fatigue}; predicted {ductile} x3: TP 2, FP 1, FN 2
    assert modes is not None
    assert modes.n_images == 3
    assert modes.micro_f1 == pytest.approx(4 / 7)
    by_label = {ls.label: ls for ls in modes.per_label}
    assert by_label["ductile overload"].tp == 2
    assert by_label["brittle transgranular"].fn == 1
    assert by_label["fatigue"].fn == 1
    from napari_fracto.evaluation.report import load_run, markdown_table

    assert "failure-mode micro-F1" in markdown_table(run)
    write_reports(run, tmp_path / "out")
    assert load_run(tmp_path / "out").results[0].mode_scores.micro_f1 == pytest.approx(4 / 7)


def test_the_verdict_names_the_failure_mode_the_features_suggest():
    from napari_fracto.findings import AnalysisResult
    from napari_fracto.overlay import verdict_text
    from napari_fracto.vocabulary import load_vocabulary

    result = AnalysisResult(
        "fracture", [Finding("fatigue striations", 0.8)], "{}", "b", "m", None, "p", "1", 0.1, (8, 8)
    )
    assert verdict_text(result, load_vocabulary("fracture")).endswith("; suggests fatigue")
