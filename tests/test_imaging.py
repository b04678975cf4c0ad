"""What the model is shown: every dtype normalised the same way, and huge images without huge memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from napari_fracto.findings import Box
from napari_fracto.imaging import (
    ImageError,
    block_mean,
    crop,
    displayed_plane,
    fit_to_token_budget,
    prepare_model_image,
    to_model_rgb,
    token_grid,
)


def _ramp(dtype, lo, hi, shape=(20, 30)):
    return np.linspace(lo, hi, shape[0] * shape[1]).reshape(shape).astype(dtype)


def test_16bit_uses_the_full_8bit_range_and_keeps_order():
    # A dim 16-bit SEM image (values 1000-1200 of 65535) must not come out nearly black.
    img = _ramp(np.uint16, 1000, 1200)
    rgb = to_model_rgb(img)
    assert rgb.shape == (20, 30, 3)
    assert rgb.dtype == np.uint8
    assert rgb[..., 0].min() <= 2
    assert rgb[..., 0].max() >= 253
    assert np.all(np.diff(rgb[..., 0].ravel().astype(int)) >= 0)  # monotone ramp stays monotone
    assert np.array_equal(rgb[..., 0], rgb[..., 2])  # grey


def test_percentile_stretch_ignores_a_few_hot_pixels():
    img = _ramp(np.float32, 0, 1, (100, 100))
    img[0, 0] = 1e6  # one saturated detector pixel
    rgb = to_model_rgb(img)
    # Without the robust stretch the whole image would be black next to the hot pixel.
    assert rgb[50, :, 0].mean() > 100


def test_uint8_is_shown_as_the_operator_saw_it():
    img = _ramp(np.uint8, 40, 90)
    rgb = to_model_rgb(img)
    assert np.array_equal(rgb[..., 1], img)


def test_float_nan_and_inf_are_ignored_and_shown_black():
    img = _ramp(np.float64, -3, 5)
    img[2, :] = np.nan
    img[3, 4] = np.inf
    rgb = to_model_rgb(img)
    assert np.all(rgb[2] == 0)
    assert rgb[3, 4, 0] == 0
    assert rgb[-1, -1, 0] == 255  # the stretch came from the finite pixels, not poisoned by NaN


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((8, 8), np.nan), "NaN"),
        (np.full((8, 8), 7.0), "constant"),
        (np.full((8, 8), 3, dtype=np.uint8), "constant"),
        (np.zeros((0, 5)), "empty"),
        (np.zeros((5, 8, 8), dtype=np.uint16), "stack of 5 images"),
        (np.zeros((2, 3, 8, 8)), "stack of 6 images"),
        (np.arange(5.0), "2-D"),
        (np.array([["a", "b"], ["c", "d"]]), "dtype"),
        (None, "select an image"),
    ],
)
def test_unusable_inputs_give_clear_errors(array, message):
    with pytest.raises(ImageError, match=message):
        to_model_rgb(array)


def test_complex_phase_and_amplitude_differ_as_expected():
    yy, xx = np.mgrid[0:32, 0:32]
    amplitude = 1 + yy / 31  # varies along rows only
    phase = (xx / 31 - 0.5) * 2  # varies along columns only
    field = (amplitude * np.exp(1j * phase)).astype(np.complex64)
    ph = to_model_rgb(field)[..., 0].astype(int)
    amp = to_model_rgb(field, complex_part="amplitude")[..., 0].astype(int)
    assert np.ptp(ph[:, 5]) == 0
    assert np.ptp(ph[5, :]) > 200
    assert np.ptp(amp[5, :]) == 0
    assert np.ptp(amp[:, 5]) > 200
    with pytest.raises(ImageError, match="complex_part"):
        to_model_rgb(field, complex_part="real")  # type: ignore[arg-type]


def test_bool_mask_is_black_and_white():
    mask = np.zeros((10, 10), dtype=bool)
    mask[:5] = True
    rgb = to_model_rgb(mask)
    assert set(np.unique(rgb)) == {0, 255}
    assert np.all(rgb[:5] == 255)


def test_rgba_drops_alpha_and_singleton_axes_are_squeezed():
    rgba = np.zeros((6, 7, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 1] = 10
    rgba[..., 3] = 0  # fully transparent: alpha must not matter
    assert np.array_equal(to_model_rgb(rgba), rgba[..., :3])
    img = _ramp(np.uint16, 0, 500, (6, 7))
    expected = to_model_rgb(img)
    assert np.array_equal(to_model_rgb(img[None]), expected)
    assert np.array_equal(to_model_rgb(img[..., None]), expected)


def test_16bit_rgb_keeps_colour_balance():
    rgb16 = np.zeros((8, 8, 3), dtype=np.uint16)
    rgb16[..., 0] = np.linspace(0, 60000, 64).reshape(8, 8)
    rgb16[..., 2] = 30000
    out = to_model_rgb(rgb16)
    assert out[..., 0].max() == 255
    assert 100 < out[0, 0, 2] < 160  # blue stays mid-level: one stretch for all channels
    assert np.all(out[..., 1] == 0)


@pytest.mark.parametrize(
    ("width", "height", "budget"),
    [(1280, 1280, 256), (4000, 1000, 100), (50, 40, 1024), (100000, 10, 64), (33, 31, 1)],
)
def test_token_grid_respects_budget_and_aspect(width, height, budget):
    cols, rows = token_grid(width, height, budget)
    assert 1 <= cols * rows <= budget
    if width * height <= budget * 32 * 32:
        assert cols * 32 <= width + 32
        assert rows * 32 <= height + 32
    if min(cols, rows) > 4:
        assert abs(cols / rows - width / height) / (width / height) < 0.2


def test_fit_to_token_budget_sizes_are_patch_multiples():
    rgb = to_model_rgb(_ramp(np.uint16, 0, 4000, (1000, 1500)))
    image = fit_to_token_budget(rgb, 256)
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    w, h = image.size
    assert w % 32 == 0
    assert h % 32 == 0
    assert (w // 32) * (h // 32) <= 256
    assert w > h
    with pytest.raises(ImageError, match="at least 1"):
        fit_to_token_budget(rgb, 0)
    with pytest.raises(ImageError, match="uint8"):
        fit_to_token_budget(np.zeros((4, 4)), 16)


def test_prepare_model_image_matches_full_resolution_path():
    # Block-averaging first must give the same picture (up to resampling) as normalising in full.
    yy, xx = np.mgrid[0:2048, 0:1536]
    img = (np.sin(xx / 200) * 1000 + yy + 5000).astype(np.uint16)
    fast = np.asarray(prepare_model_image(img, 64)).astype(int)
    slow = np.asarray(fit_to_token_budget(to_model_rgb(img), 64)).astype(int)
    assert fast.shape == slow.shape
    assert np.abs(fast - slow).mean() < 4


def test_block_mean_handles_ragged_edges_and_nan():
    a = np.arange(25, dtype=np.float32).reshape(5, 5)
    a[0, 0] = np.nan
    out = block_mean(a, 2)
    assert out.shape == (3, 3)
    assert out[0, 0] == pytest.approx((1 + 5 + 6) / 3)
    assert out[2, 2] == 24  # the 1x1 corner block
    u8 = block_mean(np.full((4, 4), 9, dtype=np.uint8), 2)
    assert u8.dtype == np.uint8
    assert np.all(u8 == 9)


def test_block_mean_of_phase_averages_the_field_not_wrapped_angles():
    # Phase near +-pi: averaging angles would give ~0, averaging the field keeps ~pi.
    phase = np.where(np.indices((4, 4)).sum(0) % 2 == 0, np.pi - 0.05, -np.pi + 0.05)
    out = block_mean(np.exp(1j * phase), 2)
    assert np.all(np.abs(np.abs(out) - np.pi) < 0.1)


def test_huge_uint16_memmap_stays_within_memory_bound(tmp_path):
    # 16k x 16k uint16 = 512 MB on disk; preparing it must not copy it (float64 would be 2 GB).
    n = 16384
    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(n, n))
    ramp = (np.arange(n, dtype=np.uint16) // 16)[None, :]  # 0-1023 left to right
    for r in range(0, n, 2048):
        big[r : r + 2048] = ramp
    big.flush()
    del big
    data = np.load(path, mmap_mode="r")
    tracemalloc.start()
    try:
        image = prepare_model_image(data, 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert image.size == (1024, 1024)
    assert peak < 200 * 2**20, f"peak Python allocation {peak / 2**20:.0f} MB"
    # The horizontal ramp survives: left dark, right bright.
    grey = np.asarray(image)[..., 0]
    assert grey[:, :50].mean() < 60
    assert grey[:, -50:].mean() > 190


def test_displayed_plane_picks_the_slider_position():
    stack = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    assert np.array_equal(displayed_plane(stack, (2, 0, 0)), stack[2])
    assert np.array_equal(displayed_plane(stack, (7, 1, 0, 0)), stack[1])  # viewer has an extra axis
    assert np.array_equal(displayed_plane(stack, (99, 0, 0)), stack[2])  # clamped
    rgb_stack = np.zeros((2, 4, 5, 3))
    assert displayed_plane(rgb_stack, (1, 0, 0), rgb=True).shape == (4, 5, 3)
    plane = np.zeros((4, 5))
    assert displayed_plane(plane, (0, 0)) is plane
    assert displayed_plane([stack, stack[:, ::2, ::2]], (1, 0, 0)).shape == (4, 5)  # multiscale: level 0


def test_crop_clips_to_the_image():
    img = np.arange(100).reshape(10, 10)
    assert np.array_equal(crop(img, Box(2, 3, 5, 7)), img[3:7, 2:5])
    assert crop(img, Box(-5, -5, 3.2, 20)).shape == (10, 4)
    with pytest.raises(ImageError, match="does not overlap"):
        crop(img, Box(20, 20, 30, 30))


def test_large_rgb_image_is_block_averaged_to_the_budget():
    """An RGB picture (e.g. a PNG contact sheet) larger than the budget shrinks without losing its colour."""
    rgb = np.zeros((1442, 1488, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red everywhere
    image = prepare_model_image(rgb, 64)
    pixels = np.asarray(image)
    assert pixels.shape[0] * pixels.shape[1] <= 64 * 32 * 32
    assert pixels[..., 0].mean() > 150
    assert pixels[..., 1].max() < 30
