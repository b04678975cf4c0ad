"""`python -m napari_fracto.training train ...` / `export-adapter ...` (same as `napari-fracto train ...`)."""

import sys

from napari_fracto.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
