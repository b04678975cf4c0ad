"""Deterministic multi-label stratified train/val/test splits, stored in the dataset.

Iterative stratification (Sechidis, Tsoumakas & Vlahavas, ECML PKDD 2011): the rarest label is placed
first, each of its images going to the subset that still wants most of that label, so every label's
share in each subset is close to the requested fractions even when images carry several labels.
Written here (about 40 lines of numpy) rather than pulling in scikit-learn for `iterative-stratification`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from napari_fracto.dataset.model import SPLITS, DatasetError

if TYPE_CHECKING:
    from napari_fracto.dataset.core import Dataset

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def _check_fractions(fractions: Sequence[float]) -> list[float]:
    fractions = [float(f) for f in fractions]
    if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise DatasetError(
            f"give {len(SPLITS)} non-negative fractions for {'/'.join(SPLITS)}, e.g. 0.8 0.1 0.1; "
            f"got {fractions}"
        )
    total = sum(fractions)
    return [f / total for f in fractions]


def iterative_stratification(
    label_sets: Sequence[frozenset[str] | set[str]], fractions: Sequence[float], seed: int = 0
) -> list[int]:
    """Subset index (0..len(fractions)-1) for each example; same inputs and seed give the same answer."""
    import numpy as np

    if not fractions or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise DatasetError(f"fractions must be non-negative and not all zero, got {list(fractions)}")
    fractions = [float(f) / sum(fractions) for f in fractions]
    rng = np.random.default_rng(seed)
    n, k = len(label_sets), len(fractions)
    ratios = np.asarray(fractions, dtype=float)
    wanted = ratios * n  # examples each subset still wants
    labels = sorted({lab for s in label_sets for lab in s})
    wanted_per_label = {lab: ratios * sum(lab in s for s in label_sets) for lab in labels}
    remaining = {lab: [i for i, s in enumerate(label_sets) if lab in s] for lab in labels}
    assignment = [-1] * n

    def choose(scores: list[np.ndarray]) -> int:
        candidates = np.arange(k)
        for score in scores:  # lexicographic: most wanted for this label, then most wanted overall
            best = score[candidates].max()
            candidates = candidates[score[candidates] == best]
        return int(rng.choice(candidates))

    def assign(i: int, subset: int) -> None:
        assignment[i] = subset
        wanted[subset] -= 1
        for lab in label_sets[i]:
            wanted_per_label[lab][subset] -= 1

    while True:
        live = {lab: [i for i in idx if assignment[i] < 0] for lab, idx in remaining.items()}
        live = {lab: idx for lab, idx in live.items() if idx}
        if not live:
            break
        fewest = min(len(idx) for idx in live.values())
        rarest = [lab for lab in sorted(live) if len(live[lab]) == fewest]
        label = rarest[int(rng.integers(len(rarest)))]
        for i in rng.permutation(live[label]):
            assign(int(i), choose([wanted_per_label[label], wanted]))
        remaining.pop(label)
    for i in rng.permutation([i for i in range(n) if assignment[i] < 0]):  # images with no label
        assign(int(i), choose([wanted]))
    return assignment


def ensure_each_split(
    assignment: list[int], fractions: Sequence[float], existing: Sequence[int] = ()
) -> list[int]:
    """The small-dataset rule: every split asked for (fraction > 0) gets at least one image.

    Stratification rounds a 6-image dataset at 0.8/0.1/0.1 to 6/0/0; here an image moves from the split
    with the most images to each empty one (the last-assigned image, so the answer stays deterministic).
    `existing` counts images already in each split. Raises DatasetError when there are too few images.
    """
    k = len(fractions)
    counts = [assignment.count(s) + (existing[s] if existing else 0) for s in range(k)]
    wanted = [s for s in range(k) if fractions[s] > 0]
    if sum(counts) < len(wanted):
        names = "/".join(SPLITS[s] for s in wanted)
        raise DatasetError(
            f"{sum(counts)} image(s) cannot fill {names}: each needs at least one image. Review more "
            "images first, or give a fraction of 0 to the splits you do not need."
        )
    out = list(assignment)
    for empty in (s for s in wanted if counts[s] == 0):
        donors = [s for s in range(k) if counts[s] > 1 and s in out]
        if not donors:  # only images already in a split could fill it, and those are not moved
            raise DatasetError(
                f"the {SPLITS[empty]} split would stay empty and no new image can go there; "
                "redo the whole split (reassign), or review more images first"
            )
        donor = max(donors, key=lambda s: (counts[s], -s))
        i = max(i for i, s in enumerate(out) if s == donor)
        out[i] = empty
        counts[donor] -= 1
        counts[empty] += 1
    return out


def split_dataset(
    ds: Dataset,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    task: str | None = None,
    reassign: bool = False,
) -> dict[str, int]:
    """Assign images to train/val/test and store it; returns how many images each split now holds.

    Stratified by label (iterative stratification), and every split with a fraction above 0 gets at least
    one image (`ensure_each_split`); too few images for that is refused with a DatasetError, never
    stored as an empty split. By default only images not yet in a split are assigned, so the test set
    of earlier evaluations stays the same as the dataset grows; `reassign=True` redoes the whole split.
    Skipped images are left out.
    """
    from napari_fracto.dataset.model import Status
    from napari_fracto.dataset.store import utc_now

    ratios = _check_fractions(fractions)
    items = [
        item
        for item in ds.iter_items(task=task)
        if item.status is not Status.SKIPPED and (reassign or item.image.split is None)
    ]
    items.sort(key=lambda item: item.image_id)  # independent of insertion order
    existing = [0] * len(SPLITS)
    if not reassign:
        for item in ds.iter_items(task=task):
            if item.image.split in SPLITS and item.status is not Status.SKIPPED:
                existing[SPLITS.index(item.image.split)] += 1
    subsets = iterative_stratification([frozenset(item.labels) for item in items], ratios, seed)
    subsets = ensure_each_split(subsets, ratios, existing)
    ds.set_splits({item.image_id: SPLITS[s] for item, s in zip(items, subsets, strict=True)})
    ds.set_meta("split", f"seed={seed} fractions={'/'.join(f'{f:g}' for f in ratios)} at {utc_now()}")
    counts = dict.fromkeys(SPLITS, 0)
    for item in ds.iter_items(task=task):
        if item.image.split:
            counts[item.image.split] += 1
    return counts
