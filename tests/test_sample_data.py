"""The samples open from File > Open Sample with the right shapes, pixel sizes and known causes."""

import json

import numpy as np
import pytest

from napari_fracto import sample_data
from napari_fracto.ptycho import measure_evidence, scan_step_from_positions

KEYS = {
    "ptycho-clean": "a_clean",
    "ptycho-position-errors": "b_position_errors",
    "ptycho-low-overlap": "c_low_overlap",
    "ptycho-low-dose": "d_low_dose",
    "ptycho-wrong-probe": "e_wrong_probe_fixed",
    "ptycho-under-converged": "f_under_converged",
    "ptycho-grid": "g_raster_grid",
    "ptycho-phase-wrap": "h_phase_wrap_thick",
}


def test_manifest_lists_every_shipped_case_with_cause_and_labels():
    cases = sample_data.manifest()["cases"]
    assert sorted(cases) == sorted(KEYS.values())
    for entry in cases.values():
        assert entry["cause"]
        assert entry["ptychobench_labels"]
        assert entry["pixel_size_m"] == pytest.approx(1e-8)


def test_unknown_case_is_refused_with_the_list():
    with pytest.raises(ValueError, match="available: a_clean"):
        sample_data.ptycho_sample("nope")


def test_shipped_grid_sample_shows_its_grid_and_clean_does_not():
    """The sample library carries the evidence it claims: a grid at the 8 px step in one case only."""
    found = {}
    for case in ("a_clean", "g_raster_grid"):
        layers = sample_data.ptycho_sample(case)
        amp = next(d for d, k, _ in layers if k["name"].endswith("amplitude") and "probe" not in k["name"])
        phase = next(d for d, k, _ in layers if k["name"].endswith("phase"))
        points = next(d for d, _, t in layers if t == "points")
        step = scan_step_from_positions(points) / 10.0  # points are in nm, pixels are 10 nm
        found[case] = measure_evidence(amp * np.exp(1j * phase), scan_step_px=step)
    assert "Grid artifacts" in found["g_raster_grid"].flags()
    assert "Grid artifacts" not in found["a_clean"].flags()


def test_synthetic_fractograph_is_deterministic_and_textured():
    a = sample_data.synthetic_fractograph(128, seed=3)
    b = sample_data.synthetic_fractograph(128, seed=3)
    assert a.dtype == np.uint8
    assert a.shape == (128, 128)
    np.testing.assert_array_equal(a, b)
    assert a.std() > 30  # facets differ in brightness
    assert not np.array_equal(a, sample_data.synthetic_fractograph(128, seed=4))
    with pytest.raises(ValueError, match="at least 32"):
        sample_data.synthetic_fractograph(8)
    layer = sample_data.ceramic_fractograph()[0]
    assert "synthetic" in layer[1]["name"]
    json.dumps(layer[1]["metadata"])


@pytest.mark.parametrize("key", sorted(KEYS))
def test_ptycho_samples_open_in_napari(make_napari_viewer, key):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-fracto", key)
    case = KEYS[key]
    names = [layer.name for layer in viewer.layers]
    assert f"sample {case} phase" in names
    assert f"sample {case} amplitude" in names
    phase = viewer.layers[f"sample {case} phase"]
    assert phase.data.shape == (144, 144)
    np.testing.assert_allclose(phase.scale, (10.0, 10.0))  # 10 nm pixels
    assert tuple(str(u) for u in phase.units) == ("nanometer", "nanometer")
    assert phase.metadata["cause"] == sample_data.manifest()["cases"][case]["cause"]
    assert np.iscomplexobj(phase.data) is False
    assert np.abs(phase.data).max() <= np.pi + 1e-6
    points = viewer.layers[f"sample {case} scan positions"]
    assert len(points.data) == sample_data.manifest()["cases"][case]["n_positions"]


def test_ceramic_sample_opens_in_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-fracto", "ceramic-fractograph")
    (layer,) = viewer.layers
    assert layer.name == "Ceramic fractograph (synthetic)"
    assert layer.data.shape == (512, 512)
    np.testing.assert_allclose(layer.scale, (0.05, 0.05))
    assert layer.metadata["synthetic"] is True
