"""`dataset doctor`: check a dataset, repair what is safe, and give the way out when it is corrupt.

Safe repairs: temporary files of writes that were killed (`.tmp-*` in the image store) are deleted,
and image files no database row names (orphans, left by a kill between writing an image and saving its
row) are moved to `orphaned-images/`, where they can be looked at or deleted. Both only when older than
`stale_after_s`, so a write in progress in another process is never touched.

A corrupt database is not repaired in place: the report names the newest backup copies found and
`salvage(root, out)` writes a new dataset with every row that can still be read.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from napari_fracto.dataset import store
from napari_fracto.dataset.blobs import BlobStore, is_digest, sha256_file
from napari_fracto.dataset.core import IMAGES_DIR
from napari_fracto.dataset.model import DatasetError

ORPHANS_DIR = "orphaned-images"
STALE_AFTER_S = 600.0


@dataclass
class DoctorReport:
    root: Path
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    corrupt: bool = False

    def describe(self) -> str:
        lines = [f"problem: {p}" for p in self.problems] + [f"repaired: {r}" for r in self.repaired]
        lines.append(
            "the database is corrupt (see above)"
            if self.corrupt
            else f"{len(self.problems)} problem(s) left, {len(self.repaired)} repaired"
        )
        return "\n".join(lines)


def _integrity(db: Path) -> list[str]:
    """Messages of SQLite's integrity check; a file that is not a database gives its error."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    if rows != ["ok"]:
        return rows[:10]
    if not {"images", "reviews"} <= tables:
        return [f"not a napari-fracto database (tables: {', '.join(sorted(tables)) or 'none'})"]
    return []


def _backups(db: Path) -> list[Path]:
    """Copies that may restore the database, newest first (migration copies kept beside it)."""
    return sorted(db.parent.glob(f"{db.name}.v*.bak"), key=lambda p: p.stat().st_mtime, reverse=True)


def doctor(
    root: str | os.PathLike[str], *, repair: bool = True, stale_after_s: float = STALE_AFTER_S
) -> DoctorReport:
    """Check the dataset at `root`; with `repair`, delete stale temp files and move stale orphans aside."""
    root = Path(root).expanduser().resolve()
    db = root / store.DB_NAME
    report = DoctorReport(root)
    if not db.is_file():
        raise DatasetError(f"no dataset at {root} (no {store.DB_NAME} there)")
    broken = _integrity(db)
    if broken:
        report.corrupt = True
        report.problems.append(f"database {db}: " + "; ".join(broken))
        backups = _backups(db)
        way_out = (
            f"restore the newest backup: copy your latest `napari-fracto dataset backup` folder back, or "
            f"{backups[0]} (made before an upgrade) over {db}"
            if backups
            else "restore your latest `napari-fracto dataset backup` copy"
        )
        report.problems.append(
            f"way out: {way_out}; or salvage the readable rows into a new dataset with "
            f"`napari-fracto dataset doctor {root} --salvage NEW_FOLDER`"
        )
        return report
    known = _known_files(db)
    blobs = BlobStore(root / IMAGES_DIR)
    now = time.time()
    for tmp in blobs.leftovers():
        if repair and now - tmp.stat().st_mtime > stale_after_s:
            tmp.unlink(missing_ok=True)
            report.repaired.append(f"deleted unfinished write {tmp.name}")
        else:
            report.problems.append(f"unfinished write (deleted by doctor once stale): {tmp}")
    if blobs.root.is_dir():
        for path in sorted(blobs.root.glob("*/*")):
            rel = f"{path.parent.name}/{path.name}"
            if not path.is_file() or path.name.startswith(".tmp-") or rel in known:
                continue
            if repair and now - path.stat().st_mtime > stale_after_s:
                target = root / ORPHANS_DIR / path.name
                target.parent.mkdir(exist_ok=True)
                shutil.move(path, target)
                report.repaired.append(f"moved image no row names to {target}")
            else:
                report.problems.append(f"image file no row names: {path}")
    for rel in sorted(known):
        if not (blobs.root / rel).is_file():
            report.problems.append(f"image file missing: {blobs.root / rel}")
    return report


def _known_files(db: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT image_id, suffix FROM images").fetchall()
    finally:
        conn.close()
    return {f"{i[:2]}/{i}{s}" for i, s in rows if is_digest(i)}


def _readable_rows(conn: sqlite3.Connection, table: str) -> tuple[list[str], list[tuple], int]:
    """Column names, the rows that can be read, and how many could not (row by row past damage)."""
    columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    try:
        return columns, conn.execute(f"SELECT * FROM {table}").fetchall(), 0
    except sqlite3.DatabaseError:
        pass
    rows, lost = [], 0
    try:
        top = conn.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        top = 1_000_000
    for rowid in range(1, int(top) + 1):
        try:
            row = conn.execute(f"SELECT * FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            lost += 1
            continue
        if row is not None:
            rows.append(tuple(row))
    return columns, rows, lost


def salvage(root: str | os.PathLike[str], out: str | os.PathLike[str]) -> str:
    """Write a new dataset at `out` with every readable image and review row of `root`; say what was kept."""
    from napari_fracto.dataset import Dataset

    root = Path(root).expanduser().resolve()
    try:
        src = sqlite3.connect(f"file:{root / store.DB_NAME}?mode=ro", uri=True)
        src.execute("SELECT name FROM sqlite_master").fetchall()
    except sqlite3.DatabaseError as exc:
        raise DatasetError(
            f"nothing can be read from {root / store.DB_NAME} ({exc}); restore your latest backup"
        ) from None
    with Dataset.create(out) as new:
        dest = new.root
    conn = store.connect(dest / store.DB_NAME)
    copied, lost_rows = {"images": 0, "reviews": 0}, 0
    try:
        blobs, target = BlobStore(root / IMAGES_DIR), BlobStore(dest / IMAGES_DIR)
        for table in ("images", "reviews"):
            try:
                columns, rows, lost = _readable_rows(src, table)
            except sqlite3.DatabaseError:
                continue
            lost_rows += lost
            wanted = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            keep = [i for i, c in enumerate(columns) if c in wanted]
            names = ", ".join(columns[i] for i in keep)
            marks = ", ".join("?" for _ in keep)
            for row in rows:
                values = [row[i] for i in keep]
                record = dict(zip(columns, row, strict=False))
                if table == "images" and not _copy_image(blobs, target, record):
                    lost_rows += 1
                    continue
                try:
                    with store.transaction(conn):
                        conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", values)
                    copied[table] += 1
                except sqlite3.DatabaseError:
                    lost_rows += 1
    finally:
        conn.close()
        src.close()
    return (
        f"salvaged {copied['images']} image(s) and {copied['reviews']} review(s) into {dest}; "
        f"{lost_rows} row(s) could not be read or had no intact image. Check it with "
        f"`napari-fracto dataset validate {dest}`"
    )


def _copy_image(blobs: BlobStore, target: BlobStore, record: dict) -> bool:
    image_id, suffix = record.get("image_id"), record.get("suffix")
    try:
        src, dst = blobs.path(image_id, suffix), target.path(image_id, suffix)  # type: ignore[arg-type]
    except DatasetError:
        return False
    if not src.is_file() or sha256_file(src) != image_id:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return True


__all__ = ["DoctorReport", "doctor", "salvage"]
