"""Analyze's Magnification and Instrument fields, filled from the chosen image's SEM metadata.

The reader records the instrument in `layer.metadata["instrument"]`; a layer napari's own reader opened
has only its file (`layer.source.path`), which is read here (header and sidecar only, a few ms). A field
the user typed into is never overwritten; one this module filled follows the chosen image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_fracto.io.sem_metadata import Instrument


def layer_instrument(layer: Any) -> Instrument | None:
    """The SEM settings of `layer`: from napari-fracto's reader, else from the layer's source file."""
    meta = getattr(layer, "metadata", None) or {}
    inst = Instrument.from_dict(meta.get("instrument"))
    if inst is not None:
        return inst
    from napari_fracto.sem_context import instrument_of

    path = getattr(getattr(layer, "source", None), "path", None) or meta.get("source_path")
    return instrument_of(str(path)) if path else None


def _shown_size(layer: Any, inst: Instrument) -> tuple[int, int]:
    """Width and height the model will see: without the data bar when the pixels are at hand."""
    from napari_fracto.databar import bar_crop, shown_shape

    data = layer.data
    shape = data.shape[-3:-1] if getattr(layer, "rgb", False) else data.shape[-2:]
    if isinstance(data, np.ndarray) and data.ndim in (2, 3) and (data.ndim == 2 or layer.rgb):
        return shown_shape(data, bar_crop(data, inst.bar_rows or None))
    height = int(shape[0]) - inst.bar_rows
    return int(shape[1]), height


def fill_fields(form: Any, layer: Any) -> None:
    """Set the form's magnification and instrument texts for `layer` where the user has not typed."""
    offer = getattr(form, "reader_offer", None)
    if offer is not None:
        offer.update_for(layer)
    inst = layer_instrument(layer) if layer is not None else None
    width, height = _shown_size(layer, inst) if inst is not None else (0, 0)
    texts = {
        "magnification_edit": inst.scale_text(width, height) if inst else "",
        "instrument_edit": inst.settings_text() if inst else "",
    }
    filled = getattr(form, "_instrument_filled", {})
    for name, text in texts.items():
        edit = getattr(form, name)
        current = edit.text().strip()
        if not current or current == filled.get(name):
            edit.setText(text)
            filled[name] = text
    form._instrument_filled = filled
