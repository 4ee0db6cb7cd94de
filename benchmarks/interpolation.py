"""A model on scans interpolated after acquisition (resliced, registered or resampled by
another tool before they reach it): the same test scans as stored, shifted by half a voxel
with linear and with cubic interpolation, smoothed by a Gaussian of 0.5 voxel (as k-space
filtering does) and resampled to 1 mm with linear interpolation.

    python benchmarks/interpolation.py SIM/fresh_f --model default [--n 40] [--out FILE.json]

The cohort is what ``simulate.py`` writes; its last ``--n`` scans are used. Masks are moved
with their scans (nearest neighbour). Counts are scored against the expert count (ICC(2,1),
MAE) and as a ratio of the mean count to that on the scans as stored; "texture" is the range
of ``noise_texture`` over the scans and "noted" the share whose notes say their noise is
smoother than the model's training scans (``infer.texture_notes``); "rescaled" scores the
scans after the first ``REFIT`` once their counts are multiplied by the scale that fits those
``REFIT`` to the rater's labels (what a fine-tune's recalibration does first, on a cohort
interpolated throughout). One pass per scan (no test-time flips).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from napari_hydranet.device import select_device
from napari_hydranet.infer import predict_scan
from napari_hydranet.io import Scan, atomic_write_bytes, read_scan
from napari_hydranet.metrics import agreement
from napari_hydranet.models import load_model

REFIT = 25


def _resampled(scan: Scan, affine: np.ndarray, shape, order: int) -> Scan:
    """``scan`` on the grid (``affine``, ``shape``), interpolated with a spline of ``order``."""
    to_source = np.linalg.inv(scan.affine) @ affine
    array = ndimage.affine_transform(
        scan.array, to_source[:3, :3], to_source[:3, 3], output_shape=tuple(shape), order=order
    )
    return Scan(array.astype(np.float32), affine, scan.path)


def _half_shift(scan: Scan, order: int) -> Scan:
    affine = scan.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.full(3, 0.5)
    return _resampled(scan, affine, np.array(scan.array.shape) - 1, order)


def _iso(scan: Scan, mm: float, order: int) -> Scan:
    spacing = np.linalg.norm(scan.affine[:3, :3], axis=0)
    affine = scan.affine.copy()
    affine[:3, :3] = scan.affine[:3, :3] / spacing * mm
    shape = ((np.array(scan.array.shape) - 1) * spacing / mm).astype(int) + 1
    return _resampled(scan, affine, shape, order)


def _smoothed(scan: Scan) -> Scan:
    return Scan(ndimage.gaussian_filter(scan.array, 0.5), scan.affine, scan.path)


# name: (what happens to the scan, what happens to its mask)
VARIANTS = {
    "as stored": (lambda s: s, lambda m: m),
    "half-voxel shift, linear": (lambda s: _half_shift(s, 1), lambda m: _half_shift(m, 0)),
    "half-voxel shift, cubic": (lambda s: _half_shift(s, 3), lambda m: _half_shift(m, 0)),
    "Gaussian 0.5 voxel": (_smoothed, lambda m: m),
    "1 mm, linear": (lambda s: _iso(s, 1.0, 1), lambda m: _iso(m, 1.0, 0)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cohort", type=Path)
    ap.add_argument("--model", default="default")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.n <= REFIT + 2:
        ap.error(f"--n must be more than {REFIT + 2}: the first {REFIT} scans fit the rescaling")
    with open(a.cohort / "expert.csv", newline="") as fh:
        expert = {r["scan"]: float(r["label"]) for r in csv.DictReader(fh)}
    with open(a.cohort / "labels.csv", newline="") as fh:
        rater = {r["scan"]: float(r["label"]) for r in csv.DictReader(fh)}
    names = sorted(expert)[-a.n :]
    model, device = load_model(a.model), select_device("auto")
    counts = {v: [] for v in VARIANTS}
    textures = {v: [] for v in VARIANTS}
    noted = {v: 0 for v in VARIANTS}
    t0 = time.monotonic()
    for name in names:
        scan, mask = read_scan(a.cohort / "scans" / name), read_scan(a.cohort / "masks" / name)
        for variant, (move_scan, move_mask) in VARIANTS.items():
            moved, moved_mask = move_scan(scan), move_mask(mask)
            pred = predict_scan(model, moved, device, moved_mask, flips=1)
            counts[variant].append(pred.count)
            textures[variant].append(pred.prepared.texture)
            noted[variant] += any("noise smoother than" in note for note in pred.notes)
    truth = np.array([expert[n] for n in names])
    labels = np.array([rater[n] for n in names])
    stored = np.mean(counts["as stored"])
    result = {"cohort": str(a.cohort), "model": a.model, "n": len(names), "variants": {}}
    print(f"{len(names)} scans of {a.cohort} ({time.monotonic() - t0:.0f} s); expert mean {truth.mean():.2f}")
    print(
        f"{'variant':28s} {'mean count':>10s} {'ratio':>6s} {'ICC(2,1)':>8s} {'MAE':>6s} {'rescaled':>8s} "
        f"{'texture':>11s} {'noted':>6s}"
    )
    for variant, values in counts.items():
        values = np.array(values)
        scores = agreement(values, truth)
        ratio = float(values.mean() / stored)
        fit, rest = values[:REFIT], slice(REFIT, None)
        scale = float(fit @ labels[:REFIT] / (fit @ fit)) if fit @ fit > 0 else 1.0
        rescaled = agreement(values[rest] * scale, truth[rest])["icc21"]
        result["variants"][variant] = {
            "mean": float(values.mean()),
            "ratio": ratio,
            **scores,
            "rescaled_icc21": rescaled,
            "scale": scale,
            "textures": [float(t) for t in textures[variant]],
            "noted": noted[variant] / len(names),
        }
        print(
            f"{variant:28s} {values.mean():10.2f} {ratio:6.2f} {scores['icc21']:8.3f} {scores['mae']:6.2f} "
            f"{rescaled:8.3f} {min(textures[variant]):.2f}–{max(textures[variant]):.2f} "
            f"{noted[variant] / len(names):6.0%}"
        )
    if a.out:
        atomic_write_bytes(a.out, json.dumps(result, indent=1).encode())


if __name__ == "__main__":
    with torch.no_grad():
        main()
