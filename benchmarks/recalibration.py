"""The bundled model's count recalibration on 25 labelled scans, over many training draws.

A recalibration on fewer than 50 scans keeps the heatmap and its threshold and refits one
number, the count scale s (count = s · Σ ReLU(w·f + b)), so its effect on every scan is
known in closed form from the shipped model's counts. For each cohort this script predicts
every scan once, then for ``--draws`` random training sets of ``--size`` scans (from the
pool; the last 100 scans are the test set) fits s in four ways:

- estimator ``least squares``: s = Σ c·y / Σ c² (squared error through the origin, what
  ``calibrate.recalibrate`` does), or ``ratio``: s = Σ y / Σ c (the quasi-Poisson fit for
  counts whose variance grows with their mean);
- ``guarded`` (the trainer): fitted on the training part after its validation split and kept
  only when the validation ICC(2,1) does not drop, or ``all scans``: fitted on all of them.

Each is scored on the test scans against the expert and the rater (mean over draws). The
last column counts the draws where the guard refused the least-squares refit, and of those,
the refits that would have raised agreement with the rater on the test scans.

    python benchmarks/recalibration.py SIM/fresh SIM/indist SIM/shift --draws 200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import draw_training, load_sim, model_outputs, splits  # noqa: E402

from napari_hydranet.data import Cohort, split_validation  # noqa: E402
from napari_hydranet.metrics import agreement  # noqa: E402
from napari_hydranet.models import load_model  # noqa: E402
from napari_hydranet.train import _score  # noqa: E402

ESTIMATORS = {
    "least squares": lambda c, y: float(c @ y / max(c @ c, 1e-12)),
    "ratio": lambda c, y: float(y.sum() / max(c.sum(), 1e-12)),
}


def guarded_scale(fit, counts: np.ndarray, labels: np.ndarray, seed: int) -> tuple[float, float]:
    """The trainer's recalibration: fit on the training part, kept if validation agrees.
    Returns the scale applied (1 when refused) and the one fitted."""
    dummy = Cohort(
        [str(i) for i in range(len(labels))],
        np.zeros((len(labels), 1, 1, 1), np.float32),
        labels.astype(np.float32),
        [1.0, 1.0, 1.0],
    )
    train, val = split_validation(dummy, 0.2, seed)
    ti, vi = [int(n) for n in train.names], [int(n) for n in val.names]
    s = fit(counts[ti], labels[ti])
    before, after = agreement(counts[vi], labels[vi]), agreement(s * counts[vi], labels[vi])
    return (s if _score(after) >= _score(before) else 1.0), s


def _scores(pred: np.ndarray, cohort, test: np.ndarray) -> tuple[float, float]:
    return agreement(pred, cohort.expert[test])["icc21"], agreement(pred, cohort.rater[test])["icc21"]


VARIANTS = {
    f"{name}, {how}": (fit, how) for name, fit in ESTIMATORS.items() for how in ("guarded", "all scans")
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cohorts", nargs="+", type=Path)
    ap.add_argument("--model", default="default")
    ap.add_argument("--size", type=int, default=25)
    ap.add_argument("--draws", type=int, default=200)
    args = ap.parse_args(argv)
    model = load_model(args.model)
    print("ICC(2,1) against the expert (against the rater), mean over training draws\n")
    print("| cohort | pool | as shipped | " + " | ".join(VARIANTS) + " | guard refused (would have helped) |")
    print("|---|---|---|" + "---|" * (len(VARIANTS) + 1))
    for root in args.cohorts:
        cohort = load_sim(root)
        pool, test = splits(cohort)
        counts, _ = model_outputs(model, cohort, np.arange(len(cohort.names)))
        table = {k: [] for k in VARIANTS}
        shipped = _scores(counts[test], cohort, test)
        refused = helped = 0
        for draw in range(args.draws):
            idx = draw_training(pool, args.size, draw)
            y = cohort.rater[idx]
            for key, (fit, how) in VARIANTS.items():
                s, fitted = (
                    guarded_scale(fit, counts[idx], y, draw)
                    if how == "guarded"
                    else (fit(counts[idx], y),) * 2
                )
                table[key].append(_scores(s * counts[test], cohort, test))
                if key == "least squares, guarded" and s != fitted:
                    refused += 1
                    helped += _scores(fitted * counts[test], cohort, test)[1] > shipped[1]
        cells = [f"{np.mean(v, 0)[0]:.3f} ({np.mean(v, 0)[1]:.3f})" for v in table.values()]
        first = "{:.3f} ({:.3f})".format(*shipped)
        print(f"| {root.name} | {len(pool)} | {first} | " + " | ".join(cells) + f" | {refused} ({helped}) |")


if __name__ == "__main__":
    main()
