"""Evaluate's models to compare: the base model (never an adapter) and the registered adapters, ticked.

A part of EvaluateWidget (widgets/evaluate.py), bound to the viewer's shared LoopState.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidgetItem

from napari_fracto.loop_state import BASE_MODEL

if TYPE_CHECKING:
    from napari_fracto.settings import BackendSettings

logger = logging.getLogger(__name__)

CURRENT = "Current backend settings"
COMPARISON = "Comparison file"
BASE_ROW = "base model (no adapter)"


class ModelsMixin:
    """Evaluate's models to compare: the base model (never an adapter) and the registered adapters, ticked."""

    def _show_task(self, task: str) -> None:
        index = self.task_combo.findData(task or None)
        if index >= 0 and index != self.task_combo.currentIndex():
            self.task_combo.setCurrentIndex(index)
        self.refresh_models()

    def _task_chosen(self, _index: int) -> None:
        task = self.task_combo.currentData()
        if task and task != self.state.task:
            self.state.task = task
        self.refresh_models()

    def base_settings(self) -> BackendSettings:
        """The backend every row starts from: the saved settings with the shared model, NEVER an adapter
        (Analyze saves the adapter it used; inheriting it made "base" the fine-tuned model)."""
        from napari_fracto.settings import load_settings

        update: dict[str, Any] = {"adapter": BASE_MODEL}
        if self.state.model:
            update["model"] = self.state.model
        if self.state.kind in ("transformers", "openai"):
            update["kind"] = self.state.kind
        return load_settings().model_copy(update=update)

    def refresh_models(self, *_: Any) -> None:
        """The pick list: base model, then the adapters registered for the task (ticks kept; the shared
        adapter, e.g. one training just made, is ticked)."""
        from napari_fracto.training.registry import adapter_choices

        ticked = set(self.chosen_adapters()) if self.models_list.count() else {BASE_MODEL}
        if self.state.adapter:
            ticked.add(self.state.adapter)
        task = self.task_combo.currentData() or self.state.task
        settings = self.base_settings()
        choices = []
        if task and settings.kind == "transformers":
            try:
                choices = [c for c in adapter_choices(task, settings.model) if c.fits]
            except (OSError, ValueError) as exc:
                logger.warning("Cannot list the registered adapters: %s", exc)
        self.models_list.clear()
        rows = [(BASE_ROW, BASE_MODEL, "The base model, without any adapter.")]
        rows += [(c.name, c.path, c.tooltip) for c in choices]
        if self.state.adapter and all(path != self.state.adapter for _, path, _ in rows):
            rows.append((Path(self.state.adapter).name, self.state.adapter, self.state.adapter))
        for text, path, tip in rows:
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, path)
            item.setToolTip(tip)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if path in ticked else Qt.CheckState.Unchecked)
            self.models_list.addItem(item)
        self._on_mode_changed(self.mode_combo.currentText())

    def chosen_adapters(self) -> list[str]:
        """The ticked rows' adapters ("" = the base model), in list order."""
        out = []
        for i in range(self.models_list.count()):
            item = self.models_list.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(str(item.data(Qt.ItemDataRole.UserRole) or ""))
        return out

    def set_chosen(self, adapters: list[str]) -> None:
        """Tick exactly these rows ("" = the base model)."""
        for i in range(self.models_list.count()):
            item = self.models_list.item(i)
            on = str(item.data(Qt.ItemDataRole.UserRole) or "") in adapters
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
