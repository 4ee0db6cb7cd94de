"""Where the bundled model's count errors against the expert come from.

Every test scan's count (the last 100 scans), Σ s·ReLU(w·f + b) over the map, is split by
where its mass lies: each map voxel within ``NEAR`` voxels of a simulated lesion's centre
belongs to the nearest lesion; the others are "elsewhere" (tissue, confounders, noise). The
count error against the expert then splits exactly into three parts:

    count − expert = (mass at counted lesions − expert) + mass at sub-visible lesions + mass elsewhere

where "counted" lesions are those at or above the simulation's visibility level (the expert
counts them) and "sub-visible" lesions lie below it (nobody counts them; the simulation still
draws them). Two tables:

1. The three parts: mean ± SD over the test scans, and each part's share of the error
   variance, cov(part, error) / var(error) (the shares add up to 1).
2. The mass the map gives a lesion by its visibility relative to the level: how sharply the
   model separates lesions the expert counts from those it does not (a perfect counter gives
   0 below 1 and 1 above).

    python benchmarks/count_errors.py SIM/fresh SIM/fresh_c [--model default]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import for_model, load_sim, source_offsets, splits  # noqa: E402
from conspicuity import cohort_lesions  # noqa: E402
from recalibration import load_density_model  # noqa: E402

from napari_hydranet.calibrate import density_maps  # noqa: E402

NEAR = 3.0  # voxels: map mass this close to a lesion's centre is that lesion's
BINS = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, np.inf)  # visibility / level, table 2


def attribute(mass: np.ndarray, centres: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Each lesion's share of a map's mass (voxels within NEAR of it, nearest lesion first),
    and the mass elsewhere. ``centres`` are crop voxel coordinates."""
    owner = np.full(mass.shape, -1)
    best = np.full(mass.shape, np.inf)
    for n, c in enumerate(centres):
        lo = np.maximum(np.floor(c - NEAR).astype(int), 0)
        hi = np.minimum(np.ceil(c + NEAR).astype(int) + 1, mass.shape)
        if np.any(hi <= lo):  # outside the network's crop
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        grid = np.stack(
            np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij"), -1
        )
        d = np.sqrt(((grid - c) ** 2).sum(-1))
        closer = (d <= NEAR) & (d < best[box])
        best[box][closer] = d[closer]
        owner[box][closer] = n
    shares = np.bincount(owner[owner >= 0], weights=mass[owner >= 0], minlength=len(centres))
    return shares, float(mass[owner < 0].sum())


def decompose(model, cohort, root: Path):
    """Per test scan: (expert, mass at counted lesions, at sub-visible lesions, elsewhere);
    per lesion: (visibility / level, mass)."""
    level = json.loads((root / "settings.json").read_text())["settings"]["visibility_level"]
    _, test = splits(cohort)
    x = torch.from_numpy(for_model(cohort, model).images[test])[:, None]
    z = density_maps(model.net, x, batch=8)  # the test scans' maps only
    scale, bias = float(model.net.count_scale), float(model.net.last.bias.detach())
    by_scan = {int(i): [] for i in test}
    offsets = source_offsets(cohort)
    for i, centre, visibility, visible, _ in cohort_lesions(cohort, root):
        if i in by_scan:
            by_scan[i].append((centre - offsets[i], visibility / level, visible))
    parts, lesions = [], []
    for n, i in enumerate(test):
        mass = (scale * torch.relu(z[n, 0] + bias)).double().numpy()
        found = by_scan[int(i)]
        shares, elsewhere = attribute(mass, [c for c, _, _ in found])
        visible = np.array([v for _, _, v in found], bool)
        parts.append((cohort.expert[i], shares[visible].sum(), shares[~visible].sum(), elsewhere))
        lesions += [(rel, m) for m, (_, rel, _) in zip(shares, found, strict=True)]
    return np.array(parts, float), np.array(lesions, float)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cohorts", nargs="+", type=Path)
    ap.add_argument("--model", default="default")
    args = ap.parse_args(argv)
    model = load_density_model(args.model)
    errors, curves = [], []
    for root in args.cohorts:
        parts, lesions = decompose(model, load_sim(root), root)
        expert, counted, subvisible, elsewhere = parts.T
        error = counted + subvisible + elsewhere - expert
        cells = []
        for part in (counted - expert, subvisible, elsewhere):
            share = np.cov(part, error)[0, 1] / error.var(ddof=1)
            cells.append(f"{part.mean():+.2f} ± {part.std(ddof=1):.2f} ({share:.0%})")
        errors.append(
            f"| {root.name} | {error.mean():+.2f} ± {error.std(ddof=1):.2f} | " + " | ".join(cells) + " |"
        )
        rel, mass = lesions.T
        cells = []
        for lo, hi in zip(BINS[:-1], BINS[1:], strict=True):
            m = mass[(rel >= lo) & (rel < hi)]
            cells.append(f"{m.mean():.2f} (n = {len(m)})" if len(m) else "–")
        curves.append(f"| {root.name} | " + " | ".join(cells) + " |")
    print(
        f"Count error against the expert on the test scans, split by where the map's mass lies "
        f"(within {NEAR:g} voxels of a lesion's centre): mean ± SD (share of the error variance)\n"
    )
    print(
        "| cohort | count − expert | counted lesions: mass − count | sub-visible lesions: mass | "
        "elsewhere: mass |"
    )
    print("|---|---|---|---|---|", *errors, sep="\n")
    print("\nMean mass per lesion by visibility / the expert's level (n lesions)\n")
    heads = [
        f"{lo:g}–{hi:g}" if np.isfinite(hi) else f"≥ {lo:g}"
        for lo, hi in zip(BINS[:-1], BINS[1:], strict=True)
    ]
    print("| cohort | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(heads), *curves, sep="\n")


if __name__ == "__main__":
    main()
