"""The one training loop: set-sum augmentation over weight-sharing heads (000 §2–3).

``train`` is a generator of event dicts (``status``, ``start``, ``step``, ``epoch``,
``checkpoint``, ``done``); the CLI prints them, the plugin's child process streams them as
JSON lines. Stopping (``should_stop``), a time limit, early stopping and the end of the
epochs all leave the best checkpoint in the output folder and, once an epoch has finished
(a fine-tune's epoch 0, the starting model, included), a resumable state in ``resume/``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .augment import augment, smooth
from .calibrate import calibrate_output, recalibrate, recalibrate_density
from .data import Cohort, load_cohort, split_validation
from .device import place, select_device
from .errors import HydranetError
from .io import check_folder_output, held_files, scan_place, unlisted_scans, write_csv
from .metrics import SCALE_APART, agreement
from .models import DEFAULT_NAME, WEIGHTS, build_net, load_model, resolve_model_dir, save_model
from .nets import ARCHITECTURES
from .options import DENSITY_TARGETS, EPOCHS, INTENSITY_REFERENCES, LOSSES, LR_SCHEDULES
from .preprocess import MAX_CROP, MIN_CROP, MedianNotPositive, PreprocessConfig
from .provenance import file_sha256, software_versions
from .resume import load_state, read_state, save_state
from .setsum import BLACK, epoch_batches, set_sum_loss, with_black
from .text import figure, plural
from .texture import texture_range

# Adam's first steps move every weight by about lr at once: with 3D convolutions of fan-in
# ~800 that changes each layer's output by ~60 % at 1e-3 and the count explodes or dies;
# 1e-4 with a short linear warm-up trains steadily (docs/benchmarks.md).
OPTIMIZERS = {"adam": (torch.optim.Adam, 1e-4), "adadelta": (torch.optim.Adadelta, 1.0)}
WARMUP_STEPS = 30
COSINE_FLOOR = 0.01  # the cosine schedule ends at this fraction of the learning rate
# Below this, choosing epochs on validation was a coin toss in the benchmarks: with 12 scans
# (2 held out) a kept recalibration and fine-tune fell to ICC 0.57 and 0.39 from 0.79.
MIN_RELIABLE_VAL = 5
# Count fine-tunes stop after this many epochs without a better validation score. Their best
# epochs came early, and a "best" found later among 5 validation scans was mostly noise the
# test scans did not confirm (one training set: epoch 12 test ICC 0.69, epoch 50 0.62).
FINETUNE_PATIENCE = 10
REFIT_SCANS = 120  # training scans for the count refit that scores pretraining checkpoints
# What --resume may change: how long and where the run goes on. Every other setting defines the
# data, the network, its preprocessing or the optimisation, so a resume must repeat it.
RESUME_MAY_CHANGE = {"out", "epochs", "time_limit", "patience", "device", "recalibrate", "recalibrate_only"}
PATH_SETTINGS = {"scans_dir", "labels", "val_labels", "masks_dir", "density_dir", "init"}
# What a setting was before resume states stored it (its default has changed since).
SAVED_BEFORE = {"intensity_reference": "percentile"}
# The CLI's names for settings whose flag is not --<name with dashes>.
FLAGS = {
    "scans_dir": "the scans folder",
    "masks_dir": "--masks",
    "density_dir": "--density",
    "crop_shape": "--crop",
    "label_unit": "--unit",
    "augment": "augmentation (--no-augment)",
}


@dataclass
class TrainConfig:
    """Everything a training run needs; saved in the model's config.json."""

    scans_dir: str
    labels: str
    out: str
    arch: str = "gpunet"
    arch_args: dict = field(default_factory=dict)
    heads: int = 4
    p_black: float = 0.1
    sets_per_batch: int = 1
    epochs: int = EPOCHS
    val_fraction: float = 0.2
    val_labels: str | None = None
    masks_dir: str | None = None
    init: str | None = None
    loss: str = "mse"
    optimizer: str = "adam"
    lr: float | None = None
    lr_schedule: str = "constant"  # or "cosine": decays to COSINE_FLOOR × lr over the epochs
    seed: int = 0
    device: str = "auto"
    augment: bool = True
    patience: int | None = None  # None: FINETUNE_PATIENCE for fine-tunes, off otherwise; 0: off
    time_limit: float | None = None  # minutes
    scan_column: str = "scan"
    label_column: str = "label"
    label_name: str = "lesion count"
    label_unit: str = "lesions"
    crop_shape: tuple[int, int, int] | None = (64, 52, 40)
    intensity_reference: str = "auto"  # from scratch only (``reference()``); --init keeps the model's
    density_dir: str | None = None  # lesion label masks: pretraining on simulated data only
    density_target: str = "voxels"  # data.lesion_target's kind: "voxels" or "lesions"
    count_weight: float = 0.0  # pretraining: weight of the count loss beside the lesion-map loss
    lesion_weight: float = 20.0  # pretraining: weight of lesion voxels in the lesion-map loss
    augment_smooth: float = 0.0  # pretraining: probability of blurring a training view (``smooth``)
    recalibrate: bool = True  # fine-tunes: refit the count first, kept if validation agrees
    recalibrate_only: bool = False  # fine-tunes: only that (seconds), no gradient steps

    def reference(self) -> str:
        """The intensity reference of a training from scratch; ``auto`` picks the median for a
        GP-UNet trained on counts and the 99th percentile otherwise (docs/benchmarks.md,
        "Fairer baselines"): the GP-UNet's count sums a non-negative local density, which the
        percentile's darkening of scans with many lesions turns backwards, while the
        regressors on WMH volumes did better with the percentile in 3 of 4 runs. Where a
        scan's median is ≤ 0, ``train`` falls back to the percentile with a note."""
        if self.intensity_reference != "auto":
            return self.intensity_reference
        return "median" if self.arch == "gpunet" and not self.density_dir else "percentile"

    def learning_rate(self) -> float:
        """The rate the optimiser runs at: ``lr``, or its optimiser's default when unset."""
        return self.lr or OPTIMIZERS[self.optimizer][1]

    def early_stop_after(self) -> int:
        """Epochs without improvement before stopping; 0 never stops early."""
        if self.patience is not None:
            return self.patience
        return FINETUNE_PATIENCE if self.init and not self.density_dir else 0

    def absolute(self) -> TrainConfig:
        """The same run with its input paths absolute, so that the model's record of its data
        and a resume from another working folder name the same files (``out`` as given)."""
        paths = {k: getattr(self, k) for k in PATH_SETTINGS - {"init"}}
        if self.init and not (isinstance(self.init, str) and self.init == DEFAULT_NAME):
            paths["init"] = self.init
        # joined, not normalised: 'data/../scans' with data a link is where the system goes
        return replace(self, **{k: str(Path(v).absolute()) for k, v in paths.items() if v})

    def validate(self) -> None:
        if str(self.out) == DEFAULT_NAME:
            raise HydranetError(
                f"--out {DEFAULT_NAME}: that name means the bundled model; choose another folder"
            )
        check_folder_output(self.out, "model folder (--out)")
        crop = self.crop_shape
        if crop is not None and not MIN_CROP <= min(crop) <= max(crop) <= MAX_CROP:
            raise HydranetError(f"--crop must be {MIN_CROP} to {MAX_CROP} voxels along each axis")
        if self.heads < 1:
            raise HydranetError("--heads must be ≥ 1")
        if self.sets_per_batch < 1:
            raise HydranetError("--sets-per-batch must be ≥ 1")
        if self.seed < 0:
            raise HydranetError("--seed must be ≥ 0")
        for name, value in (("lr", self.lr), ("time-limit", self.time_limit)):
            if value is not None and not value > 0:
                raise HydranetError(f"--{name} must be > 0")
        if not 0 <= self.augment_smooth <= 1:
            raise HydranetError("--augment-smooth must be in [0, 1]")
        if self.augment_smooth and not self.augment:
            raise HydranetError("--augment-smooth is part of the augmentation; leave out --no-augment")
        if self.augment_smooth and not self.density_dir:
            raise HydranetError(
                "--augment-smooth needs --density (lesion masks): on counts alone, smoothed views "
                'taught the network their texture (docs/benchmarks.md, "Augmentation")'
            )
        if not self.lesion_weight > 0 or not self.count_weight >= 0:
            raise HydranetError("--lesion-weight must be > 0 and --count-weight ≥ 0")
        if self.density_dir and not self.init and not _density_head(self.arch, self.arch_args):
            raise HydranetError("--density needs a GP-UNet with its density head (--arch gpunet)")
        if not 0 <= self.p_black < 1:
            raise HydranetError("--p-black must be in [0, 1)")
        if self.epochs < 1:
            raise HydranetError("--epochs must be ≥ 1")
        if self.patience is not None and self.patience < 0:
            raise HydranetError("--patience must be ≥ 0 (0: never stop early)")
        if self.density_target not in DENSITY_TARGETS:
            raise HydranetError(f"--density-target must be one of {', '.join(DENSITY_TARGETS)}")
        if self.loss not in LOSSES:
            raise HydranetError(f"--loss must be one of {', '.join(LOSSES)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise HydranetError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}")
        if self.intensity_reference not in ("auto", *INTENSITY_REFERENCES):
            raise HydranetError(
                f"--intensity-reference must be one of auto, {', '.join(INTENSITY_REFERENCES)}"
            )
        if self.init and self.intensity_reference not in ("auto", "percentile"):
            raise HydranetError("--intensity-reference applies from scratch only; --init keeps the model's")
        if self.optimizer not in OPTIMIZERS:
            raise HydranetError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.val_labels is None and not 0 < self.val_fraction < 1:
            raise HydranetError("--val-fraction must be in (0, 1), or give --val-labels")
        if self.recalibrate_only and not self.init:
            raise HydranetError("--recalibrate-only needs a model to start from (--init)")


def _density_head(arch: str, arch_args: dict) -> bool:
    """Whether a network maps lesion density (what ``--density`` pretraining fits)."""
    return arch == "gpunet" and arch_args.get("head", "density") == "density"


def lr_factor(step: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the learning rate at optimiser step ``step`` (from 1) of ``total_steps``.

    A linear warm-up over WARMUP_STEPS, then either constant or a cosine decay to
    COSINE_FLOOR. The step counts across resumes, so a resumed run continues the schedule.
    """
    factor = min(1.0, step / WARMUP_STEPS)
    if schedule == "cosine":
        progress = min(1.0, (step - 1) / max(total_steps - 1, 1))
        factor *= COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def lesion_map_loss(u: torch.Tensor, target: torch.Tensor, pos_weight: float = 20.0) -> torch.Tensor:
    """Voxel-wise MSE of the unscaled density ReLU(w·f + b) against a lesion target
    (``data.lesion_target``: 1 per lesion voxel, or each lesion's share of a fixed mass).

    Pretraining only. Targets of order one keep this a well-conditioned dense regression;
    the fixed count scale (lesions per unit of target) turns the map into counts. Lesion
    voxels, ~0.2 % of the crop, weigh ``pos_weight`` times more. With ``pos_weight`` 1 the
    loss's optimum at a voxel is its target's expectation, so the map's sum estimates the
    count; with w > 1 a lesion that is counted with probability p gets w·p / (w·p + 1 − p) of
    its mass (w = 20, p = 0.1: 0.69), so uncounted look-alikes add to the count.
    """
    weight = 1 + (pos_weight - 1) * (target > 0)
    return (weight * (u - target) ** 2).mean()


def check_resume_settings(cfg: TrainConfig, saved: dict, folder: Path) -> None:
    """Refuse to resume with settings other than those the training was started with.

    ``saved`` is the config in ``resume/state.json``; settings it lacks (older versions)
    count as what those versions did (SAVED_BEFORE), else as their defaults. Paths compare as
    resolved paths, the intensity reference and the learning rate as what they resolve to.
    """

    def as_json(c: TrainConfig) -> dict:  # tuples as lists, like the saved JSON
        return json.loads(json.dumps(asdict(c)))

    defaults = as_json(TrainConfig(scans_dir="", labels="", out=""))
    differ = []
    for key, value in as_json(cfg).items():
        if key in RESUME_MAY_CHANGE:
            continue
        before = saved.get(key, SAVED_BEFORE.get(key, defaults[key]))
        if key in PATH_SETTINGS and value and before:
            same = Path(value).resolve() == Path(before).resolve()
        elif key == "intensity_reference":  # as resolved then and now; a fine-tune keeps its model's
            then = replace(
                cfg, arch=saved.get("arch", cfg.arch), density_dir=saved.get("density_dir"), **{key: before}
            )
            before, value = then.reference(), cfg.reference()
            same = bool(cfg.init) or value == before
        elif key == "lr":  # unset means the optimiser's default: an explicit default is the same run
            optimizer = saved.get("optimizer", defaults["optimizer"])
            before = before or OPTIMIZERS.get(optimizer, (None, None))[1]
            value = cfg.learning_rate()
            same = value == before
        else:
            same = value == before
        if not same:
            flag = FLAGS.get(key, "--" + key.replace("_", "-"))
            differ.append(f"{flag}: {before!r} then, {value!r} now")
    if differ:
        raise HydranetError(
            f"{folder}: cannot resume with other settings than the training started with "
            f"({'; '.join(differ)}); repeat its options, or train into another --out"
        )


def _batch(cohort: Cohort, sets: list[list[int]], device):
    """The real images, every slot's label (0 where BLACK), the real-slot mask, and the real
    images' density targets (or None). Black slots never reach the network (``with_black``)."""
    flat = [i for s in sets for i in s]
    real = torch.tensor([i != BLACK for i in flat])
    used = [i for i in flat if i != BLACK]

    def stack(arrays):
        return torch.from_numpy(np.stack([arrays[i] for i in used]))[:, None].to(device)

    y = torch.tensor([float(cohort.labels[i]) if i != BLACK else 0.0 for i in flat]).to(device)
    d = stack(cohort.densities) if cohort.densities is not None else None
    return stack(cohort.images), y, real.to(device), d


@torch.no_grad()
def evaluate_counts(net, images: torch.Tensor, device, batch: int = 4) -> np.ndarray:
    net.eval()
    out = [net(images[i : i + batch].to(device)).float().cpu() for i in range(0, len(images), batch)]
    net.train()
    return torch.cat(out).numpy() if out else np.zeros(0)


def _score(metrics: dict, key: str = "icc21") -> tuple[float, float]:
    """Higher is better: ICC(2,1) (or ``key``), then lower MAE."""
    icc = metrics.get(key)
    return (icc if icc is not None and math.isfinite(icc) else -1e9, -metrics.get("mae", 1e9))


def train(
    cfg: TrainConfig, should_stop: Callable[[], bool] = lambda: False, resume: bool = False
) -> Iterator[dict]:
    """Run a training; yields events. See the module docstring."""
    cfg.validate()
    cfg = cfg.absolute()
    t0 = time.monotonic()
    out = Path(cfg.out)
    resume_dir = out / "resume"
    _check_out(out, resume)
    if resume:
        state = read_state(resume_dir)
        check_resume_settings(cfg, state["config"], out)
        if state["epoch"] >= cfg.epochs:
            raise HydranetError(
                f"{out}: ran {state['epoch']} epochs already; --epochs {cfg.epochs} leaves none to "
                "run: give the number of epochs it should reach"
            )
    device = select_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    base = load_model(resolve_model_dir(cfg.init)) if cfg.init else None
    if base is not None:
        arch, arch_args, pre = base.arch, base.config["architecture"]["args"], base.preprocess
        if pre.use_mask and cfg.masks_dir is None:
            raise HydranetError(
                f"{cfg.init}: this model counts inside ROI masks; give the folder of ROI masks "
                f"named like the scans ({FLAGS['masks_dir']}). Without them it sees whole "
                "volumes, its counts would be rescaled to fit them, and a masked prediction would "
                "then count far too low"
            )
        pre = replace(pre, use_mask=cfg.masks_dir is not None)  # what the fine-tune saw
        if cfg.density_dir and not _density_head(arch, arch_args):
            raise HydranetError(f"--density needs a GP-UNet with its density head; {cfg.init} is a {arch}")
    else:
        arch, arch_args = cfg.arch, dict(cfg.arch_args)
        pre = PreprocessConfig(
            crop_shape=cfg.crop_shape,
            use_mask=cfg.masks_dir is not None,
            intensity_reference=cfg.reference(),
        )

    yield {"event": "status", "message": "loading scans"}
    try:
        train_set, val_set, notes = _load_data(cfg, pre)
    except MedianNotPositive as exc:
        if cfg.intensity_reference != "auto":
            raise
        pre = replace(pre, intensity_reference="percentile")
        train_set, val_set, notes = _load_data(cfg, pre)
        notes.append(f"{exc}; --intensity-reference auto took the 99th percentile instead")
    if base is not None:
        labels = np.concatenate([train_set.labels, val_set.labels])
        where = "" if cfg.val_labels else f"{cfg.labels}: "  # with --val-labels, both files
        notes += check_labels_for_base(base.config, labels, where)
    labels_seen = _labels_seen(train_set, val_set)
    if resume:
        _check_same_labels(state.get("labels"), labels_seen, out)
    if base is None:  # scans with voxels outside this range are resampled when predicted
        edges = [c.spacing_range for c in (train_set, val_set) if c.spacing_range]
        pre = replace(
            pre,
            spacing_range_mm=(min(e[0] for e in edges), max(e[1] for e in edges)),
            spacing_mm=tuple(train_set.spacing),
        )
    net = base.net if base is not None else build_net(arch, arch_args)
    place(net, device).train()
    if base is None:
        _check_runs(net, train_set.images.shape[1:], arch_args, device)
    lr = cfg.learning_rate()
    opt = OPTIMIZERS[cfg.optimizer][0](net.parameters(), lr=lr)

    history: list[dict] = []
    best: dict | None = None
    start_epoch, elapsed_before = 1, 0.0
    if resume:
        load_state(resume_dir, state, net, opt, gen, rng)
        started_with = state.get("package_version", "before 0.3.0")
        if started_with != __version__:  # the training rules may have changed in between
            notes.append(
                f"this training was started by napari-hydranet {started_with} and goes on under "
                f"{__version__}'s rules (what changed: CHANGES.md)"
            )
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        elapsed_before = history[-1]["elapsed"] if history else 0.0  # the curves' time axis goes on
    elif base is None and train_set.densities is not None:
        with torch.no_grad():  # count units per unit of lesion target, from the training masks
            voxels = float(train_set.densities.sum())
            net.count_scale.fill_(float(train_set.labels.sum()) / max(voxels, 1.0))
            net.output_bias.fill_(0.0)
    elif base is None:
        probe_gen = torch.Generator().manual_seed(cfg.seed)  # leaves training's draws as they were
        calibrate_output(
            net,
            torch.from_numpy(train_set.images[:64, None]).to(device),
            torch.from_numpy(train_set.labels[:64]).to(device),
            augmented=(lambda b: augment(b, probe_gen)) if cfg.augment else None,
        )

    steps_per_epoch = len(
        epoch_batches(len(train_set), cfg.heads, cfg.p_black, cfg.sets_per_batch, np.random.default_rng(0))
    )
    meta = _model_meta(cfg, arch, arch_args, pre, train_set, val_set)
    if resume and state.get("recalibration") is not None:  # later checkpoints keep its record
        meta["training"]["recalibration"] = state["recalibration"]
    patience = cfg.early_stop_after()
    defaults = TrainConfig.__dataclass_fields__
    if base is not None and (cfg.label_name, cfg.label_unit) == (
        defaults["label_name"].default,
        defaults["label_unit"].default,
    ):  # a fine-tune counts what its base counted unless told otherwise
        meta["label"] = dict(base.label)
        settings = meta["training"]["settings"]  # as one would repeat it
        settings.update(label_name=base.label.get("name"), label_unit=base.label.get("unit"))
    yield {
        "event": "start",
        "device": str(device),
        "train": len(train_set),
        "val": len(val_set),
        "steps_per_epoch": steps_per_epoch,
        "epochs": cfg.epochs,
        "recalibrate_only": cfg.recalibrate_only,
        "start_epoch": start_epoch,
        "notes": notes,
        "label_mean": float(train_set.labels.mean()),
        "unit": meta["label"].get("unit", ""),
        "patience": patience,
        "best_epoch": best["epoch"] if best else None,
    }
    use_amp = device.type == "cuda"
    reason, epoch = "finished", start_epoch - 1
    wait = epoch - best["epoch"] if best else 0  # a resumed run keeps counting from its best
    # A pretrained model ships after a refit of its count's scale and threshold
    # (calibrate.recalibrate_density), so pretraining checkpoints are compared after that refit.
    score_key = "icc21_refit" if cfg.density_dir else "icc21"
    if score_key == "icc21_refit":
        refit_x = torch.from_numpy(train_set.images[:REFIT_SCANS, None]).to(device)
        refit_y = torch.from_numpy(train_set.labels[:REFIT_SCANS]).to(device)

    val_x = torch.from_numpy(val_set.images[:, None])

    def finish_epoch(epoch: int, loss: float, te: float) -> Iterator[dict]:
        """Validate; keep the model when it is the best so far."""
        nonlocal best
        pred = evaluate_counts(net, val_x, device)
        metrics = agreement(pred, val_set.labels)
        if score_key == "icc21_refit":
            saved = {k: v.detach().clone() for k, v in net.state_dict().items()}
            recalibrate_density(net, refit_x, refit_y)
            refit = evaluate_counts(net, val_x, device)
            metrics["icc21_refit"] = agreement(refit, val_set.labels)["icc21"]
            net.load_state_dict(saved)
        record = {
            "epoch": epoch,
            "loss": loss,
            "seconds": time.monotonic() - te,
            "elapsed": elapsed_before + time.monotonic() - t0,
            "val_pred_sd": float(np.std(pred)),
            **{f"val_{k}": v for k, v in metrics.items()},
        }
        history.append(record)
        yield {"event": "epoch", **record}
        if best is None or _score(metrics, score_key) > _score(
            {k[4:]: v for k, v in best.items() if k.startswith("val_")}, score_key
        ):
            best = record
            save_model(
                out, net, dict(meta, validation={**metrics, "epoch": epoch}, history_tail=history[-5:])
            )
            yield {
                "event": "checkpoint",
                "epoch": epoch,
                "path": str(out),
                "val_icc21": metrics["icc21"],
                "val_mae": metrics["mae"],
            }

    def save_resume(epoch: int) -> None:
        saved = {"epoch": epoch, "history": history, "best": best, "numpy_rng": rng.bit_generator.state}
        saved.update(config=asdict(cfg), package_version=__version__, labels=labels_seen)
        saved["recalibration"] = meta["training"].get("recalibration")
        save_state(resume_dir, net, opt, saved, gen)

    if base is not None and not resume:  # epoch 0: the starting model, recalibrated if that helps
        te = time.monotonic()
        if cfg.recalibrate or cfg.recalibrate_only:
            counts_before = evaluate_counts(net, val_x, device)
            before = agreement(counts_before, val_set.labels)
            saved = {k: v.detach().clone() for k, v in net.state_dict().items()}
            fit = recalibrate(
                net,
                torch.from_numpy(train_set.images[:, None]).to(device),
                torch.from_numpy(train_set.labels).to(device),
            )
            counts_after = evaluate_counts(net, val_x, device)
            after = agreement(counts_after, val_set.labels)
            # kept only when the validation scans agree: on simulated cohorts a refit to 20
            # scans sometimes lowered held-out agreement (docs/benchmarks.md)
            fit.update(val_icc21_before=before["icc21"], val_icc21_after=after["icc21"])
            fit["kept"] = _score(after) >= _score(before)
            if not fit["kept"]:
                net.load_state_dict(saved)
            meta["training"]["recalibration"] = fit
            digits = _change_digits(before["icc21"], after["icc21"])
            yield {
                "event": "status",
                "message": f"count recalibration (fitted on {len(train_set)} training scans"
                f"{_level_change(counts_before, counts_after)}) "
                f"{'kept' if fit['kept'] else 'not kept'}: validation ICC(2,1) "
                f"{_icc_text(before['icc21'], digits)} → {_icc_text(after['icc21'], digits)} "
                f"on {plural(len(val_set), 'scan')}"
                + (
                    "; the saved model is the starting one"
                    if cfg.recalibrate_only and not fit["kept"]
                    else ""
                ),
            }
        net.train()
        yield from finish_epoch(0, float("nan"), te)
        _write_history(out, history)
        if cfg.recalibrate_only:
            start_epoch, reason = cfg.epochs + 1, "recalibrated"
        else:  # a fine-tune stopped in its first epoch resumes from here
            save_resume(0)

    def stopping() -> str | None:
        if should_stop():
            return "stopped"
        if cfg.time_limit is not None and time.monotonic() - t0 > cfg.time_limit * 60:
            return "time_limit"
        return None

    for epoch in range(start_epoch, cfg.epochs + 1):
        te = time.monotonic()
        losses = []
        batches = epoch_batches(len(train_set), cfg.heads, cfg.p_black, cfg.sets_per_batch, rng)
        halt = None
        for step, sets in enumerate(batches, start=1):
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(
                    (epoch - 1) * steps_per_epoch + step, cfg.epochs * steps_per_epoch, cfg.lr_schedule
                )
            loss = _step_loss(net, cfg, _batch(train_set, sets, device), gen, use_amp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            yield {"event": "step", "epoch": epoch, "step": step, "steps": len(batches), "loss": losses[-1]}
            halt = stopping()
            if halt:
                break
        if halt and step < len(batches):
            reason = halt
            epoch -= 1
            break
        yield from finish_epoch(epoch, float(np.mean(losses)), te)
        wait = 0 if best["epoch"] == epoch else wait + 1
        save_resume(epoch)
        _write_history(out, history)
        if halt:
            reason = halt
            break
        if patience and wait >= patience:
            reason = "early_stop"
            break
    yield {
        "event": "done",
        "reason": reason,
        "message": _stop_message(reason, patience),
        "epochs": epoch,
        "best": best,
        "path": str(out),
        "seconds": time.monotonic() - t0,
    }


def _check_runs(net, shape: tuple, arch_args: dict, device) -> None:
    """Refuse network arguments that build a network unable to run on the inputs (a width of
    0, more levels than the input's size can be halved), before any training."""
    net.eval()  # batch statistics of one image are not what is checked
    try:
        with torch.no_grad():
            net(torch.full((1, 1, *shape), 0.5, device=device))  # not black: black never reaches it
    except torch.cuda.OutOfMemoryError:
        raise  # memory, not the arguments: said as torch says it
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HydranetError(
            f"--arch-args {json.dumps(arch_args)}: the network cannot run on "
            f"{'×'.join(map(str, shape))} inputs ({first})"
        ) from None
    finally:
        net.train()


def _level_change(before, after) -> str:
    """How a recalibration moves the counts' level: '; counts ×0.72' (mean over the scans)."""
    mean_before, mean_after = float(np.mean(before)), float(np.mean(after))
    return f"; counts ×{mean_after / mean_before:.2f}" if mean_before > 0 else ""


def _icc_text(icc: float, digits: int = 2) -> str:
    """An ICC for a message: "–" where it is undefined (constant counts or labels)."""
    return figure(icc, digits) if math.isfinite(icc) else "– (undefined: constant counts or labels)"


def _change_digits(a: float, b: float) -> int:
    """Decimals that show two ICCs apart (0.7956 → 0.8048 read "0.80 → 0.80" with two)."""
    return 2 if not (math.isfinite(a) and math.isfinite(b)) or round(a, 2) != round(b, 2) or a == b else 4


def _labels_seen(train_set: Cohort, val_set: Cohort) -> dict[str, list]:
    """The labels a training uses, by scan, as its resume state keeps them."""
    return {
        part: dict(zip(c.names, c.labels.tolist()))
        for part, c in (("training", train_set), ("validation", val_set))
    }


def _check_same_labels(before: dict | None, now: dict, out: Path) -> None:
    """Refuse to resume on labels other than those the training began with (an edited labels
    CSV, other scans): the history and the saved model would mix two sets of labels. States
    saved by earlier versions did not keep them."""
    if before is None or before == now:
        return
    what = "the labels differ"
    for part in ("training", "validation"):
        old, new = before.get(part, {}), now[part]
        changed = sorted(n for n in old.keys() & new.keys() if old[n] != new[n])
        if changed:
            n = changed[0]
            what = f"{plural(len(changed), 'label')} changed, e.g. {n}: {old[n]:g} → {new[n]:g}"
            break
        if old.keys() != new.keys():
            what = f"the {part} scans differ ({len(old)} then, {len(new)} now)"
            break
    raise HydranetError(
        f"{out}: cannot resume: {what} since this training started; a training goes on with the "
        f"labels it began with. Start a new one (another --out; --init {out} starts from its model)"
    )


def _check_out(out: Path, resume: bool) -> None:
    """Refuse an output folder that holds anything a new training would overwrite, or a
    resume without a resume state."""
    if resume:
        if not (out / "resume" / "state.json").exists():
            raise HydranetError(f"{out}: nothing to resume (no resume/state.json)")
        return
    if (out / WEIGHTS).exists():
        raise HydranetError(
            f"{out}: already holds a model; use --resume to continue it or choose another --out"
        )
    held = held_files(out)
    if held:  # the user's files stay theirs (hidden ones, like .DS_Store, are no one's)
        raise HydranetError(
            f"{out}: already holds {', '.join(held[:3])}{' …' if len(held) > 3 else ''}; a new model "
            "needs a new or empty folder (--out), so that nothing in it is overwritten"
        )


def _step_loss(net, cfg: TrainConfig, batch, gen: torch.Generator, use_amp: bool) -> torch.Tensor:
    """One optimiser step's loss: set-sum on the counts, and in pretraining the lesion map's
    weighted MSE beside it (``count_weight`` × set-sum)."""
    x, y, real, d = batch
    if cfg.augment:
        if d is None:
            x = augment(x, gen)
        else:  # the lesion target moves with its scan
            both = augment(torch.cat([x, d], 1), gen)
            x, d = both[:, :1], both[:, 1:]
            if cfg.augment_smooth:
                x = smooth(x, gen, cfg.augment_smooth)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        if d is None:
            pred = net(x)
        else:
            pred, heat = net.forward_both(x)
    loss = set_sum_loss(with_black(pred.float(), real), y, cfg.heads, cfg.loss)
    if d is None:
        return loss
    u, target = with_black(heat.float() / net.count_scale, real), with_black(d[:, 0], real)
    return cfg.count_weight * loss + lesion_map_loss(u, target, cfg.lesion_weight)


def _stop_message(reason: str, patience: int) -> str:
    """Why a training ended, in words for the CLI and the Train dock."""
    return {
        "finished": "all epochs done",
        "stopped": "stopped on request",
        "time_limit": "time limit reached",
        "early_stop": f"no better validation score in {patience} epochs",
        "recalibrated": "recalibration only",
    }.get(reason, reason)


def check_labels_for_base(config: dict, labels: np.ndarray, where: str = "") -> list[str]:
    """Refuse labels that a fine-tune of the model ``config`` describes cannot learn: a GP-UNet
    keeps what its heatmap responds to and refits only the count's scale, so labels whose mean
    is ``SCALE_APART`` times its training labels' or more (a volume against counts) would give
    a model that still counts what it counted, under their name. Labels that many times lower
    may be a cohort with few lesions: a note, not a refusal."""
    arch = ARCHITECTURES.get(config.get("architecture", {}).get("name"))
    if arch is None or not arch.has_heatmap:  # a regressor's refit can take another unit
        return []
    seen = config.get("training") or {}
    theirs, ours = seen.get("label_mean"), float(np.mean(labels)) if len(labels) else 0.0
    if not theirs or theirs <= 0 or ours <= 0 or 1 / SCALE_APART < ours / theirs < SCALE_APART:
        return []
    low, high = seen.get("label_range", [0, 0])
    label = config.get("label", {})
    apart = (
        f"they average {ours:.4g} ({labels.min():.4g}–{labels.max():.4g}), about "
        f"{max(ours / theirs, theirs / ours):.0f}× apart from those it was trained on "
        f"({label.get('name', 'count')}, mean {theirs:.4g}, {low:.4g}–{high:.4g} {label.get('unit', '')})"
    )
    if ours < theirs:
        return [
            f"these labels are far lower than the model's: {apart}. A fine-tune keeps what the "
            "model responds to: labels of another finding or unit need a training from scratch"
        ]
    raise HydranetError(
        f"{where}a fine-tune of this model cannot learn these labels: {apart}. A fine-tune keeps "
        "what the model responds to, so it cannot learn another finding or a volume; train from "
        "scratch instead (for volumes, a regressor: --arch regressor, with --label-name and --unit)"
    )


def _load_data(cfg: TrainConfig, pre: PreprocessConfig) -> tuple[Cohort, Cohort, list[str]]:
    cohort = load_cohort(
        cfg.scans_dir,
        cfg.labels,
        pre,
        cfg.masks_dir,
        cfg.scan_column,
        cfg.label_column,
        cfg.density_dir,
        cfg.density_target,
    )
    notes = list(cohort.notes)
    if cfg.val_labels:
        val = load_cohort(
            cfg.scans_dir, cfg.val_labels, pre, cfg.masks_dir, cfg.scan_column, cfg.label_column
        )

        def files(c: Cohort) -> dict:  # sub-1.nii.gz and ../scans/sub-1.nii.gz are one scan
            return {scan_place(Path(cfg.scans_dir) / n): n for n in c.names}

        overlap = sorted(files(val)[f] for f in files(val).keys() & files(cohort).keys())
        if overlap:
            verb = "is" if len(overlap) == 1 else "are"
            raise HydranetError(
                f"{cfg.val_labels}: {plural(len(overlap), 'scan')} {verb} also in the training labels, "
                f"e.g. {overlap[0]}"
            )
        if len(cohort) < 2:
            raise HydranetError(
                f"{cfg.labels}: {plural(len(cohort), 'labelled scan')} to train on; label at least 2"
            )
        train_set, val_set, notes = cohort, val, notes + val.notes
    else:
        train_set, val_set = split_validation(cohort, cfg.val_fraction, cfg.seed)
    unlisted = unlisted_scans(cfg.scans_dir, train_set.listed | val_set.listed)
    if unlisted:
        notes.append(unlisted)
    if np.ptp(np.concatenate([train_set.labels, val_set.labels])) == 0:
        notes.append(
            f"every label is {train_set.labels[0]:g}: the network can learn only that level, "
            "and the validation ICC cannot measure agreement; check the labels column"
        )
    if not cfg.recalibrate_only and cfg.heads > len(train_set) / 2:
        notes.append(
            f"{cfg.heads} heads for {len(train_set)} training scans: an epoch holds only "
            f"{plural(-(-len(train_set) // cfg.heads), 'set')}, so the network learns little beyond "
            "their total; use fewer heads (the Hydranet paper used 4 for 25 scans)"
        )
    if len(val_set) < MIN_RELIABLE_VAL:
        notes.append(
            f"only {len(val_set)} validation scans: the best epoch (and whether a recalibration "
            f"is kept) is chosen on them, which is little better than chance below "
            f"{MIN_RELIABLE_VAL}; label more scans or check the model on held-out scans"
        )
    return train_set, val_set, notes


def _model_meta(cfg, arch, arch_args, pre, train_set: Cohort, val_set: Cohort) -> dict:
    labels = train_set.labels
    return {
        "name": Path(cfg.out).name,
        "architecture": {"name": arch, "args": arch_args},
        "preprocess": pre.to_dict(),
        "label": {"name": cfg.label_name, "unit": cfg.label_unit},
        "training": {
            "data": f"{len(train_set)} training and {len(val_set)} validation scans from {cfg.scans_dir}",
            "scans_dir": str(cfg.scans_dir),  # the split's names are relative to it
            "labels_file": str(cfg.labels),
            "label_range": [float(labels.min()), float(labels.max())],
            "label_mean": float(labels.mean()),
            "spacing_mm": train_set.spacing,
            "noise_texture": _texture_seen(train_set, val_set),
            "settings": {k: v for k, v in asdict(cfg).items() if k not in ("scans_dir", "labels", "out")},
            "labels_sha256": {str(f): file_sha256(f) for f in (cfg.labels, cfg.val_labels) if f},
            "split": _labels_seen(train_set, val_set),  # every scan and label, by part
            "software": software_versions(),
        },
        "notice": "Research use only; not for clinical use.",
    }


def _texture_seen(train_set: Cohort, val_set: Cohort) -> dict | None:
    """The noise texture of the scans the model saw, training and validation together
    (``texture.texture_range``), and where it was measured."""
    if train_set.texture_region != val_set.texture_region:
        return None
    span = texture_range(train_set.textures + val_set.textures)
    return {"region": train_set.texture_region, "range": span} if span else None


def _write_history(out: Path, history: list[dict]) -> None:
    keys = list(history[0].keys())
    write_csv(out / "history.csv", keys, [[h.get(k) for k in keys] for h in history])
