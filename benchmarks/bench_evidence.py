"""Time of the ptychography evidence on large objects, with and without a known scan step.

Run: python benchmarks/bench_evidence.py  (prints seconds per call; figures go in docs/benchmarks.md)
"""

from __future__ import annotations

import time

import numpy as np

from napari_fracto.ptycho.evidence import measure_evidence


def _object(side: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.indices((side, side))
    lattice = ((yy % 8) < 2) & ((xx % 8) < 2)  # a raster's imprint, harmonics included
    phase = rng.normal(0, 0.05, (side, side)) + 0.2 * lattice
    return np.exp(1j * phase).astype(np.complex64)


def main() -> None:
    for side in (256, 1024):
        obj = _object(side)
        for step in (8.0, None):
            started = time.perf_counter()
            ev = measure_evidence(obj, scan_step_px=step)
            elapsed = time.perf_counter() - started
            how = "known step" if step else "searched step"
            print(f"{side} x {side}, {how}: {elapsed:.2f} s (grid at {ev.grid_period_px:.2f} px)")


if __name__ == "__main__":
    main()
