"""Open napari with a scan and a model's overlays (used by ``hydranet demo``)."""

from __future__ import annotations

from pathlib import Path

import napari

from ._layers import brain_view, prediction_layers
from .infer import Prediction
from .io import read_scan
from .models import Model


def add_prediction(
    viewer: napari.Viewer, scan_path: Path, pred: Prediction, mask_path: Path | None = None
) -> list:
    """Add the scan, its ROI mask (hidden), its heatmap and its detections; returns the layers."""
    scan = read_scan(scan_path)
    layers = []
    for data, kwargs, kind in prediction_layers(scan, pred, read_scan(mask_path) if mask_path else None):
        layers.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
    return layers


def show_prediction(
    scan_path: Path, pred: Prediction, model: Model, mask_path: Path | None = None, run: bool = True
) -> napari.Viewer:
    viewer = napari.Viewer(title="napari-hydranet demo")
    layers = add_prediction(viewer, scan_path, pred, mask_path)
    # napari 0.9 moved the canvas overlays to viewer.canvas
    text = viewer.canvas.overlays.text if hasattr(viewer, "canvas") else viewer.text_overlay
    brain_view(viewer)
    text.visible = True
    text.position = "top_left"
    text.text = f"{pred.scan}: {pred.summary(model.label.get('unit', ''))} ({pred.detections_text()})"
    points = layers[-1]
    if len(points.data):
        viewer.dims.set_point(0, float(points.data_to_world(points.data[0])[0]))
    if run:
        napari.run()
    return viewer
