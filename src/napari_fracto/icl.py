"""In-context learning: pick k solved examples from the corrections dataset for a prompt.

"random" draws reviewed train images with a seeded generator; "similar" ranks them by texture features
(no downloaded weights: LBP histogram, GLCM statistics and an intensity histogram of a small grey image)
plus shared metadata (material, sample type). Either way the leakage guard drops the query image itself
and any rotated or flipped copy of it: same content hash, or a perceptual signature (16 x 16 mean-
threshold bits) within a few bits of one of the query's 8 rotations/flips.

The image features are pluggable (`Features`): texture by default, or the VLM's own vision tower
(`icl_vision.VisionFeatures`). Features and signatures are cached per image and per feature kind (in
memory and, with `cache_dir`, on disk as .npz under a folder named after the kind), so texture and
vision vectors never share a cache entry. The leakage guard never looks at the features.
Imports neither Qt nor torch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from napari_fracto.findings import AnalysisContext, Finding

if TYPE_CHECKING:
    from napari_fracto.dataset import Dataset
    from napari_fracto.prompts import Example

log = logging.getLogger(__name__)

FEATURE_VERSION = "1"
THUMBNAIL = 128  # side of the grey image the texture features are computed on
SIGNATURE_SIDE = 16  # signature = SIGNATURE_SIDE**2 bits
LEAK_BITS = 10  # at most this many differing bits (of 256): the same image, maybe rotated/flipped/resampled
METADATA_FIELDS = ("material", "sample_type")
Selection = Literal["similar", "random"]
SELECTIONS: tuple[str, ...] = ("similar", "random")
FEATURE_KINDS: tuple[str, ...] = ("texture", "vision")


class Features(Protocol):
    """An image -> feature vector function with a `name` that keys its cache (a safe file name)."""

    name: str

    def __call__(self, array: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Candidate:
    """A solved example: a reviewed train image with its corrected answer (pixel boxes)."""

    image_id: str
    findings: tuple[Finding, ...]
    advice: tuple[str, ...]
    context: AnalysisContext
    width: int
    height: int


@dataclass(frozen=True)
class ImageKey:
    """What the selector knows about one image: content hash, texture features, perceptual signature."""

    content_hash: str
    features: np.ndarray
    signature: np.ndarray  # bool, SIGNATURE_SIDE**2


def content_hash(array: np.ndarray) -> str:
    """sha256 of dtype, shape and pixels: the same image however it was stored."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def grey_image(array: np.ndarray) -> np.ndarray:
    """The image as the model sees it (`imaging.to_model_rgb`), as float grey in 0-1, at most ~2x the
    feature size per side (block-averaged first, so large images cost little)."""
    from napari_fracto.imaging import block_mean, to_model_rgb

    height, width = np.shape(array)[:2]
    factor = min(height, width) // (2 * THUMBNAIL)
    if factor >= 2:
        array = block_mean(array, factor)
    return to_model_rgb(array).astype(np.float32).mean(axis=2) / 255.0


def _resize(grey: np.ndarray, side: int) -> np.ndarray:
    from skimage.transform import resize

    return resize(grey, (side, side), anti_aliasing=True, preserve_range=True)


def texture_features(grey: np.ndarray) -> np.ndarray:
    """34 numbers describing texture and brightness, rotation-tolerant (LBP uniform, GLCM over 4 angles)."""
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

    small = _resize(grey, THUMBNAIL)
    u8 = np.clip(np.rint(small * 255), 0, 255).astype(np.uint8)
    lbp = local_binary_pattern(u8, P=8, R=1, method="uniform")
    lbp_hist = np.bincount(lbp.astype(int).ravel(), minlength=10)[:10] / lbp.size
    levels = 32
    glcm = graycomatrix(
        (u8 // (256 // levels)).astype(np.uint8),
        distances=[1, 3],
        angles=[0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
        levels=levels,
        symmetric=True,
        normed=True,
    )
    glcm_stats = [
        graycoprops(glcm, prop).mean(axis=1)  # mean over angles, one value per distance
        for prop in ("contrast", "homogeneity", "energy", "correlation")
    ]
    intensity = np.histogram(small, bins=16, range=(0.0, 1.0))[0] / small.size
    features = np.concatenate([lbp_hist, np.concatenate(glcm_stats), intensity]).astype(np.float64)
    return np.nan_to_num(features, nan=0.0)  # correlation is NaN on a flat image


def signature(grey: np.ndarray) -> np.ndarray:
    """Mean-threshold bits of a 16 x 16 thumbnail: survives resizing and mild compression."""
    thumb = _resize(grey, SIGNATURE_SIDE)
    return (thumb > thumb.mean()).ravel()


def dihedral_signatures(sig: np.ndarray) -> np.ndarray:
    """The signature of each of the image's 4 rotations x 2 flips (8 x bits)."""
    square = sig.reshape(SIGNATURE_SIDE, SIGNATURE_SIDE)
    variants = [np.rot90(s, k) for s in (square, np.fliplr(square)) for k in range(4)]
    return np.stack([v.ravel() for v in variants])


def is_copy(query: ImageKey, candidate: ImageKey, max_bits: int = LEAK_BITS) -> bool:
    """True when the candidate is the query itself or a rotated/flipped (maybe resampled) copy."""
    if query.content_hash == candidate.content_hash:
        return True
    differing = (dihedral_signatures(query.signature) != candidate.signature).sum(axis=1)
    return bool(differing.min() <= max_bits)


def describe(array: np.ndarray, features: Features | None = None) -> ImageKey:
    """Hash, features (texture unless `features` is given) and signature of one image.

    Raises `imaging.ImageError` for unusable images."""
    grey = grey_image(array)
    vector = texture_features(grey) if features is None else np.asarray(features(array))
    return ImageKey(content_hash(array), vector, signature(grey))


class FeatureCache:
    """ImageKeys by feature kind and a stable id (dataset image id or content hash), in memory and
    optionally on disk (one sub-folder per kind)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) / f"icl-features-v{FEATURE_VERSION}" if folder else None
        self._memory: dict[tuple[str, str], ImageKey] = {}

    def get(self, key: str, load: Any, features: Features | None = None) -> ImageKey:
        """The cached ImageKey for `key` under `features` (texture when None), computing it from
        `load()` (an array) the first time."""
        kind = features.name if features is not None else "texture"
        memory_key = (kind, key)
        if memory_key in self._memory:
            return self._memory[memory_key]
        path = self.folder / kind / f"{key}.npz" if self.folder else None
        if path is not None and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    found = ImageKey(
                        str(data["content_hash"]), data["features"], data["signature"].astype(bool)
                    )
                self._memory[memory_key] = found
                return found
            except (OSError, ValueError, KeyError) as exc:
                log.warning("Recomputing unreadable feature cache %s (%s)", path, exc)
        found = describe(load(), features)
        self._memory[memory_key] = found
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.tmp.npz")
            np.savez(
                tmp,
                content_hash=found.content_hash,
                features=found.features,
                signature=found.signature,
            )
            tmp.replace(path)
        return found


class ExampleSelector:
    """Solved examples from one dataset split (reviewed images of `task` only), chosen per query.

    `features` ranks "similar" examples: texture when None, or e.g. `icl_vision.VisionFeatures`.
    """

    def __init__(
        self,
        dataset: Dataset,
        task: str,
        *,
        split: str = "train",
        cache: FeatureCache | None = None,
        metadata_weight: float = 1.0,
        features: Features | None = None,
    ) -> None:
        from napari_fracto.dataset import Status

        self.dataset = dataset
        self.task = task
        self.cache = cache or FeatureCache()
        self.features = features
        self.metadata_weight = metadata_weight
        self.candidates: list[Candidate] = []
        for item in dataset.iter_items(task=task, split=split, status=Status.REVIEWED):
            review = item.review
            assert review is not None  # status REVIEWED implies a review
            self.candidates.append(
                Candidate(
                    item.image_id,
                    tuple(review.corrected),
                    tuple(review.advice),
                    review.context,
                    item.image.width,
                    item.image.height,
                )
            )
        self._skipped: set[str] = set()

    def _key(self, candidate: Candidate) -> ImageKey | None:
        if candidate.image_id in self._skipped:
            return None
        try:
            return self.cache.get(
                candidate.image_id, lambda: self.dataset.image_array(candidate.image_id), self.features
            )
        except (ValueError, OSError) as exc:  # ImageError, DatasetError, unreadable file
            log.warning("Not using %s as an example: %s", candidate.image_id[:12], exc)
            self._skipped.add(candidate.image_id)
            return None

    def select(
        self,
        query: np.ndarray,
        k: int,
        *,
        method: Selection = "similar",
        context: AnalysisContext | None = None,
        seed: int = 0,
    ) -> list[Candidate]:
        """Up to k candidates for this query image, never the image itself or a rotated/flipped copy.

        "random" is reproducible: the same seed and query give the same examples.
        """
        if method not in SELECTIONS:
            raise ValueError(f"unknown example selection {method!r}; use one of {', '.join(SELECTIONS)}")
        if k < 0:
            raise ValueError(f"the number of examples must be 0 or more, got {k}")
        if k == 0 or not self.candidates:
            return []
        query_key = self.cache.get(content_hash(query), lambda: query, self.features)
        usable: list[tuple[Candidate, ImageKey]] = []
        for candidate in self.candidates:
            key = self._key(candidate)
            if key is not None and not is_copy(query_key, key):
                usable.append((candidate, key))
        if method == "random":
            rng = np.random.default_rng([seed, int(query_key.content_hash[:12], 16)])
            order = rng.permutation(len(usable))[:k]
            return [usable[i][0] for i in order]
        return [c for c, _ in self._rank(query_key, usable, context)[:k]]

    def _rank(
        self,
        query: ImageKey,
        usable: list[tuple[Candidate, ImageKey]],
        context: AnalysisContext | None,
    ) -> list[tuple[Candidate, ImageKey]]:
        """Nearest first: z-scored feature distance plus a penalty per differing metadata field."""
        if not usable:
            return []
        feats = np.stack([key.features for _, key in usable])
        if getattr(self.features, "normalised", False):  # unit vectors (vision): compare them as they are
            dist = np.linalg.norm(feats - query.features, axis=1)
        else:  # texture numbers of mixed scales: z-score each
            std = feats.std(axis=0)
            std[std < 1e-12] = 1.0
            dist = np.sqrt((((feats - query.features) / std) ** 2).mean(axis=1))
        penalty = np.zeros(len(usable))
        for field in METADATA_FIELDS:
            wanted = _norm(getattr(context, field, "")) if context else ""
            if wanted:
                penalty += [
                    self.metadata_weight * (_norm(getattr(c.context, field)) != wanted) for c, _ in usable
                ]
        scores = dist + penalty
        order = sorted(range(len(usable)), key=lambda i: (scores[i], usable[i][0].image_id))
        return [usable[i] for i in order]

    def examples(
        self,
        chosen: Sequence[Candidate],
        *,
        with_context: bool = True,
        advice: bool = False,
        max_image_tokens: int = 1024,
    ) -> list[Example]:
        """Candidates as prompt examples: the image as the model sees it and the canonical answer."""
        from napari_fracto.prepare import example_image

        return [
            to_example(
                c,
                example_image(self.dataset.image_array(c.image_id), max_image_tokens),
                with_context=with_context,
                advice=advice,
            )
            for c in chosen
        ]


def _norm(text: str) -> str:
    return " ".join(str(text or "").lower().split())


def to_example(
    candidate: Candidate, image: Any, *, with_context: bool = True, advice: bool = False
) -> Example:
    """One prompt example; boxes go from the stored pixels to the 0-1000 grid of the whole image."""
    from napari_fracto.geometry import Region, pixels_to_grid
    from napari_fracto.prompts import Example, format_answer

    region = Region.full(candidate.width, candidate.height)
    findings = [
        Finding(f.label, f.confidence, pixels_to_grid(f.box, region) if f.box is not None else None)
        for f in candidate.findings
    ]
    answer = format_answer(findings, advice=candidate.advice if advice else ())
    context = candidate.context if with_context and not candidate.context.is_empty() else None
    return Example(image=image, answer_text=answer, context=context, image_id=candidate.image_id)


class ExampleChooser:
    """`analyze_array(examples=...)`'s per-image chooser: k solved examples for each query image.

    Thread-safe (one lock around the selector's shared feature cache), so batch workers can share it.
    Holds the dataset open until `close()` (or the end of a `with` block).
    """

    def __init__(
        self,
        selector: ExampleSelector,
        shots: int,
        *,
        method: Selection = "similar",
        context: AnalysisContext | None = None,
        advice: bool = False,
        max_image_tokens: int = 1024,
    ) -> None:
        import threading

        self.selector = selector
        self.shots = shots
        self.method = method
        self.context = context
        self.advice = advice
        self.max_image_tokens = max_image_tokens
        self._lock = threading.Lock()

    def __call__(self, image: np.ndarray) -> list[Example]:
        with self._lock:
            chosen = self.selector.select(image, self.shots, method=self.method, context=self.context)
            return self.selector.examples(chosen, advice=self.advice, max_image_tokens=self.max_image_tokens)

    def close(self) -> None:
        self.selector.dataset.close()
        close_features = getattr(self.selector.features, "close", None)
        if close_features is not None:
            close_features()  # a feature model loaded for the examples alone

    def __enter__(self) -> ExampleChooser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def example_chooser(
    dataset_path: str | Path | None,
    task: str,
    shots: int,
    method: str = "similar",
    context: AnalysisContext | None = None,
    advice: bool = False,
    max_image_tokens: int = 1024,
    *,
    cache: FeatureCache | None = None,
    features: Features | None = None,
) -> ExampleChooser | None:
    """The in-context example chooser for `shots` examples from a dataset's reviewed train images;
    None for 0 shots. The one implementation behind the CLI's `--shots` and the Analyze widget.
    `features` ranks "similar" examples (texture when None; see `icl_vision.vision_features`).

    Raises ValueError (a message for the user) for a bad count or method, a missing dataset, or a dataset
    with no reviewed train images of `task`.
    """
    from napari_fracto.dataset import Dataset

    if shots < 0:
        raise ValueError(f"the number of examples must be 0 or more, got {shots}")
    if shots == 0:
        return None
    if method not in SELECTIONS:
        raise ValueError(f"unknown example selection {method!r}; use one of {', '.join(SELECTIONS)}")
    if dataset_path is None or not str(dataset_path).strip():
        raise ValueError(f"{shots} in-context example(s) need a corrections dataset folder to take them from")
    dataset = Dataset.open(Path(dataset_path).expanduser())
    try:
        selector = ExampleSelector(dataset, task, cache=cache, features=features)
    except BaseException:
        dataset.close()
        raise
    if not selector.candidates:
        dataset.close()
        raise ValueError(
            f"{dataset_path} has no reviewed '{task}' images in its train split: review some images of "
            "this task and assign splits (`napari-fracto dataset split`), or set the examples to 0"
        )
    return ExampleChooser(
        selector,
        shots,
        method=method,  # type: ignore[arg-type]  # checked against SELECTIONS above
        context=context,
        advice=advice,
        max_image_tokens=max_image_tokens,
    )
