"""The two levels of fractography: features (dimples, striations) and the failure mode they evidence.

A feature vocabulary names its upper level (`mode_task`, e.g. "fracture-mode") and each feature the
modes it implies (dimples -> ductile overload; cleavage facets, river patterns -> brittle
transgranular; intergranular facets -> brittle intergranular; striations, beach marks, ratchet marks ->
fatigue). So a feature prediction implies a mode, a collection labelled by mode imports and trains as
the "fracture-mode" task, and an evaluation is scored at both levels: features against features, and
the modes implied by the predicted features against the modes of the truth. Pure: no Qt, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from napari_fracto.metrics import ImageOutcome, Scores, score
from napari_fracto.vocabulary import Vocabulary, VocabularyError, load_vocabulary


def mode_vocabulary(features: Vocabulary) -> Vocabulary | None:
    """The failure-mode vocabulary `features` points at (its `mode_task`), or None when it has none."""
    if not features.mode_task:
        return None
    modes = load_vocabulary(features.mode_task)
    for label in features.labels:
        unknown = [m for m in label.implies if modes.canonical(m) is None]
        if unknown:
            raise VocabularyError(
                f"vocabulary {features.task!r}: {label.name!r} implies {', '.join(map(repr, unknown))}, "
                f"which {features.mode_task!r} does not have; known: {', '.join(modes.names())}"
            )
    return modes


def implied_modes(features: Vocabulary, labels: Iterable[str]) -> list[str]:
    """The failure modes `labels` imply, in vocabulary order; mode labels given are kept as they are.

    Features and modes can be mixed: a reviewer may have written "fatigue" beside "beach marks".
    """
    modes = mode_vocabulary(features)
    if modes is None:
        return []
    found: set[str] = set()
    for text in labels:
        mode = modes.canonical(text)
        if mode is not None:
            found.add(mode)
            continue
        name = features.canonical(text)
        if name is not None:
            found.update(modes.canonical(m) or m for m in features.get(name).implies)
    return [name for name in modes.names() if name in found]


def mode_outcomes(features: Vocabulary, outcomes: Sequence[ImageOutcome]) -> list[ImageOutcome]:
    """Each outcome at the mode level: predicted and true labels replaced by the modes they imply."""
    return [
        replace(
            o,
            predicted=frozenset(implied_modes(features, o.predicted)),
            true=frozenset(implied_modes(features, o.true)),
        )
        for o in outcomes
    ]


def score_both_levels(
    features: Vocabulary, outcomes: Sequence[ImageOutcome], **options: object
) -> tuple[Scores, Scores | None]:
    """(feature-level scores, mode-level scores or None without a mode level), `metrics.score` options."""
    feature_scores = score(outcomes, features.names(), exclusive=features.exclusive_labels, **options)
    modes = mode_vocabulary(features)
    if modes is None:
        return feature_scores, None
    at_mode = [o for o in mode_outcomes(features, outcomes) if o.true]  # truth with no mode: not scored
    if not at_mode:
        return feature_scores, None
    return feature_scores, score(at_mode, modes.names(), **options)


__all__ = ["implied_modes", "mode_outcomes", "mode_vocabulary", "score_both_levels"]
