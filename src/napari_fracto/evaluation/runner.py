"""Run configurations over the reviewed images of one dataset split and score them, with a cache.

Every prediction is stored in `<out>/cache/predictions.sqlite` under a key made of the configuration's
fingerprint, the image id, the context sent and the examples chosen, so a re-run only asks the model
about what is new (a new image, configuration, changed example or context); the backend is not even
built when everything is cached. Pure and blocking (no Qt): the widget runs it in a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_fracto.backends.base import BackendError, CancelledError
from napari_fracto.errors import UserError
from napari_fracto.evaluation.compare import EvalConfig
from napari_fracto.evaluation.scoring import ReplyRecorder, answers_as_given, score_run, truth_of
from napari_fracto.findings import AnalysisContext
from napari_fracto.inflight import in_flight, in_flight_for
from napari_fracto.metrics import RULES, Scores

if TYPE_CHECKING:
    from napari_fracto.backends.base import Backend
    from napari_fracto.dataset import Dataset, Item
    from napari_fracto.settings import BackendSettings

log = logging.getLogger(__name__)

CACHE_DIR = "cache"
CACHE_DB = "predictions.sqlite"
Progress = Callable[[int, int, str], None]
BackendFactory = Callable[["BackendSettings"], "Backend"]


class EvaluationError(UserError, ValueError):
    """The evaluation cannot run as asked; the message says what to do."""


@dataclass
class Prediction:
    """What one configuration answered for one image (the cached record)."""

    image_id: str
    labels: list[str]  # canonical labels, then labels outside the vocabulary
    advice: list[str]
    parse_ok: bool
    seconds: float
    raw_text: str = ""
    examples: list[str] = field(default_factory=list)  # image ids of the in-context examples
    # The labels and advice as the model gave them: an exclusive label beside others is kept here
    # (the parser drops it from `labels` for display), so contradictions are scored and counted.
    given: list[str] | None = None  # None: same as labels / advice
    given_advice: list[str] | None = None
    confidences: dict[str, float] = field(default_factory=dict)  # label -> highest confidence given


@dataclass
class ConfigResult:
    config: EvalConfig
    fingerprint: str
    predictions: list[Prediction] = field(default_factory=list)
    scores: Scores | None = None
    advice_scores: Scores | None = None
    mode_scores: Scores | None = None  # the failure modes the labels imply (a task with a mode level)
    calibration: Any = None  # evaluation.calibration.Calibration, when the answers carry confidences
    asked: int = 0  # predictions made in this run (the rest came from the cache)
    cached: int = 0
    error: str = ""


@dataclass
class EvalRun:
    dataset: str
    task: str
    split: str
    image_ids: list[str]
    results: list[ConfigResult]
    skipped: dict[str, str] = field(default_factory=dict)  # image id -> why it was not evaluated
    started_at: str = ""
    scoring: str = "default"  # the metrics.RULES used
    # image id -> the corrected labels, advice and sample type each prediction was scored against
    truth: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return len(self.image_ids)


class PredictionCache:
    """sqlite table of predictions by key; safe for one writer thread at a time."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / CACHE_DB
        self._conn = sqlite3.connect(self.path, check_same_thread=False)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS predictions (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,"
            " image_id TEXT NOT NULL, record TEXT NOT NULL, created_at TEXT NOT NULL)"
        )
        self._conn.commit()

    def get(self, key: str) -> Prediction | None:
        row = self._conn.execute("SELECT record FROM predictions WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            record = json.loads(row[0])
            if "given" not in record:
                return None  # cached before answers were kept as given: ask again
            return Prediction(**record)
        except (TypeError, ValueError):
            return None  # written by another version: ask again

    def put(self, key: str, fingerprint: str, prediction: Prediction) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?)",
            (key, fingerprint, prediction.image_id, json.dumps(asdict(prediction)), _now()),
        )
        self._conn.commit()

    def close(self) -> None:
        self._conn.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def prediction_key(
    fingerprint: str,
    image_id: str,
    context: AnalysisContext | None,
    examples: Sequence[Any],
    request: Any = None,
) -> str:
    """Cache key: configuration, image, and exactly what was asked (the request as re-asked)."""
    data = {
        "config": fingerprint,
        "image": image_id,
        "context": context.to_dict() if context is not None else None,
        "examples": [[e.image_id, e.answer] for e in examples],
    }
    if request is not None:
        asked = request.to_dict()
        for key in ("source", "backend", "examples", "context"):
            asked.pop(key, None)
        data["request"] = asked
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class _ChosenExample:
    image_id: str
    answer: str


def resolve_task(dataset: Dataset, split: str, task: str | None) -> str:
    """The task to evaluate: given, or the only one with reviewed images in the split."""
    from napari_fracto.dataset import Status

    if task:
        return task
    tasks = sorted({i.task for i in dataset.iter_items(split=split, status=Status.REVIEWED) if i.task})
    if len(tasks) == 1:
        return tasks[0]
    if not tasks:
        raise EvaluationError(
            f"the {split} split of {dataset.root} has no reviewed images; review some images and assign "
            "splits (`napari-fracto dataset split`) first"
        )
    raise EvaluationError(
        f"the {split} split holds several tasks ({', '.join(tasks)}); choose one with --task"
    )


def evaluate(
    dataset: Dataset,
    configs: Sequence[EvalConfig],
    out_dir: str | Path,
    *,
    split: str = "test",
    task: str | None = None,
    example_split: str = "train",
    backend_factory: BackendFactory | None = None,
    resamples: int | None = None,
    seed: int = 0,
    scoring: str = "default",
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
    combine: tuple[str, str] | None = None,
) -> EvalRun:
    """Run every configuration on the reviewed images of `split` and score each against the corrections.

    `scoring` names the rules (`metrics.RULES`: "default" or "ptychobench"); `resamples` None takes
    theirs (1,000 or 10,000).

    A backend error stops that configuration (its message is kept in `ConfigResult.error`; what was
    done is cached, so a re-run resumes); an unreadable image is skipped for all. Cancelling raises
    `CancelledError` after caching what was finished. `combine` = (specialist, generalist) names adds
    rows for the combination rules of `second_opinion.combine`.
    """
    from napari_fracto.dataset import Status
    from napari_fracto.icl import ExampleSelector, FeatureCache
    from napari_fracto.vocabulary import load_vocabulary

    if not configs:
        raise EvaluationError("no configurations to evaluate; give backend settings or a comparison file")
    if scoring not in RULES:
        raise EvaluationError(f"unknown scoring {scoring!r}; choose one of {', '.join(RULES)}")
    task = resolve_task(dataset, split, task)
    vocab = load_vocabulary(task)
    configs = [_probe_of(c, dataset) for c in configs]
    items = list(dataset.iter_items(task=task, split=split, status=Status.REVIEWED))
    if not items:
        raise EvaluationError(
            f"no reviewed {task} images in the {split} split of {dataset.root}; "
            "review images and assign splits first"
        )
    out = Path(out_dir)
    cache = PredictionCache(out / CACHE_DIR)
    features = FeatureCache(out / CACHE_DIR)  # one folder per feature kind inside
    selector = (
        ExampleSelector(dataset, task, split=example_split, cache=features)
        if any(c.shots for c in configs)
        else None
    )
    if selector is not None and not selector.candidates:
        log.warning(
            "No reviewed %s images in the %s split: k-shot configurations run with 0 examples",
            task,
            example_split,
        )

    run = EvalRun(
        str(dataset.root), task, split, [i.image_id for i in items], [], started_at=_now(), scoring=scoring
    )
    total = len(configs) * len(items)
    done = 0
    try:
        for config in configs:
            result = ConfigResult(config, config.fingerprint())
            run.results.append(result)
            backend: Backend | None = None
            config_selector = selector
            try:
                if selector is not None and config.uses_vision_features:
                    # a local backend lends its model to the features (cheap until something is computed)
                    if not config.feature_model:
                        backend = _make_backend(config, backend_factory)
                    config_selector = _vision_selector(selector, config, backend)
                walk = _ConfigWalk(dataset, items, config, result, run, cache, config_selector, done)
                walk.backend, walk.factory, walk.vocab, walk.cancel = backend, backend_factory, vocab, cancel
                walk.progress, walk.total = progress, total
                try:
                    walk.run()
                finally:
                    backend, done = walk.backend, walk.done
            except CancelledError:
                raise
            except BackendError as exc:
                result.error = str(exc)
                log.warning("Configuration %r stopped: %s", config.label, exc)
                done = (configs.index(config) + 1) * len(items)
            finally:
                if backend is not None:
                    backend.close()
                if config_selector is not selector:
                    config_selector.features.close()
            if progress is not None:
                progress(done, total, f"{config.label}: done")
    finally:
        cache.close()

    kept = [i for i in items if i.image_id not in run.skipped]
    run.image_ids = [i.image_id for i in kept]
    run.truth = truth_of(kept, vocab)
    if combine:  # rows of simple rules over a specialist's and a generalist's labels (second_opinion.py)
        from napari_fracto.second_opinion import combination_results

        run.results += combination_results(run.results, *combine)
    score_run(run, vocab, RULES[scoring], resamples=resamples, seed=seed)
    _calibrate(run, vocab)
    return run


class _ConfigWalk:
    """One configuration over the images: planning and caching in this thread (SQLite connections
    belong to it), model calls `in_flight` (as many as the local backend's batch size)."""

    def __init__(
        self,
        dataset: Dataset,
        items: list[Item],
        config: EvalConfig,
        result: ConfigResult,
        run: EvalRun,
        cache: PredictionCache,
        selector: Any,
        done: int,
    ) -> None:
        self.dataset, self.items, self.config, self.result = dataset, items, config, result
        self.eval_run, self.cache, self.selector, self.done = run, cache, selector, done
        self.backend: Backend | None = None
        self.factory: BackendFactory | None = None
        self.vocab: Any = None
        self.cancel: threading.Event | None = None
        self.progress: Progress | None = None
        self.total = 0

    def planned(self) -> Any:
        """Per image: the cached prediction, or what to ask the model (the backend built on first need)."""
        for item in self.items:
            if self.cancel is not None and self.cancel.is_set():
                raise CancelledError("Evaluation cancelled.")
            if item.image_id in self.eval_run.skipped:
                self.done += 1
                continue
            if self.progress is not None:
                name = item.image.original_name or item.image_id[:12]
                self.progress(self.done, self.total, f"{self.config.label}: {name}")
            try:
                fingerprint = self.result.fingerprint
                plan = _plan(self.dataset, item, self.config, fingerprint, self.cache, self.selector)
            except (ValueError, OSError) as exc:  # ImageError / DatasetError / unreadable file
                _skip(self.eval_run, item, exc)
                self.done += 1
                continue
            if isinstance(plan, _Ask) and self.backend is None:
                self.backend = _make_backend(self.config, self.factory)
            if self.backend is not None:
                self.backend = _consistent(self.backend, self.config, self.vocab)
            yield item, plan

    def ask(self, job: tuple[Item, Prediction | _Ask]) -> Prediction:
        plan = job[1]
        if isinstance(plan, Prediction):
            return plan
        assert self.backend is not None  # built by `planned` before the job was handed out
        return _ask(plan, self.backend, self.vocab, self.cancel)

    def run(self) -> None:
        width = in_flight_for(self.config.settings)
        for (item, plan), prediction, error in in_flight(self.ask, self.planned(), width):
            self.done += 1
            if isinstance(error, (ValueError, OSError)) and not isinstance(error, BackendError):
                _skip(self.eval_run, item, error)
                continue
            if error is not None:
                raise error
            assert prediction is not None
            self.result.predictions.append(prediction)
            if isinstance(plan, _Ask):
                self.cache.put(plan.key, self.result.fingerprint, prediction)
                self.result.asked += 1
            else:
                self.result.cached += 1


@dataclass
class _Ask:
    """An image the model must be asked about under one configuration (nothing cached for it)."""

    image_id: str
    key: str
    request: Any
    array: Any
    examples: list[Any]
    chosen: list[_ChosenExample]


def _skip(run: EvalRun, item: Item, exc: Exception) -> None:
    run.skipped[item.image_id] = str(exc)
    log.warning("Skipping %s: %s", item.image_id[:12], exc)


def _plan(
    dataset: Dataset,
    item: Item,
    config: EvalConfig,
    fingerprint: str,
    cache: PredictionCache,
    selector: Any,
) -> Prediction | _Ask:
    """One image under one configuration: the cached prediction, or what to ask (`_ask`) to get one.

    The image is asked as its review's stored request asked it (display options, crop, tiles, part),
    with the configuration's model, budget, context, advice and examples.
    """
    review = item.review
    context = review.context if (config.context and review and not review.context.is_empty()) else None
    request = reask_request(review.request, config, context)
    array = None
    chosen = []
    examples = []
    if config.shots and selector is not None:
        array = dataset.image_array(item.image_id)
        candidates = selector.select(
            array, config.shots, method=config.select, context=context, seed=config.seed
        )
        examples = selector.examples(
            candidates,
            with_context=config.context,
            advice=config.advice,
            max_image_tokens=config.settings.max_image_tokens,
        )
        chosen = [
            _ChosenExample(c.image_id, e.answer_text) for c, e in zip(candidates, examples, strict=True)
        ]
    key = prediction_key(fingerprint, item.image_id, context, chosen, request)
    found = cache.get(key)
    if found is not None:
        return found
    if array is None:
        array = dataset.image_array(item.image_id)
    return _Ask(item.image_id, key, request, array, examples, chosen)


def _consistent(backend: Backend, config: EvalConfig, vocab: Any) -> Backend:
    """The backend as `config` asks it: k samples at a temperature when it asks for self-consistency."""
    from napari_fracto.consistency import SelfConsistentBackend

    if config.samples <= 1 or isinstance(backend, SelfConsistentBackend):
        return backend
    from napari_fracto.vocabulary import advice_vocabulary

    advice = advice_vocabulary(vocab.task) if config.advice else None
    return SelfConsistentBackend(
        backend, vocab, k=config.samples, temperature=config.temperature, advice_vocab=advice
    )


def _ask(ask: _Ask, backend: Backend, vocab: Any, cancel: threading.Event | None) -> Prediction:
    """The model's prediction for a planned image (in a worker thread when the batch size is > 1); the
    replies' text is read again as given (exclusive labels kept) for scoring."""
    from napari_fracto.analysis import run_request

    recorder = ReplyRecorder(backend)
    result = run_request(
        ask.request, ask.array, recorder, examples=ask.examples, evidence=False, cancel=cancel, vocab=vocab
    )
    given, given_advice = answers_as_given(recorder.texts, ask.request, vocab)
    return Prediction(
        image_id=ask.image_id,
        labels=list(dict.fromkeys([*result.labels, *result.unknown_labels])),
        advice=list(result.advice),
        parse_ok=result.parse_ok,
        seconds=result.seconds,
        raw_text=result.raw_text,
        examples=[c.image_id for c in ask.chosen],
        given=given,
        given_advice=given_advice,
        confidences=_confidences(result.findings),
    )


def reask_request(stored: Any, config: EvalConfig, context: AnalysisContext | None) -> Any:
    """The stored request as `config` re-asks it: same image preparation, the configuration's model."""
    from napari_fracto.ptycho.display import DisplayOptions

    changes: dict[str, Any] = {
        "context": context or AnalysisContext(),
        "advice": config.advice,
        "max_image_tokens": config.settings.max_image_tokens,
        "max_new_tokens": config.settings.max_new_tokens,
        "examples": (),
    }
    if config.tiles is not None:
        changes["tiles"] = config.tiles
    if config.complex_part is not None:
        changes["complex_part"] = config.complex_part
    if config.display is not None:
        changes["display"] = DisplayOptions(**config.display) if config.display else None
        if not config.display.get("crop", False):
            changes["crop"] = None
    return stored.with_changes(**changes)


def _vision_selector(selector: Any, config: EvalConfig, backend: Backend | None) -> Any:
    """The shared selector's candidates, ranked by vision-tower features (their own cache entries)."""
    import copy

    from napari_fracto.icl_vision import vision_features

    try:
        features = vision_features(
            backend=backend,
            model=config.feature_model,
            device=config.settings.device,
            dtype=config.settings.dtype,
        )
    except ValueError as exc:  # no local model to take them from: stop this configuration only
        raise BackendError(f"{exc} (comparison key: feature_model)") from None
    vision = copy.copy(selector)
    vision.features = features
    return vision


def _probe_of(config: EvalConfig, dataset: Dataset) -> EvalConfig:
    """A probe row without a dataset of its own learns from the train split of the evaluated one."""
    if config.settings.kind != "probe" or config.settings.model:
        return config
    settings = config.settings.model_copy(update={"model": str(dataset.root)})
    return config.model_copy(update={"settings": settings})


def _confidences(findings: Sequence[Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for f in findings:
        if f.confidence is not None:
            out[f.label] = max(out.get(f.label, 0.0), float(f.confidence))
    return out


def _make_backend(config: EvalConfig, factory: BackendFactory | None) -> Backend:
    if factory is not None:
        return factory(config.settings)
    from napari_fracto.backends.factory import make_backend

    return make_backend(config.settings)


def _calibrate(run: EvalRun, vocab: Any) -> None:
    """How well each configuration's confidences match how often it is right (ECE, reliability)."""
    from napari_fracto.evaluation.calibration import calibration, claims_of

    truth = {image_id: t["labels"] for image_id, t in run.truth.items()}
    for result in run.results:
        predictions = [p for p in result.predictions if p.image_id in truth]
        if predictions:
            result.calibration = calibration(claims_of(predictions, truth, vocab))
