"""Scatter and Bland–Altman plots of predicted against labelled counts."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QRectF
from qtpy.QtWidgets import QSizePolicy, QWidget

from ..metrics import FEW_FOR_ICC, agreement, bland_altman
from ..text import figure, plural, signed
from ._plots import Frame, padded, start

EMPTY = "Load a labels CSV or correct counts to see the agreement."


def agreement_text(pred: np.ndarray, label: np.ndarray, unit: str = "") -> str:
    """The line under the plots: n, ICC(2,1), MAE and the Bland–Altman bias and limits, the
    last three in ``unit``."""
    stats = agreement(pred, label)
    unit = f" {unit}" if unit else ""
    bias, limit = bland_altman(pred, label)
    few = (
        f"\n{plural(stats['n'], 'labelled scan')}: too few to judge agreement"
        if stats["n"] < FEW_FOR_ICC
        else ""
    )
    return (
        f"n = {stats['n']}   ICC(2,1) = {figure(stats['icc21'])}   MAE = {stats['mae']:.2f}{unit}   "
        f"bias = {signed(bias)}{f' (limits ±{limit:.2f})' if np.isfinite(limit) else ''}{unit}{few}"
    )


def scatter_ends(pred: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """The scatter's range on both axes: from 0 (or the lowest value, as a regressor's
    negative volume) to the highest, with a margin."""
    low = min(pred.min(initial=0), label.min(initial=0))
    return low * 1.08, max(pred.max(initial=0), label.max(initial=0), 1.0) * 1.08


class AgreementPlots(QWidget):
    """Predicted against label (with the identity line) beside the Bland–Altman plot (bias
    and 95 % limits of agreement); ``set_pairs`` replaces the data and returns the stats line."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.pred = self.label = np.zeros(0)
        self.setMinimumHeight(170)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def set_pairs(self, pairs, unit: str = "") -> str:
        self.pred, self.label = (np.asarray(v, float) for v in zip(*pairs)) if pairs else (np.zeros(0),) * 2
        self.update()
        return agreement_text(self.pred, self.label, unit) if pairs else EMPTY

    def paintEvent(self, _event) -> None:
        p = start(self)
        left, gap, right, top, bottom = 50.0, 56.0, 8.0, 16.0, 28.0
        width = (self.width() - left - gap - right) / 2
        height = self.height() - top - bottom
        boxes = QRectF(left, top, width, height), QRectF(left + width + gap, top, width, height)
        pred, label = self.pred, self.label
        ends = scatter_ends(pred, label)
        scatter = Frame(boxes[0], ends, ends)
        scatter.draw_axes(p, "predicted vs label", "label", "predicted")
        mean, diff = (pred + label) / 2, pred - label
        bias, limit = bland_altman(pred, label)
        bland = Frame(boxes[1], padded(mean), padded([*diff, bias - limit, bias + limit]))
        bland.draw_axes(p, "Bland–Altman", "mean of both", "predicted − label")
        if not len(pred):
            for frame in (scatter, bland):
                frame.note(p, "no labelled scans yet")
            p.end()
            return
        scatter.line(p, ends[0], ends[0], ends[1], ends[1], dashed=True)  # predicted = label
        scatter.dots(p, zip(label, pred))
        for y, dashed in ((bias, False), (bias - limit, True), (bias + limit, True)):
            if np.isfinite(y):  # no limits with one scan
                bland.line(p, bland.xr[0], y, bland.xr[1], y, dashed=dashed)
        bland.dots(p, zip(mean, diff))
        p.end()
