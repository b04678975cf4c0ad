"""PtychoBench exactly: its scoring rules, its results file, its letter answers and its parameter split.

The reference is PtychoBench's published procedure (crumeike/PtychoBench `evaluation/bootstrap.py`,
`ptychobench_loader.py`): read an answer by dropping the `<answer>` tags and brackets, splitting at
commas and keeping exact class names (or letters A-X for advice); micro-F1 is sklearn's `f1_score(...,
average="micro", zero_division=0)`; the interval comes from `np.random.seed(42)` and one
`np.random.choice(n, size=n, replace=True)` per resample, through the file's 0/1/3/5/7-shot entries.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from napari_fracto.dataset import Dataset, Status
from napari_fracto.evaluation import runner
from napari_fracto.evaluation.compare import make_config
from napari_fracto.evaluation.export_ptychobench import write_ptychobench
from napari_fracto.evaluation.ptychobench import ARTIFACT_CLASSES, LETTERS, PARAM_CLASSES
from napari_fracto.evaluation.report import to_json
from napari_fracto.findings import AnalysisContext, Finding
from napari_fracto.metrics import PTYCHOBENCH, ImageOutcome, score
from napari_fracto.parsing import parse_response
from napari_fracto.testing.scripted import ScriptedBackend
from napari_fracto.vocabulary import advice_vocabulary, load_vocabulary

NOA = "No obvious artifacts"


def their_vector(answer: str, advice: bool = False) -> list[int]:
    """PtychoBench's reading of one answer string into its 0/1 class vector."""
    body = answer.replace("<answer>", "").replace("</answer>", "").replace("[", "").replace("]", "")
    items = [item.strip() for item in body.split(",")]
    names = LETTERS if advice else ARTIFACT_CLASSES
    return [1 if name in items else 0 for name in names]


def their_bootstrap(entries, resamples):
    """Their bootstrap.py over one file: seed once, then each entry's resamples in order; the last entry's
    (mean, std, 2.5 %, 97.5 %) of micro-F1."""
    f1_score = pytest.importorskip("sklearn.metrics").f1_score
    np.random.seed(42)  # noqa: NPY002 - their procedure uses the legacy global stream
    for y_true, y_pred in entries:
        n = len(y_true)
        samples = np.zeros(resamples)
        for i in range(resamples):
            idx = np.random.choice(n, size=n, replace=True)  # noqa: NPY002
            samples[i] = f1_score(y_true[idx], y_pred[idx], average="micro", zero_division=0)
    return np.mean(samples), np.std(samples), np.percentile(samples, 2.5), np.percentile(samples, 97.5)


def test_the_vocabularies_are_ptychobenchs_class_lists():
    assert set(load_vocabulary("ptychography").names()) == set(ARTIFACT_CLASSES)
    assert list(advice_vocabulary("ptychography").names()) == list(PARAM_CLASSES)


def test_ptychobench_rules_differ_from_the_default_where_they_say():
    names = list(ARTIFACT_CLASSES)
    exclusive = (NOA,)
    outcomes = [
        ImageOutcome.make([], [NOA]),  # "found nothing": default reads it as NOA, PtychoBench as zeros
        ImageOutcome.make(["Wavy bands", "Grid artifacts"], ["Grid artifacts"]),  # outside the vocabulary
        ImageOutcome.make([NOA, "Halo artifacts"], ["Halo artifacts"]),  # a contradiction, as given
    ]
    default = score(outcomes, names, exclusive=exclusive, resamples=0)
    theirs = score(outcomes, names, exclusive=exclusive, resamples=0, rules=PTYCHOBENCH)
    assert default.micro_f1 == pytest.approx(6 / 8)  # TP 3 (NOA, grid, halo), FP 2 (wavy, NOA)
    assert theirs.micro_f1 == pytest.approx(4 / 6)  # TP 2, FP 1 (NOA), FN 1 (NOA)
    assert default.contradictions == theirs.contradictions == 1
    assert any(s.label == "(outside vocabulary)" for s in default.per_label)
    assert not any(s.label == "(outside vocabulary)" for s in theirs.per_label)

    f1_score = pytest.importorskip("sklearn.metrics").f1_score
    answers = ["<answer>[]</answer>", "<answer>[Wavy bands, Grid artifacts]</answer>",
               f"<answer>[{NOA}, Halo artifacts]</answer>"]  # fmt: skip
    truths = [
        f"<answer>[{NOA}]</answer>",
        "<answer>[Grid artifacts]</answer>",
        "<answer>[Halo artifacts]</answer>",
    ]
    expected = f1_score(
        [their_vector(t) for t in truths],
        [their_vector(a) for a in answers],
        average="micro",
        zero_division=0,
    )
    assert theirs.micro_f1 == pytest.approx(expected, abs=1e-12)


def test_the_interval_is_the_one_their_bootstrap_draws_after_earlier_entries():
    rng = np.random.default_rng(5)
    names = list(ARTIFACT_CLASSES)
    outcomes = [
        ImageOutcome.make(
            rng.choice(names, size=rng.integers(0, 3), replace=False),
            rng.choice(names, size=rng.integers(1, 3), replace=False),
        )
        for _ in range(23)
    ]
    earlier = 9  # an entry of 9 images is resampled first from the same stream (e.g. 0-shot before 3-shot)
    ours = score(outcomes, names, exclusive=(NOA,), resamples=300, rules=PTYCHOBENCH, burn=[earlier])

    def vectors(sets):
        return np.array([[int(n in s) for n in names] for s in sets])

    zeros = np.zeros((earlier, len(names)), dtype=int)
    y_true = vectors([o.true for o in outcomes])
    y_pred = vectors([o.predicted for o in outcomes])
    mean, std, lo, hi = their_bootstrap([(zeros, zeros), (y_true, y_pred)], 300)
    assert ours.seed == 42
    assert ours.resamples == 300
    assert ours.bootstrap_mean["micro_f1"] == pytest.approx(mean, abs=1e-9)
    assert ours.bootstrap_std["micro_f1"] == pytest.approx(std, abs=1e-9)
    assert ours.ci["micro_f1"] == pytest.approx((lo, hi), abs=1e-9)


def test_letter_answers_are_the_advice_ptychobench_means():
    vocab, advice = load_vocabulary("ptychography"), advice_vocabulary("ptychography")
    parsed = parse_response("<answer>J, K, M</answer>", vocab, advice)
    assert parsed.ok
    assert parsed.findings == ()
    assert parsed.advice == (PARAM_CLASSES[9], PARAM_CLASSES[10], "Recenter diffraction patterns")
    # "No changes needed" (L) beside other advice: dropped for display, kept when read as given
    assert "No changes needed" not in parse_response("<answer>J, L</answer>", vocab, advice).advice
    given = parse_response("<answer>J, L</answer>", vocab, advice, keep_exclusive=True)
    assert given.advice == ("Increase number of probe modes", "No changes needed")
    assert parse_response('{"labels": [], "advice": ["G"]}', vocab, advice).advice == (
        "Enable position correction",
    )
    without = parse_response("<answer>J, K</answer>", vocab)  # no advice asked: letters mean nothing
    assert without.advice == ()
    assert not without.ok


# --- a run, its results.json and the PtychoBench export ------------------------------------------------

TRUTH = [  # labels, advice, sample type of the six test images
    (["Grid artifacts"], ["Enable position correction"], "IC"),
    ([], ["No changes needed"], "IC"),
    (["Halo artifacts", "Blurring"], ["Increase number of probe modes"], "battery"),
    (["Phase ramp"], ["Recenter diffraction patterns"], "battery"),
    ([], [], "battery"),
    (["Grid artifacts", "Noisy artifacts"], ["Enable position correction", "Reduce batch size"], "IC"),
]
ANSWERS = [
    '{"labels": [{"label": "Grid artifacts"}], "advice": ["G"]}',
    '{"labels": [], "advice": ["No changes needed"]}',
    f'{{"labels": [{{"label": "Halo artifacts"}}, {{"label": "{NOA}"}}], "advice": ["J", "L"]}}',
    "I cannot tell what this reconstruction shows.",
    '{"labels": [{"label": "Wavy bands"}], "advice": []}',
    '{"labels": [{"label": "Grid artifacts"}, {"label": "Noisy artifacts"}], "advice": ["G"]}',
]


def image(seed: int) -> np.ndarray:
    smooth = gaussian_filter(np.random.default_rng(seed).random((40, 40)), 2)
    return ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)


@pytest.fixture
def ptycho(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    for seed, (labels, advice, sample_type) in enumerate(TRUTH):
        image_id = ds.add_image(image(seed), task="ptychography", name=f"t{seed}.npy")
        context = AnalysisContext(sample_type=sample_type)
        ds.save_review(image_id, "ptychography", [Finding(x) for x in labels], advice=advice, context=context)
        ds.set_split([image_id], "test")
    for seed in (20, 21):
        image_id = ds.add_image(image(seed), task="ptychography", name=f"e{seed}.npy")
        ds.save_review(
            image_id, "ptychography", [Finding("Phase ramp")], advice=["Recenter diffraction patterns"]
        )
        ds.set_split([image_id], "train")
    yield ds
    ds.close()


def run_two_shots(ds, out, scoring, answers=None):
    configs = [
        make_config({"model": "m", "advice": True, "shots": k, "select": "random", "seed": 1}) for k in (0, 1)
    ]
    answers = answers or ANSWERS + ANSWERS  # per request: the six images at 0 shots, then at 1 shot
    backend = ScriptedBackend(list(answers))
    return runner.evaluate(
        ds, configs, out, backend_factory=lambda s: backend, scoring=scoring, resamples=200, seed=1
    )


def test_contradictions_are_scored_as_given_and_counted(ptycho, tmp_path):
    run = run_two_shots(ptycho, tmp_path / "out", "default")
    scores = run.results[0].scores
    # image 3 said halo + "No obvious artifacts": the NOA is a false positive and a contradiction
    assert scores.contradictions == 1
    # default rules: TP grid, NOA (empty answer), halo, grid, noisy = 5; FP NOA, wavy = 2; FN blurring,
    # phase ramp (unparseable), NOA (image 5 said only wavy) = 3
    assert scores.micro_f1 == pytest.approx(10 / 15)
    assert run.results[0].advice_scores.contradictions == 1
    record = to_json(run)["results"][0]["predictions"][2]
    assert record["given"] == ["Halo artifacts", NOA]
    assert record["labels"] == ["Halo artifacts"]
    assert record["truth"] == ["Halo artifacts", "Blurring"]
    assert "Halo artifacts" in record["raw_text"]


def test_export_is_read_by_their_procedure_as_scored_here(ptycho, tmp_path):
    f1_score = pytest.importorskip("sklearn.metrics").f1_score
    run = run_two_shots(ptycho, tmp_path / "out", "ptychobench")
    theirs = run.results[0].scores
    assert theirs.rules == "ptychobench"
    assert theirs.seed == 42
    # TP grid, halo, grid, noisy = 4; FP NOA = 1; FN NOA (empty), blurring, phase ramp, NOA (wavy) = 4
    assert theirs.micro_f1 == pytest.approx(8 / 13)

    artifact, param = write_ptychobench(run, tmp_path / "vlm_artifact_det_m.json")
    assert "param" not in artifact.name
    assert "param" in param.name
    for path, advice, which in ((artifact, False, "scores"), (param, True, "advice_scores")):
        data = json.loads(path.read_text())
        assert data["config"]["selection_mode"] == "random"
        assert set(data["random"]) == {"0-shot", "1-shot"}
        entries = []
        for k, result in zip(("0-shot", "1-shot"), run.results, strict=True):
            entry = data["random"][k]
            y_true = np.array([their_vector(t, advice) for t in entry["ground_truths"]])
            y_pred = np.array([their_vector(a, advice) for a in entry["raw_predictions"]])
            expected = f1_score(y_true, y_pred, average="micro", zero_division=0)
            ours = getattr(result, which)
            assert entry["overall"]["micro_f1"] == pytest.approx(expected, abs=1e-9)
            assert ours.micro_f1 == pytest.approx(expected, abs=1e-9)
            entries.append((y_true, y_pred))
        # the 1-shot interval continues the stream after the 0-shot entry, as bootstrap.py draws it
        mean, _, lo, hi = their_bootstrap(entries, 200)
        assert ours.ci["micro_f1"] == pytest.approx((lo, hi), abs=1e-9)
        assert data["random"]["1-shot"]["bootstrap"]["mean"] == pytest.approx(mean, abs=1e-9)
    advice_entry = json.loads(param.read_text())["random"]["0-shot"]
    assert advice_entry["raw_predictions"][0] == "<answer>G</answer>"
    assert advice_entry["ground_truths"][4] == "<answer>G, N</answer>"  # image 5 has no advice
    assert json.loads(artifact.read_text())["random"]["0-shot"]["sample_distribution"] == {
        "IC": 3,
        "battery": 3,
    }


def test_export_refuses_what_their_code_would_misread(ptycho, tmp_path):
    run = run_two_shots(ptycho, tmp_path / "out", "ptychobench")
    with pytest.raises(runner.EvaluationError, match="param"):
        write_ptychobench(run, tmp_path / "my_param_results.json")
    default = run_two_shots(ptycho, tmp_path / "out", "default")  # from the cache
    with pytest.raises(runner.EvaluationError, match="--scoring ptychobench"):
        write_ptychobench(default, tmp_path / "results.json")


def test_cli_exports_for_their_bootstrap(ptycho, tmp_path, monkeypatch, capsys):
    from napari_fracto import cli
    from napari_fracto.testing.fake_openai_server import FakeOpenAIServer

    monkeypatch.setattr(cli, "EXTRA_COMMANDS", [*cli.EXTRA_COMMANDS, "napari_fracto.evaluation.cli"])
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    target = tmp_path / "exported.json"
    with FakeOpenAIServer(answer="<answer>[Grid artifacts]</answer>") as server:
        argv = ["eval", "--dataset", str(ptycho.root), "--backend", "openai", "--model", "fake-model",
                "--base-url", server.base_url, "--out", str(tmp_path / "eval"), "--resamples", "50",
                "--export-ptychobench", str(target)]  # fmt: skip
        assert cli.main(argv) == 0
        assert cli.main([*argv[:-1], str(tmp_path / "x.json"), "--scoring", "default"]) == 2
    assert "drop --scoring default" in capsys.readouterr().err
    entry = json.loads(target.read_text())["similar"]["0-shot"]
    assert entry["raw_predictions"] == ["<answer>[Grid artifacts]</answer>"] * 6
    assert entry["ground_truths"][1] == f"<answer>[{NOA}]</answer>"
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["scoring"] == "ptychobench"
    assert results["results"][0]["scores"]["resamples"] == 50


# --- importing a parameter-recommendation split --------------------------------------------------------


def sample(name: str, answer: str, sample_type: str = "IC") -> dict:
    return {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Recommend parameter changes."},
                    {"type": "image", "image_path": f"/data/upload/1/{name}"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "metadata": {"sample_type": sample_type},
    }


def test_a_parameter_split_imports_beside_the_artifact_labels(tmp_path):
    from PIL import Image

    from napari_fracto.dataset.importers import import_ptychobench
    from napari_fracto.dataset.ptychobench import import_ptychobench_params

    root = tmp_path / "ptychobench_dataset"
    (root / "images").mkdir(parents=True)
    for seed in range(3):
        Image.fromarray(image(seed)).save(root / "images" / f"r{seed}.png")
    artifacts = root / "annotations" / "artifact_detection_split"
    artifacts.mkdir(parents=True)
    (artifacts / "train.json").write_text(json.dumps([sample("r0.png", "<answer>[Grid artifacts]</answer>")]))
    params = root / "annotations" / "parameter_recommendation_split"
    params.mkdir(parents=True)
    (params / "train.json").write_text(
        json.dumps([sample("r0.png", "<answer>G, N</answer>"), sample("r1.png", "<answer>L, Z</answer>")])
    )
    (params / "test.json").write_text(
        json.dumps([sample("r2.png", "<answer>M</answer>"), sample("gone.png", "<answer>A</answer>")])
    )
    with Dataset.create(tmp_path / "ds") as ds:
        import_ptychobench(ds, root)
        summary = import_ptychobench_params(ds, root)
        assert summary.images == 3
        assert summary.unknown_labels == {"Z": 1}
        assert any("gone.png" in s for s in summary.skipped)
        assert summary.unlabelled == 2
        assert "no reviewed artifact labels" in summary.describe()
        items = {i.image.original_name: i for i in ds.iter_items(task="ptychography")}
        first = items["r0.png"].review
        assert first.status == Status.REVIEWED
        assert first.labels == ["Grid artifacts"]
        assert first.advice == ("Enable position correction", "Reduce batch size")
        second = items["r1.png"].review
        assert second.status == Status.UNREVIEWED
        assert second.advice == ("No changes needed",)
        assert items["r2.png"].review.advice == ("Recenter diffraction patterns",)
        assert items["r2.png"].image.split == "test"
        assert items["r0.png"].image.split == "train"
        assert import_ptychobench_params(ds, root).unchanged == 3  # re-importing adds nothing


def test_dataset_cli_imports_a_parameter_split(tmp_path, capsys):
    from PIL import Image

    from napari_fracto import cli

    folder = tmp_path / "split"
    (folder / "images").mkdir(parents=True)
    Image.fromarray(image(1)).save(folder / "images" / "a.png")
    (folder / "test.json").write_text(json.dumps([sample("a.png", "<answer>K</answer>")]))
    code = cli.main(
        ["dataset", "import", str(tmp_path / "ds"), str(folder), "--format", "ptychobench-params"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "1 image(s), 1 review(s) saved" in printed
    assert "saved unreviewed" in printed
    with Dataset.open(tmp_path / "ds") as ds:
        (item,) = ds.iter_items(task="ptychography")
        assert item.review.advice == ("Increase the number of iterations",)
