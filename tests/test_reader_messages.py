"""Files that are broken in ways users meet say what is wrong and what to do (issue 17)."""

from __future__ import annotations

import pickle
import zipfile

import h5py
import numpy as np
import pytest

from napari_fracto.io.readers import ReaderError, read_file


def _external_link(path):
    with h5py.File(path, "w") as f:
        f["object"] = h5py.ExternalLink("missing.h5", "/object")
        f["probe"] = np.ones((1, 1, 4, 4), complex)


def _link_loop(path):
    with h5py.File(path, "w") as f:
        image = f.create_group("entry_1/image_1")
        image["data"] = h5py.SoftLink("/entry_1/image_1/data2")
        image["data2"] = h5py.SoftLink("/entry_1/image_1/data")


def _pickle_member(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("objectGuess.npy", pickle.dumps(np.ones((4, 4))))


def _object_array(path):
    np.savez(path, objectGuess=np.array([{"a": 1}], dtype=object))


@pytest.mark.parametrize(
    ("name", "make", "says"),
    [
        ("ext.h5", _external_link, "external link to another HDF5 file that is missing"),
        ("loop.cxi", _link_loop, "link loop"),
        ("pickled.npz", _pickle_member, "never loaded for safety"),
        ("objects.npz", _object_array, "never opened for safety"),
    ],
)
def test_broken_files_say_what_is_wrong(tmp_path, name, make, says):
    make(tmp_path / name)
    with pytest.raises(ReaderError) as info:
        read_file(tmp_path / name)
    message = str(info.value)
    assert says in message
    assert "Unable to synchronously" not in message
    assert "has no attribute" not in message
