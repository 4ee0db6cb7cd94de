"""npe2 sample data: the bundled scan, its ROI and the default model's overlays."""

from __future__ import annotations

from ._layers import prediction_layers
from .device import select_device
from .infer import predict_file
from .io import read_scan
from .models import load_model
from .sample import load_sample


def sample_scan():
    sample = load_sample()
    scan = read_scan(sample.scan)
    device = select_device("auto")
    pred, _ = predict_file(load_model("default", device), sample.scan, device, mask_path=sample.mask)
    return prediction_layers(scan, pred, read_scan(sample.mask))
