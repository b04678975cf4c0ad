"""Regenerate napari-fracto's ptychography sample library with Pty-chi, one known physical cause per case.

Each case simulates far-field diffraction data from a known object (amplitude: scikit-image ``camera``,
phase: ``astronaut``, both public domain) with one factor changed, reconstructs it with Pty-chi's LSQML
engine on the CPU, crops the object to the scanned region and writes ``<case>.npz`` (keys ``objectGuess``
complex64, ``probeGuess``, ``xcoords``/``ycoords`` = probe centres in pixels of the stored object,
``pixel_size_m``) plus a ``manifest.json`` naming the cause and the PtychoBench labels of every case.

Pty-chi is a generator-time dependency only; it does not go into napari-fracto's own environment (its
torchvision requirement breaks transformers there). Set up a separate environment once::

    python3.11 -m venv /tmp/ptychi-venv
    /tmp/ptychi-venv/bin/pip install torch==2.13.0   # the CPU wheel is enough
    /tmp/ptychi-venv/bin/pip install --no-deps ptychi==2.2.0
    /tmp/ptychi-venv/bin/pip install "numpy>=2.1" scipy scikit-image h5py pandas "pydantic>=2,<3" tqdm \
        scikit-learn "matplotlib>=3.10.6"

and run ``/tmp/ptychi-venv/bin/python scripts/make_ptycho_samples.py [--cases a_clean g_raster_grid]
[--out DIR]``. torchvision is deliberately not installed: Pty-chi imports it for one Gaussian blur only,
and PyPI's torchvision does not import beside CPU torch 2.13, so this script provides that one function.
One torch thread is used (two are slower and erratic on small machines). Results are deterministic for
the same versions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

REQUIRED = {"ptychi": "2.2.0", "torch": "2.13"}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "napari_fracto" / "sample_files"
PIXEL_SIZE_M = 10e-9
OBJECT_SIZE = 176  # reconstruction buffer; the stored object is the scanned region inside it
PROBE_SIZE = 48


@dataclass(frozen=True)
class Case:
    """One sample: which factor differs from the clean reconstruction, and what it looks like."""

    name: str
    cause: str
    labels: tuple[str, ...]
    scan: str = "spiral"
    step: float = 8.0
    dose: float = 1e6
    jitter_px: float = 0.0
    epochs: int = 40
    optimize_probe: bool = True
    probe_guess_defocus: float = 1.2  # the true probe has 1.5 waves of defocus
    phase_max: float = 1.0
    seed: int = 0


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("a_clean", "none (clean reference reconstruction)", ("No obvious artifacts",)),
        Case(
            "b_position_errors",
            "uncorrected scan-position errors (2.5 px rms)",
            ("Local distortion", "Blurring"),
            jitter_px=2.5,
        ),
        Case(
            "c_low_overlap",
            "insufficient probe overlap (step about one probe diameter)",
            ("No clear structure",),
            step=26.0,
        ),
        Case(
            "d_low_dose",
            "low dose (1e3 photons per pattern)",
            ("Noisy artifacts", "No clear structure"),
            dose=1e3,
        ),
        Case(
            "e_wrong_probe_fixed",
            "wrong probe (defocus) held fixed during reconstruction",
            ("Halo artifacts", "Local distortion"),
            optimize_probe=False,
            probe_guess_defocus=0.8,
        ),
        Case(
            "f_under_converged",
            "too few iterations (3 epochs)",
            ("Blurring", "Low contrast"),
            epochs=3,
        ),
        Case(
            "g_raster_grid",
            "perfectly regular raster scan (raster grid pathology)",
            ("Grid artifacts",),
            scan="raster",
        ),
        Case(
            "h_phase_wrap_thick",
            "thick object (phase 0-10 rad): phase wrapping plus slow convergence",
            ("Singularity artifacts", "Local distortion"),
            phase_max=10.0,
        ),
    )
}


def check_environment() -> None:
    """Fail with instructions, not a traceback, when this is not the generator environment."""
    import importlib.metadata as md

    problems = []
    for package, version in REQUIRED.items():
        try:
            found = md.version(package)
        except md.PackageNotFoundError:
            problems.append(f"{package} is not installed")
            continue
        if not found.startswith(version):
            problems.append(f"{package} {found} found, {version} expected")
    if problems:
        sys.exit(
            "make_ptycho_samples.py needs its own environment: " + "; ".join(problems) + ".\n"
            "See the docstring at the top of scripts/make_ptycho_samples.py for the setup commands."
        )


def install_gaussian_blur_shim() -> None:
    """Provide the one torchvision function Pty-chi imports (a Gaussian blur), without torchvision."""
    try:
        import torchvision.transforms  # noqa: F401

        return
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    import torch

    class GaussianBlur:
        """torchvision.transforms.GaussianBlur for (..., H, W) tensors, reflect padding like the original."""

        def __init__(self, kernel_size, sigma=(0.1, 2.0)):
            self.kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
            sig = (sigma, sigma) if isinstance(sigma, int | float) else sigma
            self.sigma = (float(sig[0]), float(sig[-1]))

        def __call__(self, img):
            kernels = []
            for size, s in zip(self.kernel_size, self.sigma, strict=True):
                x = torch.arange(size, dtype=img.dtype, device=img.device) - (size - 1) / 2
                k = torch.exp(-0.5 * (x / s) ** 2)
                kernels.append(k / k.sum())
            shape = img.shape
            flat = img.reshape(-1, 1, *shape[-2:])
            ky, kx = self.kernel_size
            flat = torch.nn.functional.pad(flat, (kx // 2, kx // 2, ky // 2, ky // 2), mode="reflect")
            flat = torch.nn.functional.conv2d(flat, kernels[0].view(1, 1, -1, 1))
            flat = torch.nn.functional.conv2d(flat, kernels[1].view(1, 1, 1, -1))
            return flat.reshape(shape)

    package = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    transforms.GaussianBlur = GaussianBlur
    package.transforms = transforms
    sys.modules["torchvision"] = package
    sys.modules["torchvision.transforms"] = transforms


def truth_object(phase_max: float, size: int) -> np.ndarray:
    """The known object: camera as amplitude (0.6-1.0), astronaut as phase (0-phase_max rad)."""
    from skimage import color, data, transform

    amp = transform.resize(data.camera().astype(float), (size, size), anti_aliasing=True)
    phase = transform.resize(color.rgb2gray(data.astronaut()), (size, size), anti_aliasing=True)
    amp = 0.6 + 0.4 * (amp - amp.min()) / np.ptp(amp)
    phase = phase_max * (phase - phase.min()) / np.ptp(phase)
    return (amp * np.exp(1j * phase)).astype(np.complex64)


def zone_plate_probe(n: int, defocus: float) -> np.ndarray:
    """A defocused zone-plate-like probe: annular pupil (with central stop) with a quadratic phase."""
    f = np.fft.fftfreq(n)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    r = np.hypot(fy, fx)
    pupil = ((r < 0.22) & (r > 0.07)).astype(complex)
    pupil *= np.exp(1j * defocus * (r / 0.22) ** 2 * 2 * np.pi)
    probe = np.fft.fftshift(np.fft.ifft2(pupil))
    return (probe / np.abs(probe).max()).astype(np.complex64)


def scan_positions(case: Case, field_px: float | tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Probe centres (y, x) in pixels around the object centre: a Fermat spiral or a regular raster.

    `field_px` is the scanned field's side, or its (height, width) for a rectangular field.
    """
    half_y, half_x = (np.asarray(field_px, dtype=np.float64) * np.ones(2) / 2).tolist()
    if case.scan == "raster":
        rows = np.arange(-half_y, half_y + 1e-6, case.step)
        cols = np.arange(-half_x, half_x + 1e-6, case.step)
        yy, xx = np.meshgrid(rows, cols, indexing="ij")
        pos = np.stack([yy.ravel(), xx.ravel()], axis=1)
    else:
        # Fermat spiral, one point per step**2 of area
        n = int(np.pi * (half_y**2 + half_x**2) / case.step**2)
        k = np.arange(n)
        radius = case.step / np.sqrt(np.pi) * np.sqrt(k + 0.5)
        theta = k * np.pi * (3 - np.sqrt(5))
        pos = np.stack([radius * np.sin(theta), radius * np.cos(theta)], axis=1)
        pos = pos[(np.abs(pos[:, 0]) <= half_y) & (np.abs(pos[:, 1]) <= half_x)]
    return pos.astype(np.float32)


def simulate(case: Case, obj: np.ndarray, probe: np.ndarray, true_pos: np.ndarray, seed: int) -> np.ndarray:
    """Far-field intensities of probe x object patch, scaled to `case.dose` photons, Poisson noise."""
    import torch
    from ptychi.image_proc import extract_patches_fourier_shift

    origin = np.round(np.array(obj.shape) / 2.0) - 0.5  # Pty-chi's SUPPORT origin convention
    patches = extract_patches_fourier_shift(
        torch.from_numpy(obj), torch.from_numpy(true_pos + origin.astype(np.float32)), probe.shape
    ).numpy()
    far = np.fft.fftshift(np.fft.fft2(patches * probe), axes=(-2, -1))
    intensity = np.abs(far) ** 2
    intensity *= case.dose / intensity.sum(axis=(-2, -1)).mean()
    return np.random.default_rng(seed).poisson(intensity).astype(np.float32)


def reconstruct(
    case: Case,
    patterns: np.ndarray,
    probe_guess: np.ndarray,
    positions: np.ndarray,
    object_shape: tuple[int, int] = (OBJECT_SIZE, OBJECT_SIZE),
) -> dict:
    """LSQML from a flat object and a wrong-defocus probe guess; returns object, probe, loss."""
    import torch
    from ptychi import api
    from ptychi.api.task import PtychographyTask

    options = api.LSQMLOptions()
    options.object_options.pixel_size_m = PIXEL_SIZE_M
    options.object_options.optimizable = True
    options.probe_options.optimizable = case.optimize_probe
    options.probe_position_options.optimizable = False
    options.reconstructor_options.num_epochs = case.epochs
    options.reconstructor_options.batch_size = 64
    options.reconstructor_options.default_device = api.Devices.CPU
    options.reconstructor_options.random_seed = case.seed
    task = PtychographyTask(
        options,
        diffraction_data=patterns,
        object_data=torch.ones((1, *object_shape), dtype=torch.complex64),
        probe_data=torch.from_numpy(probe_guess[None, None]),
        probe_position_x_px=positions[:, 1],
        probe_position_y_px=positions[:, 0],
    )
    task.run()
    obj = task.get_data_to_cpu("object", as_numpy=True)[0]
    probe = task.get_data_to_cpu("probe", as_numpy=True)[0, 0]
    loss = getattr(task.reconstructor, "loss_tracker", None)
    final_loss = None
    if loss is not None and hasattr(loss, "table") and len(loss.table):
        final_loss = float(loss.table["loss"].iloc[-1])
    return {"object": obj, "probe": probe, "final_loss": final_loss}


def make_case(case: Case, out_dir: Path) -> dict:
    """Simulate, reconstruct, crop to the scanned region and write `<name>.npz`; return its manifest entry."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(case.seed)
    field_px = OBJECT_SIZE - PROBE_SIZE - 8
    nominal = scan_positions(case, field_px, rng)
    true_pos = nominal + rng.normal(0, case.jitter_px, nominal.shape).astype(np.float32) / np.sqrt(2)
    truth = truth_object(case.phase_max, OBJECT_SIZE)
    probe_true = zone_plate_probe(PROBE_SIZE, defocus=1.5)
    probe_guess = zone_plate_probe(PROBE_SIZE, defocus=case.probe_guess_defocus)
    patterns = simulate(case, truth, probe_true, true_pos, case.seed + 1)
    result = reconstruct(case, patterns, probe_guess, nominal)

    # crop every case to the same central window: the scanned field plus half a probe; the buffer's edges
    # are never (or barely) illuminated and only show the flat initial guess
    keep = field_px + PROBE_SIZE // 2
    y0 = x0 = (OBJECT_SIZE - keep) // 2
    y1 = x1 = y0 + keep
    origin = np.round(np.array(result["object"].shape) / 2.0) - 0.5
    centres = nominal + origin
    obj = result["object"][y0:y1, x0:x1].astype(np.complex64)
    truth_crop = truth[y0:y1, x0:x1]
    centres_crop = centres - np.array([y0, x0])

    # the object-probe ambiguity leaves a global phase: remove it before comparing with the truth
    global_phase = np.angle(np.vdot(obj, truth_crop))
    phase_err = np.angle(obj * np.exp(1j * global_phase) * np.conj(truth_crop))
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out_dir / f"{case.name}.npz",
        objectGuess=obj,
        probeGuess=result["probe"].astype(np.complex64),
        xcoords=centres_crop[:, 1].astype(np.float32),
        ycoords=centres_crop[:, 0].astype(np.float32),
        pixel_size_m=np.float64(PIXEL_SIZE_M),
    )
    return {
        "file": f"{case.name}.npz",
        "cause": case.cause,
        "ptychobench_labels": list(case.labels),
        "params": {k: v for k, v in asdict(case).items() if k not in ("name", "cause", "labels")},
        "n_positions": len(nominal),
        "scan_step_px": case.step,
        "probe_size_px": PROBE_SIZE,
        "pixel_size_m": PIXEL_SIZE_M,
        "object_shape": list(obj.shape),
        "phase_rms_error_rad": round(float(np.sqrt(np.mean(phase_err**2))), 4),
        "final_loss": result["final_loss"],
        "seconds": round(time.perf_counter() - t0, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="*", choices=sorted(CASES), help="default: all")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epochs", type=int, help="override every case's epochs (quick checks only)")
    args = parser.parse_args(argv)

    check_environment()
    install_gaussian_blur_shim()
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)

    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.setdefault("cases", {})
    manifest["generator"] = {
        "script": "scripts/make_ptycho_samples.py",
        "ptychi": __import__("ptychi").__version__
        if hasattr(__import__("ptychi"), "__version__")
        else "2.2.0",
        "torch": torch.__version__,
        "engine": "LSQML",
        "truth": "amplitude: skimage camera, phase: skimage astronaut (public domain)",
    }
    for name in args.cases or sorted(CASES):
        case = CASES[name] if args.epochs is None else replace(CASES[name], epochs=args.epochs)
        entry = make_case(case, args.out)
        manifest["cases"][name] = entry
        print(json.dumps({name: entry}), flush=True)
    manifest["cases"] = dict(sorted(manifest["cases"].items()))
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
