"""Plots inside the docks, drawn with QPainter on napari's dark theme: a redraw costs about a
millisecond, so plots that change with every epoch or every predicted scan never hold up the
viewer's event loop (a matplotlib redraw of the same panels took 150–400 ms on a 2-core CPU)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPen

BACKGROUND = "#262930"
FOREGROUND = "#d1d2d4"
ACCENT = "#4fc3f7"
DOT = 2.2  # radius of a data point, px


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        half = (abs(lo) or 1.0) / 2
        lo, hi = lo - half, hi + half
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10)), key=lambda s: abs(math.log(s / raw)))
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [round(i * step, 12) for i in range(first, min(last, first + 4 * n) + 1)]


def tick_labels(ticks: list[float]) -> list[str]:
    """The ticks with as few decimals as tell them apart exactly (0.25 → '0.25', 200 → '200');
    beyond 4 decimals, as few significant digits as tell them apart (1.5e-05), so that every
    label fits beside its axis; from 100,000 on, in thousands or millions (250k, 7.5M: a
    loss on volumes in mm³ runs to millions); from 1e11 on, with powers of ten."""
    top = max((abs(t) for t in ticks), default=0.0)
    if 1e6 <= top < 1e11:
        return [f"{label}M" for label in tick_labels([t / 1e6 for t in ticks])]
    if 1e5 <= top < 1e6:
        return [f"{label}k" for label in tick_labels([t / 1e3 for t in ticks])]
    step = min((b - a for a, b in zip(ticks, ticks[1:])), default=1.0)
    for decimals in range(5 if top < 1e11 else 0):  # beyond, powers of ten (a diverging loss)
        labels = [f"{t:.{decimals}f}" for t in ticks]
        if all(abs(float(lab) - t) <= step * 1e-6 for lab, t in zip(labels, ticks)):
            return labels
    for digits in range(2, 7):
        labels = [f"{t:.{digits}g}" for t in ticks]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{t:.3g}" for t in ticks]


MIN_SPAN = 0.02  # of the values' magnitude: smaller changes are not drawn across the panel


def padded(values, fraction: float = 0.08) -> tuple[float, float]:
    """The range of the finite ``values`` with ``fraction`` of it added each side, and at least
    ``MIN_SPAN`` of their magnitude wide: a validation score moving in its fourth decimal is
    drawn nearly flat, not as a collapse (an empty series gets 0..1, an all-zero one −1..1)."""
    finite = [float(v) for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    pad = (hi - lo) * fraction
    least = MIN_SPAN * max(abs(lo), abs(hi)) or 2.0
    if hi - lo + 2 * pad < least:
        pad = (least - (hi - lo)) / 2
    return lo - pad, hi + pad


def start(widget) -> QPainter:
    """A painter on ``widget`` with the background filled and the plots' small font."""
    p = QPainter(widget)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.fillRect(widget.rect(), QColor(BACKGROUND))
    font = QFont(p.font())
    font.setPointSizeF(7.5)
    p.setFont(font)
    return p


class Frame:
    """One panel: data ranges ``xr``, ``yr`` mapped onto the pixel rectangle ``box``."""

    def __init__(self, box: QRectF, xr: tuple[float, float], yr: tuple[float, float]):
        self.box, self.xr, self.yr = box, xr, yr

    def at(self, x: float, y: float) -> QPointF:
        (x0, x1), (y0, y1), b = self.xr, self.yr, self.box
        return QPointF(
            b.left() + (x - x0) / (x1 - x0) * b.width(), b.bottom() - (y - y0) / (y1 - y0) * b.height()
        )

    def draw_axes(
        self, p: QPainter, title: str, xlabel: str = "", ylabel: str = "", whole_x: bool = False
    ) -> None:
        """Title, frame, y ticks and, with ``xlabel``, x ticks (whole numbers only with
        ``whole_x``) and the axis labels."""
        b = self.box
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.setPen(QPen(QColor(FOREGROUND), 1))
        p.drawText(QRectF(b.left(), b.top() - 15, b.width(), 14), Qt.AlignmentFlag.AlignLeft, title)
        p.drawRect(b)
        yticks = nice_ticks(*self.yr, 3)
        for t, text in zip(yticks, tick_labels(yticks)):
            y = self.at(self.xr[0], t).y()
            p.drawLine(QPointF(b.left() - 3, y), QPointF(b.left(), y))
            p.drawText(QRectF(b.left() - 47, y - 7, 43, 14), Qt.AlignmentFlag.AlignRight, text)
        if not xlabel:
            return
        xticks = nice_ticks(*self.xr, 5 if b.width() > 200 else 3)
        if whole_x:
            xticks = [t for t in xticks if float(t).is_integer()]
        for t, text in zip(xticks, tick_labels(xticks)):
            x = self.at(t, self.yr[0]).x()
            p.drawLine(QPointF(x, b.bottom()), QPointF(x, b.bottom() + 3))
            p.drawText(QRectF(x - 20, b.bottom() + 3, 40, 12), Qt.AlignmentFlag.AlignHCenter, text)
        p.drawText(QRectF(b.left(), b.bottom() + 13, b.width(), 12), Qt.AlignmentFlag.AlignHCenter, xlabel)
        if ylabel:
            p.save()
            p.translate(b.left() - 46, b.center().y())  # left of the tick labels, reading upwards
            p.rotate(-90)
            p.drawText(QRectF(-b.height() / 2, 0, b.height(), 12), Qt.AlignmentFlag.AlignHCenter, ylabel)
            p.restore()

    def line(self, p: QPainter, x0, y0, x1, y1, dashed: bool = False) -> None:
        """A reference line in the foreground colour, clipped to the frame."""
        pen = QPen(QColor(FOREGROUND), 0.9, Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
        p.save()
        p.setClipRect(self.box)
        p.setPen(pen)
        p.drawLine(self.at(x0, y0), self.at(x1, y1))
        p.restore()

    def dots(self, p: QPainter, points) -> None:
        """Data points, drawn whole even where they touch the frame."""
        accent = QColor(ACCENT)
        p.setPen(QPen(accent, 1))
        p.setBrush(accent)
        for x, y in points:
            p.drawEllipse(self.at(x, y), DOT, DOT)

    def note(self, p: QPainter, text: str) -> None:
        p.setPen(QPen(QColor(FOREGROUND), 1))
        p.drawText(self.box, Qt.AlignmentFlag.AlignCenter, text)
