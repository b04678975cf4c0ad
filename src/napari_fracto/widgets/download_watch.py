"""A model download's size and progress in the panel: the Hugging Face cache folder, polled once a second.

huggingface_hub writes a download into `models--ORG--NAME/blobs/*.incomplete` inside the cache; summing
those file sizes is a few stat calls (well under 1 ms on the Qt thread), works whichever library does the
download, and needs no hook into its progress bars.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from qtpy.QtCore import QObject, QTimer
from qtpy.QtWidgets import QLabel


def model_cache_dir(model: str) -> Path | None:
    """The cache folder a Hub model id downloads into; None for a local folder or an already cached model."""
    if not model or Path(model).expanduser().exists() or model.count("/") != 1:
        return None
    try:
        from huggingface_hub import constants, try_to_load_from_cache

        if isinstance(try_to_load_from_cache(model, "config.json"), str):
            return None
        return Path(constants.HF_HUB_CACHE) / ("models--" + model.replace("/", "--"))
    except Exception:  # an invalid id: the backend says so when it loads
        return None


def folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


class DownloadWatch(QObject):
    """While started, shows "Downloading MODEL: 1.2 GB so far (roughly 4 GB)" in `label`."""

    def __init__(self, label: QLabel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.label = label
        self.folder: Path | None = None
        self.model = ""
        self.expected = ""
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.poll)

    def start(self, model: str) -> bool:
        """Watch `model`'s download; False (nothing shown) when it is local or cached already."""
        self.folder = model_cache_dir(model)
        if self.folder is None:
            return False
        from napari_fracto.backends.transformers_backend import _size_hint

        self.model, self.expected = model, _size_hint(model)
        self.poll()
        self.timer.start()
        return True

    def poll(self) -> None:
        if self.folder is None:
            return
        done = folder_bytes(self.folder) if self.folder.is_dir() else 0
        self.label.setText(
            f"Downloading {self.model} (once, into the Hugging Face cache): {done / 1e9:.2f} GB so far "
            f"({self.expected})."
        )

    def stop(self) -> None:
        self.timer.stop()
        self.folder = None
