"""Every dock scrolls and fits: two docks on a 1280 x 800 screen, nothing cut at the dock's width."""

from __future__ import annotations

import pytest

from napari_fracto.widgets._common import DOCK_MIN_WIDTH


@pytest.mark.parametrize("name", ["analyze", "review", "train", "evaluate"])
def test_dock_scrolls_and_fits_half_a_small_screen(make_napari_viewer, name):
    import importlib

    module = importlib.import_module(f"napari_fracto.widgets.{name}")
    cls = getattr(module, f"{name.capitalize()}Widget")
    widget = cls(make_napari_viewer())
    body = widget.scroll_area.widget()
    body.layout().activate()
    # the content fits the dock's width (no cut combos or labels) ...
    assert body.minimumSizeHint().width() <= DOCK_MIN_WIDTH
    # ... and however tall it is, the dock itself asks for less than half of an 800 px screen
    assert widget.minimumSizeHint().height() < 350
    assert widget.scroll_area.widgetResizable()
