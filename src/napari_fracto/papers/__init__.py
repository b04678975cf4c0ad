"""From papers to a training set: figures out of PDFs and JATS articles, split into panels, micrographs
kept with the caption and body text that describe them, stored as unreviewed dataset items.

`collect.import_papers` is the pipeline (`napari-fracto dataset import-papers`, Review's "Add papers…");
`pdf` and `jats` read papers into `model.Paper`; `panels`, `captions`, `citations`, `classify`, `dedup`
do one step each; `provenance` is what every item keeps of where it came from; `teacher` asks a model
about the stored items with their context. Pure logic: no Qt, no torch; pypdfium2 (the `papers` extra)
is imported only when a PDF is read.
"""

from napari_fracto.papers.model import Figure, Paper, PaperError

__all__ = ["Figure", "Paper", "PaperError"]
