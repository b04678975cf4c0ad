"""Schema v4: each image's current status per task, and the dataset's counts, kept by SQLite itself.

`item_status` holds one row per (image, task) an image belongs to (it has a review of the task, or was
added for it): the latest review's id and status (`unlabelled` while there is none) and the image's
insertion order, so a review queue reads one page of 100,000 images from an index. `counts` holds what
`dataset info` reports (images, reviews, statuses, splits, images per label, boxes), so it never reads
every row.

Both are maintained by triggers inside the writing transaction: every writer (this version, the CLI,
a second window, a migration, a raw `INSERT`) keeps them right, and concurrent writers cannot lose an
update (their transactions are serialised by `BEGIN IMMEDIATE`). `recount(conn)` rebuilds them from the
rows, for tests and `doctor`.
"""

from __future__ import annotations

import sqlite3

TABLES = """
CREATE TABLE item_status (
    image_id TEXT NOT NULL,
    task TEXT NOT NULL,
    seq INTEGER NOT NULL,
    review_id INTEGER,
    status TEXT NOT NULL,
    PRIMARY KEY (image_id, task)
) WITHOUT ROWID;
CREATE INDEX item_status_by_order ON item_status (task, seq, status, review_id);
CREATE INDEX item_status_by_status ON item_status (task, status, seq);
CREATE TABLE counts (
    task TEXT NOT NULL,
    what TEXT NOT NULL,
    key TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (task, what, key)
) WITHOUT ROWID
"""

_UPSERT = " ON CONFLICT (task, what, key) DO UPDATE SET n = n + excluded.n"
_CORRECTED = (
    "FROM reviews r, json_each(CASE WHEN json_valid(r.corrected) THEN r.corrected ELSE '[]' END) j "
    "WHERE r.review_id = {row}.review_id AND j.type = 'object'"
)
_LABELLED = "{row}.status IN ('reviewed', 'unreviewed')"


def _bump(task: str, what: str, key: str, delta: str, where: str = "true") -> str:
    return (
        f"INSERT INTO counts (task, what, key, n) SELECT {task}, {what}, {key}, {delta} "
        f"WHERE {where}{_UPSERT};"
    )


def _split_of(row: str) -> str:
    return f"COALESCE((SELECT split FROM images WHERE image_id = {row}.image_id), 'none')"


def _review_part(row: str, sign: str) -> str:
    """Status, images per label and boxes of one item_status row, added (`sign` 1) or taken off (-1)."""
    labels = (
        f"INSERT INTO counts (task, what, key, n) SELECT {row}.task, 'label:' || {row}.status, lbl, {sign} "
        f"FROM (SELECT DISTINCT CAST(json_extract(j.value, '$.label') AS TEXT) AS lbl "
        f"{_CORRECTED.format(row=row)}) WHERE lbl IS NOT NULL AND {_LABELLED.format(row=row)}{_UPSERT};"
    )
    boxes = _bump(
        f"{row}.task",
        "'boxes'",
        "''",
        f"{sign} * (SELECT COUNT(*) {_CORRECTED.format(row=row)} "
        "AND json_extract(j.value, '$.box') IS NOT NULL)",
        _LABELLED.format(row=row),
    )
    return _bump(f"{row}.task", "'status'", f"{row}.status", sign) + labels + boxes


TRIGGERS = (
    # images: totals, and membership of the task the image was added for
    "CREATE TRIGGER index_image_insert AFTER INSERT ON images BEGIN "
    + _bump("''", "'total'", "'images'", "1")
    + _bump("''", "'total'", "'untasked'", "1")
    + "INSERT OR IGNORE INTO item_status (image_id, task, seq, review_id, status) "
    "SELECT NEW.image_id, NEW.task, NEW.rowid, NULL, 'unlabelled' WHERE NEW.task IS NOT NULL; END",
    "CREATE TRIGGER index_image_task AFTER UPDATE OF task ON images WHEN NEW.task IS NOT OLD.task BEGIN "
    "DELETE FROM item_status WHERE image_id = OLD.image_id AND task = OLD.task AND review_id IS NULL; "
    "INSERT OR IGNORE INTO item_status (image_id, task, seq, review_id, status) "
    "SELECT NEW.image_id, NEW.task, NEW.rowid, NULL, 'unlabelled' WHERE NEW.task IS NOT NULL; END",
    "CREATE TRIGGER index_image_split AFTER UPDATE OF split ON images WHEN NEW.split IS NOT OLD.split "
    "BEGIN "
    "INSERT INTO counts (task, what, key, n) SELECT task, 'split', COALESCE(OLD.split, 'none'), -1 "
    f"FROM item_status WHERE image_id = OLD.image_id{_UPSERT}; "
    "INSERT INTO counts (task, what, key, n) SELECT task, 'split', COALESCE(NEW.split, 'none'), 1 "
    f"FROM item_status WHERE image_id = NEW.image_id{_UPSERT}; END",
    "CREATE TRIGGER index_image_delete AFTER DELETE ON images BEGIN "
    + _bump("''", "'total'", "'images'", "-1")
    + _bump(
        "''",
        "'total'",
        "'untasked'",
        "-1",
        "NOT EXISTS (SELECT 1 FROM item_status WHERE image_id = OLD.image_id)",
    )
    + "INSERT INTO counts (task, what, key, n) SELECT task, 'split', COALESCE(OLD.split, 'none'), -1 "
    f"FROM item_status WHERE image_id = OLD.image_id{_UPSERT}; "
    "DELETE FROM item_status WHERE image_id = OLD.image_id; END",
    # reviews: the newest review of (image, task) is the item's current state
    "CREATE TRIGGER index_review_insert AFTER INSERT ON reviews BEGIN "
    + _bump("''", "'total'", "'reviews'", "1")
    + "INSERT INTO item_status (image_id, task, seq, review_id, status) "
    "SELECT NEW.image_id, NEW.task, i.rowid, NEW.review_id, NEW.status FROM images i "
    "WHERE i.image_id = NEW.image_id ON CONFLICT (image_id, task) DO UPDATE SET "
    "review_id = excluded.review_id, status = excluded.status "
    "WHERE item_status.review_id IS NULL OR excluded.review_id > item_status.review_id; END",
    # item_status: what each row contributes to the counts
    "CREATE TRIGGER index_item_insert AFTER INSERT ON item_status BEGIN "
    + _bump(
        "''",
        "'total'",
        "'untasked'",
        "-1",
        "NOT EXISTS (SELECT 1 FROM item_status WHERE image_id = NEW.image_id AND task != NEW.task)",
    )
    + _bump("NEW.task", "'split'", _split_of("NEW"), "1")
    + _review_part("NEW", "1")
    + " END",
    "CREATE TRIGGER index_item_update AFTER UPDATE ON item_status BEGIN "
    + _review_part("OLD", "-1")
    + _review_part("NEW", "1")
    + " END",
    "CREATE TRIGGER index_item_delete AFTER DELETE ON item_status BEGIN "
    + _review_part("OLD", "-1")
    + _bump(
        "OLD.task",
        "'split'",
        _split_of("OLD"),
        "-1",
        "EXISTS (SELECT 1 FROM images WHERE image_id = OLD.image_id)",
    )
    + _bump(
        "''",
        "'total'",
        "'untasked'",
        "1",
        "EXISTS (SELECT 1 FROM images WHERE image_id = OLD.image_id) "
        "AND NOT EXISTS (SELECT 1 FROM item_status WHERE image_id = OLD.image_id)",
    )
    + " END",
)


def _fill(conn: sqlite3.Connection) -> None:
    """Counts from nothing, then every current item inserted (the triggers count each one)."""
    conn.execute("DELETE FROM item_status")  # its delete trigger touches counts, which go next
    conn.execute("DELETE FROM counts")
    conn.executemany(
        "INSERT INTO counts (task, what, key, n) VALUES ('', 'total', ?, ?)",
        [
            ("images", conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]),
            ("untasked", conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]),
            ("reviews", conn.execute("SELECT COUNT(*) FROM reviews").fetchone()[0]),
        ],
    )
    conn.execute(
        "INSERT INTO item_status (image_id, task, seq, review_id, status) "
        "SELECT r.image_id, r.task, i.rowid, r.review_id, r.status FROM "
        "(SELECT MAX(review_id) AS review_id FROM reviews GROUP BY image_id, task) m "
        "JOIN reviews r ON r.review_id = m.review_id JOIN images i ON i.image_id = r.image_id "
        "ORDER BY i.rowid"
    )
    conn.execute(
        "INSERT OR IGNORE INTO item_status (image_id, task, seq, review_id, status) "
        "SELECT image_id, task, rowid, NULL, 'unlabelled' FROM images WHERE task IS NOT NULL"
    )


def migrate_3_to_4(conn: sqlite3.Connection) -> None:
    """Add the item index and the counts, filled from the existing rows."""
    for statement in TABLES.split(";\n"):
        conn.execute(statement)
    for trigger in TRIGGERS:
        conn.execute(trigger)
    _fill(conn)


def recount(conn: sqlite3.Connection) -> None:
    """Rebuild `item_status` and `counts` from the images and reviews (inside the caller's transaction)."""
    _fill(conn)


def stored_counts(conn: sqlite3.Connection) -> dict[tuple[str, str, str], int]:
    """Every non-zero count as {(task, what, key): n} (what tests compare with a recount)."""
    rows = conn.execute("SELECT task, what, key, n FROM counts WHERE n != 0").fetchall()
    return {(r[0], r[1], r[2]): int(r[3]) for r in rows}
