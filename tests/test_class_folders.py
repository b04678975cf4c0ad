"""Class-folder imports of real collections: failure-mode folders, word matching, --map, dry run."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from napari_fracto.dataset import Dataset, DatasetError
from napari_fracto.dataset import cli as dataset_cli
from napari_fracto.dataset.label_mapping import match_folder, parse_mapping, read_mapping_file
from napari_fracto.vocabulary import load_vocabulary

MODES = load_vocabulary("fracture-mode")
FEATURES = load_vocabulary("fracture")


def _png(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 24), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="napari-fracto")
    dataset_cli.add_dataset_parser(parser.add_subparsers())
    args = parser.parse_args(["dataset", *map(str, argv)])
    return args.handler(args)


def _collection(root, names):
    for i, name in enumerate(names):
        _png(root / name / f"{i}a.png", 2 * i)
        _png(root / name / f"{i}b.png", 2 * i + 1)


@pytest.mark.parametrize(
    ("folder", "label"),
    [
        ("Ductile", "ductile overload"),
        ("Intergranular Brittle", "brittle intergranular"),
        ("Transgranular Brittle", "brittle transgranular"),
        ("fatigue", "fatigue"),
        ("static", "static overload"),
        ("03_Fatigue_images", "fatigue"),
    ],
)
def test_real_failure_mode_folder_names_match(folder, label):
    assert match_folder(folder, MODES).labels == (label,)


def test_words_of_a_folder_name_find_a_feature_synonym():
    match = match_folder("Intergranular Brittle", FEATURES)
    assert match.labels == ("intergranular facets",)
    assert "intergranular" in match.how


def test_two_labels_matching_equally_is_ambiguous_not_guessed():
    match = match_folder("striations and dimples", FEATURES)
    assert match.labels == ()
    assert "ambiguous" in match.how
    assert "--map" in match.how


def test_mapping_wins_and_a_bad_mapping_target_is_refused(tmp_path):
    mapping = parse_mapping(["Ductile=fatigue", "Other="], MODES)
    assert match_folder("ductile", MODES, mapping).labels == ("fatigue",)
    assert match_folder("OTHER", MODES, mapping).how == "skipped by the mapping"
    with pytest.raises(DatasetError, match="not a fracture-mode label"):
        parse_mapping(["Ductile=unicorns"], MODES)
    with pytest.raises(DatasetError, match="FOLDER=LABEL"):
        parse_mapping(["Ductile"], MODES)
    toml = tmp_path / "map.toml"
    toml.write_text('"Weird A" = "fatigue"\n"Weird B" = ["ductile", "static"]\n')
    assert read_mapping_file(toml, MODES) == {
        "weird a": ("fatigue",),
        "weird b": ("ductile overload", "static overload"),
    }
    lines = tmp_path / "map.txt"
    lines.write_text("# folder=label\nWeird A=mixed\n")
    assert read_mapping_file(lines, MODES) == {"weird a": ("mixed mode",)}


def test_cli_imports_a_mode_labelled_collection_with_a_map(tmp_path, capsys):
    classes = tmp_path / "classes"
    _collection(classes, ["Ductile", "Intergranular Brittle", "Transgranular Brittle", "fatigue", "Odd"])
    code = _cli("import", tmp_path / "ds", classes, "--format", "folders", "--task", "fracture-mode",
                "--map", "Odd=mixed")  # fmt: skip
    assert code == 0, capsys.readouterr()
    with Dataset.open(tmp_path / "ds") as ds:
        labels = {i.image.original_name: i.labels for i in ds.iter_items()}
    assert len(labels) == 10
    assert labels["0a.png"] == ["ductile overload"]
    assert labels["1a.png"] == ["brittle intergranular"]
    assert labels["4b.png"] == ["mixed mode"]


def test_dry_run_shows_the_mapping_and_writes_nothing(tmp_path, capsys):
    classes = tmp_path / "classes"
    _collection(classes, ["Ductile", "Unknowable"])
    code = _cli("import", tmp_path / "ds", classes, "--format", "folders", "--task", "fracture-mode",
                "--dry-run")  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "'Ductile' (2 file(s)) -> ductile overload" in out
    assert "'Unknowable' (2 file(s)) -> (not imported)" in out
    assert not (tmp_path / "ds").exists()


def test_a_collection_that_maps_to_nothing_leaves_no_dataset(tmp_path, capsys):
    classes = tmp_path / "classes"
    _collection(classes, ["Ductile", "static"])
    code = _cli("import", tmp_path / "ds", classes, "--format", "folders", "--task", "ptychography")
    err = capsys.readouterr().err
    assert code == 2
    assert "--map" in err
    assert "'Ductile'" in err
    assert not (tmp_path / "ds").exists()


def test_a_created_dataset_is_removed_when_no_image_could_be_stored(tmp_path, capsys):
    classes = tmp_path / "classes"
    (classes / "fatigue").mkdir(parents=True)
    (classes / "fatigue" / "broken.png").write_bytes(b"not a png")
    empty_target = tmp_path / "ds"
    empty_target.mkdir()  # an empty folder given for the dataset stays, empty
    code = _cli("import", empty_target, classes, "--format", "folders", "--task", "fracture-mode")
    assert code == 2
    assert "no dataset was left" in capsys.readouterr().err
    assert empty_target.is_dir()
    assert not any(empty_target.iterdir())


def test_an_existing_dataset_is_never_removed(tmp_path, capsys):
    with Dataset.create(tmp_path / "ds") as ds:
        assert len(ds) == 0
    classes = tmp_path / "classes"
    (classes / "fatigue").mkdir(parents=True)
    (classes / "fatigue" / "broken.png").write_bytes(b"not a png")
    assert _cli("import", tmp_path / "ds", classes, "--format", "folders", "--task", "fracture-mode") == 1
    assert (tmp_path / "ds" / "dataset.sqlite").is_file()
