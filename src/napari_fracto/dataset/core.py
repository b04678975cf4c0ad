"""`Dataset`: a self-contained folder of reviewed images (SQLite database + content-addressed images).

Layout: `<folder>/dataset.sqlite` and `<folder>/images/<ab>/<sha256>.<ext>`. Copy the folder and the
dataset moves with it. Arrays (complex ptychography objects included) are kept losslessly as `.npy`;
TIFF/PNG/JPEG/BMP files as their original bytes.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_fracto.dataset import store
from napari_fracto.dataset.blobs import BlobStore
from napari_fracto.dataset.model import (
    SPLITS,
    DatasetError,
    Decision,
    ImageRecord,
    Item,
    ReviewRecord,
    Status,
    check_decisions,
    check_findings,
    check_status,
)
from napari_fracto.dataset.pages import ItemPages
from napari_fracto.findings import AnalysisContext, AnalysisResult, Finding

if TYPE_CHECKING:
    import numpy as np

    from napari_fracto.request import AnalysisRequest

IMAGES_DIR = "images"
FILE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def default_reviewer() -> str:
    """The OS user name, used when the reviewer did not enter one."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return os.environ.get("USER", "") or "unknown"


def _image_size(shape: Sequence[int]) -> tuple[int, int]:
    return store._hw(list(shape))


def _probe_file(data: bytes, suffix: str, name: str) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of an image file's bytes, read from its header; a clear error if unreadable."""
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                series = tif.series[0]
                return tuple(int(s) for s in series.shape), str(series.dtype)
        import numpy as np
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            img.load()
            arr = np.asarray(img)
            return tuple(int(s) for s in arr.shape), str(arr.dtype)
    except Exception as exc:  # any decoder failure means the same to the user
        raise DatasetError(f"cannot read {name} as a {suffix} image ({exc}); is the file complete?") from None


def _npy_bytes(array: np.ndarray) -> bytes:
    import numpy as np

    array = np.asarray(array)
    if array.dtype.hasobject:
        raise DatasetError("cannot store an object array; pass a numeric (real or complex) image array")
    if array.ndim < 2 or 0 in array.shape:
        raise DatasetError(f"an image needs at least two non-empty axes, got shape {array.shape}")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _read_npy_header(data: bytes, name: str) -> tuple[tuple[int, ...], str]:
    import numpy as np

    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise DatasetError(f"cannot read {name} as a .npy array without pickle ({exc})") from None
    if arr.ndim < 2:
        raise DatasetError(f"{name} holds a {arr.ndim}-D array; an image needs at least two axes")
    return tuple(int(s) for s in arr.shape), str(arr.dtype)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_PIXEL_SIZE = "pixel-size:"  # meta key prefix: an image's calibration (Dataset.set_pixel_size)

_REVIEW_COLUMNS = (
    "review_id", "image_id", "task", "status", "corrected", "predicted", "decisions", "advice",
    "predicted_advice", "context", "raw_text", "backend", "model", "adapter", "prompt_version",
    "vocabulary_version", "reviewer", "created_at", "notes", "preprocessing", "evidence", "request",
)  # fmt: skip


def _image_from_row(row: Mapping[str, Any]) -> ImageRecord:
    return ImageRecord(
        image_id=row["image_id"],
        kind=row["kind"],
        suffix=row["suffix"],
        shape=tuple(json.loads(row["shape"])),
        dtype=row["dtype"],
        height=int(row["height"]),
        width=int(row["width"]),
        original_name=row["original_name"],
        task=row["task"],
        split=row["split"],
        added_at=row["added_at"],
    )


def _review_from_row(row: Mapping[str, Any], prefix: str = "") -> ReviewRecord:
    def get(key: str) -> Any:
        return row[prefix + key]

    context = json.loads(get("context") or "{}")
    known = AnalysisContext.__dataclass_fields__
    return ReviewRecord(
        review_id=int(get("review_id")),
        image_id=get("image_id"),
        task=get("task"),
        status=Status(get("status")),
        corrected=tuple(Finding.from_dict(f) for f in json.loads(get("corrected"))),
        predicted=tuple(Finding.from_dict(f) for f in json.loads(get("predicted"))),
        decisions=tuple(Decision(d) for d in json.loads(get("decisions"))),
        advice=tuple(json.loads(get("advice"))),
        predicted_advice=tuple(json.loads(get("predicted_advice"))),
        context=AnalysisContext(**{k: str(v) for k, v in context.items() if k in known}),
        raw_text=get("raw_text"),
        backend=get("backend"),
        model=get("model"),
        adapter=get("adapter"),
        prompt_version=get("prompt_version"),
        vocabulary_version=get("vocabulary_version"),
        reviewer=get("reviewer"),
        created_at=get("created_at"),
        notes=get("notes"),
        preprocessing=get("preprocessing") or "",
        evidence=json.loads(get("evidence") or "{}"),
        request=_request_from_text(get("request")),
    )


def _request_from_text(text: str | None) -> AnalysisRequest | None:
    """The stored request; None (the record then derives it from its v2 columns) where none was stored."""
    if not text:
        return None
    from napari_fracto.request import AnalysisRequest

    return AnalysisRequest.from_dict(json.loads(text))


def _vocabulary_version(task: str) -> str:
    """The installed vocabulary's version for `task`, or "" where none is known (a custom task)."""
    try:
        from napari_fracto.vocabulary import load_vocabulary

        return str(getattr(load_vocabulary(task), "version", "") or "")
    except (ImportError, LookupError, ValueError, OSError):
        return ""


def _stored_request(request: AnalysisRequest | None, image_id: str, task: str) -> AnalysisRequest | None:
    """The request as the dataset keeps it: naming the stored image, under the review's task."""
    if request is None:
        return None
    return request.with_changes(image_id=image_id, task=task)


class Dataset(ItemPages):
    """A corrections dataset. Open with `Dataset.create(path, name=...)` or `Dataset.open(path)`.

    Safe to use from several processes at once; within one process one instance may be shared by threads.
    Large datasets are read a page at a time with the `ItemPages` methods (`item_page`, `counts`, ...).
    """

    def __init__(self, root: Path, conn: sqlite3.Connection) -> None:
        """Use `Dataset.create` or `Dataset.open`."""
        self.root = root
        self._conn = conn
        self._lock = threading.RLock()
        self.blobs = BlobStore(root / IMAGES_DIR)
        self.migrated_from: int | None = None

    # --- opening ----------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], name: str | None = None) -> Dataset:
        """Make a new dataset in `path` (a new or empty folder)."""
        root = Path(path).expanduser().resolve()
        if (root / store.DB_NAME).exists():
            raise DatasetError(f"{root} already holds a dataset; open it with Dataset.open({str(root)!r})")
        if root.exists() and not root.is_dir():
            raise DatasetError(f"{root} is a file; give a folder for the new dataset")
        if root.is_dir() and any(root.iterdir()):
            raise DatasetError(f"{root} is not empty; give a new or empty folder for the dataset")
        (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        conn = store.connect(root / store.DB_NAME)
        try:
            store.initialise(conn, name or root.name)
        except BaseException:
            conn.close()
            raise
        return cls(root, conn)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Dataset:
        """Open an existing dataset, migrating an older schema (a backup copy is kept) in place."""
        root = Path(path).expanduser().resolve()
        if root.name == store.DB_NAME and root.is_file():
            root = root.parent
        db = root / store.DB_NAME
        if not db.is_file():
            raise DatasetError(
                f"no dataset at {root} (no {store.DB_NAME} there); create one with "
                "`napari-fracto dataset create FOLDER` or `napari-fracto dataset import`"
            )
        conn = store.connect(db)
        try:
            migrated_from = store.migrate(conn, db)
        except BaseException:
            conn.close()
            raise
        ds = cls(root, conn)
        ds.migrated_from = migrated_from
        return ds

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], name: str | None = None) -> Dataset:
        root = Path(path).expanduser()
        if (root / store.DB_NAME).exists():
            return cls.open(root)
        return cls.create(root, name=name)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r})"

    # --- metadata ---------------------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, str]:
        with self._lock:
            return {r["key"]: r["value"] for r in self._conn.execute("SELECT key, value FROM meta")}

    @property
    def name(self) -> str:
        return self.get_meta("name") or self.root.name

    def set_meta(self, key: str, value: str) -> None:
        with self._lock, store.transaction(self._conn):
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(store.schema_version(self._conn) or 0)

    # --- images -----------------------------------------------------------------------------------

    def add_image(
        self,
        source: np.ndarray | str | os.PathLike[str],
        *,
        task: str | None = None,
        name: str | None = None,
    ) -> str:
        """Store an image (array or file) once and return its id, the sha256 of the stored bytes.

        Adding the same content again returns the same id and changes nothing.
        """
        if isinstance(source, str | os.PathLike):
            path = Path(source).expanduser()
            if not path.is_file():
                raise DatasetError(f"image file not found: {path}")
            suffix = path.suffix.lower()
            data = path.read_bytes()
            name = name or path.name
            if suffix == ".npy":
                shape, dtype = _read_npy_header(data, name)
                kind = "npy"
            elif suffix in FILE_SUFFIXES:
                shape, dtype = _probe_file(data, suffix, name)
                kind = "file"
            else:
                raise DatasetError(
                    f"cannot store {path.name}: supported files are .npy and {', '.join(FILE_SUFFIXES)}; "
                    "for other formats (.npz, .h5, ...) open the image and pass the array"
                )
        else:
            data = _npy_bytes(source)
            shape, dtype = _read_npy_header(data, name or "array")
            suffix, kind = ".npy", "npy"
        digest = self.blobs.put(data, suffix)
        height, width = _image_size(shape)
        with self._lock, store.transaction(self._conn):
            self._conn.execute(
                "INSERT OR IGNORE INTO images (image_id, kind, suffix, shape, dtype, height, width,"
                " original_name, task, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    digest,
                    kind,
                    suffix,
                    _dumps(list(shape)),
                    dtype,
                    height,
                    width,
                    name or "",
                    task,
                    store.utc_now(),
                ),
            )
            if task:
                self._conn.execute(
                    "UPDATE images SET task = ? WHERE image_id = ? AND task IS NULL", (task, digest)
                )
        return digest

    def image(self, image_id: str) -> ImageRecord:
        with self._lock:
            row = self._conn.execute("SELECT * FROM images WHERE image_id = ?", (image_id,)).fetchone()
        if row is None:
            raise DatasetError(f"no image {image_id!r} in {self.root}; add it with add_image first")
        return _image_from_row(row)

    def images(self) -> list[ImageRecord]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM images ORDER BY rowid").fetchall()
        return [_image_from_row(r) for r in rows]

    def __len__(self) -> int:
        return self.counts().images

    def __contains__(self, image_id: object) -> bool:
        with self._lock:
            return (
                self._conn.execute("SELECT 1 FROM images WHERE image_id = ?", (image_id,)).fetchone()
                is not None
            )

    def set_pixel_size(self, image_id: str, scale: Sequence[float], units: Sequence[str]) -> None:
        """Remember how an image is calibrated (napari's layer scale and units): the stored pixels carry
        none, and Review shows the image as it was, boxes in the same physical place."""
        value = {"scale": [float(s) for s in scale], "units": [str(u) for u in units]}
        self.set_meta(_PIXEL_SIZE + image_id, json.dumps(value))

    def pixel_size(self, image_id: str) -> tuple[tuple[float, ...], tuple[str, ...]] | None:
        """(scale, units) remembered for the image with `set_pixel_size`, or None."""
        text = self.get_meta(_PIXEL_SIZE + image_id)
        try:
            value = json.loads(text) if text else None
            return (tuple(float(s) for s in value["scale"]), tuple(str(u) for u in value["units"]))
        except (ValueError, TypeError, KeyError):  # none, or a damaged value: shown uncalibrated
            return None

    def image_path(self, image_id: str) -> Path:
        rec = self.image(image_id)
        return self.blobs.path(rec.image_id, rec.suffix)

    def image_array(self, image_id: str) -> np.ndarray:
        """The stored image, exactly as it was added (complex arrays stay complex)."""
        import numpy as np

        rec = self.image(image_id)
        path = self.blobs.path(rec.image_id, rec.suffix)
        if not path.is_file():
            raise DatasetError(
                f"image file missing: {path}; run `napari-fracto dataset validate {self.root}`"
            )
        if rec.kind == "npy":
            return np.load(path, allow_pickle=False)
        if rec.suffix in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        from PIL import Image

        with Image.open(path) as img:
            return np.asarray(img)

    # --- reviews ----------------------------------------------------------------------------------

    def save_review(
        self,
        image_id: str,
        task: str,
        corrected: Iterable[Finding] = (),
        *,
        prediction: AnalysisResult | None = None,
        decisions: Iterable[Decision | str] | None = None,
        advice: Iterable[str] | None = None,
        status: Status | str = Status.REVIEWED,
        context: AnalysisContext | None = None,
        reviewer: str | None = None,
        notes: str = "",
        vocabulary_version: str | None = None,
        request: AnalysisRequest | None = None,
    ) -> ReviewRecord:
        """Append a review of `image_id`; earlier reviews stay in `history` and the latest is current.

        `corrected` are the findings the model should have given (pixel boxes). `prediction` is the
        model output being reviewed (provenance, raw text and predicted findings come from it);
        `decisions` has one accept/reject/edited/pending entry per predicted finding. The prediction's
        request (or `request`) is stored whole, so training asks exactly what Analyze asked.
        """
        if not isinstance(task, str) or not task.strip():
            raise DatasetError("a review needs a task, e.g. 'fracture' or 'ptychography'")
        status = check_status(status)
        corrected_t = check_findings(corrected, "corrected")
        predicted = check_findings(prediction.findings if prediction else (), "predicted")
        decisions_t = check_decisions(decisions, len(predicted))
        if advice is None:
            advice = prediction.advice if prediction else ()
        advice_t = tuple(str(a) for a in advice)
        if context is None:
            context = prediction.context if prediction else AnalysisContext()
        if vocabulary_version is None:
            vocabulary_version = (prediction.vocabulary_version if prediction else "") or _vocabulary_version(
                task
            )
        record = ReviewRecord(
            image_id=image_id,
            task=task,
            status=status,
            corrected=corrected_t,
            predicted=predicted,
            decisions=decisions_t,
            advice=advice_t,
            predicted_advice=tuple(prediction.advice) if prediction else (),
            context=context,
            raw_text=prediction.raw_text if prediction else "",
            backend=prediction.backend if prediction else "",
            model=prediction.model if prediction else "",
            adapter=prediction.adapter if prediction else None,
            prompt_version=prediction.prompt_version if prediction else "",
            vocabulary_version=vocabulary_version,
            reviewer=reviewer or default_reviewer(),
            created_at=store.utc_now(),
            notes=notes,
            preprocessing=prediction.preprocessing if prediction else "",
            evidence=dict(prediction.evidence) if prediction else {},
            request=_stored_request(request or (prediction.request if prediction else None), image_id, task),
        )
        with self._lock, store.transaction(self._conn):
            if self._conn.execute("SELECT 1 FROM images WHERE image_id = ?", (image_id,)).fetchone() is None:
                raise DatasetError(f"no image {image_id!r} in {self.root}; add it with add_image first")
            cur = self._conn.execute(
                f"INSERT INTO reviews ({', '.join(_REVIEW_COLUMNS[1:])})"
                f" VALUES ({', '.join('?' * (len(_REVIEW_COLUMNS) - 1))})",
                (
                    record.image_id,
                    record.task,
                    record.status.value,
                    _dumps([f.to_dict() for f in record.corrected]),
                    _dumps([f.to_dict() for f in record.predicted]),
                    _dumps([d.value for d in record.decisions]),
                    _dumps(list(record.advice)),
                    _dumps(list(record.predicted_advice)),
                    _dumps(record.context.to_dict()),
                    record.raw_text,
                    record.backend,
                    record.model,
                    record.adapter,
                    record.prompt_version,
                    record.vocabulary_version,
                    record.reviewer,
                    record.created_at,
                    record.notes,
                    record.preprocessing,
                    _dumps(record.evidence),
                    _dumps(record.request.to_dict()),
                ),
            )
            self._conn.execute(
                "UPDATE images SET task = ? WHERE image_id = ? AND task IS NULL", (task, image_id)
            )
        return replace(record, review_id=int(cur.lastrowid))

    def save_prediction(self, image_id: str, result: AnalysisResult, *, notes: str = "") -> ReviewRecord:
        """Store a model's analysis as an unreviewed prediction (what autolabel and Analyze produce)."""
        return self.save_review(
            image_id,
            result.task,
            result.findings,
            prediction=result,
            status=Status.UNREVIEWED,
            notes=notes,
        )

    def latest_review(self, image_id: str, task: str | None = None) -> ReviewRecord | None:
        sql = "SELECT * FROM reviews WHERE image_id = ?" + (" AND task = ?" if task else "")
        args = (image_id, task) if task else (image_id,)
        with self._lock:
            row = self._conn.execute(sql + " ORDER BY review_id DESC LIMIT 1", args).fetchone()
        return _review_from_row(row) if row else None

    def history(self, image_id: str) -> list[ReviewRecord]:
        """Every review of the image, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM reviews WHERE image_id = ? ORDER BY review_id", (image_id,)
            ).fetchall()
        return [_review_from_row(r) for r in rows]

    def review_count(self) -> int:
        return self.counts().reviews

    # --- items and splits -------------------------------------------------------------------------

    def iter_items(
        self,
        task: str | None = None,
        split: str | None = None,
        status: Status | str | None = None,
        *,
        page: int = 500,
    ) -> Iterator[Item]:
        """Images with their latest review (of `task`, when given), in the order they were added.

        Read `page` rows at a time (memory stays flat over any dataset; the lock is not held between
        pages, so a save made meanwhile may or may not be seen, never half).
        """
        sql, args = _items_query(task, split, status)
        after = 0
        while True:
            with self._lock:
                rows = self._conn.execute(
                    sql + " AND i.rowid > ? ORDER BY i.rowid LIMIT ?", [*args, after, page]
                ).fetchall()
            for row in rows:
                review = _review_from_row(row, "r_") if row["r_review_id"] is not None else None
                yield Item(_image_from_row(row), review)
            if len(rows) < page:
                return
            after = int(rows[-1]["i_rowid"])

    def item_splits(
        self, task: str | None = None, split: str | None = None, status: Status | str | None = None
    ) -> set[str | None]:
        """The splits of the images `iter_items` would give (None for no split), without reading reviews."""
        sql, args = _items_query(task, split, status, columns="DISTINCT i.split")
        with self._lock:
            return {row[0] for row in self._conn.execute(sql, args).fetchall()}

    def status_counts(self, task: str | None = None) -> dict[Status, int]:
        """How many images of `task` (of every task, and those without one, when None) stand where,
        e.g. for '37 / 120 reviewed': read from the counts the database keeps, not from the rows."""
        counts = dict.fromkeys(Status, 0)
        stored = self.counts()
        for name, t in stored.tasks.items():
            if task is None or name == task:
                for key, n in t.statuses.items():
                    counts[Status(key)] += n
        if task is None:
            counts[Status.UNLABELLED] += stored.untasked
        return counts

    def set_split(self, image_ids: Iterable[str], split: str | None) -> None:
        """Put images in `split` ("train", "val", "test") or take them out of any split (None)."""
        self.set_splits(dict.fromkeys(image_ids, split))

    def set_splits(self, assignments: Mapping[str, str | None]) -> None:
        """Assign many images to splits in one transaction (all or nothing)."""
        bad = {s for s in assignments.values() if s is not None and s not in SPLITS}
        if bad:
            raise DatasetError(f"unknown split(s) {sorted(bad)}; use one of {', '.join(SPLITS)}")
        with self._lock, store.transaction(self._conn):
            missing = [
                i
                for i in assignments
                if self._conn.execute("SELECT 1 FROM images WHERE image_id = ?", (i,)).fetchone() is None
            ]
            if missing:
                raise DatasetError(f"no such image(s) in the dataset: {', '.join(m[:12] for m in missing)}")
            self._conn.executemany(
                "UPDATE images SET split = ? WHERE image_id = ?", [(s, i) for i, s in assignments.items()]
            )


def _items_query(
    task: str | None, split: str | None, status: Status | str | None, columns: str = ""
) -> tuple[str, list[Any]]:
    """SELECT of images with their latest review (of `task`), filtered; ends in a WHERE clause."""
    sub = "SELECT MAX(review_id) FROM reviews WHERE image_id = i.image_id"
    args: list[Any] = []
    if task:
        sub += " AND task = ?"
        args.append(task)
    if not columns:
        review_cols = ", ".join(f"r.{c} AS r_{c}" for c in _REVIEW_COLUMNS)
        columns = f"i.*, i.rowid AS i_rowid, {review_cols}"
    sql = f"SELECT {columns} FROM images i LEFT JOIN reviews r ON r.review_id = ({sub})"
    where = ["1"]
    if task:
        where.append("COALESCE(r.task, i.task) = ?")
        args.append(task)
    if split:
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        where.append("i.split = ?")
        args.append(split)
    if status is not None:
        try:
            status = Status(status)
        except ValueError:
            raise DatasetError(
                f"unknown status {status!r}; use one of {', '.join(s.value for s in Status)}"
            ) from None
        if status is Status.UNLABELLED:
            where.append("r.review_id IS NULL")
        else:
            where.append("r.status = ?")
            args.append(status.value)
    return sql + " WHERE " + " AND ".join(where), args
