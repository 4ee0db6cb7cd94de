"""Core results → napari layer-data tuples, with the scan's geometry.

napari gets every volume in RAS voxel order (the file's axes permuted and flipped to those
nearest R, A, S, never resampled; as the networks see it) with its axes reversed, (S, A, R),
and the matching affine (world axes z, y, x in mm): the default view is an axial slice with
a slider over S, and napari's 2D slicing, which cannot show a plane that cuts across the
data's axes, works for scans stored sagittally or coronally too. The file's own affine is
kept in ``metadata["affine"]``; ``from_display`` puts layer data back in the file's order.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, io_orientation

from .infer import Prediction
from .io import Scan
from .preprocess import from_ras, ras_grid

TRANSFORM_KEYS = ("affine", "scale", "translate", "rotate", "shear")  # a layer's data → world parts
_TIME_UNITS = {"sec": "s", "msec": "ms", "usec": "us"}  # NIfTI's time units in napari's words
# Share of neighbouring non-zero voxel pairs of one value above which a volume is a label map:
# in a lesion-ID map or a segmentation only region borders differ; in a scan, noise.
LABEL_MAP_SAME = 0.9
_REVERSE = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)


def camera_of(viewer):
    """The viewer's camera: napari 0.9 moved it from ``viewer.camera`` to ``viewer.scene``."""
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera


def brain_view(viewer) -> None:
    """Anterior at the top of axial slices (superior at the top of the others), as scans are
    read, instead of napari's default of the first display axis pointing down."""
    camera_of(viewer).orientation2d = ("up", "right")


def napari_affine(affine: np.ndarray) -> np.ndarray:
    """Voxel affine (i, j, k → x, y, z) → napari affine ((k, j, i) → (z, y, x))."""
    return _REVERSE @ np.asarray(affine, float) @ _REVERSE


def shown_affine(state: dict) -> np.ndarray:
    """A 3D layer's whole data → world (z, y, x) matrix from its state (``as_layer_data_tuple``
    or a writer's ``meta``): its ``affine`` after its ``scale``, ``translate``, ``rotate`` and
    ``shear``; the identity when the state holds none of them."""
    from napari.utils.transforms import Affine

    affine = state.get("affine")
    affine = np.eye(4) if affine is None else np.asarray(getattr(affine, "affine_matrix", affine), float)
    parts = {k: state[k] for k in TRANSFORM_KEYS[1:] if state.get(k) is not None}
    return affine @ Affine(**parts, ndim=affine.shape[0] - 1).affine_matrix


def display_affine(affine: np.ndarray, shape, straighten: bool = True) -> np.ndarray:
    """napari affine of a volume with file affine ``affine`` and file shape ``shape``, shown
    by ``to_display``; an oblique grid is shown straightened (``straightened``) unless
    ``straighten`` is False (the overlays of a layer that napari shows tilted)."""
    ras_affine = ras_grid(affine, shape)[1]
    return napari_affine(straightened(ras_affine) if straighten else ras_affine)


def straightened(ras_affine: np.ndarray) -> np.ndarray:
    """An oblique RAS grid's affine with its rotation undone about the scanner's origin: the
    voxel sizes kept, and scans that share a tilt (one session's) still overlay each other.
    napari slices a volume only along its data axes: with a tilted affine it showed the image
    turned but drew no detection on it (and the status bar read another voxel); straightened,
    every layer of the scan lines up again, and napari's coordinates are the scanner's turned
    back by the tilt (``tilt_note``)."""
    matrix = ras_affine[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    if np.allclose(matrix, np.diag(spacing), rtol=0, atol=1e-6 * spacing.max()):
        return ras_affine
    out = np.diag([*spacing, 1.0])
    out[:3, 3] = np.linalg.solve(matrix / spacing, ras_affine[:3, 3])
    return out


def tilt_degrees(affine: np.ndarray) -> float:
    """The largest angle between a voxel axis and the scanner axis nearest it."""
    matrix = np.asarray(affine, float)[:3, :3]
    cosines = np.abs(matrix / np.linalg.norm(matrix, axis=0)).max(axis=0)
    return float(np.degrees(np.arccos(np.clip(cosines.min(), -1, 1))))


def tilt_note(name: str, affine: np.ndarray) -> list[str]:
    """What napari's view of an oblique scan (``straightened``) means for its coordinates."""
    tilt = tilt_degrees(affine)
    if tilt < 0.5:  # under 1 mm off at 10 cm from the centre
        return []
    return [
        f"{name}: an oblique scan ({tilt:.1f}° from the scanner axes), shown straightened so "
        "that its overlays line up: napari's coordinates are the scanner's turned back by the "
        "tilt; the tables and the Predict dock give scanner mm"
    ]


def scanner_mm(point, affine: np.ndarray, shape) -> np.ndarray:
    """Scanner (x, y, z) mm of a point given in the data coordinates of ``to_display``'s
    output, for a file volume of ``shape`` with affine ``affine``: what the tables give,
    whatever napari shows (``straightened``)."""
    ras_affine = ras_grid(affine, shape)[1]
    return ras_affine[:3, :3] @ np.asarray(point, float)[::-1] + ras_affine[:3, 3]


def display_shape(shape, affine: np.ndarray) -> tuple[int, int, int]:
    """Shape of ``to_display``'s output for a file volume of ``shape``."""
    return ras_grid(affine, shape)[0][::-1]


def to_display(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """File-order volume (i, j, k[, t]) → napari data: RAS order, axes reversed."""
    ras = apply_orientation(volume, io_orientation(affine))
    return np.ascontiguousarray(np.transpose(ras, tuple(range(ras.ndim))[::-1]))


def from_display(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Inverse of ``to_display`` for a 3D volume of the file with affine ``affine``."""
    return from_ras(np.transpose(data, (2, 1, 0)), io_orientation(affine))


def file_affine(state: dict) -> np.ndarray:
    """The voxel (i, j, k) → world (x, y, z) matrix of a 3D layer's file. ``state`` holds the
    layer's ``metadata`` and transform (``as_layer_data_tuple`` or a writer's ``meta``). Our
    layers keep it in ``metadata["affine"]``; any other is taken as shown, from its napari
    transform with the axes reversed (the permutation is its own inverse)."""
    true = (state.get("metadata") or {}).get("affine")
    return np.asarray(true, float) if true is not None else napari_affine(shown_affine(state))


def layer_transform(layer) -> dict:
    """A layer's transform as a state dict, for ``shown_affine``."""
    return {k: getattr(layer, k) for k in TRANSFORM_KEYS}


def adopt_scan_geometry(state: dict, layers, shape: tuple | None = None) -> dict:
    """The state of a layer made in napari over our layers, with their file geometry: napari's
    "new labels" and "new points" copy the scan layer's transform but not its metadata, so
    without it the layer would be written in napari's voxel order. The open layers with a file
    affine, the same shown transform and (for a volume of ``shape``) the same shape must agree
    on that affine; the scan file is named only when they come from one (two subjects on one
    template grid leave it unnamed). With none, or affines that differ, ``state`` is returned
    as it is."""
    if (state.get("metadata") or {}).get("affine") is not None:
        return state
    shown = shown_affine(state)
    matches = []
    for layer in layers:
        md = layer.metadata or {}
        if md.get("affine") is None or md.get("series") or layer.ndim != shown.shape[0] - 1:
            continue
        if shape is not None and tuple(np.shape(layer.data)) != tuple(shape):
            continue
        if np.allclose(shown_affine(layer_transform(layer)), shown, atol=1e-6):
            matches.append(md)
    if not matches:
        return state
    affines = [np.asarray(md["affine"], float) for md in matches]
    if any(not np.allclose(a, affines[0], atol=1e-3) for a in affines[1:]):
        return state
    adopted = {"affine": matches[0]["affine"]}
    files = {md.get("path") or md.get("source_path") for md in matches if md.get("kind") != "mask"}
    if len(files) == 1 and None not in files:  # one scan (and its overlays) on this grid
        (path,) = files
        adopted.update(source=Path(path).name, source_path=path)
    return {**state, "metadata": {**(state.get("metadata") or {}), **adopted}}


def file_volume(data: np.ndarray, state: dict) -> tuple[np.ndarray, np.ndarray]:
    """A 3D layer's data → (the volume in its file's voxel order, ``file_affine``)."""
    affine = file_affine(state)
    if (state.get("metadata") or {}).get("affine") is not None:
        return from_display(data, affine), affine
    return np.transpose(data, (2, 1, 0)), affine


def series_layer(path, name: str) -> tuple:
    """A 4D NIfTI (i, j, k, t) as one layer (t, S, A, R), for viewing only: counting needs
    one 3D volume, and the engine refuses series with a message naming the file."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:4])
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    affine = np.eye(5)
    affine[1:, 1:] = display_affine(img.affine, img.shape)
    time_unit = _TIME_UNITS.get(img.header.get_xyzt_units()[1], "pixel")
    step = float(img.header.get_zooms()[3]) if len(img.header.get_zooms()) > 3 else 0.0
    if time_unit != "pixel" and step > 0:
        affine[0, 0] = step  # the repetition time: the slider reads in its unit
    else:
        time_unit = "pixel"  # volume numbers
    lo, hi = np.percentile(data, [0.5, 99.5])
    meta = {"affine": np.asarray(img.affine).tolist(), "path": str(path), "series": True}
    return (
        to_display(data, img.affine),
        {
            "name": name,
            "affine": affine,
            "metadata": meta,
            "colormap": "gray",
            "contrast_limits": [float(lo), float(hi) if hi > lo else float(lo) + 1],
            # mm like the scans' layers (napari warns of mixed units and drops them otherwise)
            "units": (time_unit, "mm", "mm", "mm"),
        },
        "image",
    )


def _scan_meta(scan: Scan, **extra) -> dict:
    """A file layer's metadata: its file's true affine, path and reading notes."""
    return {
        "affine": scan.affine.tolist(),
        "path": str(scan.path) if scan.path else None,
        "notes": scan.notes,
        **extra,
    }


def _prediction_meta(pred: Prediction, affine: np.ndarray, kind: str, **extra) -> dict:
    """An overlay's metadata: the scan file's affine, which scan and what the model counted."""
    return {
        "affine": np.asarray(affine).tolist(),
        "source": pred.scan,
        "source_path": str(pred.path) if pred.path else None,
        "kind": kind,
        "count": pred.count,
        "count_sd": pred.count_sd,
        **extra,
    }


def scan_layer(scan: Scan) -> tuple:
    lo, hi = np.percentile(scan.array, [0.5, 99.5]) if scan.array.size else (0, 1)
    return (
        to_display(scan.array, scan.affine),
        {
            "name": scan.name,
            "affine": display_affine(scan.affine, scan.array.shape),
            "metadata": _scan_meta(scan),
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


def is_label_map(array: np.ndarray, declared: bool = False) -> bool:
    """A volume of whole numbers ≥ 0, mostly 0, whose neighbouring non-zero voxels nearly all
    share a value: a lesion-ID map or a segmentation, not a scan (whose neighbours differ by
    their noise). ``declared``: the header says labels (its intent), so whole numbers ≥ 0 do."""
    if not array.size or array.min() < 0 or array.max() > np.iinfo(np.int32).max:
        return False
    if not declared and np.count_nonzero(array) > array.size / 2:  # cheap, and most scans stop here
        return False
    sample = array.ravel()[:: max(1, array.size // 100_000)]  # a fraction of a scan shows its decimals
    if not np.array_equal(sample, np.round(sample)) or not np.array_equal(array, np.round(array)):
        return False
    if declared:
        return True
    pairs = same = 0
    part = array[..., ::4] if array.ndim == 3 and array.shape[2] >= 16 else array  # every 4th slice
    for axis in range(array.ndim):
        view = np.moveaxis(array if axis == 2 else part, axis, 0)
        a, b = view[:-1], view[1:]
        both = (a != 0) & (b != 0)
        pairs += int(both.sum())
        same += int((both & (a == b)).sum())
    return pairs > 0 and same >= LABEL_MAP_SAME * pairs


def mask_layer(scan: Scan) -> tuple:
    """A mask or label map as a Labels layer, so that it overlays a scan and is offered as a
    mask (every voxel > 0 the ROI)."""
    dtype = np.uint8 if scan.array.max() <= 255 else np.int32
    data = to_display(scan.array.astype(dtype), scan.affine)
    affine = display_affine(scan.affine, scan.array.shape)
    kwargs = {"name": scan.name, "affine": affine, "metadata": _scan_meta(scan, kind="mask"), "opacity": 0.3}
    return data, dict(kwargs, units="mm"), "labels"


def heatmap_layer(pred: Prediction, affine: np.ndarray, name: str, straighten: bool = True) -> tuple:
    heat = pred.source_heatmap()
    top = float(np.percentile(heat[heat > 0], 99.9)) if np.any(heat > 0) else 1.0
    return (
        to_display(heat, affine),
        {
            "name": name,
            "affine": display_affine(affine, heat.shape, straighten),
            "metadata": _prediction_meta(pred, affine, "heatmap"),
            "colormap": "inferno",
            "blending": "additive",
            "contrast_limits": [0.0, top],
            "opacity": 0.8,
            "units": "mm",
        },
        "image",
    )


def detections_layer(pred: Prediction, affine: np.ndarray, name: str, straighten: bool = True) -> tuple:
    dets = pred.result.detections if pred.result else []
    ras = pred.prepared.to_ras_index(np.array([d.centre for d in dets], float).reshape(-1, 3))
    features = {
        "lesion": np.arange(1, len(dets) + 1),
        "size": np.array([d.size for d in dets], int),  # voxels of the network's grid
        "size_mm3": np.array([d.size * pred.prepared.voxel_mm3 for d in dets], float),
        "score": np.array([d.score for d in dets], float),
    }
    threshold = pred.result.threshold if pred.result else None
    data = ras[:, ::-1].copy()
    # where each numbered detection was put, so that the writer can tell the points a user
    # moved (napari gives an added point the features of the last selected one, but no text)
    detected = [[int(n), *map(float, p)] for n, p in zip(features["lesion"], data)]
    return (
        data,
        {
            "name": name,
            "affine": display_affine(affine, pred.prepared.source_shape, straighten),
            "metadata": _prediction_meta(pred, affine, "detections", threshold=threshold, detected=detected),
            "features": features,
            "size": 4,
            "symbol": "ring",
            "face_color": "transparent",
            "border_color": "cyan",
            # the number of each ring, as in the dock's "lesion i/n" and the detections CSV,
            # beside the ring (over it, the digits could not be read at the default zoom); a
            # point the user adds gets none, and the CSV a new number
            "text": {
                "string": {"array": [str(n) for n in features["lesion"]], "default": ""},
                "color": "cyan",
                "size": 10,
                "anchor": "upper_left",
                "translation": [0, 3, 3],
            },
            "projection_mode": "all",
            "units": "mm",
        },
        "points",
    )


def prediction_layers(scan: Scan, pred: Prediction, mask: Scan | None = None) -> list[tuple]:
    """The scan, its ROI ``mask`` (hidden; the Predict dock takes it as the ROI), its heatmap
    and its detections, named after the scan."""
    shown_mask = []
    if mask is not None:
        data, kwargs, kind = mask_layer(mask)
        shown_mask = [(data, dict(kwargs, visible=False), kind)]
    return [
        scan_layer(scan),
        *shown_mask,
        heatmap_layer(pred, scan.affine, f"{scan.name} heatmap"),
        detections_layer(pred, scan.affine, f"{scan.name} detections"),
    ]
