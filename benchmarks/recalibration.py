"""The bundled model's count recalibration on 25 labelled scans, over many training draws.

A recalibration keeps the heatmap's shape (w·f) and refits the count Σ s·ReLU(w·f + b): on
fewer than 50 scans the trainer refits the scale s alone (``THRESHOLD_FIT_MIN_SCANS``), from
50 the threshold b too. Both are cheap once the maps are computed, so this script predicts
every scan once, then for ``--draws`` random training sets of ``--size`` scans (from the pool;
the last 100 scans are the test set) fits the count in three ways:

- ``least squares``: s = Σ c·y / Σ c² (squared error through the origin, what
  ``calibrate.recalibrate`` does below 50 scans);
- ``ratio``: s = Σ y / Σ c (the quasi-Poisson fit, for counts whose variance grows with
  their mean);
- ``threshold and scale``: b on the trainer's grid and s by least squares
  (``calibrate.fit_threshold_and_scale``, what it does from 50 scans);

each either ``guarded`` (the trainer): fitted on the training part after its validation
split and kept only when the validation ICC(2,1) does not drop, or on ``all scans``.

Each is scored on the test scans against the expert and the rater (mean over draws). The
column "test rater's level" refits s by least squares to the test scans' own rater labels
(one fit, no draws): where a recalibration that takes the rater's level can get against the
expert at best. The column "pool's rater, threshold and scale" fits b and s to the rater's
labels of the whole pool (one fit): what far more labels than a user has would buy a
recalibration, whose only freedom is which voxels of the map count and how much. The last
column counts the draws where the guard refused the least-squares refit, and of those, the
refits that would have raised agreement with the rater on the test scans.

    python benchmarks/recalibration.py SIM/fresh SIM/indist SIM/shift --draws 200
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import draw_training, for_model, load_sim, splits  # noqa: E402

from napari_hydranet.calibrate import density_maps, fit_threshold_and_scale, roi_like  # noqa: E402
from napari_hydranet.data import Cohort, split_validation  # noqa: E402
from napari_hydranet.metrics import agreement  # noqa: E402
from napari_hydranet.models import load_model  # noqa: E402
from napari_hydranet.train import _score  # noqa: E402

Predictor = Callable[[np.ndarray], np.ndarray]  # scan indices → counts


class Outputs:
    """The shipped model's counts on every scan of a cohort, and its maps w·f for refits."""

    def __init__(self, model, cohort) -> None:
        x = torch.from_numpy(for_model(cohort, model).images)[:, None]
        self.z = density_maps(model.net, x, batch=8)
        self.roi = roi_like(x, self.z)
        self.bias = float(model.net.last.bias.detach())
        # the model's own counts, Σ s·ReLU(w·f + b), from the same maps (one pass over the scans)
        self.counts = self.thresholded(float(model.net.count_scale), self.bias)(np.arange(len(x)))

    def scaled(self, s: float) -> Predictor:
        return lambda idx: s * self.counts[idx]

    def thresholded(self, s: float, b: float) -> Predictor:
        return lambda idx: s * torch.relu(self.z[idx] + b).sum(dim=(1, 2, 3, 4)).double().numpy()


def least_squares(out: Outputs, idx: np.ndarray, y: np.ndarray) -> Predictor:
    c = out.counts[idx]
    return out.scaled(float(c @ y / max(c @ c, 1e-12)))


def ratio(out: Outputs, idx: np.ndarray, y: np.ndarray) -> Predictor:
    return out.scaled(float(y.sum() / max(out.counts[idx].sum(), 1e-12)))


def threshold_and_scale(out: Outputs, idx: np.ndarray, y: np.ndarray) -> Predictor:
    _, s, b = fit_threshold_and_scale(out.z[idx], out.roi[idx], torch.from_numpy(y), out.bias)
    return out.thresholded(s, b)


FITS = {"least squares": least_squares, "ratio": ratio, "threshold and scale": threshold_and_scale}


def guarded(fit, out: Outputs, idx: np.ndarray, y: np.ndarray, seed: int) -> tuple[Predictor, Predictor]:
    """The trainer's recalibration: fit on the training part, kept if validation agrees.
    Returns the predictor applied (the shipped counts when refused) and the one fitted."""
    dummy = Cohort(
        [str(i) for i in range(len(y))],
        np.zeros((len(y), 1, 1, 1), np.float32),
        y.astype(np.float32),
        [1.0] * 3,
    )
    train, val = split_validation(dummy, 0.2, seed)
    ti, vi = [int(n) for n in train.names], [int(n) for n in val.names]
    fitted = fit(out, idx[ti], y[ti])
    before, after = agreement(out.counts[idx[vi]], y[vi]), agreement(fitted(idx[vi]), y[vi])
    return (fitted if _score(after) >= _score(before) else out.scaled(1.0)), fitted


def scores_on_test(pred: np.ndarray, cohort, test: np.ndarray) -> tuple[float, float]:
    return agreement(pred, cohort.expert[test])["icc21"], agreement(pred, cohort.rater[test])["icc21"]


VARIANTS = [(name, how) for name in FITS for how in ("guarded", "all scans")]


def parse_draw_args(doc: str, argv=None) -> tuple[argparse.Namespace, object]:
    """Cohorts, --model (a density model, loaded), --size and --draws of a script over draws."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("cohorts", nargs="+", type=Path)
    ap.add_argument("--model", default="default")
    ap.add_argument("--size", type=int, default=25)
    ap.add_argument("--draws", type=int, default=200)
    args = ap.parse_args(argv)
    return args, load_density_model(args.model)


def load_density_model(name: str):
    """A model whose count is Σ s·ReLU(w·f + b) over its map (what these scripts refit)."""
    model = load_model(name)
    if getattr(model.net, "head", None) != "density":
        raise SystemExit(f"{name}: not a density model; this script uses Σ s·ReLU(w·f + b)")
    return model


def main(argv=None) -> None:
    args, model = parse_draw_args(__doc__, argv)
    names = [f"{name}, {how}" for name, how in VARIANTS]
    print("ICC(2,1) against the expert (against the rater), mean over training draws\n")
    print(
        "| cohort | pool | as shipped | test rater's level | pool's rater, threshold and scale | "
        + " | ".join(names)
        + " | guard refused (would have helped) |"
    )
    print("|---|---|---|---|---|" + "---|" * (len(names) + 1))
    for root in args.cohorts:
        cohort = load_sim(root)
        pool, test = splits(cohort)
        out = Outputs(model, cohort)
        table = {k: [] for k in names}
        shipped = scores_on_test(out.counts[test], cohort, test)
        oracle = scores_on_test(least_squares(out, test, cohort.rater[test])(test), cohort, test)
        pooled = threshold_and_scale(out, pool, cohort.rater[pool].astype(float))
        whole_pool = scores_on_test(pooled(test), cohort, test)
        refused = helped = 0
        for draw in range(args.draws):
            idx = draw_training(pool, args.size, draw)
            y = cohort.rater[idx].astype(float)
            for key, (name, how) in zip(names, VARIANTS):
                if how == "guarded":
                    applied, fitted = guarded(FITS[name], out, idx, y, draw)
                else:
                    applied = fitted = FITS[name](out, idx, y)
                table[key].append(scores_on_test(applied(test), cohort, test))
                if key == "least squares, guarded" and applied is not fitted:
                    refused += 1
                    helped += scores_on_test(fitted(test), cohort, test)[1] > shipped[1]
        cells = [f"{np.mean(v, 0)[0]:.3f} ({np.mean(v, 0)[1]:.3f})" for v in table.values()]
        first = "{:.3f} ({:.3f}) | {:.3f} ({:.3f}) | {:.3f} ({:.3f})".format(*shipped, *oracle, *whole_pool)
        print(
            f"| {root.name} | {len(pool)} | {first} | " + " | ".join(cells) + f" | {refused} ({helped}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
