"""Generate the ptychography evidence calibration set with Pty-chi: five cases per known cause.

Each case simulates far-field data from a known object with one factor changed and reconstructs it with
Pty-chi's LSQML on the CPU (the same simulation as ``make_ptycho_samples.py``, whose helpers it uses).
The five variants of each cause differ in object (scikit-image images as amplitude and phase), probe
size (32-56 px), scan step, scan type (Fermat spiral, raster with each point anywhere in its cell, or
perfect raster) and buffer shape (square and non-square). The whole reconstruction buffer is kept,
unlit rim included, with the probe centres in its pixels: the evidence is measured the way a user's raw
buffer would be (cropped to the scanned region from the positions, or not at all when they are withheld).

Output per case ``<name>.npz`` (``objectGuess``, ``probeGuess``, ``xcoords``/``ycoords``, ``pixel_size_m``,
``scan_step_px``) and ``manifest.json`` (cause, PtychoBench labels, parameters). Run in the Pty-chi
environment (see make_ptycho_samples.py)::

    .venv-ptychi/bin/python scripts/make_ptycho_calibration.py --out /tmp/ptycho-calibration
    .venv-ptychi/bin/python scripts/make_ptycho_calibration.py --variants 0 --out DIR   # one per cause

then measure it with ``python scripts/calibrate_ptycho_evidence.py DIR`` in napari-fracto's environment.
Deterministic for the same Pty-chi/torch versions (one torch thread, fixed seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_ptycho_samples as samples

PIXEL_SIZE_M = samples.PIXEL_SIZE_M

# the five variants every cause is made in: object, probe, field (rows, cols), scan, step, phase range
OBJECTS = [
    ("camera", "astronaut"),
    ("moon", "coins"),
    ("grass", "text"),
    ("clock", "horse"),
    ("gravel", "page"),
]
PROBES = [32, 40, 48, 56, 40]
FIELDS = [(72, 72), (64, 104), (96, 64), (80, 120), (88, 88)]
SCANS = ["spiral", "spiral", "jittered", "spiral", "jittered"]
STEPS = [6.0, 7.0, 8.0, 10.0, 7.0]
PHASES = [1.0, 0.7, 0.6, 0.8, 1.2]  # weak phase objects (0.6-0.8 rad) among them


@dataclass(frozen=True)
class CalCase:
    """One calibration reconstruction (fields as in make_ptycho_samples.Case, plus what varies here)."""

    name: str
    cause: str
    labels: tuple[str, ...]
    amplitude_image: str
    phase_image: str
    probe_px: int
    field_px: tuple[int, int]
    scan: str = "spiral"  # spiral, jittered (raster with known random offsets) or raster (perfect)
    step: float = 8.0
    dose: float = 1e6
    jitter_px: float = 0.0  # uncorrected position error, rms
    epochs: int = 80  # the raster pathology needs them to develop (30 showed it in one raster of five)
    optimize_probe: bool = True
    probe_guess_defocus: float = 1.2
    phase_max: float = 1.0
    ramp_rad: float = 0.0  # linear phase added across the field's diagonal (object-probe ambiguity)
    seed: int = 0


CAUSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "clean": ("none (clean reconstruction)", ("No obvious artifacts",)),
    "grid": ("perfectly regular raster scan", ("Grid artifacts",)),
    "position": ("uncorrected scan-position errors", ("Local distortion", "Blurring")),
    "overlap": ("insufficient probe overlap", ("No clear structure",)),
    "lowdose": ("low dose", ("Noisy artifacts", "No clear structure")),
    "modose": ("moderate dose", ("Noisy artifacts",)),
    "probe": ("wrong probe held fixed", ("Halo artifacts", "Local distortion")),
    "underconv": ("too few iterations", ("Blurring", "Low contrast")),
    "thick": ("thick object: phase wrapping", ("Singularity artifacts", "Local distortion")),
    "ramp": ("linear phase ramp left in the object", ("Phase ramp",)),
}


def make_cases() -> dict[str, CalCase]:
    """All 50 cases: each cause in the five variants, one factor changed from the clean variant."""
    out = {}
    for cause, (text, labels) in CAUSES.items():
        for i in range(5):
            base = {
                "cause": text,
                "labels": labels,
                "amplitude_image": OBJECTS[i][0],
                "phase_image": OBJECTS[i][1],
                "probe_px": PROBES[i],
                "field_px": FIELDS[i],
                "scan": SCANS[i],
                "step": STEPS[i],
                "phase_max": PHASES[i],
                "seed": 100 * list(CAUSES).index(cause) + i,
            }
            extra: dict = {
                "clean": {},
                "grid": {"scan": "raster", "step": [6.0, 8.0, 10.0, 12.0, 9.0][i]},
                "position": {"jitter_px": [1.5, 2.0, 2.5, 3.0, 2.0][i]},
                "overlap": {"step": round(0.55 * PROBES[i], 1)},
                "lowdose": {"dose": [1e2, 3e2, 1e3, 5e2, 2e2][i]},
                "modose": {"dose": [2e3, 3e3, 5e3, 3e3, 4e3][i]},
                "probe": {"optimize_probe": False, "probe_guess_defocus": [0.8, 0.5, 2.2, 0.9, 2.0][i]},
                "underconv": {"epochs": [2, 3, 3, 4, 2][i]},
                "thick": {"phase_max": [6.0, 8.0, 10.0, 12.0, 7.0][i]},
                "ramp": {"ramp_rad": [8.0, 10.0, 14.0, 12.0, 9.0][i]},
            }[cause]
            name = f"{cause}_{i}"
            out[name] = CalCase(name=name, **{**base, **extra})
    return out


CASES = make_cases()


def _gray(name: str, shape: tuple[int, int]) -> np.ndarray:
    from skimage import color, data, transform

    img = getattr(data, name)()
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3])
    img = transform.resize(img.astype(float), shape, anti_aliasing=True)
    return (img - img.min()) / max(np.ptp(img), 1e-12)


def truth_object(case: CalCase, shape: tuple[int, int]) -> np.ndarray:
    """Amplitude 0.6-1.0 and phase 0-phase_max rad from two images, plus the case's phase ramp."""
    amp = 0.6 + 0.4 * _gray(case.amplitude_image, shape)
    phase = case.phase_max * _gray(case.phase_image, shape)
    return (amp * np.exp(1j * phase)).astype(np.complex64)


def phase_ramp(case: CalCase, shape: tuple[int, int]) -> np.ndarray:
    """The linear phase (rad) a ramp case leaves in the reconstruction: `ramp_rad` across the field.

    Added to the reconstructed object, not to the truth: with the probe refined, a ramp in the truth
    ends up in the probe (the object-probe ambiguity), and the case would show no ramp at all.
    """
    yy, xx = np.indices(shape, dtype=np.float64)
    angle = 0.3 + 0.25 * case.seed  # direction varies with the case
    gy, gx = np.sin(angle), np.cos(angle)
    span = abs(gy) * case.field_px[0] + abs(gx) * case.field_px[1]
    return case.ramp_rad * (gy * yy + gx * xx) / span


def nominal_positions(case: CalCase, rng: np.random.Generator) -> np.ndarray:
    """Probe centres (y, x) around the buffer centre, in pixels, as the reconstruction is told them."""
    kind = "spiral" if case.scan == "spiral" else "raster"
    scan = samples.Case(case.name, case.cause, case.labels, scan=kind, step=case.step)
    pos = samples.scan_positions(scan, case.field_px, rng)
    if case.scan == "jittered":  # a raster broken up on purpose, with the offsets known
        pos = pos + rng.uniform(-0.5, 0.5, pos.shape).astype(np.float32) * case.step  # anywhere in its cell
    return pos.astype(np.float32)


def make_case(case: CalCase, out_dir: Path) -> dict:
    """Simulate, reconstruct and write `<name>.npz` (whole buffer); return its manifest entry."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(case.seed)
    shape = (case.field_px[0] + case.probe_px + 8, case.field_px[1] + case.probe_px + 8)
    nominal = nominal_positions(case, rng)
    true_pos = nominal + rng.normal(0, case.jitter_px, nominal.shape).astype(np.float32) / np.sqrt(2)
    truth = truth_object(case, shape)
    probe_true = samples.zone_plate_probe(case.probe_px, defocus=1.5)
    probe_guess = samples.zone_plate_probe(case.probe_px, defocus=case.probe_guess_defocus)
    sim = samples.Case(case.name, case.cause, case.labels, dose=case.dose)
    patterns = samples.simulate(sim, truth, probe_true, true_pos, case.seed + 1)
    recon = samples.Case(
        case.name,
        case.cause,
        case.labels,
        epochs=case.epochs,
        optimize_probe=case.optimize_probe,
        seed=case.seed,
    )
    result = samples.reconstruct(recon, patterns, probe_guess, nominal, object_shape=shape)
    if case.ramp_rad:
        result["object"] = result["object"] * np.exp(1j * phase_ramp(case, shape))
    centres = nominal + (np.round(np.array(shape) / 2.0) - 0.5)  # Pty-chi's origin convention
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out_dir / f"{case.name}.npz",
        objectGuess=result["object"].astype(np.complex64),
        probeGuess=result["probe"].astype(np.complex64),
        xcoords=centres[:, 1].astype(np.float32),
        ycoords=centres[:, 0].astype(np.float32),
        pixel_size_m=np.float64(PIXEL_SIZE_M),
        scan_step_px=np.float64(case.step),
    )
    params = {k: v for k, v in asdict(case).items() if k not in ("name", "cause", "labels")}
    return {
        "file": f"{case.name}.npz",
        "cause": case.cause,
        "ptychobench_labels": list(case.labels),
        "params": params,
        "n_positions": len(nominal),
        "object_shape": list(shape),
        "final_loss": result["final_loss"],
        "seconds": round(time.perf_counter() - t0, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--causes", nargs="*", choices=sorted(CAUSES), help="default: all")
    parser.add_argument("--variants", nargs="*", type=int, choices=range(5), help="default: all five")
    parser.add_argument("--cases", nargs="*", choices=sorted(CASES), help="these cases only (e.g. grid_1)")
    args = parser.parse_args(argv)

    samples.check_environment()
    samples.install_gaussian_blur_shim()
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.setdefault("cases", {})
    manifest["generator"] = {"script": "scripts/make_ptycho_calibration.py", "torch": torch.__version__}
    for name, case in CASES.items():
        cause, variant = name.rsplit("_", 1)
        if (args.causes and cause not in args.causes) or (
            args.variants and int(variant) not in args.variants
        ):
            continue
        if args.cases and name not in args.cases:
            continue
        entry = make_case(case, args.out)
        manifest["cases"][name] = entry
        print(json.dumps({name: entry["seconds"]}), flush=True)
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")  # a partial run keeps what it made
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
