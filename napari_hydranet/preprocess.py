"""ROI masking and cropping (000 §3.2, 004 §2.1) and intensity scaling (004 §3).

Networks see every scan in RAS voxel order (the file's axes permuted and flipped to those
nearest R, A, S), the order of the data the bundled model was trained on, so a scan stored
sagittally or LPS counts like the same scan stored RAS; axes whose voxels lie outside the
sizes a model was trained on are resampled (``network_zoom``). Every step keeps the
geometry: a ``Prepared`` volume knows where its crop lies in the source file and its own
affine, so outputs map back to the file's grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from scipy import ndimage

from .errors import HydranetError
from .io import Scan, corner_voxels
from .options import INTENSITY_REFERENCES
from .text import plural
from .texture import noise_texture

MEDIAN_SPAN = 2.0  # with the median reference, 1.0 is this many times the ROI's median
ROI_NOTE_FRACTION = 0.01  # ROI masks smaller than this share of the input box get a note
RAS = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])  # nibabel orientation of RAS voxel order


MIN_CROP = 16  # the smallest crop per axis (voxels); a few 3×3×3 convolutions and poolings need room
MAX_CROP = 256  # the largest: a network's feature maps of a bigger box outgrow a laptop's memory
VOXEL_MM = (0.05, 20.0)  # plausible voxel edges of a scan; others are a header's mistake (or unit)
MAX_VOXELS = 512**3  # the largest volume a scan is resampled to


@dataclass(frozen=True)
class PreprocessConfig:
    """How scans become network inputs; stored in each model's config.json."""

    crop_shape: tuple[int, int, int] | None = (64, 52, 40)
    mask_dilation: int = 2  # voxels
    mask_sigma: float = 2.0  # voxels, Gaussian smoothing of the mask border
    trim_percentile: float = 99.0
    use_mask: bool = True
    intensity_reference: str = "percentile"  # see ``rescale``
    spacing_range_mm: tuple[float, float] | None = None  # voxel edges the network was trained on
    spacing_mm: tuple[float, float, float] | None = None  # its typical voxel (R, A, S), see network_zoom

    def to_dict(self) -> dict:
        extra = {}  # written only when not the default: older readers and caches keep working
        if self.intensity_reference != "percentile":
            extra["intensity_reference"] = self.intensity_reference
        if self.spacing_range_mm is not None:
            extra["spacing_range_mm"] = list(self.spacing_range_mm)
        if self.spacing_mm is not None:
            extra["spacing_mm"] = list(self.spacing_mm)
        return {
            "crop_shape": list(self.crop_shape) if self.crop_shape else None,
            "mask_dilation": self.mask_dilation,
            "mask_sigma": self.mask_sigma,
            "trim_percentile": self.trim_percentile,
            "use_mask": self.use_mask,
            **extra,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        crop = d.get("crop_shape")
        if crop and (len(crop) != 3 or any(int(c) != c or not MIN_CROP <= c <= MAX_CROP for c in crop)):
            raise HydranetError(
                f"crop_shape {crop}: expected three whole numbers of voxels, each {MIN_CROP} to {MAX_CROP}"
            )
        for key, low, high, default in (
            ("mask_dilation", 0, 20, 2),
            ("mask_sigma", 0, 20, 2.0),
            ("trim_percentile", 50, 100, 99.0),
        ):
            value = d.get(key, default)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            whole = number and (key != "mask_dilation" or float(value).is_integer())  # voxels
            if not whole or not low <= value <= high:
                raise HydranetError(f"{key} {value!r}: expected a number from {low} to {high}")
        if not isinstance(d.get("use_mask", True), bool):
            raise HydranetError(f"use_mask {d['use_mask']!r}: expected true or false")
        reference = str(d.get("intensity_reference", "percentile"))
        if reference not in INTENSITY_REFERENCES:
            raise HydranetError(
                f"unknown intensity_reference {reference!r} "
                f"(expected one of {', '.join(INTENSITY_REFERENCES)})"
            )
        edges = _positive_mm(d, "spacing_range_mm", 2, "[smallest, largest]")
        if edges is not None and edges[0] > edges[1]:
            raise HydranetError(f"spacing_range_mm {list(edges)}: expected [smallest, largest] in mm")
        spacing = _positive_mm(d, "spacing_mm", 3, "three voxel edges")
        return cls(
            crop_shape=tuple(int(c) for c in crop) if crop else None,
            mask_dilation=int(d.get("mask_dilation", 2)),
            mask_sigma=float(d.get("mask_sigma", 2.0)),
            trim_percentile=float(d.get("trim_percentile", 99.0)),
            use_mask=bool(d.get("use_mask", True)),
            intensity_reference=reference,
            spacing_range_mm=edges,
            spacing_mm=spacing,
        )


def _positive_mm(d: dict, key: str, n: int, what: str) -> tuple | None:
    """``d[key]`` as ``n`` positive finite floats (mm), None when absent."""
    value = d.get(key)
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
        valid = len(out) == n and all(VOXEL_MM[0] <= v <= VOXEL_MM[1] for v in out)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        low, high = VOXEL_MM
        raise HydranetError(f"{key} {value!r}: expected {what} in mm, each {low:g} to {high:g}")
    return out


@dataclass
class Prepared:
    """A network input cut from a source scan.

    The network's grid is the source volume in RAS order (``orientation``), resampled by
    ``zoom`` (its voxel edges over the file's, per RAS axis; 1 where not resampled).

    Attributes
    ----------
    array : float32 (I, J, K) in [0, 1], the masked, cropped, rescaled volume, RAS order.
    affine : voxel-to-world matrix of the crop.
    offset : index of the crop's voxel (0, 0, 0) on the network's grid (the file's own index
        when the file is stored RAS and not resampled); may be negative (zero-padded).
    source_shape : shape of the source volume in the file's voxel order.
    orientation : nibabel orientation taking the file's voxel order to RAS.
    zoom : network voxel edge / file voxel edge along R, A, S.
    grid_shape : shape of the network's grid before cropping (the RAS source's if no zoom).
    texture : ``texture.noise_texture`` of the source scan in ``texture_region`` (the ROI
        mask, or without one the foreground), None where it cannot be measured.
    """

    array: np.ndarray
    affine: np.ndarray
    offset: tuple[int, int, int]
    source_shape: tuple[int, int, int]
    name: str = "scan"
    notes: list[str] = field(default_factory=list)
    orientation: np.ndarray = field(default_factory=lambda: RAS.copy())
    zoom: tuple[float, float, float] = (1.0, 1.0, 1.0)
    grid_shape: tuple[int, int, int] | None = None
    texture: float | None = None
    texture_region: str = "ROI"

    @property
    def on_source_grid(self) -> bool:
        """True when crop index + offset is the file's own voxel index."""
        return bool(np.array_equal(self.orientation, RAS)) and not self.resampled

    @property
    def spacing(self) -> np.ndarray:
        """Voxel edges of the network's grid (mm, along R, A, S)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def voxel_mm3(self) -> float:
        """Volume of one voxel of the network's grid."""
        return abs(float(np.linalg.det(self.affine[:3, :3])))

    @property
    def resampled(self) -> bool:
        return any(z != 1.0 for z in self.zoom)

    def to_ras_index(self, ijk: np.ndarray) -> np.ndarray:
        """Crop voxel coordinates (…, 3) → voxel coordinates of the source in RAS order."""
        return (np.asarray(ijk, float) + np.asarray(self.offset, float)) * np.asarray(self.zoom)

    def to_source_index(self, ijk: np.ndarray) -> np.ndarray:
        """Crop voxel coordinates (…, 3) → voxel coordinates of the source file."""
        to_file = inv_ornt_aff(self.orientation, self.source_shape)
        return self.to_ras_index(ijk) @ to_file[:3, :3].T + to_file[:3, 3]

    def uncrop(self, volume: np.ndarray, density: bool = False) -> np.ndarray:
        """Place a crop-shaped volume back on the source grid (zeros elsewhere; interpolated
        linearly where the scan was resampled). ``density``: the volume holds amounts per
        voxel (a heatmap whose sum is the count); they are gathered into the file's voxels
        so that the sum stays the same."""
        ras_shape = ras_shape_of(self.source_shape, self.orientation)
        out = np.zeros(self.grid_shape or ras_shape, dtype=np.float32)
        src, dst = _overlap(self.offset, volume.shape, out.shape)
        out[src] = volume[dst]
        if self.resampled:
            zoom = np.asarray(self.zoom)
            coarser = zoom < 1  # file voxels spanning several network voxels
            if density:  # each network voxel's amount shared out by overlap, so sums are kept
                for axis in np.flatnonzero(coarser):
                    share = _overlaps(ras_shape[axis], out.shape[axis], zoom[axis])
                    out = np.moveaxis(np.tensordot(share, out, axes=(1, axis)), 0, axis)
                zoom = np.where(coarser, 1.0, zoom)
            if np.any(zoom != 1):  # finer axes left (else the shares above gave the file's grid)
                out = ndimage.affine_transform(out, 1 / zoom, output_shape=ras_shape, order=1, mode="nearest")
                if density:  # a network voxel's amount spread over the finer file voxels
                    out /= np.prod(zoom)
        return from_ras(out, self.orientation)

    def crop_source(self, volume: np.ndarray) -> np.ndarray:
        """Cut a volume on the source file's grid (a lesion map) to this crop, RAS order."""
        if self.resampled:  # a lesion map's mass would not survive interpolation
            raise HydranetError(f"{self.name}: lesion maps of resampled scans are not supported")
        return crop_box(apply_orientation(volume, self.orientation), None, self.array.shape, self.offset)[0]


def _overlaps(n_file: int, n_net: int, zoom: float) -> np.ndarray:
    """(n_file, n_net): the share of network voxel n inside file voxel m along one axis,
    network voxel n spanning file coordinates [(n − ½) zoom, (n + ½) zoom]."""
    m, n = np.arange(n_file)[:, None], np.arange(n_net)[None, :]
    low = np.maximum(m - 0.5, (n - 0.5) * zoom)
    high = np.minimum(m + 0.5, (n + 0.5) * zoom)
    return (np.clip(high - low, 0.0, None) / zoom).astype(np.float32)


def smooth_mask(mask: np.ndarray, dilation: int = 2, sigma: float = 2.0) -> np.ndarray:
    """Dilate a binary ROI and blur its border: a weight map in [0, 1]."""
    binary = mask > 0
    if dilation > 0:
        binary = ndimage.binary_dilation(binary, iterations=dilation)
    weight = binary.astype(np.float32)
    if sigma > 0:
        weight = ndimage.gaussian_filter(weight, sigma)
    return np.clip(weight, 0.0, 1.0)


class MedianNotPositive(HydranetError):
    """The median reference cannot scale a scan whose ROI median is ≤ 0 (z-scored, empty)."""


def rescale(
    array: np.ndarray, within: np.ndarray | None, percentile: float = 99.0, reference: str = "percentile"
) -> np.ndarray:
    """Rescale intensities to [0, 1], measured on the voxels where ``within`` is true (the ROI)
    or on the non-zero voxels when no ROI is given.

    ``percentile``: trim above that percentile and map [min(0, lowest), trim] to [0, 1].
    ``median``: divide by MEDIAN_SPAN × the median and clip. The percentile moves with the
    bright tail (lesions, lacunes, ventricles), so after it the tissue is darker in scans
    with more lesions; the median does not (docs/benchmarks.md, "After model 6").
    """
    sel = array[within] if within is not None else array[array != 0]
    if sel.size == 0:
        return np.zeros_like(array, dtype=np.float32)
    if reference == "median":
        median = float(np.median(sel))
        if median <= 0:
            raise MedianNotPositive(
                f"the median intensity is {median:.3g}; the median reference needs positive "
                "intensities (z-scored or mostly empty scans: use the percentile reference)"
            )
        return np.clip(array / (MEDIAN_SPAN * median), 0.0, 1.0).astype(np.float32)
    lo = float(min(sel.min(), 0.0))
    hi = float(np.percentile(sel, percentile))
    if hi <= lo:
        return np.zeros_like(array, dtype=np.float32)
    return np.clip((array - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def crop_box(
    array: np.ndarray, centre: np.ndarray | None, shape: tuple[int, int, int], offset=None
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Cut ``shape`` around ``centre`` (voxel coords), or at ``offset``, zero-padding outside."""
    if offset is None:
        offset = tuple(int(round(c - s / 2)) for c, s in zip(centre, shape))
    out = np.zeros(shape, dtype=array.dtype)
    src, dst = _overlap(offset, shape, array.shape)
    out[dst] = array[src]
    return out, offset


def _overlap(offset, crop_shape, source_shape):
    """Slices (source, crop) of the region a crop at ``offset`` shares with the source."""
    src, dst = [], []
    for o, c, s in zip(offset, crop_shape, source_shape):
        a, b = max(o, 0), min(o + c, s)
        if b <= a:
            a = b = max(min(o, s), 0)
        src.append(slice(a, b))
        dst.append(slice(a - o, b - o))
    return tuple(src), tuple(dst)


def shifted_affine(affine: np.ndarray, offset) -> np.ndarray:
    """Affine of a sub-grid starting at voxel ``offset`` of ``affine``'s grid."""
    shift = np.eye(4)
    shift[:3, 3] = offset
    return affine @ shift


def _rescaled(scan: Scan, roi: np.ndarray | None, cfg: PreprocessConfig) -> np.ndarray:
    try:
        return rescale(scan.array, roi, cfg.trim_percentile, cfg.intensity_reference)
    except HydranetError as exc:
        raise type(exc)(f"{scan.where}: {exc}") from None


def _check_not_blank(scan: Scan, values: np.ndarray, where: str) -> None:
    """Refuse a volume whose voxels (NaNs read as 0) all hold one value: nothing to count."""
    low, high = float(values.min()), float(values.max())
    if low == high:
        nans = " (NaNs read as 0)" if any("NaN" in n for n in scan.notes) else ""
        what = "an ROI mask of one voxel" if values.size == 1 and "ROI" in where else "a blank scan"
        raise HydranetError(f"{scan.where}: every voxel{where} is {low:g}{nans}: {what}, nothing to count")


def _sign_note(scan: Scan, values: np.ndarray, where: str) -> list[str]:
    """A note when most voxels are ≤ 0 (median ≤ 0): the count of an inverted or z-scored scan
    may be wrong without any error (the bundled model was trained on positive intensities)."""
    if not values.size or values.min() >= 0:
        return []
    median = float(np.median(values))
    if median > 0:
        return []
    return [
        f"{scan.where}: the median intensity {where} is {median:.3g}; a scan with "
        "inverted sign is miscounted, and a z-scored one is counted right only by a model "
        "trained on z-scored scans"
    ]


def to_ras(scan: Scan) -> Scan:
    """The scan with its voxels in RAS order and the matching affine (no resampling)."""
    orientation = scan.ras_orientation
    if np.array_equal(orientation, RAS):
        return scan
    array = np.ascontiguousarray(apply_orientation(scan.array, orientation))
    return replace(scan, array=array, affine=ras_grid(scan.affine, scan.array.shape)[1])


def from_ras(volume: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """A volume in RAS order back in the voxel order that ``orientation`` took to RAS."""
    return np.ascontiguousarray(apply_orientation(volume, ornt_transform(RAS, orientation)))


def network_zoom(spacing, cfg: PreprocessConfig) -> np.ndarray | None:
    """Per axis, the network's voxel edge over the scan's, or None to use the scan as stored.

    Axes whose voxels lie inside the range the model was trained on (``spacing_range_mm``,
    2 % either side for rounding in headers) are kept; the others go to the model's typical
    voxel (``spacing_mm``, its training cohort's median, as nnU-Net resamples), or to the
    range's nearest end when the model does not say.
    """
    if cfg.spacing_range_mm is None:
        return None
    spacing = np.asarray(spacing, float)
    lo, hi = cfg.spacing_range_mm
    outside = (spacing < lo / 1.02) | (spacing > hi * 1.02)
    if not outside.any():
        return None
    typical = np.asarray(cfg.spacing_mm, float) if cfg.spacing_mm else np.clip(spacing, lo, hi)
    return np.where(outside, typical, spacing) / spacing


def resample(scan: Scan, zoom: np.ndarray) -> Scan:
    """The scan on a grid whose voxel edges are ``zoom`` times its own (voxel 0 kept), by
    linear interpolation; when coarsening, a Gaussian of (zoom − 1) / 2 voxels first, so
    that small lesions are averaged into the larger voxels as an acquisition would."""
    zoom = np.asarray(zoom, float)
    shape = tuple(int(np.floor((n - 1) / z + 1e-6)) + 1 for n, z in zip(scan.array.shape, zoom))
    if math.prod(shape) > MAX_VOXELS:
        raise HydranetError(
            f"{scan.where}: resampled to the model's voxels it would hold {'×'.join(map(str, shape))} "
            "voxels, too many to hold in memory; is the header's voxel size right?"
        )
    array = scan.array
    if np.any(zoom > 1):
        array = ndimage.gaussian_filter(array, np.maximum(zoom - 1, 0) / 2)
    out = ndimage.affine_transform(array, zoom, output_shape=shape, order=1)
    return replace(scan, array=out.astype(np.float32), affine=scan.affine @ np.diag([*zoom, 1.0]))


def ras_shape_of(shape, orientation: np.ndarray) -> tuple[int, int, int]:
    """The shape of a volume of ``shape`` put in RAS order by ``orientation``."""
    out = [0, 0, 0]
    for n, axis in zip(shape, orientation[:, 0]):
        out[int(axis)] = int(n)
    return tuple(out)


def ras_grid(affine: np.ndarray, shape) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of a volume (file ``affine`` and ``shape``) put in RAS order, without
    moving its voxels."""
    orientation = io_orientation(affine)
    shape = tuple(shape)[:3]
    return ras_shape_of(shape, orientation), np.asarray(affine, float) @ inv_ornt_aff(orientation, shape)


def _check_mask_grid(mask: Scan, scan: Scan) -> None:
    """Refuse a mask that does not lie on the scan's grid; the same grid stored in another
    voxel order (a mask saved from napari's RAS view) is the same grid."""
    where = mask.where
    mask_shape, mask_affine = ras_grid(mask.affine, mask.array.shape)
    scan_shape, scan_affine = ras_grid(scan.affine, scan.array.shape)
    if mask_shape != scan_shape:
        raise HydranetError(
            f"{where}: mask shape {mask.array.shape} differs from the scan's {scan.array.shape} "
            "(voxels along each file's i, j, k)"
        )
    if not np.allclose(mask_affine, scan_affine, atol=1e-3):
        apart = np.linalg.norm(corner_voxels(scan_shape) @ (mask_affine - scan_affine).T, axis=1).max()
        sizes = [np.linalg.norm(a[:3, :3], axis=0) for a in (mask_affine, scan_affine)]
        differ = (
            ""
            if np.allclose(*sizes, atol=1e-3)
            else (
                f"; voxels {'×'.join(f'{v:.2f}' for v in sizes[0])} mm against the scan's "
                f"{'×'.join(f'{v:.2f}' for v in sizes[1])}"
            )
        )
        unset = any("gives no orientation" in note for note in mask.notes)
        unset = "; the mask's header gives no orientation (qform and sform codes 0)" if unset else ""
        raise HydranetError(
            f"{where}: mask affine differs from the scan's ({scan.where}): the mask's voxels lie up "
            f"to {apart:.1f} mm from the scan's{differ}{unset}. "
            + (
                "Save the mask with the scan's header (it lies on the scan's voxels but for rounding)"
                if apart < 0.1 and not differ
                else "Resample the mask onto the scan with nearest-neighbour interpolation (e.g. "
                "nilearn.image.resample_to_img(mask, scan, interpolation='nearest')), or save it "
                "with the scan's header"
            )
        )
    if not mask.array.any():
        raise HydranetError(f"{where}: the mask is empty")
    if not np.any(mask.array > 0):
        raise HydranetError(
            f"{where}: no voxel of the mask is > 0 (its values are {mask.array.min() + 0:g} to "
            f"{mask.array.max() + 0:g}); an ROI mask marks the region with 1 (an int8 mask saved with "
            "255 reads as -1)"
        )


def _mask_note(mask: Scan) -> list[str]:
    """A note for a mask of more than one value besides 0 (a probability map, a label map):
    every voxel > 0 is taken as the ROI, which may be far more than the user meant."""
    values = mask.array
    inside = values[values != 0]
    if inside.min() == inside.max():  # 0/1, 0/255: one value marks the ROI
        return []
    share = float(np.mean(values > 0))
    return [
        f"{mask.where}: the ROI mask holds more values than 0 and one other ({values.min():g} to "
        f"{values.max():g}); every voxel > 0 is taken as the ROI ({share:.0%} of the volume). "
        "If it is a probability map, threshold it first"
    ]


def _resampled_mask(mask: Scan, zoom: np.ndarray) -> Scan:
    """The ROI on the network's grid: where the resampled mask (smoothed as scans are) is over
    one half, or, for an ROI thinner than the network's voxels, wherever it reaches."""
    weight = resample(replace(mask, array=(mask.array > 0).astype(np.float32)), zoom).array
    roi = weight > 0.5 if np.any(weight > 0.5) else weight > 1e-3
    if not roi.any():
        raise HydranetError(f"{mask.where}: the ROI mask vanishes on the network's grid")
    return replace(mask, array=roi.astype(np.uint8))


# Below this share of the ROI inside the network's input, a note says the network does not see the rest
CROP_NOTE_SHARE = 0.95


def _crop_note(mask: Scan, roi: np.ndarray, offset, crop_shape) -> list[str]:
    """A note when the crop leaves part of the ROI out, unseen by the network (a white-matter
    ROI is larger than the basal ganglia the default crop was made for)."""
    share = float(roi[_overlap(offset, crop_shape, roi.shape)[0]].sum()) / max(int(roi.sum()), 1)
    if share >= CROP_NOTE_SHARE:
        return []
    return [
        f"{mask.where}: the network's input ({'×'.join(map(str, crop_shape))} voxels) holds "
        f"{share:.0%} of the ROI mask; the network does not see the rest (a model trained with a "
        "larger --crop sees more, and trains more slowly)"
    ]


def prepare(scan: Scan, cfg: PreprocessConfig, mask: Scan | None = None) -> Prepared:
    """Scan (+ optional ROI mask on the same grid) → network input with its geometry."""
    mask_notes = []
    if mask is not None:
        _check_mask_grid(mask, scan)
        mask_notes = list(mask.notes) + _mask_note(mask)  # its reading notes (NaNs) too
        mask = to_ras(mask)
    top = float(scan.array.max())
    zeros = scan.array == 0
    if top > 0 and zeros.any() and bool(np.all(zeros | (scan.array == top))):  # one value: blank, below
        raise HydranetError(
            f"{scan.where}: holds only 0s and {top:g}s: an ROI or lesion mask, not a scan "
            "(are the scans and masks swapped?)"
        )
    source_shape, orientation = tuple(scan.array.shape), scan.ras_orientation
    scan = to_ras(scan)
    notes = list(scan.notes) + mask_notes
    texture = noise_texture(scan.array, None if mask is None else mask.array > 0)  # before resampling
    if not all(VOXEL_MM[0] <= v <= VOXEL_MM[1] for v in scan.spacing):
        raise HydranetError(
            f"{scan.where}: voxel size {'×'.join(f'{v:.4g}' for v in scan.spacing)} mm, outside "
            f"{VOXEL_MM[0]:g}–{VOXEL_MM[1]:g} mm; check the header's voxel size (pixdim) and its "
            "units (lengths in metres or microns are read as mm)"
        )
    zoom = network_zoom(scan.spacing, cfg)
    if zoom is not None:
        before = "×".join(f"{s:.3g}" for s in scan.spacing)
        scan = resample(scan, zoom)
        if mask is not None:
            mask = _resampled_mask(mask, zoom)
        notes.append(
            f"{scan.name}: {before} mm voxels resampled to {'×'.join(f'{s:.3g}' for s in scan.spacing)} mm "
            f"(the model was trained on {cfg.spacing_range_mm[0]:g}–{cfg.spacing_range_mm[1]:g} mm voxels)"
        )
    data = scan.array
    if mask is not None:
        roi = mask.array > 0
        inside = data[roi]
        _check_not_blank(scan, inside, f" inside the ROI mask ({plural(inside.size, 'voxel')})")
        box = int(np.prod(cfg.crop_shape)) if cfg.crop_shape is not None else data.size
        n_roi = int(roi.sum())
        if n_roi < ROI_NOTE_FRACTION * box:  # an ROI is a region, not a few lesions
            notes.append(
                f"{mask.where}: the ROI mask holds {n_roi} voxels, under "
                f"{ROI_NOTE_FRACTION:.0%} of the network's input; if it is a lesion mask, the count "
                "covers only those voxels"
            )
        weight = smooth_mask(roi, cfg.mask_dilation, cfg.mask_sigma)
        scaled = _rescaled(scan, roi, cfg) * weight
        notes += _sign_note(scan, inside, "inside the ROI mask")
        centre = np.array(ndimage.center_of_mass(roi))
    else:
        _check_not_blank(scan, data, "")
        if cfg.use_mask:
            notes.append(
                f"{scan.name}: no ROI mask given; the whole volume is used, though the model was "
                "trained on ROIs: counts are not comparable with masked ones"
            )
        scaled = _rescaled(scan, None, cfg)
        notes += _sign_note(scan, data[data != 0], "of the non-zero voxels")
        total = scaled.sum()
        if total > 0:
            centre = np.array(ndimage.center_of_mass(scaled))
        else:
            centre = (np.array(data.shape) - 1) / 2
    if cfg.crop_shape is not None:
        if any(n < c / 2 for n, c in zip(data.shape, cfg.crop_shape)):
            notes.append(
                f"{scan.name}: {'×'.join(map(str, data.shape))} voxels"
                f"{' once resampled' if zoom is not None else ''}, under half the network's "
                f"input ({'×'.join(map(str, cfg.crop_shape))}) on some axis; the count may mean little"
            )
        out, offset = crop_box(scaled, centre, cfg.crop_shape)
        if mask is not None:
            notes += _crop_note(mask, roi, offset, cfg.crop_shape)
    else:
        out, offset = scaled, (0, 0, 0)
    return Prepared(
        array=np.ascontiguousarray(out, dtype=np.float32),
        affine=shifted_affine(scan.affine, offset),
        offset=offset,
        source_shape=source_shape,
        name=scan.name,
        notes=notes,
        orientation=orientation,
        zoom=tuple(float(z) for z in zoom) if zoom is not None else (1.0, 1.0, 1.0),
        grid_shape=tuple(data.shape),
        texture=texture,
        texture_region="ROI" if mask is not None else "foreground",
    )
