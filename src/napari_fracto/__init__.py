"""napari-fracto: vision-language models for microscope images in napari.

Kept import-light on purpose: napari imports this package at start-up, so torch, transformers and Qt
are only imported where they are used.
"""

from napari_fracto._version import __version__

__all__ = ["__version__"]
