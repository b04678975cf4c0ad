"""Two-way binding of form fields to the viewer's shared LoopState, so every dock shows the same choice."""

from __future__ import annotations

import weakref
from typing import Any

from qtpy.QtWidgets import QComboBox, QLineEdit

from napari_fracto.loop_state import LoopState


def bind_text(widget: QLineEdit | QComboBox, state: LoopState, field: str) -> None:
    """Typing in `widget` sets `state.<field>`; a change of the field (from another dock) shows here.

    The form takes the state's value when it has one; an empty state takes the form's value.
    """

    ref = weakref.ref(widget)  # the state outlives a closed dock: it must not keep the widget alive
    events = getattr(state.events, field)

    def text(w: Any) -> str:
        return w.text() if isinstance(w, QLineEdit) else w.currentText()

    def show(value: Any) -> None:
        w = ref()
        try:
            if w is None:
                raise RuntimeError("the widget is gone")
            value = "" if value is None else str(value)
            if text(w) == value:
                return
            if isinstance(w, QLineEdit):
                w.setText(value)
            elif w.isEditable():
                w.setCurrentText(value)
            elif w.findText(value) >= 0:
                w.setCurrentIndex(w.findText(value))
        except RuntimeError:  # its C++ side was deleted (dock closed): stop showing values there
            events.disconnect(show)

    def store(new: str) -> None:
        if getattr(state, field) != new.strip():
            setattr(state, field, new.strip())

    if getattr(state, field):
        show(getattr(state, field))
    elif text(widget).strip():
        store(text(widget))
    events.connect(show)
    signal = widget.textChanged if isinstance(widget, QLineEdit) else widget.currentTextChanged
    signal.connect(store)
