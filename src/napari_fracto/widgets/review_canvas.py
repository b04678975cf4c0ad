"""One queued image on the canvas: its layers (reused image to image) and edits read back from them.

A part of ReviewWidget (widgets/review.py), split out to keep each file small; it works on the
widget's own attributes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer

from napari_fracto.widgets._common import (
    show_error,
)

if TYPE_CHECKING:
    pass


#: (napari key, method, what it does): bound on the viewer, listed in the tooltip and docs/review.md.

logger = logging.getLogger(__name__)


class CanvasMixin:
    """One queued image on the canvas: its layers (reused image to image) and edits read back from them."""

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
        calibration = self.dataset.pixel_size(entry.image_id)  # as the image was sent (Analyze)
        metas = []
        for data, meta, layer_type in layer_data:
            meta = dict(meta)
            meta["name"] = str(meta.get("name") or path.stem).replace(path.stem, entry.name)
            if calibration is not None and layer_type == "image":
                scale, units = calibration
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
        # each setter makes napari refresh the layer: only what differs from the previous image is set
        scale, translate = meta.get("scale", (1.0,) * ndim), meta.get("translate", (0.0,) * ndim)
        if not np.array_equal(image.scale, scale):
            image.scale = scale
        if not np.array_equal(image.translate, translate):
            image.translate = translate
        if "units" in meta and tuple(str(u) for u in image.units) != tuple(str(u) for u in meta["units"]):
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
