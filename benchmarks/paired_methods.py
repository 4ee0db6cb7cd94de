"""Two counts.py methods on the same training sets: ICC(2,1) of B minus that of A, set by set,
per cohort and pooled, with a bootstrap interval.

    python benchmarks/paired_methods.py --runs RESULTS/fresh_e RESULTS/fresh_d \
        --cohorts SIM/fresh_e SIM/fresh_d --a finetune_n1 --b finetune --size 25

``--runs`` and ``--cohorts`` pair up in order (a counts.py --out folder and the cohort it ran
on). Each bootstrap resample draws, within every cohort, the training sets and the test scans
with replacement (2,000 resamples), so the interval holds both the luck of the 25 training
scans and that of the 100 test scans; the pooled mean weighs every training set equally.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import load_labels  # noqa: E402
from counts import run_name  # noqa: E402

from napari_hydranet.metrics import icc  # noqa: E402


def paired_sets(runs: Path, size: int, a: str, b: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Seeds run with both methods and their test predictions, (sets, test scans) each."""
    seeds, pa, pb = [], [], []
    for path in sorted(runs.glob(f"{size}-*-{b}.json")):
        seed = int(path.name.split("-")[1])
        other = runs / f"{run_name(size, seed, a)}.json"
        if other.exists():
            seeds.append(seed)
            pb.append(json.loads(path.read_text())["pred"])
            pa.append(json.loads(other.read_text())["pred"])
    if not seeds:
        raise SystemExit(f"{runs}: no training set run with both {a} and {b} at {size} scans")
    return seeds, np.array(pa), np.array(pb)


def differences(pa: np.ndarray, pb: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ICC(2,1) against y of each set's B minus its A."""

    def score(p: np.ndarray) -> float:
        return icc(np.stack([p, y], 1), "2,1")

    return np.array([score(q) - score(p) for p, q in zip(pa, pb)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, nargs="+", required=True)
    ap.add_argument("--cohorts", type=Path, nargs="+", required=True)
    ap.add_argument("--a", default="finetune_n1")
    ap.add_argument("--b", default="finetune")
    ap.add_argument("--size", type=int, default=25)
    ap.add_argument("--test", type=int, default=100, help="test scans (the cohort's last)")
    ap.add_argument("--reference", choices=["expert", "rater"], default="expert")
    ap.add_argument("--resamples", type=int, default=2000)
    a = ap.parse_args()
    if len(a.runs) != len(a.cohorts):
        raise SystemExit("give one --cohorts folder for each --runs folder")
    rng = np.random.default_rng(0)
    data, pooled = [], []
    print(f"ICC(2,1) against the {a.reference}: {a.b} minus {a.a}, {a.size} training scans\n")
    print("| cohort | per set | mean | 95 % interval |\n|---|---|---|---|")
    for runs, cohort in zip(a.runs, a.cohorts):
        _, rater, expert = load_labels(cohort)
        y = (expert if a.reference == "expert" else rater)[-a.test :]
        seeds, pa, pb = paired_sets(runs, a.size, a.a, a.b)
        if pa.shape[1] != len(y):
            raise SystemExit(f"{runs}: {pa.shape[1]} test predictions, {cohort} has {len(y)} test scans")
        data.append((pa, pb, y))
        d = differences(pa, pb, y)
        pooled.append(d)
        boot = [_resample_mean([(pa, pb, y)], rng) for _ in range(a.resamples)]
        lo, hi = np.percentile(boot, [2.5, 97.5])
        per_set = ", ".join(f"{s}: {v:+.3f}" for s, v in zip(seeds, d))
        print(f"| {cohort.name} | {per_set} | {d.mean():+.3f} | {lo:+.3f} to {hi:+.3f} |", flush=True)
    pooled = np.concatenate(pooled)
    boot = [_resample_mean(data, rng) for _ in range(a.resamples)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    level = np.abs(pooled) < 0.0005  # shown as ±0.000
    higher, lower = int((pooled[~level] > 0).sum()), int((pooled[~level] < 0).sum())
    better = f"{a.b} higher on {higher}, lower on {lower}, level on {int(level.sum())}"
    print(f"| all ({len(pooled)} sets) | {better} | {pooled.mean():+.3f} | {lo:+.3f} to {hi:+.3f} |")


def _resample_mean(data: list, rng: np.random.Generator) -> float:
    """Mean difference over every cohort's training sets and test scans, each drawn with replacement."""
    diffs = []
    for pa, pb, y in data:
        sets = rng.integers(0, len(pa), len(pa))
        scans = rng.integers(0, len(y), len(y))
        diffs.append(differences(pa[sets][:, scans], pb[sets][:, scans], y[scans]))
    return float(np.concatenate(diffs).mean())


if __name__ == "__main__":
    main()
