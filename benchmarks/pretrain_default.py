"""Build the bundled default model: pretrain on a simulated cohort, recalibrate, measure.

The bundled model was made in six stages (2-core CPU, 28 + 70 + 55 + 48 + 61 + 55 minutes);
stages 1-5 ran before ``--density-target`` existed, with its default ``voxels``:

    python benchmarks/simulate.py SIM/pretrain --n 300 --seed 100 --workers 2
    python benchmarks/simulate.py SIM/heldout --n 100 --seed 200 --workers 2
    hydranet train SIM/pretrain/scans --labels SIM/pretrain/train.csv --val-labels SIM/pretrain/val.csv \\
        --masks SIM/pretrain/masks --density SIM/pretrain/lesion_masks --out PRE1 --epochs 40 \\
        --time-limit 36 --lr 1e-3 --heads 1 --p-black 0 --sets-per-batch 4 \\
        --label-name "EPVS count in the basal ganglia" --unit lesions
    python benchmarks/simulate.py SIM/pretrain2 --n 500 --seed 101 --workers 2
    python benchmarks/merge_cohorts.py SIM/pretrain_all SIM/pretrain SIM/pretrain2 --val 50
    hydranet train SIM/pretrain_all/scans --labels SIM/pretrain_all/train.csv \\
        --val-labels SIM/pretrain_all/val.csv --masks SIM/pretrain_all/masks \\
        --density SIM/pretrain_all/lesion_masks --out PRE2 --init PRE1 --no-recalibrate --epochs 40 \\
        --time-limit 50 --lr 5e-4 --heads 1 --p-black 0 --sets-per-batch 4 \\
        --label-name "EPVS count in the basal ganglia" --unit lesions
    (stage 3: the same command with --out PRE3 --init PRE2 --time-limit 55 --lr 1e-4)
    python benchmarks/simulate.py SIM/select --n 100 --seed 102 --workers 2
    python benchmarks/pretrain_default.py PRE2 PRE3 PRE3/resume SIM --pretrain SIM/pretrain_all \\
        --select SIM/select --seeds 100 101 --out MODEL3 --note "$NOTE"
    (stage 4, after 3abafac: the same command as stage 2 with --out PRE4 --init PRE3 --time-limit 48
    --lr 1e-4)
    python benchmarks/pretrain_default.py PRE3 PRE4 PRE4/resume SIM --pretrain SIM/pretrain_all \\
        --select SIM/select --seeds 100 101 --out MODEL4 --note "$NOTE"
    (stage 5: the broader cohorts of docs/benchmarks.md merged into SIM/pretrain_wide; the same
    command as stage 2 on SIM/pretrain_wide with --out PRE5 --init MODEL4 --time-limit 62 --lr 1e-4)
    python benchmarks/pretrain_default.py MODEL4 PRE5 PRE5/resume SIM --pretrain SIM/pretrain_wide \\
        --select SIM/select --seeds 100 101 110 111 112 113 --out MODEL5 \\
        --note "$NOTE"
    (stage 6: the same command as stage 5 with --out PRE6 --init MODEL5 --density-target lesions
    --time-limit 55 --lr 2e-4)
    python benchmarks/pretrain_default.py MODEL5 PRE6 SIM --pretrain SIM/pretrain_wide \\
        --select SIM/select --seeds 100 101 110 111 112 113 --out napari_hydranet/data/default_model \\
        --note "$NOTE"

(First stage: train.csv the first 280 rows of SIM/pretrain/expert.csv, val.csv the last 20;
it stopped at its time limit after 12 epochs, best epoch 9, chosen by the raw count's ICC.
Second stage: run once for 4 epochs (20 min), stopped when that score proved misleading
(docs/convergence.md), then continued with ``--resume`` under the score after the count refit
for 12 more epochs (50 min), best epoch 12. Third stage: 14 epochs at a fifth of the learning
rate, best epoch 9 (model 3). Fourth stage, with the voxel-copying augmentation of 3abafac
(stages 1-3 interpolated): 11 epochs, best epoch 4 (model 4). Fifth stage, on 600 more scans
with broader settings: 26 epochs, best epoch 21 (model 5). Sixth stage, each lesion's voxels
sharing one mass instead of 1 per lesion voxel: 23 epochs, best epoch 23, the last (model 6).
Stages 7-9 continued model 6 and were not shipped (docs/benchmarks.md, "After model
6"): the stage 6 command without its --time-limit, with --init MODEL6 --lr-schedule cosine and,
for stage 7, SIM/pretrain_wide2
(the four further setting groups merged in) --epochs 20; stage 8, the same with --count-weight
0.001 --epochs 12; stage 9, SIM/pretrain_wide --count-weight 0.001 --epochs 10; then this script
with MODEL6 PREk PREk/resume, which chose model 6 each time. Stage 10 (model 7, shipped):
the stage 6 command on SIM/pretrain_wide with --init MODEL6 --time-limit 60
--lr-schedule cosine --epochs 20 --lesion-weight 1 (lesion voxels weighted like background
voxels; stages 1-9 used 20): 20 epochs in 45 min, best epoch 10; then this script with MODEL6
PRE10 PRE10/resume, which chose the last epoch (docs/benchmarks.md, "Model 7"). Stage 11 (not
shipped) continued model 7 with --augment-smooth 0.5 on 900 regenerated scans for 6 epochs;
this script kept model 7 (docs/benchmarks.md, "A pretraining stage with smoothed views"). NOTE is the card's
account of these stages; the card's selection names were then written out by hand ("model 4",
"stage 5, best (epoch 21)", ...).) This script refits the count
scale and threshold on the pretraining scans (``recalibrate_density``); given several models,
keeps the one whose refitted counts agree best with the expert on the ``--select`` cohort;
measures held-out counts (ICC against the expert count) and detections (sensitivity and false
positives per scan within 3 voxels of the simulated lesion centres), writes the card and saves
the folder.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch

from napari_hydranet.calibrate import recalibrate_density
from napari_hydranet.data import load_cohort
from napari_hydranet.infer import predict_file
from napari_hydranet.metrics import agreement, detection_scores, match
from napari_hydranet.models import load_model, resolve_model_dir, save_model
from napari_hydranet.resume import resume_weights


def lesion_centres(lesions_csv: Path) -> dict[str, np.ndarray]:
    out: dict[str, list] = {}
    with open(lesions_csv, newline="") as fh:
        for r in csv.DictReader(fh):
            if r["visible"].strip() == "1":
                out.setdefault(r["scan"], []).append([float(r[k]) for k in "ijk"])
    return {k: np.array(v) for k, v in out.items()}


def evaluate(model, sim: Path, limit: int | None = None) -> dict:
    expert = {r["scan"]: float(r["label"]) for r in csv.DictReader(open(sim / "expert.csv"))}
    centres = lesion_centres(sim / "lesions.csv")
    names = sorted(expert)[:limit]
    preds, matches = [], []
    for name in names:
        pred, _ = predict_file(model, sim / "scans" / name, torch.device("cpu"), sim / "masks", flips=1)
        preds.append(pred.count)
        found = [pred.prepared.to_source_index(d.centre) for d in pred.result.detections]
        matches.append(match(np.array(found).reshape(-1, 3), centres.get(name, np.zeros((0, 3))), 3.0))
    return {"counts": agreement(preds, [expert[n] for n in names]), "detection": detection_scores(matches)}


def portable(value, sim: Path):
    """A path of this machine as the card tells it: SIM/... inside the simulation folder, else its name."""
    if not (isinstance(value, str) and value.startswith("/")):
        return value
    path = Path(value)
    return f"SIM/{path.relative_to(sim)}" if path.is_relative_to(sim) else path.name


def load_candidate(path: Path):
    """A model folder, or a training's ``resume/`` folder: its last epoch's weights."""
    if not (path / "state.safetensors").exists():
        return load_model(path)
    model = load_model(path.parent)
    model.net.load_state_dict(resume_weights(path))
    return model


def _held_out(sim: Path, n: int) -> str:
    """'100 simulated scans, seed 200', from the cohort's settings.json (simulate.py)."""
    settings = json.loads((sim / "settings.json").read_text()) if (sim / "settings.json").exists() else {}
    seed = f", seed {settings['seed']}" if "seed" in settings else ""
    return f"{n} simulated scans{seed}"


def _listed(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def refit(model, cohort, n: int) -> dict:
    """Refit the count scale and threshold on the first ``n`` pretraining scans (in place)."""
    x = torch.from_numpy(cohort.images[:n, None])
    return recalibrate_density(model.net, x, torch.from_numpy(cohort.labels[:n]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "pretrained", nargs="+", help="model folder(s), or default (the bundled model); several: see --select"
    )
    ap.add_argument("sim", type=Path, help="folder with pretrain/ and heldout/ cohorts")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pretrain", type=Path, help="the pretraining cohort (default: SIM/pretrain)")
    ap.add_argument("--select", type=Path, help="cohort that chooses among several models (not held-out)")
    ap.add_argument("--seeds", nargs="+", default=["100"], help="its simulation seeds, for the card")
    ap.add_argument("--calibration-scans", type=int, default=120)
    ap.add_argument("--note", default="", help="how it was pretrained (stages), for the card")
    a = ap.parse_args()
    if len(a.pretrained) > 1 and a.select is None:
        ap.error("several models need --select, a cohort to choose among them")
    pre = a.pretrain or a.sim / "pretrain"
    a.pretrained = [resolve_model_dir(p) for p in a.pretrained]
    models = [load_candidate(path) for path in a.pretrained]
    cohort = load_cohort(pre / "scans", pre / "train.csv", models[0].preprocess, pre / "masks")
    n = min(a.calibration_scans, len(cohort))
    fits = [refit(model, cohort, n) for model in models]
    best, selection = 0, None
    if len(models) > 1:
        scores = [evaluate(model, a.select)["counts"]["icc21"] for model in models]
        for path, icc in zip(a.pretrained, scores):
            print(f"{path}: ICC(2,1) on {a.select} after the refit {icc:.3f}", flush=True)
        best = int(np.argmax(scores))
        names = [f"{p.parent.name} (last epoch)" if p.name == "resume" else p.name for p in a.pretrained]
        selection = {"cohort": a.select.name, "icc21": dict(zip(names, scores)), "chosen": names[best]}
    path, model, fit = a.pretrained[best], models[best], fits[best]
    print(f"chosen: {path}; recalibration: {fit}")
    result = evaluate(model, a.sim / "heldout")
    print("held-out:", result)
    c, d = result["counts"], result["detection"]
    config = dict(model.config)
    config.update(
        name="default",
        validation={**c, "cohort": f"{_held_out(a.sim / 'heldout', c['n'])} (not used in training)"},
        detection={**d, "radius_voxels": 3},
        notice=(
            "Research use only; not for clinical use. Trained on simulated data only: "
            "fine-tune it on labelled scans of your own cohort before trusting its counts."
        ),
    )
    training = config["training"]
    sim = a.sim.resolve()
    training["labels_file"] = portable(training.get("labels_file"), sim)
    training["settings"] = {k: portable(v, sim) for k, v in training.get("settings", {}).items()}
    config["training"] = dict(
        training,
        data=(
            f"{len(cohort)} simulated PD/T2-like basal-ganglia scans (benchmarks/simulate.py, "
            f"seed{'s' if len(a.seeds) > 1 else ''} {_listed(a.seeds)}, "
            "MNI152 anatomy, EPVS-like lesions with confounders), pretrained on their lesion masks, "
            f"count scale and threshold refit on {n} of them" + (f"; {a.note}" if a.note else "")
        ),
        recalibration=fit,
        **({"selection": selection} if selection else {}),
    )
    save_model(a.out, model.net, config)
    print(
        f"saved to {a.out}: held-out ICC(2,1) {c['icc21']:.3f}, MAE {c['mae']:.2f}, "
        f"sensitivity {d['tpr']:.2f} at {d['fp_per_scan']:.2f} FP/scan"
    )


if __name__ == "__main__":
    main()
