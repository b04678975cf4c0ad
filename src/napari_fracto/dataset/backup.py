"""A consistent copy of a dataset that may be in use: the way to share or move one (not `cp -r`).

Copying the folder while napari saves gave copies with missing images, and copying `dataset.sqlite`
without its `-wal` file silently lost committed reviews (issue 17). Here the database is copied with
SQLite's online backup API (a snapshot of every committed transaction, taken while writers go on), then
the images that snapshot names are copied and checked against their hashes. Images are written before
the row that names them is committed, so every image of the snapshot is on disk. The copy is built in a
temporary folder beside DEST and renamed into place at the end: an interrupted backup leaves no
half-dataset behind.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from napari_fracto.dataset import store
from napari_fracto.dataset.blobs import BlobStore, check_ref, sha256_file
from napari_fracto.dataset.core import IMAGES_DIR
from napari_fracto.dataset.model import DatasetError


@dataclass(frozen=True)
class BackupSummary:
    dest: Path
    images: int
    reviews: int
    missing: tuple[str, ...]  # image ids whose file was missing or altered in the source (not copied)

    def describe(self) -> str:
        text = f"backed up {self.images} image(s) and {self.reviews} review(s) to {self.dest}"
        if self.missing:
            text += (
                f"; {len(self.missing)} image file(s) were missing or altered in the source and are not in "
                "the copy (run `napari-fracto dataset validate` on the source)"
            )
        return text


def snapshot_database(source_db: Path, dest_db: Path) -> None:
    """Copy every committed transaction of `source_db` (WAL included) into `dest_db`, writers or not."""
    with store.user_errors(source_db):
        src = sqlite3.connect(source_db, timeout=store.BUSY_TIMEOUT_MS / 1000)
        try:
            dst = sqlite3.connect(dest_db)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()


def backup(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> BackupSummary:
    """Write a consistent copy of the dataset at `source` to the new folder `dest`."""
    root = Path(source).expanduser().resolve()
    db = root / store.DB_NAME
    if not db.is_file():
        raise DatasetError(f"no dataset at {root} (no {store.DB_NAME} there)")
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DatasetError(f"{dest} already exists and is not empty: choose a new folder for the backup")
    if dest == root or dest.is_relative_to(root):
        raise DatasetError(f"{dest} is inside the dataset {root}: put the backup somewhere else")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with store.user_errors(dest.parent):
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        with store.user_errors(work):
            summary = _copy(root, db, work)
            if dest.exists():
                dest.rmdir()
            os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BackupSummary(dest, summary.images, summary.reviews, summary.missing)


def _copy(root: Path, db: Path, work: Path) -> BackupSummary:
    snapshot_database(db, work / store.DB_NAME)
    conn = sqlite3.connect(work / store.DB_NAME)
    try:
        rows = conn.execute("SELECT image_id, suffix FROM images").fetchall()
        reviews = conn.execute("SELECT COUNT(*) FROM reviews").fetchone()[0]
        conn.execute("PRAGMA journal_mode = WAL")  # as every dataset is opened
    finally:
        conn.close()
    source, target = BlobStore(root / IMAGES_DIR), BlobStore(work / IMAGES_DIR)
    target.root.mkdir()
    missing: list[str] = []
    for image_id, suffix in rows:
        try:
            check_ref(image_id, suffix)
            src = source.path(image_id, suffix)
        except DatasetError:
            missing.append(str(image_id)[:80])
            continue
        dst = target.path(image_id, suffix)
        dst.parent.mkdir(exist_ok=True)
        try:
            shutil.copyfile(src, dst)
        except FileNotFoundError:
            missing.append(image_id)
            continue
        if sha256_file(dst) != image_id:
            dst.unlink()
            missing.append(image_id)
    return BackupSummary(work, len(rows) - len(missing), int(reviews), tuple(missing))


__all__ = ["BackupSummary", "backup", "snapshot_database"]
