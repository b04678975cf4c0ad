"""Which image Analyze works on (following the active layer) and the ptychography display layer.

A part of AnalyzeWidget (widgets/analyze.py), split out to keep each file small; it works on the
widget's own attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_fracto.errors import UserError
from napari_fracto.viewer_layers import (
    DISPLAY_OF,
    PtychoParts,
    canvas_text_overlay,
    display_layer_name,
    displayed_plane,
    ptycho_parts,
)
from napari_fracto.widgets._common import (
    Outcome,
    run_catching,
    show_error,
    show_warning,
)
from napari_fracto.widgets.analyze_form import NO_POSITIONS_TIP
from napari_fracto.widgets.send_to_review import Item

if TYPE_CHECKING:
    from napari_fracto.ptycho.display import DisplayOptions
    from napari_fracto.ptycho.prepare import Prepared, ScanGeometry


class LayersMixin:
    """Which image Analyze works on (following the active layer) and the ptychography display layer."""

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
        from napari_fracto.widgets.analyze_instrument import fill_fields

        fill_fields(self, self._selected_layer())  # the SEM's magnification and settings, unless typed
        self._update_display()

    def _clear_result_view(self) -> None:
        overlay = canvas_text_overlay(self.viewer)
        overlay.text = ""
        overlay.visible = False
        for label in (self.verdict_label, self.unknown_label, self.advice_label, self.disagreement_label):
            label.setText("")
        self.results_table.setRowCount(0)
        self.evidence_section.setVisible(False)
        self.second_result_section.setVisible(False)
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
        if self.image_combo.currentText() != current:
            from napari_fracto.widgets.analyze_instrument import fill_fields

            fill_fields(self, self._selected_layer())
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
        if self._in_display_update:
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
        """Show the display layer for the ticked options: from the cache at once, else computed in a
        worker (the Qt thread only assigns the result), so a toggle never freezes napari."""
        layer, parts = self._update_display_controls()
        options = self.display_options() if parts is not None else None
        self._preview_generation += 1  # whatever preview is on its way is now stale
        if parts is None:
            return
        name = display_layer_name(layer.name)
        if options is None:
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
                layer.visible = True
            return
        sources = (parts.phase.data, _amplitude_data(parts))
        key = PreviewKey.of(layer.name, parts, options)
        cached = self._previews.get(key)
        if cached is not None and all(a is b for a, b in zip(cached[0], sources, strict=True)):
            self._previews.move_to_end(key)
            self._show_preview(layer, cached[1])
            return
        from napari.qt.threading import create_worker

        generation = self._preview_generation
        job = partial(_compute_preview, *sources, options, parts.geometry)
        worker = create_worker(run_catching, job, _start_thread=False)
        worker.returned.connect(lambda outcome: self._on_preview(generation, key, sources, layer, outcome))
        worker.finished.connect(lambda: self._preview_workers.discard(worker))
        self._preview_workers.add(worker)  # kept alive (and countable) until it is back
        worker.start()

    @property
    def preview_pending(self) -> bool:
        """True while a display preview is being computed (the layer shows the previous options)."""
        return bool(self._preview_workers)

    def _on_preview(
        self, generation: int, key: PreviewKey, sources: tuple[Any, Any], layer: Any, outcome: Outcome
    ) -> None:
        """A preview is back: cached either way; shown only if nothing was toggled since it started."""
        if outcome.error:
            if generation == self._preview_generation:
                show_error(outcome.error)  # e.g. positions outside the object: the data stays as it was
            return
        # the data arrays themselves are kept with it: an id in the key is never another array's
        self._previews[key] = (sources, outcome.value)
        while len(self._previews) > PREVIEW_CACHE_SIZE:
            self._previews.popitem(last=False)
        if generation != self._preview_generation or layer not in self.viewer.layers:
            return  # toggled again, or the layer is gone: a newer preview (or none) is what is wanted
        self._show_preview(layer, outcome.value)

    def _show_preview(self, layer: Any, prepared: Prepared) -> None:
        """Assign a computed preview to '<name> (display)' (the only part done on the Qt thread)."""
        name = display_layer_name(layer.name)
        shown = prepared.image  # the real phase as shown (unwrapped when asked), float32
        scale = np.asarray(layer.scale, dtype=float)
        translate = np.asarray(layer.translate, dtype=float) + scale * np.asarray(
            prepared.offset, dtype=float
        )
        meta = {DISPLAY_OF: layer.name, "preprocessing": prepared.preprocessing}
        if name in self.viewer.layers:
            shown_layer = self.viewer.layers[name]
            shown_layer.data = shown
            shown_layer.translate = translate
            shown_layer.metadata = {**shown_layer.metadata, **meta}
            shown_layer.reset_contrast_limits()
        else:
            self.viewer.add_image(
                shown,
                name=name,
                scale=scale,
                translate=translate,
                units=tuple(layer.units),
                colormap="gray",
                metadata=meta,
            )
        layer.visible = False  # the original stays untouched underneath; unticking shows it again


#: previews kept (each one float32 image): a toggle back to options already shown costs nothing
PREVIEW_CACHE_SIZE = 4


@dataclass(frozen=True)
class PreviewKey:
    """What a preview depends on: the layer, its data arrays (by identity), the scan and the options."""

    layer: str
    data: tuple[int, int]
    geometry: bytes
    options: DisplayOptions

    @classmethod
    def of(cls, name: str, parts: PtychoParts, options: DisplayOptions) -> PreviewKey:
        geometry = parts.geometry
        positions = b"" if geometry.positions_px is None else np.asarray(geometry.positions_px).tobytes()
        scan = positions + repr((geometry.probe_shape, geometry.scan_step_px)).encode()
        return cls(name, (id(parts.phase.data), id(_amplitude_data(parts))), scan, options)


def _amplitude_data(parts: PtychoParts) -> Any:
    return parts.amplitude.data if parts.amplitude is not None else None


def _compute_preview(phase: Any, amplitude: Any, options: DisplayOptions, geometry: ScanGeometry) -> Prepared:
    """The display options applied to phase (+ amplitude), in a worker thread; a ValueError (positions
    outside the object, say) becomes a message for the user."""
    from napari_fracto.ptycho import prepare

    obj = np.asarray(phase, dtype=np.float64)
    if amplitude is not None:
        obj = np.asarray(amplitude) * np.exp(1j * obj)
    try:
        prepared = prepare.prepare_image(obj, options, geometry)
    except ValueError as exc:
        raise UserError(f"Cannot apply the display options: {exc}") from exc
    return replace(prepared, image=np.asarray(prepared.image, dtype=np.float32), evidence_input=None)
