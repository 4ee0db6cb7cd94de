"""What does a count need to agree with the expert after it is fitted to the rater's labels?

The training rater misses faint lesions (``simulate.rater_miss_probability``: up to
``rater_miss`` at the visibility level, none from 0.4 above it). Three tables:

1. The bundled model's map: for every expert-visible lesion of the test scans (the last
   100), its count s·ReLU(w·f + b) summed over a 5×5×5-voxel box around the lesion's centre,
   against the lesion's visibility and the rater's chance of missing it.
2. Perfect counters (the simulation's own lesion lists): the expert's count with one scale,
   or the counts of faint and of clear lesions with a weight each, fitted by least squares
   to the rater's labels of ``--size`` training scans (``--draws`` draws from the pool),
   scored on the test scans against the expert and the rater: what a counter that makes no
   counting errors reaches from a user's labels, with and without knowing conspicuity.
3. Counters with errors: the expert's count plus Gaussian errors, scaled the same way, beside
   the bundled model's own count error: how accurate a counter must be for the goal.

    python benchmarks/conspicuity.py SIM/fresh SIM/fresh_c [--model default] [--draws 200]
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).parent))

from common import draw_training, load_sim, source_offsets, splits  # noqa: E402
from recalibration import Outputs, parse_draw_args, scores_on_test  # noqa: E402
from simulate import Settings, epvs_visibility, rater_miss_probability  # noqa: E402

from napari_hydranet.metrics import agreement  # noqa: E402

HALF_BOX = 2  # voxels each side of a lesion's centre


def cohort_lesions(cohort, root: Path) -> list[tuple[int, np.ndarray, float, bool, float]]:
    """(scan index, centre ijk in the source, visibility, counted by the expert, rater miss
    probability) of every simulated lesion of the cohort, visible or not."""
    settings = Settings(**json.loads((root / "settings.json").read_text())["settings"])
    index = {name: i for i, name in enumerate(cohort.names)}
    lesions = []
    with open(root / "lesions.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            i = index[row["scan"]]
            v = float(
                epvs_visibility(
                    float(row["contrast"]),
                    float(row["radius_mm"]),
                    float(row["length_mm"]),
                    cohort.spacing[i],
                )
            )
            centre = np.array([float(row[k]) for k in "ijk"])
            visible = row["visible"].strip() == "1"
            lesions.append((i, centre, v, visible, float(rater_miss_probability(v, settings))))
    return lesions


def visible_lesions(cohort, root: Path) -> list[tuple[int, np.ndarray, float, float]]:
    """(scan index, centre ijk in the source, visibility, rater miss probability) of every
    expert-visible lesion of the cohort."""
    return [(i, c, v, miss) for i, c, v, visible, miss in cohort_lesions(cohort, root) if visible]


def lesion_masses(model, cohort, out: Outputs, lesions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count mass, visibility and rater miss probability of each expert-visible test lesion."""
    _, test = splits(cohort)
    scale, bias = float(model.net.count_scale), out.bias
    in_test = {int(t) for t in test}
    offsets = source_offsets(cohort)
    kept = []
    for i, centre, visibility, miss in lesions:
        if i not in in_test:
            continue
        voxel = np.round(centre - offsets[i]).astype(int)
        z = out.z[i, 0]
        lo, hi = np.maximum(voxel - HALF_BOX, 0), np.minimum(voxel + HALF_BOX + 1, z.shape)
        if np.any(hi <= lo):  # outside the network's crop
            continue
        box = z[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        kept.append((scale * float(torch.relu(box + bias).sum()), visibility, miss))
    return tuple(np.array(column, float) for column in zip(*kept))


def perfect_counters(cohort, lesions, size: int, draws: int) -> dict[str, np.ndarray]:
    """Mean (ICC vs expert, ICC vs rater) over draws of a scaled expert count and of weighted
    faint and clear counts (the rater may miss the faint ones), fitted to the rater's labels
    of ``size`` pool scans."""
    faint, clear = np.zeros(len(cohort.names)), np.zeros(len(cohort.names))
    for i, _, _, miss in lesions:
        (faint if miss > 0 else clear)[i] += 1
    pool, test = splits(cohort)
    features = {"one scale": (faint + clear)[:, None], "faint and clear weights": np.stack([faint, clear], 1)}
    scores = {k: [] for k in features}
    for draw in range(draws):
        idx = draw_training(pool, size, draw)
        for name, x in features.items():
            w = np.linalg.lstsq(x[idx], cohort.rater[idx].astype(float), rcond=None)[0]
            scores[name].append(scores_on_test(x[test] @ w, cohort, test))
    return {k: np.mean(v, 0) for k, v in scores.items()}


def noisy_counters(cohort, sigmas, size: int, draws: int) -> list[float]:
    """Mean ICC(2,1) against the expert of the expert count plus Gaussian errors of each SD
    in ``sigmas`` (clipped at 0), scaled by one least-squares fit to ``size`` rater labels."""
    pool, test = splits(cohort)
    means = []
    for sigma in sigmas:
        scores = []
        for draw in range(draws):
            noise = np.random.default_rng(draw).normal(0, sigma, len(cohort.expert))
            counts = np.clip(cohort.expert + noise, 0, None)
            idx = draw_training(pool, size, draw)
            scale = counts[idx] @ cohort.rater[idx] / max(counts[idx] @ counts[idx], 1e-12)
            scores.append(agreement(scale * counts[test], cohort.expert[test])["icc21"])
        means.append(float(np.mean(scores)))
    return means


SIGMAS = (0.0, 0.5, 0.75, 1.0, 1.25)  # count errors (SD, lesions) for the third table


def main(argv=None) -> None:
    args, model = parse_draw_args(__doc__, argv)
    masses, fits, noisy = [], [], []
    for root in args.cohorts:
        cohort = load_sim(root)
        out = Outputs(model, cohort)
        lesions = visible_lesions(cohort, root)
        mass, visibility, miss = lesion_masses(model, cohort, out, lesions)
        faint = miss > 0
        masses.append(
            f"| {root.name} | {len(mass)} | {spearmanr(mass, visibility)[0]:.2f} | "
            f"{mass[faint].mean():.2f} ± {mass[faint].std():.2f}, n = {faint.sum()} "
            f"({miss[faint].mean():.2f}) | "
            f"{mass[~faint].mean():.2f} ± {mass[~faint].std():.2f}, n = {(~faint).sum()} |"
        )
        cells = " | ".join(
            f"{e:.3f} ({r:.3f})" for e, r in perfect_counters(cohort, lesions, args.size, args.draws).values()
        )
        fits.append(f"| {root.name} | {cells} |")
        _, test = splits(cohort)
        error = out.counts[test] - cohort.expert[test]
        cells = " | ".join(f"{v:.3f}" for v in noisy_counters(cohort, SIGMAS, args.size, args.draws))
        noisy.append(f"| {root.name} | {error.std():.2f} ({error.mean():+.2f}) | {cells} |")
    print(
        "| cohort | visible test lesions | Spearman: mass vs visibility | mass, lesions the rater may "
        "miss (mean miss chance) | mass, lesions the rater always counts |"
    )
    print("|---|---|---|---|---|", *masses, sep="\n")
    print(
        f"\nPerfect counters fitted to {args.size} rater labels, ICC(2,1) against the expert "
        f"(against the rater), mean over {args.draws} draws\n"
    )
    print("| cohort | expert count, one scale | faint and clear counts, a weight each |")
    print("|---|---|---|", *fits, sep="\n")
    print(
        f"\nCounters with errors: the expert count plus Gaussian errors of SD σ, one scale fitted to "
        f"{args.size} rater labels, ICC(2,1) against the expert; beside the model's own count error "
        "on the test scans as shipped, SD (mean)\n"
    )
    print("| cohort | model's error | " + " | ".join(f"σ = {s:g}" for s in SIGMAS) + " |")
    print("|---|---|" + "---|" * len(SIGMAS), *noisy, sep="\n")


if __name__ == "__main__":
    main()
