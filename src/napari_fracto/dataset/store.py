"""The dataset's SQLite database: connection settings, schema, versions and migrations.

WAL journal + `synchronous=FULL` + `BEGIN IMMEDIATE` transactions: several processes (two napari windows,
napari and the CLI) can write at once, each waits its turn (busy timeout), and a process killed mid-save
leaves every committed save intact. Reviews are append-only, enforced by triggers.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from napari_fracto._version import __version__
from napari_fracto.dataset import index
from napari_fracto.dataset.model import DatasetError, DatasetVersionError

DB_NAME = "dataset.sqlite"
BUSY_TIMEOUT_MS = 30_000


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# --- errors a user can act on -----------------------------------------------------------------------


def dataset_error(exc: BaseException, where: Path | str) -> DatasetError | None:
    """The DatasetError (what happened, what to do) for a full disk, a read-only folder, or a corrupt or
    foreign database file; None for anything else, which is a bug and must keep its traceback."""
    if isinstance(exc, DatasetError):
        return exc
    text = str(exc).lower()
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC or "disk is full" in text or "database or disk is full" in text:
        return DatasetError(
            f"the disk holding {where} is full; nothing was lost (the last change was not saved): free some "
            "space or move the dataset with `napari-fracto dataset backup`, then try again"
        )
    folder = Path(where) if Path(where).is_dir() else Path(where).parent
    read_only = folder.exists() and not os.access(folder, os.W_OK)  # EROFS even for root
    if (
        code in (errno.EROFS, errno.EACCES, errno.EPERM)
        or "readonly" in text
        or "read-only" in text
        or (read_only and isinstance(exc, sqlite3.OperationalError))
    ):
        return DatasetError(
            f"{where} cannot be written (a read-only folder or file system): copy it with "
            "`napari-fracto dataset backup` to a folder you can write, or fix its permissions"
        )
    if isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in text or "malformed" in text or "corrupt" in text
    ):
        return DatasetError(
            f"{where} is damaged or is not a napari-fracto database ({exc}): run `napari-fracto dataset "
            "doctor` on the folder; it says how to restore the newest backup or salvage the readable rows"
        )
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
        return DatasetError(
            f"cannot open the database {where} ({exc}): check that the folder exists and is yours"
        )
    return None


@contextmanager
def user_errors(where: Path | str) -> Iterator[None]:
    """Raise `dataset_error(...)` in place of the sqlite3/OS errors it knows; others pass unchanged."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        error = dataset_error(exc, where)
        if error is None:
            raise
        raise error from None


def connect(path: Path) -> sqlite3.Connection:
    """Open with the settings every writer must share (autocommit mode: transactions are explicit)."""
    with user_errors(path):
        return _connect(path)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise DatasetError(
            f"cannot use write-ahead logging for {path} (journal mode {mode!r}); network and read-only "
            "file systems do not support it: copy the dataset folder to a local disk"
        )
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction that takes the write lock up front, so concurrent writers queue, not fail."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# --- schema -------------------------------------------------------------------------------------------

SCHEMA_V1 = """
CREATE TABLE schema_version (
    version INTEGER PRIMARY KEY,
    min_app_version TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    applied_by TEXT NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
    image_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('npy', 'file')),
    suffix TEXT NOT NULL,
    shape TEXT NOT NULL,
    dtype TEXT NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    original_name TEXT NOT NULL DEFAULT '',
    task TEXT,
    split TEXT CHECK (split IS NULL OR split IN ('train', 'val', 'test')),
    added_at TEXT NOT NULL
);
CREATE TABLE reviews (
    review_id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id TEXT NOT NULL REFERENCES images (image_id),
    task TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('unreviewed', 'reviewed', 'skipped')),
    corrected TEXT NOT NULL DEFAULT '[]',
    predicted TEXT NOT NULL DEFAULT '[]',
    decisions TEXT NOT NULL DEFAULT '[]',
    advice TEXT NOT NULL DEFAULT '[]',
    predicted_advice TEXT NOT NULL DEFAULT '[]',
    context TEXT NOT NULL DEFAULT '{}',
    raw_text TEXT NOT NULL DEFAULT '',
    backend TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    adapter TEXT,
    prompt_version TEXT NOT NULL DEFAULT '',
    vocabulary_version TEXT NOT NULL DEFAULT '',
    reviewer TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    notes TEXT NOT NULL DEFAULT ''
);
CREATE INDEX reviews_by_image ON reviews (image_id, review_id);
CREATE INDEX images_by_split ON images (split);
CREATE TRIGGER reviews_no_update BEFORE UPDATE ON reviews
BEGIN SELECT RAISE(ABORT, 'reviews are append-only: save a new review instead'); END;
CREATE TRIGGER reviews_no_delete BEFORE DELETE ON reviews
BEGIN SELECT RAISE(ABORT, 'reviews are append-only: save a new review instead'); END;
"""

# v0 is the layout of pre-release prototypes (no schema_version table, labels only):
#   images(sha256 TEXT PRIMARY KEY, suffix TEXT, shape TEXT, dtype TEXT, added_at TEXT)
#   reviews(id INTEGER PRIMARY KEY, sha256 TEXT, task TEXT, labels TEXT, reviewer TEXT, created_at TEXT)
# where `labels` is a JSON list of Finding dicts. Kept so the migration path is exercised from day one.


def _create_v1(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA_V1.split(";\n"):
        if statement.strip():
            conn.execute(statement)


def _hw(shape: list[int]) -> tuple[int, int]:
    """Height and width of an image of this shape (2-D, RGB(A) last axis, or a stack of planes)."""
    if len(shape) == 3 and shape[-1] in (3, 4):
        return int(shape[0]), int(shape[1])
    if len(shape) >= 2:
        return int(shape[-2]), int(shape[-1])
    return (int(shape[0]) if shape else 0), 1


def _migrate_0_to_1(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE images RENAME TO images_v0")
    conn.execute("ALTER TABLE reviews RENAME TO reviews_v0")
    _create_v1(conn)
    for row in conn.execute("SELECT sha256, suffix, shape, dtype, added_at FROM images_v0").fetchall():
        shape = json.loads(row["shape"] or "[]")
        h, w = _hw(shape)
        kind = "npy" if row["suffix"] == ".npy" else "file"
        conn.execute(
            "INSERT INTO images (image_id, kind, suffix, shape, dtype, height, width, added_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row["sha256"], kind, row["suffix"], json.dumps(shape), row["dtype"], h, w, row["added_at"]),
        )
    for row in conn.execute(
        "SELECT sha256, task, labels, reviewer, created_at FROM reviews_v0 ORDER BY id"
    ).fetchall():
        conn.execute(
            "INSERT INTO reviews (image_id, task, status, corrected, reviewer, created_at, notes)"
            " VALUES (?, ?, 'reviewed', ?, ?, ?, 'migrated from schema v0')",
            (row["sha256"], row["task"], row["labels"] or "[]", row["reviewer"] or "", row["created_at"]),
        )
    conn.execute("DROP TABLE reviews_v0")
    conn.execute("DROP TABLE images_v0")


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Reviews keep what was done to the image before the model saw it, and the evidence measured on it."""
    conn.execute("ALTER TABLE reviews ADD COLUMN preprocessing TEXT NOT NULL DEFAULT ''")
    conn.execute("ALTER TABLE reviews ADD COLUMN evidence TEXT NOT NULL DEFAULT '{}'")


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    """Reviews keep the whole analysis request; older rows get the request their columns stand for.

    Reviews are append-only, so the guard trigger is lifted for this one transaction and put back.
    """
    from napari_fracto.findings import AnalysisContext
    from napari_fracto.request import from_legacy

    conn.execute("ALTER TABLE reviews ADD COLUMN request TEXT NOT NULL DEFAULT ''")
    conn.execute("DROP TRIGGER reviews_no_update")
    known = AnalysisContext.__dataclass_fields__
    rows = conn.execute(
        "SELECT review_id, image_id, task, context, preprocessing, evidence, backend, model, adapter,"
        " prompt_version, vocabulary_version, advice, predicted_advice FROM reviews"
    ).fetchall()
    for row in rows:
        context = json.loads(row["context"] or "{}")
        request = from_legacy(
            task=row["task"],
            context=AnalysisContext(**{k: str(v) for k, v in context.items() if k in known}),
            preprocessing=row["preprocessing"] or "",
            evidence=json.loads(row["evidence"] or "{}"),
            backend=row["backend"] or "",
            model=row["model"] or "",
            adapter=row["adapter"],
            prompt_version=row["prompt_version"] or "",
            vocabulary_version=row["vocabulary_version"] or "",
            image_id=row["image_id"],
            advice=bool(json.loads(row["advice"] or "[]") or json.loads(row["predicted_advice"] or "[]")),
        )
        conn.execute(
            "UPDATE reviews SET request = ? WHERE review_id = ?",
            (json.dumps(request.to_dict(), separators=(",", ":")), row["review_id"]),
        )
    conn.execute(
        "CREATE TRIGGER reviews_no_update BEFORE UPDATE ON reviews BEGIN "
        "SELECT RAISE(ABORT, 'reviews are append-only: save a new review instead'); END"
    )


@dataclass(frozen=True)
class Migration:
    to_version: int
    min_app_version: str  # the first napari-fracto that reads this schema
    apply: Callable[[sqlite3.Connection], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "0.1.0", _migrate_0_to_1),
    Migration(2, "0.1.0", _migrate_1_to_2),
    Migration(3, "0.2.0.dev0", _migrate_2_to_3),
    Migration(4, "0.2.0.dev0", index.migrate_3_to_4),
)
SCHEMA_VERSION = MIGRATIONS[-1].to_version


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def schema_version(conn: sqlite3.Connection) -> int | None:
    """The schema version on disk: None for an empty database, 0 for the prototype layout."""
    tables = _tables(conn)
    if "schema_version" in tables:
        return int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)
    if "images" in tables:
        return 0
    return None


def _record_version(conn: sqlite3.Connection, migration: Migration) -> None:
    conn.execute(
        "INSERT INTO schema_version (version, min_app_version, applied_at, applied_by) VALUES (?, ?, ?, ?)",
        (migration.to_version, migration.min_app_version, utc_now(), __version__),
    )


def initialise(conn: sqlite3.Connection, name: str) -> None:
    """Create the latest schema in an empty database."""
    with transaction(conn):
        if schema_version(conn) is not None:
            raise DatasetError("this folder already holds a dataset: open it with Dataset.open")
        _create_v1(conn)  # v1 then the additive migrations: one code path for new and upgraded datasets
        for migration in MIGRATIONS:
            if migration.to_version > 1:
                migration.apply(conn)
            _record_version(conn, migration)
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("name", name), ("created_at", utc_now()), ("created_by", __version__)],
        )


def check_not_newer(conn: sqlite3.Connection, path: Path) -> None:
    version = schema_version(conn)
    if version is not None and version > SCHEMA_VERSION:
        row = conn.execute(
            "SELECT min_app_version, applied_by FROM schema_version ORDER BY version DESC LIMIT 1"
        ).fetchone()
        raise DatasetVersionError(version_message(path, version, row["min_app_version"], row["applied_by"]))


def _newer(a: str, b: str) -> bool:
    """True when version `a` is later than `b` (release numbers compared; unreadable ones never are)."""
    try:
        from packaging.version import Version

        return Version(a) > Version(b)
    except Exception:  # no packaging, or not a PEP 440 version: cannot tell, so do not claim it is newer
        return False


def version_message(path: Path, version: int, need: str, written_by: str) -> str:
    """Why this napari-fracto cannot open a newer dataset, naming a version that can (a true one)."""
    head = (
        f"the dataset {path} uses schema v{version}, written by napari-fracto {written_by}; this "
        f"napari-fracto {__version__} reads up to v{SCHEMA_VERSION}."
    )
    if _newer(need, __version__):
        return (
            f"{head} Upgrade napari-fracto to >= {need} (pip install -U 'napari-fracto>={need}') to open it."
        )
    # The recorded minimum is not newer than this version: a development build wrote it.
    return (
        f"{head} It was written by a development build that records {need} as the minimum; install the "
        f"napari-fracto that wrote it ({written_by}) or a later release to open it."
    )


def migrate(conn: sqlite3.Connection, db_path: Path) -> int | None:
    """Bring an older database to the current schema; returns the version migrated from (None: up to date).

    A copy of the database is written next to it first (`dataset.sqlite.v<N>.bak`), and each migration
    runs in one transaction, re-checked under the write lock so two processes never migrate twice.
    """
    check_not_newer(conn, db_path)
    with user_errors(db_path):
        return _migrate(conn, db_path)


def _migrate(conn: sqlite3.Connection, db_path: Path) -> int | None:
    version = schema_version(conn)
    if version is None:
        tables = sorted(_tables(conn))
        if tables:
            raise DatasetError(
                f"{db_path} is an SQLite database of another program (tables: {', '.join(tables[:8])}), not "
                "a napari-fracto dataset: open the dataset's own folder, or create one with `dataset create`"
            )
        raise DatasetError(f"{db_path} holds no dataset tables; create a dataset with Dataset.create")
    if version == SCHEMA_VERSION:
        return None
    backup = db_path.with_name(f"{db_path.name}.v{version}.bak")
    if not backup.exists():
        with sqlite3.connect(backup) as dst:
            conn.backup(dst)
        dst.close()
    try:
        with transaction(conn):
            start = schema_version(conn)
            if start is None or start >= SCHEMA_VERSION:
                return None
            for migration in MIGRATIONS:
                if migration.to_version > start:
                    migration.apply(conn)
                    _record_version(conn, migration)
    except (ValueError, KeyError, IndexError, TypeError, sqlite3.IntegrityError) as exc:
        # A malformed old database (bad JSON in a row, a missing column): nothing was changed.
        raise DatasetError(
            f"cannot upgrade {db_path} from schema v{version}: a row is malformed ({type(exc).__name__}: "
            f"{str(exc)[:120]}). The database is unchanged and a copy is at {backup}; run "
            "`napari-fracto dataset doctor` to salvage the readable rows"
        ) from None
    return start
