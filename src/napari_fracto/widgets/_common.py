"""Small helpers every napari-fracto dock widget shares: user-facing messages and worker plumbing.

Errors users can act on are shown as one clean notification (no traceback); anything else is logged with
its traceback and shown with its type, so a bug is reportable but never takes napari down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QHBoxLayout, QWidget

logger = logging.getLogger("napari_fracto")


def show_error(message: str) -> None:
    """An error notification in napari (also logged, so it lands in the console and log files)."""
    from napari.utils.notifications import show_error as _show_error

    logger.error(message)
    _show_error(message)


def show_warning(message: str) -> None:
    from napari.utils.notifications import show_warning as _show_warning

    logger.warning(message)
    _show_warning(message)


def show_info(message: str) -> None:
    from napari.utils.notifications import show_info as _show_info

    _show_info(message)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is written for the user (ImageError, BackendError, ...)."""
    from napari_fracto.backends.base import BackendError

    errors: list[type[BaseException]] = [BackendError, ValueError, OSError]
    return tuple(errors)


@dataclass
class Outcome:
    """What a worker hands back: a value, or a message for the user, or a cancellation. Never raised."""

    value: Any = None
    error: str = ""
    cancelled: bool = False


def run_catching(func: Callable[[], Any]) -> Outcome:
    """Call `func` in a worker thread and turn every failure into an Outcome the UI thread can show."""
    from napari_fracto.backends.base import CancelledError

    try:
        return Outcome(value=func())
    except CancelledError:
        return Outcome(cancelled=True)
    except user_errors() as exc:
        return Outcome(error=str(exc) or type(exc).__name__)
    except Exception as exc:  # a bug: keep napari alive, keep the traceback in the log
        logger.exception("Unexpected error in a napari-fracto worker")
        return Outcome(error=f"Unexpected error ({type(exc).__name__}: {exc}); details are in the log.")


class ProgressRelay(QObject):
    """Carries (done, total) progress from a worker thread to the UI thread (Qt queues the signal)."""

    progress = Signal(int, int)

    def __call__(self, done: int, total: int) -> None:
        self.progress.emit(int(done), int(total))


def hbox(*widgets: QWidget) -> QWidget:
    """Widgets side by side in one form row, without extra margins."""
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    return box
