"""Two levels: features imply failure modes, mode-level collections are a task, evaluation scores both."""

from __future__ import annotations

import pytest

from napari_fracto.failure_modes import implied_modes, mode_vocabulary, score_both_levels
from napari_fracto.metrics import ImageOutcome
from napari_fracto.vocabulary import VocabularyError, load_vocabulary

FEATURES = load_vocabulary("fracture")


@pytest.mark.parametrize(
    ("labels", "modes"),
    [
        (["dimples"], ["ductile overload"]),
        (["cleavage facets", "river patterns"], ["brittle transgranular"]),
        (["rock candy"], ["brittle intergranular"]),
        (["striations", "beach marks", "ratchet marks"], ["fatigue"]),
        (["beach marks", "equiaxed dimples"], ["ductile overload", "fatigue"]),
        (["fatigue", "inclusions"], ["fatigue"]),  # a mode label is kept; inclusions imply no mode
        (["hackle", "Wallner lines"], []),
    ],
)
def test_features_imply_the_failure_mode(labels, modes):
    assert implied_modes(FEATURES, labels) == modes


def test_the_mode_level_is_a_task_of_its_own():
    modes = mode_vocabulary(FEATURES)
    assert modes.task == "fracture-mode"
    assert "ductile overload" in modes.names()
    assert load_vocabulary("ptychography").mode_task == ""
    assert implied_modes(load_vocabulary("ptychography"), ["Grid artifacts"]) == []


def test_a_feature_implying_an_unknown_mode_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_FRACTO_VOCAB_DIR", str(tmp_path))
    (tmp_path / "fracture.toml").write_text(
        '[[labels]]\nname = "cleavage facets"\nimplies = ["cosmic rays"]\n', encoding="utf-8"
    )
    with pytest.raises(VocabularyError, match="cosmic rays"):
        mode_vocabulary(load_vocabulary("fracture"))


def test_user_labels_can_add_implications(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_FRACTO_VOCAB_DIR", str(tmp_path))
    (tmp_path / "fracture.toml").write_text(
        '[[labels]]\nname = "hydrogen flakes"\ndefinition = "Bright flakes from hydrogen."\n'
        'implies = ["brittle intergranular"]\n',
        encoding="utf-8",
    )
    assert implied_modes(load_vocabulary("fracture"), ["hydrogen flakes"]) == ["brittle intergranular"]


def test_evaluation_scores_features_and_the_modes_they_imply():
    outcomes = [
        # wrong feature (elongated, not equiaxed dimples) but the right mode
        ImageOutcome.make(["elongated dimples"], ["equiaxed dimples"]),
        # right feature and mode
        ImageOutcome.make(["fatigue striations"], ["fatigue striations"]),
        # a mode-labelled truth (from a "Ductile" folder) against a feature prediction
        ImageOutcome.make(["cleavage facets"], ["ductile overload"]),
    ]
    features, modes = score_both_levels(FEATURES, outcomes, resamples=0)
    assert features.micro_f1 == pytest.approx(1 / 3, abs=0.01)  # 1 of 3 predicted features right
    assert modes.n_images == 3
    assert modes.micro_precision == pytest.approx(2 / 3)  # ductile, fatigue right; transgranular wrong
    by_label = {s.label: s for s in modes.per_label}
    assert (by_label["ductile overload"].tp, by_label["ductile overload"].fn) == (1, 1)
    assert by_label["brittle transgranular"].fp == 1
