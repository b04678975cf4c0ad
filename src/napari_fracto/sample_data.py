"""File > Open Sample: a synthetic fractograph and ptychography reconstructions with known causes.

The ptychography samples are Pty-chi reconstructions made by scripts/make_ptycho_samples.py (one physical
cause each, listed with their PtychoBench labels in sample_files/manifest.json). The fractograph is
procedural (Voronoi grains, shaded facets): no SEM image with a licence fit to ship was found.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

import numpy as np

from napari_fracto.errors import UserError

LayerDataTuple = tuple[Any, dict[str, Any], str]

CERAMIC_PIXEL_UM = 0.05


class SampleDataError(UserError, FileNotFoundError):
    """A shipped sample file is missing: the installation is incomplete."""


@cache
def manifest() -> dict[str, Any]:
    """The sample library's manifest: cause, PtychoBench labels and generation parameters per case."""
    path = files("napari_fracto") / "sample_files" / "manifest.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SampleDataError(
            "napari-fracto's sample files are missing (sample_files/manifest.json); reinstall the plugin, "
            "or regenerate them with scripts/make_ptycho_samples.py"
        ) from exc


def ptycho_case_names() -> list[str]:
    """Names of the shipped ptychography cases, e.g. 'a_clean', 'g_raster_grid'."""
    return sorted(manifest()["cases"])


def ptycho_sample(case: str) -> list[LayerDataTuple]:
    """Phase, amplitude, probe and scan-position layers of one shipped reconstruction, in nm.

    Layer metadata carry the physical cause and the PtychoBench labels, so a test or a demo knows what
    the model should find.
    """
    from napari_fracto.io.ptycho import product_layers, read_npz

    cases = manifest()["cases"]
    if case not in cases:
        raise ValueError(f"No ptychography sample {case!r}; available: {', '.join(sorted(cases))}.")
    entry = cases[case]
    path = files("napari_fracto") / "sample_files" / entry["file"]
    if not path.is_file():
        raise SampleDataError(f"The sample file {entry['file']} is missing; reinstall napari-fracto.")
    product = read_npz(str(path))
    pixel = float(entry["pixel_size_m"])
    product.pixel_size_m = (pixel, pixel)
    product.name = f"sample {case}"
    product.metadata.update(
        {
            "sample": case,
            "cause": entry["cause"],
            "ptychobench_labels": "; ".join(entry["ptychobench_labels"]),
            "scan_step_px": float(entry["scan_step_px"]),
            "simulated_with": "Pty-chi 2.2.0 (LSQML), scripts/make_ptycho_samples.py",
        }
    )
    layers = product_layers(product)
    for _data, kwargs, _kind in layers:
        meta = kwargs.setdefault("metadata", {})
        meta.setdefault("cause", entry["cause"])
        meta.setdefault("ptychobench_labels", "; ".join(entry["ptychobench_labels"]))
    return layers


def ptycho_clean() -> list[LayerDataTuple]:
    """A clean reconstruction (spiral scan, good dose, refined probe): the reference."""
    return ptycho_sample("a_clean")


def ptycho_position_errors() -> list[LayerDataTuple]:
    """Uncorrected scan-position errors (2.5 px rms): local distortion and blur."""
    return ptycho_sample("b_position_errors")


def ptycho_low_overlap() -> list[LayerDataTuple]:
    """Scan step about one probe diameter: too little overlap for a unique solution."""
    return ptycho_sample("c_low_overlap")


def ptycho_low_dose() -> list[LayerDataTuple]:
    """1e3 photons per pattern: noise."""
    return ptycho_sample("d_low_dose")


def ptycho_wrong_probe() -> list[LayerDataTuple]:
    """A wrong (defocused) probe held fixed: halos and distortion."""
    return ptycho_sample("e_wrong_probe_fixed")


def ptycho_under_converged() -> list[LayerDataTuple]:
    """Three iterations only: blurred, low contrast."""
    return ptycho_sample("f_under_converged")


def ptycho_grid() -> list[LayerDataTuple]:
    """A perfectly regular raster scan: the raster-grid pathology at the scan step."""
    return ptycho_sample("g_raster_grid")


def ptycho_phase_wrap() -> list[LayerDataTuple]:
    """A thick object (0-10 rad): wrapped phase with singularities."""
    return ptycho_sample("h_phase_wrap_thick")


def synthetic_fractograph(size: int = 512, seed: int = 0) -> np.ndarray:
    """A plausible intergranular ceramic fracture surface as an 8-bit SEM-like image (procedural).

    Grains are Voronoi cells, each a facet tilted at random and lit from the detector side (Lambert
    shading); some cleaved grains carry river lines; grain boundaries show the bright SEM edge effect.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}.")
    rng = np.random.default_rng(seed)
    n_grains = max(8, size * size // 2500)
    seeds = rng.uniform(0, size, (n_grains, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    _, grain = cKDTree(seeds).query(np.column_stack([yy.ravel(), xx.ravel()]))
    grain = grain.reshape(size, size)

    # each facet: a random normal, lit from the upper left (secondary-electron detector side)
    tilt = rng.uniform(0, 0.9, n_grains)
    azimuth = rng.uniform(0, 2 * np.pi, n_grains)
    normals = np.column_stack([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), np.cos(tilt)])
    light = np.array([-0.5, -0.5, 0.7])
    light /= np.linalg.norm(light)
    shade = np.clip(normals @ light, 0.05, 1.0)[grain]

    # river lines on about a third of the grains (transgranular cleavage)
    cleaved = rng.random(n_grains) < 0.35
    direction = rng.uniform(0, np.pi, n_grains)
    spacing = rng.uniform(4, 10, n_grains)
    phase_coord = xx * np.cos(direction)[grain] + yy * np.sin(direction)[grain]
    rivers = 0.08 * np.sin(2 * np.pi * phase_coord / spacing[grain]) * cleaved[grain]

    boundary = ndimage.morphological_gradient(grain, size=3) > 0
    edge = ndimage.gaussian_filter(boundary.astype(float), 1.2)
    image = 0.25 + 0.6 * shade + rivers + 0.5 * edge
    image = ndimage.gaussian_filter(image, 0.8) + rng.normal(0, 0.04, image.shape)
    image = (image - np.percentile(image, 0.5)) / np.ptp(np.percentile(image, [0.5, 99.5]))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def ceramic_fractograph() -> list[LayerDataTuple]:
    """A synthetic intergranular ceramic fractograph (procedural, not a real SEM image), 0.05 µm pixels."""
    image = synthetic_fractograph()
    return [
        (
            image,
            {
                "name": "Ceramic fractograph (synthetic)",
                "colormap": "gray",
                "scale": (CERAMIC_PIXEL_UM, CERAMIC_PIXEL_UM),
                "units": ("µm", "µm"),
                "metadata": {
                    "synthetic": True,
                    "description": "procedural Voronoi grains with shaded facets and river lines; "
                    "not a real SEM image",
                    "pixel_size_m": (CERAMIC_PIXEL_UM * 1e-6, CERAMIC_PIXEL_UM * 1e-6),
                },
            },
            "image",
        )
    ]
