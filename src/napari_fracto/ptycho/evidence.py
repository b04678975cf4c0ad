"""Cheap, checkable numbers behind a ptychography verdict, to set beside what the model says.

Each measure is one a scientist can redo by hand: a peak in the power spectrum at the scan step (a raster
grid), the high-frequency residual (noise), the fitted phase ramp, the phase range (contrast) and the
density of phase residues (singularities). `Evidence.flags()` names the PtychoBench classes the numbers
support; `compare_with_model` turns disagreements into plain sentences for the reviewer.

Thresholds were set on the Pty-chi simulations in shared/data and napari-fracto's own samples (table in
docs/ptychography.md); they are defaults, not laws, and live in `EvidenceThresholds`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from napari_fracto.ptycho.display import estimate_phase_ramp, remove_phase_ramp

GRID = "Grid artifacts"
RAMP = "Phase ramp"
NOISY = "Noisy artifacts"
LOW_CONTRAST = "Low contrast"
SINGULARITY = "Singularity artifacts"
MEASURED_CLASSES = (GRID, RAMP, NOISY, LOW_CONTRAST, SINGULARITY)

# second-difference kernel of Immerkaer (1996): flat and linear regions give zero, noise does not
_NOISE_KERNEL = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
_MIN_SIZE = 16


@dataclass(frozen=True)
class EvidenceThresholds:
    """When a measure counts as support for a class (flag) and when as evidence against it (clear)."""

    grid_ratio: float = 20.0  # spectral peak over its ring's median, at a known scan step
    grid_ratio_searched: float = 25.0  # stricter when the step had to be searched for (many candidates)
    grid_ratio_clear: float = 10.0
    ramp_across_field_rad: float = 2 * np.pi  # a full wrap across the field
    ramp_across_field_clear_rad: float = 1.0
    noise_rad: float = 0.02
    noise_clear_rad: float = 0.012
    contrast_rad: float = 0.55
    contrast_clear_rad: float = 0.8
    residue_fraction: float = 0.002
    residue_fraction_clear: float = 0.0002


@dataclass(frozen=True)
class Evidence:
    """Measured values of one image (phase in rad, lengths in pixels) and the thresholds that judge them."""

    image_shape: tuple[int, int]
    scan_step_px: float | None
    step_source: str  # "given", "searched" or "none"
    grid_period_px: float | None
    grid_ratio: float
    grid_component: str  # "phase" or "amplitude": where the peak was strongest
    ramp_rad_per_px: float
    ramp_across_field_rad: float
    noise_rad: float
    contrast_rad: float
    residue_fraction: float
    thresholds: EvidenceThresholds = field(default_factory=EvidenceThresholds)

    def _grid_threshold(self) -> float:
        t = self.thresholds
        return t.grid_ratio_searched if self.step_source == "searched" else t.grid_ratio

    def flags(self) -> set[str]:
        """PtychoBench classes these numbers support."""
        t = self.thresholds
        out = set()
        if self.grid_period_px is not None and self.grid_ratio >= self._grid_threshold():
            out.add(GRID)
        if self.ramp_across_field_rad >= t.ramp_across_field_rad:
            out.add(RAMP)
        if self.noise_rad >= t.noise_rad:
            out.add(NOISY)
        if self.contrast_rad <= t.contrast_rad:
            out.add(LOW_CONTRAST)
        if self.residue_fraction >= t.residue_fraction:
            out.add(SINGULARITY)
        return out

    def clears(self) -> set[str]:
        """Classes these numbers argue against (clearly below the flag level), for contradicting the model."""
        t = self.thresholds
        out = set()
        weak_grid = self.grid_period_px is None or self.grid_ratio < t.grid_ratio_clear
        if weak_grid and self.step_source != "none":
            out.add(GRID)
        if self.ramp_across_field_rad < t.ramp_across_field_clear_rad:
            out.add(RAMP)
        if self.noise_rad < t.noise_clear_rad:
            out.add(NOISY)
        if self.contrast_rad > t.contrast_clear_rad:
            out.add(LOW_CONTRAST)
        if self.residue_fraction < t.residue_fraction_clear:
            out.add(SINGULARITY)
        return out

    def describe(self, label: str) -> str:
        """The measure behind `label`, in words a reviewer can check."""
        t = self.thresholds
        if label == GRID:
            if self.grid_period_px is None:
                return "no scan step was known or found, so the spectrum was not checked for a grid"
            how = "the" if self.step_source == "given" else "a searched"
            return (
                f"the {self.grid_component} spectrum has a peak at {how} {self.grid_period_px:.3g} px scan "
                f"step of {self.grid_ratio:.0f}x background (grid from {self._grid_threshold():.0f}x)"
            )
        if label == RAMP:
            return (
                f"the phase ramp is {self.ramp_rad_per_px:.3g} rad/px, {self.ramp_across_field_rad:.2f} rad "
                f"across the field (ramp from {t.ramp_across_field_rad:.2f} rad)"
            )
        if label == NOISY:
            return f"the phase noise is {self.noise_rad:.3f} rad (noisy from {t.noise_rad:.3f} rad)"
        if label == LOW_CONTRAST:
            return (
                f"the phase range (2nd-98th percentile) is {self.contrast_rad:.2f} rad "
                f"(low from {t.contrast_rad:.2f} rad and below)"
            )
        if label == SINGULARITY:
            return (
                f"{100 * self.residue_fraction:.2f} % of pixels are phase residues "
                f"(singularities from {100 * t.residue_fraction:.2f} %)"
            )
        raise ValueError(f"No measure for {label!r}; measured classes: {', '.join(MEASURED_CLASSES)}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record: values, thresholds and flags."""
        out = asdict(self)
        out["image_shape"] = list(self.image_shape)
        out["flags"] = sorted(self.flags())
        return out


def scan_step_from_positions(positions_px: np.ndarray) -> float:
    """Median nearest-neighbour distance of the probe positions (pixels): the step of a raster scan."""
    from scipy.spatial import cKDTree

    pos = np.asarray(positions_px, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or len(pos) < 2:
        raise ValueError(f"Scan positions must be an (N, 2) array with N >= 2, got shape {pos.shape}.")
    dist, _ = cKDTree(pos).query(pos, k=2)
    step = float(np.median(dist[:, 1]))
    if step <= 0:
        raise ValueError("Scan positions repeat one point; cannot tell the scan step.")
    return step


def _power_spectrum(image: np.ndarray) -> np.ndarray:
    img = image - image.mean()
    window = np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))
    return np.abs(np.fft.fftshift(np.fft.fft2(img * window))) ** 2


class _Rings:
    """The radial frequency of every bin of one spectrum shape, sorted once, so the ring around any
    frequency is a slice (`searchsorted`) rather than a fresh full-image mask per candidate period:
    the scan-step search asks for hundreds of periods on the same grid."""

    def __init__(self, shape: tuple[int, int]) -> None:
        n0, n1 = shape
        self.shape = shape
        self.cy, self.cx = n0 // 2, n1 // 2
        fy = ((np.arange(n0) - self.cy) / n0)[:, None]
        fx = ((np.arange(n1) - self.cx) / n1)[None, :]
        freq = np.hypot(fy, fx).ravel()
        self.order = np.argsort(freq, kind="stable")
        self.sorted_freq = freq[self.order]
        self.half_width = 1.5 / min(n0, n1)

    def ring(self, f: float) -> np.ndarray:
        """Flat indices of the bins with |freq - f| < half_width (the same set as the full mask)."""
        lo = np.searchsorted(self.sorted_freq, f - self.half_width, side="right")
        hi = np.searchsorted(self.sorted_freq, f + self.half_width, side="left")
        return self.order[lo:hi]


def _axis_peak_ratio(power: np.ndarray, period: float, rings: _Rings | None = None) -> float:
    """Geometric mean over the row and column axes of (peak near 1/period) / (median of that ring)."""
    n0, n1 = power.shape
    rings = rings if rings is not None and rings.shape == power.shape else _Rings((n0, n1))
    cy, cx = rings.cy, rings.cx
    f = 1.0 / period
    ring = rings.ring(f)
    ry, rx = np.divmod(ring, n1)
    flat = power.ravel()
    ratios = []
    for py, px in ((round(cy + f * n0), cx), (cy, round(cx + f * n1))):
        near = (np.abs(ry - py) <= 2) & (np.abs(rx - px) <= 2)
        mirror = (np.abs(ry - (2 * cy - py)) <= 2) & (np.abs(rx - (2 * cx - px)) <= 2)
        background = flat[ring[~near & ~mirror]]
        if background.size == 0 or not 1 <= py < n0 - 1 or not 1 <= px < n1 - 1:
            return 0.0
        peak = power[py - 1 : py + 2, px - 1 : px + 2].max()
        ratios.append(peak / max(float(np.median(background)), 1e-30))
    return float(np.sqrt(ratios[0] * ratios[1]))


def _grid(components: dict[str, np.ndarray], step: float | None) -> tuple[float | None, float, str, str]:
    """(period, ratio, component, source) of the strongest raster peak, at `step` or searched for."""
    spectra = {name: _power_spectrum(img) for name, img in components.items()}
    shape = next(iter(spectra.values())).shape
    rings = _Rings(shape)  # every component has the same shape: one frequency grid for all
    size = min(shape)
    if step is not None:
        if not 2.0 < step < size / 2:
            return None, 0.0, "phase", "given"
        name, ratio = max(
            ((n, _axis_peak_ratio(p, step, rings)) for n, p in spectra.items()), key=lambda t: t[1]
        )
        return step, ratio, name, "given"
    # search the frequency bins of periods 4..32 px (the usual range of steps in pixels)
    best = (None, 0.0, "phase")
    for k in range(max(2, int(np.ceil(size / 32))), int(size / 4) + 1):
        period = size / k
        for name, p in spectra.items():
            ratio = _axis_peak_ratio(p, period, rings)
            if ratio > best[1]:
                best = (period, ratio, name)
    period, ratio, name = best
    # a raster also peaks at its harmonics: report the fundamental when it is strong too
    if period is not None:
        for mult in (3, 2):
            fundamental = period * mult
            if fundamental <= size / 2:
                r = _axis_peak_ratio(spectra[name], fundamental, rings)
                if r >= EvidenceThresholds.grid_ratio:
                    period, ratio = fundamental, r
                    break
    return period, ratio, name, "searched"


def _noise(phase: np.ndarray) -> float:
    """Robust (MAD) sigma of the second-difference residual, wrapped so 2-pi jumps do not count as noise."""
    from scipy.ndimage import convolve

    residual = convolve(phase, _NOISE_KERNEL, mode="reflect")[1:-1, 1:-1]
    residual = np.angle(np.exp(1j * residual))
    mad = np.median(np.abs(residual - np.median(residual)))
    return float(1.4826 * mad / 6.0)  # the kernel's response to unit white noise has std 6


def _residue_fraction(phase: np.ndarray) -> float:
    """Fraction of 2x2 pixel loops around which the wrapped phase winds by +-2 pi (phase singularities)."""

    def wrap(d: np.ndarray) -> np.ndarray:
        return np.angle(np.exp(1j * d))

    p = phase
    loop = (
        wrap(p[:-1, 1:] - p[:-1, :-1])
        + wrap(p[1:, 1:] - p[:-1, 1:])
        + wrap(p[1:, :-1] - p[1:, 1:])
        + wrap(p[:-1, :-1] - p[1:, :-1])
    )
    return float(np.mean(np.abs(loop) > np.pi))


def measure_evidence(
    phase_or_complex: np.ndarray,
    *,
    scan_step_px: float | None = None,
    positions_px: np.ndarray | None = None,
    search_step: bool = True,
    thresholds: EvidenceThresholds | None = None,
) -> Evidence:
    """Measure one reconstruction (complex object or real phase in rad), best cropped to the scanned region.

    The scan step is taken from `scan_step_px`, else from `positions_px` (median neighbour distance), else
    searched for in the spectrum when `search_step` (a stricter threshold then applies).
    """
    arr = np.asarray(phase_or_complex)
    if arr.ndim != 2:
        raise ValueError(f"Evidence needs one 2-D image, got shape {arr.shape}; pass one slice or layer.")
    if min(arr.shape) < _MIN_SIZE:
        raise ValueError(f"The image is {arr.shape[0]}x{arr.shape[1]} pixels; evidence needs at least 16x16.")
    if not np.isfinite(arr).all():
        raise ValueError("The image contains NaN or infinite values; crop to the reconstructed region first.")
    if scan_step_px is None and positions_px is not None:
        scan_step_px = scan_step_from_positions(positions_px)
    if scan_step_px is not None and not np.isfinite(scan_step_px):
        raise ValueError(f"The scan step must be a finite number of pixels, got {scan_step_px}.")

    gy, gx = estimate_phase_ramp(arr)
    flat = remove_phase_ramp(arr)
    phase = np.angle(flat) if np.iscomplexobj(flat) else np.angle(np.exp(1j * flat))
    components = {"phase": phase}
    if np.iscomplexobj(arr):
        components["amplitude"] = np.abs(arr).astype(np.float64)
    if scan_step_px is None and not search_step:
        period, ratio, component, source = None, 0.0, "phase", "none"
    else:
        period, ratio, component, source = _grid(components, scan_step_px)
    lo, hi = np.percentile(phase, [2, 98])
    h, w = arr.shape
    return Evidence(
        image_shape=(h, w),
        scan_step_px=None if scan_step_px is None else float(scan_step_px),
        step_source=source,
        grid_period_px=None if period is None else float(period),
        grid_ratio=float(ratio),
        grid_component=component,
        ramp_rad_per_px=float(np.hypot(gy, gx)),
        ramp_across_field_rad=float(np.hypot(gy * h, gx * w)),
        noise_rad=_noise(phase),
        contrast_rad=float(hi - lo),
        residue_fraction=_residue_fraction(phase),
        thresholds=thresholds or EvidenceThresholds(),
    )


def compare_with_model(evidence: Evidence, model_labels: list[str] | tuple[str, ...] | set[str]) -> list[str]:
    """Plain-words disagreements between the numbers and the model's labels, for the reviewer to settle."""
    named = {str(label).strip().casefold() for label in model_labels}
    out = []
    for label in MEASURED_CLASSES:
        said = label.casefold() in named
        if label in evidence.flags() and not said:
            out.append(f"{evidence.describe(label)}, but the model did not flag {label}")
        elif said and label in evidence.clears():
            out.append(f"the model flagged {label}, but {evidence.describe(label)}")
    return out
