"""Evaluate configurations (model, adapter, k shots, context on/off) on a dataset split, side by side.

`runner.evaluate` runs and caches, `compare` reads comparison files, `report` writes JSON/CSV/Markdown/PNG,
`cli` is `napari-fracto eval`. Importing this package loads neither Qt nor torch.
"""
