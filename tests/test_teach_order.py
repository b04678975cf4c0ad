"""The teach order: what comes next and why, deterministic for a seed; `napari-fracto dataset queue`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_fracto.cli import main
from napari_fracto.dataset import Dataset
from napari_fracto.findings import AnalysisResult, Finding
from napari_fracto.review.teach_order import QueueItem, rank


def _cluster(center: float, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(center, 0.1, 4) for _ in range(n)]


def test_same_seed_same_order_and_random_differs_by_seed():
    items = [QueueItem(f"i{k}", {}, f) for k, f in enumerate(_cluster(0, 30, 1))]
    assert [r.item_id for r in rank(items, seed=3)] == [r.item_id for r in rank(items, seed=3)]
    first = [r.item_id for r in rank(items, order="random", seed=1)]
    assert first == [r.item_id for r in rank(items, order="random", seed=1)]
    assert first != [r.item_id for r in rank(items, order="random", seed=2)]
    assert sorted(first) == sorted(i.item_id for i in items)
    assert [r.item_id for r in rank(items, order="file")] == [i.item_id for i in items]
    with pytest.raises(ValueError, match="unknown queue order"):
        rank(items, order="best")  # type: ignore[arg-type]


def test_disagreement_uncertainty_and_evidence_come_first_with_their_reasons():
    calm = {"vlm": {"Blurring": 0.95}, "probe": {"Blurring": 0.97}}
    items = [QueueItem(f"calm{k}", calm) for k in range(5)]
    items.append(QueueItem("split", {"vlm": {"Blurring": 0.9}, "probe": {"Grid artifacts": 0.9}}))
    items.append(QueueItem("unsure", {"probe": {"Blurring": 0.52}}))
    items.append(QueueItem("evidence", calm, evidence_disagreements=("a strong grid at the scan step",)))
    ranked = rank(items, label_counts={"Blurring": 50, "Grid artifacts": 50})
    top = {r.item_id: r for r in ranked[:3]}
    assert set(top) == {"split", "unsure", "evidence"}
    assert "probe and vlm disagree on: Blurring, Grid artifacts" in top["split"].reasons[0]
    assert "unsure whether 'Blurring' is there (probe: 0.52)" in top["unsure"].reasons
    assert any("evidence disagrees: a strong grid" in r for r in top["evidence"].reasons)
    assert ranked[-1].reasons == ("nothing stands out",)


def test_rare_labels_first_and_the_count_grows_as_items_are_picked():
    items = [QueueItem(f"common{k}", {"vlm": {"Blurring": None}}) for k in range(3)]
    items += [QueueItem(f"rare{k}", {"vlm": {"Halo artifacts": None}}) for k in range(2)]
    ranked = rank(items, label_counts={"Blurring": 30})
    assert ranked[0].item_id == "rare0" or ranked[0].item_id == "rare1"
    assert "may show 'Halo artifacts', which has 0 reviewed examples" in ranked[0].reasons
    assert "which has 1 reviewed example" in " ".join(ranked[1].reasons)  # the first pick now counts


def test_novelty_spreads_the_first_picks_over_clusters():
    a, b, c = _cluster(0, 20, 1), _cluster(5, 20, 2), _cluster(-5, 3, 3)
    items = [QueueItem(f"a{k}", {}, f) for k, f in enumerate(a)]
    items += [QueueItem(f"b{k}", {}, f) for k, f in enumerate(b)]
    items += [QueueItem(f"c{k}", {}, f) for k, f in enumerate(c)]
    reviewed = np.stack(a[:2])  # cluster a is already known
    picks = [r.item_id[0] for r in rank(items, reviewed_features=reviewed, n=2)]
    assert sorted(picks) == ["b", "c"]
    first = rank(items, reviewed_features=reviewed, n=1)[0]
    assert any("unlike anything reviewed" in r for r in first.reasons)


def _prediction(labels: dict[str, float], evidence: dict | None = None) -> AnalysisResult:
    return AnalysisResult(
        task="ptychography",
        findings=[Finding(label, c) for label, c in labels.items()],
        raw_text="{}",
        backend="openai",
        model="served/qwen",
        adapter=None,
        prompt_version="p",
        vocabulary_version="1",
        seconds=0.1,
        image_shape=(32, 32),
        evidence=evidence or {},
    )


def test_dataset_queue_lists_unreviewed_images_with_reasons(tmp_path, capsys):
    path = tmp_path / "ds"
    rng = np.random.default_rng(0)
    with Dataset.create(path) as ds:
        done = ds.add_image(rng.random((32, 32)), task="ptychography", name="done.npy")
        ds.save_review(done, "ptychography", [Finding("Blurring", None)], reviewer="t")
        names = {}
        for k, (labels, evidence) in enumerate(
            [
                ({"Blurring": 0.9}, None),
                ({"Grid artifacts": 0.55}, None),
                ({"Blurring": 0.9}, {"disagreements": ["the spectrum shows a grid at the scan step"]}),
            ]
        ):
            image_id = ds.add_image(rng.random((32, 32)) * (k + 1), task="ptychography", name=f"{k}.npy")
            ds.save_prediction(image_id, _prediction(labels, evidence))
            names[image_id] = f"{k}.npy"
    assert main(["dataset", "queue", str(path), "--json", "--no-probe", "--n", "0"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["name"] for r in rows} == {"0.npy", "1.npy", "2.npy"}  # the reviewed image is not queued
    by_name = {r["name"]: r for r in rows}
    assert any("unsure whether 'Grid artifacts'" in x for x in by_name["1.npy"]["reasons"])
    assert any("grid at the scan step" in x for x in by_name["2.npy"]["reasons"])
    assert rows[-1]["name"] == "0.npy"  # a confident prediction of a label already reviewed: last

    assert main(["dataset", "queue", str(path), "--order", "file"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2] for line in lines] == ["0.npy", "1.npy", "2.npy"]
    assert all("file order" in line for line in lines)


def test_dataset_queue_uses_the_probe_when_it_can(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from napari_fracto.testing.labelled_cases import ptycho_crops

    path = tmp_path / "ds"
    with Dataset.create(path) as ds:
        for k, case in enumerate(ptycho_crops(12, seed=4)):
            image_id = ds.add_image(case.array, task="ptychography", name=f"{case.case}-{k}")
            if k < 8:
                ds.save_review(
                    image_id, "ptychography", [Finding(x, None) for x in case.labels], reviewer="t"
                )
                ds.set_split([image_id], "train")
    assert main(["dataset", "queue", str(path), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 4
    assert all(0 <= r["signals"]["uncertainty"] <= 1 for r in rows)
    assert all(r["reasons"] for r in rows)
    assert any(r["signals"]["uncertainty"] > 0 for r in rows)  # the probe's probabilities were used
