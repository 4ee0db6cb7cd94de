"""npe2 sample data: the bundled scan, its ROI and the default model's overlays."""

from __future__ import annotations

from ._layers import detections_layer, heatmap_layer, scan_layer
from .device import select_device
from .infer import predict_file
from .io import read_scan
from .models import load_model
from .sample import load_sample


def sample_scan():
    sample = load_sample()
    scan = read_scan(sample.scan)
    device = select_device("auto")
    pred, affine = predict_file(load_model("default", device), sample.scan, device, mask_path=sample.mask)
    return [
        scan_layer(scan),
        heatmap_layer(pred, affine, f"{scan.name} heatmap"),
        detections_layer(pred, affine, f"{scan.name} detections"),
    ]
