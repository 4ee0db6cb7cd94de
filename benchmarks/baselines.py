"""Counts a user could get without training a network: connected components of a
thresholded map inside the ROI whose size lies in a window [s_min, s_max] (EPVS are small;
lacunes, ventricles and WMH patches are not), on the intensities or on Frangi vesselness
(scikit-image; Ballerini et al. 2018 tuned Frangi to visual EPVS ratings).

The threshold, the size window and a linear calibration (count = a·components + c) are fitted
on the training scans' labels, the same labels the networks get: every combination on a
grid is tried and the one whose calibrated counts agree best with the labels (ICC(2,1)) wins.

    python benchmarks/baselines.py COHORT [--train 25] [--seed 0]   # prints train and test ICC
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.filters import frangi

from napari_hydranet.metrics import agreement, icc

_STRUCTURE = ndimage.generate_binary_structure(3, 1)
S_MIN = (1, 2, 3, 5, 8)
S_MAX = (6, 10, 20, 40, 80, 200, 10**9)
FRANGI_SIGMAS = (0.5, 1.0, 1.5)


def vesselness(image: np.ndarray) -> np.ndarray:
    """Frangi vesselness for bright tubes (EPVS are bright on PD/T2)."""
    return frangi(image, sigmas=FRANGI_SIGMAS, black_ridges=False).astype(np.float32)


def size_histograms(maps: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(scans, thresholds, S) counts of components by size bin edges S_MIN ∪ S_MAX."""
    edges = np.array(sorted(set(S_MIN) | {s + 1 for s in S_MAX}))
    out = np.zeros((len(maps), len(thresholds), len(edges)), np.int32)
    for i, m in enumerate(maps):
        for j, t in enumerate(thresholds):
            labels, n = ndimage.label(m > t, structure=_STRUCTURE)
            if n:
                sizes = np.bincount(labels.ravel())[1:]
                out[i, j] = [(sizes >= e).sum() for e in edges]
    return out, edges


@dataclass
class ComponentCounter:
    """Fitted threshold, size window and calibration."""

    threshold: float
    s_min: int
    s_max: int
    a: float
    c: float
    train_icc21: float

    def raw(self, maps: np.ndarray) -> np.ndarray:
        hist, edges = size_histograms(maps, np.array([self.threshold]))
        return _window(hist[:, 0], edges, self.s_min, self.s_max)

    def predict(self, maps: np.ndarray) -> np.ndarray:
        return self.a * self.raw(maps) + self.c


def _window(hist: np.ndarray, edges: np.ndarray, s_min: int, s_max: int) -> np.ndarray:
    lo = int(np.searchsorted(edges, s_min))
    hi = int(np.searchsorted(edges, s_max + 1))
    upper = hist[..., hi] if hi < len(edges) else 0
    return (hist[..., lo] - upper).astype(float)


def fit_counter(maps: np.ndarray, labels: np.ndarray, quantiles=None) -> ComponentCounter:
    """Grid search over thresholds (quantiles of the training maps' non-zero values) and
    size windows; each candidate gets its least-squares line; the best ICC(2,1) wins.
    Where no candidate's components grow with the labels, the counter predicts the labels'
    mean for every scan (a = 0): what a user without a working counter would report."""
    quantiles = np.linspace(0.95, 0.9995, 24) if quantiles is None else quantiles
    values = np.concatenate([m[m > 0] for m in maps])
    thresholds = np.unique(np.quantile(values, quantiles))
    hist, edges = size_histograms(maps, thresholds)
    best = None
    for j, t in enumerate(thresholds):
        for s_min in S_MIN:
            for s_max in S_MAX:
                if s_max < s_min:
                    continue
                raw = _window(hist[:, j], edges, s_min, s_max)
                if raw.std() == 0:
                    continue
                a, c = np.polyfit(raw, labels, 1)
                if a <= 0:  # more components should mean more lesions
                    continue
                score = icc(np.stack([a * raw + c, labels], 1), "2,1")
                if best is None or score > best.train_icc21:
                    best = ComponentCounter(float(t), s_min, s_max, float(a), float(c), float(score))
    if best is None:
        constant = np.full(len(labels), float(np.mean(labels)))
        score = icc(np.stack([constant, labels], 1), "2,1")
        best = ComponentCounter(
            float(thresholds[-1]), S_MIN[0], S_MAX[-1], 0.0, float(constant[0]), float(score)
        )
    return best


@dataclass
class VolumeThreshold:
    """Volume baseline (WMH): voxels above a threshold, linearly calibrated."""

    threshold: float
    a: float
    c: float
    train_icc21: float

    def predict(self, maps: np.ndarray) -> np.ndarray:
        return self.a * (maps > self.threshold).sum(axis=(1, 2, 3)) + self.c


@dataclass
class TissueLevel:
    """A probe, not a method: the label as a linear function of the mean prepared ROI intensity.

    After the 99th-percentile scaling the tissue is darker in scans whose bright tail (lesions,
    WMH, confounders) is larger, so this one number can carry the label; a network that scores
    no better may have learned no more than that.
    """

    a: float
    c: float

    @staticmethod
    def level(maps: np.ndarray) -> np.ndarray:
        return np.array([m[m > 0].mean() if (m > 0).any() else 0.0 for m in maps])

    def predict(self, maps: np.ndarray) -> np.ndarray:
        return self.a * self.level(maps) + self.c


def fit_tissue_level(maps: np.ndarray, labels: np.ndarray) -> TissueLevel:
    a, c = np.polyfit(TissueLevel.level(maps), labels, 1)
    return TissueLevel(float(a), float(c))


def fit_volume(maps: np.ndarray, labels: np.ndarray) -> VolumeThreshold:
    values = np.concatenate([m[m > 0] for m in maps])
    best = None
    for t in np.unique(np.quantile(values, np.linspace(0.5, 0.999, 40))):
        raw = (maps > t).sum(axis=(1, 2, 3)).astype(float)
        if raw.std() == 0:
            continue
        a, c = np.polyfit(raw, labels, 1)
        score = icc(np.stack([a * raw + c, labels], 1), "2,1")
        if a > 0 and (best is None or score > best.train_icc21):
            best = VolumeThreshold(float(t), float(a), float(c), float(score))
    if best is None:  # no voxel count grows with the labels: a user is left with their mean
        best = VolumeThreshold(float("inf"), 0.0, float(np.mean(labels)), float("nan"))
    return best


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from common import draw_training, load_sim, splits

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cohort", type=Path)
    ap.add_argument("--train", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    sim = load_sim(a.cohort)
    pool, test = splits(sim)
    tr = draw_training(pool, a.train, a.seed)
    for name, maps in (("intensity", sim.images), ("frangi", np.stack([vesselness(m) for m in sim.images]))):
        counter = fit_counter(maps[tr], sim.rater[tr])
        result = agreement(counter.predict(maps[test]), sim.expert[test])
        print(f"{name}: {counter}\n  test vs expert: {result}")


if __name__ == "__main__":
    main()
