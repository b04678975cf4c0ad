"""Measures of one reconstructed object that need no scan geometry: noise, contrast, residues, detail,
amplitude-phase cross-talk, and where the object was lit at all.

All take the phase with the ramp already removed (so a ramp reads as neither contrast nor detail), in
radians, and the amplitude where one exists. Each is cheap and can be redone by hand.
"""

from __future__ import annotations

import numpy as np

# second-difference kernel of Immerkaer (1996): flat and linear regions give zero, noise does not
_NOISE_KERNEL = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def _wrap(d: np.ndarray) -> np.ndarray:
    return np.angle(np.exp(1j * d))


def noise(image: np.ndarray, wrapped: bool = True) -> float:
    """Robust (MAD) sigma of the second-difference residual; wrapped so 2-pi jumps are not noise."""
    from scipy.ndimage import convolve

    residual = convolve(image, _NOISE_KERNEL, mode="reflect")[1:-1, 1:-1]
    if wrapped:
        residual = _wrap(residual)
    mad = np.median(np.abs(residual - np.median(residual)))
    return float(1.4826 * mad / 6.0)  # the kernel's response to unit white noise has std 6


def contrast(phase: np.ndarray) -> float:
    """2nd-98th percentile range of the phase (rad)."""
    lo, hi = np.percentile(phase, [2, 98])
    return float(hi - lo)


def signal(phase: np.ndarray) -> float:
    """The object's own phase signal: the 2nd-98th percentile range after a 1.5 px Gaussian smoothing,
    so noise does not inflate it (the scale noise and contrast are judged against)."""
    from scipy.ndimage import gaussian_filter

    return contrast(gaussian_filter(phase, 1.5))


def residue_fraction(phase: np.ndarray) -> float:
    """Fraction of 2x2 pixel loops around which the wrapped phase winds by +-2 pi (phase singularities)."""
    p = phase
    loop = (
        _wrap(p[:-1, 1:] - p[:-1, :-1])
        + _wrap(p[1:, 1:] - p[:-1, 1:])
        + _wrap(p[1:, :-1] - p[1:, 1:])
        + _wrap(p[:-1, :-1] - p[1:, :-1])
    )
    return float(np.mean(np.abs(loop) > np.pi))


def detail(phase: np.ndarray, noise_rad: float) -> float:
    """Fine detail over coarse structure: sqrt of the phase's power at 0.2-0.35 cycles/px, less the white
    noise floor, over its power at 0.03-0.1 cycles/px. A blurred (under-converged, position-smeared)
    object keeps its coarse structure and loses the fine; noise alone does not raise it."""
    img = phase - phase.mean()
    wy, wx = np.hanning(img.shape[0]), np.hanning(img.shape[1])
    window = np.outer(wy, wx)
    power = np.abs(np.fft.fft2(img * window)) ** 2
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.fftfreq(img.shape[1])[None, :]
    f = np.hypot(fy, fx)
    floor = noise_rad**2 * float(np.sum(window**2))  # white noise of sigma noise_rad through the window
    high = max(float(np.mean(power[(f > 0.2) & (f < 0.35)])) - floor, 0.0)
    low = float(np.mean(power[(f > 0.03) & (f < 0.1)]))
    return float(np.sqrt(high / low)) if low > 0 else 0.0


def crosstalk(phase: np.ndarray, amplitude: np.ndarray | None) -> float:
    """|correlation| of the fine structure (image minus a 2 px Gaussian blur) of log-amplitude and phase.

    A probe held wrong, or positions off, leave errors that show in both at once (halos, doubled edges);
    an object whose amplitude and phase come from different material contrast does not. Absent (0) for a
    phase-only image.
    """
    from scipy.ndimage import gaussian_filter

    if amplitude is None:
        return 0.0
    log_amp = np.log(np.maximum(np.asarray(amplitude, dtype=np.float64), 1e-6))
    a = log_amp - gaussian_filter(log_amp, 2.0)
    p = phase - gaussian_filter(phase, 2.0)
    a, p = a[4:-4, 4:-4], p[4:-4, 4:-4]
    denominator = float(np.sqrt(np.sum(a * a) * np.sum(p * p)))
    return float(abs(np.sum(a * p)) / denominator) if denominator > 0 else 0.0


def amplitude_to_phase_noise(phase_noise: float, amplitude: np.ndarray | None) -> float:
    """Noise of log-amplitude over noise of phase: about 1 for photon noise (it is circular in the complex
    plane); an object whose amplitude has absorbed probe or position errors departs from 1."""
    if amplitude is None or phase_noise <= 0:
        return 1.0
    log_amp = np.log(np.maximum(np.asarray(amplitude, dtype=np.float64), 1e-6))
    return noise(log_amp, wrapped=False) / phase_noise


def lit_region(obj: np.ndarray, min_size: int = 16) -> tuple[slice, slice] | None:
    """Rows and columns the reconstruction changed, without scan positions: a buffer's unlit rim keeps its
    initial guess (a constant), so rows/columns that are mostly that constant are cut, and an eighth of the
    changed extent more on each side (its edge was lit by the probe's tail only). None when nothing is cut.
    """
    arr = np.asarray(obj)
    corner_values = np.array([arr[0, 0], arr[0, -1], arr[-1, 0], arr[-1, -1]])
    start = corner_values[np.argmin(np.abs(corner_values - np.median(corner_values.real)))]
    changed = np.abs(arr - start) > 1e-3 * max(float(np.abs(arr).max()), 1e-12)
    rows = np.flatnonzero(changed.mean(axis=1) > 0.5)
    cols = np.flatnonzero(changed.mean(axis=0) > 0.5)
    if len(rows) < min_size or len(cols) < min_size:
        return None
    (r0, r1), (c0, c1) = (rows[0], rows[-1] + 1), (cols[0], cols[-1] + 1)
    if r0 == 0 and c0 == 0 and r1 == arr.shape[0] and c1 == arr.shape[1]:
        return None
    inset_r, inset_c = (r1 - r0) // 8, (c1 - c0) // 8
    if r1 - r0 - 2 * inset_r < min_size or c1 - c0 - 2 * inset_c < min_size:
        inset_r = inset_c = 0
    return slice(int(r0 + inset_r), int(r1 - inset_r)), slice(int(c0 + inset_c), int(c1 - inset_c))
