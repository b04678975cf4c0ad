"""Metrics against cases computed by hand, and the bootstrap's reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_fracto.metrics import OUTSIDE_VOCABULARY, ImageOutcome, score

FRACTURE = ["dimples", "cleavage facets", "fatigue striations"]
PTYCHO = ["No obvious artifacts", "Ringing", "Noise"]


def fracture_case() -> list[ImageOutcome]:
    return [
        ImageOutcome.make({"dimples", "cleavage facets"}, {"dimples"}, seconds=1.0),
        ImageOutcome.make(set(), {"fatigue striations"}, seconds=2.0),  # parsed, but names nothing
        ImageOutcome.make({"dimples"}, {"cleavage facets"}, parse_ok=False, seconds=4.0),  # unparseable
        ImageOutcome.make({"dimples", "banana"}, {"dimples", "fatigue striations"}, seconds=9.0),
    ]


def by_label(scores):
    return {s.label: s for s in scores.per_label}


def test_hand_computed_fracture_case():
    s = score(fracture_case(), FRACTURE, resamples=0)
    # TP: dimples x2. FP: cleavage facets, banana. FN: fatigue striations x2, cleavage facets.
    assert s.micro_precision == pytest.approx(2 / 4)
    assert s.micro_recall == pytest.approx(2 / 5)
    assert s.micro_f1 == pytest.approx(4 / 9)
    labels = by_label(s)
    assert (labels["dimples"].tp, labels["dimples"].fp, labels["dimples"].fn) == (2, 0, 0)
    assert (labels["cleavage facets"].tp, labels["cleavage facets"].fp, labels["cleavage facets"].fn) == (
        0,
        1,
        1,
    )
    assert labels["fatigue striations"].support == 2
    assert labels["fatigue striations"].f1 == 0
    assert s.macro_f1 == pytest.approx((1 + 0 + 0) / 3)
    # Set precision: 1/2, empty (0), unparseable = empty (0), 1 of 2 (banana is wrong).
    assert s.set_precision == pytest.approx((0.5 + 0 + 0 + 0.5) / 4)
    assert s.parse_failures == 1
    assert s.parse_failure_rate == pytest.approx(0.25)
    assert s.latency_mean == pytest.approx(4.0)
    assert s.latency_median == pytest.approx(3.0)


def test_label_outside_vocabulary_is_a_false_positive_with_its_own_row():
    s = score(fracture_case(), FRACTURE, resamples=0)
    outside = by_label(s)[OUTSIDE_VOCABULARY]
    assert (outside.tp, outside.fp, outside.fn) == (0, 1, 0)
    clean = score([ImageOutcome.make({"dimples"}, {"dimples"})], FRACTURE, resamples=0)
    assert OUTSIDE_VOCABULARY not in by_label(clean)
    assert clean.micro_precision == 1.0
    polluted = score([ImageOutcome.make({"dimples", "unicorns"}, {"dimples"})], FRACTURE, resamples=0)
    assert polluted.micro_precision == pytest.approx(0.5)
    assert polluted.set_precision == pytest.approx(0.5)
    assert polluted.macro_f1 == 1.0  # macro averages vocabulary labels only


def test_empty_prediction_on_empty_truth_is_right_without_an_exclusive_label():
    s = score([ImageOutcome.make(set(), set())], FRACTURE, resamples=0)
    assert s.set_precision == 1.0
    assert math.isnan(s.micro_f1)  # nothing to count either way


def test_exclusive_label_is_a_class_and_empty_means_it():
    outcomes = [
        ImageOutcome.make(set(), set()),  # both "found nothing": a true positive of the exclusive class
        ImageOutcome.make({"No obvious artifacts", "Ringing"}, {"Ringing"}),  # contradictory answer
        ImageOutcome.make({"No obvious artifacts"}, {"Noise"}),
        ImageOutcome.make(set(), set(), parse_ok=False),  # unparseable gets no credit on a clean image
    ]
    s = score(outcomes, PTYCHO, exclusive=["No obvious artifacts"], resamples=0)
    labels = by_label(s)
    noa = labels["No obvious artifacts"]
    assert (noa.tp, noa.fp, noa.fn) == (1, 2, 1)
    assert noa.f1 == pytest.approx(2 / 5)
    assert labels["Ringing"].f1 == 1.0
    assert labels["Noise"].f1 == 0.0
    assert s.micro_f1 == pytest.approx(4 / 8)
    assert s.macro_f1 == pytest.approx((0.4 + 1 + 0) / 3)
    assert s.set_precision == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    assert s.contradictions == 1


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="no images"):
        score([], FRACTURE)
    with pytest.raises(ValueError, match="10000"):
        score(fracture_case(), FRACTURE, resamples=10_001)
    with pytest.raises(ValueError, match="confidence"):
        score(fracture_case(), FRACTURE, confidence=95)


def test_bootstrap_is_reproducible_and_seed_dependent():
    rng = np.random.default_rng(5)
    outcomes = [
        ImageOutcome.make(
            {FRACTURE[i] for i in range(3) if rng.random() < 0.5},
            {FRACTURE[i] for i in range(3) if rng.random() < 0.5},
            seconds=float(rng.random()),
        )
        for _ in range(30)
    ]
    a = score(outcomes, FRACTURE, resamples=500, seed=1)
    b = score(outcomes, FRACTURE, resamples=500, seed=1)
    c = score(outcomes, FRACTURE, resamples=500, seed=2)
    assert a.ci == b.ci
    assert a.ci["micro_f1"] != c.ci["micro_f1"]
    for name in ("micro_f1", "macro_f1", "set_precision", "latency_mean"):
        lo, hi = a.ci[name]
        assert lo <= getattr(a, name) <= hi
        assert lo < hi


def test_bootstrap_matches_resampling_by_hand():
    outcomes = fracture_case() * 3
    n, resamples = len(outcomes), 200
    s = score(outcomes, FRACTURE, resamples=resamples, seed=7)
    picks = np.random.default_rng(7).integers(0, n, size=(resamples, n))
    values = [score([outcomes[i] for i in row], FRACTURE, resamples=0).micro_f1 for row in picks]
    expected = np.quantile(values, [0.025, 0.975])
    assert s.ci["micro_f1"] == pytest.approx(tuple(expected))


def test_perfect_predictions_have_a_degenerate_interval_and_json_output():
    outcomes = [ImageOutcome.make({"dimples"}, {"dimples"}, seconds=0.5)] * 5
    s = score(outcomes, FRACTURE, resamples=100)
    assert s.ci["micro_f1"] == (1.0, 1.0)
    data = s.to_dict()
    assert data["micro_f1"] == 1.0
    assert data["ci"]["micro_f1"] == [1.0, 1.0]
    assert data["per_label"][0]["support"] == 5
