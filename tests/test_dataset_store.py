"""The corrections dataset's storage: lossless images, kept history, crash safety, concurrency, versions."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from napari_fracto.dataset import Dataset, DatasetError, DatasetVersionError, Decision, Status
from napari_fracto.dataset import store as store_mod
from napari_fracto.findings import AnalysisContext, AnalysisResult, Box, Finding


@pytest.fixture
def ds(tmp_path):
    with Dataset.create(tmp_path / "ds", name="test set") as dataset:
        yield dataset


def _prediction(findings, task="fracture") -> AnalysisResult:
    return AnalysisResult(
        task=task,
        findings=list(findings),
        raw_text='{"labels": []}',
        backend="openai",
        model="qwen3-vl-8b",
        adapter="adapters/run3",
        prompt_version="1",
        vocabulary_version="1.0",
        seconds=0.5,
        image_shape=(16, 20),
        context=AnalysisContext(material="Ti-6Al-4V"),
        advice=["Enable position correction"],
    )


def test_complex_array_round_trips_losslessly_and_is_stored_once(ds):
    rng = np.random.default_rng(0)
    obj = (rng.normal(size=(12, 10)) + 1j * rng.normal(size=(12, 10))).astype(np.complex64)
    image_id = ds.add_image(obj, task="ptychography")
    again = ds.add_image(obj.copy())
    back = ds.image_array(image_id)
    assert again == image_id
    assert len(ds) == 1
    assert back.dtype == np.complex64
    assert np.array_equal(back, obj)
    rec = ds.image(image_id)
    assert (rec.height, rec.width, rec.kind, rec.task) == (12, 10, "npy", "ptychography")
    assert ds.image_path(image_id).is_relative_to(ds.root)


def test_image_file_kept_byte_for_byte(ds, shared_data):
    src = shared_data / "fractography" / "ceramic-sem" / "s1_1.jpg"
    image_id = ds.add_image(src)
    assert ds.image_path(image_id).read_bytes() == src.read_bytes()
    rec = ds.image(image_id)
    assert (rec.width, rec.height, rec.original_name) == (1280, 1280, "s1_1.jpg")
    assert ds.image_array(image_id).shape[:2] == (1280, 1280)


def test_saving_again_keeps_history_and_latest_is_current(ds):
    image_id = ds.add_image(np.arange(20 * 16, dtype=np.uint16).reshape(16, 20))
    predicted = [Finding("cleavage facets", 0.9, Box(1, 2, 10, 12)), Finding("equiaxed dimples", 0.4)]
    first = ds.save_prediction(image_id, _prediction(predicted))
    second = ds.save_review(
        image_id,
        "fracture",
        [Finding("cleavage facets", box=Box(2, 2, 11, 12)), Finding("river patterns")],
        prediction=_prediction(predicted),
        decisions=["edited", "rejected"],
        reviewer="Ada",
        notes="dimples were pores",
    )
    history = ds.history(image_id)
    assert [r.review_id for r in history] == [first.review_id, second.review_id]
    assert history[0].status is Status.UNREVIEWED
    latest = ds.latest_review(image_id)
    assert latest == second
    assert latest.labels == ["cleavage facets", "river patterns"]
    assert latest.decisions == (Decision.EDITED, Decision.REJECTED)
    assert latest.predicted[0].box == Box(1, 2, 10, 12)
    assert (latest.backend, latest.model, latest.adapter, latest.prompt_version) == (
        "openai", "qwen3-vl-8b", "adapters/run3", "1",
    )  # fmt: skip
    assert latest.context.material == "Ti-6Al-4V"
    assert latest.advice == ("Enable position correction",)
    assert latest.reviewer == "Ada"
    assert latest.created_at.endswith("+00:00")
    [item] = ds.iter_items()
    assert item.status is Status.REVIEWED
    assert item.review == second


def test_reviews_cannot_be_overwritten_even_with_sql(ds):
    image_id = ds.add_image(np.eye(4))
    ds.save_review(image_id, "fracture", [Finding("mist")])
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        ds._conn.execute("UPDATE reviews SET corrected = '[]'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        ds._conn.execute("DELETE FROM reviews")


def test_bad_input_gives_actionable_errors(ds, tmp_path):
    image_id = ds.add_image(np.zeros((4, 4)))
    with pytest.raises(DatasetError, match="add it with add_image"):
        ds.save_review("0" * 64, "fracture", [])
    with pytest.raises(DatasetError, match="x2 < x1"):
        ds.save_review(image_id, "fracture", [Finding("mist", box=Box(5, 0, 1, 3))])
    with pytest.raises(DatasetError, match="one accept/reject"):
        ds.save_review(image_id, "fracture", [], prediction=_prediction([Finding("mist")]), decisions=[])
    with pytest.raises(DatasetError, match="unknown review status"):
        ds.save_review(image_id, "fracture", [], status="done")
    with pytest.raises(DatasetError, match="object array"):
        ds.add_image(np.array([[None, 1], [2, 3]], dtype=object))
    with pytest.raises(DatasetError, match="not found"):
        ds.add_image(tmp_path / "nope.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match=r"cannot read broken\.png"):
        ds.add_image(broken)
    with pytest.raises(DatasetError, match="already holds a dataset"):
        Dataset.create(ds.root)
    with pytest.raises(DatasetError, match="no dataset at"):
        Dataset.open(tmp_path)
    assert ds.review_count() == 0


def test_iter_items_filters_by_task_split_and_status(ds):
    a = ds.add_image(np.ones((3, 3)) * 1, task="fracture")
    b = ds.add_image(np.ones((3, 3)) * 2, task="fracture")
    c = ds.add_image(np.ones((3, 3)) * 3)
    ds.save_review(a, "fracture", [Finding("mist")])
    ds.save_review(c, "ptychography", [], status="skipped")
    ds.set_split([a, b], "test")
    assert [i.image_id for i in ds.iter_items(task="fracture")] == [a, b]
    assert [i.image_id for i in ds.iter_items(status="unlabelled")] == [b]
    assert [i.image_id for i in ds.iter_items(split="test", status=Status.REVIEWED)] == [a]
    assert ds.status_counts()[Status.SKIPPED] == 1
    with pytest.raises(DatasetError, match="unknown split"):
        ds.set_split([a], "holdout")


def test_reopened_dataset_has_everything(ds):
    image_id = ds.add_image(np.ones((5, 6), dtype=np.float32))
    ds.save_review(image_id, "fracture", [Finding("hackle", 0.5, Box(0, 0, 6, 5))])
    root = ds.root
    ds.close()
    with Dataset.open(root) as again:
        assert again.name == "test set"
        assert again.latest_review(image_id).corrected == (Finding("hackle", 0.5, Box(0, 0, 6, 5)),)


# --- versions -------------------------------------------------------------------------------------


def _make_v0(root):
    """A hand-made database in the v0 (prototype) layout, with one image and two reviews."""
    root.mkdir()
    data = np.arange(12, dtype=np.uint8).reshape(3, 4)
    import io

    buf = io.BytesIO()
    np.save(buf, data)
    from napari_fracto.dataset.blobs import BlobStore

    digest = BlobStore(root / "images").put(buf.getvalue(), ".npy")
    conn = sqlite3.connect(root / "dataset.sqlite")
    conn.executescript(
        """
        CREATE TABLE images (sha256 TEXT PRIMARY KEY, suffix TEXT, shape TEXT, dtype TEXT, added_at TEXT);
        CREATE TABLE reviews (id INTEGER PRIMARY KEY, sha256 TEXT, task TEXT, labels TEXT, reviewer TEXT,
                              created_at TEXT);
        """
    )
    conn.execute(
        "INSERT INTO images VALUES (?, '.npy', '[3, 4]', 'uint8', '2025-01-01T00:00:00+00:00')", (digest,)
    )
    labels_old = json.dumps([{"label": "mist", "confidence": None, "box": None}])
    labels_new = json.dumps([{"label": "hackle", "confidence": None, "box": [0, 0, 2, 2]}])
    conn.execute(
        "INSERT INTO reviews VALUES (1, ?, 'fracture', ?, 'bob', '2025-01-01T00:00:01+00:00')",
        (digest, labels_old),
    )
    conn.execute(
        "INSERT INTO reviews VALUES (2, ?, 'fracture', ?, 'eve', '2025-01-02T00:00:01+00:00')",
        (digest, labels_new),
    )
    conn.commit()
    conn.close()
    return digest, data


def test_old_schema_is_migrated_with_backup(tmp_path):
    root = tmp_path / "old"
    digest, data = _make_v0(root)
    with Dataset.open(root) as ds:
        assert ds.migrated_from == 0
        assert ds.schema_version == store_mod.SCHEMA_VERSION
        assert np.array_equal(ds.image_array(digest), data)
        history = ds.history(digest)
        assert [r.reviewer for r in history] == ["bob", "eve"]
        assert ds.latest_review(digest).corrected == (Finding("hackle", box=Box(0, 0, 2, 2)),)
        assert (ds.image(digest).height, ds.image(digest).width) == (3, 4)
        new_id = ds.add_image(np.zeros((2, 2)))
        ds.save_review(new_id, "fracture", [Finding("mist")])
    assert (root / "dataset.sqlite.v0.bak").is_file()
    with Dataset.open(root) as ds:  # second open: nothing left to migrate
        assert ds.migrated_from is None
        assert len(ds) == 2


def test_newer_schema_says_which_version_to_install(tmp_path):
    with Dataset.create(tmp_path / "new") as ds:
        ds._conn.execute(
            "INSERT INTO schema_version VALUES (99, '7.3.0', '2030-01-01T00:00:00+00:00', '7.3.1')"
        )
    with pytest.raises(DatasetVersionError, match=r"Upgrade napari-fracto to >= 7\.3\.0"):
        Dataset.open(tmp_path / "new")


# --- several processes ----------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from napari_fracto.dataset import Dataset
    from napari_fracto.findings import Finding, Box
    root, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Dataset.open(root) as ds:
        for i in range(n):
            image = np.full((8, 8), i, dtype=np.uint16)
            image[0, 0] = 1000 + (hash(tag) % 1000)
            image_id = ds.add_image(image, name=f"{tag}-{i}")
            ds.save_review(image_id, "fracture", [Finding("mist", box=Box(0, 0, 4, 4))], notes=f"{tag}-{i}")
            print(f"saved {tag}-{i}", flush=True)
    """
)


def _spawn(root, tag, n):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), tag, str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    root = tmp_path / "shared"
    Dataset.create(root).close()
    procs = [_spawn(root, tag, 25) for tag in ("napari", "cli")]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.count("saved") == 25
    with Dataset.open(root) as ds:
        notes = sorted(r["notes"] for r in ds._conn.execute("SELECT notes FROM reviews"))
        assert notes == sorted(f"{t}-{i}" for t in ("napari", "cli") for i in range(25))
        assert len(ds) == 50
        from napari_fracto.dataset.tools import has_errors, validate

        assert not has_errors(validate(ds))


def test_process_killed_mid_save_leaves_every_completed_save(tmp_path):
    root = tmp_path / "killed"
    Dataset.create(root).close()
    proc = _spawn(root, "victim", 100_000)
    completed = []
    deadline = time.monotonic() + 60
    while len(completed) < 40 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        completed.append(line.split()[1])
    proc.send_signal(signal.SIGKILL)  # lands inside the loop: mid add_image or mid save_review
    proc.wait(timeout=30)
    assert len(completed) >= 40, proc.stderr.read()
    with Dataset.open(root) as ds:
        assert ds._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        saved = {r.notes for item in ds.iter_items() for r in ds.history(item.image_id)}
        assert set(completed) <= saved  # every save the process reported is there
        for item in ds.iter_items(status="reviewed"):
            assert item.review.corrected == (Finding("mist", box=Box(0, 0, 4, 4)),)
        image_id = ds.add_image(np.ones((2, 2)))  # and it still takes new saves
        ds.save_review(image_id, "fracture", [])
        from napari_fracto.dataset.tools import validate

        errors = [p for p in validate(ds) if p.severity == "error"]
        assert errors == []


# --- schema v2: preprocessing and evidence of the prediction --------------------------------------

EVIDENCE = {
    "grid_ratio": 28.1,
    "flags": ["Grid artifacts"],
    "disagreements": ["the amplitude spectrum has a peak ..., but the model did not flag Grid artifacts"],
}


def test_review_keeps_the_predictions_preprocessing_and_evidence(ds):
    image_id = ds.add_image(np.zeros((16, 20), dtype=np.float32))
    prediction = _prediction([Finding("No obvious artifacts")], task="ptychography")
    prediction.preprocessing = "cropped to the scanned region; phase ramp removed"
    prediction.evidence = EVIDENCE
    saved = ds.save_review(image_id, "ptychography", [Finding("Grid artifacts")], prediction=prediction)
    assert saved.preprocessing == prediction.preprocessing
    latest = ds.latest_review(image_id)
    assert latest.preprocessing == "cropped to the scanned region; phase ramp removed"
    assert latest.evidence == EVIDENCE
    (item,) = ds.iter_items()
    assert item.review.evidence["flags"] == ["Grid artifacts"]
    # a review without a prediction has none
    ds.save_review(image_id, "ptychography", [Finding("Grid artifacts")])
    assert ds.latest_review(image_id).preprocessing == ""
    assert ds.latest_review(image_id).evidence == {}


def _make_v1(root) -> str:
    """A dataset as napari-fracto wrote it before schema v2 (no preprocessing/evidence columns)."""
    root.mkdir(parents=True)
    conn = sqlite3.connect(root / "dataset.sqlite")
    store_mod._create_v1(conn)
    conn.execute("INSERT INTO schema_version VALUES (1, '0.1.0', '2025-06-01T00:00:00+00:00', '0.1.0')")
    conn.execute("INSERT INTO meta VALUES ('name', 'v1 set')")
    conn.execute(
        "INSERT INTO images (image_id, kind, suffix, shape, dtype, height, width, added_at)"
        " VALUES ('abc', 'npy', '.npy', '[4, 4]', 'float32', 4, 4, '2025-06-01T00:00:00+00:00')"
    )
    conn.execute(
        "INSERT INTO reviews (image_id, task, status, corrected, reviewer, created_at)"
        " VALUES ('abc', 'ptychography', 'reviewed', ?, 'ann', '2025-06-01T00:00:01+00:00')",
        (json.dumps([{"label": "Blurring", "confidence": None, "box": None}]),),
    )
    conn.commit()
    conn.close()
    return "abc"


def test_v1_dataset_gains_the_columns_and_keeps_its_reviews(tmp_path):
    root = tmp_path / "v1"
    image_id = _make_v1(root)
    with Dataset.open(root) as ds:
        assert ds.migrated_from == 1
        assert ds.schema_version == store_mod.SCHEMA_VERSION
        old = ds.latest_review(image_id)
        assert old.labels == ["Blurring"]
        assert old.reviewer == "ann"
        assert (old.preprocessing, old.evidence) == ("", {})
        prediction = _prediction([Finding("Blurring")], task="ptychography")
        prediction.preprocessing = "phase unwrapped"
        prediction.evidence = EVIDENCE
        ds.save_review(image_id, "ptychography", [Finding("Blurring")], prediction=prediction)
        assert [r.preprocessing for r in ds.history(image_id)] == ["", "phase unwrapped"]
        # reviews stay append-only after the ALTER TABLE
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            ds._conn.execute("UPDATE reviews SET evidence = '{}'")
    assert (root / "dataset.sqlite.v1.bak").is_file()


def test_v0_dataset_migrates_through_v1_to_v2(tmp_path):
    root = tmp_path / "old"
    digest, _ = _make_v0(root)
    with Dataset.open(root) as ds:
        assert ds.migrated_from == 0
        versions = [r[0] for r in ds._conn.execute("SELECT version FROM schema_version ORDER BY version")]
        assert versions == [1, 2, 3, 4]
        assert ds.latest_review(digest).evidence == {}
