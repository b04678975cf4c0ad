"""Bootstrap resampling of per-image score arrays, by the default rules or as PtychoBench draws it.

Split from `metrics` (which calls it); pure numpy. Each function gets the per-image arrays `metrics`
builds (TP/FP/FN indicators, set precision, failures, seconds) and returns metric -> values per
resample, or their interval, mean and standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_fracto.metrics import CI_METRICS, _summaries


def _weights(picks: np.ndarray) -> np.ndarray:
    """Resamples x images counts of how often each image was drawn."""
    b, n = picks.shape
    w = np.zeros((b, n))
    np.add.at(w, (np.arange(b)[:, None], picks), 1.0)
    return w


def _collect(arrays: tuple[np.ndarray, ...], draw: Any, resamples: int, zero_division: bool) -> dict:
    n = arrays[0].shape[0]
    collected: dict[str, list[np.ndarray]] = {k: [] for k in CI_METRICS}
    chunk = max(1, min(resamples, 2_000_000 // max(n, 1)))  # bounds memory
    done = 0
    while done < resamples:
        b = min(chunk, resamples - done)
        values = _summaries(_weights(draw(b, n)), *arrays, zero_division=zero_division)
        for name, v in values.items():
            collected[name].append(v)
        done += b
    return {name: np.concatenate(parts) for name, parts in collected.items()}


def generator_samples(arrays: tuple[np.ndarray, ...], resamples: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return _collect(arrays, lambda b, n: rng.integers(0, n, size=(b, n)), resamples, False)


def ptychobench_samples(
    arrays: tuple[np.ndarray, ...], resamples: int, seed: int, burn: Sequence[int]
) -> dict:
    """bootstrap.py's draws: `np.random.seed(seed)`, then `np.random.choice(n, size=n, replace=True)`
    once per resample, for each earlier entry of the same results file (`burn`) and then this one.

    A legacy RandomState gives the same stream as numpy's global functions after np.random.seed, and
    one call for b rows draws what b calls of one row draw (checked in tests/test_ptychobench.py).
    """
    state = np.random.RandomState(seed)
    for m in burn:
        done = 0
        step = max(1, 2_000_000 // max(m, 1))
        while done < resamples:
            b = min(step, resamples - done)
            state.choice(m, size=(b, m), replace=True)
            done += b
    return _collect(arrays, lambda b, n: state.choice(n, size=(b, n), replace=True), resamples, True)


def statistics(
    samples: dict[str, np.ndarray], confidence: float, *, drop_nan: bool
) -> tuple[dict[str, tuple[float, float]], dict[str, float], dict[str, float]]:
    """Percentile interval, mean and standard deviation of each metric over the resamples.

    `drop_nan`: resamples where a metric is undefined are left out (default rules); else they stay
    and make its statistics NaN (PtychoBench's micro scores are never NaN: zero_division=0).
    """
    alpha = (1 - confidence) / 2
    ci, mean, std = {}, {}, {}
    for name, values in samples.items():
        if drop_nan:
            values = values[~np.isnan(values)]
        if values.size == 0 or np.isnan(values).any():
            ci[name], mean[name], std[name] = (math.nan, math.nan), math.nan, math.nan
            continue
        lo, hi = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
        ci[name] = (float(lo), float(hi))
        mean[name], std[name] = float(np.mean(values)), float(np.std(values))
    return ci, mean, std
