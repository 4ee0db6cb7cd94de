"""Two model folders as shipped on the same test scans: ICC(2,1) against the expert count, and
a paired bootstrap of the difference (B minus A) over the test scans.

    python benchmarks/compare_models.py OLD_MODEL NEW_MODEL SIM/shift SIM/shift2 SIM/indist

Each cohort's last 100 scans are its test set (as in counts.py; all of a cohort of 100); 2,000
resamples.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import load_sim, model_outputs  # noqa: E402

from napari_hydranet.metrics import agreement  # noqa: E402
from napari_hydranet.models import load_model  # noqa: E402


def paired_bootstrap(a: np.ndarray, b: np.ndarray, y: np.ndarray, n: int = 2000, seed: int = 0):
    """ICC(2,1) of b minus that of a against y, on resampled scans: its 2.5 and 97.5 percentiles."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        diffs.append(agreement(b[i], y[i])["icc21"] - agreement(a[i], y[i])["icc21"])
    return np.percentile(diffs, [2.5, 97.5])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_a", help="a model folder, or default (the bundled model)")
    ap.add_argument("model_b", help="a model folder, or default")
    ap.add_argument("cohorts", type=Path, nargs="+")
    ap.add_argument("--test", type=int, default=100, help="test scans (the cohort's last)")
    a = ap.parse_args()
    models = [load_model(a.model_a), load_model(a.model_b)]
    print("| cohort | A | B | B − A | 95 % interval |\n|---|---|---|---|---|")
    for cohort in a.cohorts:
        sim = load_sim(cohort)
        n = len(sim.names)
        test = np.arange(max(n - a.test, 0), n)  # a test-only cohort (heldout) is tested whole
        pa, pb = (model_outputs(m, sim, test)[0] for m in models)
        y = sim.expert[test]
        ia, ib = agreement(pa, y)["icc21"], agreement(pb, y)["icc21"]
        lo, hi = paired_bootstrap(pa, pb, y)
        row = f"| {cohort.name} | {ia:.3f} | {ib:.3f} | {ib - ia:+.3f} | {lo:+.3f} to {hi:+.3f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
