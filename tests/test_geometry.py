"""Geometry: grid <-> pixels, tiles, and rotations that must match numpy.rot90 exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_fracto.findings import Box, Finding
from napari_fracto.geometry import (
    GRID,
    Region,
    grid_to_pixels,
    iou,
    merge_tile_findings,
    pixels_to_grid,
    plan_tiles,
    rotate_box,
)


def test_grid_box_maps_to_pixels_of_whole_image():
    box = grid_to_pixels(Box(100, 250, 500, 1000), Region.full(2000, 800), 2000, 800)
    assert box == Box(200, 200, 1000, 800)


def test_grid_box_of_a_tile_is_offset_into_the_image():
    tile = Region(512, 256, 256, 256)
    box = grid_to_pixels(Box(0, 0, 500, 1000), tile, 1024, 1024)
    assert box == Box(512, 256, 640, 512)


def test_out_of_range_grid_values_are_clamped_and_corners_ordered():
    box = grid_to_pixels(Box(1010, -20, 500, 1003), Region.full(100, 100), 100, 100)
    assert box == Box(50, 0, 100, 100)


def test_box_is_clamped_to_the_image_when_the_region_sticks_out():
    box = grid_to_pixels(Box(0, 0, 1000, 1000), Region(50, 50, 100, 100), 120, 120)
    assert box == Box(50, 50, 120, 120)


@pytest.mark.parametrize("grid_box", [Box(400, 400, 400, 900), Box(1200, 0, 1500, 500), Box(0, 0, 0.5, 1000)])
def test_degenerate_boxes_give_none(grid_box):
    assert grid_to_pixels(grid_box, Region.full(1000, 1000), 1000, 1000) is None


def test_pixels_to_grid_inverts_grid_to_pixels():
    region = Region(100, 40, 640, 480)
    pixel_box = Box(164, 88, 420, 280)
    grid_box = pixels_to_grid(pixel_box, region)
    assert grid_box == Box(100, 100, 500, 500)
    assert grid_to_pixels(grid_box, region, 2000, 2000) == pixel_box


def test_pixels_to_grid_clamps_parts_outside_the_region():
    assert pixels_to_grid(Box(-10, 50, 50, 300), Region.full(100, 200)) == Box(0, 250, 500, 1000)


def test_pixels_to_grid_rejects_empty_region():
    with pytest.raises(ValueError, match="no area"):
        pixels_to_grid(Box(0, 0, 1, 1), Region(0, 0, 0, 10))


def _covered(tiles, width, height):
    mask = np.zeros((height, width), dtype=int)
    for t in tiles:
        mask[t.y0 : t.y0 + t.height, t.x0 : t.x0 + t.width] += 1
    return mask


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"),
    [(1280, 960, 512, 64), (512, 512, 512, 0), (100, 3000, 448, 32), (1000, 1000, 300, 0), (7, 5, 4, 3)],
)
def test_tiles_cover_the_image_with_at_least_the_overlap(width, height, tile, overlap):
    tiles = plan_tiles(width, height, tile, overlap)
    assert _covered(tiles, width, height).min() >= 1
    for t in tiles:
        assert 0 <= t.x0 <= t.x0 + t.width <= width
        assert 0 <= t.y0 <= t.y0 + t.height <= height
        assert (t.width, t.height) == (min(tile, width), min(tile, height))
    for starts, extent in (
        ({t.x0 for t in tiles}, min(tile, width)),
        ({t.y0 for t in tiles}, min(tile, height)),
    ):
        for a, b in itertools.pairwise(sorted(starts)):
            assert extent - (b - a) >= overlap


def test_small_image_is_one_tile():
    assert plan_tiles(300, 200, 512, 64) == [Region(0, 0, 300, 200)]


@pytest.mark.parametrize(
    ("args", "message"),
    [((0, 10, 4, 0), "no area"), ((10, 10, 0, 0), "at least 1"), ((10, 10, 4, 4), "overlap")],
)
def test_bad_tiling_arguments_are_explained(args, message):
    with pytest.raises(ValueError, match=message):
        plan_tiles(*args)


def _marked_bbox(array):
    rows, cols = np.nonzero(array)
    return Box(cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


@pytest.mark.parametrize("k", [-3, -2, -1, 0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize(("width", "height", "box"), [(13, 7, Box(2, 1, 6, 4)), (6, 11, Box(0, 5, 3, 11))])
def test_rotate_box_matches_numpy_rot90(k, width, height, box):
    image = np.zeros((height, width), dtype=np.uint8)
    image[int(box.y1) : int(box.y2), int(box.x1) : int(box.x2)] = 1
    rotated = np.rot90(image, k)
    assert rotate_box(box, k, width, height) == _marked_bbox(rotated)


def test_four_quarter_turns_give_the_original_box():
    box = Box(1.5, 2.25, 7, 9)
    assert rotate_box(box, 4, 20, 10) == box


def test_iou():
    assert iou(Box(0, 0, 10, 10), Box(0, 0, 10, 10)) == 1
    assert iou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou(Box(0, 0, 10, 10), Box(20, 20, 30, 30)) == 0
    assert iou(Box(0, 0, 0, 10), Box(0, 0, 0, 10)) == 0


def test_merge_tile_findings_removes_the_same_feature_seen_in_two_tiles():
    findings = [
        Finding("cleavage facets", 0.6, Box(480, 100, 560, 180)),  # seen whole in tile 1
        Finding("cleavage facets", 0.8, Box(482, 102, 562, 181)),  # same facet in tile 2
        Finding("cleavage facets", 0.5, Box(512, 100, 560, 180)),  # cut by tile 2's left edge
        Finding("river patterns", 0.7, Box(480, 100, 560, 180)),  # another label: kept
        Finding("cleavage facets", 0.9, Box(10, 10, 50, 50)),  # elsewhere: kept
        Finding("equiaxed dimples", 0.4),
        Finding("equiaxed dimples", 0.7),
        Finding("river patterns", 0.9),  # label-only, but the label also has a box
    ]
    merged = merge_tile_findings(findings)
    assert merged == [
        Finding("cleavage facets", 0.8, Box(482, 102, 562, 181)),
        Finding("river patterns", 0.7, Box(480, 100, 560, 180)),
        Finding("cleavage facets", 0.9, Box(10, 10, 50, 50)),
        Finding("equiaxed dimples", 0.7),
    ]


def test_grid_constant():
    assert GRID == 1000
