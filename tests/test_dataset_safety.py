"""Datasets that are copied while in use, damaged, foreign, on full disks (issue 17): `dataset backup`,
`dataset doctor`, and one clear DatasetError instead of a traceback."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
import uuid

import numpy as np
import pytest
from PIL import Image

from napari_fracto import __version__
from napari_fracto.dataset import Dataset, DatasetError
from napari_fracto.dataset import cli as dataset_cli
from napari_fracto.dataset.backup import backup
from napari_fracto.dataset.doctor import ORPHANS_DIR, doctor, salvage
from napari_fracto.dataset.store import DB_NAME
from napari_fracto.dataset.tools import has_errors, validate
from napari_fracto.findings import Finding


def _cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="napari-fracto")
    dataset_cli.add_dataset_parser(parser.add_subparsers())
    args = parser.parse_args(["dataset", *map(str, argv)])
    return args.handler(args)


def _reviews(root) -> int:
    with Dataset.open(root) as ds:
        return sum(1 for _ in ds.iter_items())


@pytest.fixture
def small(tmp_path):
    root = tmp_path / "ds"
    with Dataset.create(root) as ds:
        for i in range(3):
            ds.save_review(
                ds.add_image(np.full((8, 8), i, dtype=np.uint8)), "fracture", [Finding("equiaxed dimples")]
            )
    return root


def test_backups_taken_during_writes_are_complete_and_valid(tmp_path, small):
    stop = threading.Event()
    committed: list[int] = []

    def writer():
        with Dataset.open(small) as ds:
            i = 100
            while not stop.is_set():
                image_id = ds.add_image(np.random.default_rng(i).integers(0, 255, (32, 32), dtype=np.uint8))
                ds.save_review(image_id, "fracture", [Finding("equiaxed dimples")])
                committed.append(i)
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        results = []
        for n in range(4):
            time.sleep(0.15)
            before = len(committed) + 3
            summary = backup(small, tmp_path / f"copy{n}")
            results.append((before, summary))
    finally:
        stop.set()
        thread.join()
    assert len(committed) > 4  # the writer really ran during the backups
    for before, summary in results:
        assert summary.missing == ()
        with Dataset.open(summary.dest) as copy:
            assert not has_errors(validate(copy))
            assert sum(1 for _ in copy.iter_items()) >= before  # every review committed before it began


def test_backup_refuses_a_non_empty_destination_and_leaves_no_partial_folder(tmp_path, small):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert _cli("backup", small, tmp_path / "full") == 2
    assert _cli("backup", small, tmp_path / "fresh") == 0
    assert _reviews(tmp_path / "fresh") == 3
    assert not list(tmp_path.glob(".*partial*"))


def test_doctor_cleans_stale_temp_files_and_moves_orphans_but_not_fresh_ones(small):
    store = small / "images" / "ab"
    store.mkdir(exist_ok=True)
    stale_tmp, fresh_tmp = store / ".tmp-old.png", store / ".tmp-new.png"
    orphan = store / ("ab" + "0" * 62 + ".png")
    for path in (stale_tmp, fresh_tmp, orphan):
        path.write_bytes(b"x")
    old = time.time() - 3600
    for path in (stale_tmp, orphan):
        os.utime(path, (old, old))
    report = doctor(small)
    assert not stale_tmp.exists()
    assert fresh_tmp.exists()  # maybe another process's write in progress
    assert (small / ORPHANS_DIR / orphan.name).exists()
    assert len(report.repaired) == 2
    assert any(".tmp-new" in p for p in report.problems)
    with Dataset.open(small) as ds:
        assert not has_errors(validate(ds))


def _corrupt(root, how="header"):
    db = root / DB_NAME
    data = bytearray(db.read_bytes())
    if how == "header":
        data[:100] = os.urandom(100)  # SQLite no longer recognises the file
    else:
        data = data[: len(data) // 2]  # a copy cut short
        data[len(data) // 2 :] = os.urandom(len(data) - len(data) // 2)
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["header", "truncated"])
@pytest.mark.parametrize("command", ["validate", "info", "export", "backup"])
def test_a_corrupt_database_is_a_message_pointing_to_doctor(small, command, how, capsys, tmp_path):
    with Dataset.open(small) as ds:  # enough rows that the damage reaches table pages
        for i in range(40):
            ds.save_review(ds.add_image(np.full((8, 8), 10 + i, dtype=np.uint8)), "fracture", [])
    _corrupt(small, how)
    extra = {"export": [tmp_path / "out.jsonl"], "backup": [tmp_path / "copy"]}.get(command, [])
    assert _cli(command, small, *extra) == 2
    err = capsys.readouterr().err
    assert "dataset doctor" in err
    assert "Traceback" not in err


def test_doctor_reports_a_corrupt_database_with_the_way_out(small, capsys):
    _corrupt(small)
    assert _cli("doctor", small) == 1
    out = capsys.readouterr().out
    assert "corrupt" in out
    assert "backup" in out
    assert "--salvage" in out


def test_salvage_copies_every_readable_row_into_a_valid_dataset(small, tmp_path):
    message = salvage(small, tmp_path / "saved")
    assert "salvaged 3 image(s) and 3 review(s)" in message
    with Dataset.open(tmp_path / "saved") as ds:
        assert not has_errors(validate(ds))
        assert sum(1 for _ in ds.iter_items()) == 3


def test_a_foreign_database_is_named_as_such(tmp_path, capsys):
    root = tmp_path / "other"
    root.mkdir()
    with sqlite3.connect(root / DB_NAME) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.close()
    assert _cli("info", root) == 2
    assert "another program" in capsys.readouterr().err


def test_a_malformed_v0_database_is_a_message_and_stays_unchanged(tmp_path):
    root = tmp_path / "v0"
    root.mkdir()
    with sqlite3.connect(root / DB_NAME) as conn:
        conn.executescript(
            "CREATE TABLE images (sha256 TEXT PRIMARY KEY, suffix TEXT, shape TEXT, dtype TEXT,"
            " added_at TEXT);"
            "CREATE TABLE reviews (id INTEGER PRIMARY KEY, sha256 TEXT, task TEXT, labels TEXT,"
            " reviewer TEXT, created_at TEXT);"
            f"INSERT INTO images VALUES ('{'a' * 64}', '.npy', 'not json', 'uint8', '2025');"
        )
    conn.close()
    with pytest.raises(DatasetError, match="malformed"):
        Dataset.open(root)
    with sqlite3.connect(root / DB_NAME) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert tables == {"images", "reviews"}  # still the v0 layout: the failed upgrade was rolled back


def test_a_newer_schema_never_asks_to_upgrade_to_the_running_version(small):
    with sqlite3.connect(small / DB_NAME) as conn:
        conn.execute(
            "INSERT INTO schema_version VALUES (99, ?, '2026', ?)", (__version__, f"{__version__}.dev3")
        )
    conn.close()
    with pytest.raises(DatasetError) as info:
        Dataset.open(small)
    assert f">= {__version__}" not in str(info.value)
    assert "development build" in str(info.value)


def _can_mount_tmpfs() -> bool:
    return (
        os.name == "posix"
        and hasattr(os, "geteuid")
        and os.geteuid() == 0
        and shutil.which("mount") is not None
    )


@pytest.fixture
def tiny_disk(tmp_path):
    if not _can_mount_tmpfs():
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    yield mount
    if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], check=False)  # busy: detach now, freed when closed


def test_a_full_disk_is_a_message_and_earlier_saves_survive(tiny_disk, tmp_path, capsys):
    classes = tmp_path / "classes" / "dimples"
    classes.mkdir(parents=True)
    for i in range(8):  # ~770 kB each of incompressible pixels: more than the 2 MB disk holds
        pixels = np.random.default_rng(i).integers(0, 255, (512, 512, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(classes / f"{i}.png")
    code = _cli("import", tiny_disk / "ds", tmp_path / "classes", "--format", "folders", "--task", "fracture")
    err = capsys.readouterr()
    assert code == 2
    text = err.out + err.err
    assert "full" in text
    assert "Traceback" not in text
    with Dataset.open(tiny_disk / "ds") as ds:
        assert not has_errors(validate(ds))


def test_info_json_still_works_after_a_backup(small, tmp_path, capsys):
    backup(small, tmp_path / "b")
    assert _cli("info", tmp_path / "b", "--json") == 0
    assert json.loads(capsys.readouterr().out)["tasks"]["fracture"]["statuses"] == {"reviewed": 3}


def test_a_read_only_dataset_is_a_message_not_a_traceback(tiny_disk, tmp_path, capsys):
    with Dataset.create(tiny_disk / "ds") as ds:
        ds.save_review(ds.add_image(np.full((8, 8), 1, dtype=np.uint8)), "fracture", [])
    if subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)]).returncode != 0:
        pytest.skip("cannot remount read-only here")
    _png(tmp_path / "classes" / "mist" / "a.png")
    code = _cli("import", tiny_disk / "ds", tmp_path / "classes", "--format", "folders", "--task", "fracture")
    err = capsys.readouterr().err
    assert code == 2
    assert "read-only" in err
    assert "Traceback" not in err


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)).save(path)
