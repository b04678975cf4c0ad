"""Cheap, checkable numbers behind a ptychography verdict, to set beside what the model says.

Each measure is one a scientist can redo by hand: a peak in the power spectrum at the scan step (a raster
grid), the fitted phase ramp, the high-frequency residual (noise) and the phase range against it
(contrast), the density of phase residues (singularities), fine detail against coarse structure (blur)
and the cross-talk of amplitude and phase fine structure (halos, position errors).
`Evidence.flags()` names the PtychoBench classes the numbers support; `compare_with_model` turns
disagreements into plain sentences for the reviewer.

Everything is measured on the data as reconstructed (never on a display with the ramp removed), within
the scanned region: from the scan positions when known, else the region the reconstruction changed.
Thresholds are relative to the object's own signal where the object sets the scale, and were chosen on
the Pty-chi calibration set (`scripts/make_ptycho_calibration.py`; ROC AUCs and operating points in
docs/ptychography.md). They are defaults, not laws, and live in `EvidenceThresholds`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from napari_fracto.ptycho import measures_image as mi
from napari_fracto.ptycho.display import estimate_phase_ramp, remove_phase_ramp
from napari_fracto.ptycho.measures_grid import grid_peak, scan_step_from_positions

GRID = "Grid artifacts"
RAMP = "Phase ramp"
NOISY = "Noisy artifacts"
LOW_CONTRAST = "Low contrast"
SINGULARITY = "Singularity artifacts"
BLUR = "Blurring"
HALO = "Halo artifacts"
MEASURED_CLASSES = (GRID, RAMP, NOISY, LOW_CONTRAST, SINGULARITY, BLUR, HALO)
JUDGED_CLASSES = (GRID, RAMP, LOW_CONTRAST, SINGULARITY, BLUR)  # the others are left to the model
_MIN_SIZE = 16


@dataclass(frozen=True)
class EvidenceThresholds:
    """When a measure counts as support for a class (flag) and when as evidence against it (clear).

    Chosen on the calibration set: flags at the cut with at most 5 % false positives among the other
    causes, clears at the balanced-accuracy (Youden) cut or below the flags; see docs/ptychography.md.
    """

    grid_ratio: float = 12.8  # spectral peak over its ring's median, at a known scan step
    grid_ratio_searched: float = 25.0  # a searched peak (confirmed by its harmonic) must be stronger
    grid_ratio_clear: float = 4.4
    ramp_across_field_rad: float = 4.9  # rad across the field
    ramp_across_field_clear_rad: float = 1.0
    # low contrast: the object's smoothed phase range in noise sigmas, at or below; relative, so weak phase
    # objects (0.6-0.8 rad) that stand well above their noise are not low (the absolute range would be)
    contrast_to_noise: float = 7.0
    contrast_to_noise_clear: float = 25.8
    residue_fraction: float = 0.004
    residue_fraction_clear: float = 0.0002
    # blurring: fine detail at or below (position errors smear it: 3 of 5 flagged, 2 false of 40); never
    # cleared, it separates too weakly (AUC 0.69) to contradict a model that sees blur
    detail: float = 0.077


@dataclass(frozen=True)
class Evidence:
    """Measured values of one image (phase in rad, lengths in pixels) and the thresholds that judge them."""

    image_shape: tuple[int, int]
    scan_step_px: float | None
    step_source: str  # "given", "searched", "unknown" (searched, nothing confirmed) or "none" (not searched)
    grid_period_px: float | None
    grid_ratio: float
    grid_component: str  # "phase" or "amplitude": where the peak was strongest
    ramp_rad_per_px: float
    ramp_across_field_rad: float
    noise_rad: float
    contrast_rad: float
    residue_fraction: float
    detail: float = 0.0
    crosstalk: float = 0.0
    signal_rad: float = 0.0  # phase range of the smoothed object: what noise and contrast are judged by
    measured_on: str = "the whole image"
    thresholds: EvidenceThresholds = field(default_factory=EvidenceThresholds)

    @property
    def noise_to_contrast(self) -> float:
        return self.noise_rad / max(self.signal_rad, 1e-9)

    @property
    def contrast_to_noise(self) -> float:
        return self.signal_rad / max(self.noise_rad, 1e-9)

    def _grid_threshold(self) -> float:
        t = self.thresholds
        return t.grid_ratio_searched if self.step_source == "searched" else t.grid_ratio

    def flags(self) -> set[str]:
        """PtychoBench classes these numbers support (those a measure separated on the calibration set)."""
        t = self.thresholds
        out = set()
        if self.grid_period_px is not None and self.grid_ratio >= self._grid_threshold():
            out.add(GRID)
        if self.ramp_across_field_rad >= t.ramp_across_field_rad:
            out.add(RAMP)
        if self.contrast_to_noise <= t.contrast_to_noise:
            out.add(LOW_CONTRAST)
        if self.residue_fraction >= t.residue_fraction:
            out.add(SINGULARITY)
        if self.detail <= t.detail:
            out.add(BLUR)
        return out

    def clears(self) -> set[str]:
        """Classes these numbers argue against (clearly below the flag level), for contradicting the model."""
        t = self.thresholds
        out = set()
        weak_grid = self.grid_period_px is None or self.grid_ratio < t.grid_ratio_clear
        if weak_grid and self.step_source == "given":  # an unknown step clears nothing
            out.add(GRID)
        if self.ramp_across_field_rad < t.ramp_across_field_clear_rad:
            out.add(RAMP)
        if self.contrast_to_noise > t.contrast_to_noise_clear:
            out.add(LOW_CONTRAST)
        if self.residue_fraction < t.residue_fraction_clear:
            out.add(SINGULARITY)
        return out

    def describe(self, label: str) -> str:
        """The measure behind `label`, in words a reviewer can check."""
        t = self.thresholds
        if label == GRID:
            if self.grid_period_px is None:
                if self.step_source == "unknown":
                    return (
                        "the scan step is unknown (no scan positions, and no spectral peak confirmed by its "
                        "harmonic), so no grid was measured"
                    )
                return "no scan step was known or found, so the spectrum was not checked for a grid"
            how = "the" if self.step_source == "given" else "a searched (harmonic-confirmed)"
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
            return (
                f"the phase noise is {self.noise_rad:.3f} rad against a {self.signal_rad:.2f} rad signal "
                "(not judged: no noise measure separated noisy cases on the calibration set)"
            )
        if label == LOW_CONTRAST:
            return (
                f"the object's phase signal is {self.signal_rad:.2f} rad, {self.contrast_to_noise:.1f}x its "
                f"{self.noise_rad:.3f} rad noise (low from {t.contrast_to_noise:.1f}x and below)"
            )
        if label == SINGULARITY:
            return (
                f"{100 * self.residue_fraction:.2f} % of pixels are phase residues "
                f"(singularities from {100 * t.residue_fraction:.2f} %)"
            )
        if label == BLUR:
            return (
                f"fine detail (0.2-0.35 cycles/px over 0.03-0.1, noise removed) is {self.detail:.3f} "
                f"(blurred at {t.detail:.3f} and below)"
            )
        if label == HALO:
            return (
                f"amplitude and phase fine structure correlate at {self.crosstalk:.2f} "
                "(not judged: it did not separate halos on the calibration set)"
            )
        raise ValueError(f"No measure for {label!r}; measured classes: {', '.join(MEASURED_CLASSES)}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record: values, thresholds and flags."""
        out = asdict(self)
        out["image_shape"] = list(self.image_shape)
        out["noise_to_contrast"] = self.noise_to_contrast
        out["contrast_to_noise"] = self.contrast_to_noise
        out["flags"] = sorted(self.flags())
        return out


def as_radians(image: np.ndarray, phase_scale: float | None = None) -> np.ndarray:
    """A real phase image in radians: float as it is, integers (counts) times `phase_scale` rad/count.

    Integer images are never taken as radians: without a scale they are refused with the usual ones.
    """
    arr = np.asarray(image)
    if np.iscomplexobj(arr):
        return arr
    if arr.dtype.kind in "iub":
        if phase_scale is None:
            levels = np.iinfo(arr.dtype).max + 1 if arr.dtype.kind in "iu" else 2
            raise ValueError(
                f"The phase image holds {arr.dtype} counts (0-{levels - 1}), not radians; give the "
                f"value-to-radian scale (`--phase-scale`, e.g. 2*pi/{levels} rad per count for a full-range "
                "wrapped phase), or save the phase as float radians"
            )
        return arr.astype(np.float64) * float(phase_scale)
    return arr.astype(np.float64) if phase_scale is None else arr.astype(np.float64) * float(phase_scale)


def measured_region(
    shape: tuple[int, int],
    obj: np.ndarray,
    positions_px: np.ndarray | None,
    probe_shape: tuple[int, ...] | None,
) -> tuple[tuple[slice, slice] | None, str]:
    """Where to measure: the scanned region from the positions and probe, else the changed region."""
    from napari_fracto.ptycho.display import scanned_region

    if positions_px is not None and probe_shape is not None and len(positions_px):
        try:
            rows, cols = scanned_region(positions_px, probe_shape, shape)
        except ValueError:
            rows = cols = None
        if rows is not None and rows.stop - rows.start >= _MIN_SIZE and cols.stop - cols.start >= _MIN_SIZE:
            return (rows, cols), (
                f"the scanned region (rows {rows.start}:{rows.stop}, columns {cols.start}:{cols.stop}, "
                "from the scan positions)"
            )
    lit = mi.lit_region(obj, _MIN_SIZE)
    if lit is not None:
        rows, cols = lit
        return lit, (
            f"the reconstructed region (rows {rows.start}:{rows.stop}, columns {cols.start}:{cols.stop}: "
            "the buffer's unchanged rim left out)"
        )
    return None, "the whole image"


def measure_evidence(
    phase_or_complex: np.ndarray,
    *,
    scan_step_px: float | None = None,
    positions_px: np.ndarray | None = None,
    probe_shape: tuple[int, ...] | None = None,
    search_step: bool = True,
    phase_scale: float | None = None,
    thresholds: EvidenceThresholds | None = None,
) -> Evidence:
    """Measure one reconstruction (complex object, or real phase in rad) as reconstructed.

    `positions_px` are (row, col) probe centres in this image's pixels; with `probe_shape` they give the
    scanned region, which is measured (else the region the reconstruction changed). The scan step is
    `scan_step_px`, else the positions' step, else searched for in the spectrum when `search_step` (only
    a harmonic-confirmed peak counts; else the step is reported unknown). Integer phase needs
    `phase_scale` (rad per count).
    """
    arr = as_radians(phase_or_complex, phase_scale)
    if arr.ndim != 2:
        raise ValueError(f"Evidence needs one 2-D image, got shape {arr.shape}; pass one slice or layer.")
    if min(arr.shape) < _MIN_SIZE:
        raise ValueError(f"The image is {arr.shape[0]}x{arr.shape[1]} pixels; evidence needs at least 16x16.")
    if not np.isfinite(arr).all():
        raise ValueError("The image contains NaN or infinite values; crop to the reconstructed region first.")
    if scan_step_px is None and positions_px is not None and len(positions_px) >= 2:
        scan_step_px = scan_step_from_positions(positions_px)
    if scan_step_px is not None and not np.isfinite(scan_step_px):
        raise ValueError(f"The scan step must be a finite number of pixels, got {scan_step_px}.")
    region, where = measured_region(arr.shape, arr, positions_px, probe_shape)
    if region is not None:
        arr = arr[region]

    gy, gx = estimate_phase_ramp(arr)  # on the data as given: a ramp the display removes still counts
    flat = remove_phase_ramp(arr)  # the other measures look past the ramp
    phase = np.angle(flat) if np.iscomplexobj(flat) else np.angle(np.exp(1j * flat))
    amplitude = np.abs(arr).astype(np.float64) if np.iscomplexobj(arr) else None
    components = {"phase": phase}
    if amplitude is not None:
        components["amplitude"] = amplitude
    if scan_step_px is None and not search_step:
        period, ratio, component, source = None, 0.0, "phase", "none"
    else:
        period, ratio, component, source = grid_peak(components, scan_step_px)
    noise_rad = mi.noise(phase)
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
        noise_rad=noise_rad,
        contrast_rad=mi.contrast(phase),
        residue_fraction=mi.residue_fraction(phase),
        detail=mi.detail(phase, noise_rad),
        crosstalk=mi.crosstalk(phase, amplitude),
        signal_rad=mi.signal(phase),
        measured_on=where,
        thresholds=thresholds or EvidenceThresholds(),
    )


def compare_with_model(evidence: Evidence, model_labels: list[str] | tuple[str, ...] | set[str]) -> list[str]:
    """Plain-words disagreements between the numbers and the model's labels, for the reviewer to settle."""
    named = {str(label).strip().casefold() for label in model_labels}
    out = []
    for label in JUDGED_CLASSES:
        said = label.casefold() in named
        if label in evidence.flags() and not said:
            out.append(f"{evidence.describe(label)}, but the model did not flag {label}")
        elif said and label in evidence.clears():
            out.append(f"the model flagged {label}, but {evidence.describe(label)}")
    return out
