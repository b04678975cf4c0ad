"""Making napari-fracto napari's preferred reader for microscope TIFFs, only with the user's yes.

napari's built-in reader claims .tif/.tiff too, so napari asks which reader to use for every image, and
the built-in one loses the SEM scale. Analyze offers (once; a "no" is remembered) to set napari's own
preference, `napari.settings.get_settings().plugins.extension2reader`, the public setting its "remember
this choice" box writes. Nothing is changed without that yes; metadata is read from the source file
either way (`sem_context.instrument_of`), so a layer from another reader still gets its context.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLUGIN = "napari-fracto"
#: the microscope formats offered (PNG/JPEG stay with whichever reader the user has)
PATTERNS = ("*.tif", "*.tiff")
_DECLINED = "reader_offer_declined.json"


def _declined_file() -> Path:
    from napari_fracto.paths import config_dir

    return config_dir() / _DECLINED


def declined() -> bool:
    """True when the user said no to the offer (it is then never made again)."""
    try:
        return bool(json.loads(_declined_file().read_text(encoding="utf-8")).get("declined"))
    except (OSError, ValueError, AttributeError):
        return False


def decline() -> None:
    """Remember the no."""
    path = _declined_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"declined": True}), encoding="utf-8")


def current_readers() -> dict[str, str]:
    """napari's preferred reader per file pattern, as its settings hold them."""
    from napari.settings import get_settings

    return dict(get_settings().plugins.extension2reader or {})


def is_preferred() -> bool:
    readers = current_readers()
    return all(readers.get(p) == PLUGIN for p in PATTERNS)


def make_preferred() -> list[str]:
    """Set napari-fracto as napari's reader for `PATTERNS` (saved by napari); the patterns changed."""
    from napari.settings import get_settings

    plugins = get_settings().plugins
    readers = dict(plugins.extension2reader or {})
    changed = [p for p in PATTERNS if readers.get(p) != PLUGIN]
    readers.update(dict.fromkeys(PATTERNS, PLUGIN))
    plugins.extension2reader = readers  # a new dict: napari validates and saves it
    return changed


def should_offer(layer: Any) -> bool:
    """Offer when a microscope TIFF was opened by another reader, the user has not said no, and napari
    does not already prefer napari-fracto."""
    source = getattr(layer, "source", None)
    path = getattr(source, "path", None)
    reader = getattr(source, "reader_plugin", None)
    if not path or reader in (None, PLUGIN):
        return False
    if f"*{Path(str(path)).suffix.lower()}" not in PATTERNS:
        return False
    return not declined() and not is_preferred()


__all__ = ["PATTERNS", "PLUGIN", "decline", "declined", "is_preferred", "make_preferred", "should_offer"]
