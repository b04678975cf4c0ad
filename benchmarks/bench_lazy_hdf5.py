"""Opening a big generic HDF5 stack (2,000 diffraction patterns of 256 x 256 float32, 524 MB): eager vs lazy.

    .venv/bin/python benchmarks/bench_lazy_hdf5.py

Each mode runs in its own process (peak RSS is per process): the time `read_layers` takes, the time to
read the plane a viewer would show, and the growth of peak RSS.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _write(path: Path) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        patterns = f.create_dataset("patterns", (2000, 256, 256), dtype=np.float32, chunks=(1, 256, 256))
        for i in range(0, 2000, 100):
            patterns[i : i + 100] = np.random.default_rng(i).random((100, 256, 256), dtype=np.float32)


def _measure(path: Path, mode: str) -> None:
    import dask.array  # noqa: F401  (imported first: the lazy figure is reading, not importing)
    import h5py  # noqa: F401

    from napari_fracto.io import readers

    if mode == "eager":
        readers.LAZY_HDF5_BYTES = 1 << 62  # as before: every dataset read whole
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    layers = readers.read_layers(str(path))
    opened = time.perf_counter() - start
    start = time.perf_counter()
    np.asarray(layers[0][0][1000])
    plane = time.perf_counter() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(
        f"{mode:<6} open {opened * 1e3:7.0f} ms   one plane {plane * 1e3:6.1f} ms   peak RSS +{grown:.0f} MB"
    )


def main() -> None:
    if len(sys.argv) == 3:
        _measure(Path(sys.argv[1]), sys.argv[2])
        return
    with tempfile.TemporaryDirectory(prefix="bench-lazy-h5-") as tmp:
        path = Path(tmp) / "patterns.h5"
        _write(path)
        for mode in ("eager", "lazy"):
            subprocess.run([sys.executable, __file__, str(path), mode], check=True)


if __name__ == "__main__":
    main()
