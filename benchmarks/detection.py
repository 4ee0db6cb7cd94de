"""Lesion detection from count-trained networks, 004 Table 1 and FROC, on a simulated cohort.

Every method thresholds a score map so that its number of connected components equals the
predicted count (004 §2.2), then detections within 3 voxels of a visible lesion's centre are
true positives (one-to-one). Score maps:

(a) intensities (the network input), with the GP-UNet's count;
(b) saliency |∂count/∂input| of a HydraRegressor, with its own count;
(c) saliency of the GP-UNet; (e) the GP-UNet heatmap; (f) heatmap + intensities (w = 0.5).
Heatmaps (d, e, f) are scored as the product detects on them (``detect.score_map``: smoothed
by a Gaussian of 1 voxel); saliency maps are smoothed likewise.

(d), a regression network without the upsampling path (GP-UNet ``decoder=False``), needs a
model trained that way; pass it with ``--cam`` when there is one.

    python benchmarks/detection.py COHORT --gpunet MODEL [--regressor MODEL] [--cam MODEL] --out RESULT.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))

from common import (  # noqa: E402
    combined_map,
    count_scores,
    detect_scores,
    for_model,
    intensity_map,
    load_sim,
    model_outputs,
    save_json,
    splits,
)

from napari_hydranet.detect import score_map  # noqa: E402
from napari_hydranet.models import load_model  # noqa: E402


def saliency(model, image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """|∂count/∂input|, smoothed, inside the ROI (the input's non-zero voxels)."""
    x = torch.from_numpy(image)[None, None].clone().requires_grad_(True)
    model.net.eval()  # in eval GP-UNet's density passes the plain ReLU gradient
    model.net(x).sum().backward()
    g = np.abs(x.grad[0, 0].numpy())
    return ndimage.gaussian_filter(g, sigma) * (image > 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cohort", type=Path)
    ap.add_argument("--gpunet", required=True, help="GP-UNet model folder, or 'default'")
    ap.add_argument("--regressor", help="HydraRegressor model folder, for (b)")
    ap.add_argument("--cam", help="GP-UNet without decoder, for (d)")
    ap.add_argument("--flips", type=int, default=1)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    gp = load_model(a.gpunet)
    sim = for_model(load_sim(a.cohort), gp)  # the intensity maps (a, f) then match the GP-UNet's input
    _, test = splits(sim, a.test)
    counts, heats = model_outputs(gp, sim, test, a.flips)
    maps = {
        "a intensity thresholding": [intensity_map(sim, i) for i in test],
        "c saliency of GP-UNet": [saliency(gp, sim.images[i]) for i in test],
        "e GP-UNet": [score_map(h, sim.images[i]) for h, i in zip(heats, test)],
        "f GP-UNet + intensities": [combined_map(h, sim, i) for h, i in zip(heats, test)],
    }
    model_counts = dict.fromkeys(maps, counts)
    frames = dict.fromkeys(maps, sim)  # each map is scored in the crop of the input it came from
    if a.regressor:
        reg = load_model(a.regressor)
        reg_sim = for_model(sim, reg)
        model_counts["b saliency of a regressor"], _ = model_outputs(reg, reg_sim, test, a.flips)
        maps["b saliency of a regressor"] = [saliency(reg, reg_sim.images[i]) for i in test]
        frames["b saliency of a regressor"] = reg_sim
    if a.cam:
        cam = load_model(a.cam)
        cam_sim = for_model(sim, cam)
        cam_counts, cam_heats = model_outputs(cam, cam_sim, test, a.flips)
        model_counts["d CAM-like (no upsampling path)"] = cam_counts
        cam_maps = [score_map(h, cam_sim.images[i]) for h, i in zip(cam_heats, test)]
        maps["d CAM-like (no upsampling path)"] = cam_maps
        frames["d CAM-like (no upsampling path)"] = cam_sim
    result = {"gpunet": str(a.gpunet), "regressor": a.regressor, "cam": a.cam, "methods": {}}
    for name in sorted(maps):
        scores = detect_scores(maps[name], model_counts[name], frames[name], test)
        scores["counts"] = count_scores(model_counts[name], sim, test)
        result["methods"][name] = scores
        print(
            f"{name:34s} TPR {scores['tpr']:.3f} at {scores['fp_per_scan']:.2f} FP/scan (FDR "
            f"{scores['fdr']:.2f}); FROC TPR at ≤ {scores['fp_limit']} FP/scan {scores['tpr_at_fp']:.3f}",
            flush=True,
        )
    save_json(result, a.out)


if __name__ == "__main__":
    main()
