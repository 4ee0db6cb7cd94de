"""The noise texture (``napari_hydranet.texture``) of a model's training scans, for a model
trained before models recorded it (the bundled one): what ``hydranet train`` now writes to
``training.noise_texture`` in the config, measured on the scans given.

    python benchmarks/texture_range.py SIM/p100 SIM/p101 ... [--model default] [--write]

Each cohort is what ``simulate.py`` writes (scans/ and masks/); every scan is measured in
its ROI mask as ``prepare`` measures it. ``--write`` stores the result in the model's config.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from napari_hydranet.io import atomic_write_bytes, find_scans, read_scan
from napari_hydranet.models import load_model
from napari_hydranet.preprocess import prepare
from napari_hydranet.texture import texture_range


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cohorts", type=Path, nargs="+")
    ap.add_argument("--model", default="default")
    ap.add_argument("--write", action="store_true", help="store the range in the model's config.json")
    a = ap.parse_args()
    model = load_model(a.model)
    textures = []
    for cohort in a.cohorts:
        found = []
        for path in find_scans([cohort / "scans"]):
            prepared = prepare(read_scan(path), model.preprocess, read_scan(cohort / "masks" / path.name))
            found.append(prepared.texture)
        known = np.array([t for t in found if t is not None])
        print(
            f"{cohort}: {len(found)} scans, texture {known.min():.3f}–{known.max():.3f} "
            f"(median {np.median(known):.3f}; {len(found) - known.size} not measured)"
        )
        textures += found
    record = {"region": "ROI", "range": texture_range(textures)}
    print(json.dumps(record))
    if a.write:
        config_path = model.path / "config.json"
        text = config_path.read_text(encoding="utf-8")
        config = json.loads(text)
        config["training"]["noise_texture"] = record
        indent = 1 if text.startswith('{\n "') else 2  # the file's own layout (the bundled one: 1)
        atomic_write_bytes(config_path, json.dumps(config, indent=indent).encode())
        print(f"written to {config_path}")


if __name__ == "__main__":
    main()
