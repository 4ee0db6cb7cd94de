"""Counts on a simulated cohort: the networks against what a user could do without them.

For each training-set size and seed, the same rater-labelled training scans (drawn from the
cohort's pool; ``--train-labels expert`` labels them with the expert count instead) go to
every method; all are scored on the same held-out test scans against the expert count
(ICC(2,1), MAE, MSE). Methods:

- ``intensity``, ``frangi``: thresholded components in a size window, fitted on the labels
  (benchmarks/baselines.py); ``intensity_median``, ``frangi_median``, ``threshold_volume_median``:
  the same on scans scaled by the ROI's median instead of its 99th percentile (a threshold
  relative to the tissue, as users set them);
- ``tissue_level``: a probe, the label as a linear function of the mean prepared ROI intensity;
- ``default``: the bundled model as shipped (no training);
- ``recalibrated``: its count scale and offset refitted on the labels (``--recalibrate-only``);
- ``finetune``: fine-tuned from it with set-sum (n = 4, p = 0.1), time-limited;
- ``setsum``, ``base``: HydraRegressor from scratch, set-sum (n = 4, p = 0.1) vs the base
  regressor (n = 1, p = 0), time-limited (000 Fig. 3);
- ``gpunet_scratch``: GP-UNet (8/16/32) from scratch, set-sum, count labels only;
- ``*_median`` (``gpunet_scratch``, ``setsum``, ``base``): the same from scratch with the median
  intensity reference (``--intensity-reference median``);
- ``setsum_mae``, ``base_mae``: the two regressors with the MAE loss (000 Table 1, WMH);
- ``threshold_volume``: voxels above a fitted threshold, linearly calibrated (WMH volume);
- ``finetune_*``: the fine-tune with one setting changed (heads n, p, augmentation, no
  recalibration first), see ``ABLATIONS``;
- ``cam``: 004 baseline (d), a GP-UNet without the upsampling path (its heatmap is the
  coarse last layer, upsampled): the bundled model's encoder, a new count head calibrated
  on the labels (``calibrate_output``), then the fine-tune's set-sum training on counts.

``--model FOLDER`` puts another model in the bundled model's place (``default``, the
fine-tunes and ``cam``), to measure a candidate before it ships.

Each result is saved as RESULTS/<size>-<seed>-<method>.json and each trained model in
RESULTS/models/<size>-<seed>-<method>/ (benchmarks/detection.py scores their heatmaps);
runs already there are skipped, so the command can be stopped and started again.

    python benchmarks/counts.py /work/sim/shift --out benchmarks/results/counts --sizes 12 25 --seeds 0 1
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from baselines import fit_counter, fit_tissue_level, fit_volume, vesselness  # noqa: E402
from common import (  # noqa: E402
    cache_suffix,
    count_scores,
    draw_training,
    load_sim,
    model_outputs,
    prepared_as,
    save_json,
    splits,
    write_labels,
)

from napari_hydranet.calibrate import calibrate_output  # noqa: E402
from napari_hydranet.models import build_net, load_model, save_model  # noqa: E402
from napari_hydranet.preprocess import PreprocessConfig  # noqa: E402
from napari_hydranet.train import TrainConfig, train  # noqa: E402

# Ablations of the fine-tune (000 §4 and what users ask): one setting changed at a time.
ABLATIONS = {
    "finetune_n1": {"heads": 1, "p_black": 0.0},
    "finetune_n2": {"heads": 2},
    "finetune_n8": {"heads": 8},
    "finetune_p0": {"p_black": 0.0},
    "finetune_p0.3": {"p_black": 0.3},
    "finetune_noaug": {"augment": False},
    "finetune_norecal": {"recalibrate": False},
    "finetune_lr1e-5": {"lr": 1e-5},
}
# from-scratch trainings that also run with the median intensity reference, as METHOD_median
MEDIAN_VARIANTS = ("setsum", "base", "gpunet_scratch")
# no-network baselines that also run on median-scaled scans, as METHOD_median
BASELINES = ("intensity", "frangi", "threshold_volume")
MEDIAN = PreprocessConfig(intensity_reference="median")
# methods that do not use the bundled model (report.py keeps them out of its history table)
MODEL_FREE = (
    *BASELINES,
    *(f"{m}_median" for m in BASELINES),
    "tissue_level",
    "setsum",
    "base",
    "gpunet_scratch",
    *(f"{m}_median" for m in MEDIAN_VARIANTS),
    "setsum_mae",
    "base_mae",
)
METHODS = (*MODEL_FREE, "default", "recalibrated", "finetune", "cam", *ABLATIONS)


def median_variant(method: str, family: tuple) -> str | None:
    """The method a ``*_median`` name in ``family`` varies, else None."""
    plain = method.removesuffix("_median")
    return plain if plain != method and plain in family else None


def frangi_maps(sim) -> np.ndarray:
    """Vesselness of every prepared scan, cached beside the prepared inputs and remade with them."""
    cache = sim.root / f"frangi{cache_suffix(sim.pre)}.npz"
    if cache.exists():
        z = np.load(cache)
        if str(z["key"]) == sim.cache_key:
            return z["maps"]
    maps = np.stack([vesselness(m) for m in sim.images])
    np.savez(cache, maps=maps, key=sim.cache_key)
    return maps


def cam_start(sim, tr: np.ndarray, folder: Path, base: str) -> Path:
    """The CAM-like network's starting point: the base model's encoder, no decoder, a fitted head."""
    default = load_model(base)
    args = {**default.config["architecture"]["args"], "decoder": False}
    net = build_net("gpunet", args)
    encoder = {k: v for k, v in default.net.state_dict().items() if k.startswith("down.")}
    net.load_state_dict(encoder, strict=False)
    x = torch.from_numpy(sim.images[tr, None])
    calibrate_output(net, x, torch.from_numpy(sim.training_labels(tr)).float())
    config = {k: default.config[k] for k in ("preprocess", "label")}
    config.update(name="cam-start", architecture={"name": "gpunet", "args": args})
    return save_model(folder, net, config)


def train_settings(method: str, minutes: dict, base: str = "default") -> dict:
    """TrainConfig arguments of each trained method (``base``: the model fine-tunes start from)."""
    if method == "recalibrated":
        return dict(init=base, recalibrate_only=True)
    if method == "finetune" or method == "cam" or method in ABLATIONS:
        settings = dict(init=base, heads=4, p_black=0.1, time_limit=minutes["finetune"])
        return {**settings, **ABLATIONS.get(method, {})}
    if method == "setsum":
        return dict(arch="regressor", heads=4, p_black=0.1, time_limit=minutes["scratch"])
    if method == "base":
        return dict(arch="regressor", heads=1, p_black=0.0, time_limit=minutes["scratch"])
    if method in ("setsum_mae", "base_mae"):
        return {**train_settings(method[:-4], minutes), "loss": "mae"}
    if median_variant(method, MEDIAN_VARIANTS):
        return {
            **train_settings(median_variant(method, MEDIAN_VARIANTS), minutes),
            "intensity_reference": "median",
        }
    if method == "gpunet_scratch":  # the percentile, as before auto chose the median for it
        return dict(
            arch="gpunet",
            arch_args={"features": [8, 16, 32]},
            heads=4,
            p_black=0.1,
            time_limit=minutes["scratch"],
            intensity_reference="percentile",
        )
    raise ValueError(method)


class NoModel(Exception):
    """A training that stopped before saving a model (its time limit came first)."""


def run_training(sim, tr: np.ndarray, settings: dict, seed: int, workdir: Path) -> tuple:
    """Train on scans ``tr``; returns the best model and the run's summary."""
    workdir.mkdir(parents=True)
    labels = write_labels(sim, tr, workdir / "labels.csv")
    cfg = TrainConfig(
        scans_dir=str(sim.root / "scans"),
        labels=str(labels),
        masks_dir=str(sim.root / "masks"),
        out=str(workdir / "model"),
        epochs=10_000,
        seed=seed,
        device="cpu",
        **settings,
    )
    history, done = [], None
    for ev in train(cfg):
        if ev["event"] == "epoch":
            history.append(
                {k: ev[k] for k in ("epoch", "loss", "elapsed", "val_icc21", "val_mae", "val_pred_sd")}
            )
            print(
                f"    epoch {ev['epoch']:3d}  loss {ev['loss']:.3g}  val ICC {ev['val_icc21']:.3f}  "
                f"sd {ev['val_pred_sd']:.2f}  {ev['elapsed'] / 60:.1f} min",
                flush=True,
            )
        elif ev["event"] == "done":
            done = ev
    best = done["best"] or {}
    summary = {
        "minutes": done["seconds"] / 60,
        "epochs": done["epochs"],
        "best_epoch": best.get("epoch"),
        "minutes_to_best": (best.get("elapsed") or 0) / 60,
        "history": history,
    }
    if not (workdir / "model" / "config.json").exists():
        raise NoModel(
            f"no epoch finished within its {settings.get('time_limit')} minutes, so no model was "
            "saved: give it more (--scratch-minutes, --finetune-minutes)"
        )
    return load_model(workdir / "model"), summary


def run_name(size: int, seed: int, method: str, train_seed: int | None = None) -> str:
    """A run's file and model folder name; a training seed other than the draw's is tagged."""
    tag = "" if train_seed in (None, seed) else f"-t{train_seed}"
    return f"{size}-{seed}-{method}{tag}"


def run(
    sim,
    method: str,
    size: int,
    seed: int,
    minutes: dict,
    pool,
    test,
    flips: int,
    models: Path,
    base: str,
    train_seed: int | None = None,
    lr: float | None = None,
) -> dict:
    """One method on training draw ``seed``; networks train with ``train_seed`` (their start,
    validation split and batches), by default the draw's seed, and at ``lr`` if given."""
    tr = draw_training(pool, size, seed)
    train_seed = seed if train_seed is None else train_seed
    t0 = time.monotonic()
    baseline, scaled = method, sim
    if median_variant(method, BASELINES):
        baseline, scaled = median_variant(method, BASELINES), prepared_as(sim, MEDIAN)
    if baseline in ("threshold_volume", "tissue_level"):
        fitter = fit_volume if baseline == "threshold_volume" else fit_tissue_level
        fit = fitter(scaled.images[tr], scaled.training_labels(tr))
        pred, extra = fit.predict(scaled.images[test]), {"fitted": vars(fit)}
    elif baseline in ("intensity", "frangi"):
        maps = scaled.images if baseline == "intensity" else frangi_maps(scaled)
        counter = fit_counter(maps[tr], scaled.training_labels(tr))
        pred, extra = counter.predict(maps[test]), {"fitted": vars(counter)}
    elif method == "default":
        pred, _ = model_outputs(load_model(base), sim, test, flips)
        extra = {}
    else:
        folder = models / run_name(size, seed, method, train_seed)
        if folder.exists():  # an interrupted run: start it again
            shutil.rmtree(folder)
        settings = train_settings(method, minutes, base)
        if lr:
            settings["lr"] = lr
        if method == "cam":
            settings["init"] = str(cam_start(sim, tr, folder.with_name(folder.name + "-start"), base))
        model, extra = run_training(sim, tr, settings, train_seed, folder)
        pred, _ = model_outputs(model, sim, test, flips)
    return {
        "method": method,
        "size": size,
        "seed": seed,
        "train_seed": train_seed,
        "lr": lr,
        "train_scans": [sim.names[i] for i in tr],
        "train_labels": sim.train_source,
        "model": base,
        "test": count_scores(pred, sim, test),
        "pred_sd": float(np.std(pred)),
        "pred": [float(v) for v in pred],
        "wall_minutes": (time.monotonic() - t0) / 60,
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cohort", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[12, 25])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--finetune-minutes", type=float, default=4)
    ap.add_argument("--scratch-minutes", type=float, default=6)
    ap.add_argument(
        "--model", default="default", help="a model folder in the bundled model's place (default, fine-tunes)"
    )
    ap.add_argument("--flips", type=int, default=1, help="test-time flips when scoring networks")
    ap.add_argument("--test", type=int, default=100, help="test scans (the cohort's last)")
    ap.add_argument(
        "--train-labels",
        choices=["rater", "expert"],
        default="rater",
        help="whose counts train every method; expert: the test's reference (no rater disagreement)",
    )
    ap.add_argument(
        "--train-seed",
        type=int,
        help="networks' seed (start, validation split, batches) instead of the draw's; "
        "results are named <size>-<seed>-<method>-t<train seed>.json, so give them their own --out",
    )
    ap.add_argument(
        "--lr",
        type=float,
        help="learning rate of every trained method instead of its optimiser's default "
        "(results keep their names, so give them their own --out)",
    )
    a = ap.parse_args()
    sim = load_sim(a.cohort)
    sim.train_source = a.train_labels
    pool, test = splits(sim, a.test)
    minutes = {"finetune": a.finetune_minutes, "scratch": a.scratch_minutes}
    for size in a.sizes:
        for seed in a.seeds:
            for method in a.methods:
                path = a.out / f"{run_name(size, seed, method, a.train_seed)}.json"
                if path.exists():
                    continue
                print(f"{size} scans, seed {seed}: {method}", flush=True)
                try:
                    result = run(
                        sim,
                        method,
                        size,
                        seed,
                        minutes,
                        pool,
                        test,
                        a.flips,
                        a.out / "models",
                        a.model,
                        a.train_seed,
                        a.lr,
                    )
                except NoModel as exc:  # no result file: the next run of the command tries again
                    print(f"  not scored: {exc}", flush=True)
                    continue
                save_json(result, path)
                t = result["test"]
                print(f"  test ICC(2,1) {t['icc21']:.3f}  MAE {t['mae']:.2f}  MSE {t['mse']:.2f}", flush=True)


if __name__ == "__main__":
    main()
