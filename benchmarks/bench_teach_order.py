"""Does the teach order beat random? The probe's micro-F1 after 10, 20, 40 reviews in each order.

The labelled pool is crops of the shipped Pty-chi cases (`testing.labelled_cases`), as uneven as real
work: mostly clean reconstructions, a few of each problem. A simulated reviewer reviews 5 images at a
time in the order asked (the truth is revealed), the probe retrains, the teach order re-ranks with the
probe's new opinions; micro-F1 is measured on a held-out set drawn the same way. Mean and spread over
seeds (the seed draws the pool, the test set and the random order).

    .venv/bin/python benchmarks/bench_teach_order.py [--seeds 10] [--pool 240] [--test 120]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_fracto.backends.probe import ProbeModel, probe_features, target_labels
from napari_fracto.metrics import ImageOutcome, score
from napari_fracto.prepare import prepare
from napari_fracto.request import AnalysisRequest
from napari_fracto.review.teach_order import QueueItem, rank
from napari_fracto.testing.labelled_cases import ptycho_crops
from napari_fracto.vocabulary import load_vocabulary

WEIGHTS = {"a_clean": 10.0}  # clean images ten times as common as each problem
CHECKPOINTS = (10, 20, 40)
BATCH = 5


def features(array: np.ndarray) -> np.ndarray:
    shown = prepare(AnalysisRequest(task="ptychography"), array)
    return probe_features(shown.tiles[0].image)


def micro_f1(model: ProbeModel | None, X: np.ndarray, truth: list[set[str]], vocab) -> float:
    predicted = model.predict_sets(X) if model is not None else [set()] * len(X)
    outcomes = [ImageOutcome.make(p, t) for p, t in zip(predicted, truth, strict=True)]
    return score(outcomes, vocab.names(), exclusive=vocab.exclusive_labels, resamples=0).micro_f1


def run(order: str, X: np.ndarray, Y: list[set[str]], Xt, Yt, vocab, seed: int) -> dict[int, float]:
    reviewed: list[int] = []
    model = None
    out = {}
    while len(reviewed) < max(CHECKPOINTS):
        left = [i for i in range(len(X)) if i not in set(reviewed)]
        items = []
        for i in left:
            opinions = {}
            if model is not None:
                opinions["probe"] = dict(zip(model.labels, model.predict_proba(X[i])[0], strict=True))
            items.append(QueueItem(str(i), opinions, X[i]))
        counts: dict[str, int] = {}
        for i in reviewed:
            for label in Y[i]:
                counts[label] = counts.get(label, 0) + 1
        picked = rank(
            items,
            order=order,  # type: ignore[arg-type]
            reviewed_features=X[reviewed] if reviewed else None,
            label_counts=counts,
            seed=seed + len(reviewed),
            n=BATCH,
        )
        reviewed += [int(r.item_id) for r in picked]
        if len(reviewed) >= 2:
            model = ProbeModel.fit(X[reviewed], [Y[i] for i in reviewed], vocab)
        if len(reviewed) in CHECKPOINTS:
            out[len(reviewed)] = micro_f1(model, Xt, Yt, vocab)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--pool", type=int, default=240)
    parser.add_argument("--test", type=int, default=120)
    args = parser.parse_args()
    vocab = load_vocabulary("ptychography")
    results: dict[str, dict[int, list[float]]] = {
        o: {k: [] for k in CHECKPOINTS} for o in ("teach", "random")
    }
    started = time.perf_counter()
    for seed in range(args.seeds):
        pool = ptycho_crops(args.pool, seed=1000 + seed, weights=WEIGHTS)
        test = ptycho_crops(args.test, seed=2000 + seed, weights=WEIGHTS)
        X = np.stack([features(c.array) for c in pool])
        Y = [target_labels(c.labels, vocab) for c in pool]
        Xt = np.stack([features(c.array) for c in test])
        Yt = [target_labels(c.labels, vocab) for c in test]
        for order in results:
            for k, f1 in run(order, X, Y, Xt, Yt, vocab, seed).items():
                results[order][k].append(f1)
    print(f"probe micro-F1 on {args.test} held-out crops, pool {args.pool}, {args.seeds} seeds "
          f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    print("| reviews | teach order | random order | teach wins (seeds) |")
    print("|---|---|---|---|")
    for k in CHECKPOINTS:
        t, r = np.array(results["teach"][k]), np.array(results["random"][k])
        print(f"| {k} | {t.mean():.3f} ± {t.std():.3f} | {r.mean():.3f} ± {r.std():.3f} | "
              f"{int((t > r).sum())}/{len(t)} |")  # fmt: skip


if __name__ == "__main__":
    main()
