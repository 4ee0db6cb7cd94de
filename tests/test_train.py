"""Training on a small synthetic cohort (CPU, within CI's time)."""

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_hydranet import __version__
from napari_hydranet.errors import HydranetError
from napari_hydranet.infer import predict_file
from napari_hydranet.io import read_scan
from napari_hydranet.metrics import agreement
from napari_hydranet.models import load_model
from napari_hydranet.nets import HydraRegressor
from napari_hydranet.preprocess import prepare
from napari_hydranet.texture import texture_range
from napari_hydranet.train import (
    COSINE_FLOOR,
    FINETUNE_PATIENCE,
    WARMUP_STEPS,
    TrainConfig,
    _change_digits,
    check_resume_settings,
    lesion_map_loss,
    lr_factor,
    train,
)

CROP = (40, 36, 28)


def _cfg(cohort, out, **kw):
    base = dict(
        scans_dir=str(cohort / "scans"),
        labels=str(cohort / "train.csv"),
        out=str(out),
        masks_dir=str(cohort / "masks"),
        crop_shape=CROP,
        arch="regressor",
        arch_args={"width": 8},
        epochs=12,
        val_fraction=0.2,
        seed=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def _held_out_icc(cohort, model_dir):
    model = load_model(model_dir)
    labels = dict(line.split(",") for line in (cohort / "test.csv").read_text().split()[1:])
    preds = [
        predict_file(model, cohort / "scans" / s, "cpu", cohort / "masks", flips=1)[0].count for s in labels
    ]
    return agreement(preds, [float(v) for v in labels.values()])


@pytest.mark.parametrize("heads, p_black", [(4, 0.1), (1, 0.0)], ids=["set-sum", "base"])
def test_training_learns_counts(cohort, tmp_path, heads, p_black):
    events = list(train(_cfg(cohort, tmp_path / "m", heads=heads, p_black=p_black)))
    epochs = [e for e in events if e["event"] == "epoch"]
    assert len(epochs) == 12 and events[-1]["event"] == "done"
    assert epochs[0]["val_pred_sd"] > 0.1  # not one constant from the start
    result = _held_out_icc(cohort, tmp_path / "m")
    print(f"held-out {heads} heads: {result}")
    assert result["icc31"] > 0.5, result
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["training"]["settings"]["heads"] == heads and "validation" in cfg
    # a methods section's record: the split, scan by scan, the labels file's digest, the software
    split, listed = cfg["training"]["split"], _labels_of(cohort / "train.csv")
    assert {**split["training"], **split["validation"]} == listed and len(split["validation"]) == 5
    digest = hashlib.sha256((cohort / "train.csv").read_bytes()).hexdigest()
    assert cfg["training"]["labels_sha256"] == {str(cohort / "train.csv"): digest}
    assert cfg["training"]["software"]["torch"] == torch.__version__
    assert "the scans that chose this epoch" in load_model(tmp_path / "m").card()  # not held out


def _labels_of(table) -> dict[str, float]:
    return {s: float(v) for s, v in (line.split(",") for line in table.read_text().split()[1:])}


def test_black_slots_never_reach_the_network(cohort, tmp_path, monkeypatch):
    forward, inputs = HydraRegressor.forward, []

    def recording(self, x):
        inputs.append(x.detach().flatten(1).abs().amax(1))
        return forward(self, x)

    monkeypatch.setattr(HydraRegressor, "forward", recording)
    list(train(_cfg(cohort, tmp_path / "m", heads=4, p_black=0.5, epochs=2)))
    peaks = torch.cat(inputs)
    assert len(peaks) > 0 and bool((peaks > 0).all())  # f(B) = 0 by definition, not by output


def test_stop_keeps_checkpoint_and_resume_continues(cohort, tmp_path):
    out = tmp_path / "m"
    seen = []

    def stop():
        return sum(e["event"] == "epoch" for e in seen) >= 2

    for ev in train(_cfg(cohort, out, epochs=6), should_stop=stop):
        seen.append(ev)
    assert seen[-1]["reason"] == "stopped" and (out / "weights.safetensors").exists()
    state = json.loads((out / "resume" / "state.json").read_text())
    assert state["epoch"] == 2
    with pytest.raises(HydranetError, match="already holds a model"):
        list(train(_cfg(cohort, out, epochs=6)))
    # a resume must repeat what defines the run: its preprocessing, network and optimisation
    with pytest.raises(HydranetError, match="--intensity-reference: 'percentile' then, 'median' now"):
        list(train(_cfg(cohort, out, epochs=4, intensity_reference="median"), resume=True))
    with pytest.raises(HydranetError, match="--crop"):
        list(train(_cfg(cohort, out, epochs=4, crop_shape=None), resume=True))
    assert json.loads((out / "resume" / "state.json").read_text())["epoch"] == 2  # refused: untouched
    events = list(train(_cfg(cohort, out, epochs=4, time_limit=30.0), resume=True))
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [3, 4]
    # the history's time goes on from the stop, so curves and minutes-to-best span both runs
    history = json.loads((out / "resume" / "state.json").read_text())["history"]
    assert len(history) == 4 and history[2]["elapsed"] >= history[1]["elapsed"] + history[2]["seconds"]
    with pytest.raises(HydranetError, match="ran 4 epochs already; --epochs 4 leaves none to run"):
        list(train(_cfg(cohort, out, epochs=4, time_limit=30.0), resume=True))


def test_a_run_given_relative_paths_resumes_from_another_folder(cohort, tmp_path, monkeypatch):
    """The model records where its data are, and a resume compares the same files, whichever
    folder the command runs in."""

    def relative(to):
        monkeypatch.chdir(to)
        names = ("scans", "train.csv", "masks")
        return dict(zip(("scans_dir", "labels", "masks_dir"), (os.path.relpath(cohort / n) for n in names)))

    out = tmp_path / "m"
    epochs = []
    for ev in train(_cfg(cohort, out, epochs=3, **relative(cohort)), should_stop=lambda: bool(epochs)):
        if ev["event"] == "epoch":
            epochs.append(ev)
    assert os.path.isabs(json.loads((out / "resume" / "state.json").read_text())["config"]["scans_dir"])
    events = list(train(_cfg(cohort, out, epochs=3, **relative(tmp_path)), resume=True))
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [2, 3]
    config = json.loads((out / "config.json").read_text())["training"]
    assert os.path.isabs(config["labels_file"])
    assert Path(config["labels_file"]).resolve() == (cohort / "train.csv").resolve()


def test_lr_schedules_warm_up_then_hold_or_decay():
    total = 1000
    assert lr_factor(1, total, "constant") == pytest.approx(1 / WARMUP_STEPS)
    assert lr_factor(WARMUP_STEPS, total, "constant") == 1.0 == lr_factor(total, total, "constant")
    cosine = [lr_factor(s, total, "cosine") for s in range(WARMUP_STEPS, total + 1)]
    assert all(a >= b for a, b in zip(cosine, cosine[1:]))
    assert cosine[-1] == pytest.approx(COSINE_FLOOR)
    assert lr_factor(total // 2, total, "cosine") == pytest.approx(0.5 * (1 + COSINE_FLOOR), abs=0.01)


def test_cosine_schedule_ends_training_at_its_floor(cohort, tmp_path):
    out = tmp_path / "m"
    events = list(train(_cfg(cohort, out, epochs=3, lr=1e-3, lr_schedule="cosine")))
    steps = 3 * next(e for e in events if e["event"] == "start")["steps_per_epoch"]
    last_lr = json.loads((out / "resume" / "state.json").read_text())["param_groups"][0]["lr"]
    # this short run is still warming up: the floor times the warm-up's fraction
    assert last_lr == pytest.approx(1e-3 * COSINE_FLOOR * steps / WARMUP_STEPS, rel=0.05)
    with pytest.raises(HydranetError, match="lr-schedule"):
        list(train(_cfg(cohort, tmp_path / "n", lr_schedule="step")))


def test_intensity_reference_is_kept_with_the_model_and_used_to_predict(cohort, tmp_path):
    out = tmp_path / "m"
    list(train(_cfg(cohort, out, epochs=1, intensity_reference="median")))
    model = load_model(out)
    assert model.preprocess.intensity_reference == "median"
    assert model.preprocess.spacing_range_mm == pytest.approx((1.0, 1.2))  # the cohort's voxel edges
    assert model.preprocess.spacing_mm == pytest.approx((1.0, 1.0, 1.2))
    scan = cohort / "scans" / sorted(p.name for p in (cohort / "scans").iterdir())[0]
    median = predict_file(model, scan, "cpu", cohort / "masks", flips=1)[0].count
    model.config["preprocess"]["intensity_reference"] = "percentile"
    assert predict_file(model, scan, "cpu", cohort / "masks", flips=1)[0].count != pytest.approx(median)
    with pytest.raises(HydranetError, match="intensity-reference must be"):
        list(train(_cfg(cohort, tmp_path / "n", intensity_reference="zscore")))
    with pytest.raises(HydranetError, match="--init keeps the model's"):
        list(train(_cfg(cohort, tmp_path / "n", init=str(out), intensity_reference="median")))


def test_auto_reference_is_the_median_for_gpunet_counts_only(cohort, tmp_path):
    assert _cfg(cohort, tmp_path).reference() == "percentile"  # the regressor
    assert _cfg(cohort, tmp_path, arch="gpunet").reference() == "median"
    assert _cfg(cohort, tmp_path, arch="gpunet", density_dir="d").reference() == "percentile"
    assert _cfg(cohort, tmp_path, arch="gpunet", intensity_reference="percentile").reference() == "percentile"
    out = tmp_path / "m"
    cfg = _cfg(cohort, out, arch="gpunet", arch_args={"features": [4, 8]}, epochs=1)
    list(train(cfg))
    assert load_model(out).preprocess.intensity_reference == "median"
    # a run saved before the setting was stored used the percentile, and resumes only with it
    path = out / "resume" / "state.json"
    state = json.loads(path.read_text())
    del state["config"]["intensity_reference"]
    path.write_text(json.dumps(state))
    with pytest.raises(HydranetError, match="--intensity-reference: 'percentile' then, 'median' now"):
        list(train(replace(cfg, epochs=2), resume=True))
    events = list(train(replace(cfg, epochs=2, intensity_reference="percentile"), resume=True))
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [2]


def test_auto_reference_falls_back_to_the_percentile_on_z_scored_scans(cohort, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    for path in (cohort / "scans").iterdir():
        img = nib.load(path)
        data = img.get_fdata()
        nib.save(nib.Nifti1Image((data - data.mean()) / data.std(), img.affine), scans / path.name)
    cfg = _cfg(cohort, tmp_path / "m", arch="gpunet", arch_args={"features": [4, 8]}, epochs=1)
    cfg = replace(cfg, scans_dir=str(scans), masks_dir=None)  # whole volumes: the median is ≤ 0
    start = next(e for e in list(train(cfg)) if e["event"] == "start")
    assert any("took the 99th percentile instead" in n for n in start["notes"])
    assert load_model(tmp_path / "m").preprocess.intensity_reference == "percentile"
    with pytest.raises(HydranetError, match=r"sub-\d+.*median intensity is"):  # asked for: refused
        list(train(replace(cfg, out=str(tmp_path / "n"), intensity_reference="median")))


def test_a_fine_tune_resumes_whatever_its_intensity_reference_setting(cohort, tmp_path):
    cfg = _cfg(cohort, tmp_path, init="default")
    saved = json.loads(json.dumps({**vars(cfg), "intensity_reference": "percentile"}))
    check_resume_settings(cfg, saved, tmp_path)  # auto now, percentile then: the model's either way
    with pytest.raises(HydranetError, match=r"--heads: 4 then, 2 now"):
        check_resume_settings(replace(cfg, heads=2), saved, tmp_path)


def test_resume_compares_the_learning_rate_the_optimiser_ran_at(cohort, tmp_path):
    cfg = _cfg(cohort, tmp_path)
    saved = json.loads(json.dumps(vars(cfg)))  # lr unset: Adam's default, 1e-4
    check_resume_settings(replace(cfg, lr=1e-4), saved, tmp_path)  # the same rate, now explicit
    with pytest.raises(HydranetError, match=r"--lr: 0.0001 then, 0.001 now"):
        check_resume_settings(replace(cfg, lr=1e-3), saved, tmp_path)
    explicit = json.loads(json.dumps(vars(replace(cfg, lr=1e-4))))
    check_resume_settings(cfg, explicit, tmp_path)  # and the other way round
    adadelta = json.loads(json.dumps(vars(replace(cfg, optimizer="adadelta"))))
    check_resume_settings(replace(cfg, optimizer="adadelta", lr=1.0), adadelta, tmp_path)
    # each side's unset rate is its own optimiser's default: Adadelta's 1.0 then, 1.0 now
    with pytest.raises(HydranetError) as refused:
        check_resume_settings(replace(cfg, lr=1.0), adadelta, tmp_path)
    assert "--optimizer: 'adadelta' then, 'adam' now" in str(refused.value)
    assert "--lr" not in str(refused.value)


def test_time_limit_stops_cleanly(cohort, tmp_path):
    events = list(train(_cfg(cohort, tmp_path / "m", epochs=50, time_limit=0.001)))
    assert events[-1]["reason"] == "time_limit"


def test_fine_tune_gpunet_from_a_model_folder(cohort, tmp_path):
    first = _cfg(cohort, tmp_path / "a", arch="gpunet", arch_args={"features": [4, 8]}, epochs=1)
    list(train(replace(first, label_name="EPVS count", label_unit="EPVS")))
    events = list(train(_cfg(cohort, tmp_path / "b", init=str(tmp_path / "a"), epochs=1)))
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["label"] == {"name": "EPVS count", "unit": "EPVS"}  # what its base counts, and its
    assert cfg["training"]["settings"]["label_name"] == "EPVS count"  # settings say so, as repeated
    pre, names = load_model(tmp_path / "b").preprocess, (cohort / "train.csv").read_text().splitlines()[1:]
    textures = [  # the noise texture of every scan it saw, training and validation
        prepare(read_scan(cohort / "scans" / n), pre, read_scan(cohort / "masks" / n)).texture
        for n in (line.split(",")[0] for line in names)
    ]
    assert cfg["training"]["noise_texture"] == {"region": "ROI", "range": texture_range(textures)}
    assert cfg["architecture"]["name"] == "gpunet" and cfg["architecture"]["args"] == {"features": [4, 8]}
    assert events[-1]["event"] == "done" and np.isfinite(events[-1]["best"]["val_mae"])
    assert (
        events[-1]["epochs"] == 1
        and cfg["training"]["recalibration"]["mse_after"] <= (cfg["training"]["recalibration"]["mse_before"])
    )
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [0, 1]  # 0: the start, refit

    # stopped (Ctrl-C) in its first epoch of steps: the refitted start is kept and resumes
    steps = []
    for ev in train(
        _cfg(cohort, tmp_path / "c", init=str(tmp_path / "a"), epochs=2), should_stop=lambda: bool(steps)
    ):
        if ev["event"] == "step":
            steps.append(ev)
    assert ev["event"] == "done" and ev["reason"] == "stopped" and ev["best"]["epoch"] == 0
    events = list(train(_cfg(cohort, tmp_path / "c", init=str(tmp_path / "a"), epochs=2), resume=True))
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    state = json.loads((tmp_path / "c" / "resume" / "state.json").read_text())
    assert state["epoch"] == 2 and "kept" in state["recalibration"]  # later checkpoints keep the record


def test_a_fine_tune_needs_the_masks_its_model_was_trained_in(cohort, tmp_path):
    """Without them the refit rescales the count to whole volumes (×0.14 on a user's cohort), and
    the model, still saying it uses ROI masks, then counted masked scans 7× too low."""
    with pytest.raises(HydranetError, match=r"^default: this model counts inside ROI masks; give .*--masks"):
        list(train(_cfg(cohort, tmp_path / "m", init="default", masks_dir=None)))
    assert not (tmp_path / "m").exists()
    # a model trained on whole volumes, fine-tuned inside masks, says it was
    unmasked = _cfg(cohort, tmp_path / "a", arch="gpunet", arch_args={"features": [4, 8]}, epochs=1)
    list(train(replace(unmasked, masks_dir=None)))
    assert not load_model(tmp_path / "a").preprocess.use_mask
    list(train(_cfg(cohort, tmp_path / "b", init=str(tmp_path / "a"), epochs=1)))
    assert load_model(tmp_path / "b").preprocess.use_mask


def test_fine_tunes_stop_early_by_default(cohort, tmp_path):
    assert _cfg(cohort, tmp_path, init="m").early_stop_after() == FINETUNE_PATIENCE
    assert _cfg(cohort, tmp_path).early_stop_after() == 0  # from scratch: runs to its limits
    assert _cfg(cohort, tmp_path, init="m", density_dir="d").early_stop_after() == 0  # pretraining
    list(train(_cfg(cohort, tmp_path / "a", epochs=1)))
    # a learning rate far too high: no epoch beats the start, so it stops after the patience
    events = list(train(_cfg(cohort, tmp_path / "b", init=str(tmp_path / "a"), epochs=60, lr=1.0)))
    done = events[-1]
    assert done["reason"] == "early_stop"
    assert done["message"] == f"no better validation score in {FINETUNE_PATIENCE} epochs"
    assert done["epochs"] == done["best"]["epoch"] + FINETUNE_PATIENCE < 60
    # stopped and resumed, it counts the epochs since its best from before the stop
    cfg = _cfg(cohort, tmp_path / "c", init=str(tmp_path / "a"), epochs=60, lr=1.0)
    seen = []
    for ev in train(cfg, should_stop=lambda: sum(e["event"] == "epoch" for e in seen) >= 4):
        seen.append(ev)
    assert seen[-1]["reason"] == "stopped" and seen[-1]["epochs"] < done["epochs"]
    resumed = list(train(cfg, resume=True))
    assert resumed[-1]["epochs"] == done["epochs"]
    start = next(e for e in resumed if e["event"] == "start")  # what the Train dock's estimate uses
    assert start["patience"] == FINETUNE_PATIENCE and start["best_epoch"] == done["best"]["epoch"]
    with pytest.raises(HydranetError, match="--patience"):
        list(train(_cfg(cohort, tmp_path / "d", patience=-1)))
    with pytest.raises(HydranetError, match="--density-target"):
        list(train(_cfg(cohort, tmp_path / "e", density_target="spheres")))


def test_recalibrate_only_refits_level_and_scale_and_keeps_the_ranking(cohort, tmp_path):
    list(train(_cfg(cohort, tmp_path / "a", epochs=1)))
    lines = (cohort / "train.csv").read_text().split()
    shifted = tmp_path / "shifted.csv"  # another rater: twice the count, plus three
    shifted.write_text(
        "\n".join([lines[0]] + [f"{s},{2 * float(v) + 3}" for s, v in (ln.split(",") for ln in lines[1:])])
    )
    events = list(
        train(
            _cfg(cohort, tmp_path / "b", labels=str(shifted), init=str(tmp_path / "a"), recalibrate_only=True)
        )
    )
    assert events[-1]["reason"] == "recalibrated" and events[-1]["epochs"] == 0
    assert not any(e["event"] == "step" for e in events)
    a, b = load_model(tmp_path / "a"), load_model(tmp_path / "b")
    scans = [cohort / "scans" / s for s in (ln.split(",")[0] for ln in lines[1:6])]
    before = np.array([predict_file(a, s, "cpu", cohort / "masks", flips=1)[0].count for s in scans])
    after = np.array([predict_file(b, s, "cpu", cohort / "masks", flips=1)[0].count for s in scans])
    fit = json.loads((tmp_path / "b" / "config.json").read_text())["training"]["recalibration"]
    assert fit["kept"] and fit["val_icc21_after"] > fit["val_icc21_before"]
    np.testing.assert_allclose(after, fit["scale"] * before + fit["offset"], rtol=1e-4, atol=1e-4)
    assert fit["mse_after"] < fit["mse_before"]
    with pytest.raises(HydranetError, match="--init"):
        list(train(_cfg(cohort, tmp_path / "c", recalibrate_only=True)))
    # labels of another finding or unit (volumes in mm³ for a model of counts): a GP-UNet's
    # fine-tune refuses them; a regressor's refit takes another unit, so it says nothing
    start = next(e for e in events if e["event"] == "start")
    assert not any("cannot learn these labels" in n for n in start["notes"])
    volumes = tmp_path / "volumes.csv"
    volumes.write_text(
        "\n".join([lines[0]] + [f"{s},{500 * float(v) + 40}" for s, v in (ln.split(",") for ln in lines[1:])])
    )

    def fine_tune(init, out):
        return train(_cfg(cohort, tmp_path / out, labels=str(volumes), init=init, recalibrate_only=True))

    start = next(e for e in fine_tune(str(tmp_path / "a"), "d") if e["event"] == "start")
    assert not any("cannot learn these labels" in n for n in start["notes"])
    with pytest.raises(HydranetError) as refused:  # it saved the counting model under their name
        list(fine_tune("default", "e"))
    assert str(refused.value).startswith(f"{volumes}: a fine-tune of this model cannot learn these labels: ")
    assert "× apart from those it was trained on (EPVS count in the basal ganglia, mean 4.142, " in str(
        refused.value
    )
    assert not (tmp_path / "e").exists()
    # far lower labels may be a cohort with few lesions: a note, and the fine-tune goes on
    volumes.write_text(
        "\n".join([lines[0]] + [f"{s},{0.02 * float(v)}" for s, v in (ln.split(",") for ln in lines[1:])])
    )
    start = next(e for e in fine_tune("default", "f") if e["event"] == "start")
    assert start["unit"] == "lesions"  # the base's, inherited; the Train dock gives the MAE in it
    assert any(
        n.startswith("these labels are far lower than the model's: they average ") for n in start["notes"]
    )


@pytest.mark.parametrize(
    "target, count_weight, lesion_weight",
    [("voxels", 0.0, 20.0), ("lesions", 0.0, 20.0), ("lesions", 0.01, 20.0), ("lesions", 0.0, 1.0)],
    ids=str,
)
def test_pretraining_on_lesion_masks_keeps_the_best_refitted_checkpoint(
    cohort, tmp_path, target, count_weight, lesion_weight
):
    """Pretraining checkpoints are compared after the count's refit, with or without a count loss."""
    import nibabel as nib

    masks = tmp_path / "lesion_masks"
    masks.mkdir()
    centres: dict[str, list] = {}
    for line in (cohort / "lesions.csv").read_text().split()[1:]:
        name, *ijk = line.split(",")
        centres.setdefault(name, []).append([round(float(v)) for v in ijk])
    for scan in sorted((cohort / "scans").iterdir()):
        img = nib.load(scan)
        lab = np.zeros(img.shape, np.uint8)
        for n, (i, j, k) in enumerate(centres.get(scan.name, []), start=1):
            lab[i - 1 : i + 2, j - 1 : j + 2, k] = n
        nib.save(nib.Nifti1Image(lab, img.affine), masks / scan.name)
    cfg = _cfg(
        cohort,
        tmp_path / "m",
        arch="gpunet",
        arch_args={"features": [4, 8]},
        epochs=3,
        density_dir=str(masks),
        density_target=target,
        count_weight=count_weight,
        lesion_weight=lesion_weight,
    )
    events = list(train(cfg))
    epochs = [e for e in events if e["event"] == "epoch"]
    assert len(epochs) == 3 and all(np.isfinite(e["val_icc21_refit"]) for e in epochs)
    best = max(epochs, key=lambda e: (e["val_icc21_refit"], -e["val_mae"]))
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    saved = config["validation"]
    assert saved["epoch"] == best["epoch"] and saved["icc21_refit"] == pytest.approx(best["val_icc21_refit"])
    assert config["training"]["settings"]["density_target"] == target
    assert config["training"]["settings"]["lesion_weight"] == lesion_weight


@pytest.mark.parametrize("weight", [1.0, 20.0])
def test_lesion_map_loss_gives_an_ambiguous_lesion_its_weighted_share(weight):
    """One voxel value for ten look-alike voxels of which one is a lesion (target 1): the
    loss's minimum is the expectation 0.1 at weight 1, and w·p / (w·p + 1 − p) above."""
    target = torch.zeros(1, 10)
    target[0, 0] = 1.0
    u = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([u], max_iter=100)

    def closure():
        opt.zero_grad()
        loss = lesion_map_loss(u.expand(1, 10), target, weight)
        loss.backward()
        return loss

    opt.step(closure)
    p = 0.1
    assert float(u.detach()) == pytest.approx(weight * p / (weight * p + 1 - p), abs=1e-4)


def test_few_validation_scans_are_flagged(cohort, tmp_path):
    runs = iter(range(100))

    def notes(**kw):
        events = train(_cfg(cohort, tmp_path / f"m{next(runs)}", epochs=1, **kw))
        return next(e for e in events if e["event"] == "start")["notes"]

    assert any("only 2 validation scans" in n for n in notes(val_fraction=0.1))
    assert not any("validation scans" in n for n in notes())  # 25 scans: 5 held out
    assert not any("every label is" in n for n in notes())
    assert any("16 heads for 20 training scans: an epoch holds only 2 sets" in n for n in notes(heads=16))
    assert not any("heads for" in n for n in notes(heads=4))


def test_labels_that_are_all_the_same_are_flagged(cohort, tmp_path):
    names = [line.split(",")[0] for line in (cohort / "train.csv").read_text().splitlines()[1:]]
    (tmp_path / "same.csv").write_text("scan,label\n" + "".join(f"{n},5\n" for n in names))
    cfg = replace(_cfg(cohort, tmp_path / "m", epochs=1), labels=str(tmp_path / "same.csv"))
    start = next(e for e in train(cfg) if e["event"] == "start")
    assert any("every label is 5: the network can learn only that level" in n for n in start["notes"])


def test_resuming_a_training_from_another_version_says_so(cohort, tmp_path):
    out = tmp_path / "m"
    cfg = _cfg(cohort, out, epochs=1)
    list(train(cfg))
    path = out / "resume" / "state.json"
    state = json.loads(path.read_text())
    assert state["package_version"] == __version__
    events = list(train(replace(cfg, epochs=2), resume=True))
    start = next(e for e in events if e["event"] == "start")
    assert not any("started by napari-hydranet" in n for n in start["notes"])
    state = json.loads(path.read_text())
    del state["package_version"]  # as 0.2.0 wrote it
    path.write_text(json.dumps(state))
    events = list(train(replace(cfg, epochs=3), resume=True))
    start = next(e for e in events if e["event"] == "start")
    assert any(
        f"started by napari-hydranet before 0.3.0 and goes on under {__version__}" in n
        for n in start["notes"]
    )
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [3]
    path.write_text("{}")
    with pytest.raises(HydranetError, match="cannot resume"):
        list(train(replace(cfg, epochs=4), resume=True))


def test_a_damaged_resume_folder_says_what_is_wrong(cohort, tmp_path):
    from safetensors.torch import load_file, save_file

    out = tmp_path / "m"
    cfg = _cfg(cohort, out, epochs=1)
    list(train(cfg))
    state_json, tensors_file = out / "resume" / "state.json", out / "resume" / "state.safetensors"
    good_json, good_tensors = state_json.read_text(), tensors_file.read_bytes()
    again = replace(cfg, epochs=2)

    state_json.write_text("{not json")
    with pytest.raises(HydranetError, match="state.json: cannot resume: not JSON"):
        list(train(again, resume=True))
    state = json.loads(good_json)
    del state["param_groups"]
    state["epoch"] = "one"
    state_json.write_text(json.dumps(state))
    with pytest.raises(HydranetError, match="missing or malformed epoch, param_groups"):
        list(train(again, resume=True))

    state_json.write_text(json.dumps(dict(json.loads(good_json), epoch=0)))  # killed between the two writes
    with pytest.raises(HydranetError, match="state.safetensors is from epoch 1, state.json from epoch 0"):
        list(train(again, resume=True))
    state_json.write_text(good_json)
    tensors_file.write_bytes(good_tensors[: len(good_tensors) // 2])
    with pytest.raises(HydranetError, match="state.safetensors: cannot resume"):
        list(train(again, resume=True))
    tensors_file.write_bytes(good_tensors)
    tensors = load_file(str(tensors_file))
    del tensors[next(k for k in tensors if k.startswith("model."))]
    save_file(tensors, str(tensors_file))
    with pytest.raises(HydranetError, match="does not fit this training's network"):
        list(train(again, resume=True))

    assert state_json.read_text() == good_json  # a refused resume writes nothing
    tensors_file.write_bytes(good_tensors)
    events = list(train(again, resume=True))
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [2]


def test_a_new_model_needs_a_new_or_empty_folder_and_overwrites_nothing(cohort, tmp_path):
    import hashlib

    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "history.csv").write_text("my notes\n")  # a name the training writes
    (folder / "config.json").write_text("{}")
    before = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    for out in (folder, cohort / "scans", cohort):  # a user's folder, the scans, their parent
        with pytest.raises(HydranetError, match="a new model needs a new or empty folder"):
            list(train(_cfg(cohort, out, epochs=1)))
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()} == before
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"\x00")  # a file manager's, not the user's
    events = list(train(_cfg(cohort, empty, epochs=1)))
    assert events[-1]["event"] == "done" and (empty / "weights.safetensors").exists()


def test_a_crop_the_model_loader_would_refuse_is_refused_before_training(cohort, tmp_path):
    for crop in ((8, 52, 40), (300, 64, 64)):
        with pytest.raises(HydranetError, match="--crop must be 16 to 256 voxels"):
            _cfg(cohort, tmp_path / "m", crop_shape=crop).validate()


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"sets_per_batch": 0}, "--sets-per-batch must be ≥ 1"),
        ({"seed": -1}, "--seed must be ≥ 0"),
        ({"lr": 0.0}, "--lr must be > 0"),
        ({"time_limit": -1.0}, "--time-limit must be > 0"),
        ({"count_weight": -0.5}, "--count-weight ≥ 0"),
        ({"density_dir": "d"}, "--density needs a GP-UNet with its density head"),
        ({"density_dir": "d", "arch": "gpunet", "arch_args": {"head": "gap"}}, "density head"),
    ],
)
def test_settings_the_python_api_gets_are_checked_as_the_cli_checks_them(cohort, tmp_path, setting, message):
    with pytest.raises(HydranetError, match=message):
        _cfg(cohort, tmp_path / "m", **setting).validate()


def test_scans_no_labels_table_names_are_noted(cohort, tmp_path):
    lines = (cohort / "train.csv").read_text().splitlines()
    held_out = [line.split(",")[0] for line in (cohort / "test.csv").read_text().splitlines()[1:]]
    (tmp_path / "na.csv").write_text("\n".join([lines[0], *lines[1:24], f"{held_out[0]},NA"]) + "\n")

    def notes(labels, **kw):
        cfg = _cfg(cohort, tmp_path / f"m{len(list(tmp_path.iterdir()))}", epochs=1, labels=str(labels), **kw)
        return next(e for e in train(cfg) if e["event"] == "start")["notes"]

    unused = [n for n in notes(cohort / "train.csv") if "no row in the labels" in n]
    assert len(unused) == 1 and unused[0].startswith("15 scans in ")
    assert f"not used: {held_out[0]}" in unused[0]
    # a row without a label is named by its own note, not as a scan the table forgot
    unused = [n for n in notes(tmp_path / "na.csv") if "no row in the labels" in n]
    assert len(unused) == 1 and "16 scans" in unused[0] and held_out[0] not in unused[0]
    # the validation table's scans are used
    listed = notes(cohort / "train.csv", val_labels=str(cohort / "test.csv"))
    assert not any("no row in the labels" in n for n in listed)


def test_validation_labels_leave_at_least_two_scans_to_train_on(cohort, tmp_path):
    lines = (cohort / "train.csv").read_text().splitlines()
    (tmp_path / "one.csv").write_text("\n".join(lines[:2]) + "\n")
    (tmp_path / "val.csv").write_text("\n".join([lines[0], *lines[2:8]]) + "\n")
    cfg = _cfg(cohort, tmp_path / "m", labels=str(tmp_path / "one.csv"), val_labels=str(tmp_path / "val.csv"))
    with pytest.raises(HydranetError, match="1 labelled scan to train on; label at least 2"):
        list(train(cfg))
    assert not (tmp_path / "m" / "weights.safetensors").exists()


def test_validation_scans_named_by_another_path_are_still_training_scans(cohort, tmp_path):
    lines = (cohort / "train.csv").read_text().splitlines()
    first = lines[1].split(",")[0]
    (tmp_path / "val.csv").write_text(f"{lines[0]}\n{cohort / 'scans' / first},3\n")
    cfg = _cfg(cohort, tmp_path / "m", val_labels=str(tmp_path / "val.csv"))
    message = f"val.csv: 1 scan is also in the training labels, e.g. .*{first}"
    with pytest.raises(HydranetError, match=message):
        list(train(cfg))


def test_validation_scans_linked_to_the_same_content_as_training_scans_are_other_scans(cohort, tmp_path):
    """DataLad and git-annex link scans of equal content to one stored file: two scans still."""
    lines = (cohort / "train.csv").read_text().splitlines()
    for folder in ("scans", "masks"):
        (tmp_path / folder).mkdir()
        for f in (cohort / folder).iterdir():
            (tmp_path / folder / f.name).symlink_to(f)
        first = lines[1].split(",")[0]
        (tmp_path / folder / "twin.nii.gz").symlink_to(cohort / folder / first)
    (tmp_path / "val.csv").write_text("\n".join([lines[0], *lines[20:], "twin.nii.gz,3"]) + "\n")
    (tmp_path / "train.csv").write_text("\n".join(lines[:20]) + "\n")
    cfg = _cfg(cohort, tmp_path / "m", epochs=1, val_labels=str(tmp_path / "val.csv"))
    cfg = replace(cfg, scans_dir=str(tmp_path / "scans"), masks_dir=str(tmp_path / "masks"))
    cfg = replace(cfg, labels=str(tmp_path / "train.csv"))
    start = next(e for e in train(cfg) if e["event"] == "start")
    assert (start["train"], start["val"]) == (19, 7)


def test_resume_refuses_labels_edited_since_the_training_started(cohort, tmp_path):
    labels = tmp_path / "labels.csv"
    rows = (cohort / "train.csv").read_text().splitlines()
    labels.write_text("\n".join(rows) + "\n")
    cfg = _cfg(cohort, tmp_path / "m", labels=str(labels), epochs=3)
    seen = []
    for event in train(cfg, should_stop=lambda: "epoch" in seen):
        seen.append(event["event"])
    name, label = rows[1].split(",")
    labels.write_text("\n".join([rows[0], f"{name},{float(label) + 9:g}", *rows[2:]]) + "\n")
    changed = f"{float(label):g} → {float(label) + 9:g}"
    with pytest.raises(HydranetError, match=f"cannot resume: 1 label changed, e.g. {name}: {changed} since"):
        list(train(cfg, resume=True))
    labels.write_text("\n".join(rows) + "\n")  # as it was: the training goes on
    assert any(e["event"] == "epoch" for e in train(cfg, resume=True))


def test_a_recalibration_message_shows_icc_changes_that_two_decimals_hide():
    """A methodologist read "0.80 → 0.80" for a refit that took the ICC from 0.7956 to 0.8048."""
    assert _change_digits(0.7956, 0.8048) == 4
    assert _change_digits(0.70, 0.80) == 2 and _change_digits(0.8, 0.8) == 2
    assert _change_digits(float("nan"), 0.8) == 2
