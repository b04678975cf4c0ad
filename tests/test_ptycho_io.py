"""Ptychography products: values, pixel sizes and scan positions from the field's own files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from napari.layers import Layer

from napari_fracto.io.ptycho import (
    PtychoFormatError,
    PtychoProduct,
    product_layers,
    read_cxi,
    read_npy,
    read_npz,
    read_product,
    read_ptychodus_product,
    write_ptychodus_product,
)

SIM = "ptychography/ptychi-sim"


@pytest.fixture
def baseline(shared_data):
    return read_ptychodus_product(shared_data / SIM / "a_baseline_product.h5")


def _touched_region(obj: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (col0, col1, row0, row1) of pixels the reconstruction changed from its start value."""
    rows, cols = np.nonzero(np.abs(obj - obj[0, 0]) > 1e-3)
    return cols.min(), cols.max(), rows.min(), rows.max()


def _probe_footprint(product: PtychoProduct) -> tuple[float, float, float, float]:
    """Where the scan's probe windows reach, in pixel-centre coordinates (col0, col1, row0, row1)."""
    px = product.positions_in_pixels()
    half = product.probe.shape[-1] / 2
    (x0, y0), (x1, y1) = px.min(0), px.max(0)
    return x0 - half + 0.5, x1 + half - 0.5, y0 - half + 0.5, y1 + half - 0.5


def test_ptychodus_product_values(baseline, shared_data):
    assert baseline.object.shape == (1, 208, 208)
    assert np.iscomplexobj(baseline.object)
    assert baseline.pixel_size_m == pytest.approx((1e-8, 1e-8))
    assert baseline.probe.shape == (1, 64, 64)
    assert baseline.positions.shape == (223, 2)
    assert baseline.position_units == "m"
    assert np.abs(baseline.positions).max() == pytest.approx(6e-7, rel=0.01)
    assert baseline.loss_values.shape == (50,)
    assert baseline.loss_values[0] > baseline.loss_values[-1]  # it converged
    assert baseline.metadata["photon_energy_eV"] == pytest.approx(8800)
    assert baseline.source_format == "ptychodus-h5"
    assert baseline.name == "a_baseline"
    # The raw object buffer saved beside it is the same reconstruction.
    raw = read_npy(shared_data / SIM / "a_baseline_object.npy")
    np.testing.assert_array_equal(raw.object, baseline.object)


@pytest.mark.parametrize("case", ["a_baseline", "g_raster_grid", "b_position_errors"])
def test_positions_are_relative_to_the_object_centre(shared_data, case):
    # The reconstruction only changes pixels a probe window touched: that region must be exactly the
    # scan's extent plus half a probe, which pins down the origin convention.
    product = read_product(shared_data / SIM / f"{case}_product.h5")
    touched = np.array(_touched_region(product.object[0]))
    footprint = np.array(_probe_footprint(product))
    tolerance = 0.45 if case == "g_raster_grid" else 1.0  # raster positions are whole pixels
    assert np.abs(touched - footprint).max() <= tolerance


def test_real_npz_positions_are_probe_centres_in_pixels(shared_data):
    product = read_npz(shared_data / "ptychography/real/Run1084_recon3_postPC.npz")
    assert product.object.shape == (1, 227, 226)
    assert product.probe.shape == (1, 64, 64)
    assert product.positions.shape == (1087, 2)
    assert product.position_units == "px"
    assert product.pixel_size_m is None
    touched = np.array(_touched_region(product.object[0]))
    assert np.abs(touched - np.array(_probe_footprint(product))).max() <= 1.0


def test_layers_put_scan_points_on_the_object(baseline):
    layers = product_layers(baseline)
    kinds = [(kwargs["name"], kind) for _, kwargs, kind in layers]
    assert kinds == [
        ("a_baseline amplitude", "image"),
        ("a_baseline phase", "image"),
        ("a_baseline probe amplitude", "image"),
        ("a_baseline scan positions", "points"),
    ]
    phase = Layer.create(*layers[1])
    points = Layer.create(*layers[3])
    assert str(phase.units[0]) == "nanometer"
    assert tuple(phase.scale) == pytest.approx((10.0, 10.0))
    np.testing.assert_allclose(layers[1][0], np.angle(baseline.object[0]))
    # Each point, mapped into the phase image's pixels, lands where positions_in_pixels says.
    in_pixels = np.array([phase.world_to_data(p) for p in points.data])
    expected = baseline.positions_in_pixels()[:, ::-1]
    np.testing.assert_allclose(in_pixels, expected, atol=1e-6)
    assert list(points.features["index"][:3]) == [0, 1, 2]
    assert not Layer.create(*layers[0]).visible  # amplitude starts hidden under the phase


def test_round_trip_through_ptychodus_layout(tmp_path, baseline):
    path = tmp_path / "copy_product.h5"
    write_ptychodus_product(path, baseline)
    again = read_ptychodus_product(path)
    np.testing.assert_array_equal(again.object, baseline.object)
    np.testing.assert_array_equal(again.probe, baseline.probe)
    np.testing.assert_allclose(again.positions, baseline.positions)
    np.testing.assert_array_equal(again.position_indexes, baseline.position_indexes)
    np.testing.assert_allclose(again.loss_values, baseline.loss_values)
    assert again.pixel_size_m == baseline.pixel_size_m
    assert again.metadata["photon_energy_eV"] == pytest.approx(8800)
    assert again.name == "a_baseline"


def test_pixel_positions_round_trip_via_metres(tmp_path):
    obj = np.ones((40, 60), dtype=np.complex64)
    product = PtychoProduct(
        object=obj,
        positions=np.array([[10.0, 5.0], [29.5, 19.5]]),
        position_units="px",
        name="toy",
    )
    with pytest.raises(PtychoFormatError, match="pixel size"):
        write_ptychodus_product(tmp_path / "toy.h5", product)
    product.pixel_size_m = (2e-8, 2e-8)
    write_ptychodus_product(tmp_path / "toy.h5", product)
    again = read_product(tmp_path / "toy.h5")
    np.testing.assert_allclose(again.positions_in_pixels(), product.positions, atol=1e-9)
    # The centre pixel (29.5, 19.5) is the object centre, i.e. 0 m.
    np.testing.assert_allclose(again.positions[1], [0.0, 0.0], atol=1e-15)


def test_cxi_reconstruction_with_explicit_pixel_size(tmp_path):
    path = tmp_path / "recon.cxi"
    obj = (np.random.default_rng(1).random((48, 64)) * np.exp(1j)).astype(np.complex64)
    probe = np.ones((16, 16), dtype=np.complex64)
    translation = np.array([[-1e-7, -5e-8, 0], [1e-7, 5e-8, 0], [0, 0, 0]])
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 150
        f["entry_1/image_1/data"] = obj
        f["entry_1/image_1/x_pixel_size"] = 5e-9
        f["entry_1/image_1/y_pixel_size"] = 6e-9
        f["entry_1/image_2/data"] = probe
        f["entry_1/image_2/title"] = "probe"
        f["entry_1/data_1/translation"] = translation
    product = read_cxi(path)
    np.testing.assert_array_equal(product.object[0], obj)
    assert product.pixel_size_m == (5e-9, 6e-9)
    assert product.probe.shape == (1, 16, 16)
    np.testing.assert_allclose(product.positions, translation[:, :2])
    # CXI fixes no origin: the object is centred on the scan, so the middle position is the middle pixel.
    np.testing.assert_allclose(product.positions_in_pixels()[2], [31.5, 23.5])
    assert read_product(path).source_format == "cxi"


def test_cxi_pixel_size_from_detector_geometry(tmp_path):
    path = tmp_path / "geom.cxi"
    with h5py.File(path, "w") as f:
        f["entry_1/image_1/data"] = np.ones((32, 32), dtype=np.complex64)
        f["entry_1/data_1/data"] = np.zeros((3, 128, 128), dtype=np.float32)
        f["entry_1/instrument_1/detector_1/distance"] = 2.0
        f["entry_1/instrument_1/detector_1/x_pixel_size"] = 75e-6
        f["entry_1/instrument_1/detector_1/y_pixel_size"] = 75e-6
        f["entry_1/instrument_1/source_1/energy"] = 8800 * 1.602176634e-19  # CXI stores joules
    product = read_cxi(path)
    # lambda(8.8 keV) = 0.14089 nm; lambda * z / (N * p) = 0.14089e-9 * 2 / (128 * 75e-6) = 29.35 nm
    assert product.pixel_size_m == pytest.approx((2.935e-8, 2.935e-8), rel=1e-3)
    assert product.metadata["photon_energy_eV"] == pytest.approx(8800)


def test_multislice_object_and_probe_modes_are_stacks():
    product = PtychoProduct(
        object=np.ones((3, 20, 30), dtype=np.complex64) * np.exp(1j * np.arange(3))[:, None, None],
        pixel_size_m=(5e-7, 5e-7),
        probe=np.ones((2, 8, 8), dtype=np.complex64),
        positions=np.zeros((4, 2)),
        name="thick",
    )
    layers = {kwargs["name"]: (data, kwargs, kind) for data, kwargs, kind in product_layers(product)}
    phase_data, phase_kwargs, _ = layers["thick phase"]
    assert phase_data.shape == (3, 20, 30)
    assert phase_kwargs["scale"] == pytest.approx((1.0, 0.5, 0.5))  # 500 nm pixels shown in µm
    assert phase_kwargs["units"] == ("pixel", "µm", "µm")
    assert np.allclose(phase_data[2], 2.0)
    assert layers["thick probe amplitude"][0].shape == (2, 8, 8)
    image = Layer.create(*layers["thick phase"])
    points = Layer.create(*layers["thick scan positions"])
    assert image.ndim == 3
    assert points.ndim == 2  # 2-D points show on every slice


def test_unrecognised_files_give_clear_errors(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["something"] = np.zeros((4, 4))
    with pytest.raises(PtychoFormatError, match="Ptychodus"):
        read_product(path)
    garbage = tmp_path / "bad.h5"
    garbage.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(PtychoFormatError, match="not a readable HDF5"):
        read_product(garbage)
    real = tmp_path / "real.npy"
    np.save(real, np.zeros((4, 4)))
    with pytest.raises(PtychoFormatError, match="complex"):
        read_npy(real)
    with pytest.raises(PtychoFormatError, match="object"):
        PtychoProduct(object=np.zeros(5, dtype=np.complex64))


def _write_ptychodus_cxi(path, obj, probe, positions_xy_m, pixel_m, centre_m, *, extension=True):
    """A CXI product in Ptychodus' layout (its plugins/cxi_file.py): probe in image_1 with axes
    'coherent:incoherent:y:x', object in image_2 with axes 'layer:y:x', geometry in /entry_1/ptychodus."""
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 160
        f["entry_1/title"] = "toy product"
        translation = np.column_stack([positions_xy_m, np.zeros(len(positions_xy_m))])
        f["entry_1/sample_1/geometry_1/translation"] = translation
        f["entry_1/data_1/translation"] = h5py.SoftLink("/entry_1/sample_1/geometry_1/translation")
        f["entry_1/instrument_1/source_1/energy"] = 10000 * 1.602176634e-19
        f["entry_1/instrument_1/detector_1/distance"] = 1.5
        probe_data = f.create_dataset("entry_1/image_1/data", data=probe)
        probe_data.attrs["axes"] = "coherent:incoherent:y:x"
        f["entry_1/image_1/data_type"] = "amplitude"
        f["entry_1/image_1/image_size"] = [pixel_m * probe.shape[-1], pixel_m * probe.shape[-2], 0.0]
        f["entry_1/instrument_1/source_1/illumination"] = h5py.SoftLink("/entry_1/image_1/data")
        obj_data = f.create_dataset("entry_1/image_2/data", data=obj)
        obj_data.attrs["axes"] = "layer:y:x"
        f["entry_1/image_2/data_type"] = "electron density"
        f["entry_1/image_2/image_size"] = [pixel_m * obj.shape[-1], pixel_m * obj.shape[-2], 0.0]
        if extension:
            ext = "entry_1/ptychodus"
            f[f"{ext}/object_pixel_width_m"] = pixel_m
            f[f"{ext}/object_pixel_height_m"] = pixel_m
            f[f"{ext}/probe_pixel_width_m"] = pixel_m
            f[f"{ext}/probe_pixel_height_m"] = pixel_m
            f[f"{ext}/object_center_x_m"] = centre_m[0]
            f[f"{ext}/object_center_y_m"] = centre_m[1]
            f[f"{ext}/probe_position_indexes"] = np.arange(len(positions_xy_m)) + 100
            f[f"{ext}/loss_epochs"] = np.arange(3)
            f[f"{ext}/loss_values"] = np.array([3.0, 2.0, 1.5])


@pytest.mark.parametrize("extension", [True, False])
def test_ptychodus_cxi_product_opens_with_pixel_size_and_positions(tmp_path, extension):
    """Ptychodus writes the probe first: the object is told by its axes, not by being image_1."""
    pixel = 8e-9
    rng = np.random.default_rng(3)
    obj = (0.9 * np.exp(1j * rng.random((1, 64, 96)))).astype(np.complex64)
    probe = np.ones((1, 1, 56, 56), dtype=np.complex64)
    centre = (2e-7, -1e-7) if extension else (0.0, 0.0)
    # scan points at object pixels (x, y) = (30, 20), (60, 40), (45, 30): metres in Ptychodus' frame
    px = np.array([[30.0, 20.0], [60.0, 40.0], [45.0, 30.0]])
    metres = np.array(centre) + pixel * (px + 0.5 - np.array([96, 64]) / 2)
    path = tmp_path / "product.cxi"
    _write_ptychodus_cxi(path, obj, probe, metres, pixel, centre, extension=extension)

    product = read_product(path)
    assert product.object.shape == (1, 64, 96)
    np.testing.assert_array_equal(product.object, obj)
    assert product.probe.shape == (1, 56, 56)
    assert product.pixel_size_m == pytest.approx((pixel, pixel))  # extension, else image_size / shape
    assert product.name == "toy product"
    if extension:
        np.testing.assert_allclose(product.positions_in_pixels(), px, atol=1e-6)
        assert list(product.position_indexes) == [100, 101, 102]
        assert list(product.loss_values) == [3.0, 2.0, 1.5]
        assert product.probe_pixel_size_m == pytest.approx((pixel, pixel))
    else:  # no stored centre: centred on the scan like Ptychodus does, the positions still kept
        assert product.positions_in_pixels() is not None
        assert product.positions_in_pixels()[2] == pytest.approx([47.5, 31.5])
    from napari_fracto.io.readers import napari_get_reader

    reader = napari_get_reader(str(path))  # what File > Open does with it
    assert reader is not None
    names = {kwargs["name"]: (data, kind) for data, kwargs, kind in reader(str(path))}
    assert names["toy product scan positions"][1] == "points"
    assert len(names["toy product scan positions"][0]) == 3
    assert names["toy product phase"][0].shape == (64, 96)
    assert names["toy product probe amplitude"][0].shape == (56, 56)


def test_cxi_images_are_chosen_by_what_they_say_not_their_number(tmp_path):
    path = tmp_path / "swapped.cxi"
    obj = np.full((40, 50), 0.8 * np.exp(0.5j), dtype=np.complex64)
    with h5py.File(path, "w") as f:
        f.create_dataset("entry_1/image_1/data", data=np.ones((2, 16, 16), np.complex64)).attrs["axes"] = (
            "incoherent:y:x"
        )
        f.create_dataset("entry_1/image_2/data", data=obj[None]).attrs["axes"] = "layer:y:x"
        f["entry_1/image_2/image_size"] = [50e-9, 40e-9, 0.0]
    product = read_cxi(path)
    assert product.object.shape == (1, 40, 50)
    assert product.probe.shape == (2, 16, 16)
    assert product.pixel_size_m == pytest.approx((1e-9, 1e-9))
    only_probe = tmp_path / "probe_only.cxi"
    with h5py.File(only_probe, "w") as f:
        f.create_dataset("entry_1/image_1/data", data=np.ones((1, 1, 8, 8), np.complex64)).attrs["axes"] = (
            "coherent:incoherent:y:x"
        )
    with pytest.raises(PtychoFormatError, match="no CXI image is an object"):
        read_product(only_probe)
