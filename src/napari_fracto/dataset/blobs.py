"""Content-addressed image store: each image is kept once, named by the sha256 of its bytes.

Writes go to a temporary file in the same folder, are fsynced and renamed into place, so a crash leaves
either the whole file or nothing; a file whose hash no longer matches its name has been tampered with.

Datasets come from other people: an image id or suffix read from a database row is checked (64 hex
digits, a short alphanumeric suffix) and the resulting path must stay inside the store, symlinks
resolved, before anything is read or written there.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from napari_fracto.dataset.model import DatasetError

_CHUNK = 1 << 20
_DIGEST = re.compile(r"[0-9a-f]{64}")
_SUFFIX = re.compile(r"\.[a-z0-9]{1,8}")


def is_digest(value: object) -> bool:
    """True for a sha256 hex digest, the only form an image id may take."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def check_ref(digest: object, suffix: object) -> None:
    """DatasetError unless `digest` is a sha256 hex digest and `suffix` a plain file suffix."""
    if not is_digest(digest):
        raise DatasetError(
            f"image id {str(digest)[:80]!r} is not a sha256 content hash: the database was altered or "
            "crafted; run `napari-fracto dataset validate` and do not use it for export or training"
        )
    if not isinstance(suffix, str) or _SUFFIX.fullmatch(suffix) is None:
        raise DatasetError(
            f"image {digest[:12]} has the file suffix {str(suffix)[:40]!r}, which no stored image has: "
            "the database was altered or crafted; run `napari-fracto dataset validate`"
        )


def confined(root: Path, path: Path) -> Path:
    """`path` with symlinks resolved, or DatasetError when that leaves `root`."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise DatasetError(f"{path} leads outside {root} (a symlink or '..'); refusing to use it")
    return resolved


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hash a file in chunks so large reconstructions never sit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; not possible (nor needed) on Windows."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """Files under `root/<first two hex digits>/<sha256><suffix>`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def relpath(self, digest: str, suffix: str) -> str:
        """Path relative to the store root, with forward slashes so datasets move between systems."""
        check_ref(digest, suffix)
        return f"{digest[:2]}/{digest}{suffix}"

    def path(self, digest: str, suffix: str) -> Path:
        """Where an image lives; DatasetError for an id that is not a hash or a path leaving the store."""
        check_ref(digest, suffix)
        path = self.root / digest[:2] / f"{digest}{suffix}"
        if path.is_symlink() or path.parent.is_symlink():
            confined(self.root, path)
        return path

    def put(self, data: bytes, suffix: str) -> str:
        """Store bytes (once) and return their sha256."""
        digest = sha256_bytes(data)
        target = self.path(digest, suffix)
        if target.exists() and target.stat().st_size == len(data):
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return digest

    def verify(self, digest: str, suffix: str) -> str | None:
        """None when the file is present and intact, else a sentence saying what is wrong."""
        path = self.path(digest, suffix)
        if not path.is_file():
            return f"image file missing: {path}"
        actual = sha256_file(path)
        if actual != digest:
            return f"image file changed since it was stored (sha256 now {actual[:12]}…): {path}"
        return None

    def leftovers(self) -> list[Path]:
        """Temporary files of writes that were killed before their rename; safe to delete."""
        if not self.root.is_dir():
            return []
        return sorted(self.root.glob("*/.tmp-*"))
