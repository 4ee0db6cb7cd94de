"""A small synthetic cohort for tests: bright blobs (counted) and large bright patches
(not counted) in a textured ellipsoidal ROI, written as NIfTI with masks and CSVs."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage


def make_subject(rng: np.random.Generator, shape=(40, 36, 28), max_lesions: int = 10, patches: int = 0):
    """Return (volume, roi mask, lesion centres (N, 3) voxel coords)."""
    grid = np.indices(shape).astype(np.float32)
    centre = (np.array(shape) - 1) / 2
    radii = np.array(shape) * 0.38
    roi = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1
    tissue = 0.5 + 0.05 * ndimage.gaussian_filter(rng.standard_normal(shape), 2).astype(np.float32) * 8
    vol = np.where(roi, tissue, 0.1).astype(np.float32)
    n = int(rng.integers(0, max_lesions + 1))
    inside = np.argwhere(ndimage.binary_erosion(roi, iterations=3))
    centres: list[np.ndarray] = []
    while len(centres) < n:
        c = inside[rng.integers(len(inside))].astype(float)
        if all(np.linalg.norm(c - o) > 4 for o in centres):
            centres.append(c)
    for c in centres:
        d2 = ((grid - c[:, None, None, None]) ** 2 * np.array([1, 1, 0.3])[:, None, None, None]).sum(0)
        vol += 0.6 * np.exp(-d2 / (2 * 0.8**2))
    for _ in range(int(rng.integers(0, patches + 1))):  # large patches that are not lesions
        c = inside[rng.integers(len(inside))].astype(float)
        d2 = ((grid - c[:, None, None, None]) ** 2).sum(0)
        vol += 0.35 * np.exp(-d2 / (2 * 3.0**2))
    vol += rng.normal(0, 0.03, shape).astype(np.float32)
    return vol * float(rng.uniform(100, 1000)), roi.astype(np.uint8), np.array(centres).reshape(-1, 3)


def make_cohort(
    folder: Path, n: int, seed: int = 0, shape=(40, 36, 28), max_lesions: int = 10, patches: int = 0
) -> Path:
    """Write scans/, masks/, labels.csv and lesions.csv into ``folder``."""
    rng = np.random.default_rng(seed)
    (folder / "scans").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    affine = np.diag([1.0, 1.0, 1.2, 1.0])
    affine[:3, 3] = [-20, -18, -16]
    rows, lesions = [], []
    for s in range(n):
        vol, roi, centres = make_subject(rng, shape, max_lesions, patches)
        name = f"sub-{s:03d}.nii.gz"
        nib.save(nib.Nifti1Image(vol.astype(np.float32), affine), str(folder / "scans" / name))
        nib.save(nib.Nifti1Image(roi, affine), str(folder / "masks" / name))
        rows.append((name, len(centres)))
        lesions += [(name, *c) for c in centres]
    with open(folder / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("scan", "label"), *rows])
    with open(folder / "lesions.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("scan", "i", "j", "k"), *lesions])
    return folder


def stored_otherwise(array: np.ndarray, affine: np.ndarray, order=(2, 0, 1), flips=(0, 1)):
    """The same volume stored in another voxel order: axes ``flips`` reversed, then the axes
    permuted to ``order``; returns the array and its affine (same world positions)."""
    for axis in flips:
        array = np.flip(array, axis)
        flip = np.eye(4)
        flip[axis, axis], flip[axis, 3] = -1, array.shape[axis] - 1
        affine = affine @ flip
    permute = np.eye(4)
    permute[:3, :3] = np.eye(3)[:, order]
    return np.ascontiguousarray(np.transpose(array, order)), affine @ permute


def save_stored_otherwise(source: Path, target: Path) -> Path:
    """A NIfTI copy of ``source`` in another voxel order (see ``stored_otherwise``)."""
    img = nib.load(str(source))
    nib.save(nib.Nifti1Image(*stored_otherwise(np.asanyarray(img.dataobj), img.affine)), str(target))
    return target
