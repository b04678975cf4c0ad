"""Targeted collection (`--want LABEL`): keep the panels whose caption or citing text mention a label.

Rare features are what a collection lifts most (the seed's ablation), so `--want` alone means the
labels `dataset info` flags as rare. A label matches by its name or any synonym of the vocabulary,
singular or plural, with spaces or hyphens ("river-pattern", "fatigue striations").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from napari_fracto.papers.model import PaperError

if TYPE_CHECKING:
    from napari_fracto.dataset import Dataset


def label_patterns(task: str, labels: Sequence[str]) -> dict[str, re.Pattern[str]]:
    """Per wanted label: its name and synonyms as a pattern ("striations" finds "fatigue striation")."""
    from napari_fracto.vocabulary import load_vocabulary

    vocab = load_vocabulary(task)
    out = {}
    for text in labels:
        name = vocab.canonical(text)
        if name is None:
            raise PaperError(f"--want {text!r} is not a {task} label (known: {', '.join(vocab.names())})")
        terms = [name, *vocab.get(name).synonyms]
        stems = [re.escape(t.lower().rstrip("s")).replace(r"\ ", r"[\s-]+") for t in terms if t]
        out[name] = re.compile(r"\b(?:" + "|".join(stems) + r")\w*", re.IGNORECASE)
    return out


def rare_labels(ds: Dataset, task: str) -> list[str]:
    """The labels `dataset info` flags as rare for `task` (all of them in a new dataset)."""
    from napari_fracto.dataset.tools import info

    report = info(ds, task=task)
    if task in report.tasks:
        return list(report.tasks[task].rare)
    from napari_fracto.vocabulary import load_vocabulary

    return load_vocabulary(task).names()
