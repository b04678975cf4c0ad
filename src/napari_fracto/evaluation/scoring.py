"""Scoring one evaluation run: answers as the model gave them, against the corrections, by named rules.

The parser drops an exclusive label ("No obvious artifacts") given beside others, which is right for
display but would hide the contradiction from the scores; so every reply is read a second time with
`keep_exclusive=True`, and that reading is what is scored (both rules) and counted in `contradictions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from napari_fracto.metrics import ImageOutcome, Rules, Scores, score

if TYPE_CHECKING:
    from napari_fracto.backends.base import Backend, VLMReply, VLMRequest
    from napari_fracto.evaluation.runner import EvalRun, Prediction


class ReplyRecorder:
    """A backend that passes everything through and keeps the text of each reply (one per tile)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.texts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def generate(self, request: VLMRequest) -> VLMReply:
        reply = self._backend.generate(request)
        self.texts.append(reply.text)
        return reply


def answers_as_given(texts: Sequence[str], request: Any, vocab: Any) -> tuple[list[str], list[str]]:
    """Labels (unknown ones included) and advice of each reply, exclusive labels kept, in order."""
    from napari_fracto.parsing import parse_response
    from napari_fracto.prepare import vocabularies

    vocab, advice_vocab = vocabularies(request, vocab)
    labels: list[str] = []
    advice: list[str] = []
    for text in texts:
        parsed = parse_response(text, vocab, advice_vocab, keep_exclusive=True)
        labels += [f.label for f in parsed.findings] + list(parsed.unknown_labels)
        advice += list(parsed.advice)
    return list(dict.fromkeys(labels)), list(dict.fromkeys(advice))


def truth_of(items: Sequence[Any], vocab: Any) -> dict[str, dict[str, Any]]:
    """image id -> corrected labels (canonical), corrected advice and sample type."""
    truth = {}
    for item in items:
        review = item.review
        truth[item.image_id] = {
            "labels": [vocab.canonical(label) or label for label in review.labels],
            "advice": list(review.advice),
            "sample_type": review.context.sample_type,
        }
    return truth


def predicted(p: Prediction) -> list[str]:
    return p.labels if p.given is None else p.given


def predicted_advice(p: Prediction) -> list[str]:
    return p.advice if p.given_advice is None else p.given_advice


def outcomes_of(
    predictions: Sequence[Prediction], truth: dict[str, dict[str, Any]], *, advice: bool = False
) -> list[ImageOutcome]:
    """What is scored of each prediction: its answer as given against the corrected labels or advice."""
    if advice:
        return [
            ImageOutcome.make(
                predicted_advice(p), truth[p.image_id]["advice"], parse_ok=p.parse_ok, image_id=p.image_id
            )
            for p in predictions
        ]
    return [
        ImageOutcome.make(
            predicted(p),
            truth[p.image_id]["labels"],
            parse_ok=p.parse_ok,
            seconds=p.seconds,
            image_id=p.image_id,
        )
        for p in predictions
    ]


def score_run(run: EvalRun, vocab: Any, rules: Rules, *, resamples: int | None, seed: int) -> None:
    """Label scores over the images predicted; advice scores over the images with corrected advice.

    With PtychoBench rules, each configuration's interval continues the random stream of the entries
    before it in the results file `--export-ptychobench` writes (as their bootstrap.py draws it).
    """
    from napari_fracto.evaluation.ptychobench import burn_in
    from napari_fracto.vocabulary import advice_vocabulary

    resamples = rules.resamples if resamples is None else resamples
    truth = run.truth
    advice_vocab = advice_vocabulary(vocab.task)
    label_sets, advice_sets = [], []
    for result in run.results:
        scored = [p for p in result.predictions if p.image_id in truth]
        label_sets.append(scored)
        with_advice = [p for p in scored if truth[p.image_id]["advice"]]
        advice_sets.append(with_advice if result.config.advice and advice_vocab is not None else [])
    names, advice_names = vocab.names(), advice_vocab.names() if advice_vocab is not None else []
    if rules.name == "ptychobench":  # their class lists, where the vocabulary is PtychoBench's
        names, advice_names = _theirs(names, False), _theirs(advice_names, True)
    configs = [r.config for r in run.results]
    label_burn = burn_in(configs, [len(s) for s in label_sets])
    advice_burn = burn_in(configs, [len(s) for s in advice_sets])
    for i, result in enumerate(run.results):
        if label_sets[i]:
            result.scores = score(
                outcomes_of(label_sets[i], truth),
                names,
                exclusive=vocab.exclusive_labels,
                resamples=resamples,
                seed=seed,
                rules=rules,
                burn=label_burn[i],
            )
            result.mode_scores = _mode_scores(vocab, label_sets[i], truth, resamples, seed, rules)
        if advice_sets[i]:
            result.advice_scores = score(
                outcomes_of(advice_sets[i], truth, advice=True),
                advice_names,
                exclusive=advice_vocab.exclusive_labels,
                resamples=resamples,
                seed=seed,
                rules=rules,
                burn=advice_burn[i],
            )


def _mode_scores(
    vocab: Any,
    predictions: Sequence[Prediction],
    truth: dict[str, dict[str, Any]],
    resamples: int,
    seed: int,
    rules: Rules,
) -> Scores | None:
    """Scores of the failure modes the predicted labels imply against those of the corrections (a
    feature vocabulary with a mode level, `failure_modes`); None without one or without true modes."""
    from napari_fracto.failure_modes import mode_outcomes, mode_vocabulary

    modes = mode_vocabulary(vocab)
    if modes is None:
        return None
    at_mode = [o for o in mode_outcomes(vocab, outcomes_of(predictions, truth)) if o.true]
    if not at_mode:
        return None
    return score(at_mode, modes.names(), resamples=resamples, seed=seed, rules=rules)


def _theirs(names: Sequence[str], advice: bool) -> list[str]:
    """PtychoBench's classes when `names` hold them all (labels beyond them are then outside)."""
    from napari_fracto.evaluation.ptychobench import classes

    theirs = list(classes(advice))
    return theirs if set(theirs) <= set(names) else list(names)
