"""Matplotlib figures inside the docks, styled to read on napari's dark theme."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

BACKGROUND = "#262930"
FOREGROUND = "#d1d2d4"
ACCENT = "#4fc3f7"


def make_canvas(nrows: int, ncols: int = 1, height: float = 4.0, width: float = 3.6):
    """A canvas with a grid of axes; returns (canvas, axes list)."""
    fig = Figure(figsize=(width, height), dpi=90, facecolor=BACKGROUND, layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(nrows, ncols)).ravel())
    for ax in axes:
        style(ax)
    canvas = FigureCanvasQTAgg(fig)
    canvas.setMinimumHeight(int(height * 60))
    return canvas, axes


def style(ax) -> None:
    ax.set_facecolor(BACKGROUND)
    for spine in ax.spines.values():
        spine.set_color(FOREGROUND)
    ax.tick_params(colors=FOREGROUND, labelsize=7)
    ax.xaxis.label.set_color(FOREGROUND)
    ax.yaxis.label.set_color(FOREGROUND)
    ax.title.set_color(FOREGROUND)
    ax.xaxis.label.set_size(8)
    ax.yaxis.label.set_size(8)
    ax.title.set_size(8)


def reset(ax, title: str = "", xlabel: str = "", ylabel: str = "") -> None:
    ax.clear()
    style(ax)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
