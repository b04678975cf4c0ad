"""Scores of multi-label predictions against corrected labels, with bootstrap confidence intervals.

Pure (numpy only). The scoring rules, chosen so both seed papers' numbers can be reproduced:

- Per image the prediction and the truth are *sets* of labels (duplicates and boxes do not matter).
- Unparseable output is an empty prediction (every true label is missed), and it is also counted on its
  own as the parse-failure rate.
- A label outside the vocabulary is a false positive: it counts in micro precision/F1 and in the set
  precision, and is listed in the "(outside vocabulary)" row; macro-F1 averages vocabulary labels only.
- Exclusive labels ("No obvious artifacts", "No changes needed") are ordinary classes, as in PtychoBench.
  When the vocabulary has exactly one, a *parsed* empty answer and an empty corrected set both mean that
  label ("the model / the reviewer found nothing"). A contradictory prediction (the exclusive label plus
  others) is scored as given: the truth never holds both, so one side is always a false positive; such
  predictions are also counted (`contradictions`).
- Set precision (the fracture seed's metric) is the mean over images of |pred ∩ true| / |pred|. An empty
  prediction scores 1 when the truth is empty too, else 0, so a silent model never looks precise.
- Macro-F1 is the mean F1 over vocabulary labels that occur in the truth or the predictions of the
  evaluated images (a label nobody used has no defined F1 and is left out).
- Confidence intervals: percentile bootstrap over images (resampled with replacement), seeded numpy
  Generator, so the same seed gives the same interval.

`PTYCHOBENCH` rules (`score(..., rules=PTYCHOBENCH)`) are those of PtychoBench's own evaluation code
(`evaluation/ptychobench_loader.py`, `evaluation/bootstrap.py`): an empty prediction is all zeros (not
the exclusive label), labels outside the vocabulary are dropped (not false positives), a contradictory
answer keeps both sides as any other multi-label answer, micro P/R/F1 with zero_division=0, and the
interval from `np.random.seed(42)` then `np.random.choice(n, n, replace=True)` per resample, 10,000
resamples, no resample dropped. The truth is read the same way in both: an empty corrected set is the
reviewer's "found nothing", the exclusive label.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

OUTSIDE_VOCABULARY = "(outside vocabulary)"
DEFAULT_RESAMPLES = 1000
MAX_RESAMPLES = 10_000
# Metrics that get a bootstrap interval.
CI_METRICS = (
    "micro_precision",
    "micro_recall",
    "micro_f1",
    "macro_f1",
    "set_precision",
    "parse_failure_rate",
    "latency_mean",
)


@dataclass(frozen=True)
class Rules:
    """How predicted label sets are scored and how intervals are drawn (see the module docstring)."""

    name: str
    empty_is_exclusive: bool  # a parsed empty prediction means the exclusive label
    count_outside: bool  # labels outside the vocabulary are false positives (else dropped)
    bootstrap: str  # "generator": default_rng, NaN resamples dropped; "ptychobench": as bootstrap.py
    resamples: int  # default number of resamples
    seed: int | None  # the bootstrap seed these rules fix (None: the caller's seed)


DEFAULT = Rules("default", True, True, "generator", DEFAULT_RESAMPLES, None)
PTYCHOBENCH = Rules("ptychobench", False, False, "ptychobench", MAX_RESAMPLES, 42)
RULES = {r.name: r for r in (DEFAULT, PTYCHOBENCH)}


@dataclass(frozen=True)
class ImageOutcome:
    """One image: what the model said (labels as parsed, unknown ones included) and what is true."""

    predicted: frozenset[str]
    true: frozenset[str]
    parse_ok: bool = True
    seconds: float | None = None
    image_id: str = ""

    @classmethod
    def make(
        cls,
        predicted: Iterable[str],
        true: Iterable[str],
        *,
        parse_ok: bool = True,
        seconds: float | None = None,
        image_id: str = "",
    ) -> ImageOutcome:
        """Build from any label iterables; an unparseable answer keeps no predicted labels."""
        return cls(
            frozenset(predicted) if parse_ok else frozenset(),
            frozenset(true),
            parse_ok,
            seconds,
            image_id,
        )


@dataclass(frozen=True)
class LabelScore:
    label: str
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float

    @property
    def support(self) -> int:
        return self.tp + self.fn


@dataclass
class Scores:
    """Everything one configuration scored; `ci` maps a metric name to its (low, high) interval."""

    n_images: int
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_f1: float
    set_precision: float
    parse_failures: int
    parse_failure_rate: float
    contradictions: int
    latency_mean: float
    latency_median: float
    per_label: list[LabelScore] = field(default_factory=list)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    confidence: float = 0.95
    resamples: int = 0
    seed: int = 0
    rules: str = DEFAULT.name
    # Mean and standard deviation of each metric over the resamples (bootstrap.py's Mean and Std).
    bootstrap_mean: dict[str, float] = field(default_factory=dict)
    bootstrap_std: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None)."""
        data = asdict(self)
        data["per_label"] = [
            {k: _json_float(v) if isinstance(v, float) else v for k, v in asdict(s).items()}
            | {"support": s.support}
            for s in self.per_label
        ]
        data["ci"] = {k: [_json_float(lo), _json_float(hi)] for k, (lo, hi) in self.ci.items()}
        for name in ("bootstrap_mean", "bootstrap_std"):
            data[name] = {k: _json_float(v) for k, v in data[name].items()}
        return {k: _json_float(v) if isinstance(v, float) else v for k, v in data.items()}


def _json_float(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def normalise(labels: frozenset[str], exclusive: Sequence[str]) -> frozenset[str]:
    """An empty set means the vocabulary's single exclusive label ("found nothing"), if it has one."""
    if not labels and len(exclusive) == 1:
        return frozenset(exclusive)
    return labels


def _matrices(
    outcomes: Sequence[ImageOutcome],
    labels: Sequence[str],
    exclusive: Sequence[str],
    rules: Rules = DEFAULT,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-image TP/FP/FN indicator arrays (images x columns), set precision per image, contradictions.

    Columns are the vocabulary labels, then one column for all labels outside the vocabulary (empty
    when the rules drop them).
    """
    index = {label: i for i, label in enumerate(labels)}
    n, m = len(outcomes), len(labels) + 1
    tp = np.zeros((n, m))
    fp = np.zeros((n, m))
    fn = np.zeros((n, m))
    set_precision = np.zeros(n)
    contradictions = 0
    exclusive_set = set(exclusive)
    for row, outcome in enumerate(outcomes):
        true = normalise(outcome.true, exclusive)
        pred = outcome.predicted if outcome.parse_ok else frozenset()
        if not rules.count_outside:  # dropped on both sides, as PtychoBench's loader drops them
            pred = frozenset(label for label in pred if label in index)
            true = frozenset(label for label in true if label in index)
        if rules.empty_is_exclusive and outcome.parse_ok:
            pred = normalise(pred, exclusive)
        if pred & exclusive_set and len(pred) > 1:
            contradictions += 1
        for label in pred:
            column = index.get(label, m - 1)
            if label in true:
                tp[row, column] += 1
            else:
                fp[row, column] += 1
        for label in true - pred:
            fn[row, index.get(label, m - 1)] += 1
        if pred:
            set_precision[row] = len(pred & true) / len(pred)
        else:
            set_precision[row] = 1.0 if not true else 0.0
    return tp, fp, fn, set_precision, contradictions


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), np.nan)


def _summaries(
    w: np.ndarray,
    tp: np.ndarray,
    fp: np.ndarray,
    fn: np.ndarray,
    set_precision: np.ndarray,
    failures: np.ndarray,
    seconds: np.ndarray,
    zero_division: bool = False,
) -> dict[str, np.ndarray]:
    """Metrics for each row of image weights `w` (resamples x images); the plain score is w = ones.

    `zero_division`: an undefined micro precision, recall or F1 is 0 (sklearn's zero_division=0).
    """
    n = w.shape[1]
    ctp, cfp, cfn = w @ tp, w @ fp, w @ fn  # resamples x columns
    stp, sfp, sfn = ctp.sum(1), cfp.sum(1), cfn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        micro_p = np.where(stp + sfp > 0, stp / np.maximum(stp + sfp, 1e-300), np.nan)
        micro_r = np.where(stp + sfn > 0, stp / np.maximum(stp + sfn, 1e-300), np.nan)
        f1 = _f1(ctp[:, :-1], cfp[:, :-1], cfn[:, :-1])
        used = ~np.isnan(f1)
        macro = np.where(used.any(1), np.nansum(f1, 1) / np.maximum(used.sum(1), 1), np.nan)
    micro_f1 = _f1(stp, sfp, sfn)
    if zero_division:
        micro_p, micro_r, micro_f1 = (np.nan_to_num(v, nan=0.0) for v in (micro_p, micro_r, micro_f1))
    timed = ~np.isnan(seconds)
    return {
        "micro_precision": micro_p,
        "micro_recall": micro_r,
        "micro_f1": micro_f1,
        "macro_f1": macro,
        "set_precision": w @ set_precision / n,
        "parse_failure_rate": w @ failures / n,
        "latency_mean": (
            (w[:, timed] @ seconds[timed]) / np.maximum(w[:, timed].sum(1), 1e-300)
            if timed.any()
            else np.full(w.shape[0], np.nan)
        ),
    }


def score(
    outcomes: Sequence[ImageOutcome],
    labels: Sequence[str],
    *,
    exclusive: Sequence[str] = (),
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
    rules: Rules = DEFAULT,
    burn: Sequence[int] = (),
) -> Scores:
    """Score predictions against the truth over `labels` (the vocabulary's canonical names).

    `resamples` = 0 skips the bootstrap. With PtychoBench rules the seed is theirs (42) and `burn`
    lists the sizes of the entries their bootstrap.py resamples before this one from the same stream.
    Raises ValueError for no images or an out-of-range setting.
    """
    if not outcomes:
        raise ValueError("nothing to score: no images with corrected labels in this split")
    if not 0 <= resamples <= MAX_RESAMPLES:
        raise ValueError(f"resamples must be between 0 and {MAX_RESAMPLES}, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")
    labels = list(dict.fromkeys(labels))
    if rules.seed is not None:
        seed = rules.seed
    tp, fp, fn, set_precision, contradictions = _matrices(outcomes, labels, exclusive, rules)
    failures = np.array([0.0 if o.parse_ok else 1.0 for o in outcomes])
    seconds = np.array([math.nan if o.seconds is None else float(o.seconds) for o in outcomes])
    n = len(outcomes)
    arrays = (tp, fp, fn, set_precision, failures, seconds)
    zero_division = rules.bootstrap == "ptychobench"
    point = _summaries(np.ones((1, n)), *arrays, zero_division=zero_division)

    per_label = []
    columns = [*labels, OUTSIDE_VOCABULARY]
    for j, label in enumerate(columns):
        t, p, f = int(tp[:, j].sum()), int(fp[:, j].sum()), int(fn[:, j].sum())
        if label == OUTSIDE_VOCABULARY and not (t or p or f):
            continue
        per_label.append(
            LabelScore(label, t, p, f, _ratio(t, t + p), _ratio(t, t + f), float(_f1(np.array(t), p, f)))
        )

    timed = seconds[~np.isnan(seconds)]
    result = Scores(
        n_images=n,
        micro_precision=float(point["micro_precision"][0]),
        micro_recall=float(point["micro_recall"][0]),
        micro_f1=float(point["micro_f1"][0]),
        macro_f1=float(point["macro_f1"][0]),
        set_precision=float(point["set_precision"][0]),
        parse_failures=int(failures.sum()),
        parse_failure_rate=float(point["parse_failure_rate"][0]),
        contradictions=contradictions,
        latency_mean=float(timed.mean()) if timed.size else math.nan,
        latency_median=float(np.median(timed)) if timed.size else math.nan,
        per_label=per_label,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        rules=rules.name,
    )
    if resamples:
        from napari_fracto.bootstrap import generator_samples, ptychobench_samples, statistics

        if rules.bootstrap == "ptychobench":
            samples = ptychobench_samples(arrays, resamples, seed, burn)
        else:
            samples = generator_samples(arrays, resamples, seed)
        result.ci, result.bootstrap_mean, result.bootstrap_std = statistics(
            samples, confidence, drop_nan=not zero_division
        )
    return result


def bootstrap_intervals(
    tp: np.ndarray,
    fp: np.ndarray,
    fn: np.ndarray,
    set_precision: np.ndarray,
    failures: np.ndarray,
    seconds: np.ndarray,
    resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals from resampling images with replacement (the default rules)."""
    from napari_fracto.bootstrap import generator_samples, statistics

    samples = generator_samples((tp, fp, fn, set_precision, failures, seconds), resamples, seed)
    return statistics(samples, confidence, drop_nan=True)[0]
