"""Evidence separates the raster-grid reconstruction from the clean one, and says so in plain words."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from napari_fracto.ptycho import (
    compare_with_model,
    crop_to_scanned,
    measure_evidence,
    scan_step_from_positions,
)

SIM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptychography" / "ptychi-sim"
needs_sim = pytest.mark.skipif(not SIM.is_dir(), reason=f"shared Pty-chi simulations not found at {SIM}")


def _load(case: str):
    """Object cropped to the scanned region, and probe centres in object pixels."""
    with h5py.File(SIM / f"{case}_product.h5") as f:
        obj = f["object"][0]
        px = f["object"].attrs["pixel_width_m"]
        pos = np.column_stack([f["probe_position_y_m"][:], f["probe_position_x_m"][:]]) / px
        probe_shape = f["probe"].shape
    pos = pos + np.array(obj.shape) / 2
    return crop_to_scanned(obj, pos, probe_shape), pos


@needs_sim
def test_grid_case_is_flagged_and_clean_case_is_not():
    grid_obj, grid_pos = _load("g_raster_grid")
    clean_obj, clean_pos = _load("a_baseline")
    assert scan_step_from_positions(grid_pos) == pytest.approx(8.0, abs=0.01)  # README: 8 px period
    grid = measure_evidence(grid_obj, positions_px=grid_pos)
    clean = measure_evidence(clean_obj, positions_px=clean_pos)
    assert "Grid artifacts" in grid.flags()
    assert "Grid artifacts" not in clean.flags()
    assert grid.grid_ratio > 4 * clean.grid_ratio
    assert clean.flags() == set()


@needs_sim
def test_grid_is_found_without_positions():
    grid_obj, _ = _load("g_raster_grid")
    found = measure_evidence(grid_obj)
    assert found.step_source == "searched"
    assert found.grid_period_px == pytest.approx(8.0, rel=0.05)  # the fundamental, not a harmonic
    assert "Grid artifacts" in found.flags()
    clean_obj, _ = _load("a_baseline")
    assert "Grid artifacts" not in measure_evidence(clean_obj).flags()


@needs_sim
@pytest.mark.parametrize(
    "case",
    [
        "b_position_errors",
        "b2_position_errors_corrected",
        "b3_position_errors_mild",
        "c_low_overlap",
        "d_low_dose",
        "d2_moderate_dose",
        "e_wrong_probe_fixed",
        "e2_partial_coherence_1mode",
        "f_under_converged",
        "h_phase_wrap_thick",
    ],
)
def test_no_false_grid_on_spiral_scans(case):
    obj, pos = _load(case)
    assert "Grid artifacts" not in measure_evidence(obj, positions_px=pos).flags()
    assert "Grid artifacts" not in measure_evidence(obj).flags()


@needs_sim
def test_other_measures_follow_the_known_causes():
    low_dose = measure_evidence(_load("d_low_dose")[0])
    clean = measure_evidence(_load("a_baseline")[0])
    under = measure_evidence(_load("f_under_converged")[0])
    thick = measure_evidence(_load("h_phase_wrap_thick")[0])
    assert low_dose.noise_rad > 2 * clean.noise_rad  # measured; noise is not flagged (left to the model)
    assert under.contrast_rad < 0.6 * clean.contrast_rad  # lower, but above the calibrated 0.34 rad
    # 0.26 % residues: far above the clean case, under the calibrated 0.65 % (low-dose noise reaches 1.3 %)
    assert thick.residue_fraction > 100 * clean.residue_fraction + 1e-4


@needs_sim
def test_added_ramp_is_flagged_and_reported_in_rad():
    obj, _ = _load("a_baseline")
    _h, w = obj.shape
    ramp = np.exp(1j * 0.08 * np.arange(w))[None, :]
    ev = measure_evidence(obj * ramp)
    assert "Phase ramp" in ev.flags()
    assert ev.ramp_rad_per_px == pytest.approx(0.08, abs=0.01)
    assert ev.ramp_across_field_rad == pytest.approx(0.08 * w, rel=0.15)
    assert "Phase ramp" not in measure_evidence(obj).flags()


def test_synthetic_grid_on_noise_is_found_at_the_given_step():
    rng = np.random.default_rng(1)
    yy, xx = np.indices((96, 96))
    base = rng.normal(0, 0.05, (96, 96))
    gridded = base + 0.05 * (np.cos(2 * np.pi * yy / 6) + np.cos(2 * np.pi * xx / 6))
    assert "Grid artifacts" in measure_evidence(gridded, scan_step_px=6).flags()
    assert "Grid artifacts" not in measure_evidence(base, scan_step_px=6).flags()


@needs_sim
def test_compare_with_model_names_disagreements_in_plain_words():
    obj, pos = _load("g_raster_grid")
    ev = measure_evidence(obj, positions_px=pos)
    missed = compare_with_model(ev, ["No obvious artifacts"])
    assert len(missed) == 1
    assert "8 px scan step" in missed[0]
    assert f"{ev.grid_ratio:.0f}x background" in missed[0]
    assert "model did not flag Grid artifacts" in missed[0]
    assert compare_with_model(ev, ["grid artifacts"]) == []  # agreement (case-insensitive): nothing to say

    clean = measure_evidence(*[_load("a_baseline")[0]], positions_px=_load("a_baseline")[1])
    wrong = compare_with_model(clean, ["Grid artifacts", "Blurring"])
    assert len(wrong) == 1
    assert wrong[0].startswith("the model flagged Grid artifacts, but")


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="2-D"):
        measure_evidence(np.zeros((2, 32, 32)))
    with pytest.raises(ValueError, match="at least 16x16"):
        measure_evidence(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        measure_evidence(np.full((32, 32), np.nan))
    with pytest.raises(ValueError, match="repeat one point"):
        scan_step_from_positions(np.zeros((4, 2)))


def test_record_is_json_ready():
    import json

    ev = measure_evidence(np.random.default_rng(0).normal(0, 0.5, (32, 32)), scan_step_px=8)
    record = json.loads(json.dumps(ev.to_dict()))
    assert record["scan_step_px"] == 8
    assert set(record["flags"]) == ev.flags()
    assert record["thresholds"]["grid_ratio"] == ev.thresholds.grid_ratio


def _ratio_with_full_masks(power: np.ndarray, period: float) -> float:
    """The ring ratio computed the slow, obvious way (a full frequency grid per period), as a reference."""
    n0, n1 = power.shape
    cy, cx = n0 // 2, n1 // 2
    yy, xx = np.indices(power.shape)
    freq = np.hypot((yy - cy) / n0, (xx - cx) / n1)
    f = 1.0 / period
    ring = np.abs(freq - f) < 1.5 / min(n0, n1)
    ratios = []
    for py, px in ((round(cy + f * n0), cx), (cy, round(cx + f * n1))):
        near = (np.abs(yy - py) <= 2) & (np.abs(xx - px) <= 2)
        mirror = (np.abs(yy - (2 * cy - py)) <= 2) & (np.abs(xx - (2 * cx - px)) <= 2)
        background = power[ring & ~near & ~mirror]
        ratios.append(power[py - 1 : py + 2, px - 1 : px + 2].max() / np.median(background))
    return float(np.sqrt(ratios[0] * ratios[1]))


@pytest.mark.parametrize("shape", [(96, 96), (80, 112)])
def test_ring_ratio_from_the_sorted_grid_equals_the_full_mask(shape):
    from napari_fracto.ptycho.measures_grid import Rings as _Rings
    from napari_fracto.ptycho.measures_grid import axis_peak_ratio as _axis_peak_ratio
    from napari_fracto.ptycho.measures_grid import power_spectrum as _power_spectrum

    rng = np.random.default_rng(3)
    xx = np.indices(shape)[1]
    image = rng.normal(0, 0.05, shape) + 0.05 * np.cos(2 * np.pi * xx / 7)
    power = _power_spectrum(image)
    rings = _Rings(shape)
    for period in (4.0, 6.5, 7.0, 11.0, min(shape) / 3):
        assert _axis_peak_ratio(power, period, rings) == pytest.approx(_ratio_with_full_masks(power, period))


def test_step_search_finds_the_grid_on_a_large_object_without_positions():
    """A 1024 x 1024 object with no scan positions: the step is searched (its speed: benchmarks/)."""
    rng = np.random.default_rng(0)
    yy, xx = np.indices((1024, 1024))
    lattice = ((yy % 8) < 2) & ((xx % 8) < 2)  # a raster's imprint: a lattice, so harmonics too
    phase = rng.normal(0, 0.05, (1024, 1024)) + 0.2 * lattice
    ev = measure_evidence(np.exp(1j * phase).astype(np.complex64))
    assert ev.step_source == "searched"
    assert ev.grid_period_px == pytest.approx(8.0, abs=0.1)
    assert "Grid artifacts" in ev.flags()
