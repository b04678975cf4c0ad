"""The napari reader: what opens, with which pixel size, and how bad files are reported."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile
from napari.layers import Layer
from PIL import Image

from napari_fracto.io import readers
from napari_fracto.io.readers import ReaderError, napari_get_reader, read_layers


def _open(path) -> list:
    reader = napari_get_reader(str(path))
    assert reader is not None, f"no reader for {path}"
    layers = reader(str(path))
    for layer in layers:  # napari must accept every tuple we hand it
        Layer.create(*layer)
    return layers


def _by_name(layers) -> dict:
    return {kwargs["name"]: (data, kwargs, kind) for data, kwargs, kind in layers}


def test_get_reader_claims_only_supported_files(tmp_path):
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.csv")]) is None
    assert callable(napari_get_reader(str(tmp_path / "A.TIF")))
    assert callable(napari_get_reader([str(tmp_path / "a.png"), str(tmp_path / "b.npy")]))


def test_16bit_tiff_keeps_its_values(tmp_path):
    data = np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 20
    tifffile.imwrite(tmp_path / "sem16.tif", data)
    [(out, kwargs, kind)] = _open(tmp_path / "sem16.tif")
    assert kind == "image"
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, data)
    assert "scale" not in kwargs  # no metadata: pixels, not invented units
    assert kwargs["name"] == "sem16"


def test_zeiss_pixel_size_becomes_scale_in_nm(tmp_path):
    cz_sem = "\r\n".join(
        ["0", "AP_IMAGE_PIXEL_SIZE", "Image Pixel Size = 2.5 nm", "AP_WD", "WD = 5.0 mm", ""]
    )
    tifffile.imwrite(
        tmp_path / "zeiss.tif", np.zeros((8, 8), np.uint8), extratags=[(34118, "s", 0, cz_sem, True)]
    )
    [(_, kwargs, _)] = _open(tmp_path / "zeiss.tif")
    assert kwargs["scale"] == pytest.approx((2.5, 2.5))
    assert kwargs["units"] == ("nm", "nm")
    assert kwargs["metadata"]["pixel_size_source"].startswith("Zeiss CZ_SEM")
    assert kwargs["metadata"]["pixel_size_m"] == pytest.approx((2.5e-9, 2.5e-9))


def test_fei_pixel_size_becomes_scale(tmp_path):
    fei = "[User]\r\nDate=01/01/2020\r\n[EScan]\r\nPixelWidth=1.5e-07\r\nPixelHeight=1.5e-07\r\n"
    tifffile.imwrite(
        tmp_path / "fei.tif", np.zeros((8, 8), np.uint16), extratags=[(34682, "s", 0, fei, True)]
    )
    [(_, kwargs, _)] = _open(tmp_path / "fei.tif")
    assert kwargs["scale"] == pytest.approx((0.15, 0.15))
    assert kwargs["units"] == ("µm", "µm")
    assert "EScan" in kwargs["metadata"]["pixel_size_source"]


def test_imagej_calibration_and_stacks(tmp_path):
    stack = np.random.default_rng(0).random((5, 16, 12)).astype(np.float32)
    tifffile.imwrite(
        tmp_path / "stack.tif", stack, imagej=True, resolution=(1 / 0.25, 1 / 0.25), metadata={"unit": "um"}
    )
    [(out, kwargs, _)] = _open(tmp_path / "stack.tif")
    assert out.shape == (5, 16, 12)
    np.testing.assert_array_equal(out, stack)
    assert kwargs["scale"] == pytest.approx((1.0, 0.25, 0.25))
    assert kwargs["units"] == ("pixel", "µm", "µm")


def test_screen_dpi_is_not_taken_for_a_pixel_size(tmp_path):
    tifffile.imwrite(
        tmp_path / "dpi.tif", np.zeros((8, 8), np.uint8), resolution=(72, 72), resolutionunit="INCH"
    )
    [(_, kwargs, _)] = _open(tmp_path / "dpi.tif")
    assert "scale" not in kwargs


def test_rgb_and_float_nan_tiffs(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 1] = 200
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    [(out, kwargs, _)] = _open(tmp_path / "rgb.tif")
    assert kwargs["rgb"] is True
    np.testing.assert_array_equal(out, rgb)
    flt = np.ones((6, 6), np.float32)
    flt[2, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", flt)
    [(out, _, _)] = _open(tmp_path / "nan.tif")
    assert np.isnan(out[2, 3])
    assert np.nansum(out) == 35


def test_complex_tiff_opens_as_phase_and_amplitude_with_its_pixel_size(tmp_path):
    field = (2 * np.exp(1j * np.linspace(-1, 1, 64))).reshape(8, 8).astype(np.complex64)
    tifffile.imwrite(tmp_path / "field.tif", field, resolution=(1e6, 1e6), resolutionunit="CENTIMETER")
    layers = _by_name(_open(tmp_path / "field.tif"))
    np.testing.assert_allclose(layers["field phase"][0], np.angle(field), atol=1e-6)
    np.testing.assert_allclose(layers["field amplitude"][0], 2, atol=1e-6)
    assert layers["field phase"][1]["scale"] == pytest.approx((10.0, 10.0))  # 1e6 px/cm = 10 nm
    assert layers["field amplitude"][1]["units"] == ("nm", "nm")


def test_big_uncompressed_tiff_is_memory_mapped(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MEMMAP_BYTES", 1000)
    tifffile.imwrite(tmp_path / "big.tif", np.ones((64, 64), np.uint16))
    [(out, _, _)] = _open(tmp_path / "big.tif")
    assert isinstance(out, np.memmap)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.tif", b"\x00garbage bytes, not an image\xff" * 20, "not a valid TIFF"),
        ("x.png", b"\x89PNG but not really" * 5, "not a readable .png"),
        ("x.npy", b"\x93NUMPY broken header", "not a valid numpy|truncated or corrupt"),
        ("x.h5", b"nope" * 50, "not a readable HDF5"),
        ("empty.tif", b"", "empty"),
    ],
)
def test_corrupt_files_give_actionable_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ReaderError, match=message):
        read_layers(str(path))


def test_truncated_tiff_is_reported_as_truncated(tmp_path):
    tifffile.imwrite(
        tmp_path / "full.tif", np.random.default_rng(0).integers(0, 60000, (256, 256), np.uint16)
    )
    data = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReaderError, match="truncated or corrupt"):
        read_layers(str(tmp_path / "cut.tif"))


def test_missing_file(tmp_path):
    with pytest.raises(ReaderError, match="does not exist"):
        read_layers(str(tmp_path / "gone.tif"))


def test_png_rgb_palette_and_16bit(tmp_path):
    rgb = np.zeros((9, 7, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    [(out, kwargs, _)] = _open(tmp_path / "rgb.png")
    assert kwargs["rgb"] is True
    assert out.shape == (9, 7, 3)
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    [(out, kwargs, _)] = _open(tmp_path / "pal.png")
    assert kwargs["rgb"] is True
    assert tuple(out[0, 0, :3]) == (255, 0, 0)
    grey16 = np.arange(100, dtype=np.uint16).reshape(10, 10) * 600
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    [(out, kwargs, _)] = _open(tmp_path / "g16.png")
    assert kwargs["rgb"] is False
    assert out.max() == 99 * 600  # 16-bit precision kept


def test_real_sem_jpeg(shared_data):
    [(out, kwargs, _)] = _open(shared_data / "fractography/ceramic-sem/s1_1.jpg")
    assert out.shape[:2] == (1280, 1280)
    assert out.dtype == np.uint8
    assert kwargs["metadata"]["source_path"].endswith("s1_1.jpg")


def test_complex_npy_opens_as_phase_and_amplitude(shared_data):
    layers = _by_name(_open(shared_data / "ptychography/ptychi-sim/a_baseline_object.npy"))
    assert set(layers) == {"a_baseline_object phase", "a_baseline_object amplitude"}
    raw = np.load(shared_data / "ptychography/ptychi-sim/a_baseline_object.npy")
    np.testing.assert_allclose(layers["a_baseline_object phase"][0], np.angle(raw))
    np.testing.assert_allclose(layers["a_baseline_object amplitude"][0], np.abs(raw))


def test_pickled_npy_is_refused_with_a_reason(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ReaderError, match="pickle"):
        read_layers(str(tmp_path / "obj.npy"))


def test_generic_npz_and_hdf5(tmp_path):
    np.savez(
        tmp_path / "two.npz", image=np.ones((4, 5)), field=np.ones((4, 5), np.complex64), trace=np.ones(9)
    )
    names = set(_by_name(_open(tmp_path / "two.npz")))
    assert names == {"two image", "two field phase", "two field amplitude"}  # 1-D trace skipped
    np.savez(tmp_path / "traces.npz", a=np.ones(3), b=np.ones(4))
    with pytest.raises(ReaderError, match="no image"):
        read_layers(str(tmp_path / "traces.npz"))
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f["group/recon"] = np.exp(1j * np.linspace(0, 1, 30)).reshape(5, 6)
        f["scalar"] = 3.0
    layers = _by_name(_open(tmp_path / "g.h5"))
    assert set(layers) == {"g phase", "g amplitude"}
    assert layers["g phase"][1]["metadata"]["dataset"] == "group/recon"
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["scalar"] = 3.0
    with pytest.raises(ReaderError, match="no image-like dataset"):
        read_layers(str(tmp_path / "empty.h5"))


def test_big_hdf5_stacks_open_lazily_and_read_the_plane_shown(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "LAZY_HDF5_BYTES", 1000)  # as if the 14 KB stack were gigabytes
    stack = np.arange(6 * 20 * 30, dtype=np.float32).reshape(6, 20, 30)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["patterns"] = stack
        f["mask"] = np.ones((20, 30), np.uint8)  # one plane: read as it is
    layers = _by_name(_open(tmp_path / "d.h5"))
    patterns = layers["d patterns"][0]
    assert not isinstance(patterns, np.ndarray)  # nothing of the stack read when the file opens
    assert patterns.shape == (6, 20, 30)
    np.testing.assert_array_equal(np.asarray(patterns[4]), stack[4])  # the plane on screen, on demand
    assert isinstance(layers["d mask"][0], np.ndarray)


def test_a_cxi_reconstruction_opens_without_touching_its_diffraction_data(tmp_path):
    path = tmp_path / "recon.cxi"
    with h5py.File(path, "w") as f:
        f["entry_1/image_1/data"] = np.exp(1j * np.linspace(0, 1, 48 * 64)).reshape(48, 64)
        f["entry_1/image_1/x_pixel_size"] = 5e-9
        f["entry_1/image_1/y_pixel_size"] = 5e-9
        f["entry_1/data_1/translation"] = np.zeros((3, 3))
        # the patterns live elsewhere (a missing file): reading them would fail the open
        f["entry_1/data_1/data"] = h5py.ExternalLink("missing_patterns.h5", "/data")
    names = set(_by_name(_open(path)))
    assert {"recon phase", "recon amplitude"} <= names


def test_ptychography_files_open_with_physical_layers(shared_data):
    layers = _by_name(_open(shared_data / "ptychography/ptychi-sim/g_raster_grid_product.h5"))
    assert set(layers) == {
        "g_raster_grid phase",
        "g_raster_grid amplitude",
        "g_raster_grid probe amplitude",
        "g_raster_grid scan positions",
    }
    assert layers["g_raster_grid phase"][1]["units"] == ("nm", "nm")
    assert layers["g_raster_grid scan positions"][0].shape == (256, 2)  # a 16 x 16 raster
    npz = _by_name(_open(shared_data / "ptychography/real/Run1084_recon3_postPC.npz"))
    assert npz["Run1084_recon3_postPC phase"][0].shape == (227, 226)
    assert npz["Run1084_recon3_postPC scan positions"][0].shape == (1087, 2)
    # Raw diffraction data is not a product: it opens generically as a stack of patterns.
    diffraction = _by_name(_open(shared_data / "ptychography/ptychi-sim/a_baseline_diffraction.h5"))
    assert diffraction["a_baseline_diffraction patterns"][0].shape == (223, 64, 64)


def test_real_phase_tiff_stack(shared_data):
    [(out, _, _)] = _open(shared_data / "ptychography/real/pred_phase_20x128x128.tiff")
    assert out.shape == (20, 128, 128)
    assert out.dtype == np.float32


def test_several_files_at_once(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "b.png")
    layers = read_layers([str(tmp_path / "a.tif"), str(tmp_path / "b.png")])
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["a", "b"]
