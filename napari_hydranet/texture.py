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
MARGIN = 0.04  # below the training scans' 2nd percentile by more than this: noted
PERCENTILES = (2, 98)  # what a model records of its training scans' textures
STEPPED = 1 / 3  # more second differences than this exactly 0: intensities too coarse to measure
WHITE = float(np.sqrt(20 / 6))  # independent noise: third over second differences, in spread


def _spread(values: np.ndarray) -> float:
    """The mean absolute deviation from the median with the largest 5 % left out: robust to
    edges and lesions as a median absolute deviation is, without its steps on intensities
    stored as integers (noise of a few grey levels made that jump between 0.5 and 1.6)."""
    deviation = np.abs(values - np.median(values))
    return float(deviation[deviation <= np.percentile(deviation, 95)].mean())


def _window(shape, box) -> tuple[slice, ...]:
    """``box`` (slices) cut to a centred window of at most ``MAX_SIDE`` voxels a side."""
    window = []
    for side, n in zip(box, shape):
        start, stop = side.start or 0, n if side.stop is None else side.stop
        extra = max(0, stop - start - MAX_SIDE)
        window.append(slice(start + extra // 2, stop - (extra - extra // 2)))
    return tuple(window)


def noise_texture(array: np.ndarray, region: np.ndarray | None = None) -> float | None:
    """The spread (``_spread``) of third differences over that of second differences along
    each axis, divided by its value for independent noise and averaged over the axes.

    Noise independent from voxel to voxel gives 1 (the variance of third differences is 20/6
    that of second ones); smoother noise less (on simulated scans as stored 0.94–1.01, after
    a half-voxel shift with linear interpolation 0.72–0.87). Differences of this order pass
    little of the anatomy, whose slow changes first differences would mix with the noise; at
    a very high SNR fine anatomy still lowers it. Measured where four voxels in a row along
    the axis lie in ``region`` (the ROI, eroded by a voxel; without one, the voxels brighter
    than the median of the positive ones in a centred window), within a centred window of at
    most ``MAX_SIDE`` voxels a side. None where the region is too small, or its noise is lost
    in the step of the stored values (over ``STEPPED`` of the second differences exactly 0).
    """
    if region is None:
        data = np.asarray(array[_window(array.shape, (slice(None),) * 3)], np.float32)
        positive = data[data > 0]
        if positive.size < MIN_VOXELS:
            return None
        region = data > np.median(positive)
    else:
        box = ndimage.find_objects(np.asarray(region, bool).view(np.uint8))
        if not box or box[0] is None:
            return None
        window = _window(region.shape, box[0])
        data = np.asarray(array[window], np.float32)
        region = ndimage.binary_erosion(np.asarray(region[window], bool))  # not the ROI's border
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
        differences = np.diff(data, 2, axis).take(range(n - 3), axis)[inside]
        if np.mean(differences == 0) > STEPPED:  # noise below the step of the stored values
            continue
        second = _spread(differences)
        if second > 0:
            ratios.append(_spread(np.diff(data, 3, axis)[inside]) / second / WHITE)
    return float(np.mean(ratios)) if ratios else None


def texture_range(textures) -> list[float] | None:
    """The 2nd and 98th percentiles of the texture of a set of scans (None for those without
    one): what a model records of its training scans, so that one odd scan does not set it."""
    known = [t for t in textures if t is not None]
    return [round(float(np.percentile(known, q)), 4) for q in PERCENTILES] if known else None
