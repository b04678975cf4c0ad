import sys

from napari_fracto.cli import main

sys.exit(main())
