"""PNG/JPEG beyond Pillow's decompression-bomb limit open in this reader, and nowhere else is changed.

The 16k x 12k case itself is measured in benchmarks/bench_large_image.py (`--png`); here Pillow's limit
is lowered so a small image stands for a huge one.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_fracto.io import pil_images
from napari_fracto.io.readers import ReaderError, read_file


def _image(path, shape=(120, 160, 3)):
    pixels = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.mark.parametrize("name", ["big.png", "big.bmp", "big.jpg"])
def test_an_image_over_pillows_limit_opens_here_and_the_limit_stays(tmp_path, monkeypatch, name):
    pixels = _image(tmp_path / name)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # 19 200 px is "a bomb" for Pillow now
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / name)
    data, kwargs, _ = read_file(tmp_path / name)[0]
    assert data.shape == pixels.shape
    assert kwargs["rgb"] is True
    if not name.endswith(".jpg"):
        np.testing.assert_array_equal(data, pixels)
    assert Image.MAX_IMAGE_PIXELS == 4000  # untouched for everyone else
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / name)


def test_this_readers_own_bound_is_a_clear_message(tmp_path, monkeypatch):
    _image(tmp_path / "huge.png")
    monkeypatch.setattr(pil_images, "MAX_PIXELS", 10_000)
    with pytest.raises(ReaderError, match=r"160 x 120 pixels.*TIFF"):
        read_file(tmp_path / "huge.png")


def test_big_images_are_copied_band_by_band_exactly(tmp_path, monkeypatch):
    grey = _image(tmp_path / "g.png", (301, 157))
    colour = _image(tmp_path / "c.png", (97, 211, 4))
    monkeypatch.setattr(pil_images, "BAND_COPY_BYTES", 1000)
    monkeypatch.setattr(pil_images, "_BAND_BYTES", 3000)
    np.testing.assert_array_equal(read_file(tmp_path / "g.png")[0][0], grey)
    np.testing.assert_array_equal(read_file(tmp_path / "c.png")[0][0], colour)


def test_a_png_that_is_really_a_jpeg_still_opens(tmp_path):
    pixels = _image(tmp_path / "x.jpg")
    (tmp_path / "x.jpg").rename(tmp_path / "x.png")
    assert read_file(tmp_path / "x.png")[0][0].shape == pixels.shape


@pytest.mark.parametrize("shape_dtype", [((90, 130), np.uint8), ((90, 130, 3), np.uint8),
                                         ((90, 130, 4), np.uint8), ((90, 130), np.uint16)])  # fmt: skip
def test_big_pngs_decode_straight_to_numpy_with_the_same_pixels(tmp_path, monkeypatch, shape_dtype):
    pytest.importorskip("imagecodecs")
    shape, dtype = shape_dtype
    pixels = np.random.default_rng(3).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    monkeypatch.setattr(pil_images, "BAND_COPY_BYTES", 100)
    with Image.open(tmp_path / "a.png") as image:
        assert pil_images.decode_direct(tmp_path / "a.png", image) is not None  # the direct path ran
    data = read_file(tmp_path / "a.png")[0][0]
    assert data.dtype == dtype
    np.testing.assert_array_equal(data, pixels)


def test_a_big_palette_png_still_becomes_colours(tmp_path, monkeypatch):
    indexed = Image.fromarray(np.random.default_rng(4).integers(0, 4, (60, 80), dtype=np.uint8), mode="P")
    indexed.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255])
    indexed.save(tmp_path / "p.png")
    monkeypatch.setattr(pil_images, "BAND_COPY_BYTES", 100)
    data = read_file(tmp_path / "p.png")[0][0]
    assert data.shape == (60, 80, 3)
    assert {tuple(c) for c in data.reshape(-1, 3).tolist()} <= {(255, 0, 0), (0, 255, 0), (0, 0, 255),
                                                               (255, 255, 255)}  # fmt: skip
