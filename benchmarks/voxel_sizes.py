"""A model on scans whose voxels lie outside the range it was trained on: as stored,
resampled along those axes to the range's nearest end, and to the model's typical voxel
(``PreprocessConfig.spacing_range_mm`` and ``spacing_mm``: what ``hydranet predict`` does).

    python benchmarks/voxel_sizes.py SIM/hires --model default [--range 0.9 1.6] [--out FILE.json]

The cohort is what ``simulate.py`` writes (e.g. ``--voxel-min 0.5 --voxel-max 0.8``, the
paper's 0.49 × 0.49 × 0.8 mm). Its last 100 scans are the test set; the first 25 give the
count refit a fine-tune starts with (the count's scale fitted to the rater's labels). Counts
are scored against the expert count (ICC(2,1), MAE); count-consistent detections against the
visible lesions' centres in world mm, within ``--radius-mm`` (3 voxels of 1.24 mm, the
bundled model's training voxels, by default). One pass per scan (no test-time flips).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from napari_hydranet.device import select_device
from napari_hydranet.infer import predict_scan
from napari_hydranet.io import atomic_write_bytes, read_scan
from napari_hydranet.metrics import agreement, detection_scores, match
from napari_hydranet.models import load_model

N_TEST, N_REFIT = 100, 25


def lesion_centres(root: Path) -> dict[str, np.ndarray]:
    """World (x, y, z) mm of each scan's visible lesions."""
    centres: dict[str, list] = {}
    with open(root / "lesions.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["visible"].strip() == "1":
                centres.setdefault(r["scan"], []).append([float(r[k]) for k in "xyz"])
    return {k: np.array(v) for k, v in centres.items()}


def run(model, root: Path, names: list[str], device, radius_mm: float) -> dict:
    """Counts, detection matches and mean seconds per scan of ``model`` on the scans ``names``."""
    truth = lesion_centres(root)
    counts, matches, seconds, resampled, spacings = [], [], [], [], []
    for name in names:
        t0 = time.perf_counter()
        scan = read_scan(root / "scans" / name)
        pred = predict_scan(model, scan, device, read_scan(root / "masks" / name), flips=1)
        seconds.append(time.perf_counter() - t0)
        counts.append(pred.count)
        resampled.append(pred.prepared.resampled)
        spacings.append(scan.spacing)
        world = np.array([row[5:8] for row in pred.detection_rows(scan.affine)], float).reshape(-1, 3)
        matches.append(match(world, truth.get(name, np.zeros((0, 3))), radius_mm))
    return {
        "counts": np.array(counts),
        "matches": matches,
        "seconds_per_scan": float(np.mean(seconds)),
        "resampled": int(sum(resampled)),
        "spacing": np.array(spacings),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cohort", type=Path)
    ap.add_argument("--model", default="default")
    ap.add_argument("--range", nargs=2, type=float, help="voxel range (mm); default: the model's")
    ap.add_argument("--radius-mm", type=float, default=3 * 1.24)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    device = select_device("auto")
    model = load_model(a.model, device)
    edges = tuple(a.range) if a.range else model.preprocess.spacing_range_mm
    if edges is None:
        raise SystemExit(f"{a.model}: the model has no voxel range; give --range")
    with open(a.cohort / "expert.csv", newline="") as fh:
        expert = {r["scan"]: float(r["label"]) for r in csv.DictReader(fh)}
    with open(a.cohort / "labels.csv", newline="") as fh:
        rater = {r["scan"]: float(r["label"]) for r in csv.DictReader(fh)}
    names = sorted(expert)
    if len(names) < N_TEST + N_REFIT:
        raise SystemExit(f"{a.cohort}: {len(names)} scans; need {N_TEST + N_REFIT}")
    test, refit = names[-N_TEST:], names[:N_REFIT]
    y_test = np.array([expert[n] for n in test])
    y_refit = np.array([rater[n] for n in refit])
    results = {}
    conditions = {
        "as stored": replace(model.preprocess, spacing_range_mm=None),
        "to the range's nearest end": replace(model.preprocess, spacing_range_mm=edges, spacing_mm=None),
    }
    if model.preprocess.spacing_mm:
        typical = "×".join(f"{v:.2f}" for v in model.preprocess.spacing_mm)
        conditions[f"to {typical} mm (hydranet predict)"] = replace(model.preprocess, spacing_range_mm=edges)
    for label, pre in conditions.items():
        model.config["preprocess"] = pre.to_dict()
        out = run(model, a.cohort, test + refit, device, a.radius_mm)
        c_test, c_refit = out["counts"][:N_TEST], out["counts"][N_TEST:]
        scale = float(c_refit @ y_refit / max(c_refit @ c_refit, 1e-9))
        results[label] = {
            "as shipped": agreement(c_test, y_test),
            "count refit on 25 rater labels": {**agreement(scale * c_test, y_test), "scale": scale},
            "mean count / mean expert": float(c_test.mean() / max(y_test.mean(), 1e-9)),
            "detection": detection_scores(out["matches"][:N_TEST]),
            "seconds_per_scan": out["seconds_per_scan"],
            "scans resampled": out["resampled"],
        }
    spacing = out["spacing"][:N_TEST]  # the voxels as stored, the same under every condition
    print(
        f"{a.cohort}: {N_TEST} test scans, voxels {spacing.min():.2f}-{spacing.max():.2f} mm; model {a.model}"
    )
    print("| input | ICC(2,1) | MAE | refit ICC(2,1) | refit MAE | count/expert | TPR | FP/scan | s/scan |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, r in results.items():
        s, f, d = r["as shipped"], r["count refit on 25 rater labels"], r["detection"]
        print(
            f"| {label} | {s['icc21']:.3f} | {s['mae']:.2f} | {f['icc21']:.3f} | {f['mae']:.2f} | "
            f"{r['mean count / mean expert']:.2f} | {100 * d['tpr']:.1f} % | "
            f"{d['fp_per_scan']:.2f} | {r['seconds_per_scan']:.2f} |"
        )
    if a.out:
        report = {"cohort": str(a.cohort), "model": a.model, "results": results}
        atomic_write_bytes(a.out, json.dumps(report, indent=1).encode())


if __name__ == "__main__":
    main()
