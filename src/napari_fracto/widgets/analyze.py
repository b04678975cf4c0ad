"""The Analyze dock widget: one image layer through one vision-language model, findings as an overlay.

The model runs in a napari thread worker (napari stays responsive); layers are only touched in the slot
that receives the result, on the UI thread. The backend is cached between runs while its settings are
unchanged, because loading a local model takes a while.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_fracto.analysis_job import AnalysisJob, ExamplesChoice
from napari_fracto.findings import AnalysisContext, AnalysisResult
from napari_fracto.loop_state import loop_state
from napari_fracto.overlay import advice_text, as_sentence, canvas_text, label_definition
from napari_fracto.training.registry import AdapterChoice, adapter_choices
from napari_fracto.viewer_layers import (
    DISPLAY_OF,
    Plane,
    PtychoParts,
    canvas_text_overlay,
    display_layer_name,
    displayed_plane,
    ptycho_parts,
)
from napari_fracto.vocabulary import analysis_tasks
from napari_fracto.widgets._binding import bind_text
from napari_fracto.widgets._common import (
    DEVICES,
    ErrorPanel,
    Outcome,
    ProgressRelay,
    fit_width,
    hbox,
    run_catching,
    scrolling_body,
    show_error,
    show_info,
    show_warning,
)
from napari_fracto.widgets.download_watch import DownloadWatch
from napari_fracto.widgets.send_to_review import Item, SendToReview

if TYPE_CHECKING:
    from collections.abc import Callable

    import napari

    from napari_fracto.backends.base import Backend
    from napari_fracto.ptycho.display import DisplayOptions
    from napari_fracto.settings import BackendSettings

logger = logging.getLogger(__name__)

# Hosts the user agreed to send images to, for the lifetime of the napari session (all widgets).
_CONFIRMED_HOSTS: set[str] = set()

KINDS = ("transformers", "openai")
NO_POSITIONS_TIP = (
    "Needs the scan positions and the probe: open the reconstruction from a file that has them "
    "(Ptychodus .h5, CXI with translations, .npz with xcoords/ycoords), which adds the '... scan "
    "positions' and '... probe amplitude' layers."
)
ADAPTER_TIP = (
    "A LoRA adapter: pick one registered by training (for the task and model above) or type a folder. "
    "With an OpenAI-compatible server: the served LoRA name."
)


def _host(settings: BackendSettings) -> str:
    return urlparse(settings.base_url).hostname or settings.base_url or "api.openai.com"


def _ask_user(message: str) -> bool:
    """The default remote-host confirmation: a modal question, 'No' as the default answer."""
    answer = QMessageBox.question(
        None,
        "Send the image to a remote server?",
        message,
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def _default_make_backend(settings: BackendSettings, api_key: str | None) -> Backend:
    from napari_fracto.backends.factory import make_backend

    return make_backend(settings, api_key=api_key)


class AnalyzeWidget(QWidget):
    """Dock widget: pick an image, describe the sample, choose a model, press Analyze.

    Test and embedding hooks: `make_backend(settings, api_key)` builds the backend and
    `confirm_remote(message) -> bool` asks before an image leaves the machine.
    """

    result_ready = Signal(object)  # the AnalysisResult, after the overlay is applied
    run_finished = Signal()  # back to idle, whatever happened

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.make_backend: Callable[[BackendSettings, str | None], Backend] = _default_make_backend
        self.confirm_remote: Callable[[str], bool] = _ask_user
        self.last_result: AnalysisResult | None = None
        self.state = loop_state(napari_viewer)
        self._results: dict[str, tuple[AnalysisResult, Plane | None]] = {}  # image layer -> last result
        self._shown_for: str | None = None  # the image whose verdict is on the canvas
        self._backend: Backend | None = None
        self._backend_key: str | None = None
        self._job: AnalysisJob | None = None
        self._worker: Any = None
        self._relay = ProgressRelay(self)
        self._relay.progress.connect(self._on_progress)
        self._download: DownloadWatch | None = None

        self._build_ui()
        self._load_settings()
        self._refresh_layers()
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._on_active_layer)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layers)
        self._bind_state()
        fit_width(self)
        self._set_busy(False)

    def _bind_state(self) -> None:
        """Task, backend, model, device, examples dataset and adapter are the viewer's shared choices."""
        bind_text(self.task_combo, self.state, "task")
        bind_text(self.kind_combo, self.state, "kind")
        bind_text(self.model_edit, self.state, "model")
        bind_text(self.device_combo, self.state, "device")
        bind_text(self.examples_edit, self.state, "dataset")
        if self.state.adapter:
            self.set_adapter_path(self.state.adapter)
        else:
            self.state.adapter = self.adapter_path()
        self.state.events.adapter.connect(self._on_shared_adapter)
        self.state.events.model.connect(self.refresh_adapters)

    def _on_shared_adapter(self, path: str) -> None:
        """Another dock chose an adapter (e.g. training just registered one): list and select it."""
        if path != self.adapter_path():
            self.refresh_adapters()
            self.set_adapter_path(path)

    # ---- UI -------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        layout = scrolling_body(self)
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image layer to analyse; for a stack, the plane on screen.")
        self.image_combo.currentTextChanged.connect(self._on_image_chosen)
        self.task_combo = QComboBox()
        self.task_combo.addItems(analysis_tasks())
        self.task_combo.currentTextChanged.connect(self._on_task_changed)
        form.addRow("Image", self.image_combo)
        form.addRow("Task", self.task_combo)
        layout.addLayout(form)

        sample = QWidget()
        sform = QFormLayout(sample)
        self.material_edit = QLineEdit()
        self.material_edit.setPlaceholderText("e.g. Ti-6Al-4V, MgAl2O4")
        self.sample_type_edit = QLineEdit()
        self.sample_type_edit.setPlaceholderText("e.g. fatigue specimen, integrated circuit")
        self.magnification_edit = QLineEdit()
        self.magnification_edit.setPlaceholderText("e.g. 2000x, 10 nm pixels")
        self.notes_edit = QLineEdit()
        sform.addRow("Material", self.material_edit)
        sform.addRow("Sample type", self.sample_type_edit)
        sform.addRow("Magnification", self.magnification_edit)
        sform.addRow("Notes", self.notes_edit)
        self.sample_section = _Section("Sample (helps the model)", sample, expanded=True)
        layout.addWidget(self.sample_section)

        ptycho = QWidget()
        pform = QFormLayout(ptycho)
        self.ramp_check = QCheckBox("Remove phase ramp")
        self.unwrap_check = QCheckBox("Unwrap phase")
        self.crop_check = QCheckBox("Crop to scanned region")
        for box in (self.ramp_check, self.unwrap_check, self.crop_check):
            box.toggled.connect(self._update_display)
            pform.addRow(box)
        self.display_hint = QLabel("")
        self.display_hint.setWordWrap(True)
        pform.addRow(self.display_hint)
        self.recon_settings_edit = QPlainTextEdit()
        self.recon_settings_edit.setPlaceholderText(
            "optional, for 'Suggest fixes': e.g. LSQML, 40 iterations, 1 probe mode, no position correction"
        )
        self.recon_settings_edit.setMaximumHeight(60)
        self.recon_settings_edit.setToolTip(
            "How the reconstruction was made; sent to the model with the image."
        )
        pform.addRow("Reconstruction settings", self.recon_settings_edit)
        self.ptycho_section = _Section("Ptychography", ptycho, expanded=True)
        layout.addWidget(self.ptycho_section)

        model = QWidget()
        mform = QFormLayout(model)
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(KINDS)
        self.kind_combo.setToolTip("transformers: a local model; openai: any OpenAI-compatible server.")
        self.kind_combo.currentTextChanged.connect(self._on_kind_changed)
        self.model_edit = QLineEdit()
        self.model_edit.setToolTip("A Hugging Face model id, a local model folder, or the served model name.")
        self.model_browse = QToolButton()
        self.model_browse.setText("…")
        self.model_browse.clicked.connect(lambda: self._browse_dir(self.model_edit, "Model folder"))
        self.base_url_edit = QLineEdit()
        self.base_url_edit.setPlaceholderText("empty = api.openai.com; e.g. http://localhost:8000/v1")
        self.adapter_combo = QComboBox()
        self.adapter_combo.setEditable(True)
        self.adapter_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.adapter_combo.lineEdit().setPlaceholderText("none; a fine-tuned adapter or a LoRA folder")
        self.adapter_combo.setToolTip(ADAPTER_TIP)
        self.adapter_combo.currentIndexChanged.connect(self._on_adapter_chosen)
        self.adapter_combo.currentTextChanged.connect(self._share_adapter)
        self.adapter_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.adapter_combo.setMinimumContentsLength(12)
        self.adapter_browse = QToolButton()
        self.adapter_browse.setText("…")
        self.adapter_browse.setToolTip("Pick an adapter folder (holding adapter_config.json).")
        self.adapter_browse.clicked.connect(self._browse_adapter)
        self.adapter_refresh = QToolButton()
        self.adapter_refresh.setText("⟳")
        self.adapter_refresh.setToolTip("Look again for adapters registered by training.")
        self.adapter_refresh.clicked.connect(self.refresh_adapters)
        self.model_edit.editingFinished.connect(self.refresh_adapters)
        self.api_key_edit = QLineEdit()
        self.api_key_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.api_key_edit.setToolTip("Kept in memory only, never saved.")
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.tokens_spin = QSpinBox()
        self.tokens_spin.setRange(16, 16384)
        self.tokens_spin.setSingleStep(256)
        self.tokens_spin.setToolTip("Image tokens per request (one per 32x32 pixels); larger is slower.")
        self.tiles_spin = QSpinBox()
        self.tiles_spin.setRange(1, 8)
        self.tiles_spin.setToolTip("Split the image into N x N tiles so fine features survive the budget.")
        self.advice_check = QCheckBox("Suggest fixes (ptychography)")
        mform.addRow("Backend", self.kind_combo)
        mform.addRow("Model", hbox(self.model_edit, self.model_browse))
        mform.addRow("Base URL", self.base_url_edit)
        mform.addRow("Adapter", hbox(self.adapter_combo, self.adapter_browse, self.adapter_refresh))
        mform.addRow("API key", self.api_key_edit)
        mform.addRow("Device", self.device_combo)
        mform.addRow("Image tokens", self.tokens_spin)
        mform.addRow("Tiles", self.tiles_spin)
        mform.addRow(self.advice_check)
        # collapsed once a model is configured: the results need the room more than the settings
        self.model_section = _Section("Model", model, expanded=False)
        layout.addWidget(self.model_section)

        examples = QWidget()
        eform = QFormLayout(examples)
        self.examples_edit = QLineEdit()
        self.examples_edit.setPlaceholderText("corrections dataset folder")
        self.examples_edit.setToolTip("Solved examples come from this dataset's reviewed train images.")
        examples_browse = QToolButton()
        examples_browse.setText("…")
        examples_browse.clicked.connect(lambda: self._browse_dir(self.examples_edit, "Corrections dataset"))
        self.shots_spin = QSpinBox()
        self.shots_spin.setRange(0, 8)
        self.shots_spin.setToolTip(
            "Solved examples (image + corrected answer) put in the prompt before the image; 0 = none. "
            "Never the image itself or a rotated copy of it."
        )
        self.selection_combo = QComboBox()
        self.selection_combo.addItems(["similar", "random"])
        self.selection_combo.setToolTip(
            "similar: nearest by texture and by material / sample type; random: a seeded draw."
        )
        eform.addRow("Dataset", hbox(self.examples_edit, examples_browse))
        eform.addRow("Shots", self.shots_spin)
        eform.addRow("Selection", self.selection_combo)
        self.examples_section = _Section("Examples (in-context)", examples, expanded=False)
        layout.addWidget(self.examples_section)
        self._feature_cache: Any = None

        buttons = QHBoxLayout()
        self.analyze_button = QPushButton("Analyze")
        self.analyze_button.clicked.connect(self.analyze)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.analyze_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(False)
        layout.addWidget(self.progress_bar)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.error_panel = ErrorPanel()
        layout.addWidget(self.error_panel)

        self.verdict_label = QLabel("")
        self.verdict_label.setWordWrap(True)
        self.verdict_label.setStyleSheet("font-weight: bold")
        self.verdict_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.verdict_label)
        self.results_table = QTableWidget(0, 3)
        self.results_table.setHorizontalHeaderLabels(["Label", "Confidence", "Box"])
        self.results_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.results_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.results_table.verticalHeader().setVisible(False)
        self.results_table.setMinimumHeight(120)
        layout.addWidget(self.results_table)
        self.unknown_label = QLabel("")
        self.unknown_label.setWordWrap(True)
        layout.addWidget(self.unknown_label)
        self.advice_label = QLabel("")
        self.advice_label.setWordWrap(True)
        self.advice_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.advice_label)
        self.disagreement_label = QLabel("")
        self.disagreement_label.setWordWrap(True)
        self.disagreement_label.setStyleSheet("color: #E69F00")  # the palette's orange: a caution
        self.disagreement_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.disagreement_label)
        self.evidence_label = QLabel("")
        self.evidence_label.setWordWrap(True)
        self.evidence_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.evidence_label.setToolTip(
            "Cheap measures on the image as sent to the model; ⚑ marks a measure past its threshold. "
            "Thresholds and how each is measured: docs/ptychography.md."
        )
        self.evidence_section = _Section("Evidence", self.evidence_label, expanded=True)
        self.evidence_section.setVisible(False)
        layout.addWidget(self.evidence_section)

        self.raw_text = QPlainTextEdit()
        self.raw_text.setReadOnly(True)
        self.raw_text.setMaximumHeight(160)
        self.raw_section = _Section("Model answer", self.raw_text, expanded=False)
        layout.addWidget(self.raw_section)
        self.send_to_review = SendToReview(self.state, self.review_items)
        self.review_section = _Section("Send to review", self.send_to_review, expanded=True)
        layout.addWidget(self.review_section)
        layout.addStretch(1)

    def _browse_dir(self, edit: QLineEdit, title: str) -> None:
        path = QFileDialog.getExistingDirectory(self, title, edit.text())
        if path:
            edit.setText(path)

    def _browse_adapter(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Adapter folder", self.adapter_path())
        if path:
            self.set_adapter_path(path)

    def _on_kind_changed(self, kind: str) -> None:
        remote = kind == "openai"
        self.base_url_edit.setEnabled(remote)
        self.api_key_edit.setEnabled(remote)
        self.device_combo.setEnabled(not remote)
        self.adapter_browse.setEnabled(not remote)
        self._update_key_placeholder()
        self.refresh_adapters()

    def _on_task_changed(self, task: str) -> None:
        self.advice_check.setEnabled(task == "ptychography")
        self.recon_settings_edit.setEnabled(task == "ptychography")
        self.ptycho_section.setVisible(task == "ptychography")  # fractographers never need it
        self.refresh_adapters()

    # ---- adapters -------------------------------------------------------------------------------------
    def refresh_adapters(self) -> None:
        """List the adapters registered for this task; ones for another base model are shown greyed out.

        Only the local backend lists them (a server names its own LoRA modules); a typed path stays.
        """
        if not hasattr(self, "adapter_combo"):
            return  # signals fired while the form is still being built
        current = self.adapter_path()
        was_listed = any(c.path == current for c in getattr(self, "_adapter_choices", []))
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
        for choice in getattr(self, "_adapter_choices", []):
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
        state = getattr(self, "state", None)
        if state is not None and state.adapter != self.adapter_path():
            state.adapter = self.adapter_path()

    def _on_adapter_chosen(self, *_: Any) -> None:
        """The chosen adapter's base model and evaluation as the field's tooltip."""
        self._share_adapter()
        path = self.adapter_path()
        choice = next((c for c in getattr(self, "_adapter_choices", []) if c.path == path), None)
        self.adapter_combo.setToolTip(choice.tooltip if choice is not None else ADAPTER_TIP)

    def showEvent(self, event: Any) -> None:
        # a training run may have registered an adapter since the dock was last shown
        self.refresh_adapters()
        super().showEvent(event)

    def examples_choice(self) -> ExamplesChoice | None:
        """The Examples row, or None when no examples are asked for (shots 0)."""
        shots = self.shots_spin.value()
        if shots <= 0:
            return None
        if self._feature_cache is None:
            from napari_fracto.icl import FeatureCache

            self._feature_cache = FeatureCache()
        return ExamplesChoice(
            self.examples_edit.text().strip(),
            shots,
            self.selection_combo.currentText(),
            self._feature_cache,
        )

    def _update_key_placeholder(self) -> None:
        import os

        env = getattr(self, "_settings", None)
        name = env.api_key_env if env is not None else "OPENAI_API_KEY"
        found = "set" if os.environ.get(name) else "not set"
        self.api_key_edit.setPlaceholderText(f"default: ${name} ({found})")

    # ---- layers ---------------------------------------------------------------------------------------
    def _image_layers(self) -> list[Any]:
        from napari.layers import Image

        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image) and DISPLAY_OF not in layer.metadata
        ]

    def _on_layer_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self._refresh_layers)
        self._refresh_layers()
        self._follow(event.value)

    def _on_active_layer(self, event: Any) -> None:
        self._follow(event.value)

    def _follow(self, layer: Any) -> None:
        """The image choice follows the layer the user opened or selected; a ptychography product
        selects its phase layer and the ptychography task. Never while a run is on its way."""
        if layer is None or self.busy:
            return
        images = self._image_layers()
        target = None
        if layer in images:
            target = layer
        elif DISPLAY_OF in getattr(layer, "metadata", {}):
            return  # the derived display layer: the original stays chosen
        for candidate in images:  # the amplitude (or scan positions) of a product: its phase
            if candidate is not layer and ptycho_parts(self.viewer, candidate) is not None:
                base = candidate.name.removesuffix(" phase")
                if layer.name.startswith(base + " ") and (target is None or target is layer):
                    target = candidate
        if target is None:
            return
        if ptycho_parts(self.viewer, target) is not None:
            self.task_combo.setCurrentText("ptychography")
        if self.image_combo.currentText() != target.name:
            self.image_combo.setCurrentText(target.name)

    def _on_image_chosen(self, name: str) -> None:
        """Another image: its own last result (or none) replaces the verdict of the previous one."""
        if self._shown_for is not None and name != self._shown_for:
            self._clear_result_view()
            if name in self._results:
                result, _plane = self._results[name]
                self._show_panel(result)
        self._update_display()

    def _clear_result_view(self) -> None:
        overlay = canvas_text_overlay(self.viewer)
        overlay.text = ""
        overlay.visible = False
        for label in (self.verdict_label, self.unknown_label, self.advice_label, self.disagreement_label):
            label.setText("")
        self.results_table.setRowCount(0)
        self.evidence_section.setVisible(False)
        self.raw_text.setPlainText("")
        self._shown_for = None

    def review_items(self, every_image: bool) -> list[Item]:
        """What Send to review stores: the chosen image (or all), the plane analysed, the last result."""
        layers = self._image_layers() if every_image else [self._selected_layer()]
        items = []
        task = self.task_combo.currentText()
        for layer in layers:
            if layer is None:
                continue
            result, plane = self._results.get(layer.name, (None, None))
            if plane is None:
                try:
                    plane = displayed_plane(layer, self.viewer)
                except ValueError as exc:
                    show_warning(f"Not sent: {layer.name}: {exc}")
                    continue
            scale = tuple(float(s) for s in layer.scale[-2:])
            units = tuple(str(u) for u in layer.units[-2:])
            items.append(Item(layer.name, plane.array, result.task if result else task, result, scale, units))
        return items

    def _refresh_layers(self, *_: Any) -> None:
        current = self.image_combo.currentText()
        names = [layer.name for layer in self._image_layers()]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        else:
            active = self.viewer.layers.selection.active
            if active is not None and active.name in names:
                self.image_combo.setCurrentText(active.name)
        self.image_combo.blockSignals(False)
        self._set_busy(self._job is not None)
        # only which options apply: layers come and go here (napari closing, the display layer itself),
        # and re-adding a display layer from this event would fight them
        self._update_display_controls()

    def _selected_layer(self) -> Any:
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    # ---- ptychography display -------------------------------------------------------------------------
    def display_options(self) -> DisplayOptions | None:
        """The display options ticked for the selected layer; None when none applies (nothing changes)."""
        from napari_fracto.ptycho.display import DisplayOptions

        layer = self._selected_layer()
        if layer is None or ptycho_parts(self.viewer, layer) is None:
            return None
        ramp, unwrap = self.ramp_check.isChecked(), self.unwrap_check.isChecked()
        crop = self.crop_check.isChecked() and self.crop_check.isEnabled()
        if not (ramp or unwrap or crop):
            return None
        return DisplayOptions(ramp=ramp, unwrap=unwrap, crop=crop)

    def _update_display(self, *_: Any) -> None:
        """Enable the options that fit the selected layer and show '<name> (display)' as they ask."""
        if getattr(self, "_in_display_update", False):
            return
        self._in_display_update = True
        try:
            self._update_display_now()
        except ValueError as exc:  # e.g. positions outside the object: say so, leave the data alone
            show_error(f"Cannot apply the display options: {exc}")
        finally:
            self._in_display_update = False

    def _update_display_controls(self) -> tuple[Any, PtychoParts | None]:
        """Enable the options that fit the selected layer; crop only with scan positions and a probe."""
        layer = self._selected_layer()
        parts = ptycho_parts(self.viewer, layer) if layer is not None else None
        for box in (self.ramp_check, self.unwrap_check):
            box.setEnabled(parts is not None)
        self.crop_check.setEnabled(parts is not None and parts.geometry.can_crop)
        self.crop_check.setToolTip("" if self.crop_check.isEnabled() else NO_POSITIONS_TIP)
        if parts is None:
            self.display_hint.setText(
                "Display options apply to the phase layer of a 2-D ptychography reconstruction."
                if layer is not None
                else ""
            )
        else:
            self.display_hint.setText("" if parts.geometry.can_crop else "No scan positions: cannot crop.")
        return layer, parts

    def _update_display_now(self) -> None:
        layer, parts = self._update_display_controls()
        if parts is None:
            return
        options = self.display_options()
        name = display_layer_name(layer.name)
        if options is None:
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
                layer.visible = True
            return
        from napari_fracto.ptycho.prepare import prepare_image

        prepared = prepare_image(parts.complex_object(), options, parts.geometry)
        shown = prepared.image  # the real phase as shown (unwrapped when asked)
        scale = np.asarray(layer.scale, dtype=float)
        translate = np.asarray(layer.translate, dtype=float) + scale * np.asarray(
            prepared.offset, dtype=float
        )
        meta = {DISPLAY_OF: layer.name, "preprocessing": prepared.preprocessing}
        if name in self.viewer.layers:
            shown_layer = self.viewer.layers[name]
            shown_layer.data = shown.astype(np.float32)
            shown_layer.translate = translate
            shown_layer.metadata = {**shown_layer.metadata, **meta}
            shown_layer.reset_contrast_limits()
        else:
            self.viewer.add_image(
                shown.astype(np.float32),
                name=name,
                scale=scale,
                translate=translate,
                units=tuple(layer.units),
                colormap="gray",
                metadata=meta,
            )
        layer.visible = False  # the original stays untouched underneath; unticking shows it again

    # ---- settings -------------------------------------------------------------------------------------
    def _load_settings(self) -> None:
        from napari_fracto.settings import load_settings, settings_path

        # first use: open the model settings, there is something to choose
        self.model_section.set_expanded(not settings_path().exists())
        self._settings = load_settings()
        s = self._settings
        self.kind_combo.setCurrentText(s.kind)
        self.model_edit.setText(s.model)
        self.base_url_edit.setText(s.base_url)
        self.refresh_adapters()
        self.set_adapter_path(s.adapter)
        self.device_combo.setCurrentText(s.device)
        self.tokens_spin.setValue(s.max_image_tokens)
        self._on_kind_changed(s.kind)
        self._on_task_changed(self.task_combo.currentText())

    def current_settings(self) -> BackendSettings:
        """The settings the form describes (fields the form does not show keep their saved values)."""
        return self._settings.model_copy(
            update={
                "kind": self.kind_combo.currentText(),
                "model": self.model_edit.text().strip(),
                "base_url": self.base_url_edit.text().strip(),
                "adapter": self.adapter_path(),
                "device": self.device_combo.currentText(),
                "max_image_tokens": self.tokens_spin.value(),
            }
        )

    def context(self) -> AnalysisContext:
        return AnalysisContext(
            material=self.material_edit.text().strip(),
            sample_type=self.sample_type_edit.text().strip(),
            magnification=self.magnification_edit.text().strip(),
            notes=self.notes_edit.text().strip(),
        )

    # ---- running --------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._job is not None

    def _set_busy(self, busy: bool) -> None:
        self.analyze_button.setEnabled(not busy and self.image_combo.count() > 0)
        self.cancel_button.setEnabled(busy)
        if busy:
            self.progress_bar.setRange(0, 0)  # indeterminate until the first tile is done
        else:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)

    def analyze(self) -> None:
        """Start analysing the selected image (the plane on screen for a stack); returns at once."""
        if self.busy:
            return
        layer = self._selected_layer()
        if layer is None:
            show_error("Open an image first, then pick it in the Analyze panel's 'Image' list.")
            return
        try:
            plane = displayed_plane(layer, self.viewer)
            settings = self._validated_settings()
        except ValueError as exc:
            show_error(str(exc))
            return
        if not settings.model:
            self.model_section.set_expanded(True)
            show_error("Enter a model: a Hugging Face id, a local model folder, or the served model name.")
            return
        examples = self.examples_choice()
        if examples is not None and not examples.dataset:
            self.examples_section.set_expanded(True)
            show_error(
                f"{examples.shots} in-context example(s) need a corrections dataset: pick its folder under "
                "'Examples', or set Shots to 0."
            )
            return
        from napari_fracto.settings import save_settings

        try:
            save_settings(settings)
        except OSError as exc:
            logger.warning("Could not save the backend settings: %s", exc)
        self._settings = settings
        if settings.kind == "openai" and not self._remote_confirmed(settings):
            show_info("Not sent: the remote server was not confirmed.")
            return

        api_key = self.api_key_edit.text().strip() or None
        key = settings.model_dump_json() + "\0" + (api_key or "")
        if key != self._backend_key:
            self._close_backend()
            self._backend_key = key
        parts = ptycho_parts(self.viewer, layer) if not plane.leading else None
        task = self.task_combo.currentText()
        job = AnalysisJob(
            array=plane.array,
            task=task,
            settings=settings,
            api_key=api_key,
            backend=self._backend,
            make_backend=self.make_backend,
            context=self.context(),
            tiles=self.tiles_spin.value(),
            advice=self.advice_check.isEnabled() and self.advice_check.isChecked(),
            source=plane.source,
            cancel=threading.Event(),
            progress=self._relay,
            amplitude=parts.amplitude.data if parts is not None and parts.amplitude is not None else None,
            display=self.display_options(),
            geometry=parts.geometry if parts is not None else None,
            recon_settings=self.recon_settings_edit.toPlainText().strip() if task == "ptychography" else "",
            examples=examples,
        )
        self._start(job, layer, plane)

    def _validated_settings(self) -> BackendSettings:
        from pydantic import ValidationError

        try:
            return self.current_settings()
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"Check the model settings: {problems}") from None

    def _remote_confirmed(self, settings: BackendSettings) -> bool:
        from napari_fracto.backends.openai_backend import remote_warning

        host = _host(settings)
        if host in _CONFIRMED_HOSTS:
            return True
        message = remote_warning(settings.base_url)
        if message is None:
            return True
        if self.confirm_remote(message):
            _CONFIRMED_HOSTS.add(host)
            return True
        return False

    def _start(self, job: AnalysisJob, layer: Any, plane: Plane) -> None:
        from napari.qt.threading import create_worker

        self._job = job
        self._set_busy(True)
        self.status_label.setText(f"Analysing {plane.source} …")
        if job.backend is None and job.settings.kind == "transformers":
            self._download = self._download or DownloadWatch(self.status_label, self)
            self._download.start(job.settings.model)  # shows size and progress when not cached yet
        worker = create_worker(run_catching, job.run, _start_thread=False)
        worker.returned.connect(lambda outcome: self._on_returned(job, outcome, layer, plane))
        worker.finished.connect(lambda: self._on_worker_finished(job))
        self._worker = worker
        worker.start()

    def cancel(self) -> None:
        """Stop the running analysis: the backend is told to stop, its answer (if any) is dropped."""
        job = self._job
        if job is None:
            return
        job.cancel.set()
        if self._worker is not None:
            self._worker.quit()
        self._job = None
        self._worker = None
        self._stop_download_watch()
        self.status_label.setText("Cancelled.")
        self._set_busy(False)
        self.run_finished.emit()

    def _stop_download_watch(self) -> None:
        if self._download is not None:
            self._download.stop()

    def _on_progress(self, done: int, total: int, _message: str = "") -> None:
        self._stop_download_watch()  # the model answers: it is loaded
        if self._job is not None and total > 0:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(done)

    def _on_worker_finished(self, job: AnalysisJob) -> None:
        # Keep a freshly loaded model for the next run, even when this run was cancelled or failed.
        # Only a backend this job built is its to keep or close, and only once: the worker's `finished`
        # can arrive after the next run has already replaced (and closed) the cached one.
        if not job.built_backend:
            return
        job.built_backend = False
        if job.backend is not None and job.backend is not self._backend:
            if self._backend is None and self._backend_key == job.settings.model_dump_json() + "\0" + (
                job.api_key or ""
            ):
                self._backend = job.backend
            else:
                _close_quietly(job.backend)

    def _on_returned(self, job: AnalysisJob, outcome: Outcome, layer: Any, plane: Plane) -> None:
        if job is not self._job or job.cancel.is_set():
            return  # a cancelled run: its answer is no longer wanted
        self._job = None
        self._worker = None
        self._stop_download_watch()
        self._on_worker_finished(job)
        try:
            if outcome.cancelled:
                self.status_label.setText("Cancelled.")
            elif outcome.error:
                self.status_label.setText("Failed.")
                self.error_panel.show_outcome(outcome)
            else:
                self.show_result(outcome.value, layer, plane)
        finally:
            self._set_busy(False)
            self.run_finished.emit()

    # ---- results --------------------------------------------------------------------------------------
    def show_result(self, result: AnalysisResult, layer: Any, plane: Plane | None = None) -> Any:
        """Put `result` on the canvas (replacing this image's findings layer) and in the panel."""
        from napari_fracto.overlay import (
            findings_layer_name,
            findings_to_shapes,
            unknown_labels_text,
            update_findings_layer,
            verdict_text,
        )
        from napari_fracto.vocabulary import load_vocabulary

        vocab = load_vocabulary(result.task)
        verdict = verdict_text(result, vocab)
        shapes = None
        if layer in self.viewer.layers:
            spec = findings_to_shapes(
                result,
                vocab,
                image_name=layer.name,
                scale=tuple(layer.scale),
                translate=tuple(layer.translate),
                units=tuple(str(u) for u in layer.units),
                plane=plane.leading if plane is not None else (),
            )
            name = findings_layer_name(layer.name)
            if name in self.viewer.layers:
                shapes = self.viewer.layers[name]
                update_findings_layer(shapes, spec)  # one layer update, no remove + add
            else:
                shapes = self.viewer.add_shapes(spec.data or None, **spec.layer_kwargs())
            self._results[layer.name] = (result, plane)
            self._shown_for = layer.name
        else:
            show_info("The image layer was closed while it was analysed; results are shown here only.")
        self.error_panel.clear()
        self._show_panel(result, vocab, verdict)
        self.status_label.setText(f"Done in {result.seconds:.1f} s ({result.backend}: {result.model}).")
        self.last_result = result
        if not result.parse_ok:
            show_warning(verdict + " The raw answer is under 'Model answer' in the Analyze panel.")
        if result.unknown_labels:
            show_info(unknown_labels_text(result) + ". Add them to the vocabulary if they are real findings.")
        self.result_ready.emit(result)
        return shapes

    def _show_panel(self, result: AnalysisResult, vocab: Any = None, verdict: str | None = None) -> None:
        """The verdict on the canvas and the panel's table, advice, evidence and raw answer."""
        from napari_fracto.overlay import unknown_labels_text, verdict_text
        from napari_fracto.vocabulary import load_vocabulary

        vocab = vocab if vocab is not None else load_vocabulary(result.task)
        verdict = verdict if verdict is not None else verdict_text(result, vocab)
        overlay = canvas_text_overlay(self.viewer)
        overlay.text = canvas_text(result, verdict)
        overlay.box = True  # readable on bright and dark images alike
        overlay.visible = True
        self.verdict_label.setText(verdict)
        self._fill_table(result, vocab)
        self.unknown_label.setText(unknown_labels_text(result))
        self.advice_label.setText(advice_text(result))
        self._show_evidence(result)
        self.raw_text.setPlainText(result.raw_text)
        self._shown_for = self.image_combo.currentText() or self._shown_for

    def _show_evidence(self, result: AnalysisResult) -> None:
        from napari_fracto.ptycho.prepare import evidence_lines

        disagreements = list(result.evidence.get("disagreements", ()))
        self.disagreement_label.setText(
            "\n".join(f"⚠ {as_sentence(d)}" for d in disagreements) if disagreements else ""
        )
        lines = evidence_lines(result.evidence)
        if result.preprocessing:
            lines.append(f"Sent to the model: {result.preprocessing}")
        settings = result.evidence.get("reconstruction_settings")
        if settings:
            lines.append(f"Reconstruction settings given: {settings}")
        self.evidence_label.setText("\n".join(lines))
        self.evidence_section.setVisible(bool(lines))

    def _fill_table(self, result: AnalysisResult, vocab: Any) -> None:
        table = self.results_table
        table.setRowCount(len(result.findings))
        for row, finding in enumerate(result.findings):
            definition = label_definition(vocab, finding.label)
            conf = "" if finding.confidence is None else f"{finding.confidence:.2f}"
            for col, text in enumerate((finding.label, conf, "yes" if finding.box else "no")):
                item = QTableWidgetItem(text)
                item.setToolTip(definition)
                table.setItem(row, col, item)

    # ---- lifetime -------------------------------------------------------------------------------------
    def _close_backend(self) -> None:
        if self._backend is not None:
            _close_quietly(self._backend)
        self._backend = None

    def closeEvent(self, event: Any) -> None:
        self.cancel()
        self._close_backend()
        super().closeEvent(event)


def _close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception:
        logger.exception("Closing the backend failed")


class _Section(QWidget):
    """A titled block that folds away (a Qt group box cannot), so the dock stays short."""

    def __init__(self, title: str, content: QWidget, *, expanded: bool) -> None:
        super().__init__()
        self.content = content
        self.toggle = QToolButton()
        self.toggle.setText(title)
        self.toggle.setCheckable(True)
        self.toggle.setStyleSheet("QToolButton { border: none; font-weight: bold }")
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.toggled.connect(self.set_expanded)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toggle)
        layout.addWidget(content)
        self.toggle.setChecked(expanded)
        self.set_expanded(expanded)

    def set_expanded(self, expanded: bool) -> None:
        self.toggle.setChecked(expanded)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.content.setVisible(expanded)
