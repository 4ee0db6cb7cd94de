"""Regenerate docs/screenshots/{predict,train,cohort}.png: each dock in use on the sample data.

    xvfb-run -a .venv/bin/python docs/make_screenshots.py [--model default|MODEL_DIR]

Without the bundled model (or --model) it makes an *untrained* small GP-UNet whose count is
scaled to the sample, so the pictures show the docks working, not a model's quality. The Train
picture trains a tiny regressor on a synthetic cohort for a few seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import napari
import nibabel as nib
import numpy as np
import torch
from qtpy.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from napari_hydranet.io import read_scan  # noqa: E402
from napari_hydranet.models import build_net, default_model_dir, save_model  # noqa: E402
from napari_hydranet.preprocess import PreprocessConfig, prepare  # noqa: E402
from napari_hydranet.sample import load_sample  # noqa: E402


def wait(condition, timeout=600.0) -> None:
    app, t0 = QApplication.instance(), time.monotonic()
    while not condition():
        app.processEvents()
        time.sleep(0.05)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("the dock did not finish in time")
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)


def untrained_model(folder: Path) -> Path:
    torch.manual_seed(0)
    args = {"features": [4, 8, 16]}
    net = build_net("gpunet", args)
    pre = PreprocessConfig()
    sample = load_sample()
    prepared = prepare(read_scan(sample.scan), pre, read_scan(sample.mask))
    with torch.no_grad():
        net.count_scale.fill_(sample.count / float(net(torch.from_numpy(prepared.array)[None, None])))
    config = {
        "name": "untrained demo model",
        "architecture": {"name": "gpunet", "args": args},
        "preprocess": pre.to_dict(),
        "label": {"name": "EPVS count", "unit": "lesions"},
        "training": {"data": "nothing: random weights, for screenshots only"},
    }
    return save_model(folder, net, config)


def new_viewer(title: str):
    viewer = napari.Viewer(title=f"napari-hydranet: {title}")
    viewer.window._qt_window.resize(1500, 1040)
    return viewer


def save(viewer, path: Path) -> None:
    wait(lambda: True)
    viewer.window._qt_window.grab().save(str(path))
    print(f"wrote {path}")
    viewer.close()


def shot_predict(model, out: Path) -> None:
    sample = load_sample()
    viewer = new_viewer("Predict")
    (scan,) = viewer.open(str(sample.scan), plugin="napari-hydranet")
    (mask,) = viewer.open(str(sample.mask), plugin="napari-hydranet")
    mask.visible = False
    _, widget = viewer.window.add_plugin_dock_widget("napari-hydranet", "Predict")
    widget.model_picker.select(model)
    widget.image_combo.set_layer(scan)
    widget.mask_combo.set_layer(mask)
    widget.run()
    wait(lambda: widget.worker is not None and widget.run_button.isEnabled())
    wait(lambda: True)
    viewer.reset_view()
    widget.go_to(+1)
    save(viewer, out / "predict.png")


def shot_train(work: Path, out: Path) -> None:
    from synth import make_cohort

    data = make_cohort(work / "synthetic", n=12, shape=(24, 24, 16))
    viewer = new_viewer("Train")
    viewer.open(str(next((data / "scans").iterdir())), plugin="napari-hydranet")
    _, widget = viewer.window.add_plugin_dock_widget("napari-hydranet", "Train")
    widget.set_inputs(data / "scans", data / "labels.csv", data / "masks")
    widget.start_from.setCurrentText("scratch")
    widget.arch.setCurrentText("regressor")
    widget.arch_args.setText(json.dumps({"width": 4}))
    widget.crop.setText("24 24 16")
    widget.epochs.setValue(30)
    widget.heads.setValue(2)
    widget.out.set_path(work / "trained_model")
    widget.start()
    wait(lambda: len(widget.history) >= 6)
    save_path = out / "train.png"
    viewer.window._qt_window.grab().save(str(save_path))
    print(f"wrote {save_path}")
    widget.stop()
    wait(lambda: not widget.is_running())
    viewer.close()


def shot_cohort(model, work: Path, out: Path) -> None:
    sample = load_sample()
    img = nib.load(str(sample.scan))
    data = np.asarray(img.dataobj, np.float32)
    roi = np.asarray(nib.load(str(sample.mask)).dataobj)
    scans, masks = work / "cohort" / "scans", work / "cohort" / "masks"
    scans.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(0)
    rows = ["scan,label"]
    for n, (axis, gain) in enumerate([(None, 1.0), (0, 1.0), (1, 0.8), (2, 1.2), (None, 0.6), (0, 1.4)]):
        vol = data if axis is None else np.flip(data, axis)
        m = roi if axis is None else np.flip(roi, axis)
        vol = vol * gain + rng.normal(0, 0.02 * data.max(), data.shape).astype(np.float32)
        name = f"subject-{n + 1:02d}.nii.gz"
        nib.save(nib.Nifti1Image(np.ascontiguousarray(vol, np.float32), img.affine), str(scans / name))
        nib.save(nib.Nifti1Image(np.ascontiguousarray(m), img.affine), str(masks / name))
        rows.append(f"{name},{sample.count}")
    (work / "cohort" / "labels.csv").write_text("\n".join(rows) + "\n")
    viewer = new_viewer("Cohort")
    _, widget = viewer.window.add_plugin_dock_widget("napari-hydranet", "Cohort")
    widget.scans.set_path(scans)
    widget.masks.set_path(masks)
    widget.labels_csv.set_path(work / "cohort" / "labels.csv")
    widget.model_picker.select(model)
    widget.run()
    wait(lambda: widget.worker is not None and widget.run_button.isEnabled())
    widget.table.correct("subject-03.nii.gz", 7)
    widget.show_scan("subject-02.nii.gz")
    save(viewer, out / "cohort.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", help="model folder or 'default' (default: the bundled model if present)")
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    p.add_argument("--only", nargs="*", choices=["predict", "train", "cohort"])
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hydranet-shots-"))
    try:
        model = a.model or ("default" if (default_model_dir() / "config.json").is_file() else None)
        model = model or str(untrained_model(work / "untrained"))
        only = set(a.only or ["predict", "train", "cohort"])
        if "predict" in only:
            shot_predict(model, out)
        if "train" in only:
            shot_train(work, out)
        if "cohort" in only:
            shot_cohort(model, work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
