"""Reviewing model findings: one image's review state (`session`), the queue of images (`queue`) and
the conversions between a review and napari's Shapes layer (`layer`).

Pure logic: importing this package loads neither Qt nor napari nor torch, so it is tested without a
viewer and the Review widget stays a thin shell around it.
"""

from napari_fracto.review.queue import QueueEntry, QueueError, ReviewQueue
from napari_fracto.review.session import AdviceItem, ReviewError, ReviewSession, Row

__all__ = ["AdviceItem", "QueueEntry", "QueueError", "ReviewError", "ReviewQueue", "ReviewSession", "Row"]
