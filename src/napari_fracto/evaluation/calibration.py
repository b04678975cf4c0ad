"""Does a confidence mean something? Expected calibration error and a reliability plot per configuration.

Every label a configuration named *with a confidence* is one claim "this label is there, with
probability c"; it is right when the corrected labels hold it. Claims are put in 10 equal-width bins of
confidence; the expected calibration error (ECE) is the claim-weighted mean |accuracy - confidence| over
the bins. A well-calibrated model's 0.8 claims are right 80 % of the time (ECE near 0); a model that says
0.9 for everything and is right half the time has an ECE near 0.4. Labels named without a confidence
are not claims, so a configuration that never gives one has no calibration (None). Pure (numpy).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BINS = 10


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    n: int
    confidence: float  # mean confidence of the claims in the bin
    accuracy: float  # fraction of them that were right


@dataclass(frozen=True)
class Calibration:
    ece: float
    n_claims: int
    bins: tuple[Bin, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"ece": self.ece, "n_claims": self.n_claims, "bins": [asdict(b) for b in self.bins]}


def calibration(claims: Iterable[tuple[float, bool]], bins: int = BINS) -> Calibration | None:
    """ECE and reliability bins of (confidence, was right) claims; None when there are none."""
    data = [(min(max(float(c), 0.0), 1.0), bool(ok)) for c, ok in claims]
    if not data:
        return None
    conf = np.array([c for c, _ in data])
    right = np.array([ok for _, ok in data], dtype=np.float64)
    index = np.minimum((conf * bins).astype(int), bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        if not n:
            continue
        mean_conf, accuracy = float(conf[mask].mean()), float(right[mask].mean())
        ece += n / len(data) * abs(accuracy - mean_conf)
        out.append(Bin(b / bins, (b + 1) / bins, n, mean_conf, accuracy))
    return Calibration(float(ece), len(data), tuple(out))


def claims_of(
    predictions: Iterable[Any], truth: Mapping[str, Iterable[str]], vocab: Any
) -> list[tuple[float, bool]]:
    """(confidence, right) for every label predicted with a confidence (`Prediction.confidences`)."""
    from napari_fracto.backends.probe import target_labels

    out = []
    for p in predictions:
        if p.image_id not in truth:
            continue
        true = target_labels(truth[p.image_id], vocab)
        for label, c in (getattr(p, "confidences", None) or {}).items():
            out.append((float(c), (vocab.canonical(label) or label) in true))
    return out


def write_reliability(results: Iterable[Any], path: Path) -> Path | None:
    """A reliability plot (accuracy against confidence per bin, the diagonal is perfect) of every
    configuration with a calibration; None when none has one. matplotlib's Agg canvas, no GUI."""
    curves = [(r.config.label, r.calibration) for r in results if getattr(r, "calibration", None)]
    if not curves:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for label, cal in curves:
        ax.plot(
            [b.confidence for b in cal.bins],
            [b.accuracy for b in cal.bins],
            marker="o",
            label=f"{label} (ECE {cal.ece:.3f}, {cal.n_claims} claims)",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence given")
    ax.set_ylabel("fraction right")
    ax.set_title("reliability")
    ax.legend(fontsize="small", loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
