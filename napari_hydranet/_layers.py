"""Core results → napari layer-data tuples, with the scan's geometry.

napari gets arrays transposed to (k, j, i), so the default view is an axial slice with a
slider over k, and a matching affine (world axes z, y, x in mm). The file's own affine is
kept in ``metadata["affine"]`` for writing back.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from .infer import Prediction
from .io import Scan

_REVERSE = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)


def napari_affine(affine: np.ndarray) -> np.ndarray:
    """File affine (i, j, k → x, y, z) → napari affine ((k, j, i) → (z, y, x))."""
    return _REVERSE @ np.asarray(affine, float) @ _REVERSE


def to_display(volume: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(volume, (2, 1, 0)))


def series_layer(path, name: str) -> tuple:
    """A 4D NIfTI (i, j, k, t) as one layer (t, k, j, i), for viewing only: counting needs
    one 3D volume, and the engine refuses series with a message naming the file."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:4])
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    affine = np.eye(5)
    affine[1:, 1:] = napari_affine(img.affine)
    lo, hi = np.percentile(data, [0.5, 99.5])
    meta = {"affine": np.asarray(img.affine).tolist(), "path": str(path), "series": True}
    return (
        np.ascontiguousarray(np.transpose(data, (3, 2, 1, 0))),
        {
            "name": name,
            "affine": affine,
            "metadata": meta,
            "colormap": "gray",
            "contrast_limits": [float(lo), float(hi) if hi > lo else float(lo) + 1],
        },
        "image",
    )


def scan_layer(scan: Scan) -> tuple:
    lo, hi = np.percentile(scan.array, [0.5, 99.5]) if scan.array.size else (0, 1)
    meta = {
        "affine": scan.affine.tolist(),
        "path": str(scan.path) if scan.path else None,
        "notes": scan.notes,
    }
    return (
        to_display(scan.array),
        {
            "name": scan.name,
            "affine": napari_affine(scan.affine),
            "metadata": meta,
            "contrast_limits": [float(lo), float(hi) if hi > lo else float(lo) + 1],
            "colormap": "gray",
            "units": "mm",
        },
        "image",
    )


def is_mask(array: np.ndarray) -> bool:
    """A volume holding only 0s and 1s (an empty one too): an ROI or lesion mask, not a scan."""
    if not array.size or array.max() > 1 or array.min() < 0:
        return False
    return bool(np.all((array == 0) | (array == 1)))


def mask_layer(scan: Scan) -> tuple:
    """A binary volume as a Labels layer, so that it overlays a scan and is offered as a mask."""
    meta = {
        "affine": scan.affine.tolist(),
        "path": str(scan.path) if scan.path else None,
        "notes": scan.notes,
        "kind": "mask",
    }
    data = to_display(scan.array.astype(np.uint8))
    kwargs = {"name": scan.name, "affine": napari_affine(scan.affine), "metadata": meta, "opacity": 0.3}
    return data, dict(kwargs, units="mm"), "labels"


def heatmap_layer(pred: Prediction, affine: np.ndarray, name: str) -> tuple:
    heat = pred.source_heatmap()
    top = float(np.percentile(heat[heat > 0], 99.9)) if np.any(heat > 0) else 1.0
    meta = {
        "affine": np.asarray(affine).tolist(),
        "source": pred.scan,
        "source_path": str(pred.path) if pred.path else None,
        "kind": "heatmap",
        "count": pred.count,
        "count_sd": pred.count_sd,
    }
    return (
        to_display(heat),
        {
            "name": name,
            "affine": napari_affine(affine),
            "metadata": meta,
            "colormap": "inferno",
            "blending": "additive",
            "contrast_limits": [0.0, top],
            "opacity": 0.8,
            "units": "mm",
        },
        "image",
    )


def detections_layer(pred: Prediction, affine: np.ndarray, name: str) -> tuple:
    dets = pred.result.detections if pred.result else []
    ijk = np.array([pred.prepared.to_source_index(d.centre) for d in dets]).reshape(-1, 3)
    features = {
        "lesion": np.arange(1, len(dets) + 1),
        "size": np.array([d.size for d in dets], int),
        "score": np.array([d.score for d in dets], float),
    }
    meta = {
        "affine": np.asarray(affine).tolist(),
        "source": pred.scan,
        "kind": "detections",
        "count": pred.count,
        "count_sd": pred.count_sd,
        "threshold": pred.result.threshold if pred.result else None,
    }
    return (
        ijk[:, ::-1].copy(),
        {
            "name": name,
            "affine": napari_affine(affine),
            "metadata": meta,
            "features": features,
            "size": 4,
            "symbol": "ring",
            "face_color": "transparent",
            "border_color": "cyan",
            "projection_mode": "all",
            "units": "mm",
        },
        "points",
    )


def prediction_layers(scan: Scan, pred: Prediction) -> list[tuple]:
    """The scan, its heatmap and its detections, named after the scan."""
    return [
        scan_layer(scan),
        heatmap_layer(pred, scan.affine, f"{scan.name} heatmap"),
        detections_layer(pred, scan.affine, f"{scan.name} detections"),
    ]
