"""Simulate basal-ganglia scans with known small lesions (EPVS-like) or WMH-like blobs.

Anatomy comes from the MNI152 2009a symmetric template bundled with nilearn (1 mm, offline):
GM and WM probability templates and the brain mask.  CSF = brain × (1 − GM − WM).

Basal-ganglia ROI (built once per process, in MNI space):

1. candidate deep grey matter: GM probability > 0.4, inside the box
   2 ≤ |x| ≤ 30, −23 ≤ y ≤ 23, −8 ≤ z ≤ 22 mm, farther than 15 mm from the
   brain-mask border (no cortex), opened once (6-neighbourhood);
2. components of at least 1 cm³ (striatum, thalamus) per hemisphere;
3. closed with a 7 mm ball per hemisphere (adds pallidum and internal capsule),
   holes filled, then restricted to the box and to CSF < 0.15.

This gives 27.9 cm³ (caudate, putamen, pallidum, internal capsule, anterior
thalamus).  "Ventricles" are CSF > 0.5 farther than 12 mm from the brain border.

Spaces: a scanner point ``p`` (world mm, RAS) maps to template mm
``m = c + A (p − c − t) + u(p)`` with ``c`` the box centre, ``A`` a small rotation
and scaling, ``t`` a shift and ``u`` a smooth random displacement.  The scan grid is
axis-aligned in scanner space (affine = voxel size + origin), so head motion lives
in the resampling and lesion world coordinates are scanner coordinates.

Each scan is rendered on a grid twice as fine as the subject's voxels (about
0.5–0.75 mm), then block-averaged 2×2×2 (partial volume), multiplied by a bias field,
given Rician noise and a global gain.  The field of view is a 96 × 80 × 64 mm box
centred on MNI (0, 0, 7).

Tasks
-----
epvs : PD/T2-like contrast (CSF 1, GM 0.55–0.65, WM 0.45–0.5).  Each subject has a
    burden b ~ Beta(1.2, 1.8); Poisson(max_lesions · lesion_rate · b) capsule-shaped
    lesions (tilt ≤ tilt_deg from superior–inferior, contrast ~ Beta(1, 1.5) scaled to
    [contrast_min, contrast_max], 0 = tissue, 1 = CSF) are placed in the ROI with centres
    ≥ min_distance_mm apart and non-touching axes.  The expert counts lesions with
    visibility ``contrast · min(1, πr²/(a_x a_y)) · min(1, L/a_z) ≥ visibility_level``
    (voxel size ``a``); the training rater misses each counted lesion with probability
    ``rater_miss · clip(1 − (visibility − level)/0.4, 0, 1)`` and is off by ±1 with
    probability ``rater_error`` (clipped at 0).  Confounders grow with b: enlarged
    ventricles (up to (0.5 + 4b) mm), lacunes (3–15 mm), WMH-like patches.
wmh : FLAIR-like contrast, hyperintense blobs in white matter (punctate to confluent
    periventricular); label = lesion volume (mm³) in the field of view; the mask
    written is the white matter (template WM probability ≥ 0.3, warped).

Outputs (``simulate_cohort`` / command line), one grid and affine per subject:
``scans/sub-NNNN.nii.gz`` (float32), ``masks/`` (uint8 ROI), ``lesion_masks/`` (uint8:
EPVS number of each counted lesion, or 1 for WMH), ``labels.csv`` and ``expert.csv``
(``scan,label``), ``lesions.csv`` (EPVS: ``scan,lesion,i,j,k,x,y,z,radius_mm,length_mm,
contrast,visible``; ``i,j,k`` voxel indices, ``x,y,z`` world mm of each centre),
``subjects.csv`` (per-subject parameters) and ``settings.json``.

Usage: ``python benchmarks/simulate.py OUT_DIR --n 100 --seed 0 [--task epvs|wmh]
[--start-index 0] [--workers 2] [--SETTING VALUE …]`` (settings: see ``Settings``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

BOX_CENTRE = np.array([0.0, 0.0, 7.0])
BOX_SIZE = np.array([96.0, 80.0, 64.0])
ROI_BOUNDS = ((2.0, 30.0), (-23.0, 23.0), (-8.0, 22.0))  # |x|, y, z in MNI mm
TEMPLATE_MARGIN = 12.0  # mm of template kept around the box for motion and warping
FIELD_SPACING = 24.0  # mm between control points of smooth random fields
LESION_COLUMNS = "scan lesion i j k x y z radius_mm length_mm contrast visible".split()


def _opt(default, help_text):
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Cohort settings; every field is also a command-line option."""

    voxel_min: float = _opt(1.0, "smallest voxel edge (mm)")
    voxel_max: float = _opt(1.5, "largest voxel edge (mm)")
    rotation_deg: float = _opt(3.0, "maximum head rotation per axis (degrees)")
    translation_mm: float = _opt(3.0, "maximum head shift per axis (mm)")
    scale_range: float = _opt(0.03, "maximum relative head-size change per axis")
    deformation_mm: float = _opt(1.5, "s.d. of each smooth displacement component (mm)")
    bias_min: float = _opt(0.1, "smallest bias-field amplitude (log scale)")
    bias_max: float = _opt(0.2, "largest bias-field amplitude (log scale)")
    snr_min: float = _opt(12.0, "smallest white-matter SNR")
    snr_max: float = _opt(35.0, "largest white-matter SNR")
    gain_min: float = _opt(50.0, "smallest global intensity gain")
    gain_max: float = _opt(3000.0, "largest global intensity gain")
    max_lesions: int = _opt(20, "most EPVS per scan")
    lesion_rate: float = _opt(1.0, "multiplies the expected number of EPVS")
    radius_min: float = _opt(0.4, "smallest EPVS radius (mm)")
    radius_max: float = _opt(1.3, "largest EPVS radius (mm)")
    length_min: float = _opt(2.0, "shortest EPVS (mm)")
    length_max: float = _opt(10.0, "longest EPVS (mm)")
    tilt_deg: float = _opt(20.0, "largest EPVS tilt from superior-inferior (degrees)")
    contrast_min: float = _opt(0.05, "faintest EPVS (fraction of the way to CSF)")
    contrast_max: float = _opt(1.0, "brightest EPVS")
    min_distance_mm: float = _opt(3.0, "smallest distance between EPVS centres (mm)")
    visibility_level: float = _opt(0.3, "expert counts EPVS with contrast × size ≥ this")
    rater_miss: float = _opt(0.5, "rater's miss probability at the visibility level")
    rater_error: float = _opt(0.2, "probability of a ±1 error in the rater's count")
    atrophy_rate: float = _opt(1.0, "multiplies ventricle enlargement")
    lacune_rate: float = _opt(1.0, "multiplies the expected number of lacunes")
    wmh_rate: float = _opt(1.0, "multiplies the expected number of WMH blobs")
    wmh_volume_noise: float = _opt(0.1, "relative s.d. of the rater's WMH volume")


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """MNI152 maps cropped around the field of view (1 mm, axis-aligned)."""

    origin: np.ndarray  # MNI mm of voxel (0, 0, 0)
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    roi: np.ndarray  # float32 0/1
    ventricle_distance: np.ndarray  # mm
    roi_points: np.ndarray  # (N, 3) MNI mm of ROI voxels
    wm_near_roi: np.ndarray  # WM points within 8 mm of the ROI
    deep_wm: np.ndarray  # WM points in the field of view
    periventricular_wm: np.ndarray  # WM points 2–8 mm from the ventricles


def _close(mask: np.ndarray, radius: float) -> np.ndarray:
    dilated = ndi.distance_transform_edt(~mask) <= radius
    return ndi.distance_transform_edt(dilated) > radius


@functools.lru_cache(maxsize=1)
def mni_anatomy() -> Anatomy:
    """Load the MNI152 maps, derive the basal-ganglia ROI and sampling points."""
    from nilearn import datasets

    gm_img = datasets.load_mni152_gm_template(resolution=1)
    affine = gm_img.affine
    assert np.allclose(affine[:3, :3], np.eye(3)), "expected a 1 mm RAS template"
    lo = np.floor(BOX_CENTRE - BOX_SIZE / 2 - TEMPLATE_MARGIN - affine[:3, 3]).astype(int)
    hi = np.ceil(BOX_CENTRE + BOX_SIZE / 2 + TEMPLATE_MARGIN - affine[:3, 3]).astype(int)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    origin = affine[:3, 3] + lo

    def load(img):
        return np.asarray(img.dataobj, dtype=np.float32)[crop]

    gm = load(gm_img)
    wm = load(datasets.load_mni152_wm_template(resolution=1))
    brain = (load(datasets.load_mni152_brain_mask(resolution=1)) > 0).astype(np.float32)
    csf = brain * np.clip(1.0 - gm - wm, 0.0, 1.0)
    x, y, z = np.meshgrid(*(origin[d] + np.arange(gm.shape[d]) for d in range(3)), indexing="ij")
    (ax_lo, ax_hi), (y_lo, y_hi), (z_lo, z_hi) = ROI_BOUNDS
    box = (abs(x) >= ax_lo) & (abs(x) <= ax_hi) & (y >= y_lo) & (y <= y_hi)
    box &= (z >= z_lo) & (z <= z_hi)
    depth = ndi.distance_transform_edt(brain > 0)

    candidate = ndi.binary_opening((gm > 0.4) & box & (depth > 15))
    labels, _ = ndi.label(candidate)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    deep_gm = np.isin(labels, np.flatnonzero(sizes >= 1000))
    roi = np.zeros_like(deep_gm)
    for side in (x < 0, x > 0):
        roi |= _close(deep_gm & side, 7.0) & side
    roi = ndi.binary_fill_holes(roi) & box & (csf < 0.15)

    ventricles = (csf > 0.5) & (depth > 12)
    ventricle_distance = ndi.distance_transform_edt(~ventricles).astype(np.float32)
    roi_distance = ndi.distance_transform_edt(~roi)
    in_fov = np.all(np.abs(np.stack([x, y, z], -1) - BOX_CENTRE) < BOX_SIZE / 2 - 4, axis=-1)

    def points(mask):
        return (np.argwhere(mask) + origin).astype(np.float32)

    return Anatomy(
        origin=origin,
        gm=gm,
        wm=wm,
        csf=csf,
        brain=brain,
        roi=roi.astype(np.float32),
        ventricle_distance=ventricle_distance,
        roi_points=points(roi),
        wm_near_roi=points((wm > 0.7) & (roi_distance <= 8)),
        deep_wm=points((wm > 0.8) & in_fov & (depth > 15)),
        periventricular_wm=points(
            (wm > 0.5) & in_fov & (ventricle_distance >= 2) & (ventricle_distance <= 8)
        ),
    )


@dataclasses.dataclass(frozen=True)
class SmoothField:
    """Sum of normalised Gaussian bumps on a regular lattice over the box (per component)."""

    coef: np.ndarray  # (components, kx, ky, kz)

    @staticmethod
    def random(rng, components: int, sd: float) -> SmoothField:
        """Random field whose components have standard deviation about ``sd``."""
        shape = (components, *(len(_lattice(d)) for d in range(3)))
        centre_weights = [SmoothField.basis(BOX_CENTRE[d : d + 1], d) for d in range(3)]
        gain = np.prod([np.linalg.norm(w) for w in centre_weights])  # field s.d. per unit coef
        return SmoothField(rng.normal(0.0, sd / gain, shape).astype(np.float32))

    @staticmethod
    def basis(values: np.ndarray, axis: int) -> np.ndarray:
        w = np.exp(-0.5 * ((values[:, None] - _lattice(axis)[None]) / FIELD_SPACING) ** 2)
        return (w / w.sum(1, keepdims=True)).astype(np.float32)

    def on_grid(self, axes) -> np.ndarray:
        bx, by, bz = (self.basis(a, d) for d, a in enumerate(axes))
        field = np.einsum("cabd,kd->cabk", self.coef, bz)
        field = np.einsum("cabk,jb->cajk", field, by)
        return np.einsum("cajk,ia->cijk", field, bx)

    def at(self, points: np.ndarray) -> np.ndarray:
        bx, by, bz = (self.basis(points[:, d], d) for d in range(3))
        return np.einsum("cabd,na,nb,nd->nc", self.coef, bx, by, bz)


def _lattice(axis: int) -> np.ndarray:
    half = BOX_SIZE[axis] / 2 + FIELD_SPACING
    return BOX_CENTRE[axis] + np.arange(-half, half + 1e-6, FIELD_SPACING)


@dataclasses.dataclass(frozen=True)
class Pose:
    """Scanner → template map ``m = c + A (p − c − t) + u(p)``."""

    matrix: np.ndarray
    shift: np.ndarray
    warp: SmoothField

    @staticmethod
    def random(rng, s: Settings) -> Pose:
        rotation = Rotation.from_euler(
            "xyz", rng.uniform(-1, 1, 3) * s.rotation_deg, degrees=True
        ).as_matrix()
        scale = 1.0 + rng.uniform(-s.scale_range, s.scale_range, 3)
        return Pose(
            np.diag(1.0 / scale) @ rotation.T,
            rng.uniform(-1, 1, 3) * s.translation_mm,
            SmoothField.random(rng, 3, s.deformation_mm),
        )

    def template_coords(self, axes) -> np.ndarray:
        """Template mm (3, nx, ny, nz) of the scanner grid with the given axes."""
        rel = [(a - BOX_CENTRE[d] - self.shift[d]).astype(np.float32) for d, a in enumerate(axes)]
        coords = self.warp.on_grid(axes)
        for d in range(3):
            coords[d] += (
                BOX_CENTRE[d]
                + self.matrix[d, 0] * rel[0][:, None, None]
                + self.matrix[d, 1] * rel[1][None, :, None]
                + self.matrix[d, 2] * rel[2][None, None, :]
            )
        return coords

    def to_scanner(self, points: np.ndarray) -> np.ndarray:
        """Scanner mm of template points (N, 3), by fixed-point iteration."""
        inverse = np.linalg.inv(self.matrix)
        scanner = (points - BOX_CENTRE) @ inverse.T + BOX_CENTRE + self.shift
        for _ in range(8):
            shifted = points - self.warp.at(scanner) - BOX_CENTRE
            scanner = shifted @ inverse.T + BOX_CENTRE + self.shift
        return scanner

    def direction_to_scanner(self, v: np.ndarray) -> np.ndarray:
        w = np.linalg.solve(self.matrix, v)
        return w / np.linalg.norm(w)


@dataclasses.dataclass(frozen=True)
class Grid:
    """Axis-aligned voxel grid in scanner mm."""

    origin: np.ndarray
    spacing: np.ndarray
    shape: tuple[int, int, int]

    @staticmethod
    def of_box(voxel: np.ndarray) -> Grid:
        shape = tuple(int(round(n)) for n in BOX_SIZE / voxel)
        return Grid(BOX_CENTRE - (np.array(shape) - 1) * voxel / 2, voxel, shape)

    def refined(self) -> Grid:
        return Grid(self.origin - self.spacing / 4, self.spacing / 2, tuple(2 * n for n in self.shape))

    @property
    def axes(self):
        return [self.origin[d] + self.spacing[d] * np.arange(self.shape[d]) for d in range(3)]

    @property
    def affine(self) -> np.ndarray:
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = self.origin
        return affine

    def patch(self, centre: np.ndarray, radius: float, step: int = 1):
        """Slices within ``radius`` mm of ``centre`` (bounds multiple of ``step``) and the
        voxel offsets from ``centre`` as three broadcastable arrays."""
        lo = np.floor((centre - radius - self.origin) / self.spacing / step).astype(int) * step
        hi = np.ceil((centre + radius - self.origin) / self.spacing / step).astype(int) * step
        lo, hi = np.maximum(lo, 0), np.minimum(hi, self.shape)
        offsets = []
        for d in range(3):
            shape = [1, 1, 1]
            shape[d] = max(hi[d] - lo[d], 0)
            values = self.origin[d] + self.spacing[d] * np.arange(lo[d], hi[d]) - centre[d]
            offsets.append(values.reshape(shape).astype(np.float32))
        return tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)), offsets


def _block_mean(fine: np.ndarray) -> np.ndarray:
    nx, ny, nz = (n // 2 for n in fine.shape)
    return fine.reshape(nx, 2, ny, 2, nz, 2).mean(axis=(1, 3, 5))


def _sample_far(rng, points, count, min_distance, avoid=(), tries=50):
    """Up to ``count`` jittered points at least ``min_distance`` from each other and ``avoid``."""
    chosen = list(avoid)
    picked = []
    for _ in range(count * tries):
        if len(picked) == count or len(points) == 0:
            break
        p = points[rng.integers(len(points))] + rng.uniform(-0.5, 0.5, 3)
        if all(np.linalg.norm(p - q) >= min_distance for q in chosen):
            chosen.append(p)
            picked.append(p)
    return np.array(picked).reshape(-1, 3)


def _add_blob(image, grid: Grid, centre, sigma, amount):
    sl, (dx, dy, dz) = grid.patch(centre, 3 * sigma)
    image[sl] += amount * np.exp(-(dx**2 + dy**2 + dz**2) / (2 * sigma**2))


def _tube_fraction(offsets, axis, radius, length, softness):
    """Fraction of each voxel inside a capsule (axis through the patch centre)."""
    dx, dy, dz = offsets
    along = dx * axis[0] + dy * axis[1] + dz * axis[2]
    half = max(length / 2 - radius, 0.0)
    core = np.clip(along, -half, half)
    dist = np.sqrt((dx - core * axis[0]) ** 2 + (dy - core * axis[1]) ** 2 + (dz - core * axis[2]) ** 2)
    return np.clip((radius - dist) / softness + 0.5, 0.0, 1.0)


def _tissue_image(anatomy: Anatomy, subject: dict) -> np.ndarray:
    """Template-space intensities from tissue probabilities, ventricles grown by atrophy."""
    csf = anatomy.csf
    if subject["atrophy_mm"] > 0:
        grown = np.clip(subject["atrophy_mm"] - anatomy.ventricle_distance + 0.5, 0.0, 1.0)
        csf = np.maximum(csf, grown * anatomy.brain)
    tissue = anatomy.gm + anatomy.wm
    solid = (subject["gm"] * anatomy.gm + subject["wm"] * anatomy.wm) / np.maximum(tissue, 1e-3)
    return anatomy.brain * (1.0 - csf) * solid + csf * subject["csf"]


def _epvs_lesions(rng, anatomy, s: Settings, burden, subject):
    """Template-space EPVS: centres, axes, radii, lengths, contrasts."""
    count = min(int(rng.poisson(s.lesion_rate * s.max_lesions * burden)), s.max_lesions)
    depth = anatomy.ventricle_distance[tuple((anatomy.roi_points - anatomy.origin).astype(int).T)]
    points = anatomy.roi_points[depth > subject["atrophy_mm"] + 4.0]
    centres = _sample_far(rng, points, count, s.min_distance_mm)
    n = len(centres)
    radius = rng.uniform(s.radius_min, s.radius_max, n)
    length = np.maximum(rng.uniform(s.length_min, s.length_max, n), 2.5 * radius)
    tilt = np.radians(rng.uniform(0, s.tilt_deg, n))
    azimuth = rng.uniform(0, 2 * np.pi, n)
    axes = np.stack([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), np.cos(tilt)], 1)
    contrast = s.contrast_min + (s.contrast_max - s.contrast_min) * rng.beta(1.0, 1.5, n)
    along = centres[:, None] + np.linspace(-0.5, 0.5, 7)[None, :, None] * (
        length[:, None, None] * axes[:, None]
    )  # 7 points on each tube's axis
    keep = []
    for i in range(n):  # drop tubes that would touch an earlier one
        gaps = [
            np.linalg.norm(along[i][:, None] - along[j][None], axis=-1).min() - radius[i] - radius[j]
            for j in keep
        ]
        if min(gaps, default=np.inf) >= 0.5:
            keep.append(i)
    return centres[keep], axes[keep], radius[keep], length[keep], contrast[keep]


def _add_epvs_confounders(rng, image, anatomy, s: Settings, burden, subject, avoid):
    """Lacunes and WMH-like patches in template space; returns their counts."""
    grid = Grid(anatomy.origin, np.ones(3), image.shape)
    n_lacunes = int(rng.poisson(s.lacune_rate * 1.5 * burden))
    diameters = rng.uniform(3.0, 15.0, n_lacunes)
    placed = 0
    for d in diameters:
        centre = _sample_far(rng, anatomy.roi_points, 1, d / 2 + 6.0, avoid)
        if len(centre) == 0:
            continue
        centre = centre[0] + rng.normal(0, 2.0, 3)
        semi = d / 2 * rng.uniform(0.7, 1.3, 3)
        sl, offsets = grid.patch(centre, semi.max() + 1)
        rot = Rotation.from_quat(rng.normal(size=4)).as_matrix()
        rho = sum((sum(rot[e, k] * offsets[k] for k in range(3)) / semi[e]) ** 2 for e in range(3))
        fraction = np.clip((1 - np.sqrt(rho)) * semi.mean() + 0.5, 0, 1)
        image[sl] += fraction * rng.uniform(0.8, 1.0) * (subject["csf"] - image[sl])
        placed += 1
    n_patches = int(rng.poisson(s.wmh_rate * (0.5 + 4 * burden)))
    patches = np.zeros_like(image)
    for _ in range(n_patches):
        centre = anatomy.wm_near_roi[rng.integers(len(anatomy.wm_near_roi))]
        _add_blob(patches, grid, centre, rng.uniform(1.5, 4.0), rng.uniform(0.1, 0.3))
    image += np.minimum(patches, 0.4) * (subject["csf"] - image)
    return placed, n_patches


def _wmh_fraction(rng, anatomy, s: Settings, burden) -> np.ndarray:
    """Template-space WMH lesion fraction: punctate and confluent periventricular blobs."""
    grid = Grid(anatomy.origin, np.ones(3), anatomy.wm.shape)
    field = np.zeros_like(anatomy.wm)
    for _ in range(rng.poisson(s.wmh_rate * (2 + 15 * burden))):
        centre = anatomy.deep_wm[rng.integers(len(anatomy.deep_wm))]
        _add_blob(field, grid, centre, rng.uniform(0.7, 2.0), 1.0)
    for _ in range(rng.poisson(s.wmh_rate * 5 * burden)):
        seed = anatomy.periventricular_wm[rng.integers(len(anatomy.periventricular_wm))]
        for _ in range(rng.integers(3, 9)):
            _add_blob(
                field,
                grid,
                seed + rng.normal(0, 4.0, 3),
                rng.uniform(2.0, 5.0),
                rng.uniform(0.6, 1.2),
            )
    weight = np.clip((anatomy.wm - 0.3) / 0.4, 0, 1)
    return np.clip((field - 0.5) * 3 + 0.5, 0, 1) * weight


def epvs_visibility(contrast, radius, length, spacing):
    """Contrast × the fraction of a voxel's cross-section and of its height the EPVS fills
    (voxel size ``spacing``, mm); the expert counts those at or above the visibility level."""
    area = np.minimum(1, np.pi * radius**2 / (spacing[0] * spacing[1]))
    return contrast * area * np.minimum(1, length / spacing[2])


def rater_miss_probability(visibility, s: Settings):
    """The training rater's chance of missing a counted EPVS: ``rater_miss`` at the level,
    falling linearly to 0 at 0.4 above it."""
    return s.rater_miss * np.clip(1 - (visibility - s.visibility_level) / 0.4, 0, 1)


def _render_epvs(rng, s: Settings, anatomy, template, coords, pose, grid, subject, burden):
    """Add confounders and EPVS; return the fine image, lesion mask, lesions, counts."""
    lesion_mask = np.zeros(grid.shape, np.uint8)
    centres, axes, radii, lengths, contrasts = _epvs_lesions(rng, anatomy, s, burden, subject)
    counts = _add_epvs_confounders(rng, template, anatomy, s, burden, subject, centres)
    image = ndi.map_coordinates(template, coords, order=1, output=np.float32, prefilter=False)
    fine = grid.refined()
    visibility = epvs_visibility(contrasts, radii, lengths, grid.spacing)
    visible = visibility >= s.visibility_level
    scanner = pose.to_scanner(centres)
    lesions = []
    for n in range(len(centres)):
        p, r, length = scanner[n], radii[n], lengths[n]
        sl, offsets = fine.patch(p, length / 2 + r + 1.5, step=2)
        axis = pose.direction_to_scanner(axes[n])
        frac = _tube_fraction(offsets, axis, r, length, fine.spacing.mean())
        image[sl] += frac * contrasts[n] * (subject["csf"] - image[sl])
        if visible[n]:
            block = _block_mean(frac)
            hit = block >= 0.2
            hit.flat[np.argmax(block)] = True
            lesion_mask[tuple(slice(a.start // 2, a.stop // 2) for a in sl)][hit] = n + 1
        ijk = (p - grid.origin) / grid.spacing
        values = [n + 1, *ijk, *p, r, length, contrasts[n], int(visible[n])]
        lesions.append(dict(zip(LESION_COLUMNS[1:], values, strict=True)))
    expert = int(visible.sum())
    missed = int((rng.random(len(visible)) < rater_miss_probability(visibility, s))[visible].sum())
    error = rng.choice([-1, 1]) if rng.random() < s.rater_error else 0
    label = max(expert - missed + error, 0)
    return image, lesion_mask, lesions, label, expert, counts


def _render_wmh(rng, s: Settings, anatomy, template, coords, grid, subject, burden):
    """Add WMH; return the fine image, lesion mask, rater volume and true volume (mm³)."""
    fraction = _wmh_fraction(rng, anatomy, s, burden)
    template += fraction * (subject["lesion"] - template)
    image = ndi.map_coordinates(template, coords, order=1, output=np.float32, prefilter=False)
    fine = ndi.map_coordinates(fraction, coords, order=1, output=np.float32, prefilter=False)
    volume = float(fine.sum(dtype=np.float64) * np.prod(grid.spacing) / 8)
    lesion_mask = (_block_mean(fine) >= 0.5).astype(np.uint8)
    label = max(volume * (1 + rng.normal(0, s.wmh_volume_noise)), 0.0)
    return image, lesion_mask, label, volume


def _acquire(rng, s: Settings, image, grid, wm_intensity) -> tuple[np.ndarray, dict]:
    """Bias field, Rician noise and global gain on the subject grid."""
    bias = rng.uniform(s.bias_min, s.bias_max)
    log_field = SmoothField.random(rng, 1, 1.0).on_grid(grid.axes)[0]
    image = image * np.exp(bias * log_field / np.abs(log_field).max())
    snr = rng.uniform(s.snr_min, s.snr_max)
    sigma = wm_intensity / snr
    real = image + rng.normal(0, sigma, image.shape).astype(np.float32)
    imaginary = rng.normal(0, sigma, image.shape).astype(np.float32)
    gain = rng.uniform(s.gain_min, s.gain_max)
    scan = (np.hypot(real, imaginary) * gain).astype(np.float32)
    return scan, dict(bias=bias, snr=snr, gain=gain)


def simulate_subject(
    rng_or_seed, anatomy: Anatomy, task: str = "epvs", settings: Settings | dict | None = None
) -> dict:
    """Simulate one scan.

    Returns
    -------
    dict with ``scan`` (float32), ``mask`` and ``lesion_mask`` (uint8) on one grid,
    ``affine``, ``label`` (rater), ``expert``, ``lesions`` (list of dicts, EPVS) and
    ``params`` (subject parameters).
    """
    s = settings if isinstance(settings, Settings) else Settings(**(settings or {}))
    if task not in ("epvs", "wmh"):
        raise ValueError(f"unknown task {task!r}")
    if s.max_lesions > 255:
        raise ValueError("max_lesions must fit the uint8 lesion mask (≤ 255)")
    rng = np.random.default_rng(rng_or_seed)
    in_plane, through_plane = rng.uniform(s.voxel_min, s.voxel_max, 2)
    grid = Grid.of_box(np.array([in_plane, in_plane, through_plane]))
    pose = Pose.random(rng, s)
    burden = rng.beta(1.2, 1.8)
    subject = dict(gm=rng.uniform(0.55, 0.65), wm=rng.uniform(0.45, 0.5))
    if task == "epvs":
        subject.update(csf=1.0, atrophy_mm=s.atrophy_rate * rng.uniform() * (0.5 + 4 * burden))
    else:
        subject.update(csf=rng.uniform(0.1, 0.2), lesion=rng.uniform(0.8, 1.0), atrophy_mm=0.0)
    template = _tissue_image(anatomy, subject)
    coords = pose.template_coords(grid.refined().axes) - anatomy.origin[:, None, None, None]
    params = dict(voxel_in_plane=in_plane, voxel_slice=through_plane, burden=burden, **subject)
    lesions = []
    if task == "epvs":
        image, lesion_mask, lesions, label, expert, counts = _render_epvs(
            rng, s, anatomy, template, coords, pose, grid, subject, burden
        )
        params["lacunes"], params["wmh_patches"] = counts
        roi_map = anatomy.roi
    else:
        image, lesion_mask, label, expert = _render_wmh(
            rng, s, anatomy, template, coords, grid, subject, burden
        )
        roi_map = (anatomy.wm >= 0.3).astype(np.float32)
    del coords
    roi_coords = pose.template_coords(grid.axes) - anatomy.origin[:, None, None, None]
    mask = ndi.map_coordinates(roi_map, roi_coords, order=1, prefilter=False) >= 0.5
    scan, acquisition = _acquire(rng, s, _block_mean(image), grid, subject["wm"])
    params.update(acquisition)
    return dict(
        scan=scan,
        mask=mask.astype(np.uint8),
        lesion_mask=lesion_mask,
        affine=grid.affine,
        label=label,
        expert=expert,
        lesions=lesions,
        params=params,
    )


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def _simulate_and_write(job) -> dict:
    out, index, seed, task, settings = job
    result = simulate_subject([seed, index], mni_anatomy(), task, settings)
    name = f"sub-{index:04d}.nii.gz"
    _save(result["scan"], result["affine"], out / "scans" / name)
    _save(result["mask"], result["affine"], out / "masks" / name)
    _save(result["lesion_mask"], result["affine"], out / "lesion_masks" / name)
    return dict(
        scan=name,
        label=result["label"],
        expert=result["expert"],
        lesions=[{"scan": name, **lesion} for lesion in result["lesions"]],
        params={"scan": name, **result["params"]},
    )


def _merge_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    """Write ``rows``, keeping earlier rows of other scans already in ``path``."""
    scans = {row["scan"] for row in rows}
    kept = []
    if path.exists():
        with open(path, newline="") as f:
            kept = [row for row in csv.DictReader(f) if row["scan"] not in scans]
    merged = sorted(kept + rows, key=lambda row: row["scan"])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in merged:
            writer.writerow({k: _fmt(v) for k, v in row.items()})


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, (float, np.floating)) else value


def simulate_cohort(
    out_dir,
    n: int,
    seed: int,
    task: str = "epvs",
    start_index: int = 0,
    workers: int = 1,
    **settings,
) -> list[dict]:
    """Simulate scans ``start_index … start_index + n − 1`` into ``out_dir``.

    Subject ``i`` depends only on ``(seed, i, task, settings)``.  Rows of other scans
    already in the CSV files are kept.  Returns one summary dict per scan.
    """
    s = Settings(**settings)
    out = Path(out_dir)
    for sub in ("scans", "masks", "lesion_masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(out, i, seed, task, s) for i in range(start_index, start_index + n)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_simulate_and_write, jobs))
    else:
        results = [_simulate_and_write(job) for job in jobs]
    _merge_csv(out / "labels.csv", results, ["scan", "label"])
    _merge_csv(out / "expert.csv", [{**r, "label": r["expert"]} for r in results], ["scan", "label"])
    params = [r["params"] for r in results]
    _merge_csv(out / "subjects.csv", params, list(params[0]) if params else ["scan"])
    if task == "epvs":
        lesion_rows = [row for r in results for row in r["lesions"]]
        _merge_csv(out / "lesions.csv", lesion_rows, LESION_COLUMNS)
    (out / "settings.json").write_text(
        json.dumps(
            dict(
                seed=seed,
                task=task,
                n=n,
                start_index=start_index,
                settings=dataclasses.asdict(s),
                box_centre_mni=BOX_CENTRE.tolist(),
                box_size_mm=BOX_SIZE.tolist(),
                mask="basal-ganglia ROI" if task == "epvs" else "white matter (WM prob ≥ 0.3)",
            ),
            indent=2,
        )
    )
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", choices=["epvs", "wmh"], default="epvs")
    parser.add_argument("--start-index", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    for f in dataclasses.fields(Settings):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(f.default),
            default=f.default,
            help=f.metadata["help"],
        )
    args = vars(parser.parse_args(argv))
    fixed = {k: args.pop(k) for k in ("out_dir", "n", "seed", "task", "start_index", "workers")}
    results = simulate_cohort(**fixed, **args)
    experts = np.array([r["expert"] for r in results], float)
    print(
        f"wrote {len(results)} {fixed['task']} scans to {fixed['out_dir']}; "
        f"expert label mean {experts.mean():.2f}, range {experts.min():.4g}–{experts.max():.4g}"
    )


if __name__ == "__main__":
    main()
