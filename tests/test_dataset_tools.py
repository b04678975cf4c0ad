"""Dataset tools: info, validate, split, export, import, autolabel, and the `dataset` CLI."""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from napari_fracto.dataset import Dataset, DatasetError, Status
from napari_fracto.dataset import cli as dataset_cli
from napari_fracto.dataset.autolabel import autolabel, read_context_csv
from napari_fracto.dataset.export import export_csv, export_jsonl, export_parquet
from napari_fracto.dataset.importers import import_class_folders, import_ptychobench, parse_answer_labels
from napari_fracto.dataset.split import iterative_stratification, split_dataset
from napari_fracto.dataset.tools import format_info, has_errors, info, validate
from napari_fracto.findings import AnalysisContext, Box, Finding
from napari_fracto.imaging import prepare_model_image
from napari_fracto.testing.scripted import ScriptedBackend


@pytest.fixture
def ds(tmp_path):
    with Dataset.create(tmp_path / "ds") as dataset:
        yield dataset


def _png(path, seed, size=(24, 16)):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, size=(size[1], size[0]), dtype=np.uint8)).save(path)
    return path


def _cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="napari-fracto")
    dataset_cli.add_dataset_parser(parser.add_subparsers())
    args = parser.parse_args(["dataset", *map(str, argv)])
    return args.handler(args)


# --- info and validate ----------------------------------------------------------------------------


def test_info_counts_labels_and_flags_rare_ones(ds):
    for i in range(4):
        image_id = ds.add_image(np.full((4, 4), i, dtype=np.uint8))
        labels = ["cleavage facets", "river patterns"] if i < 3 else ["fatigue striations"]
        ds.save_review(image_id, "fracture", [Finding(lab) for lab in labels])
    pending = ds.add_image(np.full((4, 4), 9, dtype=np.uint8))
    ds.save_review(pending, "fracture", [Finding("hackle")], status="unreviewed")
    report = info(ds, rare=2)
    t = report.tasks["fracture"]
    assert t.statuses == {"reviewed": 4, "unreviewed": 1}
    assert t.labels["cleavage facets"] == {"reviewed": 3, "unreviewed": 0}
    assert t.labels["hackle"] == {"reviewed": 0, "unreviewed": 1}
    assert "fatigue striations" in t.rare
    assert "cleavage facets" not in t.rare
    assert "beach marks" in t.rare  # a vocabulary label never seen is the rarest of all
    text = format_info(report)
    assert "4 / 5 reviewed" in text
    assert any("fatigue striations" in line and "rare" in line for line in text.splitlines())


def test_validate_finds_tampered_image_bad_box_and_unknown_label(ds):
    good = ds.add_image(np.zeros((10, 20), dtype=np.uint8))
    ds.save_review(good, "fracture", [Finding("mist", box=Box(0, 0, 20, 10))])
    assert validate(ds) == []
    tampered = ds.add_image(np.ones((10, 20), dtype=np.uint8))
    ds.save_review(tampered, "fracture", [Finding("hackle")])
    path = ds.image_path(tampered)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"\x07")
    outside = ds.add_image(np.full((10, 20), 2, dtype=np.uint8))
    ds.save_review(outside, "fracture", [Finding("mist", box=Box(15, 2, 25, 8)), Finding("bananas")])
    missing = ds.add_image(np.full((10, 20), 3, dtype=np.uint8))
    ds.image_path(missing).unlink()

    problems = validate(ds)
    text = "\n".join(map(str, problems))
    assert has_errors(problems)
    assert f"image {tampered[:12]}" in text
    assert "changed since it was stored" in text
    assert "x2=25" in text
    assert "outside the 20x10" in text
    assert "'bananas' is not in the fracture vocabulary" in text
    assert "image file missing" in text
    assert len([p for p in problems if p.severity == "error"]) == 4
    assert _cli("validate", ds.root) == 1


# --- split ----------------------------------------------------------------------------------------


def _labelled(ds, n, seed=0):
    rng = np.random.default_rng(seed)
    names = ["cleavage facets", "river patterns", "equiaxed dimples", "fatigue striations", "mist"]
    weights = [0.5, 0.4, 0.3, 0.1, 0.05]
    for i in range(n):
        labels = [lab for lab, w in zip(names, weights, strict=True) if rng.random() < w]
        image_id = ds.add_image(np.full((3, 3), i, dtype=np.uint16))
        ds.save_review(image_id, "fracture", [Finding(lab) for lab in labels])


def test_split_is_deterministic_stratified_and_keeps_the_test_set(ds, tmp_path):
    _labelled(ds, 200)
    counts = split_dataset(ds, seed=7)
    assert counts == {"train": 160, "val": 20, "test": 20}
    first = {i.image_id: i.image.split for i in ds.iter_items()}
    # every label with enough images is spread in about the requested proportions
    for label in ("cleavage facets", "river patterns", "equiaxed dimples", "fatigue striations"):
        having = [i for i in ds.iter_items() if label in i.labels]
        share = Counter(i.image.split for i in having)
        assert abs(share["test"] / len(having) - 0.1) <= 0.05, (label, share)
        assert abs(share["train"] / len(having) - 0.8) <= 0.05, (label, share)
    # same seed, same data, another copy: the same split
    with Dataset.create(tmp_path / "copy") as other:
        _labelled(other, 200)
        split_dataset(other, seed=7)
        assert {i.image_id: i.image.split for i in other.iter_items()} == first
    # new images are added to splits without moving the old ones
    _labelled(ds, 220, seed=1)
    split_dataset(ds, seed=7)
    after = {i.image_id: i.image.split for i in ds.iter_items()}
    assert all(after[k] == v for k, v in first.items())
    assert all(after.values())
    split_dataset(ds, seed=8, reassign=True)
    assert {i.image_id: i.image.split for i in ds.iter_items()} != after


def test_stratification_keeps_rare_labels_in_every_subset():
    sets = [frozenset({"common"})] * 90 + [frozenset({"rare", "common"})] * 10
    subsets = iterative_stratification(sets, [0.8, 0.1, 0.1], seed=0)
    rare = Counter(s for s, labels in zip(subsets, sets, strict=True) if "rare" in labels)
    assert rare == {0: 8, 1: 1, 2: 1}
    with pytest.raises(DatasetError, match="non-negative"):
        iterative_stratification(sets, [0.8, -0.1, 0.3])


# --- export ---------------------------------------------------------------------------------------


def _review_set(ds, shared_data=None):
    plain = ds.add_image(np.arange(40 * 20, dtype=np.uint16).reshape(20, 40))
    ds.save_review(
        plain, "fracture", [Finding("cleavage facets", box=Box(10, 5, 30, 15)), Finding("river patterns")]
    )
    obj = np.exp(1j * np.linspace(0, 3, 30 * 30)).reshape(30, 30).astype(np.complex64)
    ptycho = ds.add_image(obj)
    ds.save_review(
        ptycho,
        "ptychography",
        [Finding("Phase ramp")],
        advice=["Enable position correction"],
        context=AnalysisContext(sample_type="Integrated circuits"),
    )
    skipped = ds.add_image(np.eye(8, dtype=np.uint8) * 200)
    ds.save_review(skipped, "fracture", [], status="skipped")
    ds.set_split([plain], "train")
    ds.set_split([ptycho], "test")
    return plain, ptycho


def test_export_jsonl_is_chat_messages_with_grid_boxes(ds, tmp_path):
    _plain, _ptycho = _review_set(ds)
    out = tmp_path / "sft.jsonl"
    assert export_jsonl(ds, out) == 2
    records = [json.loads(line) for line in out.read_text().splitlines()]
    first = records[0]
    roles = [m["role"] for m in first["messages"]]
    assert roles[-2:] == ["user", "assistant"]
    user = first["messages"][-2]["content"]
    image_part = next(p for p in user if p["type"] == "image")
    # the image the model is shown (32 px multiples within the request's budget), PIL-readable
    shown = prepare_model_image(ds.image_array(_plain), 1024)
    assert Image.open(image_part["image"]).size == shown.size
    assert np.array_equal(np.asarray(Image.open(image_part["image"])), np.asarray(shown))
    assert first["request"]["task"] == "fracture"
    answer = json.loads(first["messages"][-1]["content"][0]["text"])
    assert answer["labels"][0] == {"label": "cleavage facets", "bbox_2d": [250, 250, 750, 750]}
    assert answer["labels"][1] == {"label": "river patterns"}
    second = records[1]
    prompt_text = " ".join(
        p["text"] for m in second["messages"][:-1] for p in m["content"] if p["type"] == "text"
    )
    assert "Integrated circuits" in prompt_text
    assert json.loads(second["messages"][-1]["content"][0]["text"])["advice"] == [
        "Enable position correction"
    ]
    assert (first["split"], second["split"]) == ("train", "test")


def test_export_parquet_loads_with_datasets_including_images(ds, tmp_path):
    import datasets

    _plain, _ptycho = _review_set(ds)
    files = export_parquet(ds, tmp_path / "hf")
    assert set(files) == {"train", "test"}
    loaded = datasets.load_dataset(
        "parquet", data_dir=str(tmp_path / "hf"), cache_dir=str(tmp_path / "cache")
    )
    assert set(loaded) == {"train", "test"}
    row = loaded["test"][0]
    assert row["labels"] == ["Phase ramp"]
    assert row["task"] == "ptychography"
    assert row["image"].size == prepare_model_image(ds.image_array(_ptycho), 1024).size
    assert row["image"].mode == "RGB"
    assert json.loads(row["answer"])["labels"] == [{"label": "Phase ramp"}]
    assert loaded["train"][0]["image"].size == prepare_model_image(ds.image_array(_plain), 1024).size


def test_export_csv_has_one_row_per_finding(ds, tmp_path):
    plain, _ = _review_set(ds)
    out = tmp_path / "labels.csv"
    assert export_csv(ds, out, task="fracture") == 2
    rows = list(csv.DictReader(out.open()))
    assert [r["label"] for r in rows] == ["cleavage facets", "river patterns"]
    assert rows[0]["image_id"] == plain
    assert float(rows[0]["x2"]) == 30.0
    assert rows[1]["x1"] == ""
    with pytest.raises(DatasetError, match="nothing to export"):
        export_csv(ds, out, task="fracture", split="val")


# --- import ---------------------------------------------------------------------------------------


def _ptychobench(root):
    images = root / "images"
    samples = {"train": [], "test": []}
    answers = [
        ("train", "<answer>[Grid artifacts, Phase ramp]</answer>", "Integrated circuits"),
        ("train", "Reasoning first. <answer>[No obvious artifacts]</answer>", "NCM batteries"),
        ("test", "<answer>[halo, Wobbly artifacts]</answer>", "Biological specimens"),
    ]
    for i, (split, answer, sample_type) in enumerate(answers):
        name = f"af70{i}-object_ph_Niter400.png"
        _png(images / name, i)
        samples[split].append(
            {
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "Identify artifacts."},
                        {"type": "image", "image_path": f"/data/upload/1/{name}"},
                    ]},
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                ],
                "metadata": {"sample_type": sample_type, "instrument": "Velociprobe"},
            }
        )  # fmt: skip
    ann = root / "annotations" / "artifact_detection_split"
    ann.mkdir(parents=True)
    for split, items in samples.items():
        (ann / f"{split}.json").write_text(json.dumps(items))
    return root


def test_import_ptychobench_maps_labels_splits_and_context(ds, tmp_path):
    root = _ptychobench(tmp_path / "ptychobench_dataset")
    summary = import_ptychobench(ds, root)
    assert (summary.images, summary.reviews) == (3, 3)
    assert summary.splits == {"train": 2, "test": 1}
    assert summary.unknown_labels == {"Wobbly artifacts": 1}
    items = sorted(ds.iter_items(task="ptychography"), key=lambda i: i.image.original_name)
    assert [i.labels for i in items] == [
        ["Grid artifacts", "Phase ramp"], ["No obvious artifacts"], ["Halo artifacts"],
    ]  # fmt: skip
    assert items[0].review.context.sample_type == "Integrated circuits"
    assert "instrument: Velociprobe" in items[0].review.context.notes
    assert "Wobbly artifacts" in items[2].review.notes
    assert [i.image.split for i in items] == ["train", "train", "test"]
    again = import_ptychobench(ds, root)  # importing twice adds nothing
    assert (again.reviews, again.unchanged, ds.review_count()) == (0, 3, 3)
    assert parse_answer_labels("[Blurring, 'Low contrast']") == ["Blurring", "Low contrast"]


def test_import_class_folders_uses_synonyms_and_merges_multi_label(ds, tmp_path):
    root = tmp_path / "classes"
    _png(root / "cleavage facets" / "a.png", 1)
    _png(root / "River-Patterns" / "a_copy.png", 1)  # same image, second label, synonym-style spelling
    _png(root / "river patterns" / "b.png", 2)
    _png(root / "not a label" / "c.png", 3)
    (root / "cleavage facets" / "readme.md").write_text("notes")
    summary = import_class_folders(ds, root, task="fracture")
    assert summary.images == 2
    assert summary.reviews == 2
    assert summary.unknown_labels == {"not a label": 1}
    assert any("readme.md" in s for s in summary.skipped)
    labels = {i.image.original_name: sorted(i.labels) for i in ds.iter_items()}
    assert labels == {"a.png": ["cleavage facets", "river patterns"], "b.png": ["river patterns"]}


# --- autolabel ------------------------------------------------------------------------------------


def test_autolabel_stores_unreviewed_predictions_with_context(ds, tmp_path):
    folder = tmp_path / "incoming"
    _png(folder / "one.png", 1, size=(40, 20))
    _png(folder / "two.png", 2, size=(40, 20))
    (folder / "one.txt").write_text("Figure 3: cleavage of a Ti alloy")
    (folder / "broken.png").write_bytes(b"not an image")
    table = tmp_path / "ctx.csv"
    table.write_text("filename,material,caption\ntwo.png,alumina,intergranular fracture\n")
    contexts = read_context_csv(table, text_column="caption")
    backend = ScriptedBackend('{"labels": [{"label": "cleavage facets", "bbox_2d": [0, 0, 500, 1000]}]}')
    summary = autolabel(ds, [folder], task="fracture", backend=backend, contexts=contexts)
    assert summary.predicted == 2
    assert len(summary.failures) == 1
    assert "broken.png" in summary.failures[0][0]
    items = {i.image.original_name: i for i in ds.iter_items()}
    one = items["one.png"].review
    assert one.status is Status.UNREVIEWED
    assert one.backend == "scripted"
    assert one.corrected == (Finding("cleavage facets", None, Box(0, 0, 20, 20)),)
    assert one.context.notes == "Figure 3: cleavage of a Ti alloy"
    two = items["two.png"].review.context
    assert (two.material, two.notes) == ("alumina", "intergranular fracture")
    sent = [p for r in backend.requests for t in r.turns for p in t.parts if isinstance(p, str)]
    assert any("Figure 3: cleavage of a Ti alloy" in p for p in sent)
    again = autolabel(ds, [folder], task="fracture", backend=backend)  # already labelled: no new calls
    assert again.predicted == 0
    assert again.already_labelled == 2
    assert len(backend.requests) == 2


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_round_trip(tmp_path, capsys):
    root = tmp_path / "cli-ds"
    assert _cli("create", root, "--name", "lab") == 0
    classes = tmp_path / "classes"
    for i in range(6):
        _png(classes / ("cleavage facets" if i % 2 else "equiaxed dimples") / f"{i}.png", i)
    assert _cli("import", root, classes, "--format", "folders", "--task", "fracture") == 0
    assert _cli("split", root, "--seed", "3", "--fractions", "0.5", "0.25", "0.25") == 0
    assert _cli("validate", root) == 0
    assert _cli("export", root, tmp_path / "labels.csv") == 0
    capsys.readouterr()
    assert _cli("info", root, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tasks"]["fracture"]["statuses"] == {"reviewed": 6}
    assert sum(report["tasks"]["fracture"]["splits"].values()) == 6
    assert len(list(csv.DictReader((tmp_path / "labels.csv").open()))) == 6
    assert _cli("info", tmp_path / "nowhere") == 2
    assert "no dataset at" in capsys.readouterr().err
