"""``hydranet demo``: the bundled model on the bundled sample scan, in napari or headless."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .device import select_device
from .errors import HydranetError
from .infer import COUNT_COLUMNS, DETECTION_COLUMNS, OLD_COUNT_COLUMNS, predict_file
from .io import atomic_write_bytes, check_folder_output, held_files, write_csv, write_volume
from .metrics import detection_scores, match
from .models import load_model
from .sample import load_sample
from .text import first_of, plural


def has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


OUTPUTS = ("counts.csv", "detections.csv", "sample_heatmap.nii.gz")
MARKER = ".hydranet-demo"  # written with the outputs: this folder's files are the demo's own


def _older_demo(out: Path, held: list[str]) -> bool:
    """The outputs of a demo from before the marker: these three files, the sample alone."""
    if held != sorted(OUTPUTS):
        return False
    try:
        rows = (out / "counts.csv").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    return len(rows) == 2 and rows[0] == ",".join(OLD_COUNT_COLUMNS) and rows[1].startswith("sample.nii.gz,")


def check_demo_folder(out: Path) -> None:
    """Refuse a folder that holds anything unless the demo made it (its marker file is there):
    a counts.csv of the user's, even one ``hydranet predict`` wrote, stays theirs."""
    check_folder_output(out, "demo's output folder (--out)")
    try:
        held = held_files(out)
    except OSError as exc:
        raise HydranetError(f"{out}: cannot list it ({exc.strerror or exc})") from None
    if held and not (out / MARKER).is_file() and not _older_demo(out, held):
        raise HydranetError(
            f"{out}: holds files the demo did not write ({first_of(held, 3)}); choose a new or "
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
    write_volume(out / "sample_heatmap.nii.gz", pred.source_heatmap(), affine, like=sample.scan)
    atomic_write_bytes(out / MARKER, b"written by hydranet demo; it may write over this folder again\n")
    centres = [pred.prepared.to_source_index(d.centre) for d in pred.result.detections]
    scores = detection_scores([match(centres, sample.lesions, radius=3.0)])
    print(model.card())
    print(f"\nsample scan: {sample.count} known lesions")
    print(f"predicted count: {pred.summary(unit)} (test-time flips)")
    print(
        f"detections: {pred.n_detections}, of which {scores['tp']} within 3 voxels of a known lesion "
        f"(sensitivity {scores['tpr']:.0%}, {plural(scores['fp'], 'false positive')})"
    )
    print(f"outputs written to {out.resolve()}: {', '.join(OUTPUTS)}")
    if headless or not has_display():
        if not headless:
            print("no display found: ran headless (open the outputs in napari, ITK-SNAP or FSLeyes)")
        return 0
    from ._viewer import show_prediction

    show_prediction(sample.scan, pred, model, sample.mask, run=True)
    return 0
