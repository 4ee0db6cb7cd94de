"""npe2 writers: Image/Labels layers → NIfTI on the source scan's grid, Points → detections CSV.

Layers made by this plugin hold arrays in RAS order with reversed axes and the file's true
affine in ``metadata["affine"]`` (see ``_layers``). Writing puts them back in the file's voxel
order with that affine, so the files open aligned with the scan in ITK-SNAP, 3D Slicer or
FSLeyes. A layer made in napari over one of our scans (new labels, new points) takes that
scan's geometry (``adopt_scan_geometry``); other volumes fall back to their napari affine,
their axes reversed to (i, j, k), and other points get no voxel indices.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ._layers import adopt_scan_geometry, file_affine, file_volume, shown_affine
from .errors import HydranetError
from .infer import DETECTION_COLUMNS, rounded
from .io import is_nifti, write_csv, write_volume


def _with_scan_geometry(meta: dict, shape: tuple | None = None) -> dict:
    """``meta`` with the file geometry of the open scan the layer was made over, if any."""
    import napari

    viewer = napari.current_viewer()
    return adopt_scan_geometry(meta, viewer.layers if viewer is not None else [], shape)


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
    meta = _with_scan_geometry(meta, array.shape)
    md = meta.get("metadata") or {}
    if md.get("affine") is None:
        warnings.warn(
            f"layer '{meta.get('name')}': no scan opened with napari-hydranet lies under it, so it is "
            "saved as napari shows it (its affine, its voxel order)",
            stacklevel=2,
        )
    # never over the scan a heatmap came from, nor an intensity image over its own file (it would
    # come back as float32 with a new header); integer layers may be, e.g. a corrected mask
    protect = [md["source_path"]] if md.get("source_path") else []
    if md.get("path") and not np.issubdtype(array.dtype, np.integer):
        protect.append(md["path"])
    like = md.get("source_path") or md.get("path")  # the scan's file: its space codes are kept
    write_volume(path, *file_volume(array, meta), protect=protect, like=like)
    return [str(path)]


def detection_rows(data, meta: dict) -> list[list]:
    """Rows in the engine's detections format from Points data and features: world positions
    from the layer's napari affine, voxel indices of the source file from its affine (left
    empty, with a warning, for points with no scan file behind them). In a detections layer of
    ours, points moved by hand keep their drawn number, points added by hand get a new one,
    and neither has a size or score."""
    shown = _shown_affine(meta)  # a 3D layer's, or a clear error
    md = meta.get("metadata") or {}
    if md.get("affine") is None:
        warnings.warn(
            f"layer '{meta.get('name')}': no scan file behind these points, so their voxel indices "
            "(i, j, k) are left empty; draw them over a scan opened with napari-hydranet",
            stacklevel=2,
        )
    affine = file_affine(meta)
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

    lesions = [int(x) for x in column("lesion", lambda i: i + 1)]
    sizes = column("size", lambda i: "")
    scores = column("score", lambda i: "")
    voxel_mm3 = abs(float(np.linalg.det(affine[:3, :3])))  # for points without a size_mm3
    volumes = column("size_mm3", lambda i: float(sizes[i]) * voxel_mm3 if sizes[i] != "" else "")
    detected = md.get("detected")
    drawn = _drawn_numbers(meta, n) if detected is not None else None
    if drawn is not None:  # the numbers the user sees (None beside a point added by hand)
        lesions = drawn
    last = max([*(x for x in lesions if x is not None), *(int(d[0]) for d in detected or [])], default=0)
    numbers = iter(range(last + 1, last + n + 1))  # never one the model gave
    for i in np.flatnonzero(~_as_detected(points, lesions, detected)):  # added or moved by hand
        sizes[i], scores[i], volumes[i] = "", "", ""
        if drawn is None or lesions[i] is None:  # a moved ring keeps the number drawn beside it
            lesions[i] = next(numbers)
    rows = []
    for xyz, lesion, size, score, size_mm3 in zip(world, lesions, sizes, scores, volumes):
        ijk = rounded(to_file[:3, :3] @ xyz + to_file[:3, 3]) if md.get("affine") is not None else [""] * 3
        size_mm3 = float(size_mm3) if size_mm3 != "" else ""
        size = int(size) if size != "" else ""
        score = float(score) if score != "" else ""
        rows.append([scan, lesion, *ijk, *rounded(xyz), size, score, size_mm3])
    return rows


def _drawn_numbers(meta: dict, n: int) -> list[int | None] | None:
    """The numbers drawn beside a detections layer's points (None where a point added by hand
    has none), or None when the layer's text is not such a list."""
    string = (meta.get("text") or {}).get("string")
    array = string.get("array") if isinstance(string, dict) else None
    if array is None or len(array) != n:
        return None
    return [int(s) if str(s).strip().isdigit() else None for s in array]


def _as_detected(points: np.ndarray, lesions: list[int | None], detected: list | None) -> np.ndarray:
    """Which points are still where the model put the detection whose number they carry; the
    others were added or moved by hand, and their copied size and score mean nothing."""
    if detected is None:  # not a detections layer of ours: its features are what they are
        return np.ones(len(points), bool)
    where = {int(d[0]): np.asarray(d[1:], float) for d in detected}
    kept, taken = np.zeros(len(points), bool), set()
    for i, (point, lesion) in enumerate(zip(points, lesions)):
        if lesion in where and lesion not in taken and np.allclose(point, where[lesion], atol=1e-3):
            kept[i] = True
            taken.add(lesion)
    return kept


def write_points_layer(path: str, data, meta: dict) -> list[str]:
    """Write one Points layer as a detections CSV (scan,lesion,i,j,k,x,y,z,size,score,size_mm3)."""
    if not str(path).lower().endswith(".csv"):
        path = f"{path}.csv"
    write_csv(Path(path), DETECTION_COLUMNS, detection_rows(data, _with_scan_geometry(meta)))
    return [str(path)]
