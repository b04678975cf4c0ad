"""The probe: a fast multi-label linear classifier that learns from the reviews as they are saved.

One-vs-rest, class-balanced logistic regression (scikit-learn, the `probe` extra) on the texture
features the in-context selector already computes (`icl.texture_features`: LBP, GLCM, intensity
histogram), taken from the image exactly as the VLM is shown it (`prepare.prepare`). It trains from the
reviewed train split of a dataset in seconds on a CPU, retrains by itself when reviews or splits change,
and answers like any backend (kind "probe", model = the dataset folder), so Analyze, batch, `eval` and
the review queue use it unchanged. Like PtychoBench's feature classifier it is a baseline and a second
opinion, not a replacement: **image-level labels only** (no boxes), from 34 numbers per image.

Pure (numpy, scikit-learn, PIL); no Qt, no torch. Training runs in the thread that asks (a worker).
"""

from __future__ import annotations

import hashlib
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_fracto.backends.base import BackendError, VLMReply, VLMRequest

if TYPE_CHECKING:
    from napari_fracto.dataset import Dataset, Item

NOTICE = "probe: image-level labels only (no boxes), from a linear classifier on texture features"
THRESHOLD = 0.5
MIN_TRAIN = 2
FeatureFn = Callable[[Any], np.ndarray]


class ProbeError(BackendError):
    """The probe cannot train or answer; the message says what to do."""


def _sklearn() -> Any:
    try:
        import sklearn
    except ImportError:
        raise ProbeError("the probe backend needs scikit-learn: pip install 'napari-fracto[probe]'") from None
    return sklearn


def probe_features(image: Any) -> np.ndarray:
    """Texture features of an image as the model is shown it (a PIL image or an array)."""
    from napari_fracto.icl import grey_image, texture_features

    array = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
    return texture_features(grey_image(array))


def item_features(dataset: Dataset, item: Item, features: FeatureFn = probe_features) -> np.ndarray:
    """Features of a dataset image prepared as its stored request asks (one tile: the whole image)."""
    from napari_fracto.prepare import prepare
    from napari_fracto.request import AnalysisRequest

    request = item.review.request if item.review is not None else AnalysisRequest(task=item.task or "x")
    shown = prepare(request.with_changes(tiles=1), dataset.image_array(item.image_id))
    return features(shown.tiles[0].image)


def target_labels(labels: Iterable[str], vocab: Any) -> set[str]:
    """A review's labels as the probe learns them: canonical names; nothing found = the exclusive label."""
    out = {vocab.canonical(label) or label for label in labels}
    out &= set(vocab.names())
    exclusive = vocab.exclusive_labels
    if not out and len(exclusive) == 1:
        out = {exclusive[0]}
    return out


@dataclass
class ProbeModel:
    """A trained probe for one task: label names and one balanced logistic regression per label."""

    task: str
    labels: list[str]
    classifier: Any
    n_train: int
    exclusive: tuple[str, ...] = ()

    @classmethod
    def fit(cls, X: np.ndarray, label_sets: Sequence[set[str]], vocab: Any, *, C: float = 1.0) -> ProbeModel:
        """Train on feature rows and their label sets (`target_labels`); seconds for hundreds of rows."""
        _sklearn()
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import MultiLabelBinarizer, StandardScaler

        X = np.asarray(X, dtype=np.float64)
        if len(X) < MIN_TRAIN:
            raise ProbeError(
                f"the probe needs at least {MIN_TRAIN} reviewed train images of '{vocab.task}', got "
                f"{len(X)}: review more images and assign splits (`napari-fracto dataset split`)"
            )
        labels = vocab.names()
        Y = MultiLabelBinarizer(classes=labels).fit_transform([sorted(s) for s in label_sets])
        model = OneVsRestClassifier(
            make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=2000))
        )
        with warnings.catch_warnings():  # a label with no positive example gets a constant predictor
            warnings.simplefilter("ignore", UserWarning)
            model.fit(X, Y)
        return cls(vocab.task, labels, model, len(X), tuple(vocab.exclusive_labels))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of each label (columns in `labels` order) per feature row."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        return np.asarray(self.classifier.predict_proba(X), dtype=np.float64)

    def decide(self, probabilities: np.ndarray) -> list[tuple[str, float]]:
        """Labels over the threshold (most likely first); an exclusive label only when it wins."""
        chosen = [(self.labels[j], float(p)) for j, p in enumerate(probabilities) if p >= THRESHOLD]
        chosen.sort(key=lambda lp: (-lp[1], lp[0]))
        exclusive = [lp for lp in chosen if lp[0] in self.exclusive]
        others = [lp for lp in chosen if lp[0] not in self.exclusive]
        if exclusive and others:
            return exclusive[:1] if exclusive[0][1] > others[0][1] else others
        return chosen

    def predict_sets(self, X: np.ndarray) -> list[set[str]]:
        return [{label for label, _ in self.decide(row)} for row in self.predict_proba(X)]


class ProbeTrainer:
    """Trains a `ProbeModel` from a dataset's reviewed split and keeps it fresh, features cached by review."""

    def __init__(self, dataset: Dataset, *, split: str = "train", features: FeatureFn = probe_features):
        self.dataset = dataset
        self.split = split
        self.features = features
        self._cache: dict[tuple[str, int | None], np.ndarray] = {}
        self._models: dict[str, tuple[str, ProbeModel]] = {}
        self._lock = threading.Lock()

    def training_items(self, task: str) -> list[Item]:
        from napari_fracto.dataset import Status

        return list(self.dataset.iter_items(task=task, split=self.split, status=Status.REVIEWED))

    def vector(self, item: Item) -> np.ndarray:
        key = (item.image_id, item.review.review_id if item.review else None)
        if key not in self._cache:
            self._cache[key] = item_features(self.dataset, item, self.features)
        return self._cache[key]

    def model(self, task: str) -> ProbeModel:
        """The probe for `task`, retrained when the reviewed train split changed since the last call."""
        from napari_fracto.vocabulary import load_vocabulary

        with self._lock:
            items = self.training_items(task)
            key = training_key(items)
            known = self._models.get(task)
            if known is not None and known[0] == key:
                return known[1]
            vocab = load_vocabulary(task)
            rows, targets = [], []
            for item in items:
                try:
                    rows.append(self.vector(item))
                except (ValueError, OSError):  # an unreadable image teaches nothing; the rest still do
                    continue
                targets.append(target_labels(item.labels, vocab))
            X = np.stack(rows) if rows else np.empty((0, 0))  # none readable: fit says what to do
            model = ProbeModel.fit(X, targets, vocab)
            self._models[task] = (key, model)
            return model

    def tasks(self) -> list[str]:
        from napari_fracto.dataset import Status

        items = self.dataset.iter_items(split=self.split, status=Status.REVIEWED)
        return sorted({i.task for i in items if i.task})


def training_key(items: Sequence[Item]) -> str:
    """Changes whenever a train image is reviewed again, added to or taken from the split."""
    ids = sorted(f"{i.image_id}:{i.review.review_id if i.review else ''}" for i in items)
    return hashlib.sha256("|".join(ids).encode()).hexdigest()


def training_fingerprint(dataset_path: str | Path, split: str = "train") -> str:
    """What the probe of `dataset_path` would learn from, for evaluation's cache key ("" if unreadable)."""
    from napari_fracto.dataset import Dataset, DatasetError, Status

    try:
        with Dataset.open(Path(dataset_path).expanduser()) as dataset:
            return training_key(list(dataset.iter_items(split=split, status=Status.REVIEWED)))
    except (DatasetError, OSError):
        return ""


class ProbeBackend:
    """Backend kind "probe": answers the query image of a chat with the probe's labels and probabilities.

    `model` is the dataset folder it learns from. The task is the one whose vocabulary the request's
    answer schema names (or the only task with reviewed train images).
    """

    name = "probe"

    def __init__(self, dataset: str | Path, *, split: str = "train", recheck_s: float = 1.0) -> None:
        _sklearn()
        if not str(dataset).strip():
            raise ProbeError(
                "the probe backend needs a dataset folder as its model (the reviews it learns from)"
            )
        self.model = str(dataset)
        self.adapter: str | None = None
        self.split = split
        self.recheck_s = recheck_s
        self._trainer: ProbeTrainer | None = None
        self._last: dict[str, tuple[float, ProbeModel]] = {}
        self._lock = threading.Lock()

    def trainer(self) -> ProbeTrainer:
        from napari_fracto.dataset import Dataset

        with self._lock:
            if self._trainer is None:
                self._trainer = ProbeTrainer(Dataset.open(Path(self.model).expanduser()), split=self.split)
            return self._trainer

    def probe_for(self, task: str) -> ProbeModel:
        """The current probe for `task`, rechecking the dataset for new reviews at most every recheck_s."""
        now = time.monotonic()
        last = self._last.get(task)
        if last is not None and now - last[0] < self.recheck_s:
            return last[1]
        model = self.trainer().model(task)
        self._last[task] = (now, model)
        return model

    def task_of(self, request: VLMRequest) -> str:
        from napari_fracto.vocabulary import load_vocabulary

        tasks = self.trainer().tasks()
        if not tasks:
            raise ProbeError(
                f"{self.model} has no reviewed images in its {self.split} split for the probe to learn "
                "from: review some images and assign splits (`napari-fracto dataset split`)"
            )
        schema = request.json_schema or {}
        asked = set(
            schema.get("properties", {}).get("labels", {}).get("items", {}).get("properties", {})
            .get("label", {}).get("enum", [])
        )  # fmt: skip
        if asked:
            for task in tasks:
                if set(load_vocabulary(task).names()) == asked:
                    return task
            raise ProbeError(
                f"{self.model} has no reviewed train images of the task asked; its probe knows "
                f"{', '.join(tasks)}"
            )
        if len(tasks) == 1:
            return tasks[0]
        raise ProbeError(f"{self.model} holds several tasks ({', '.join(tasks)}); ask with a task's prompt")

    def generate(self, request: VLMRequest) -> VLMReply:
        import json

        started = time.perf_counter()
        images = request.images()
        if not images:
            raise ProbeError("the probe answers about an image, and the request holds none")
        if request.cancel is not None and request.cancel.is_set():
            from napari_fracto.backends.base import CancelledError

            raise CancelledError("Analysis cancelled.")
        model = self.probe_for(self.task_of(request))
        probabilities = model.predict_proba(probe_features(images[-1]))[0]
        answer = {
            "labels": [{"label": lab, "confidence": round(p, 2)} for lab, p in model.decide(probabilities)]
        }
        return VLMReply(
            json.dumps(answer),
            seconds=time.perf_counter() - started,
            extra={
                "notice": NOTICE,
                "probabilities": {lab: float(p) for lab, p in zip(model.labels, probabilities, strict=True)},
                "n_train": model.n_train,
            },
        )

    def close(self) -> None:
        with self._lock:
            if self._trainer is not None:
                self._trainer.dataset.close()
                self._trainer = None
