"""Verdicts on small numpy-made reconstructions of each kind the issue names: raw buffers without positions
(non-square, unlit rim), weak phase objects, a 10 px raster, spiral scan steps, ramps the display removes
and integer phase images. The Pty-chi calibration set itself is checked in test_ptycho_calibration.py."""

import numpy as np
import pytest

from napari_fracto.ptycho import DisplayOptions, ScanGeometry, measure_evidence, prepare_image
from napari_fracto.ptycho.measures_grid import scan_step_from_positions
from napari_fracto.ptycho.prepare import evidence_record


def _texture(shape, seed=0, smooth=1.5):
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(np.random.default_rng(seed).normal(size=shape), smooth)
    return (field - field.min()) / np.ptp(field)


def _buffer(shape=(120, 168), phase_max=0.7, rim=20, noise=0.01, seed=0):
    """A reconstruction buffer: textured object inside, the untouched initial guess (1+0j) around it."""
    rng = np.random.default_rng(seed)
    obj = np.ones(shape, dtype=np.complex64)
    inner = (slice(rim, shape[0] - rim), slice(rim, shape[1] - rim))
    h, w = shape[0] - 2 * rim, shape[1] - 2 * rim
    phase = phase_max * _texture((h, w), seed) + rng.normal(0, noise, (h, w))
    amp = 0.8 + 0.2 * _texture((h, w), seed + 1)
    obj[inner] = (amp * np.exp(1j * phase)).astype(np.complex64)
    return obj


def _spiral(step, half, centre):
    n = int(np.pi * 2 * half**2 / step**2)
    k = np.arange(n)
    r = step / np.sqrt(np.pi) * np.sqrt(k + 0.5)
    t = k * np.pi * (3 - np.sqrt(5))
    pos = np.stack([r * np.sin(t), r * np.cos(t)], axis=1)
    return pos[(np.abs(pos) <= half).all(axis=1)] + centre


@pytest.mark.parametrize("phase_max", [0.6, 0.7, 0.8])
def test_weak_phase_object_in_a_raw_non_square_buffer_gets_no_false_verdict(phase_max):
    ev = measure_evidence(_buffer(phase_max=phase_max))  # no positions, unlit rim, 120 x 168
    assert "rim left out" in ev.measured_on
    assert ev.step_source == "unknown"  # no lattice: the step is not guessed
    assert ev.grid_period_px is None
    assert ev.flags() == set()  # no Grid, no Low contrast, no Singularity from the rim
    assert "Grid artifacts" not in ev.clears()  # an unknown step argues neither way


def test_unlit_rim_would_have_given_residues_had_it_been_measured():
    obj = _buffer()
    rng = np.random.default_rng(5)
    rim = np.ones(obj.shape, bool)
    rim[20:-20, 20:-20] = False
    obj[rim] = np.exp(1j * rng.uniform(-np.pi, np.pi, rim.sum()))  # a barely-lit, random-phase rim
    positions = np.array([[r, c] for r in range(34, 87, 6) for c in range(34, 135, 6)], float)
    ev = measure_evidence(
        obj, positions_px=positions + rng.uniform(-2, 2, positions.shape), probe_shape=(32, 32)
    )
    assert "scanned region" in ev.measured_on
    assert "Singularity artifacts" not in ev.flags()
    # without positions the random rim cannot be told from the object: measured whole, it is a singularity
    assert "Singularity artifacts" in measure_evidence(obj).flags()


def test_ten_pixel_raster_is_found_at_ten_pixels_without_positions():
    obj = _buffer(shape=(152, 120), rim=0, phase_max=0.8)
    yy, xx = np.indices(obj.shape)
    lattice = ((yy % 10) < 2) & ((xx % 10) < 2)
    obj = obj * np.exp(1j * 0.5 * lattice) * (1 - 0.2 * lattice)
    ev = measure_evidence(obj)
    assert ev.step_source == "searched"
    assert ev.grid_period_px == pytest.approx(10.0, abs=0.3)
    assert "Grid artifacts" in ev.flags()


@pytest.mark.parametrize("step", [6.0, 12.0])
def test_spiral_step_is_not_read_low(step):
    pos = _spiral(step, 60.0, np.array([80.0, 80.0]))
    assert scan_step_from_positions(pos) == pytest.approx(step, rel=0.02)
    raster = np.array([[r, c] for r in np.arange(0, 100, step) for c in np.arange(0, 140, step)])
    assert scan_step_from_positions(raster) == pytest.approx(step, rel=0.01)


def test_ramp_removed_for_display_is_still_reported():
    obj = _buffer(rim=0)
    xx = np.indices(obj.shape)[1]
    ramped = obj * np.exp(1j * 0.08 * xx)  # 13 rad across 168 px
    prepared = prepare_image(ramped, DisplayOptions(ramp=True, crop=False))
    assert "phase ramp removed" in prepared.preprocessing  # what the display did, said apart
    shown_ramp = np.abs(np.diff(np.unwrap(prepared.image[60]))).mean()
    assert shown_ramp < 0.05
    record = evidence_record(prepared.evidence_input, ScanGeometry(), ["No obvious artifacts"])
    assert "Phase ramp" in record["flags"]
    assert record["ramp_rad_per_px"] == pytest.approx(0.08, abs=0.01)
    assert any("Phase ramp" in d for d in record["disagreements"])


def test_integer_phase_is_never_taken_as_radians():
    counts = (np.random.default_rng(0).random((64, 64)) * 65535).astype(np.uint16)
    with pytest.raises(ValueError, match="counts"):
        prepare_image(counts, DisplayOptions(ramp=True, crop=False))
    with pytest.raises(ValueError, match="value-to-radian scale"):
        measure_evidence(counts)
    assert "counts not radians" in evidence_record(counts, ScanGeometry(), None)["unavailable"]
    scaled = evidence_record(counts, ScanGeometry(), None, phase_scale=2 * np.pi / 65536)
    assert scaled["contrast_rad"] == pytest.approx(0.96 * 2 * np.pi, rel=0.1)  # in radians now


def test_crop_offset_puts_the_positions_on_the_cropped_image():
    obj = _buffer(rim=20)
    positions = np.array([[r, c] for r in range(30, 91, 6) for c in range(30, 139, 6)], float)
    geometry = ScanGeometry(positions_px=positions, probe_shape=(32, 32))
    prepared = prepare_image(obj, DisplayOptions(ramp=False, crop=True), geometry)
    record = evidence_record(prepared.evidence_input, geometry, None, prepared.offset)
    assert "scanned region" in record["measured_on"]
    assert record["scan_step_px"] == pytest.approx(6.0, rel=0.02)
