"""Tables (Markdown, printed) and plots (PNG) from the results of counts.py and detection.py.

python benchmarks/report.py --counts RESULTS/model4 --cohort RESULTS/indist-m4 RESULTS/indist-aug \
    --history RESULTS/model1 RESULTS/model1-guarded RESULTS/model2 RESULTS/model3 RESULTS/model3-aug \
    --detection RESULTS/detection_*.json --png docs/benchmarks

``--counts`` folders give the main table and the plots (the methods in ``--curves``; the runs
of all folders pooled); ``--history`` folders (runs with earlier code or an earlier bundled
model) a second table whose rows name their folder; each ``--cohort`` folder (runs on another
cohort) a table of its own. After each counts table, set-sum minus the n = 1 fine-tune, training
set by training set (folder and seed).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from counts import MODEL_FREE  # noqa: E402

LABELS = {
    "intensity": "threshold + components (no network)",
    "frangi": "Frangi + components (no network)",
    "intensity_median": "threshold + components, median-scaled (no network)",
    "frangi_median": "Frangi + components, median-scaled (no network)",
    "threshold_volume_median": "voxels above a threshold, median-scaled (no network)",
    "tissue_level": "mean prepared ROI intensity, calibrated (probe, no network)",
    "default": "bundled model, as shipped",
    "recalibrated": "bundled model, count recalibrated",
    "finetune": "bundled model, set-sum fine-tune",
    "setsum": "HydraRegressor from scratch, set-sum n=4 p=0.1",
    "base": "HydraRegressor from scratch, base (n=1)",
    "gpunet_scratch": "GP-UNet from scratch, set-sum",
    "gpunet_scratch_median": "GP-UNet from scratch, set-sum, median intensity reference",
    "setsum_median": "HydraRegressor from scratch, set-sum, median intensity reference",
    "base_median": "HydraRegressor from scratch, base, median intensity reference",
    "setsum_mae": "HydraRegressor from scratch, set-sum, MAE loss",
    "base_mae": "HydraRegressor from scratch, base, MAE loss",
    "threshold_volume": "voxels above a threshold (no network)",
    "finetune_n1": "fine-tune, n=1 p=0 (no set-sum)",
    "finetune_n2": "fine-tune, n=2",
    "finetune_n8": "fine-tune, n=8",
    "finetune_p0": "fine-tune, p=0",
    "finetune_p0.3": "fine-tune, p=0.3",
    "finetune_noaug": "fine-tune, no flips/rotations/shifts",
    "finetune_norecal": "fine-tune, no recalibration first",
    "finetune_lr1e-5": "fine-tune, Adam 1e-5 instead of 1e-4",
    "cam": "CAM-like net (bundled encoder, no upsampling path), set-sum on counts",
}
CURVES = ("intensity", "frangi", "default", "recalibrated", "finetune", "setsum", "base")


def load_counts(folders: list[Path], name_rows: bool = False) -> dict:
    """{method: {size: [result, …]}}; with ``name_rows`` (history) the key is "folder: method"
    and only the methods that use the bundled model are kept."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            r = json.loads(path.read_text())
            r["folder"] = folder.name  # pairs runs on the same training set in paired_table
            if name_rows and r["method"] in MODEL_FREE:
                continue
            method = f"{folder.name}: {r['method']}" if name_rows else r["method"]
            out[method][r["size"]].append(r)
    return out


def _label(method: str) -> str:
    folder, sep, name = method.rpartition(": ")
    return f"{folder}{sep}{LABELS.get(name, name)}"


def counts_table(res: dict, methods=None) -> str:
    rows = [
        "| method | scans | seeds | ICC(2,1) vs expert | ICC(3,1) vs expert | MAE | MSE | ICC(2,1) vs rater "
        "| SD of counts | train min | min to best |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rank = {m: i for i, m in enumerate(LABELS)}
    order = sorted(res, key=lambda m: (m.rpartition(": ")[0], rank.get(m.rpartition(": ")[2], len(rank))))
    for method in order:
        by_size = res[method]
        if methods is not None and method not in methods:
            continue
        for size in sorted(by_size):
            rs = by_size[size]

            def stat(get, rs=rs):
                v = np.array([get(r["test"]) for r in rs])
                return f"{v.mean():.3f}" + (f" ({v.min():.3f}–{v.max():.3f})" if len(v) > 1 else "")

            minutes = [r["minutes"] for r in rs if r.get("minutes") is not None]
            best = [r["minutes_to_best"] for r in rs if r.get("minutes_to_best") is not None]
            minutes = f"{np.mean(minutes):.1f}" if minutes else "–"
            best = f"{np.mean(best):.1f}" if best else "–"
            rows.append(
                f"| {_label(method)} | {size} | {len(rs)} | {stat(lambda t: t['icc21'])} | "
                f"{stat(lambda t: t['icc31'])} | {stat(lambda t: t['mae'])} | {stat(lambda t: t['mse'])} | "
                f"{stat(lambda t: t['vs_rater']['icc21'])} | {np.mean([r['pred_sd'] for r in rs]):.2f} | "
                f"{minutes} | {best} |"
            )
    return "\n".join(rows)


def paired_table(res: dict, a: str = "finetune", b: str = "finetune_n1") -> str:
    """Method a minus method b, ICC(2,1) on the same training scans (size, seed), and the mean."""
    rows = ["| scans | folder | seed | vs expert | vs rater |", "|---|---|---|---|---|"]
    diffs = []
    for size in sorted(set(res.get(a, {})) & set(res.get(b, {}))):
        other = {(r["folder"], r["seed"]): r["test"] for r in res[b][size]}
        for r in sorted(res[a][size], key=lambda r: (r["folder"], r["seed"])):
            if (r["folder"], r["seed"]) in other:
                t, u = r["test"], other[r["folder"], r["seed"]]
                d = (t["icc21"] - u["icc21"], t["vs_rater"]["icc21"] - u["vs_rater"]["icc21"])
                diffs.append(d)
                rows.append(f"| {size} | {r['folder']} | {r['seed']} | {d[0]:+.3f} | {d[1]:+.3f} |")
    if not diffs:
        return ""
    mean = np.mean(diffs, axis=0)
    rows.append(f"| mean of {len(diffs)} | | | {mean[0]:+.3f} | {mean[1]:+.3f} |")
    return f"{LABELS[a]} minus {LABELS[b]}\n\n" + "\n".join(rows)


def plot_counts(res: dict, png: Path, curves=CURVES) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    drawn = 0
    for method, by_size in res.items():
        if method not in curves:
            continue
        sizes = sorted(by_size)
        if method == "default":  # no training: the same at every size
            for ax, key in zip(axes, ("icc21", "mse")):
                v = np.mean([r["test"][key] for rs in by_size.values() for r in rs])
                ax.axhline(v, color="k", ls="--", lw=1, label=LABELS[method])
            continue
        for ax, key in zip(axes, ("icc21", "mse")):
            vals = [np.array([r["test"][key] for r in by_size[s]]) for s in sizes]
            mean = [v.mean() for v in vals]
            err = np.array([[m - v.min(), v.max() - m] for m, v in zip(mean, vals)]).T
            shift = 0.25 * drawn  # side by side, so that the ranges do not hide each other
            ax.errorbar(np.add(sizes, shift), mean, yerr=err, marker="o", capsize=3, label=LABELS[method])
        drawn += 1
    axes[0].set_ylabel("ICC(2,1) vs expert count (test)")
    axes[1].set_ylabel("MSE vs expert count (test)")
    for ax in axes:
        ax.set_xlabel("labelled training scans")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.savefig(png, dpi=110)
    plt.close(fig)


def plot_training(res: dict, png: Path, size: int = 25) -> None:
    fig, ax = plt.subplots(figsize=(9, 4), layout="constrained")
    folders = sorted({r["folder"] for by_size in res.values() for rs in by_size.values() for r in rs})
    for method in ("finetune", "setsum", "base", "gpunet_scratch"):
        for r in res.get(method, {}).get(size, []):
            h = r.get("history") or []
            where = f"{r['folder']}, " if len(folders) > 1 else ""
            ax.plot(
                [e["elapsed"] / 60 for e in h],
                [e["val_icc21"] for e in h],
                marker=".",
                label=f"{LABELS[method]} ({where}seed {r['seed']})",
            )
    ax.set_xlabel("minutes on this CPU (2 cores)")
    ax.set_ylabel("validation ICC(2,1) (5 of the 25 scans, rater labels)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.savefig(png, dpi=110)
    plt.close(fig)


def detection_table(det: dict) -> str:
    rows = [
        "| method | TPR (count-consistent) | FP/scan | FDR | TPR at ≤ 1.5 FP/scan (FROC) | count ICC(2,1) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in det["methods"].items():
        rows.append(
            f"| {name} | {s['tpr']:.3f} | {s['fp_per_scan']:.2f} | {s['fdr']:.2f} | {s['tpr_at_fp']:.3f} | "
            f"{s['counts']['icc21']:.3f} |"
        )
    return "\n".join(rows)


def plot_froc(det: dict, png: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for name, s in det["methods"].items():
        (curve,) = ax.plot(s["froc"]["fp_per_scan"], s["froc"]["tpr"], label=name)
        ax.plot([s["fp_per_scan"]], [s["tpr"]], "o", color=curve.get_color(), mec="k", ms=6)
    ax.axvline(1.5, color="grey", ls=":", lw=1)
    ax.set_xlim(0, 6)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positives per scan")
    ax.set_ylabel("sensitivity (TPR)")
    ax.set_title("FROC; dots: the count-consistent threshold", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", type=Path, nargs="*", default=[])
    ap.add_argument("--history", type=Path, nargs="*", default=[])
    ap.add_argument("--cohort", type=Path, nargs="*", default=[], help="results on other cohorts")
    ap.add_argument("--detection", type=Path, nargs="*", default=[])
    ap.add_argument("--png", type=Path, help="folder for the plots (without it: the tables only)")
    ap.add_argument("--curves", nargs="+", default=CURVES, help="methods drawn in counts.png")
    ap.add_argument("--stem", default="", help="prefix of the --counts plots' file names")
    a = ap.parse_args()
    if a.png:
        a.png.mkdir(parents=True, exist_ok=True)
    if a.counts:
        res = load_counts(a.counts)
        print(counts_table(res), end="\n\n")
        print(paired_table(res), end="\n\n")
        if a.png:
            plot_counts(res, a.png / f"{a.stem}counts.png", a.curves)
            plot_training(res, a.png / f"{a.stem}training.png")
    if a.history:
        print(counts_table(load_counts(a.history, name_rows=True)), end="\n\n")
    for folder in a.cohort:
        res = load_counts([folder])
        print(f"{folder.name}\n\n{counts_table(res)}\n\n{paired_table(res)}", end="\n\n")
    for path in a.detection:
        det = json.loads(path.read_text())
        print(f"GP-UNet: {det['gpunet']}\n\n{detection_table(det)}\n")
        if a.png:
            plot_froc(det, a.png / f"froc_{path.stem}.png")


if __name__ == "__main__":
    main()
