"""``hydranet demo``: the bundled model on the bundled sample scan, in napari or headless."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .device import select_device
from .infer import COUNT_COLUMNS, DETECTION_COLUMNS, predict_file
from .io import check_folder_output, write_csv, write_volume
from .metrics import detection_scores, match
from .models import load_model
from .sample import load_sample


def has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_demo(out: Path, headless: bool = False, device: str = "auto") -> int:
    """Predict the sample, write counts/detections/heatmap to ``out``, then show them."""
    check_folder_output(out, "demo's output folder (--out)")
    dev = select_device(device)
    model = load_model("default", dev)
    sample = load_sample()
    pred, affine = predict_file(model, sample.scan, dev, mask_path=sample.mask)
    out.mkdir(parents=True, exist_ok=True)
    unit = model.label.get("unit", "")
    write_csv(out / "counts.csv", COUNT_COLUMNS, [pred.count_row(unit)])
    write_csv(out / "detections.csv", DETECTION_COLUMNS, pred.detection_rows(affine))
    write_volume(out / "sample_heatmap.nii.gz", pred.source_heatmap(), affine)
    centres = [pred.prepared.to_source_index(d.centre) for d in pred.result.detections]
    scores = detection_scores([match(centres, sample.lesions, radius=3.0)])
    print(model.card())
    print(f"\nsample scan: {sample.count} known lesions")
    print(f"predicted count: {pred.summary(unit)} (test-time flips)")
    print(
        f"detections: {pred.n_detections}, of which {scores['tp']} within 3 voxels of a known lesion "
        f"(sensitivity {scores['tpr']:.0%}, {scores['fp']} false positive{'' if scores['fp'] == 1 else 's'})"
    )
    print(f"outputs written to {out.resolve()}: counts.csv, detections.csv, sample_heatmap.nii.gz")
    if headless or not has_display():
        if not headless:
            print("no display found: ran headless (open the outputs in napari, ITK-SNAP or FSLeyes)")
        return 0
    from ._viewer import show_prediction

    show_prediction(sample.scan, pred, model, run=True)
    return 0
