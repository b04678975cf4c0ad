"""Where napari-fracto keeps its files: the platform's config and data directories, never the cwd.

`NAPARI_FRACTO_CONFIG_DIR` / `NAPARI_FRACTO_DATA_DIR` override them (tests, shared installations).
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "napari-fracto"


def config_dir() -> Path:
    override = os.environ.get("NAPARI_FRACTO_CONFIG_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    override = os.environ.get("NAPARI_FRACTO_DATA_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
