"""Large datasets: the counts SQLite keeps equal a recount from the rows (after saves, split changes,
deletes, migration and concurrent writers), pages are complete and ordered, and reading streams."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest

from napari_fracto.dataset import Dataset, Status
from napari_fracto.dataset import index as index_mod
from napari_fracto.dataset import store as store_mod
from napari_fracto.dataset.tools import info
from napari_fracto.findings import Box, Finding

LABELS = ["mist", "hackle", "cleavage facets", "river patterns"]


def recount(ds: Dataset) -> dict[tuple[str, str, str], int]:
    """What the counts must be, from the rows through the public API (latest review per task)."""
    out: Counter[tuple[str, str, str]] = Counter()
    rows = ds._conn.execute("SELECT image_id, task, split FROM images").fetchall()
    reviews = 0
    for image_id, image_task, split in rows:
        history = ds.history(image_id)
        reviews += len(history)
        tasks = {r.task for r in history} | ({image_task} if image_task else set())
        out[("", "total", "images")] += 1
        if not tasks:
            out[("", "total", "untasked")] += 1
        for task in tasks:
            latest = ds.latest_review(image_id, task)
            status = latest.status.value if latest else "unlabelled"
            out[(task, "status", status)] += 1
            out[(task, "split", split or "none")] += 1
            if latest is not None and latest.status in (Status.REVIEWED, Status.UNREVIEWED):
                for label in latest.labels:
                    out[(task, f"label:{status}", label)] += 1
                out[(task, "boxes", "")] += sum(f.box is not None for f in latest.corrected)
    out[("", "total", "reviews")] = reviews
    return {k: v for k, v in out.items() if v}


def _findings(rng: random.Random) -> list[Finding]:
    return [
        Finding(rng.choice(LABELS), box=Box(0, 0, 3, 3) if rng.random() < 0.5 else None)
        for _ in range(rng.randrange(0, 4))
    ]


def _busy(ds: Dataset, rng: random.Random, n_images: int = 30, n_saves: int = 80) -> list[str]:
    """Images added with and without a task, reviews of two tasks in every status, split changes."""
    ids = [
        ds.add_image(np.full((4, 5), i, np.uint8), task=rng.choice(["fracture", "ptychography", None]))
        for i in range(n_images)
    ]
    for _ in range(n_saves):
        ds.save_review(
            rng.choice(ids),
            rng.choice(["fracture", "fracture", "ptychography"]),
            _findings(rng),
            status=rng.choice(["reviewed", "unreviewed", "skipped"]),
        )
        if rng.random() < 0.2:
            ds.set_split(rng.sample(ids, 3), rng.choice(["train", "val", "test", None]))
    return ids


def test_counts_equal_a_recount_after_saves_splits_and_deletes(tmp_path):
    rng = random.Random(0)
    with Dataset.create(tmp_path / "ds") as ds:
        ids = _busy(ds, rng)
        assert index_mod.stored_counts(ds._conn) == recount(ds)
        # the one delete the schema allows: an image nobody reviewed (reviews are append-only)
        lonely = [i for i in ids if not ds.history(i)] + [ds.add_image(np.ones((3, 3)), task="fracture")]
        ds.set_split(lonely[-1:], "test")
        with store_mod.transaction(ds._conn):
            ds._conn.execute("DELETE FROM images WHERE image_id = ?", (lonely[-1],))
        assert index_mod.stored_counts(ds._conn) == recount(ds)
        # a raw write outside the API is counted too (the triggers live in the database)
        with store_mod.transaction(ds._conn):
            ds._conn.execute("UPDATE images SET task = 'ptychography' WHERE image_id = ?", (ids[0],))
        assert index_mod.stored_counts(ds._conn) == recount(ds)
        assert ds.status_counts("fracture") == {
            s: ds.item_count("fracture", s) for s in Status
        }  # the two readings of the counts agree
        assert sum(ds.status_counts().values()) >= len(ds)


def test_info_reads_the_counts_and_matches_the_items(tmp_path):
    rng = random.Random(1)
    with Dataset.create(tmp_path / "ds") as ds:
        _busy(ds, rng, n_images=20, n_saves=40)
        report = info(ds, task="fracture")
        items = list(ds.iter_items(task="fracture"))
        assert sum(report.tasks["fracture"].statuses.values()) == len(items)
        reviewed = Counter(label for i in items if i.status is Status.REVIEWED for label in i.review.labels)
        assert {k: v["reviewed"] for k, v in report.tasks["fracture"].labels.items() if v["reviewed"]} == (
            dict(reviewed)
        )
        assert report.images == len(ds) == 20
        assert report.reviews == 40


V3_IMAGES = 12


def _make_v3(root) -> None:
    """A dataset as napari-fracto wrote it at schema v3 (no index, no counts)."""
    root.mkdir()
    conn = sqlite3.connect(root / "dataset.sqlite")
    conn.row_factory = sqlite3.Row
    store_mod._create_v1(conn)
    store_mod._migrate_1_to_2(conn)
    store_mod._migrate_2_to_3(conn)
    for version in (1, 2, 3):
        conn.execute(
            "INSERT INTO schema_version VALUES (?, '0.1.0', '2025-06-01T00:00:00+00:00', '0.1.0')", (version,)
        )
    conn.execute("INSERT INTO meta VALUES ('name', 'v3 set')")
    for i in range(V3_IMAGES):
        conn.execute(
            "INSERT INTO images (image_id, kind, suffix, shape, dtype, height, width, task, split, added_at)"
            " VALUES (?, 'npy', '.npy', '[4, 4]', 'uint8', 4, 4, ?, ?, '2025-06-01')",
            (f"{i:064x}", "fracture" if i % 4 else None, "train" if i % 3 == 0 else None),
        )
    for i in range(0, V3_IMAGES, 2):
        for status, labels in (("unreviewed", ["mist"]), ("reviewed", ["hackle", "mist"])):
            corrected = json.dumps([{"label": x, "confidence": None, "box": [0, 0, 2, 2]} for x in labels])
            conn.execute(
                "INSERT INTO reviews (image_id, task, status, corrected, created_at) VALUES (?, ?, ?, ?, ?)",
                (f"{i:064x}", "fracture", status if i % 6 else "skipped", corrected, "2025-06-02"),
            )
    conn.execute(
        "INSERT INTO reviews (image_id, task, status, corrected, created_at) VALUES (?, 'fracture', "
        "'reviewed', 'not json', '2025-06-03')",
        (f"{1:064x}",),
    )  # a damaged row is counted as an image without labels, not a failed upgrade
    conn.commit()
    conn.close()


def test_a_v3_dataset_gains_counts_equal_to_a_recount(tmp_path):
    root = tmp_path / "v3"
    _make_v3(root)
    with Dataset.open(root) as ds:
        assert ds.migrated_from == 3
        assert ds.schema_version == store_mod.SCHEMA_VERSION == 4
        stored = index_mod.stored_counts(ds._conn)
        assert stored[("", "total", "images")] == V3_IMAGES
        assert stored[("fracture", "status", "reviewed")] == 5  # 4 of the 6 pairs, and the damaged row
        expected = raw_recount(ds)
        assert stored == expected
        # and it stays right as the upgraded dataset is used
        image_id = ds.add_image(np.full((4, 4), 7, np.uint8), task="fracture")
        ds.save_review(image_id, "fracture", [Finding("mist", box=Box(0, 0, 1, 1))])
        assert (
            index_mod.stored_counts(ds._conn)[("fracture", "boxes", "")]
            == expected[("fracture", "boxes", "")] + 1
        )
        page = ds.item_page("fracture", limit=100)
        assert [i.image_id for i in page][:3] == [f"{k:064x}" for k in range(3)]  # insertion order
    assert (root / "dataset.sqlite.v3.bak").is_file()


def raw_recount(ds: Dataset) -> dict[tuple[str, str, str], int]:
    """A recount over the raw rows (no triggers, no records: a damaged row reads as no findings)."""
    out: Counter[tuple[str, str, str]] = Counter()
    conn = ds._conn
    images = conn.execute("SELECT image_id, task, split FROM images").fetchall()
    out[("", "total", "reviews")] = conn.execute("SELECT COUNT(*) FROM reviews").fetchone()[0]
    for image_id, image_task, split in images:
        out[("", "total", "images")] += 1
        rows = conn.execute(
            "SELECT task, status, corrected FROM reviews WHERE image_id = ? ORDER BY review_id", (image_id,)
        ).fetchall()
        latest = {r[0]: (r[1], r[2]) for r in rows}
        tasks = set(latest) | ({image_task} if image_task else set())
        if not tasks:
            out[("", "total", "untasked")] += 1
        for task in tasks:
            status, corrected = latest.get(task, ("unlabelled", "[]"))
            out[(task, "status", status)] += 1
            out[(task, "split", split or "none")] += 1
            if status in ("reviewed", "unreviewed"):
                try:
                    findings = json.loads(corrected)
                except ValueError:
                    findings = []
                for label in dict.fromkeys(f["label"] for f in findings):
                    out[(task, f"label:{status}", label)] += 1
                out[(task, "boxes", "")] += sum(f.get("box") is not None for f in findings)
    return {k: v for k, v in out.items() if v}


WRITER = textwrap.dedent(
    """
    import random, sys, numpy as np
    from napari_fracto.dataset import Dataset
    from napari_fracto.findings import Finding, Box
    root, seed, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    with Dataset.open(root) as ds:
        ids = [r[0] for r in ds._conn.execute("SELECT image_id FROM images")]
        for i in range(n):
            if rng.random() < 0.3:
                ids.append(ds.add_image(np.full((6, 6), seed * 1000 + i, np.uint16), task="fracture"))
            labels = rng.sample(["mist", "hackle", "river patterns"], rng.randrange(0, 3))
            ds.save_review(rng.choice(ids), "fracture", [Finding(x, box=Box(0, 0, 2, 2)) for x in labels],
                           status=rng.choice(["reviewed", "unreviewed", "skipped"]))
            if rng.random() < 0.2:
                ds.set_split([rng.choice(ids)], rng.choice(["train", "test", None]))
    """
)


def test_concurrent_writers_keep_the_counts_right(tmp_path):
    root = tmp_path / "shared"
    with Dataset.create(root) as ds:
        for i in range(5):
            ds.add_image(np.full((6, 6), i, np.uint8), task="fracture")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(seed), "30"],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        for seed in (1, 2, 3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    with Dataset.open(root) as ds:
        stored = index_mod.stored_counts(ds._conn)
        assert stored[("", "total", "reviews")] == 90
        assert stored == recount(ds)


def test_pages_are_complete_ordered_and_filtered(tmp_path):
    with Dataset.create(tmp_path / "ds") as ds:
        ids = [ds.add_image(np.full((3, 3), i, np.uint8), task="fracture", name=f"n{i}") for i in range(23)]
        ds.add_image(np.full((3, 3), 99, np.uint8), task="ptychography")  # another task: never listed
        for i in ids[::3]:
            ds.save_review(i, "fracture", [Finding("mist")])
        ds.save_review(ids[1], "fracture", [], status="skipped")

        by_offset = [x for start in range(0, 30, 5) for x in ds.item_page("fracture", offset=start, limit=5)]
        walked = list(ds.iter_item_statuses("fracture", page=4))
        assert [x.image_id for x in by_offset] == [x.image_id for x in walked] == ids
        assert [x.name for x in walked[:2]] == ["n0", "n1"]
        assert [x.order for x in walked] == sorted(x.order for x in walked)
        reviewed = list(ds.iter_item_statuses("fracture", status="reviewed", page=2))
        assert [x.image_id for x in reviewed] == ids[::3]
        todo = ds.item_page("fracture", status=[Status.UNLABELLED, Status.UNREVIEWED], limit=100)
        assert [x.image_id for x in todo] == [i for k, i in enumerate(ids) if k % 3 and k != 1]
        assert ds.item_count("fracture") == 23
        assert ds.item_count("fracture", "reviewed") == 8
        assert ds.item_position("fracture", walked[10].order) == 10
        # an explicit ordering (a ranking computed elsewhere): its order, unknown ids left out
        ranked = [ids[5], "f" * 64, ids[0], ids[1]]
        got = ds.item_statuses("fracture", ranked)
        assert [(x.image_id, x.status) for x in got] == [
            (ids[5], Status.UNLABELLED),
            (ids[0], Status.REVIEWED),
            (ids[1], Status.SKIPPED),
        ]


def test_iter_items_streams_every_row_in_order_whatever_the_page(tmp_path):
    from napari_fracto.dataset.export import export_csv

    with Dataset.create(tmp_path / "ds") as ds:
        ids = [ds.add_image(np.full((3, 3), i, np.uint8), task="fracture") for i in range(13)]
        for i in ids:
            ds.save_review(i, "fracture", [Finding("mist", box=Box(0, 0, 2, 2)), Finding("hackle")])
        small = [(i.image_id, i.review.review_id) for i in ds.iter_items(task="fracture", page=3)]
        whole = [(i.image_id, i.review.review_id) for i in ds.iter_items(task="fracture", page=10_000)]
        assert small == whole
        assert [s[0] for s in small] == ids
        assert export_csv(ds, tmp_path / "out.csv") == 26  # every finding of every image
        lines = (tmp_path / "out.csv").read_text().splitlines()
        assert len(lines) == 27
        assert {line.split(",")[0] for line in lines[1:]} == set(ids)


@pytest.mark.parametrize("broken", ["counts"])
def test_recount_repairs_counts_a_tool_broke(tmp_path, broken):
    with Dataset.create(tmp_path / "ds") as ds:
        _busy(ds, random.Random(2), n_images=8, n_saves=12)
        right = index_mod.stored_counts(ds._conn)
        with store_mod.transaction(ds._conn):
            ds._conn.execute(f"UPDATE {broken} SET n = n + 5")
        assert index_mod.stored_counts(ds._conn) != right
        with store_mod.transaction(ds._conn):
            index_mod.recount(ds._conn)
        assert index_mod.stored_counts(ds._conn) == right == recount(ds)


def test_validate_names_unused_image_files_folder_by_folder(tmp_path):
    from napari_fracto.dataset.tools import validate

    with Dataset.create(tmp_path / "ds") as ds:
        kept = [ds.add_image(np.full((3, 3), i, np.uint8), task="fracture") for i in range(5)]
        stray = ds.blobs.root / kept[0][:2] / ("ab" * 32 + ".npy")  # beside a stored image
        stray.write_bytes(b"not named by any row")
        other = ds.blobs.root / "zz" / "left.png"  # a folder no id starts with
        other.parent.mkdir()
        other.write_bytes(b"x")
        warnings = [str(p) for p in validate(ds) if p.severity == "warning"]
        assert len(warnings) == 2
        assert any(str(stray) in w for w in warnings)
        assert any(str(other) in w for w in warnings)
