"""Scatter and Bland–Altman plots of predicted against labelled counts."""

from __future__ import annotations

import math

import numpy as np

from ..metrics import agreement
from ._plots import ACCENT, FOREGROUND, reset


def draw_agreement(axes, pairs) -> str:
    """Draw both plots on ``axes`` (two matplotlib axes); returns the ICC/MAE line."""
    scatter, bland = axes
    reset(scatter, "predicted vs label", "label", "predicted")
    reset(bland, "Bland–Altman", "mean of both", "predicted − label")
    if not pairs:
        for ax in axes:
            ax.text(
                0.5,
                0.5,
                "no labelled scans yet",
                ha="center",
                va="center",
                color=FOREGROUND,
                fontsize=8,
                transform=ax.transAxes,
            )
        return "Load a labels CSV or correct counts to see the agreement."
    pred, label = (np.asarray(v, float) for v in zip(*pairs))
    top = max(pred.max(), label.max(), 1.0) * 1.08
    scatter.plot([0, top], [0, top], "--", color=FOREGROUND, lw=0.8)
    scatter.scatter(label, pred, s=14, color=ACCENT)
    scatter.set_xlim(0, top)
    scatter.set_ylim(0, top)
    mean, diff = (pred + label) / 2, pred - label
    bland.scatter(mean, diff, s=14, color=ACCENT)
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    bland.axhline(bias, color=FOREGROUND, lw=0.9)
    for limit in (bias - 1.96 * sd, bias + 1.96 * sd):
        bland.axhline(limit, color=FOREGROUND, lw=0.8, ls="--")
    stats = agreement(pred, label)
    icc = "–" if math.isnan(stats["icc21"]) else f"{stats['icc21']:.2f}"
    return (
        f"n = {stats['n']}   ICC(2,1) = {icc}   MAE = {stats['mae']:.2f}   "
        f"bias = {bias:+.2f} (limits ±{1.96 * sd:.2f})"
    )
