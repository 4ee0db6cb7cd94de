"""The sample scan that ships with the package: a simulated basal-ganglia crop with known
lesion centres (see its README in data/sample)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np


def sample_dir() -> Path:
    return Path(str(resources.files("napari_hydranet") / "data" / "sample"))


@dataclass
class Sample:
    scan: Path
    mask: Path
    lesions: np.ndarray  # (N, 3) voxel coordinates of the counted lesions in the scan file
    count: int


def load_sample() -> Sample:
    folder = sample_dir()
    with open(folder / "lesions.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    centres = np.array([[float(r["i"]), float(r["j"]), float(r["k"])] for r in rows]).reshape(-1, 3)
    return Sample(folder / "sample.nii.gz", folder / "sample_mask.nii.gz", centres, len(centres))
