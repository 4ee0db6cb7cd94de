"""``hydranet demo``: the bundled model on the bundled sample scan, in napari or headless."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .device import select_device
from .errors import HydranetError
from .infer import COUNT_COLUMNS, DETECTION_COLUMNS, predict_file
from .io import check_folder_output, write_csv, write_volume
from .metrics import detection_scores, match
from .models import load_model
from .sample import load_sample
from .text import first_of, plural


def has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


OUTPUTS = {"counts.csv": COUNT_COLUMNS, "detections.csv": DETECTION_COLUMNS, "sample_heatmap.nii.gz": None}


def check_demo_folder(out: Path) -> None:
    """Refuse a folder holding anything but an earlier demo's outputs: the user's files stay
    theirs (a counts.csv of their own is told from the demo's by its header)."""
    check_folder_output(out, "demo's output folder (--out)")
    if not out.is_dir():
        return
    others = []
    for entry in sorted(out.iterdir()):
        if entry.name.startswith("."):
            continue
        header = OUTPUTS.get(entry.name, False)
        if header is None and entry.is_file():
            continue
        if header and entry.is_file():
            with open(entry, newline="", errors="replace") as fh:
                if fh.readline().strip() == ",".join(header):
                    continue
        others.append(entry.name)
    if others:
        raise HydranetError(
            f"{out}: holds files the demo did not write ({first_of(others, 3)}); choose a new or "
            "empty folder for --out"
        )


def run_demo(out: Path, headless: bool = False, device: str = "auto") -> int:
    """Predict the sample, write counts/detections/heatmap to ``out``, then show them."""
    check_demo_folder(out)
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
        f"(sensitivity {scores['tpr']:.0%}, {plural(scores['fp'], 'false positive')})"
    )
    print(f"outputs written to {out.resolve()}: counts.csv, detections.csv, sample_heatmap.nii.gz")
    if headless or not has_display():
        if not headless:
            print("no display found: ran headless (open the outputs in napari, ITK-SNAP or FSLeyes)")
        return 0
    from ._viewer import show_prediction

    show_prediction(sample.scan, pred, model, run=True)
    return 0
