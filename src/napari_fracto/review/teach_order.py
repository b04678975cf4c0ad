"""Which unreviewed image teaches most next: a ranking with the reasons for each place.

Reviewing is the scarce resource, so the queue's "teach" order puts first the images a review would
change most. Each image scores on five signals (each 0-1, summed with `weights`):

- disagreement: the opinions held about it (a VLM's stored prediction, the probe, a second opinion)
  name different labels (largest Jaccard distance between any two);
- uncertainty: a confidence near 0.5 (the probe's probabilities, self-consistency agreement);
- evidence: the ptychography measures disagree with the model's labels;
- rarity: it is predicted to show a label the reviews have few examples of (1 / (1 + count));
- novelty: it is far, in feature space, from everything reviewed (distance / (distance + typical)).

The ranking is greedy: after each pick, the picked image counts as reviewed (its features join the
reviewed set, its predicted labels the counts), so the top of the queue is not ten near-copies of one
image. Ties break by a seeded permutation: the same inputs and seed give the same order. "random" is
that permutation alone, "file" the input order. Pure (numpy); `queue_inputs` (teach_inputs.py) gathers
the inputs from a dataset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Order = Literal["teach", "random", "file"]
ORDERS: tuple[str, ...] = ("teach", "random", "file")
WEIGHTS: dict[str, float] = {
    "disagreement": 1.0,
    "uncertainty": 1.0,
    "evidence": 1.0,
    "rarity": 1.0,
    "novelty": 1.0,
}
PRESENT = 0.5  # a confidence at or above this is the opinion "the label is there"


@dataclass(frozen=True)
class QueueItem:
    """What is known about one unreviewed image.

    `opinions`: source name -> label -> confidence (None: named without one; below 0.5: "not there").
    """

    item_id: str
    opinions: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    features: np.ndarray | None = None
    evidence_disagreements: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ranked:
    item_id: str
    score: float
    reasons: tuple[str, ...]
    signals: Mapping[str, float] = field(default_factory=dict)


def named(opinion: Mapping[str, float | None]) -> set[str]:
    """The labels an opinion says are there."""
    return {label for label, c in opinion.items() if c is None or c >= PRESENT}


def _disagreement(item: QueueItem) -> tuple[float, str]:
    sources = sorted(item.opinions)
    best, why = 0.0, ""
    for i, a in enumerate(sources):
        for b in sources[i + 1 :]:
            sa, sb = named(item.opinions[a]), named(item.opinions[b])
            union = sa | sb
            if not union:
                continue
            d = len(sa ^ sb) / len(union)
            if d > best:
                best = d
                why = f"{a} and {b} disagree on: {', '.join(sorted(sa ^ sb))}"
    return best, why


def _uncertainty(item: QueueItem) -> tuple[float, str]:
    best, why = 0.0, ""
    for source in sorted(item.opinions):
        for label, c in sorted(item.opinions[source].items()):
            if c is None:
                continue
            u = 1.0 - 2.0 * abs(float(c) - 0.5)
            if u > best:
                best, why = u, f"unsure whether '{label}' is there ({source}: {float(c):.2f})"
    return best, why


def _rarity(item: QueueItem, counts: Mapping[str, int]) -> tuple[float, str]:
    labels = set().union(*(named(o) for o in item.opinions.values())) if item.opinions else set()
    best, why = 0.0, ""
    for label in sorted(labels):
        n = int(counts.get(label, 0))
        r = 1.0 / (1.0 + n)
        if r > best:
            best, why = r, f"may show '{label}', which has {n} reviewed example{'s' * (n != 1)}"
    return best, why


def _standardise(reviewed: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    both = np.vstack([reviewed, candidates]) if len(reviewed) else candidates
    mean, std = both.mean(axis=0), both.std(axis=0)
    std[std < 1e-12] = 1.0
    return (reviewed - mean) / std, (candidates - mean) / std


def _typical_distance(x: np.ndarray, rng: np.random.Generator) -> float:
    """The median distance between two candidates (from up to 2000 random pairs): novelty's scale."""
    if len(x) < 2:
        return 1.0
    a, b = rng.integers(0, len(x), 2000), rng.integers(0, len(x), 2000)
    keep = a != b
    d = np.linalg.norm(x[a[keep]] - x[b[keep]], axis=1)
    typical = float(np.median(d)) if d.size else 1.0
    return typical if typical > 1e-12 else 1.0


def rank(
    items: Sequence[QueueItem],
    *,
    order: Order = "teach",
    reviewed_features: np.ndarray | None = None,
    label_counts: Mapping[str, int] | None = None,
    seed: int = 0,
    weights: Mapping[str, float] | None = None,
    n: int | None = None,
) -> list[Ranked]:
    """The items in the order to review them (the first `n`), each with its reasons."""
    if order not in ORDERS:
        raise ValueError(f"unknown queue order {order!r}; use one of {', '.join(ORDERS)}")
    items = list(items)
    n = len(items) if n is None else max(0, min(int(n), len(items)))
    rng = np.random.default_rng(seed)
    permutation = rng.permutation(len(items))
    if order == "file":
        return [Ranked(it.item_id, 0.0, ("file order",)) for it in items[:n]]
    if order == "random":
        return [Ranked(items[i].item_id, 0.0, (f"random order (seed {seed})",)) for i in permutation[:n]]
    w = WEIGHTS | dict(weights or {})
    tie = np.empty(len(items))
    tie[permutation] = np.linspace(1e-9, 0.0, len(items), endpoint=False) if len(items) else []
    counts = dict(label_counts or {})
    fixed = [(_disagreement(it), _uncertainty(it)) for it in items]
    evidence = [1.0 if it.evidence_disagreements else 0.0 for it in items]

    have = [i for i, it in enumerate(items) if it.features is not None]
    nearest = np.full(len(items), np.inf)
    scale = 1.0
    if have:
        cand = np.stack([np.asarray(items[i].features, dtype=np.float64).ravel() for i in have])
        dim = cand.shape[1]
        reviewed = np.asarray(reviewed_features if reviewed_features is not None else np.empty((0, dim)))
        reviewed = reviewed.reshape(-1, dim).astype(np.float64)
        reviewed, cand = _standardise(reviewed, cand)
        scale = _typical_distance(cand, rng)
        z = np.zeros((len(items), dim))
        z[have] = cand
        for row in reviewed:
            nearest[have] = np.minimum(nearest[have], np.linalg.norm(cand - row, axis=1))
    has_features = np.zeros(len(items), dtype=bool)
    has_features[have] = True

    labels_of = [
        set().union(*(named(o) for o in it.opinions.values())) if it.opinions else set() for it in items
    ]
    rarity = np.array([_rarity(it, counts)[0] for it in items])
    base = np.array([w["disagreement"] * d[0] + w["uncertainty"] * u[0] for d, u in fixed])
    base += w["evidence"] * np.asarray(evidence) + tie
    left = np.ones(len(items), dtype=bool)
    out: list[Ranked] = []
    while left.any() and len(out) < n:
        with np.errstate(invalid="ignore"):
            novelty = np.where(np.isinf(nearest), 1.0, nearest / (nearest + scale)) * has_features
        total = np.where(left, base + w["rarity"] * rarity + w["novelty"] * novelty, -np.inf)
        i = int(np.argmax(total))
        out.append(_explain(items[i], fixed[i], evidence[i], counts, novelty[i], nearest[i] / scale, w,
                            float(total[i])))  # fmt: skip
        left[i] = False
        if has_features[i]:  # as if reviewed: what it shows is no longer new
            nearest[have] = np.minimum(nearest[have], np.linalg.norm(z[have] - z[i], axis=1))
        for label in labels_of[i]:
            counts[label] = counts.get(label, 0) + 1
        touched = [j for j in range(len(items)) if left[j] and labels_of[j] & labels_of[i]]
        for j in touched:
            rarity[j] = _rarity(items[j], counts)[0]
    return out


def _explain(
    item: QueueItem,
    fixed: tuple[tuple[float, str], tuple[float, str]],
    evidence: float,
    counts: Mapping[str, int],
    novelty: float,
    relative: float,
    w: Mapping[str, float],
    total: float,
) -> Ranked:
    """The picked item's place in words: its signals, strongest first."""
    (dis, dis_why), (unc, unc_why) = fixed
    rar, rar_why = _rarity(item, counts)
    nov_why = ""
    if np.isinf(relative) and novelty > 0:
        nov_why = "nothing like it has been reviewed yet"
    elif novelty >= 0.5:
        nov_why = f"unlike anything reviewed (nearest at {relative:.1f}x the typical distance)"
    ev_why = "the measured evidence disagrees: " + "; ".join(item.evidence_disagreements) if evidence else ""
    why = [
        (w["disagreement"] * dis, dis_why),
        (w["uncertainty"] * unc, unc_why if unc >= 0.5 else ""),
        (w["evidence"] * evidence, ev_why),
        (w["rarity"] * rar, rar_why if rar >= 0.5 else ""),
        (w["novelty"] * novelty, nov_why),
    ]
    reasons = tuple(text for _, text in sorted(why, key=lambda t: -t[0]) if text)
    signals = {"disagreement": dis, "uncertainty": unc, "evidence": evidence, "rarity": rar,
               "novelty": float(novelty)}  # fmt: skip
    return Ranked(item.item_id, round(total, 6), reasons or ("nothing stands out",), signals)
