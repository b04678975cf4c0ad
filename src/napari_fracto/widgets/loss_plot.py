"""The Train panel's live loss plot: training loss (blue) and validation loss (orange) against the step."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QWidget


class LossPlot(QWidget):
    """A minimal live line plot of training loss (blue) and validation loss (orange) against the step."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(120)
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []

    def set_data(self, train: list[tuple[int, float]], val: list[tuple[int, float]]) -> None:
        self.train, self.val = list(train), list(val)
        self.update()

    def paintEvent(self, event: Any) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(30, 30, 30))
        points = self.train + self.val
        if not points:
            painter.setPen(QColor(160, 160, 160))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "loss appears here")
            painter.end()
            return
        x_max = max(max(s for s, _ in points), 1)
        lo, hi = min(v for _, v in points), max(v for _, v in points)
        span = (hi - lo) or 1.0
        w, h, m = self.width(), self.height(), 8

        def to_px(step: int, value: float) -> QPointF:
            return QPointF(m + (w - 2 * m) * step / x_max, h - m - (h - 2 * m) * (value - lo) / span)

        for series, colour in ((self.train, QColor(86, 180, 233)), (self.val, QColor(230, 159, 0))):
            if series:
                painter.setPen(QPen(colour, 2))
                painter.drawPolyline(QPolygonF([to_px(s, v) for s, v in series]))
        painter.setPen(QColor(200, 200, 200))
        painter.drawText(m, m + 10, f"{hi:.3g}")
        painter.drawText(m, h - m, f"{lo:.3g}")
        painter.end()
