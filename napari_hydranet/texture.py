"""How independent a scan's noise is from voxel to voxel. Scans interpolated or smoothed
after acquisition (resliced, registered, resampled by another tool, filtered) have smoother
noise, and a model trained on scans as acquired counts fewer lesions on them
(docs/benchmarks.md, "Scans interpolated after acquisition"); a model records the texture of
its training scans, and a scan much smoother than those is noted."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MIN_VOXELS = 500  # fewer voxels in the region: no figure
MAX_SIDE = 128  # voxels per axis measured at most (a centred window of a larger region)
MARGIN = 0.03  # below the lowest training texture by more than this: noted
WHITE = float(np.sqrt(20 / 6))  # independent noise: third over second differences, in spread


def _mad(values: np.ndarray) -> float:
    return float(np.median(np.abs(values - np.median(values))))


def noise_texture(array: np.ndarray, region: np.ndarray | None = None) -> float | None:
    """The robust spread (median absolute deviation) of third differences over that of
    second differences along each axis, divided by √(20/6) and averaged over the axes.

    Independent noise gives 1 (the variance of third differences is 20/6 that of second
    ones); smoother noise less (on simulated scans as stored 0.96–1.01, after a half-voxel
    shift with linear interpolation 0.77–0.87). Differences of this order pass little of the
    anatomy, whose slow changes the first differences would mix with the noise. Measured
    where four voxels in a row along the axis lie in ``region`` (the ROI; without one, voxels
    brighter than the median of the positive ones), within a centred window of at most
    ``MAX_SIDE`` voxels a side. None where the region is too small or has no noise to measure.
    """
    data = np.asarray(array, np.float32)
    if region is None:
        positive = data[data > 0]
        if positive.size < MIN_VOXELS:
            return None
        region = data > np.median(positive)
    else:
        region = ndimage.binary_erosion(np.asarray(region, bool))  # not the ROI's border
    box = ndimage.find_objects(region.astype(np.uint8))
    if not box or box[0] is None:
        return None
    window = []
    for side in box[0]:
        extra = max(0, side.stop - side.start - MAX_SIDE)
        window.append(slice(side.start + extra // 2, side.stop - (extra - extra // 2)))
    data, region = data[tuple(window)], region[tuple(window)]
    ratios = []
    for axis in range(3):
        n = data.shape[axis]
        if n < 4:
            continue
        inside = region.take(range(n - 3), axis)
        for step in (1, 2, 3):
            inside = inside & region.take(range(step, n - 3 + step), axis)
        if inside.sum() < MIN_VOXELS:
            continue
        second = np.diff(data, 2, axis).take(range(n - 3), axis)[inside]
        spread = _mad(second)
        if spread > 0:
            ratios.append(_mad(np.diff(data, 3, axis)[inside]) / spread / WHITE)
    return float(np.mean(ratios)) if ratios else None


def texture_range(textures) -> list[float] | None:
    """The lowest and highest texture of a set of scans (None for those without one)."""
    known = [t for t in textures if t is not None]
    return [round(min(known), 4), round(max(known), 4)] if known else None
