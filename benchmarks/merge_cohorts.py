"""Join simulated cohorts into one training folder (symbolic links, no copies).

    python benchmarks/merge_cohorts.py SIM/pretrain_all SIM/pretrain SIM/pretrain2 --val 50

Scan ``sub-NNNN.nii.gz`` of the k-th cohort becomes ``pk-sub-NNNN.nii.gz`` in ``scans/``,
``masks/`` and ``lesion_masks/``; ``train.csv`` and ``val.csv`` hold the expert counts, the
last ``--val`` scans of the last cohort being the validation split.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

FOLDERS = ("scans", "masks", "lesion_masks")


def merge(out: Path, parts: list[Path], n_val: int) -> tuple[int, int]:
    """Link every part's files into ``out`` and write the two label files; returns their sizes."""
    rows: list[tuple[str, str]] = []
    for k, part in enumerate(parts, start=1):
        with open(part / "expert.csv", newline="") as fh:
            labels = [(f"p{k}-{r['scan']}", r["label"]) for r in csv.DictReader(fh)]
        for folder in FOLDERS:
            (out / folder).mkdir(parents=True, exist_ok=True)
            for name, _ in labels:
                link = out / folder / name
                if not link.exists():
                    link.symlink_to((part / folder / name.split("-", 1)[1]).resolve())
        rows += labels
    cut = len(rows) - n_val
    if not 0 <= n_val < len(rows):
        raise SystemExit(f"--val {n_val}: must be from 0 to {len(rows) - 1} (of {len(rows)} scans)")
    splits = {"train.csv": rows[:cut], "val.csv": rows[cut:]}  # --val 0: all in training
    for name, split in splits.items():
        with open(out / name, "w", newline="") as fh:
            csv.writer(fh).writerows([("scan", "label"), *split])
    return len(splits["train.csv"]), len(splits["val.csv"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("parts", type=Path, nargs="+", help="cohorts written by simulate.py")
    ap.add_argument("--val", type=int, default=50, help="validation scans, taken from the last cohort")
    a = ap.parse_args()
    n_train, n_val = merge(a.out, a.parts, a.val)
    print(f"{a.out}: {n_train} training and {n_val} validation scans")


if __name__ == "__main__":
    main()
