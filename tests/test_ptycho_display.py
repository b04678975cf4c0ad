"""Display options change what is shown: ramps go, wraps go, unlit edges go, and the record says so."""

import numpy as np
import pytest

from napari_fracto.ptycho import (
    DisplayOptions,
    crop_to_scanned,
    estimate_phase_ramp,
    remove_phase_ramp,
    scanned_region,
    unwrap_phase,
)


def _bumpy_object(shape=(64, 80), ramp=(0.0, 0.0)):
    yy, xx = np.indices(shape)
    phase = 0.5 * np.sin(yy / 5.0) * np.cos(xx / 7.0) + ramp[0] * yy + ramp[1] * xx
    return (0.9 * np.exp(1j * phase)).astype(np.complex64), phase


def test_ramp_is_measured_and_removed_even_when_wrapped():
    obj, _ = _bumpy_object(ramp=(0.3, -0.2))  # many 2-pi wraps across the field
    gy, gx = estimate_phase_ramp(obj)
    assert gy == pytest.approx(0.3, abs=0.01)
    assert gx == pytest.approx(-0.2, abs=0.01)
    flat = remove_phase_ramp(obj)
    clean, _truth = _bumpy_object()
    err = np.angle(flat * np.conj(clean))
    assert np.abs(err).max() < 0.15  # only the fit's small bias from the bumps remains
    np.testing.assert_allclose(np.abs(flat), np.abs(obj), rtol=1e-5)


def test_ramp_fit_uses_only_the_mask():
    obj, _ = _bumpy_object(ramp=(0.0, 0.1))
    garbage = obj.copy()
    garbage[:, :20] = np.exp(1j * np.random.default_rng(0).uniform(-np.pi, np.pi, (64, 20)))
    _, gx_all = estimate_phase_ramp(garbage)
    _, gx_masked = estimate_phase_ramp(garbage, (slice(0, 64), slice(20, 80)))
    assert gx_masked == pytest.approx(0.1, abs=0.01)
    assert abs(gx_all - 0.1) > abs(gx_masked - 0.1)


def test_real_phase_in_gives_real_phase_out():
    _, phase = _bumpy_object(ramp=(0.05, 0.0))
    out = remove_phase_ramp(phase.astype(np.float32))
    assert out.dtype == np.float32
    assert abs(estimate_phase_ramp(out)[0]) < 1e-3


def test_unwrap_restores_a_thick_object():
    yy, xx = np.indices((48, 48))
    truth = 10 * np.exp(-((yy - 24) ** 2 + (xx - 24) ** 2) / 200.0)
    wrapped = np.angle(np.exp(1j * truth))
    assert np.ptp(wrapped) < 2 * np.pi + 1e-6
    un = unwrap_phase(wrapped)
    np.testing.assert_allclose(un - un[0, 0], truth - truth[0, 0], atol=1e-4)
    with pytest.raises(ValueError, match=r"np\.angle"):
        unwrap_phase(np.exp(1j * truth))


def test_scanned_region_and_crop():
    positions = np.array([[30.0, 40.0], [30.0, 60.0], [50.0, 40.0], [50.0, 60.0]])
    rows, cols = scanned_region(positions, (16, 16), (100, 120))
    assert (rows.start, rows.stop, cols.start, cols.stop) == (26, 55, 36, 65)
    image = np.zeros((3, 100, 120))
    assert crop_to_scanned(image, positions, (16, 16)).shape == (3, 29, 29)
    # clipped at the object's edges
    rows, cols = scanned_region(np.array([[0.0, 0.0], [99.0, 119.0]]), (16, 16), (100, 120))
    assert (rows.start, rows.stop, cols.start, cols.stop) == (0, 100, 0, 120)


@pytest.mark.parametrize(
    ("positions", "message"),
    [
        (np.array([[1e-6, 2e-6]]) * 1e9 + 5000, "do not fall inside"),
        (np.zeros((3, 3)), r"\(N, 2\)"),
        (np.array([[np.nan, 1.0]]), "NaN"),
    ],
)
def test_bad_positions_say_what_is_wrong(positions, message):
    with pytest.raises(ValueError, match=message):
        scanned_region(positions, (16, 16), (100, 120))


def test_display_options_apply_and_describe():
    obj, _ = _bumpy_object((100, 120), ramp=(0.0, 0.2))
    obj[:, :30] = 1.0  # unlit edge: the flat initial guess
    positions = np.array([[20.0, 40.0], [80.0, 110.0]])
    shown = DisplayOptions(ramp=True, unwrap=False, crop=True).apply(obj, positions, (16, 16))
    assert shown.phase.shape == shown.amplitude.shape == (69, 79)
    assert shown.region == (slice(16, 85), slice(36, 115))
    assert abs(estimate_phase_ramp(shown.phase)[1]) < 0.01
    assert any("cropped" in n for n in shown.notes)
    assert any("ramp removed" in n for n in shown.notes)

    plain = DisplayOptions(ramp=False, unwrap=False, crop=False)
    assert plain.describe() == "as reconstructed (no display processing)"
    assert "phase unwrapped" in DisplayOptions(unwrap=True).describe()
    untouched = plain.apply(obj)
    np.testing.assert_allclose(untouched.phase, np.angle(obj), atol=1e-6)

    # asked to crop but nothing to crop by: shown whole, and the notes say why
    whole = DisplayOptions(crop=True).apply(obj)
    assert whole.phase.shape == obj.shape
    assert any("not cropped" in n for n in whole.notes)


def test_bad_images_get_clear_errors():
    with pytest.raises(ValueError, match="2-D"):
        remove_phase_ramp(np.zeros((4, 4, 4), complex))
    with pytest.raises(ValueError, match="NaN"):
        remove_phase_ramp(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="mask has shape"):
        remove_phase_ramp(np.ones((4, 4), complex), np.ones((3, 3), bool))
