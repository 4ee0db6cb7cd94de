"""npe2 writers: Image/Labels layers → NIfTI on the source scan's grid, Points → detections CSV.

Layers made by this plugin hold arrays in RAS order with reversed axes and the file's true
affine in ``metadata["affine"]`` (see ``_layers``). Writing puts them back in the file's voxel
order with that affine, so the files open aligned with the scan in ITK-SNAP, 3D Slicer or
FSLeyes. Other layers fall back to their napari affine, their axes reversed to (i, j, k).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._layers import file_affine, file_volume, shown_affine
from .errors import HydranetError
from .infer import DETECTION_COLUMNS
from .io import is_nifti, write_csv, write_volume


def _shown_affine(meta: dict) -> np.ndarray:
    """The layer's napari transform (data → world (z, y, x)), scale and translation included."""
    shown = shown_affine(meta)
    if shown.shape != (4, 4):
        raise HydranetError(f"layer '{meta.get('name')}': not a 3D layer; cannot write it as NIfTI")
    return shown


def write_volume_layer(path: str, data, meta: dict) -> list[str]:
    """Write one Image or Labels layer (3D) as NIfTI; returns the written path."""
    if not is_nifti(path):
        path = f"{path}.nii.gz"
    array = np.asarray(data)
    if array.ndim != 3:
        raise HydranetError(f"layer '{meta.get('name')}': {array.ndim}D data; only 3D layers are written")
    md = meta.get("metadata") or {}
    # never over the scan a heatmap came from, nor an intensity image over its own file (it would
    # come back as float32 with a new header); integer layers may be, e.g. a corrected mask
    protect = [md["source_path"]] if md.get("source_path") else []
    if md.get("path") and not np.issubdtype(array.dtype, np.integer):
        protect.append(md["path"])
    write_volume(path, *file_volume(array, meta), protect=protect)
    return [str(path)]


def detection_rows(data, meta: dict) -> list[list]:
    """Rows in the engine's detections format from Points data and features: world positions
    from the layer's napari affine, voxel indices of the source file from its affine."""
    shown = _shown_affine(meta)  # a 3D layer's, or a clear error
    affine = file_affine(meta)
    md = meta.get("metadata") or {}
    scan = md.get("source") or meta.get("name") or "scan"
    points = np.asarray(data, float).reshape(-1, 3)
    world = (points @ shown[:3, :3].T + shown[:3, 3])[:, ::-1]  # (x, y, z) mm
    to_file = np.linalg.inv(affine)
    features = meta.get("features")
    n = len(points)

    def column(name, default):
        if features is not None and name in getattr(features, "columns", ()):
            return list(features[name])
        return [default(i) for i in range(n)]

    lesions = column("lesion", lambda i: i + 1)
    sizes = column("size", lambda i: "")
    scores = column("score", lambda i: "")
    voxel_mm3 = abs(float(np.linalg.det(affine[:3, :3])))  # for points without a size_mm3
    volumes = column("size_mm3", lambda i: float(sizes[i]) * voxel_mm3 if sizes[i] != "" else "")
    rows = []
    for xyz, lesion, size, score, size_mm3 in zip(world, lesions, sizes, scores, volumes):
        ijk = np.round(to_file[:3, :3] @ xyz + to_file[:3, 3], 6)
        size_mm3 = float(size_mm3) if size_mm3 != "" else ""
        size = int(size) if size != "" else ""
        score = float(score) if score != "" else ""
        rows.append([scan, int(lesion), *ijk, *xyz, size, score, size_mm3])
    return rows


def write_points_layer(path: str, data, meta: dict) -> list[str]:
    """Write one Points layer as a detections CSV (scan,lesion,i,j,k,x,y,z,size,score,size_mm3)."""
    if not str(path).lower().endswith(".csv"):
        path = f"{path}.csv"
    write_csv(Path(path), DETECTION_COLUMNS, detection_rows(data, meta))
    return [str(path)]
