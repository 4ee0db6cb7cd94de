"""The record of a counts table, written beside it (``counts.csv`` → ``counts.json``, as BIDS
describes a table in a JSON file of its name) by ``predict`` and by the Cohort dock's export:
the model and its weights' SHA-256, the settings, the software and what each column holds, so
that a table can be traced to what made it."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
from pathlib import Path

import nibabel
import numpy as np
import torch

from . import __version__
from .errors import HydranetError
from .io import atomic_write_bytes
from .models import DIGEST, WEIGHTS, Model
from .text import json_safe

WRITTEN_BY = "napari-hydranet predict"
COHORT_WRITTEN_BY = "napari-hydranet Cohort dock"

# What each column of the counts table holds (``infer.COUNT_COLUMNS``); "" where the model has no heatmap.
COLUMNS = {
    "scan": "the scan's file name",
    "count": "the model's count (in unit), the mean over the test-time flips; empty when not counted",
    "count_sd": "standard deviation of the count over the test-time flips (ddof 1): the model's "
    "stability under flipping, not a measurement error; 0 with one flip",
    "detections": "lesions found at the count-consistent threshold: the achievable number nearest "
    "the count (connected components can make it differ by one)",
    "threshold": "that threshold, on the heatmap smoothed by one voxel (with --intensity-weight w, "
    "on (1 - w) × that + w × the scan's rescaled intensities)",
    "unit": "the count's unit",
    "path": "the scan file as given",
    "notes": "what was noted of the scan, '; '-separated; 'not counted: ' and the reason for a scan "
    "that could not be predicted",
}

# The Cohort dock's exported table (``_widgets.cohort.EXPORT_COLUMNS``).
COHORT_COLUMNS = {
    **{c: COLUMNS[c] for c in ("scan", "count", "count_sd", "detections")},
    "label": "the label of the scan: the labels table's, or the user's correction of it in the dock",
    "corrected": "1 where the user typed the label in the dock, 0 where it is the labels table's",
    **{c: COLUMNS[c] for c in ("unit", "notes")},
}


def record_path(out_csv: str | Path) -> Path:
    """Where the record of the table ``out_csv`` goes: ``counts.csv`` → ``counts.json``; a
    name without .csv keeps its suffix (``run.v1`` → ``run.v1.json``)."""
    out = Path(out_csv)
    return out.with_suffix(".json") if out.suffix.lower() == ".csv" else out.with_name(out.name + ".json")


def check_record_output(out_csv: str | Path, *others: str | Path | None) -> Path:
    """Refuse to overwrite a file beside the table that an earlier run did not write, or one
    of the run's other outputs (``others``: the detections table, the heatmaps folder)."""
    path = record_path(out_csv)
    if Path(out_csv).suffix.lower() == ".json":
        raise HydranetError(f"{out_csv}: the counts table is a comma-separated table; name it .csv")
    taken = [o for o in others if o is not None and Path(o).resolve() == path.resolve()]
    if taken:
        raise HydranetError(
            f"{taken[0]}: is where the run's record goes ({path.name}, beside the counts table); "
            "name it otherwise"
        )
    if path.is_dir() or (path.exists() and _written_by(path) not in (WRITTEN_BY, COHORT_WRITTEN_BY)):
        raise HydranetError(
            f"{path}: exists and is not the record of a hydranet predict run, which is written beside "
            "its counts table; choose another name for the table, or move that file"
        )
    return path


def _written_by(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("written_by")
    except (OSError, ValueError, AttributeError):
        return None


def weights_digest(model: Model) -> str | None:
    """The SHA-256 of the model's weights file (older models do not record it in their config)."""
    if model.config.get(DIGEST):
        return model.config[DIGEST]
    return file_sha256(model.path / WEIGHTS) if model.path is not None else None


def file_sha256(path) -> str | None:
    """A file's SHA-256, or None where it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def software_versions() -> dict:
    """The versions a run's numbers depend on, for its record (and a model's config)."""
    return {
        "napari_hydranet": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "nibabel": nibabel.__version__,
    }


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def run_settings(masks_dir, device, flips: int = 8, intensity_weight: float = 0.0) -> dict:
    """The settings a run's counts depend on, for its record (``predict_file``'s defaults);
    without ROI masks, whole volumes are counted."""
    return {
        "masks": str(masks_dir) if masks_dir else None,
        "whole_volume": not masks_dir,
        "device": str(device),
        "flips": flips,
        "intensity_weight": intensity_weight,
    }


def start_record(
    model: Model,
    n_scans: int,
    settings: dict,
    command: str | None = None,
    written_by: str = WRITTEN_BY,
    columns: dict = COLUMNS,
) -> dict:
    """A run's record as it begins; ``finish_record`` completes it."""
    training = model.config.get("training") or {}
    return {
        "written_by": written_by,
        "version": __version__,
        "command": command,
        "started": now_utc(),
        "finished": None,
        "model": {
            "path": str(Path(model.path).resolve()) if model.path else None,
            "weights_sha256": weights_digest(model),
            "name": model.config.get("name"),
            "created": model.config.get("created"),
            "label": model.label,
            "trained_with": training.get("labels_file"),
        },
        "settings": settings,
        "software": software_versions(),
        "scans": {"given": n_scans, "counted": 0, "not_counted": 0},
        "columns": columns,
    }


def finish_record(record: dict, counted: int, not_counted: int, stopped: bool = False) -> dict:
    record["scans"].update(counted=counted, not_counted=not_counted)
    record["finished"] = now_utc()
    if stopped:  # a stop, or an error that ended the run: the tables hold the scans done before
        record["stopped"] = True
    return record


def write_record(path: Path, record: dict) -> None:
    atomic_write_bytes(path, (json.dumps(json_safe(record), indent=2) + "\n").encode())
