"""The Adapter field: registered adapters listed by name, the shared state's adapter selected.

A part of AnalyzeWidget (widgets/analyze.py), split out to keep each file small; it works on the
widget's own attributes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt

from napari_fracto.training.registry import AdapterChoice, adapter_choices
from napari_fracto.widgets.analyze_form import ADAPTER_TIP

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


class AdaptersMixin:
    """The Adapter field: registered adapters listed by name, the shared state's adapter selected."""

    def _on_shared_adapter(self, path: str) -> None:
        """Another dock chose an adapter (e.g. training just registered one): list and select it."""
        if path != self.adapter_path():
            self.refresh_adapters()
            self.set_adapter_path(path)

    # ---- adapters -------------------------------------------------------------------------------------
    def refresh_adapters(self) -> None:
        """List the adapters registered for this task; ones for another base model are shown greyed out.

        Only the local backend lists them (a server names its own LoRA modules); a typed path stays.
        """
        if not self._form_built:
            return  # signals fired while the form is still being built
        current = self.adapter_path()
        was_listed = any(c.path == current for c in self._adapter_choices)
        choices: list[AdapterChoice] = []
        if self.kind_combo.currentText() == "transformers":
            try:
                choices = adapter_choices(self.task_combo.currentText(), self.model_edit.text())
            except (OSError, ValueError) as exc:  # an unreadable registry: say so, keep the typed path
                logger.warning("Cannot list the registered adapters: %s", exc)
        combo = self.adapter_combo
        combo.blockSignals(True)
        try:
            combo.clear()
            combo.addItem("", "")  # no adapter
            for i, choice in enumerate(choices, start=1):
                combo.addItem(choice.text, choice.path)
                combo.setItemData(i, choice.tooltip, Qt.ItemDataRole.ToolTipRole)
                if not choice.fits:
                    item = combo.model().item(i)
                    if item is not None:
                        item.setEnabled(False)
            self._adapter_choices = choices
            still_fits = any(c.path == current and c.fits for c in choices)
            # a listed adapter of another task or base model is dropped; a typed folder stays as typed
            self.set_adapter_path(current if still_fits or not was_listed else "")
        finally:
            combo.blockSignals(False)

    def adapter_path(self) -> str:
        """The adapter the backend gets: a listed adapter's folder, a registered name's folder, or the
        text as typed (a folder, or a served LoRA name)."""
        combo = self.adapter_combo
        text = combo.currentText().strip()
        if not text:
            return ""
        index = combo.findText(text)
        if index > 0 and combo.itemData(index):
            return str(combo.itemData(index))
        for choice in self._adapter_choices:
            if choice.name == text and choice.fits:
                return choice.path
        return text

    def set_adapter_path(self, path: str) -> None:
        """Show `path` as its registered name when it is a listed adapter, else as typed."""
        combo = self.adapter_combo
        index = combo.findData(path) if path else 0
        if index >= 0:
            combo.setCurrentIndex(index)
        else:
            combo.setCurrentIndex(0)
            combo.setEditText(path)
        self._on_adapter_chosen()

    def _share_adapter(self, *_: Any) -> None:
        if self._form_built and self.state.adapter != self.adapter_path():
            self.state.adapter = self.adapter_path()

    def _on_adapter_chosen(self, *_: Any) -> None:
        """The chosen adapter's base model and evaluation as the field's tooltip."""
        self._share_adapter()
        path = self.adapter_path()
        choice = next((c for c in self._adapter_choices if c.path == path), None)
        self.adapter_combo.setToolTip(choice.tooltip if choice is not None else ADAPTER_TIP)
        if choice is not None:
            self._apply_trained_request(path)

    def _apply_trained_request(self, path: str) -> None:
        """Ask as the adapter was trained: its image budget and display options go into the form."""
        from napari_fracto.training.registry import list_adapters

        entry = next((e for e in list_adapters() if e.path == path), None)
        trained = entry.request_settings if entry is not None else {}
        if trained.get("max_image_tokens"):
            self.tokens_spin.setValue(int(trained["max_image_tokens"]))
        display = trained.get("display")
        if display:
            self.ramp_check.setChecked(bool(display.get("ramp")))
            self.unwrap_check.setChecked(bool(display.get("unwrap")))
            self.crop_check.setChecked(bool(display.get("crop")))

    def showEvent(self, event: Any) -> None:
        # a training run may have registered an adapter since the dock was last shown
        self.refresh_adapters()
        super().showEvent(event)
