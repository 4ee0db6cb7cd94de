"""Did a network learn the lesions, or the tissue's level? One table per results folder.

After the 99th-percentile scaling the tissue is darker in scans with a larger bright tail
(``baselines.TissueLevel``). For every trained method in RESULTS (``counts.py``'s JSON files)
this prints, per training draw, its test ICC(2,1) against the expert and the correlation of
its test predictions with the mean prepared ROI intensity, beside that intensity's own
correlation with the expert. Predictions that follow the tissue level more closely than the
expert does follow that level rather than the lesions alone.

    python benchmarks/tissue_shortcut.py SIM/wmh_b RESULTS/wmh_b
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from baselines import TissueLevel  # noqa: E402
from common import load_sim, splits  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cohort", type=Path)
    ap.add_argument("results", type=Path)
    args = ap.parse_args(argv)
    cohort = load_sim(args.cohort)
    _, test = splits(cohort)
    level = TissueLevel.level(cohort.images[test])
    print(f"r(tissue level, expert) on the test scans: {np.corrcoef(level, cohort.expert[test])[0, 1]:.3f}\n")
    print("| method | training draw | ICC(2,1) vs expert | r with the tissue level | r with the expert |")
    print("|---|---|---|---|---|")
    for path in sorted(args.results.glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("epochs") is None or len(r.get("pred", [])) != len(test):  # baselines, other sizes
            continue
        pred = np.asarray(r["pred"], float)
        with_level, with_expert = (np.corrcoef(pred, v)[0, 1] for v in (level, cohort.expert[test]))
        icc, draw = r["test"]["icc21"], str(r["seed"])
        if r.get("train_seed", r["seed"]) != r["seed"]:  # counts.py --train-seed
            draw += f" (training seed {r['train_seed']})"
        print(f"| {r['method']} | {draw} | {icc:.3f} | {with_level:.3f} | {with_expert:.3f} |")


if __name__ == "__main__":
    main()
