"""Measure the ptychography calibration set and choose each evidence threshold on it.

Reads the cases `make_ptycho_calibration.py` wrote (``<case>.npz`` + ``manifest.json``), measures every
case twice, as a product with scan positions and as a raw buffer without them, and prints for each
measure and the class it supports: the ROC AUC (cases of the causes that show the class against all
others), the threshold at the best balanced accuracy (Youden's J) and the true/false positive rates
there, then the verdict of the default thresholds on every case. Runs in napari-fracto's environment::

    python scripts/calibrate_ptycho_evidence.py /tmp/ptycho-calibration [--markdown]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from napari_fracto.ptycho.evidence import Evidence, measure_evidence

# measure -> (class it supports, causes that show the class, True when a high value supports the class)
MEASURES = {
    "grid_ratio": ("Grid artifacts", {"grid"}, True),
    "ramp_across_field_rad": ("Phase ramp", {"ramp"}, True),
    "noise_rad": ("Noisy artifacts", {"lowdose", "modose"}, True),
    "noise_to_contrast": ("Noisy artifacts", {"lowdose", "modose"}, True),
    "contrast_rad": ("Low contrast", {"underconv"}, False),
    "contrast_to_noise": ("Low contrast", {"underconv"}, False),
    "signal_rad": ("Low contrast", {"underconv"}, False),
    "residue_fraction": ("Singularity artifacts", {"thick"}, True),
    "detail": ("Blurring", {"underconv", "position"}, False),
    "crosstalk": ("Halo artifacts", {"probe"}, True),
    "crosstalk ": ("Local distortion (position errors)", {"position"}, True),
    "detail ": ("Local distortion (position errors)", {"position"}, False),
}


def load(directory: Path) -> list[tuple[str, str, np.ndarray, np.ndarray, tuple[int, ...]]]:
    manifest = json.loads((directory / "manifest.json").read_text())["cases"]
    out = []
    for name in sorted(manifest):
        with np.load(directory / manifest[name]["file"]) as z:
            pos = np.column_stack([z["ycoords"], z["xcoords"]])
            out.append((name, name.rsplit("_", 1)[0], z["objectGuess"], pos, z["probeGuess"].shape))
    return out


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a positive case scores above a negative one (ties count half): the ROC AUC."""
    if not len(positive) or not len(negative):
        return float("nan")
    diff = positive[:, None] - negative[None, :]
    return float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))


def operating_point(positive: np.ndarray, negative: np.ndarray) -> tuple[float, float, float]:
    """(threshold, TPR, FPR) maximising TPR - FPR, the threshold halfway between neighbouring values."""
    values = np.unique(np.concatenate([positive, negative]))
    cuts = np.concatenate([[values[0] - 1e-9], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-9]])
    best = (cuts[0], 0.0, 0.0, -1.0)
    for cut in cuts:
        tpr, fpr = float(np.mean(positive >= cut)), float(np.mean(negative >= cut))
        if tpr - fpr > best[3]:
            best = (float(cut), tpr, fpr, tpr - fpr)
    return best[0], best[1], best[2]


def strict_point(positive: np.ndarray, negative: np.ndarray, max_fpr: float = 0.05) -> tuple[float, float]:
    """(threshold, TPR) of the lowest cut whose false-positive rate is at most `max_fpr`."""
    values = np.unique(np.concatenate([positive, negative]))
    cuts = np.concatenate([(values[1:] + values[:-1]) / 2, [values[-1] + 1e-9]])
    for cut in cuts:
        if np.mean(negative >= cut) <= max_fpr:
            return float(cut), float(np.mean(positive >= cut))
    return float(cut), 0.0


def value(ev: Evidence, measure: str) -> float:
    return float(getattr(ev, measure.strip()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--markdown", action="store_true", help="tables for docs/ptychography.md")
    args = parser.parse_args(argv)
    cases = load(args.directory)
    with_pos = {n: measure_evidence(o, positions_px=p, probe_shape=s) for n, _, o, p, s in cases}
    raw = {n: measure_evidence(o) for n, _, o, _, _ in cases}
    causes = {n: c for n, c, *_ in cases}
    print(
        "| measure | class | AUC (positions) | AUC vs clean | Youden cut | TPR | FPR | cut at FPR<=5% | TPR "
        "| AUC (raw) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for measure, (label, positive_causes, high) in MEASURES.items():
        row = [f"`{measure.strip()}`", label]
        for ev_set in (with_pos, raw):
            sign = 1.0 if high else -1.0
            pos = np.array(
                [sign * value(e, measure) for n, e in ev_set.items() if causes[n] in positive_causes]
            )
            neg = np.array(
                [sign * value(e, measure) for n, e in ev_set.items() if causes[n] not in positive_causes]
            )
            a = auc(pos, neg)
            if ev_set is with_pos:
                clean = np.array(
                    [sign * value(e, measure) for n, e in ev_set.items() if causes[n] == "clean"]
                )
                cut, tpr, fpr = operating_point(pos, neg)
                strict, strict_tpr = strict_point(pos, neg)
                op = f"{'>=' if high else '<='} {sign * cut:.4g}"
                op_strict = f"{'>=' if high else '<='} {sign * strict:.4g}"
                row += [f"{a:.2f}", f"{auc(pos, clean):.2f}", op, f"{tpr:.2f}", f"{fpr:.2f}", op_strict]
                row.append(f"{strict_tpr:.2f}")
            else:
                row.append(f"{a:.2f}")
        print("| " + " | ".join(row) + " |")
    print()
    print("| case | step from positions (nominal) | measured on | flags with positions | flags, raw buffer |")
    print("|---|---|---|---|---|")
    manifest = json.loads((args.directory / "manifest.json").read_text())["cases"]
    for name, ev in with_pos.items():
        nominal = manifest[name]["params"]["step"]
        region = "scanned" if "scanned" in ev.measured_on else ev.measured_on
        step = f"{ev.scan_step_px:.2f} ({nominal:g})"
        flags = ", ".join(sorted(ev.flags())) or "-"
        raw_flags = ", ".join(sorted(raw[name].flags())) or "-"
        print(f"| {name} | {step} | {region} | {flags} | {raw_flags} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
