"""Where does a model that has fully learned the rater's counts land against the expert?

A network fitted to the training rater's labels (squared error) learns the rater's expected
count given the scan, E[rater | scan]. The simulation knows it exactly: each counted lesion
is missed with probability ``rater_miss · faintness`` (benchmarks/simulate.py), then the count
is off by ±1 with probability ``rater_error`` and clipped at 0. This script computes that
expectation for each test scan (the last 100) and reports

- ``rater``: the rater's own test labels against the expert (what a second reading gives);
- ``E[rater]``: the expectation against the expert: where a perfect model of this rater
  lands, however many training scans (not a bound for every model: one that keeps some of
  its pretrained, expert-like level, or spreads its counts more, can score above it);
- ``E[rater] vs rater``: the same expectation against the rater's test labels (the rest is
  the rater's own noise).

    python benchmarks/rater_ceiling.py SIM/indist SIM/shift SIM/shift2 [--test 100]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import _table  # noqa: E402
from simulate import Settings, epvs_visibility, rater_miss_probability  # noqa: E402

from napari_hydranet.metrics import agreement  # noqa: E402


def expected_rater(expert: int, miss: np.ndarray, error: float) -> float:
    """E[max(expert − missed ± error, 0)] with independent misses of probabilities ``miss``."""
    pmf = np.zeros(len(miss) + 1)
    pmf[0] = 1.0
    for q in miss:  # Poisson-binomial: number missed
        pmf[1:] = pmf[1:] * (1 - q) + pmf[:-1] * q
        pmf[0] *= 1 - q
    seen = expert - np.arange(len(miss) + 1)
    value = (1 - error) * seen + error / 2 * (np.maximum(seen - 1, 0) + seen + 1)
    return float(pmf @ value)


def cohort_ceiling(root: Path, n_test: int = 100) -> dict:
    settings = Settings(**json.loads((root / "settings.json").read_text())["settings"])
    expert, rater = _table(root / "expert.csv"), _table(root / "labels.csv")
    names = sorted(expert)[-n_test:]
    miss: dict[str, list[float]] = {n: [] for n in names}
    spacing: dict[str, np.ndarray] = {}
    with open(root / "lesions.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            name = r["scan"]
            if name not in miss:
                continue
            if name not in spacing:
                affine = nib.load(root / "scans" / name).affine
                spacing[name] = np.sqrt((affine[:3, :3] ** 2).sum(0))
            visibility = epvs_visibility(
                float(r["contrast"]), float(r["radius_mm"]), float(r["length_mm"]), spacing[name]
            )
            visible = visibility >= settings.visibility_level
            if visible != (r["visible"].strip() == "1"):
                raise SystemExit(
                    f"{root}: {name} lesion {r['lesion']}: visibility does not match the simulation"
                )
            if visible:
                miss[name].append(float(rater_miss_probability(visibility, settings)))
    for n in names:
        if len(miss[n]) != expert[n]:
            raise SystemExit(f"{root}: {n}: {len(miss[n])} visible lesions, expert count {expert[n]:g}")
    e = np.array([expert[n] for n in names])
    r = np.array([rater[n] for n in names])
    x = np.array([expected_rater(int(expert[n]), np.array(miss[n]), settings.rater_error) for n in names])
    return {
        "cohort": root.name,
        "n": len(names),
        "expert_mean": float(e.mean()),
        "rater_mean": float(r.mean()),
        "expected_mean": float(x.mean()),
        "rater_vs_expert": agreement(r, e)["icc21"],
        "expected_vs_expert": agreement(x, e)["icc21"],
        "expected_vs_expert_icc31": agreement(x, e)["icc31"],
        "expected_vs_rater": agreement(x, r)["icc21"],
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cohorts", nargs="+", type=Path)
    ap.add_argument("--test", type=int, default=100, help="the last N scans are the test set")
    args = ap.parse_args(argv)
    print(
        "| cohort | test scans | mean expert / rater / E[rater] | rater vs expert | "
        "E[rater] vs expert (ICC(3,1)) | E[rater] vs rater |"
    )
    print("|---|---|---|---|---|---|")
    for root in args.cohorts:
        c = cohort_ceiling(root, args.test)
        print(
            f"| {c['cohort']} | {c['n']} | {c['expert_mean']:.2f} / {c['rater_mean']:.2f} / "
            f"{c['expected_mean']:.2f} | {c['rater_vs_expert']:.3f} | {c['expected_vs_expert']:.3f} "
            f"({c['expected_vs_expert_icc31']:.3f}) | {c['expected_vs_rater']:.3f} |"
        )


if __name__ == "__main__":
    main()
