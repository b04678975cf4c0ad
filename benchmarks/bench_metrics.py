"""How long scoring with bootstrap intervals takes: default rules and PtychoBench's, 10,000 resamples.

    .venv/bin/python benchmarks/bench_metrics.py [--images 500] [--resamples 10000]

Figures printed: seconds for `metrics.score` on random 12-class answers (median of 3 runs), for each
rule set, and for PtychoBench's with one earlier entry of the same size drawn first (a 1-shot entry
after a 0-shot one in the same results file).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from napari_fracto.evaluation.ptychobench import ARTIFACT_CLASSES
from napari_fracto.metrics import DEFAULT, PTYCHOBENCH, ImageOutcome, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    names = list(ARTIFACT_CLASSES)
    outcomes = [
        ImageOutcome.make(
            rng.choice(names, size=rng.integers(0, 4), replace=False),
            rng.choice(names, size=rng.integers(1, 3), replace=False),
        )
        for _ in range(args.images)
    ]
    cases = [("default", DEFAULT, ()), ("ptychobench", PTYCHOBENCH, ()),
             ("ptychobench after an earlier entry", PTYCHOBENCH, (args.images,))]  # fmt: skip
    for title, rules, burn in cases:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            score(outcomes, names, exclusive=(names[-1],), resamples=args.resamples, rules=rules, burn=burn)
            times.append(time.perf_counter() - started)
        print(f"{title}: {statistics.median(times):.3f} s ({args.images} images, {args.resamples} resamples)")


if __name__ == "__main__":
    main()
