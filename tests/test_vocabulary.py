"""Vocabularies: the built-in label sets, tolerant matching, and user extension files."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from napari_fracto.vocabulary import (
    Label,
    Vocabulary,
    VocabularyError,
    available_tasks,
    load_vocabulary,
    normalize,
)

PTYCHOBENCH_ARTIFACTS = [
    "Grid artifacts",
    "Halo artifacts",
    "Line artifacts",
    "Local distortion",
    "Low contrast",
    "No clear structure",
    "Noisy artifacts",
    "Non-uniform background",
    "Phase ramp",
    "Singularity artifacts",
    "Blurring",
    "No obvious artifacts",
]


@pytest.fixture(autouse=True)
def user_dir(tmp_path, monkeypatch):
    """Every test gets its own (empty) user vocabulary folder, never the real config dir."""
    folder = tmp_path / "vocabularies"
    folder.mkdir()
    monkeypatch.setenv("NAPARI_FRACTO_VOCAB_DIR", str(folder))
    return folder


def test_builtin_tasks_are_listed():
    assert {"fracture", "ptychography", "ptychography-advice"} <= set(available_tasks())


def test_ptychography_has_exactly_the_ptychobench_classes():
    vocab = load_vocabulary("ptychography")
    assert vocab.names() == PTYCHOBENCH_ARTIFACTS
    assert vocab.exclusive_labels == ("No obvious artifacts",)


def test_advice_has_the_24_ptychobench_recommendations():
    vocab = load_vocabulary("ptychography-advice")
    assert len(vocab.names()) == 24 == len(set(vocab.names()))
    assert {"Enable position correction", "Increase number of probe modes", "No changes needed"} <= set(
        vocab.names()
    )
    assert vocab.exclusive_labels == ("No changes needed",)
    assert "draft" not in vocab.version  # all 24 names were found in the PtychoBench code


def test_every_label_has_a_one_line_definition():
    for task in ("fracture", "ptychography", "ptychography-advice"):
        for label in load_vocabulary(task).labels:
            assert label.definition.strip(), (task, label.name)
            assert "\n" not in label.definition, (task, label.name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cleavage facets", "cleavage facets"),
        ("Cleavage Facet", "cleavage facets"),
        ("  cleavage_facets ", "cleavage facets"),
        ("transgranular cleavage", "cleavage facets"),
        ("MVC", "equiaxed dimples"),
        ("microvoid coalescence", "equiaxed dimples"),
        ("Dimple rupture", "equiaxed dimples"),
        ("elongated (shear) dimples", "elongated dimples"),
        ("intergranular fracture", "intergranular facets"),
        ("Inclusions / second-phase particles", "inclusions"),
        ("lack of fusion", "lack-of-fusion defects"),
        ("tyre tracks", "tire tracks"),
        ("quasi cleavage", "quasi-cleavage"),
        ("beachmarks", "beach marks"),
        ("striations", "fatigue striations"),
        ("fracture mirror", "fracture mirror"),
        ("hackle lines", "hackle"),
    ],
)
def test_fracture_names_and_synonyms_map_to_canonical(text, expected):
    assert load_vocabulary("fracture").canonical(text) == expected


def test_unknown_text_is_not_matched():
    vocab = load_vocabulary("fracture")
    assert vocab.canonical("Wallner lines") is None
    assert vocab.canonical("") is None
    assert vocab.canonical(None) is None  # type: ignore[arg-type]


def test_ptychography_matching_is_case_and_hyphen_insensitive():
    vocab = load_vocabulary("ptychography")
    assert vocab.canonical("non uniform background") == "Non-uniform background"
    assert vocab.canonical("PHASE RAMPS") == "Phase ramp"
    assert vocab.canonical("halo") == "Halo artifacts"
    assert vocab.canonical("no artefacts") == "No obvious artifacts"


def test_get_returns_label_and_explains_unknown_names():
    vocab = load_vocabulary("fracture")
    assert vocab.get("MVC").name == "equiaxed dimples"
    with pytest.raises(KeyError, match="cleavage facets"):
        vocab.get("unicorn marks")


def test_normalize_is_plural_and_punctuation_insensitive():
    assert normalize("Tear-Ridges") == normalize("tear ridge")
    assert normalize("river_patterns") == normalize("River pattern")
    assert normalize("fatigue  striations.") == normalize("fatigue striation")


def test_unknown_task_error_lists_known_tasks():
    with pytest.raises(VocabularyError, match="fracture") as info:
        load_vocabulary("histology")
    assert "ptychography" in str(info.value)


def test_synonym_clash_is_rejected():
    with pytest.raises(VocabularyError, match="both"):
        Vocabulary("t", "1", "T", (Label("a", "A.", ("x",)), Label("b", "B.", ("X",))))


def test_user_file_adds_synonyms_labels_and_overrides_definitions(user_dir):
    (user_dir / "fracture.toml").write_text(
        """
version = "lab-2"

[[labels]]
name = "cleavage facets"
definition = "Our lab's definition."
synonyms = ["shiny flats"]

[[labels]]
name = "Wallner lines"
definition = "Curved ripples on glass fracture surfaces from stress-wave interaction."
synonyms = ["wallner ripples"]
""",
        encoding="utf-8",
    )
    vocab = load_vocabulary("fracture")
    assert vocab.version == "1.0+lab-2"
    assert vocab.canonical("shiny flats") == "cleavage facets"
    assert vocab.canonical("transgranular cleavage") == "cleavage facets"  # built-in synonyms kept
    assert vocab.get("cleavage facets").definition == "Our lab's definition."
    assert vocab.canonical("Wallner ripples") == "Wallner lines"
    assert vocab.names()[-1] == "Wallner lines"


def test_user_file_can_define_a_new_task(user_dir):
    (user_dir / "weld-defects.toml").write_text(
        'title = "Weld radiographs"\n\n[[labels]]\nname = "porosity"\ndefinition = "Round voids."\n',
        encoding="utf-8",
    )
    assert "weld-defects" in available_tasks()
    vocab = load_vocabulary("weld-defects")
    assert vocab.title == "Weld radiographs"
    assert vocab.names() == ["porosity"]


def test_user_edits_are_picked_up_without_restart(user_dir):
    path = user_dir / "fracture.toml"
    path.write_text('[[labels]]\nname = "mist"\nsynonyms = ["haze"]\n', encoding="utf-8")
    assert load_vocabulary("fracture").canonical("haze") == "mist"
    path.write_text('[[labels]]\nname = "mist"\nsynonyms = ["fog"]\n', encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    vocab = load_vocabulary("fracture")
    assert vocab.canonical("fog") == "mist"
    assert vocab.canonical("haze") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("labels = [", "not valid TOML"),
        ('[[labels]]\nname = "new thing"\n', "needs a definition"),
        ('[[labels]]\nname = "x"\ndefinition = "d"\ncolour = "red"\n', "colour"),
        ('[[labels]]\nname = "x"\ndefinition = "d"\nsynonyms = ["MVC"]\n', "both"),
    ],
)
def test_bad_user_file_gives_a_message_naming_the_file(user_dir, content, message):
    path = user_dir / "fracture.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(VocabularyError, match=message) as info:
        load_vocabulary("fracture")
    assert str(path) in str(info.value)


SHARED_LABELS = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "ptychography" / "ptychi-sim" / "labels.csv"
)


@pytest.mark.skipif(not SHARED_LABELS.is_file(), reason="shared test data (../shared/data) not present")
def test_curated_labels_of_the_shared_reconstructions_are_all_canonical_names():
    vocab = load_vocabulary("ptychography")
    with SHARED_LABELS.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    for row in rows:
        for name in row["ptychobench_labels"].split(";"):
            assert name in vocab.names(), (row["file"], name)


def test_advice_lists_go_with_their_task_and_are_not_tasks_themselves(tmp_path, monkeypatch):
    from napari_fracto.vocabulary import advice_vocabulary, analysis_tasks

    assert len(advice_vocabulary("ptychography").names()) == 24
    assert advice_vocabulary("fracture") is None
    assert "ptychography" in analysis_tasks()
    assert "ptychography-advice" not in analysis_tasks()
    # A lab's own task gets advice by adding `<task>-advice.toml` beside it.
    monkeypatch.setenv("NAPARI_FRACTO_VOCAB_DIR", str(tmp_path))
    (tmp_path / "weld.toml").write_text(
        'title = "Weld fractography"\n[[labels]]\nname = "porosity"\ndefinition = "Gas pores."\n'
    )
    (tmp_path / "weld-advice.toml").write_text(
        'title = "Weld fixes"\n[[labels]]\nname = "Lower the heat input"\ndefinition = "Less energy."\n'
    )
    assert advice_vocabulary("weld").names() == ["Lower the heat input"]
    assert "weld" in analysis_tasks()
    assert "weld-advice" not in analysis_tasks()
