"""Count-consistent detections (004 §2.2): threshold the heatmap so that the number of
connected components equals the predicted count."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_STRUCTURE = ndimage.generate_binary_structure(3, 1)  # 6-connectivity


@dataclass
class Detection:
    """One connected component: centre in voxel coords of the map, size (voxels), peak score."""

    centre: np.ndarray
    size: int
    score: float


@dataclass
class DetectionResult:
    detections: list[Detection]
    threshold: float


SCORE_SIGMA = 1.0  # voxels


def score_map(
    heatmap: np.ndarray, intensities: np.ndarray, weight: float = 0.0, sigma: float = SCORE_SIGMA
) -> np.ndarray:
    """The map detections threshold: the heatmap smoothed by a Gaussian of ``sigma`` voxels,
    and with ``weight`` > 0 its weighted sum (scaled to its peak) with the input intensities
    (004 f). The smoothing gathers each lesion's density into one peak whatever the lesion's
    size (a large lesion spreads its count thinly over many voxels) and removes single-voxel
    noise peaks; the heatmap layer itself stays unsmoothed (it sums to the count).
    """
    h = ndimage.gaussian_filter(heatmap.astype(np.float32), sigma) if sigma > 0 else heatmap
    if weight <= 0:
        return h
    peak = float(h.max())
    h = h / peak if peak > 0 else h
    return (1 - weight) * h + weight * intensities


def components(score_map: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    return ndimage.label(score_map > threshold, structure=_STRUCTURE)


def _candidate_thresholds(score_map: np.ndarray, target: int, limit: int = 400) -> np.ndarray:
    """Levels just below successive local maxima, around the target-th highest one."""
    peaks = score_map[(ndimage.maximum_filter(score_map, size=3) == score_map)]
    peaks = np.unique(peaks)[::-1]
    floor = float(score_map.min())
    if len(peaks) == 0:
        return np.array([floor])
    lower = np.append(peaks[1:], floor)
    levels = (peaks + lower) / 2
    start = min(max(target - 1, 0), len(levels) - 1)  # fewer peaks than the count: the lowest
    return levels[start : start + limit]


def count_consistent(score_map: np.ndarray, count: float) -> DetectionResult:
    """Detections from the threshold whose component count is closest to round(count).

    Among levels giving the same number of components, the highest is kept (the tightest
    components). The search runs over levels between successive local maxima.
    """
    target = max(int(round(float(count))), 0)
    if target == 0 or not np.any(score_map > score_map.min()):
        return DetectionResult([], float(score_map.max()))
    best = None
    for t in _candidate_thresholds(score_map, target):
        labels, n = components(score_map, t)
        gap = abs(n - target)
        if best is None or gap < best[0]:
            best = (gap, t, labels, n)
        if gap == 0 or n > 2 * target + 10:
            break
    _, t, labels, n = best
    return DetectionResult(describe(score_map, labels, n), float(t))


def at_threshold(score_map: np.ndarray, threshold: float) -> DetectionResult:
    """Detections at a given threshold (the widget's slider)."""
    labels, n = components(score_map, threshold)
    return DetectionResult(describe(score_map, labels, n), float(threshold))


def describe(score_map: np.ndarray, labels: np.ndarray, n: int) -> list[Detection]:
    """Centre (score-weighted), size and peak of each labelled component, by falling peak."""
    if n == 0:
        return []
    ids = np.arange(1, n + 1)
    weights = score_map - score_map[labels > 0].min() + 1e-6
    weights = np.where(labels > 0, weights, 0)
    centres = np.array(ndimage.center_of_mass(weights, labels, ids)).reshape(-1, 3)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, ids).astype(int)
    peaks = ndimage.maximum(score_map, labels, ids)
    dets = [Detection(c, int(s), float(p)) for c, s, p in zip(centres, sizes, np.atleast_1d(peaks))]
    return sorted(dets, key=lambda d: -d.score)
