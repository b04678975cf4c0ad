"""Two-way binding of form fields to the viewer's shared LoopState, so every dock shows the same choice."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QComboBox, QLineEdit

from napari_fracto.loop_state import LoopState


def bind_text(widget: QLineEdit | QComboBox, state: LoopState, field: str) -> None:
    """Typing in `widget` sets `state.<field>`; a change of the field (from another dock) shows here.

    The form takes the state's value when it has one; an empty state takes the form's value.
    """

    def text() -> str:
        return widget.text() if isinstance(widget, QLineEdit) else widget.currentText()

    def show(value: Any) -> None:
        value = "" if value is None else str(value)
        if text() == value:
            return
        if isinstance(widget, QLineEdit):
            widget.setText(value)
        elif widget.isEditable():
            widget.setCurrentText(value)
        elif widget.findText(value) >= 0:
            widget.setCurrentIndex(widget.findText(value))

    def store(new: str) -> None:
        if getattr(state, field) != new.strip():
            setattr(state, field, new.strip())

    if getattr(state, field):
        show(getattr(state, field))
    elif text().strip():
        store(text())
    getattr(state.events, field).connect(show)
    signal = widget.textChanged if isinstance(widget, QLineEdit) else widget.currentTextChanged
    signal.connect(store)
    # the state outlives a closed dock: stop showing values in a deleted widget
    widget.destroyed.connect(lambda *_: getattr(state.events, field).disconnect(show))
