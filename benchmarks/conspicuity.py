"""Does the bundled model's count map know which lesions the rater misses?

The training rater misses faint lesions (``simulate.rater_miss_probability``: up to
``rater_miss`` at the visibility level, none from 0.4 above it). A count refit can drop
lesions only through the map's threshold, so it can mimic this rater only if faint lesions
carry less of the count than clear ones. For every expert-visible lesion of the test scans
(the last 100) this script sums the model's count, s·ReLU(w·f + b), over a 5×5×5-voxel box
around the lesion's centre, and reports how that mass goes with the lesion's visibility and
with the rater's chance of missing it.

    python benchmarks/conspicuity.py SIM/fresh SIM/fresh_c [--model default]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).parent))

from common import load_sim, splits  # noqa: E402
from recalibration import Outputs  # noqa: E402
from simulate import Settings, epvs_visibility, rater_miss_probability  # noqa: E402

from napari_hydranet.models import load_model  # noqa: E402

HALF_BOX = 2  # voxels each side of a lesion's centre


def lesion_masses(model, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count mass, visibility and rater miss probability of each expert-visible test lesion."""
    cohort = load_sim(root)
    _, test = splits(cohort)
    out = Outputs(model, cohort)
    scale, bias = float(model.net.count_scale), out.bias
    settings = Settings(**json.loads((root / "settings.json").read_text())["settings"])
    index = {name: i for i, name in enumerate(cohort.names)}
    in_test = {int(t) for t in test}
    mass, visibility = [], []
    with open(root / "lesions.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            i = index[row["scan"]]
            if i not in in_test or row["visible"].strip() != "1":
                continue
            centre = np.round([float(row[k]) for k in "ijk"] - cohort.offsets[i]).astype(int)
            z = out.z[i, 0]
            lo, hi = np.maximum(centre - HALF_BOX, 0), np.minimum(centre + HALF_BOX + 1, z.shape)
            if np.any(hi <= lo):  # outside the network's crop
                continue
            box = z[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            mass.append(scale * float(torch.relu(box + bias).sum()))
            visibility.append(
                epvs_visibility(
                    float(row["contrast"]),
                    float(row["radius_mm"]),
                    float(row["length_mm"]),
                    cohort.spacing[i],
                )
            )
    visibility = np.asarray(visibility, float)
    return np.asarray(mass), visibility, rater_miss_probability(visibility, settings)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cohorts", nargs="+", type=Path)
    ap.add_argument("--model", default="default")
    args = ap.parse_args(argv)
    model = load_model(args.model)
    print(
        "| cohort | visible test lesions | Spearman: mass vs visibility | mass, lesions the rater may "
        "miss (mean miss chance) | mass, lesions the rater always counts |"
    )
    print("|---|---|---|---|---|")
    for root in args.cohorts:
        mass, visibility, miss = lesion_masses(model, root)
        faint = miss > 0
        print(
            f"| {root.name} | {len(mass)} | {spearmanr(mass, visibility)[0]:.2f} | "
            f"{mass[faint].mean():.2f} ± {mass[faint].std():.2f}, n = {faint.sum()} "
            f"({miss[faint].mean():.2f}) | "
            f"{mass[~faint].mean():.2f} ± {mass[~faint].std():.2f}, n = {(~faint).sum()} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
