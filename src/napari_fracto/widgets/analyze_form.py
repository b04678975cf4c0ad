"""The Analyze panel's form: its sections, built once, and the reactions of its own fields.

A part of AnalyzeWidget (widgets/analyze.py), split out to keep each file small; it works on the
widget's own attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QTableWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_fracto.analysis_job import ExamplesChoice
from napari_fracto.vocabulary import analysis_tasks
from napari_fracto.widgets._common import (
    DEVICES,
    add_run_controls,
    hbox,
    scrolling_body,
)
from napari_fracto.widgets.report_button import ReportButton
from napari_fracto.widgets.send_to_review import SendToReview

if TYPE_CHECKING:
    pass


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


class FormMixin:
    """The Analyze panel's form: its sections, built once, and the reactions of its own fields."""

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
        self._build_sample(layout)
        self._build_ptycho(layout)
        self._build_model(layout)
        self._build_examples(layout)
        self._build_run(layout)
        self._build_results(layout)

    def _build_sample(self, layout: QVBoxLayout) -> None:
        """The sample context sent with the image (material, type, magnification, notes)."""
        sample = QWidget()
        sform = QFormLayout(sample)
        self.material_edit = QLineEdit()
        self.material_edit.setPlaceholderText("e.g. Ti-6Al-4V, MgAl2O4")
        self.sample_type_edit = QLineEdit()
        self.sample_type_edit.setPlaceholderText("e.g. fatigue specimen, integrated circuit")
        self.magnification_edit = QLineEdit()
        self.magnification_edit.setPlaceholderText("e.g. 2000x, 10 nm pixels")
        self.notes_edit = QLineEdit()
        self.instrument_edit = QLineEdit()
        self.instrument_edit.setPlaceholderText("from the SEM file when it says: model, kV, WD, detector")
        sform.addRow("Material", self.material_edit)
        sform.addRow("Sample type", self.sample_type_edit)
        sform.addRow("Magnification", self.magnification_edit)
        sform.addRow("Instrument", self.instrument_edit)
        from napari_fracto.widgets.reader_offer import ReaderOffer

        self.reader_offer = ReaderOffer()
        sform.addRow(self.reader_offer)
        sform.addRow("Notes", self.notes_edit)
        self.sample_section = _Section("Sample (helps the model)", sample, expanded=True)
        layout.addWidget(self.sample_section)

    def _build_ptycho(self, layout: QVBoxLayout) -> None:
        """Ptychography display options and reconstruction settings."""
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

    def _build_model(self, layout: QVBoxLayout) -> None:
        """Backend, model, adapter, device and image budget."""
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

    def _build_examples(self, layout: QVBoxLayout) -> None:
        """In-context examples from a corrections dataset."""
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
        second = QWidget()
        sform = QFormLayout(second)
        self.second_opinion_edit = QLineEdit()
        self.second_opinion_edit.setPlaceholderText("configuration file (.toml / .json), empty: none")
        self.second_opinion_edit.setToolTip(
            "A second model asked the same question at the same time (e.g. an API model beside your "
            "fine-tuned one): the keys of one comparison entry (backend, model, base_url, adapter, ...). "
            "Both answers are recorded; the panel shows where they agree."
        )
        second_browse = QToolButton()
        second_browse.setText("…")
        second_browse.clicked.connect(self._browse_second_opinion)
        sform.addRow("Config", hbox(self.second_opinion_edit, second_browse))
        self.second_section = _Section("Second opinion", second, expanded=False)
        layout.addWidget(self.second_section)
        self._feature_cache: Any = None

    def _browse_second_opinion(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(
            self, "Second opinion configuration", "", "Configurations (*.toml *.json);;All files (*)"
        )
        if path:
            self.second_opinion_edit.setText(path)

    def _build_run(self, layout: QVBoxLayout) -> None:
        """Analyze / Cancel, progress, status and the last error."""
        run = add_run_controls(
            layout, "Analyze", self.analyze, self.cancel, progress_text=False, progress_hidden=False
        )
        self.analyze_button, self.cancel_button, self.progress_bar = run.start, run.cancel, run.progress
        self.status_label, self.error_panel = run.status, run.errors

    def _build_results(self, layout: QVBoxLayout) -> None:
        """Verdict, findings table, advice, evidence, raw answer, Send to review."""
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
        self.second_label = QLabel("")
        self.second_label.setWordWrap(True)
        self.second_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.second_result_section = _Section("Second opinion's answer", self.second_label, expanded=True)
        self.second_result_section.setVisible(False)
        layout.addWidget(self.second_result_section)
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
        self.report_button = ReportButton(self.report_job, "A report of the current image's last result.")
        layout.addWidget(self.report_button)
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

    def _update_key_placeholder(self) -> None:
        import os

        from napari_fracto.remote_hosts import key_variable

        env = self._settings
        name = key_variable(env.base_url if env else "", env.api_key_env if env else "")
        if name is None:  # no key goes to this host unless one is typed or a variable is named
            self.api_key_edit.setPlaceholderText("no key is sent to this server unless you enter one")
            return
        found = "set" if os.environ.get(name) else "not set"
        self.api_key_edit.setPlaceholderText(f"default: ${name} ({found})")

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
