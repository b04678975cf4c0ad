"""The corrections dataset: every review kept, versioned and crash-safe, ready for fine-tuning.

`Dataset` (core.py) is the Python API; `tools`, `export`, `importers`, `split` and `autolabel` implement
`napari-fracto dataset ...` (cli.py). Importing this package loads neither Qt nor torch.
"""

from napari_fracto.dataset.core import Dataset
from napari_fracto.dataset.model import (
    SPLITS,
    DatasetError,
    DatasetVersionError,
    Decision,
    ImageRecord,
    Item,
    ReviewRecord,
    Status,
)

__all__ = [
    "SPLITS",
    "Dataset",
    "DatasetError",
    "DatasetVersionError",
    "Decision",
    "ImageRecord",
    "Item",
    "ReviewRecord",
    "Status",
]
