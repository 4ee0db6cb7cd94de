"""A labelled cohort in memory: prepared volumes and their global labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import HydranetError
from .io import Scan, check_masks_folder, find_mask, read_labels, read_scan
from .options import DENSITY_TARGETS
from .preprocess import MedianNotPositive, PreprocessConfig, prepare
from .text import first_of, note_kind, plural


@dataclass
class Cohort:
    names: list[str]
    images: np.ndarray  # (N, I, J, K) float32
    labels: np.ndarray  # (N,) float32
    spacing: list[float] = field(default_factory=list)  # median voxel size, mm
    notes: list[str] = field(default_factory=list)
    densities: np.ndarray | None = None  # (N, I, J, K) lesion targets (lesion_target), pretraining only
    spacing_range: tuple[float, float] | None = None  # smallest and largest voxel edge, mm
    listed: frozenset[str] = frozenset()  # the labels table's scan files (Labels.listed)
    textures: list = field(default_factory=list)  # each scan's noise_texture (None: not measured)
    texture_region: str = "ROI"  # where they were measured: "ROI", or "foreground" without masks

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx) -> Cohort:
        idx = list(idx)
        dens = self.densities[idx] if self.densities is not None else None
        return Cohort(
            [self.names[i] for i in idx],
            self.images[idx],
            self.labels[idx],
            self.spacing,
            [],
            dens,
            self.spacing_range,
            self.listed,
            [self.textures[i] for i in idx] if self.textures else [],
            self.texture_region,
        )


LESION_MASS = 12.0  # voxels: the simulated lesions' median size, so per-lesion targets stay of order one


def lesion_target(lesion_labels: np.ndarray, kind: str = "voxels") -> np.ndarray:
    """The pretraining target from a lesion label mask (0 background, one id per counted lesion).

    ``"voxels"``: 1 on every lesion voxel, so the map's sum grows with each lesion's size in
    voxels (and with the scan's resolution). ``"lesions"``: every lesion's voxels share the
    same mass ``LESION_MASS``, so the sum is ``LESION_MASS`` × the lesion count, whatever the
    lesions' sizes and the voxel size.
    """
    if kind not in DENSITY_TARGETS:
        raise ValueError(f"density target must be one of {DENSITY_TARGETS}, not {kind!r}")
    ids = np.rint(lesion_labels).astype(np.int64)
    if ids.min(initial=0) < 0:
        raise HydranetError("lesion label mask has negative labels")
    if kind == "voxels":
        return (ids > 0).astype(np.float32)
    sizes = np.bincount(ids.ravel()).astype(np.float32)
    sizes[0] = np.inf  # background: 0
    return (LESION_MASS / sizes[ids]).astype(np.float32)


def shared(notes: list[str]) -> list[str]:
    """Per-scan notes ("<scan>: <text>"), one line for notes that differ only in their
    numbers (a z-scored cohort's medians, each scan's voxel size), the first scan's as example."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for note in notes:
        who, _, text = note.partition(": ")
        groups.setdefault(note_kind(note), []).append((who, text))
    lines = []
    for group in groups.values():
        (who, text), names = group[0], [w for w, _ in group]
        lines.append(
            f"{who}: {text}"
            if len(group) == 1
            else f"{plural(len(group), 'scan')} ({first_of(names, 3)}), e.g. {who}: {text}"
        )
    return lines


def _lesion_map(density_dir, scan: Scan, kind: str) -> np.ndarray:
    """The ``lesion_target`` of a scan's lesion mask, which must lie on the scan's voxels as
    stored (the target is cut out of the file's grid, voxel for voxel)."""
    lesions = read_scan(find_mask(density_dir, scan.path))
    if lesions.array.shape != scan.array.shape:
        differs = f"shape {lesions.array.shape} differs from its scan's {scan.array.shape}"
    elif not np.allclose(lesions.affine, scan.affine, atol=1e-3):
        differs = "affine differs from its scan's"
    else:
        return lesion_target(lesions.array, kind)
    raise HydranetError(
        f"{lesions.where}: the lesion mask's {differs} ({scan.where}); store it on the scan's voxels"
    )


def load_cohort(
    scans_dir,
    labels_csv,
    pre: PreprocessConfig,
    masks_dir=None,
    scan_column="scan",
    label_column="label",
    density_dir=None,
    density_target="voxels",
) -> Cohort:
    """Read the labelled scans of a folder and prepare them for the network.

    ``density_dir`` (pretraining on simulated data only) holds lesion label masks named
    like the scans; each becomes a ``lesion_target`` of kind ``density_target`` on the
    network's grid. A scan that cannot be read or prepared (corrupt, blank) is left out with
    a note saying why, so every problem shows at once; none usable is an error that lists them.
    Errors that concern the cohort, not one scan, stop it: scans of different prepared
    shapes, a missing lesion mask, and ``MedianNotPositive`` (the caller picks another
    intensity reference).
    """
    labels = read_labels(labels_csv, scans_dir, scan_column, label_column)
    check_masks_folder(masks_dir, [Path(scans_dir) / name for name in labels.values])
    names, images, values, spacings, densities, textures = [], [], [], [], [], []
    notes, skipped, prepared_notes = list(labels.notes), [], []
    for name, value in labels.values.items():
        path = Path(scans_dir) / name
        try:
            scan = read_scan(path)
            mask_path = find_mask(masks_dir, path) if masks_dir else None
            prepared = prepare(scan, pre, read_scan(mask_path) if mask_path else None)
        except MedianNotPositive:  # the intensity reference, not the scan: the caller decides
            raise
        except HydranetError as exc:  # a corrupt or blank scan costs that scan, not the training
            skipped.append(str(exc))
            continue
        prepared_notes += prepared.notes  # NaN voxels, no orientation, resampled, sign, ROI size
        if images and prepared.array.shape != images[0].shape:
            raise HydranetError(
                f"{path}: prepared shape {prepared.array.shape} differs from {images[0].shape}; "
                "scans of different sizes need a crop (masks and a crop shape)"
            )
        if density_dir is not None:
            densities.append(prepared.crop_source(_lesion_map(density_dir, scan, density_target)))
        names.append(name)
        images.append(prepared.array)
        values.append(value)
        spacings.append(prepared.spacing)
        textures.append(prepared.texture)
        region = prepared.texture_region  # where prepare measured it: the ROI, or the foreground
    if not names:
        none = f"none of its {plural(len(skipped), 'scan')} can be used"
        raise HydranetError(f"{labels_csv}: {none}: {first_of(skipped)}")
    notes = [f"skipped (not trained on): {reason}" for reason in skipped] + notes + shared(prepared_notes)
    return Cohort(
        names,
        np.stack(images).astype(np.float32),
        np.asarray(values, np.float32),
        [float(s) for s in np.median(np.asarray(spacings), 0)],
        notes,
        np.stack(densities).astype(np.float32) if densities else None,
        (float(np.min(spacings)), float(np.max(spacings))) if spacings else None,
        labels.listed,
        textures,
        region,
    )


def check_split(n: int, fraction: float) -> int:
    """How many of ``n`` labelled scans ``fraction`` holds out (at least 2); an error when fewer
    than 2 would be left to train on."""
    n_val = max(2, int(round(n * fraction)))
    if n - n_val < 2:
        raise HydranetError(
            f"{plural(n, 'labelled scan')} {'is' if n == 1 else 'are'} too few to hold out {n_val} "
            "for validation and train on 2 or more; "
            f"label at least {n_val + 2}"
        )
    return n_val


def split_validation(cohort: Cohort, fraction: float, seed: int) -> tuple[Cohort, Cohort]:
    """Hold out about ``fraction`` of the scans, spread over the label range.

    Scans are sorted by label and cut into strata of about 1/fraction; one random scan of
    each stratum goes to validation, so small validation sets still span the counts.
    """
    n = len(cohort)
    n_val = check_split(n, fraction)
    rng = np.random.default_rng(seed)
    order = np.argsort(cohort.labels + rng.random(n) * 1e-3, kind="stable")
    strata = np.array_split(order, n_val)
    val = sorted(int(rng.choice(s)) for s in strata)
    train = [i for i in range(n) if i not in set(val)]
    return cohort.subset(train), cohort.subset(val)
