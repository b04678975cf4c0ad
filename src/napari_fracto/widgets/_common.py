"""Small helpers every napari-fracto dock widget shares: messages, the error panel, scrolling, workers.

Errors users can act on (`napari_fracto.errors.UserError`) are shown with their own message; anything else
is a bug: logged with its traceback and shown as an internal error, with the traceback in the panel's
details, so it is reportable but never takes napari down.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

logger = logging.getLogger("napari_fracto")

#: device choices of the local backend (one list for every widget)
DEVICES = ("auto", "cuda", "mps", "cpu")
#: the widths napari docks open at, and what every panel must fit in (two docks on a 1280 x 800 screen)
DOCK_MIN_WIDTH = 320


_WARM_UP: threading.Thread | None = None
#: modules napari and the plugin import on first use (scipy.ndimage for napari's thumbnails alone takes
#: ~0.6 s): imported once in the background when a dock opens, not on the Qt thread at the first action
WARM_MODULES = (
    "scipy.ndimage",
    "pandas",
    "h5py",
    "tifffile",
    "PIL.Image",
    "napari.layers.shapes._shape_list",
    "napari_fracto.io.readers",
    "napari_fracto.io.ptycho",
    "napari_fracto.overlay",
    "napari_fracto.dataset",
    "napari_fracto.review",
)


def warm_up() -> threading.Thread:
    """Start (once per process) the background import of WARM_MODULES; returns the thread."""
    global _WARM_UP
    if _WARM_UP is None:

        def run() -> None:
            import importlib

            for name in WARM_MODULES:
                try:
                    importlib.import_module(name)
                except Exception:  # an optional module missing only costs its first use later
                    logger.debug("warm-up import of %s failed", name, exc_info=True)

        _WARM_UP = threading.Thread(target=run, name="napari-fracto warm-up", daemon=True)
        _WARM_UP.start()
    return _WARM_UP


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
    """Exception types whose message is written for the user: UserError, and the OS's file errors."""
    from napari_fracto.errors import UserError

    return (UserError, OSError)


@dataclass
class Outcome:
    """What a worker hands back: a value, or a message for the user, or a cancellation. Never raised.

    `details` holds the traceback of an internal error ("" for an error the user can act on).
    """

    value: Any = None
    error: str = ""
    cancelled: bool = False
    details: str = ""


def describe(exc: BaseException) -> Outcome:
    """An exception as the panel shows it: a UserError's message, or "Internal error" plus traceback."""
    if isinstance(exc, user_errors()):
        return Outcome(error=str(exc) or type(exc).__name__)
    logger.error("Internal error in napari-fracto", exc_info=(type(exc), exc, exc.__traceback__))
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Outcome(
        error=f"Internal error ({type(exc).__name__}: {exc}); details below and in the log.", details=details
    )


def run_catching(func: Callable[[], Any]) -> Outcome:
    """Call `func` in a worker thread and turn every failure into an Outcome the UI thread can show."""
    from napari_fracto.backends.base import CancelledError

    try:
        return Outcome(value=func())
    except CancelledError:
        return Outcome(cancelled=True)
    except Exception as exc:  # a bug stays a bug (traceback kept); napari stays alive
        return describe(exc)


class ProgressRelay(QObject):
    """Carries (done, total, message) progress from a worker thread to the UI thread (Qt queues it)."""

    progress = Signal(int, int, str)

    def __call__(self, done: int, total: int, message: str = "") -> None:
        self.progress.emit(int(done), int(total), str(message))


def hbox(*widgets: QWidget) -> QWidget:
    """Widgets side by side in one form row, without extra margins."""
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    return box


def scrolling_body(widget: QWidget) -> QVBoxLayout:
    """Make a scroll area `widget`'s only child and return the layout to fill: a tall panel scrolls
    inside its dock instead of pushing the other docks off a small screen."""
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    body = QWidget()
    body.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
    area.setWidget(body)
    outer.addWidget(area)
    widget.scroll_area = area  # type: ignore[attr-defined]
    widget.setMinimumWidth(DOCK_MIN_WIDTH)
    warm_up()
    return QVBoxLayout(body)


def fit_width(widget: QWidget, width: int = DOCK_MIN_WIDTH) -> None:
    """Let every combo box of `widget` shrink to a few characters (a long layer name or path would
    otherwise widen the whole dock and cut its right edge); the full text stays in the tooltip."""
    from qtpy.QtWidgets import QComboBox

    for combo in widget.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)
        combo.setMinimumWidth(80)  # an explicit minimum wins over the (cached) size hint in layouts
        combo.setSizePolicy(QSizePolicy.Policy.Expanding, combo.sizePolicy().verticalPolicy())
    from qtpy.QtWidgets import QFormLayout

    for child in [widget, *widget.findChildren(QWidget)]:
        layout = child.layout()
        if isinstance(layout, QFormLayout):  # narrow dock: a long label goes above its field
            layout.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        for form in child.findChildren(QFormLayout):
            form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        if layout is not None:
            layout.invalidate()


class ErrorPanel(QWidget):
    """The last error, kept in the panel (a notification fades): its message, and details to expand."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.setStyleSheet("color: #ff6b6b")
        self.toggle = QToolButton()
        self.toggle.setText("Details")
        self.toggle.setCheckable(True)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.toggled.connect(self._toggled)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setMaximumHeight(160)
        self.details.setVisible(False)
        layout.addWidget(self.message)
        layout.addWidget(self.toggle)
        layout.addWidget(self.details)
        self.clear()

    def _toggled(self, on: bool) -> None:
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.details.setVisible(on)

    def show_outcome(self, outcome: Outcome, *, notify: bool = True) -> None:
        """Keep `outcome.error` here (details expandable) and, unless told not to, notify as well."""
        self.show_message(outcome.error, outcome.details, notify=notify)

    def show_message(self, message: str, details: str = "", *, notify: bool = True) -> None:
        self.message.setText(message)
        self.details.setPlainText(details or message)
        self.toggle.setVisible(bool(details))
        self.setVisible(True)
        if notify:
            show_error(message)

    def clear(self) -> None:
        self.message.setText("")
        self.details.setPlainText("")
        self.toggle.setChecked(False)
        self.setVisible(False)

    @property
    def text(self) -> str:
        return self.message.text()


def confirm_remote_host(base_url: str | None, ask: Callable[[str], bool]) -> bool:
    """Images leave the machine only after a yes for that host (asked once per session, for every dock).

    The one consent of the CLI, evaluation and the widgets (`remote_hosts.CONSENT`), so a host confirmed
    in Analyze is not asked again in Evaluate, and the question names the real host.
    """
    from napari_fracto.remote_hosts import CONSENT

    warning = CONSENT.warning(base_url or None)
    if warning is None:
        return True
    if not ask(warning):
        return False
    CONSENT.confirm(base_url or None)
    return True


@dataclass
class RunControls:
    """A dock's run row: start and Cancel buttons, a progress bar, a status line and the error panel."""

    start: QPushButton
    cancel: QPushButton
    progress: QProgressBar
    status: QLabel
    errors: ErrorPanel

    def running(self, text: str) -> None:
        """A run started: Start off, Cancel on, a busy progress bar, `text` as the status."""
        self.errors.clear()
        self.start.setEnabled(False)
        self.cancel.setEnabled(True)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.status.setText(text)

    def idle(self, text: str | None = None) -> None:
        """The run is over: Start on, Cancel off, the progress bar hidden (and `text` as the status)."""
        self.start.setEnabled(True)
        self.cancel.setEnabled(False)
        self.progress.setVisible(False)
        if text is not None:
            self.status.setText(text)

    def show_progress(self, done: int, total: int, message: str) -> None:
        """A worker's progress relayed to the Qt thread (total 0: still busy, no count)."""
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
        self.status.setText(message)


def add_run_controls(
    layout: Any,
    text: str,
    on_start: Callable[[], Any],
    on_cancel: Callable[[], Any],
    *,
    tooltip: str = "",
    progress_text: bool = True,
    progress_hidden: bool = True,
) -> RunControls:
    """The run row every dock has, added to `layout`; Cancel starts disabled (nothing runs yet)."""
    start = QPushButton(text)
    start.setToolTip(tooltip)
    start.clicked.connect(lambda *_: on_start())
    cancel = QPushButton("Cancel")
    cancel.setEnabled(False)
    cancel.clicked.connect(lambda *_: on_cancel())
    layout.addWidget(hbox(start, cancel))
    progress = QProgressBar()
    progress.setTextVisible(progress_text)
    progress.setVisible(not progress_hidden)
    layout.addWidget(progress)
    status = QLabel("")
    status.setWordWrap(True)
    layout.addWidget(status)
    errors = ErrorPanel()
    layout.addWidget(errors)
    return RunControls(start, cancel, progress, status, errors)
