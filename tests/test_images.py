"""The CLI and Review read a file through one module, so what `analyze` analysed is what Review shows.

For each kind of file (a stack TIFF, a complex .npy, a Ptychodus .h5 product, an RGB PNG) the results of
`analyze` are opened in Review: every record must land on a stored image holding the array analysed
(complex data is kept whole by Review, so its phase is compared), named as the record names it.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from napari_fracto.batch import analysis_inputs
from napari_fracto.dataset import Dataset
from napari_fracto.io.images import file_planes, image_data
from napari_fracto.review.sources import add_file, collect_results

PRODUCT = "ptychography/ptychi-sim/g_raster_grid_product.h5"


@pytest.fixture
def files(tmp_path, shared_data):
    folder = tmp_path / "images"
    folder.mkdir()
    import tifffile

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 65535, (3, 24, 20), dtype=np.uint16)
    tifffile.imwrite(folder / "stack.tif", stack, photometric="minisblack")
    obj = np.exp(1j * rng.normal(0, 0.5, (20, 24))).astype(np.complex64)
    np.save(folder / "object.npy", obj)
    Image.fromarray(rng.integers(0, 255, (18, 22, 3), dtype=np.uint8), "RGB").save(folder / "rgb.png")
    shutil.copy(shared_data / PRODUCT, folder / "product.h5")
    # a container of several arrays (a complex object beside a real stack) and a 4-D stack
    np.savez(folder / "arrays.npz", obj=obj[:16], other=rng.random((2, 8, 9)).astype(np.float32))
    import h5py

    with h5py.File(folder / "volume.h5", "w") as f:
        f["data"] = rng.random((2, 3, 8, 9)).astype(np.float32)
    return folder


def _record(source: str) -> dict:
    return {"task": "ptychography", "source": source, "findings": [], "raw_text": "{}", "model": "m"}


def test_review_stores_what_the_cli_analysed_under_the_name_of_the_record(tmp_path, files):
    paths = sorted(files.iterdir())
    inputs = [item for path in paths for item in analysis_inputs(path)]
    assert {item.source.removeprefix(f"{files}/") for item in inputs} == {
        "arrays.npz [arrays obj phase]",
        "arrays.npz [arrays other] [plane 0]",
        "arrays.npz [arrays other] [plane 1]",
        *(f"volume.h5 [plane {t}, {z}]" for t in range(2) for z in range(3)),
        "object.npy [object phase]",
        "product.h5",
        "rgb.png",
        "stack.tif [plane 0]",
        "stack.tif [plane 1]",
        "stack.tif [plane 2]",
    }
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(_record(item.source)) + "\n" for item in inputs))
    with Dataset.create(tmp_path / "ds") as ds:
        collected = collect_results(ds, results)
        assert collected.problems == []
        assert len(collected.entries) == len(inputs)
        for item, entry in zip(inputs, collected.entries, strict=True):
            # Review names the file, not the complex part it keeps whole.
            assert entry.name == item.source.removeprefix(f"{files}/").removesuffix(" [object phase]")
            stored = ds.image_array(entry.image_id)
            if np.iscomplexobj(stored) and not np.iscomplexobj(item.array):
                stored = np.angle(stored)
            np.testing.assert_array_equal(stored, np.asarray(item.array))
            assert stored.dtype == np.asarray(item.array).dtype


def test_a_folder_opened_in_review_gives_the_planes_the_cli_analyses(tmp_path, files):
    with Dataset.create(tmp_path / "ds") as ds:
        for path in sorted(files.iterdir()):
            entries = add_file(ds, path, "ptychography")
            planes = file_planes(path)
            assert len(entries) == len(planes)
            for entry, plane in zip(entries, planes, strict=True):
                stored = ds.image_array(entry.image_id)
                if np.iscomplexobj(stored) and not np.iscomplexobj(plane.array):
                    stored = np.angle(stored)
                np.testing.assert_array_equal(stored, np.asarray(plane.array))


def test_a_product_plane_carries_its_scan_and_single_images_are_stored_byte_for_byte(tmp_path, files):
    (plane,) = file_planes(files / "product.h5")
    assert plane.geometry is not None
    assert plane.geometry.positions_px is not None
    assert plane.complex_part == "phase"
    assert np.iscomplexobj(plane.array)
    np.testing.assert_array_equal(image_data(files / "product.h5"), plane.array)
    with Dataset.create(tmp_path / "ds") as ds:
        for name in ("rgb.png", "object.npy"):
            (entry,) = add_file(ds, files / name, "fracture")
            assert ds.image_path(entry.image_id).read_bytes() == (files / name).read_bytes()
