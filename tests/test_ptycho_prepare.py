"""Preparing a ptychography image for the model: geometry from files and napari layers, options, evidence."""

from __future__ import annotations

import numpy as np
import pytest

from napari_fracto.io.ptycho import PtychoProduct
from napari_fracto.ptycho.display import DisplayOptions
from napari_fracto.ptycho.prepare import ScanGeometry, evidence_lines, evidence_record, prepare_image


def _thick_object(size: int = 96, peak_rad: float = 20.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - size / 2
    phase = peak_rad * np.exp(-(xx**2 + yy**2) / (2 * (size / 5) ** 2))
    return (0.8 * np.exp(1j * phase)).astype(np.complex64)


def test_unwrapping_a_complex_object_sends_the_unwrapped_phase():
    obj = _thick_object()
    wrapped = prepare_image(obj, DisplayOptions(ramp=False, unwrap=False, crop=False))
    unwrapped = prepare_image(obj, DisplayOptions(ramp=False, unwrap=True, crop=False))
    assert np.ptp(wrapped.image) <= 2 * np.pi + 1e-5
    assert np.ptp(unwrapped.image) == pytest.approx(20.0, abs=0.1)  # the bump's true height
    assert unwrapped.preprocessing.startswith("phase unwrapped")
    assert np.iscomplexobj(unwrapped.evidence_input)  # evidence still sees the amplitude


def test_amplitude_part_is_the_cropped_amplitude():
    obj = _thick_object()
    geometry = ScanGeometry(positions_px=np.array([[40.0, 40.0], [56.0, 56.0]]), probe_shape=(16, 16))
    prepared = prepare_image(obj, DisplayOptions(ramp=False, crop=True), geometry, part="amplitude")
    assert prepared.offset == (36, 36)  # first centre minus a quarter probe
    assert prepared.image.shape == (25, 25)
    np.testing.assert_allclose(prepared.image, 0.8, atol=1e-6)
    assert "(amplitude sent)" in prepared.preprocessing


def test_no_options_leave_the_image_as_it_is():
    obj = _thick_object()
    prepared = prepare_image(obj, None)
    assert prepared.image is obj or np.shares_memory(prepared.image, obj)
    assert (prepared.offset, prepared.preprocessing) == ((0, 0), "")


def test_geometry_from_napari_world_coordinates():
    # image: 10 nm pixels, first pixel centre at (-500, -300) nm; points in nm; probe 480 nm wide
    geometry = ScanGeometry.from_world_points(
        np.array([[-500.0, -300.0], [-400.0, -200.0]]), (10.0, 10.0), (-500.0, -300.0), (480.0, 240.0)
    )
    np.testing.assert_allclose(geometry.positions_px, [[0, 0], [10, 10]])
    assert geometry.probe_shape == (48, 24)
    assert geometry.can_crop
    assert not ScanGeometry.from_world_points(None, (1, 1), (0, 0)).can_crop


def test_geometry_from_a_product_converts_probe_pixels_and_refuses_unplaceable_positions():
    product = PtychoProduct(
        object=np.ones((64, 64), dtype=np.complex64),
        pixel_size_m=(1e-8, 1e-8),
        probe=np.ones((1, 32, 32), dtype=np.complex64),
        probe_pixel_size_m=(2e-8, 2e-8),  # probe sampled twice as coarse: 64 object pixels across
        positions=np.array([[0.0, 0.0], [1e-7, 0.0]]),
        metadata={"scan_step_px": 10.0},
    )
    geometry = ScanGeometry.from_product(product)
    assert geometry.probe_shape == (64, 64)
    # (x, y) metres about the object centre -> (row, col) pixels: centre of a 64 px object is 31.5
    np.testing.assert_allclose(geometry.positions_px, [[31.5, 31.5], [31.5, 41.5]])
    assert geometry.scan_step_px == 10.0
    product.pixel_size_m = None  # metres that cannot be placed on pixels: no crop, no error
    assert ScanGeometry.from_product(product).positions_px is None


def test_evidence_lines_mark_what_passed_its_threshold():
    rng = np.random.default_rng(0)
    xx = np.indices((64, 64))[1]
    ramped = 0.25 * xx + rng.normal(0, 0.3, (64, 64))  # 16 rad across: past the ramp threshold
    record = evidence_record(ramped, ScanGeometry(), ["No obvious artifacts"])
    lines = evidence_lines(record)
    assert any(line.startswith("⚑ phase ramp:") for line in lines)
    assert any(line.startswith("⚑ contrast:") for line in lines)  # noise alone: no object signal
    assert any(line.startswith("noise:") and "not judged" in line for line in lines)
    assert any("Phase ramp" in d for d in record["disagreements"])
    assert evidence_lines({"unavailable": "no evidence measured: too small"}) == [
        "no evidence measured: too small"
    ]
    assert evidence_lines({}) == []
