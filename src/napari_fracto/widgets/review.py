"""The Review dock widget: go through a queue of images, accept / reject / correct the model's findings on
the canvas, and save each review to the corrections dataset.

Thin on purpose: the review state, its undo log, the queue and the layer conversions live in
`napari_fracto.review` (no Qt). This module wires them to napari: it loads each image with the plugin's
reader, shows the kept boxes on a Shapes layer, and reads edits made there (draw, move, resize, delete)
back into the review.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_fracto.loop_state import loop_state
from napari_fracto.vocabulary import analysis_tasks
from napari_fracto.widgets._binding import bind_text
from napari_fracto.widgets._common import (
    ErrorPanel,
    Outcome,
    fit_width,
    hbox,
    run_catching,
    scrolling_body,
    show_error,
    show_info,
    show_warning,
)
from napari_fracto.widgets.review_predict import PredictSection

if TYPE_CHECKING:
    import napari

    from napari_fracto.dataset import Dataset
    from napari_fracto.review import ReviewQueue, ReviewSession

logger = logging.getLogger(__name__)

#: (napari key, method, what it does): bound on the viewer, listed in the tooltip and docs/review.md.
KEYS: tuple[tuple[str, str, str], ...] = (
    ("G", "accept_all_and_next", "accept all pending findings, save, go to the next unreviewed image"),
    ("W", "save", "save the review of this image"),
    ("Q", "skip", "mark this image skipped, go to the next unreviewed image"),
    ("N", "next_unreviewed", "jump to the next unreviewed image"),
    ("PageDown", "next_image", "next image"),
    ("PageUp", "previous_image", "previous image"),
    ("J", "select_next_finding", "select the next finding in the list"),
    ("K", "select_previous_finding", "select the previous finding in the list"),
    ("H", "accept_selected", "accept the selected finding"),
    ("U", "reject_selected", "reject the selected finding"),
    ("Control-Z", "undo", "undo the last review edit"),
    ("Control-Shift-Z", "redo", "redo"),
)


def keys_help() -> str:
    lines = [f"{key:<16} {what}" for key, _, what in KEYS]
    return "Keys (with the canvas focused):\n" + "\n".join(lines) + "\nR on the findings layer: draw a box"


class ReviewWidget(QWidget):
    """Dock widget: open a dataset, queue images, review each one, save. Keys: see `keys_help()`."""

    image_loaded = Signal(int)  # queue index, after the image and its findings are on the canvas
    saved = Signal(object)  # the ReviewRecord just written

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.dataset: Dataset | None = None
        self.queue: ReviewQueue | None = None
        self.session: ReviewSession | None = None
        self.index: int | None = None
        self.shapes_layer: Any = None
        self._layers: list[Any] = []
        self._sessions: dict[str, ReviewSession] = {}  # unsaved edits survive next / previous
        self._vocab: Any = None
        self._advice_names: list[str] = []  # the advice vocabulary when the task has one
        self._syncing = False
        self._open_worker: Any = None
        self.state = loop_state(napari_viewer)
        self._build_ui()
        self._bind_keys()
        bind_text(self.dataset_edit, self.state, "dataset")
        bind_text(self.task_combo, self.state, "task")
        self.state.events.sent_to_review.connect(self._on_sent)
        self._set_enabled()
        fit_width(self)

    # ---- the loop: images sent from Analyze ------------------------------------------------------------
    def _on_sent(self, image_ids: tuple[str, ...]) -> None:
        """Analyze sent images to the shared dataset: queue them here, first unreviewed on screen."""
        from napari_fracto.review import QueueEntry, ReviewQueue

        if not image_ids:
            return
        root = Path(self.state.dataset).expanduser()
        is_open = self.dataset is not None and Path(self.dataset.root).resolve() == root.resolve()
        if not is_open and not self.open_dataset(root, resume=False):
            return
        entries = [
            QueueEntry(i, self.dataset.image(i).original_name or i[:12]) for i in dict.fromkeys(image_ids)
        ]
        task = self.dataset.image(entries[0].image_id).task or self.task_combo.currentText()
        queue = ReviewQueue(self.dataset, task, entries, key="analyze", source="sent from Analyze")
        queue._persist()
        self._start(queue)

    def queue_entries(self) -> tuple[Path, str, list[tuple[str, str]]] | None:
        """What "Run the model" works on: the dataset folder, the task and the queue's images."""
        if self.dataset is None or self.queue is None:
            return None
        return Path(self.dataset.root), self.queue.task, [(e.image_id, e.name) for e in self.queue.entries]

    def _on_predicted(self, count: int) -> None:
        """New predictions are in the dataset: statuses and the unedited sessions come from there again."""
        if self.queue is None or not count:
            return
        self.queue.refresh()
        self._sessions = {k: v for k, v in self._sessions.items() if v.dirty}
        self.show_image(self.queue.position)

    # ---- UI -------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        from napari_fracto.dataset.core import default_reviewer

        self.setToolTip(keys_help())
        layout = scrolling_body(self)
        form = QFormLayout()
        self.dataset_edit = QLineEdit()
        self.dataset_edit.setPlaceholderText("folder of the corrections dataset (created if new)")
        self.dataset_edit.returnPressed.connect(lambda: self.open_dataset(self.dataset_edit.text()))
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse_dataset)
        form.addRow("Dataset", hbox(self.dataset_edit, browse))
        self.task_combo = QComboBox()
        self.task_combo.addItems(analysis_tasks())
        form.addRow("Task", self.task_combo)
        self.reviewer_edit = QLineEdit(default_reviewer())
        self.reviewer_edit.setToolTip("Recorded with every review you save.")
        form.addRow("Reviewer", self.reviewer_edit)
        layout.addLayout(form)

        self.open_folder_button = QPushButton("Open folder…")
        self.open_folder_button.clicked.connect(self._browse_folder)
        self.open_file_button = QPushButton("Open stack / results…")
        self.open_file_button.setToolTip("An image stack, or the results .jsonl of `napari-fracto analyze`.")
        self.open_file_button.clicked.connect(self._browse_file)
        self.all_button = QPushButton("Whole dataset")
        self.all_button.setToolTip("Review every image of the task in the dataset (e.g. after autolabel).")
        self.all_button.clicked.connect(self.review_dataset)
        layout.addWidget(hbox(self.open_folder_button, self.all_button))
        layout.addWidget(self.open_file_button)

        self.predict = PredictSection(self.state, self.queue_entries)
        self.predict.finished.connect(self._on_predicted)
        layout.addWidget(self.predict)

        self.progress_label = QLabel("Open a dataset to start.")
        self.progress_label.setStyleSheet("font-weight: bold")
        layout.addWidget(self.progress_label)
        self.image_label = QLabel("")
        self.image_label.setWordWrap(True)
        layout.addWidget(self.image_label)

        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Label", "Box (x1, y1, x2, y2)", "Status"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(140)
        layout.addWidget(self.table)

        self.accept_button = QPushButton("Accept (H)")
        self.accept_button.clicked.connect(self.accept_selected)
        self.reject_button = QPushButton("Reject (U)")
        self.reject_button.clicked.connect(self.reject_selected)
        layout.addWidget(hbox(self.accept_button, self.reject_button))

        self.label_combo = QComboBox()
        self.label_combo.setToolTip(
            "The label for relabelling, for a missed image-level label and for new boxes."
        )
        self.label_combo.currentTextChanged.connect(self._on_label_choice)
        self.relabel_button = QPushButton("Set label")
        self.relabel_button.clicked.connect(lambda: self.relabel_selected(self.label_combo.currentText()))
        self.add_label_button = QPushButton("Add image label")
        self.add_label_button.clicked.connect(lambda: self.add_image_label(self.label_combo.currentText()))
        layout.addWidget(hbox(self.label_combo, self.relabel_button, self.add_label_button))
        hint = QLabel("Draw a box: select the findings layer, press R and drag; it gets the label above.")
        hint.setWordWrap(True)
        layout.addWidget(hint)

        # reconstruction advice (ptychography): reviewed like the labels, saved as the review's advice
        self.advice_box = QWidget()
        advice_layout = QVBoxLayout(self.advice_box)
        advice_layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Reconstruction advice")
        title.setStyleSheet("font-weight: bold")
        advice_layout.addWidget(title)
        self.advice_table = QTableWidget(0, 2)
        self.advice_table.setHorizontalHeaderLabels(["Suggestion", "Status"])
        self.advice_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.advice_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.advice_table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.advice_table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.advice_table.verticalHeader().setVisible(False)
        self.advice_table.setMaximumHeight(120)
        self.advice_table.setToolTip("The model's suggested changes to the reconstruction, and yours.")
        advice_layout.addWidget(self.advice_table)
        self.accept_advice_button = QPushButton("Accept advice")
        self.accept_advice_button.clicked.connect(self.accept_selected_advice)
        self.reject_advice_button = QPushButton("Reject advice")
        self.reject_advice_button.clicked.connect(self.reject_selected_advice)
        advice_layout.addWidget(hbox(self.accept_advice_button, self.reject_advice_button))
        self.advice_combo = QComboBox()
        self.advice_combo.setToolTip("A suggestion the model missed (PtychoBench's advice classes).")
        self.add_advice_button = QPushButton("Add advice")
        self.add_advice_button.clicked.connect(lambda: self.add_advice(self.advice_combo.currentText()))
        advice_layout.addWidget(hbox(self.advice_combo, self.add_advice_button))
        self.advice_box.setVisible(False)
        layout.addWidget(self.advice_box)

        self.notes_edit = QPlainTextEdit()
        self.notes_edit.setPlaceholderText("Notes on this image (saved with the review)")
        self.notes_edit.setMaximumHeight(70)
        self.notes_edit.textChanged.connect(self._on_notes)
        layout.addWidget(self.notes_edit)

        grid = QGridLayout()
        self.save_button = QPushButton("Save (W)")
        self.save_button.clicked.connect(lambda: self.save())  # not clicked(checked) as the status
        self.accept_next_button = QPushButton("Accept all + next (G)")
        self.accept_next_button.clicked.connect(self.accept_all_and_next)
        self.skip_button = QPushButton("Skip (Q)")
        self.skip_button.clicked.connect(self.skip)
        self.prev_button = QPushButton("◀ Previous (PgUp)")
        self.prev_button.clicked.connect(self.previous_image)
        self.next_button = QPushButton("Next (PgDn) ▶")
        self.next_button.clicked.connect(self.next_image)
        self.unreviewed_button = QPushButton("Next unreviewed (N)")
        self.unreviewed_button.clicked.connect(self.next_unreviewed)
        self.undo_button = QPushButton("Undo (Ctrl+Z)")
        self.undo_button.clicked.connect(self.undo)
        self.redo_button = QPushButton("Redo (Ctrl+Shift+Z)")
        self.redo_button.clicked.connect(self.redo)
        for i, b in enumerate(
            (
                self.save_button,
                self.accept_next_button,
                self.skip_button,
                self.prev_button,
                self.next_button,
                self.unreviewed_button,
                self.undo_button,
                self.redo_button,
            )
        ):
            grid.addWidget(b, i // 2, i % 2)
        layout.addLayout(grid)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.error_panel = ErrorPanel()
        layout.addWidget(self.error_panel)
        layout.addStretch(1)

    def _bind_keys(self) -> None:
        self._previous_bindings: dict[str, Any] = {}
        for key, method, _ in KEYS:
            action = getattr(self, method)
            previous = self.viewer.bind_key(key, lambda _viewer, a=action: a(), overwrite=True)
            self._previous_bindings[key] = previous

    def _unbind_keys(self) -> None:
        for key, previous in getattr(self, "_previous_bindings", {}).items():
            try:
                self.viewer.bind_key(key, previous, overwrite=True)
            except (TypeError, ValueError):
                logger.debug("could not restore key %s", key)
        self._previous_bindings = {}

    def _set_enabled(self) -> None:
        has_ds = self.dataset is not None
        has_image = self.session is not None
        for b in (self.open_folder_button, self.open_file_button, self.all_button):
            b.setEnabled(has_ds)
        for b in (
            self.save_button,
            self.accept_next_button,
            self.skip_button,
            self.prev_button,
            self.next_button,
            self.unreviewed_button,
            self.accept_button,
            self.reject_button,
            self.relabel_button,
            self.add_label_button,
            self.accept_advice_button,
            self.reject_advice_button,
            self.add_advice_button,
        ):
            b.setEnabled(has_image)
        self.undo_button.setEnabled(has_image and self.session.can_undo)
        self.redo_button.setEnabled(has_image and self.session.can_redo)

    def _browse_dataset(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Corrections dataset folder", self.dataset_edit.text())
        if path:
            self.open_dataset(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of images to review")
        if path:
            self.open_source(path)

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Image stack or analysis results",
            "",
            "Results or images (*.jsonl *.ndjson *.tif *.tiff *.npy *.npz *.h5 *.hdf5 *.cxi *.png *.jpg)"
            ";;All files (*)",
        )
        if path:
            self.open_source(path)

    # ---- opening --------------------------------------------------------------------------------------
    def open_dataset(self, path: str | Path, *, resume: bool = True) -> bool:
        """Open (or create) the dataset and continue its last queue where it was left."""
        from napari_fracto.dataset import Dataset, DatasetError
        from napari_fracto.review import ReviewQueue

        path = str(path).strip()
        if not path:
            show_error("Enter or pick a folder for the corrections dataset.")
            return False
        try:
            dataset = Dataset.open_or_create(path)
        except (DatasetError, OSError) as exc:
            show_error(f"Could not open the dataset: {exc}")
            return False
        self._close_dataset(keep_layers=True)  # the next image reuses them (new layers stall napari)
        self.dataset = dataset
        self.dataset_edit.setText(str(dataset.root))
        queue = ReviewQueue.resume(dataset) if resume else None
        if queue is None:
            self._remove_layers()
            self.progress_label.setText("Open a folder, a stack or results to review.")
            self._set_enabled()
            return True
        self._start(queue)
        return True

    def open_source(self, path: str | Path) -> bool:
        """Queue a folder, an image stack or a results .jsonl and show its first unreviewed image.

        The files are read and hashed into the dataset in a worker (a 500-image folder takes seconds);
        returns True once that started, and `image_loaded` follows when the first image is on screen.
        """
        from napari.qt.threading import create_worker

        from napari_fracto.review import ReviewQueue

        if not self._need_dataset():
            return False
        if self._open_worker is not None:
            show_info("Still opening the previous folder or file; wait for it to appear.")
            return False
        path = Path(path).expanduser()
        if not path.exists():
            self.error_panel.show_message(f"Cannot review {path}: it does not exist.")
            return False
        dataset, task = self.dataset, self.task_combo.currentText() or None
        self.error_panel.clear()
        self.status_label.setText(f"Opening {path.name} (reading and storing the images) …")
        worker = create_worker(
            run_catching, lambda: ReviewQueue.open(dataset, path, task), _start_thread=False
        )
        worker.returned.connect(lambda outcome: self._source_opened(outcome, dataset))
        self._open_worker = worker
        worker.start()
        return True

    def _source_opened(self, outcome: Outcome, dataset: Any) -> None:
        self._open_worker = None
        if dataset is not self.dataset:
            return  # another dataset was opened meanwhile
        if outcome.error:
            self.status_label.setText("Not opened.")
            self.error_panel.show_outcome(outcome)
            return
        self.status_label.setText("")
        self._start(outcome.value)

    def review_dataset(self) -> bool:
        """Queue every image of the chosen task in the dataset."""
        from napari_fracto.review import QueueError, ReviewQueue

        if not self._need_dataset():
            return False
        try:
            queue = ReviewQueue.from_dataset(self.dataset, self.task_combo.currentText())
        except (QueueError, ValueError) as exc:
            show_error(str(exc))
            return False
        self._start(queue)
        return True

    def _need_dataset(self) -> bool:
        if self.dataset is None:
            show_error("Open a corrections dataset first (the 'Dataset' field): reviews are saved there.")
            return False
        return True

    def _start(self, queue: ReviewQueue) -> None:
        from napari_fracto.vocabulary import load_vocabulary

        self.queue = queue
        self._sessions.clear()
        try:
            self._vocab = load_vocabulary(queue.task)
        except (LookupError, ValueError) as exc:
            show_error(f"No vocabulary for task {queue.task!r}: {exc}")
            return
        self.task_combo.setCurrentText(queue.task)
        self.label_combo.blockSignals(True)
        self.label_combo.clear()
        self.label_combo.addItems(self._vocab.names())
        self.label_combo.blockSignals(False)
        self._advice_names = advice_names(queue.task)
        self.advice_combo.clear()
        self.advice_combo.addItems(self._advice_names)
        self.advice_box.setVisible(bool(self._advice_names))
        if queue.problems:
            show_warning(f"{len(queue.problems)} item(s) left out: " + "; ".join(queue.problems[:3]))
        start = queue.position
        if queue.status(start) != "unreviewed":
            nxt = queue.next_unreviewed()
            start = start if nxt is None else nxt
        self.show_image(start)

    # ---- showing an image -----------------------------------------------------------------------------
    def show_image(self, index: int) -> bool:
        """Load image `index` of the queue with its findings (unsaved edits of this session kept)."""
        from napari.layers import Image, Layer

        from napari_fracto.io.readers import read_file
        from napari_fracto.overlay import update_findings_layer
        from napari_fracto.review.layer import review_shapes

        if self.queue is None:
            return False
        index = self.queue.go(index)
        entry = self.queue.current
        try:
            path = self.dataset.image_path(entry.image_id)
            layer_data = read_file(path)
            session = self._sessions.get(entry.image_id) or self.queue.session(
                index, self._vocab.names(), self._advice_names
            )
        except (ValueError, OSError) as exc:
            show_error(f"Cannot show {entry.name}: {exc}")
            return False
        metas = []
        for data, meta, layer_type in layer_data:
            meta = dict(meta)
            meta["name"] = str(meta.get("name") or path.stem).replace(path.stem, entry.name)
            if entry.image_id in self.state.calibration and layer_type == "image":
                scale, units = self.state.calibration[entry.image_id]
                meta.update(scale=scale, units=units)
            metas.append((data, meta, layer_type))
        self._sessions[entry.image_id] = session
        self.session, self.index = session, index
        reused = self._reuse_layers(metas)
        if not reused:
            self._remove_layers()
            for data, meta, layer_type in metas:
                self._layers.append(self.viewer.add_layer(Layer.create(data, meta, layer_type)))
        image_layer = next((la for la in self._layers if isinstance(la, Image)), None)
        spec = review_shapes(
            session,
            self._vocab,
            image_name=entry.name,
            scale=tuple(image_layer.scale) if image_layer is not None else None,
            translate=tuple(image_layer.translate) if image_layer is not None else None,
        )
        if image_layer is not None:  # one unit across layers: no "inconsistent units" warning
            spec.units = tuple(str(u) for u in image_layer.units)
        self._syncing = True
        try:
            if reused:
                self.shapes_layer.name = spec.name
                update_findings_layer(self.shapes_layer, spec)
            else:
                self.shapes_layer = self.viewer.add_shapes(spec.data or None, **spec.layer_kwargs())
                self._layers.append(self.shapes_layer)
                self.shapes_layer.events.data.connect(self._on_shapes_changed)
        finally:
            self._syncing = False
        self.viewer.reset_view()  # each image fits the canvas, whatever the previous one's scale
        self.viewer.layers.selection.active = self.shapes_layer
        self._set_new_shape_defaults()
        self.notes_edit.blockSignals(True)
        self.notes_edit.setPlainText(session.notes)
        self.notes_edit.blockSignals(False)
        self._refresh()
        self.image_loaded.emit(index)
        return True

    def _reuse_layers(self, metas: list[tuple[Any, dict[str, Any], str]]) -> bool:
        """Show the next image in the layers already on the canvas (one image + the findings layer):
        updating data is cheap, while new layers make napari build new visuals (the stall of "next")."""
        import numpy as np

        layers = self._layers
        if len(metas) != 1 or metas[0][2] != "image" or len(layers) != 2 or self.shapes_layer is None:
            return False
        image, (data, meta, _) = layers[0], metas[0]
        rgb = bool(meta.get("rgb", data.shape[-1] in (3, 4) and data.ndim == 3))
        if image not in self.viewer.layers or image.ndim != data.ndim - rgb or image.rgb != rgb:
            return False
        ndim = image.ndim
        image.data = data
        image.name = meta["name"]
        image.scale = meta.get("scale", (1.0,) * ndim)
        image.translate = meta.get("translate", (0.0,) * ndim)
        if "units" in meta:
            image.units = meta["units"]
        image.metadata = dict(meta.get("metadata", {}))
        if not rgb and np.issubdtype(np.asarray(data).dtype, np.number):
            image.reset_contrast_limits()
        return True

    def _remove_layers(self) -> None:
        if self.shapes_layer is not None:
            self.shapes_layer.events.data.disconnect(self._on_shapes_changed)
        for layer in self._layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._layers = []
        self.shapes_layer = None

    def _render(self) -> None:
        """Redraw the findings layer from the review (after an edit made in the panel, undo or redo)."""
        from napari_fracto.review.layer import REVIEW_METADATA, review_metadata, review_shapes

        layer = self.shapes_layer
        if layer is None or self.session is None:
            return
        spec = review_shapes(self.session, self._vocab)
        self._syncing = True
        try:
            layer.selected_data = set()
            layer.data = spec.data
            if spec.data:
                layer.shape_type = "rectangle"
            layer.features = spec.features
            if spec.data:
                layer.edge_color = spec.edge_color
            layer.metadata[REVIEW_METADATA] = review_metadata(self.session)
        finally:
            self._syncing = False
        self._set_new_shape_defaults()

    def _set_new_shape_defaults(self) -> None:
        from napari_fracto.overlay import label_colour
        from napari_fracto.review.layer import NEW_SHAPE

        layer = self.shapes_layer
        label = self.label_combo.currentText()
        if layer is None or not label:
            return
        if not len(layer.data):
            self._typed_empty_features(layer)
        defaults = layer.feature_defaults.iloc[0].to_dict() if len(layer.feature_defaults) else {}
        defaults.update({"label": label, "finding_id": NEW_SHAPE, "mark": "[added] ", "score": ""})
        layer.feature_defaults = defaults
        layer.current_edge_color = label_colour(label, self._vocab)

    @staticmethod
    def _typed_empty_features(layer: Any) -> None:
        """Zero shapes give float columns; text columns must hold text for new shapes' labels."""
        import pandas as pd

        numeric = {"confidence": "float64", "finding_id": "int64"}
        layer.features = pd.DataFrame(
            {c: pd.Series([], dtype=numeric.get(c, object)) for c in layer.features.columns}
        )

    def _on_label_choice(self, _label: str) -> None:
        self._set_new_shape_defaults()

    def _on_shapes_changed(self, event: Any) -> None:
        """Drawn, moved, resized or deleted on the canvas: take it into the review (one undo step)."""
        action = str(getattr(getattr(event, "action", None), "value", getattr(event, "action", "")))
        if self._syncing or self.session is None or action not in ("added", "changed", "removed"):
            return
        from napari_fracto.review import ReviewError
        from napari_fracto.review.layer import read_layer

        layer = self.shapes_layer
        features = layer.features
        ids = list(features["finding_id"]) if "finding_id" in features else []
        labels = list(features["label"]) if "label" in features else []
        try:
            known, new = read_layer(layer.data, ids, labels, self.label_combo.currentText())
            self.session.apply_layer(known, [(label, box) for _, label, box in new])
        except ReviewError as exc:
            show_error(f"{exc}; the canvas was reset to the review.")
        # redraw outside napari's own event handling (it may still refer to the shape just drawn)
        QTimer.singleShot(0, self._after_canvas_edit)

    def _after_canvas_edit(self) -> None:
        self._render()
        self._refresh()

    # ---- panel state ----------------------------------------------------------------------------------
    def _refresh(self) -> None:
        queue, session = self.queue, self.session
        if queue is None or session is None:
            self._set_enabled()
            return
        self.progress_label.setText(queue.progress_text())
        entry = queue.current
        unsaved = " — unsaved changes" if session.dirty else ""
        self.image_label.setText(
            f"{queue.position + 1} / {len(queue)}: {entry.name} ({queue.status(queue.position)}){unsaved}"
        )
        selected = self.selected_row_id()
        self.table.setRowCount(len(session.rows))
        for i, row in enumerate(session.rows):
            box = "whole image" if row.box is None else ", ".join(f"{v:.0f}" for v in row.box.as_list())
            for col, text in enumerate((row.label, box, row.status)):
                self.table.setItem(i, col, QTableWidgetItem(text))
            if row.id == selected:
                self.table.selectRow(i)
        if selected is None and session.rows:
            self.table.selectRow(0)
        self._fill_advice(session)
        layer = self.shapes_layer
        if layer is not None:
            from napari_fracto.review.layer import REVIEW_METADATA, review_metadata

            layer.metadata[REVIEW_METADATA] = review_metadata(session)
        self._set_enabled()

    def _fill_advice(self, session: ReviewSession) -> None:
        selected = self.selected_advice_id()
        table = self.advice_table
        table.setRowCount(len(session.advice))
        for i, item in enumerate(session.advice):
            for col, text in enumerate((item.text, item.status)):
                cell = QTableWidgetItem(text)
                if not item.kept:
                    font = cell.font()
                    font.setStrikeOut(True)  # a rejected suggestion stays visible, crossed out
                    cell.setFont(font)
                table.setItem(i, col, cell)
            if item.id == selected:
                table.selectRow(i)
        if selected is None and session.advice:
            table.selectRow(0)

    def selected_advice_id(self) -> int | None:
        if self.session is None:
            return None
        model = self.advice_table.selectionModel()
        rows = model.selectedRows() if model else []
        if not rows:
            return None
        i = rows[0].row()
        return self.session.advice[i].id if i < len(self.session.advice) else None

    def selected_row_id(self) -> int | None:
        if self.session is None:
            return None
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        i = rows[0].row()
        return self.session.rows[i].id if i < len(self.session.rows) else None

    def _select_offset(self, step: int) -> None:
        n = self.table.rowCount()
        if n:
            current = self.table.currentRow()
            self.table.selectRow(min(max((current if current >= 0 else -step) + step, 0), n - 1))

    def _on_notes(self) -> None:
        if self.session is not None:
            self.session.notes = self.notes_edit.toPlainText()
            self._refresh_label_only()

    def _refresh_label_only(self) -> None:
        if self.queue is not None and self.session is not None:
            unsaved = " — unsaved changes" if self.session.dirty else ""
            entry = self.queue.current
            self.image_label.setText(
                f"{self.queue.position + 1} / {len(self.queue)}: {entry.name} "
                f"({self.queue.status(self.queue.position)}){unsaved}"
            )

    def _edit(self, func: Any, *args: Any) -> bool:
        """Run one review edit; a user error becomes a notification, the canvas follows the review."""
        from napari_fracto.review import ReviewError

        if self.session is None:
            return False
        try:
            func(*args)
        except ReviewError as exc:
            show_error(str(exc))
            return False
        self._render()
        self._refresh()
        return True

    # ---- actions (buttons and keys) -------------------------------------------------------------------
    def select_next_finding(self) -> None:
        self._select_offset(1)

    def select_previous_finding(self) -> None:
        self._select_offset(-1)

    def accept_selected(self) -> bool:
        row_id = self.selected_row_id()
        return row_id is not None and self._edit(self.session.accept, row_id)

    def reject_selected(self) -> bool:
        row_id = self.selected_row_id()
        return row_id is not None and self._edit(self.session.reject, row_id)

    def relabel_selected(self, label: str) -> bool:
        row_id = self.selected_row_id()
        if row_id is None:
            show_info("Select a finding in the list first, then choose its label.")
            return False
        return self._edit(self.session.relabel, row_id, label)

    def add_image_label(self, label: str) -> bool:
        return self._edit(self.session.add_label, label) if self.session else False

    def accept_selected_advice(self) -> bool:
        advice_id = self.selected_advice_id()
        return advice_id is not None and self._edit(self.session.accept_advice, advice_id)

    def reject_selected_advice(self) -> bool:
        advice_id = self.selected_advice_id()
        return advice_id is not None and self._edit(self.session.reject_advice, advice_id)

    def add_advice(self, text: str) -> bool:
        return self._edit(self.session.add_advice, text) if self.session else False

    def undo(self) -> None:
        if self.session is not None and (what := self.session.undo()):
            self.status_label.setText(f"Undone: {what}")
            self._render()
            self._refresh()

    def redo(self) -> None:
        if self.session is not None and (what := self.session.redo()):
            self.status_label.setText(f"Redone: {what}")
            self._render()
            self._refresh()

    def save(self, status: str = "reviewed") -> Any:
        """Write this image's review to the dataset; returns the stored record (None on failure)."""
        from napari_fracto.review import QueueError

        if self.queue is None or self.session is None or self.index is None:
            return None
        try:
            record = self.queue.save(
                self.index,
                self.session,
                reviewer=self.reviewer_edit.text().strip() or None,
                status=status,
                vocabulary_version=getattr(self._vocab, "version", None),
            )
        except (QueueError, ValueError, OSError) as exc:
            show_error(str(exc))
            return None
        self.status_label.setText(
            f"Saved {self.queue.current.name} as {status} (review #{record.review_id})."
        )
        self._refresh()
        self.saved.emit(record)
        return record

    def skip(self) -> Any:
        record = self.save(status="skipped")
        if record is not None:
            self.next_unreviewed()
        return record

    def accept_all_and_next(self) -> Any:
        if self.session is None:
            return None
        self.session.accept_all()
        record = self.save()
        if record is not None:
            self.next_unreviewed()
        return record

    def next_image(self) -> None:
        if self.queue is not None:
            self.show_image(self.queue.position + 1)

    def previous_image(self) -> None:
        if self.queue is not None:
            self.show_image(self.queue.position - 1)

    def next_unreviewed(self) -> None:
        if self.queue is None:
            return
        nxt = self.queue.next_unreviewed()
        if nxt is None:
            self.status_label.setText(f"All done: {self.queue.progress_text()}.")
            show_info(f"No unreviewed image left ({self.queue.progress_text()}).")
            return
        self.show_image(nxt)

    # ---- lifetime -------------------------------------------------------------------------------------
    def _close_dataset(self, *, keep_layers: bool = False) -> None:
        if not keep_layers:
            self._remove_layers()
        if self.dataset is not None:
            self.dataset.close()
        self.dataset = self.queue = self.session = self.index = None
        self._sessions.clear()

    def closeEvent(self, event: Any) -> None:
        unsaved = [s for s in self._sessions.values() if s.dirty]
        if unsaved:
            show_warning(f"{len(unsaved)} image(s) had unsaved review edits; they were not saved.")
        self._unbind_keys()
        if self.dataset is not None:
            self.dataset.close()
            self.dataset = None
        super().closeEvent(event)


def advice_names(task: str) -> list[str]:
    """The advice vocabulary of `task` (`<task>-advice`, e.g. ptychography's), or [] when it has none."""
    from napari_fracto.vocabulary import advice_vocabulary

    try:
        vocab = advice_vocabulary(task)
    except (LookupError, ValueError) as exc:
        show_warning(f"The advice vocabulary of {task!r} cannot be read ({exc}); advice is not reviewed.")
        return []
    return list(vocab.names()) if vocab is not None else []
