"""The scan step and the raster-grid peak: where the probe went, and whether the object remembers it.

A raster scan leaves a lattice in the reconstruction: peaks in the power spectrum at 1/step along both
axes and at their harmonics (2/step, ...). With the step known (given, or from the positions) the peak is
read at that frequency. Without it the spectrum is searched, and a peak only counts when its second
harmonic is there too: natural texture makes single peaks, a lattice makes a series. No confirmed peak
means the step is unknown, and the grid is neither flagged nor cleared.
"""

from __future__ import annotations

import numpy as np

MIN_PERIOD, MAX_PERIOD = 4.0, 32.0  # the usual range of scan steps in pixels, searched without positions
HARMONIC_RATIO = 8.0  # the second harmonic must stand this far above its ring to confirm a searched peak


def scan_step_from_positions(positions_px: np.ndarray) -> float:
    """The scan step (pixels): the side of the area each probe position covers.

    Taken as the square root of the median Voronoi cell area of the interior positions, which is the
    step of a raster and of a Fermat spiral alike (a spiral's nearest neighbours sit ~5 % closer than its
    step, so the nearest-neighbour distance reads low). Falls back to the median nearest-neighbour
    distance for scans too small or too regular-in-a-line for cells.
    """
    from scipy.spatial import ConvexHull, QhullError, Voronoi, cKDTree

    pos = np.asarray(positions_px, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or len(pos) < 2:
        raise ValueError(f"Scan positions must be an (N, 2) array with N >= 2, got shape {pos.shape}.")
    dist, _ = cKDTree(pos).query(pos, k=2)
    nearest = float(np.median(dist[:, 1]))
    if nearest <= 0:
        raise ValueError("Scan positions repeat one point; cannot tell the scan step.")
    if len(pos) < 12:
        return nearest
    try:
        vor = Voronoi(pos)
        hull = set(ConvexHull(pos).vertices.tolist())
    except QhullError:  # all on one line, say
        return nearest
    areas = []
    for index, region_index in enumerate(vor.point_region):
        region = vor.regions[region_index]
        if index in hull or not region or -1 in region:
            continue
        verts = vor.vertices[region]
        x, y = verts[:, 0], verts[:, 1]
        areas.append(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    if len(areas) < 4:
        return nearest
    # cells next to the hull are open-ended or stretched: the median of the interior ones is the step
    step = float(np.sqrt(np.median(areas)))
    return step if 0.5 * nearest < step < 3 * nearest else nearest


def power_spectrum(image: np.ndarray) -> np.ndarray:
    img = image - image.mean()
    window = np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))
    return np.abs(np.fft.fftshift(np.fft.fft2(img * window))) ** 2


class Rings:
    """The radial frequency of every bin of one spectrum shape, sorted once, so the ring around any
    frequency is a slice (`searchsorted`) rather than a fresh full-image mask per candidate period."""

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
        lo = np.searchsorted(self.sorted_freq, f - self.half_width, side="right")
        hi = np.searchsorted(self.sorted_freq, f + self.half_width, side="left")
        return self.order[lo:hi]


def axis_peak_ratio(power: np.ndarray, period: float, rings: Rings, weakest: bool = False) -> float:
    """Geometric mean over the row and column axes of (peak near 1/period) / (median of that ring);
    with `weakest`, the weaker axis alone (a raster peaks on both, texture often on one)."""
    n0, n1 = power.shape
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
    return float(min(ratios)) if weakest else float(np.sqrt(ratios[0] * ratios[1]))


def _refine_period(power: np.ndarray, period: float, rings: Rings) -> float:
    """The period at the power-weighted centre of the peak on each axis (bins are 1/N apart, so a
    10 px step on a 152 px axis would otherwise read as 152/15 = 10.13 or 152/14 = 10.86)."""
    n0, n1 = power.shape
    estimates = []
    for n, line in ((n0, power[:, rings.cx]), (n1, power[rings.cy, :])):
        centre = n // 2
        k = round(n / period)
        around = np.arange(max(k - 1, 1), min(k + 1, n - centre - 1) + 1)
        if not len(around):
            continue
        weights = line[centre + around]
        k_refined = float(np.sum(around * weights) / max(float(weights.sum()), 1e-30))
        if k_refined > 0:
            estimates.append(n / k_refined)
    return float(np.mean(estimates)) if estimates else period


def grid_peak(components: dict[str, np.ndarray], step: float | None) -> tuple[float | None, float, str, str]:
    """(period, ratio, component, source) of the raster peak: at `step`, or searched and confirmed.

    source is "given" (step known), "searched" (a peak confirmed by its second harmonic) or "unknown"
    (no such peak: period None, ratio 0).
    """
    spectra = {name: power_spectrum(img) for name, img in components.items()}
    shape = next(iter(spectra.values())).shape
    rings = Rings(shape)
    size = min(shape)
    if step is not None:
        if not 2.0 < step < size / 2:
            return None, 0.0, "phase", "given"
        name, ratio = max(
            ((n, axis_peak_ratio(p, step, rings)) for n, p in spectra.items()), key=lambda t: t[1]
        )
        return step, ratio, name, "given"
    best: tuple[float | None, float, str] = (None, 0.0, "phase")
    for period in np.arange(MIN_PERIOD, min(MAX_PERIOD, size / 3) + 1e-9, 0.25):
        for name, p in spectra.items():
            ratio = axis_peak_ratio(p, period, rings, weakest=True)
            if ratio < HARMONIC_RATIO or period / 2 <= 2.1:  # a harmonic at Nyquist cannot confirm
                continue
            if axis_peak_ratio(p, period / 2, rings, weakest=True) < HARMONIC_RATIO:
                continue
            # the largest confirmed period is the fundamental (a raster's harmonics confirm each other)
            multiple = period / best[0] if best[0] else 0.0
            harmonic_of_this = multiple > 1.5 and abs(multiple - round(multiple)) < 0.08
            longer = (
                best[0] is not None
                and period > best[0] * 1.3
                and (harmonic_of_this or ratio >= 0.3 * best[1])
            )
            if best[0] is None or longer or (period >= best[0] * 0.8 and ratio > best[1]):
                best = (float(period), ratio, name)
    period, ratio, name = best
    if period is None:
        return None, 0.0, "phase", "unknown"
    refined = _refine_period(spectra[name], period, rings)
    if not 0.8 * period <= refined <= 1.25 * period:
        refined = period
    ratio = axis_peak_ratio(spectra[name], refined, rings)
    if ratio < HARMONIC_RATIO:  # the peak does not survive a closer look: still unknown
        return None, 0.0, "phase", "unknown"
    return refined, ratio, name, "searched"
