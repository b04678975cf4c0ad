"""Labelled images for tests and benchmarks of learning from reviews: crops of the shipped Pty-chi cases.

Each shipped reconstruction (sample_files/, one physical cause each) has PtychoBench labels in the
manifest; random crops, 90-degree turns and a little noise of it carry the same labels. `weights` makes a
pool as uneven as real work is (mostly clean images, a few of each problem).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelledImage:
    case: str
    array: np.ndarray  # complex object crop
    labels: tuple[str, ...]


def ptycho_objects() -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    """Each shipped case's complex object and its PtychoBench labels."""
    from importlib.resources import files

    from napari_fracto.sample_data import manifest

    out = {}
    for case, entry in sorted(manifest()["cases"].items()):
        path = files("napari_fracto") / "sample_files" / entry["file"]
        with np.load(str(path), allow_pickle=False) as npz:
            obj = np.asarray(npz["objectGuess"])
        out[case] = (obj, tuple(entry["ptychobench_labels"]))
    return out


def ptycho_crops(
    n: int, *, side: int = 96, seed: int = 0, weights: Mapping[str, float] | None = None
) -> list[LabelledImage]:
    """`n` random crops (turned, with noise) of the shipped cases, drawn by `weights` (default: equal)."""
    objects = ptycho_objects()
    cases = sorted(objects)
    w = np.array([float((weights or {}).get(c, 1.0)) for c in cases])
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(cases), size=n, p=w / w.sum())
    out = []
    for index in picks:
        case = cases[index]
        obj, labels = objects[case]
        obj = np.squeeze(obj)
        r = int(rng.integers(0, obj.shape[0] - side + 1))
        c = int(rng.integers(0, obj.shape[1] - side + 1))
        crop = np.rot90(obj[r : r + side, c : c + side], int(rng.integers(0, 4)))
        noise = rng.normal(0, 0.02, crop.shape) + 1j * rng.normal(0, 0.02, crop.shape)
        out.append(LabelledImage(case, (crop + noise).astype(np.complex64), labels))
    return out
