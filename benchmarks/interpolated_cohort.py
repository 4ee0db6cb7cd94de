"""A simulated cohort as a site that interpolates every scan would have it: the first ``--n``
scans of a cohort moved through one of ``interpolation.py``'s variants (masks by nearest
neighbour), with their rater and expert labels, for training and predicting on with
``hydranet`` as on any site's scans.

    python benchmarks/interpolated_cohort.py SIM/fresh_f SITE --variant "1 mm, linear" --n 60
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import nibabel as nib
import numpy as np
from interpolation import VARIANTS

from napari_hydranet.io import read_scan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cohort", type=Path, help="a cohort simulate.py wrote")
    ap.add_argument("out", type=Path, help="a new folder")
    ap.add_argument("--variant", default="1 mm, linear", choices=list(VARIANTS))
    ap.add_argument("--n", type=int, default=60)
    a = ap.parse_args()
    if a.out.exists():
        ap.error(f"{a.out}: exists; give a new folder")
    move_scan, move_mask = VARIANTS[a.variant]
    names = sorted(p.name for p in (a.cohort / "scans").glob("*.nii.gz"))[: a.n]
    for folder in ("scans", "masks"):
        (a.out / folder).mkdir(parents=True)
    for name in names:
        scan, mask = (
            move_scan(read_scan(a.cohort / "scans" / name)),
            move_mask(read_scan(a.cohort / "masks" / name)),
        )
        nib.save(nib.Nifti1Image(scan.array, scan.affine), str(a.out / "scans" / name))
        roi = (mask.array > 0.5).astype(np.uint8)
        nib.save(nib.Nifti1Image(roi, mask.affine), str(a.out / "masks" / name))
    for table in ("labels.csv", "expert.csv"):
        with open(a.cohort / table, newline="") as fh:
            rows = {r["scan"]: r["label"] for r in csv.DictReader(fh)}
        with open(a.out / table, "w", newline="") as fh:
            csv.writer(fh).writerows([("scan", "label"), *((n, rows[n]) for n in names)])
    print(f"{len(names)} scans of {a.cohort}, {a.variant}, written to {a.out}")


if __name__ == "__main__":
    main()
