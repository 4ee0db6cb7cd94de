"""npe2 reader: NIfTI files → Image layers with the scan's geometry (see ``_layers``); binary
volumes (ROI or lesion masks) and label maps (lesion IDs, segmentations) → Labels layers."""

from __future__ import annotations

import functools
import os
import warnings

import nibabel as nib

from ._layers import is_label_map, is_mask, mask_layer, scan_layer, series_layer, tilt_note
from .errors import HydranetError
from .io import find_scans, gzip_misnamed, is_nifti, read_scan, scan_stem

# A folder opened in napari gives its scans as layers up to this many; counting more is the
# Cohort dock's work (one layer each would fill the memory with real scans).
MAX_FOLDER_LAYERS = 12


def napari_get_reader(path):
    """Return a reader for one NIfTI path (or a list of them, or a folder holding them),
    else None; never raises."""
    if isinstance(path, str) and os.path.isdir(path):
        try:
            scans = [str(p) for p in find_scans([path])]
        except (HydranetError, OSError):  # no NIfTI file in it, or unreadable: not ours
            return None
        return functools.partial(read_folder, path, scans)
    paths = [path] if isinstance(path, str) else list(path) if isinstance(path, (list, tuple)) else []
    if not paths or not all(isinstance(p, str) and is_nifti(p) for p in paths):
        return None
    for p in paths:
        try:  # header only: a file nibabel cannot parse, or a CIFTI file, is not ours to claim
            if gzip_misnamed(p):  # ours: read_scan says how to rename it
                continue
            if not isinstance(nib.load(p), (nib.Nifti1Image, nib.Nifti2Image)):
                return None
        except Exception:
            return None
    return read_nifti


def read_folder(folder: str, scans: list[str], _path=None):
    """A folder's scans (not its subfolders'), each as ``read_nifti`` gives it."""
    if len(scans) > MAX_FOLDER_LAYERS:
        raise HydranetError(
            f"{folder}: {len(scans)} NIfTI files; napari opens up to {MAX_FOLDER_LAYERS} of a folder. Count "
            "a whole folder with Plugins › napari-hydranet › Cohort (a row opens its scan), or "
            "open scans one by one"
        )
    return read_nifti(scans)


def _labelled(path: str) -> bool:
    """Whether the header's intent says the file holds labels (NIFTI_INTENT_LABEL)."""
    try:
        return nib.load(path).header.get_intent()[0] == "label"
    except Exception:  # an unknown intent code: read_scan has read the file, so not a label map
        return False


def read_nifti(path):
    paths = [path] if isinstance(path, str) else list(path)
    layers = []
    for p in paths:
        try:
            shape = nib.load(p).shape
        except Exception:  # a gzipped .nii, say: read_scan says what is wrong with it
            shape = ()
        if len(shape) == 4 and shape[3] > 1:  # a series: shown, not counted
            layers.append(series_layer(p, scan_stem(p)))
            for note in tilt_note(scan_stem(p), layers[-1][1]["metadata"]["affine"]):
                warnings.warn(note, stacklevel=2)
        else:
            scan = read_scan(p)
            mask = is_mask(scan.array) or is_label_map(scan.array, declared=_labelled(p))
            tilted = [] if mask else tilt_note(scan.name, scan.affine)  # said once, of the scan
            for note in scan.notes + tilted:  # napari shows them as notifications
                warnings.warn(note, stacklevel=2)
            layers.append(mask_layer(scan) if mask else scan_layer(scan))
    return layers
