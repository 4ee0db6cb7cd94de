"""Live training curves: panels stacked over a shared epoch axis."""

from __future__ import annotations

import math

from qtpy.QtCore import QRectF
from qtpy.QtGui import QColor, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from ._plots import ACCENT, Frame, padded, start


class CurvePanels(QWidget):
    """Stacked panels sharing the x axis (epoch); ``set_series`` replaces all the data."""

    def __init__(self, titles: list[str], xlabel: str = "epoch", parent=None):
        super().__init__(parent)
        self.titles = titles
        self.xlabel = xlabel
        self.x: list[float] = []
        self.ys: list[list[float]] = [[] for _ in titles]
        self.setMinimumHeight(90 * len(titles))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_series(self, x: list[float], ys: list[list[float]]) -> None:
        self.x, self.ys = list(x), [list(y) for y in ys]
        self.update()

    def paintEvent(self, _event) -> None:
        p = start(self)
        left, right, bottom = 46.0, 8.0, 28.0
        height = (self.height() - bottom) / len(self.titles)
        xs = [float(v) for v in self.x]
        xr = (min(xs), max(xs)) if xs else (0.0, 1.0)
        if xr[1] <= xr[0]:
            xr = (xr[0] - 0.5, xr[1] + 0.5)
        width = self.width() - left - right
        for row, (title, ys) in enumerate(zip(self.titles, self.ys)):
            last = row == len(self.titles) - 1
            points = [(x, float(y)) for x, y in zip(xs, ys) if math.isfinite(float(y))]
            box = QRectF(left, row * height + 16, width, height - 24)
            frame = Frame(box, xr, padded(y for _, y in points))
            frame.draw_axes(p, title, self.xlabel if last else "", whole_x=True)
            if points:
                path = QPainterPath(frame.at(*points[0]))
                for x, y in points[1:]:
                    path.lineTo(frame.at(x, y))
                p.setPen(QPen(QColor(ACCENT), 1.4))
                p.drawPath(path)
                frame.dots(p, points[-200:])
        p.end()
