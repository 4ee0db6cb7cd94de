"""The `hydranet` command as users and other tools call it."""

import csv
import hashlib
import json
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from synth import save_stored_otherwise, stored_otherwise

from napari_hydranet.cli import build_parser, main, train_config
from napari_hydranet.models import load_model, save_model
from napari_hydranet.provenance import run_settings
from napari_hydranet.sample import load_sample


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_predict_writes_counts_detections_heatmaps(cohort, tmp_path, capsys):
    scans = [cohort / "scans" / "sub-000.nii.gz", cohort / "scans" / "sub-001.nii.gz"]
    rc = main(
        [
            "predict",
            "default",
            *map(str, scans),
            "--out",
            str(tmp_path / "c.csv"),
            "--masks",
            str(cohort / "masks"),
            "--heatmaps",
            str(tmp_path / "h"),
            "--detections",
            str(tmp_path / "d.csv"),
            "--flips",
            "2",
        ]
    )
    assert rc == 0
    header = (tmp_path / "c.csv").read_text().splitlines()[0]
    assert header.startswith("scan,count,count_sd")
    counts = _rows(tmp_path / "c.csv")
    assert [r["scan"] for r in counts] == ["sub-000.nii.gz", "sub-001.nii.gz"]
    dets = _rows(tmp_path / "d.csv")
    assert (tmp_path / "d.csv").read_text().startswith("scan,lesion,i,j,k,x,y,z,size,score")
    for r in counts:
        assert sum(d["scan"] == r["scan"] for d in dets) == int(r["detections"])
    heat = nib.load(tmp_path / "h" / "sub-000_heatmap.nii.gz")
    src = nib.load(scans[0])
    assert heat.shape == src.shape and np.allclose(heat.affine, src.affine)
    for d in dets:
        ijk = np.array([float(d[k]) for k in "ijk"])
        xyz = src.affine[:3, :3] @ ijk + src.affine[:3, 3]
        assert np.allclose(xyz, [float(d[k]) for k in "xyz"], atol=1e-3)


def test_a_participants_tsv_is_read_by_its_participant_id_without_naming_the_column(tmp_path, capsys):
    """The Train and Cohort docks chose participant_id; the command line asked for
    --scan-column participant_id."""
    (tmp_path / "c.csv").write_text("scan,count\nsub-01_T2w.nii.gz,1\nsub-02_T2w.nii.gz,5\n")
    (tmp_path / "participants.tsv").write_text("participant_id\tlabel\nsub-01\t2\nsub-02\t6\n")
    assert main(["evaluate", str(tmp_path / "c.csv"), str(tmp_path / "participants.tsv"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n"] == 2
    assert "no 'scan' column; the scans are named by 'participant_id'" in captured.err


def test_evaluate_text_and_json(cohort, tmp_path, capsys):
    (tmp_path / "c.csv").write_text(
        "scan,count,count_sd\nsub-000.nii.gz,1,0\nsub-001.nii.gz,5,0\nother.nii,3,0\n"
    )
    (tmp_path / "l.csv").write_text("scan,label\nsub-000.nii.gz,2\nsub-001.nii.gz,6\n")
    assert main(["evaluate", str(tmp_path / "c.csv"), str(tmp_path / "l.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 2 and out["mae"] == 1 and out["icc31"] == pytest.approx(1.0)
    assert any("other.nii" in n for n in out["notes"])
    assert main(["evaluate", str(tmp_path / "c.csv"), str(tmp_path / "l.csv")]) == 0
    out = capsys.readouterr().out
    assert "ICC(2,1)" in out and "only 2 scans in common" in out
    assert "95 % interval – to –" in out  # none from 2 scans
    assert "bias     -1.0000   (counts − labels; 95 % limits of agreement -1.0000 to -1.0000)" in out
    (tmp_path / "l.csv").write_text("scan,label\nsub-000.nii.gz,2\nsub-001.nii.gz,2\n")
    assert main(["evaluate", str(tmp_path / "c.csv"), str(tmp_path / "l.csv")]) == 0
    assert "every one of the labels is 2" in capsys.readouterr().out
    (tmp_path / "c3.csv").write_text("scan,count\nsub-000,1\nsub-001,5\nsub-002,nan\n")
    (tmp_path / "l3.csv").write_text("scan,label\nsub-000,2\nsub-001,6\nsub-002,3\n")
    assert main(["evaluate", str(tmp_path / "c3.csv"), str(tmp_path / "l3.csv")]) == 0
    out = capsys.readouterr().out
    assert "c3.csv: row 4: 'sub-002' has no count (nan) and is left out" in out
    assert "not predicted" not in out  # a scan predict could not count is listed, without a count
    failed = "scan,count,notes\nsub-000,,not counted: bad\nsub-001,,not counted: bad\n"
    (tmp_path / "c0.csv").write_text(failed)
    assert main(["evaluate", str(tmp_path / "c0.csv"), str(tmp_path / "l3.csv")]) == 2
    assert "c0.csv: no scan has a count (the run could not count any" in capsys.readouterr().err
    (tmp_path / "l4.csv").write_text("scan,label\nsub-000,2\nsub-001,NaN\nsub-002,3\nsub-003,4\n")
    (tmp_path / "c4.csv").write_text("scan,count\nsub-000,1\nsub-001,5\nsub-002,3\nsub-009,1\n")
    assert main(["evaluate", str(tmp_path / "c4.csv"), str(tmp_path / "l4.csv")]) == 0
    out = capsys.readouterr().out
    assert "1 predicted scan whose label is blank or not a number in" in out and ": sub-001" in out
    assert "1 predicted scan without a label, left out: sub-009" in out
    assert "1 labelled scan not predicted: sub-003" in out
    # one scan in two rows of a table would be dropped or counted twice: refused
    (tmp_path / "l.csv").write_text("scan,label\nsub-000,90\nother/sub-000.nii.gz,50\nsub-001.nii.gz,4\n")
    assert main(["evaluate", str(tmp_path / "c.csv"), str(tmp_path / "l.csv")]) == 2
    err = capsys.readouterr().err
    assert "l.csv: 2 rows name one scan (sub-000 (90), other/sub-000.nii.gz (50))" in err
    (tmp_path / "c2.csv").write_text("scan,count\nsub-000,1\nsub-000.nii.gz,1\nsub-001.nii.gz,5\n")
    assert main(["evaluate", str(tmp_path / "c2.csv"), str(tmp_path / "l.csv")]) == 2
    assert "c2.csv: 2 rows name one scan" in capsys.readouterr().err
    # a participants.tsv rates subjects; a subject with two sessions cannot take its one rating
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tepvs\nsub-01\t3\nsub-02\tn/a\nsub-03\t4\nsub-04\t6\n"
    )
    sessions = ["sub-01_ses-01", "sub-01_ses-02", "sub-02_ses-01", "sub-03_ses-01", "sub-04_ses-01"]
    (tmp_path / "cs.csv").write_text(
        "scan,count\n" + "".join(f"{x}_T2w.nii.gz,{i}\n" for i, x in enumerate(sessions))
    )
    args = [str(tmp_path / "cs.csv"), str(tmp_path / "participants.tsv"), "--scan-column", "participant_id"]
    assert main(["evaluate", *args, "--label-column", "epvs", "--json"]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    tsv = tmp_path / "participants.tsv"
    assert notes[:2] == [
        f"2 predicted scans of 1 subject named by one row each in {tsv} left out, as several scans "
        "share that row (sub-01: 2 scans): name each scan in a row of its own",
        f"1 predicted scan whose label is blank or not a number in {tsv}, left out: sub-02_ses-01_T2w.nii.gz",
    ]
    assert not any("without a label" in n or "not predicted" in n for n in notes)
    nfd = unicodedata.normalize("NFD", "sub-José")  # a labels table typed on a Mac, scans named on Linux
    (tmp_path / "nfd.csv").write_text(f"scan,label\n{nfd},3\nsub-03,4\nsub-04,6\n")
    (tmp_path / "nfc.csv").write_text(
        "scan,count\nsub-José_T2w.nii.gz,2\nsub-03_T2w.nii.gz,4\nsub-04_T2w.nii.gz,5\n"
    )
    assert main(["evaluate", str(tmp_path / "nfc.csv"), str(tmp_path / "nfd.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 3 and not any("not predicted" in n for n in out["notes"])
    # a German Excel's labels: read, and evaluate says how (as train and the docks do)
    (tmp_path / "de.csv").write_text("Scan;Label\nsub-000.nii.gz;2,5\nsub-001.nii.gz;6\n")
    assert main(["evaluate", str(tmp_path / "c.csv"), str(tmp_path / "de.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 2 and out["mae"] == pytest.approx(1.25)
    assert f"{tmp_path / 'de.csv'}: de.csv: read as separated by semicolons" in out["notes"]
    assert f"{tmp_path / 'de.csv'}: 1 label written with a decimal comma (3,5) read as 3.5" in out["notes"]
    # a master labels file naming another site's scan like one not predicted here is fine
    (tmp_path / "l.csv").write_text("scan,label\na/x.nii.gz,1\nb/x.nii.gz,2\nsub-000,2\nsub-001,6\n")
    assert main(["evaluate", str(tmp_path / "c.csv"), str(tmp_path / "l.csv")]) == 0
    # the tables in the wrong order: the hint names the counts table, not the labels' options
    assert main(["evaluate", str(tmp_path / "l.csv"), str(tmp_path / "c.csv")]) == 2
    assert "the counts table comes first, as `hydranet predict --out` writes it" in capsys.readouterr().err

    # labels in another unit (mL against predicted mm³), and many labelled scans not predicted
    (tmp_path / "mm3.csv").write_text("scan,count\n" + "".join(f"s{i},{1000 * i + 500}\n" for i in range(12)))
    (tmp_path / "ml.csv").write_text("scan,label\n" + "".join(f"s{i},{i + 0.4}\n" for i in range(40)))
    assert main(["evaluate", str(tmp_path / "mm3.csv"), str(tmp_path / "ml.csv")]) == 0
    notes = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("note: ")]
    assert notes == [
        "note: 28 labelled scans not predicted: s12; s13; s14; … 25 more",
        "note: the counts are about 1017× the labels (medians 6000 and 5.9): another unit "
        "(mL and mm³ differ 1000×) or another finding?",
    ]
    (tmp_path / "ml_counts.csv").write_text("scan,count\n" + "".join(f"s{i},{i + 0.4}\n" for i in range(12)))
    (tmp_path / "mm3.csv").write_text("scan,label\n" + "".join(f"s{i},{1000 * i + 500}\n" for i in range(12)))
    assert main(["evaluate", str(tmp_path / "ml_counts.csv"), str(tmp_path / "mm3.csv")]) == 0
    assert "note: the counts are about 1/1017 of the labels" in capsys.readouterr().out
    # the errors in the counts' unit, as predict writes it
    (tmp_path / "mm3.csv").write_text("scan,count,unit\n" + "".join(f"s{i},{i + 2},mm3\n" for i in range(12)))
    assert main(["evaluate", str(tmp_path / "mm3.csv"), str(tmp_path / "ml.csv")]) == 0
    out = capsys.readouterr().out
    assert "MAE      1.6000 mm3\n" in out and "MSE      2.5600 mm3²\n" in out
    # tables the labels reader takes (Excel's Windows-1252, a .tsv) evaluate too, unit and all
    (tmp_path / "win.csv").write_bytes(
        ("scan,count,unit\n" + "".join(f"sujet-é{i},{i + 2},mm3\n" for i in range(12))).encode("cp1252")
    )
    (tmp_path / "win.tsv").write_text(
        "scan\tlabel\n" + "".join(f"sujet-é{i}\t{i + 0.4}\n" for i in range(12))
    )
    assert main(["evaluate", str(tmp_path / "win.csv"), str(tmp_path / "win.tsv")]) == 0
    out = capsys.readouterr().out
    assert "MAE      1.6000 mm3\n" in out and "win.csv is not UTF-8: read as Windows-1252" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "default", "/nonexistent.nii.gz", "--out", "x.csv"], "no such file or folder"),
        (["predict", "/nonexistent_model", "x.nii", "--out", "x.csv"], "no such model folder"),
        (["train", "/nonexistent", "--labels", "/nonexistent.csv", "--out", "m"], "no such labels file"),
        (["train", ".", "--labels", "x.csv", "--out", "m", "--p-black", "1.5"], "--p-black"),
        (["evaluate", "/nonexistent.csv", "x.csv"], "/nonexistent.csv: no such counts table"),
    ],
)
def test_user_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hydranet: error:") and message in err and "\n" not in err


def test_4d_input_is_refused_by_predict(tmp_path, capsys):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)), tmp_path / "f.nii.gz")
    assert _predict(tmp_path / "f.nii.gz", "--out", tmp_path / "c.csv") == 3
    assert "(8, 8, 8, 3)" in capsys.readouterr().err
    ((row),) = _rows(tmp_path / "c.csv")  # the scan listed, without a count, and why
    assert row["count"] == "" and row["notes"].startswith("not counted: ") and "(8, 8, 8, 3)" in row["notes"]


def test_demo_headless_writes_outputs_and_finds_lesions(tmp_path, capsys):
    assert main(["demo", "--headless", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "predicted count" in out and str(tmp_path / "demo") in out
    counts = _rows(tmp_path / "demo" / "counts.csv")
    dets = _rows(tmp_path / "demo" / "detections.csv")
    assert len(dets) == int(counts[0]["detections"]) == round(float(counts[0]["count"]))
    sample = load_sample()
    found = np.array([[float(d[k]) for k in "ijk"] for d in dets])
    hits = sum(np.linalg.norm(found - c, axis=1).min() <= 3 for c in sample.lesions)
    assert hits >= 0.5 * sample.count  # GP-UNet detections land on the known lesions
    assert main(["demo", "--headless", "--out", str(tmp_path / "demo")]) == 0  # again: over its own outputs
    (tmp_path / "demo" / ".hydranet-demo").unlink()  # as an earlier version left its outputs,
    old = tmp_path / "demo" / "counts.csv"  # without the marker and the notes column
    header, row = old.read_text().splitlines()
    assert header.endswith(",notes") and row.endswith(",")  # no notes on the sample
    old.write_text(f"{header.removesuffix(',notes')}\n{row[:-1]}\n")
    assert main(["demo", "--headless", "--out", str(tmp_path / "demo")]) == 0
    study = tmp_path / "study"  # the user's results, made by hydranet predict: headers as the demo's
    study.mkdir()
    shutil.copy(tmp_path / "demo" / "counts.csv", study / "counts.csv")
    (study / "notes.txt").write_text("mine")
    before = (study / "counts.csv").read_bytes()
    assert main(["demo", "--headless", "--out", str(study)]) == 2
    assert "holds files the demo did not write (counts.csv; notes.txt)" in capsys.readouterr().err
    assert (study / "counts.csv").read_bytes() == before and not (study / "detections.csv").exists()


def test_a_sample_stored_in_another_voxel_order_counts_and_detects_alike(tmp_path, capsys):
    """Scans stored sagittally or LPS reach the network in the RAS order it was trained on."""
    sample = load_sample()
    for folder in ("scans", "masks"):
        (tmp_path / folder).mkdir()
    for path, folder in ((sample.scan, "scans"), (sample.mask, "masks")):
        shutil.copy(path, tmp_path / folder / "ras.nii.gz")
        save_stored_otherwise(path, tmp_path / folder / "other.nii.gz")  # LPS, then i, j, k → k, i, j
    argv = ["predict", "default", str(tmp_path / "scans"), "--masks", str(tmp_path / "masks")]
    argv += ["--out", str(tmp_path / "counts.csv"), "--detections", str(tmp_path / "dets.csv")]
    argv += ["--heatmaps", str(tmp_path / "heat")]
    assert main(argv) == 0
    counts = {r["scan"]: r for r in _rows(tmp_path / "counts.csv")}
    assert float(counts["other.nii.gz"]["count"]) == pytest.approx(
        float(counts["ras.nii.gz"]["count"]), abs=1e-4
    )
    dets = _rows(tmp_path / "dets.csv")
    world = {n: np.array([[float(d[k]) for k in "xyz"] for d in dets if d["scan"] == n]) for n in counts}
    assert len(world["ras.nii.gz"]) == len(world["other.nii.gz"]) > 0
    np.testing.assert_allclose(world["other.nii.gz"], world["ras.nii.gz"], atol=1e-3)
    heat = nib.load(tmp_path / "heat" / "other_heatmap.nii.gz")  # on the stored file's grid
    assert heat.shape == nib.load(tmp_path / "scans" / "other.nii.gz").shape
    ras_heat = nib.load(tmp_path / "heat" / "ras_heatmap.nii.gz")
    expected, _ = stored_otherwise(np.asanyarray(ras_heat.dataobj), ras_heat.affine)
    np.testing.assert_allclose(np.asanyarray(heat.dataobj), expected)


def test_train_defaults_are_the_training_configs_own():
    """argparse repeats TrainConfig's defaults (the CLI starts without importing torch)."""
    from napari_hydranet.train import TrainConfig

    args = build_parser().parse_args(["train", "scans", "--labels", "labels.csv", "--out", "model"])
    assert train_config(args) == TrainConfig("scans", "labels.csv", "model")


def test_train_saves_a_model_or_says_it_saved_none(cohort, tmp_path, capsys):
    common = ["train", str(cohort / "scans"), "--labels", str(cohort / "train.csv"), "--masks"]
    common += [
        str(cohort / "masks"),
        "--arch",
        "regressor",
        "--arch-args",
        '{"width": 8}',
        "--crop",
        "24",
        "24",
        "16",
    ]
    assert main([*common, "--out", str(tmp_path / "m"), "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert (
        "epoch    1" in out
        and "best epoch 1, val ICC(2,1)" in out
        and (tmp_path / "m" / "weights.safetensors").is_file()
    )
    scan, heatmaps = cohort / "scans" / "sub-000.nii.gz", tmp_path / "h"
    assert (
        main(
            [
                "predict",
                str(tmp_path / "m"),
                str(scan),
                "--out",
                str(tmp_path / "c.csv"),
                "--heatmaps",
                str(heatmaps),
            ]
        )
        == 2
    )
    assert (
        "HydraRegressor gives counts only; heatmaps and detections need a GP-UNet" in capsys.readouterr().err
    )
    assert not heatmaps.exists() and not (tmp_path / "c.csv").exists()
    # its table: counts, and no detection column that reads "0 found"
    masks = ["--masks", str(cohort / "masks")]
    assert main(["predict", str(tmp_path / "m"), str(scan), "--out", str(tmp_path / "c.csv"), *masks]) == 0
    ((row),) = _rows(tmp_path / "c.csv")
    assert row["count"] != "" and row["detections"] == "" and row["threshold"] == ""
    assert not json.loads((tmp_path / "c.json").read_text())["settings"]["whole_volume"]
    # scored on scans it was trained on: evaluate says so (the run's record names the model)
    two = [str(cohort / "scans" / f"sub-00{i}.nii.gz") for i in (0, 1)]
    assert main(["predict", str(tmp_path / "m"), *two, "--out", str(tmp_path / "t.csv"), *masks]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "t.csv"), str(cohort / "train.csv"), "--json"]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    seen = [n for n in notes if "trained the model that counted them" in n]
    assert len(seen) == 1 and seen[0].startswith(
        f"2 of the 2 scans compared trained the model that counted them ({tmp_path / 'm'}; "
    )
    other = tmp_path / "other_cohort"  # files of another cohort named alike: not the model's
    other.mkdir()
    for scan in two:
        shutil.copy(scan, other)
    assert main(["predict", str(tmp_path / "m"), str(other), "--out", str(tmp_path / "o.csv"), *masks]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "o.csv"), str(cohort / "train.csv"), "--json"]) == 0
    assert not any("trained the model" in n for n in json.loads(capsys.readouterr().out)["notes"])
    weights = tmp_path / "m" / "weights.safetensors"
    kept = weights.read_bytes()
    weights.write_bytes(b"other")  # the folder holds another model now: its split says nothing
    assert main(["evaluate", str(tmp_path / "t.csv"), str(cohort / "train.csv"), "--json"]) == 0
    assert not any("trained the model" in n for n in json.loads(capsys.readouterr().out)["notes"])
    weights.write_bytes(kept)
    # a model trained without ROI masks counts whole volumes; its record says so, as the Cohort dock's
    model = load_model(tmp_path / "m")
    save_model(
        tmp_path / "free",
        model.net,
        dict(model.config, preprocess=dict(model.preprocess.to_dict(), use_mask=False)),
    )
    assert main(["predict", str(tmp_path / "free"), str(scan), "--out", str(tmp_path / "f.csv")]) == 0
    assert json.loads((tmp_path / "f.json").read_text())["settings"]["whole_volume"]
    assert run_settings("", "cpu")["whole_volume"]  # an empty masks path gives no masks either
    # out of time before the first epoch finished: no model, and the command says so
    assert main([*common, "--out", str(tmp_path / "n"), "--time-limit", "0.00001"]) == 1
    captured = capsys.readouterr()
    assert "no model saved: no epoch finished" in captured.out
    assert "out of time before its first epoch finished (give it more time" in captured.err
    assert not (tmp_path / "n" / "weights.safetensors").exists()


def test_train_stops_cleanly_when_its_stdin_closes(cohort, tmp_path):
    """The Train dock's Stop on every platform: it closes the child's stdin."""
    argv = [sys.executable, "-m", "napari_hydranet.cli", "train", str(cohort / "scans")]
    argv += ["--labels", str(cohort / "train.csv"), "--masks", str(cohort / "masks"), "--out"]
    argv += [str(tmp_path / "m"), "--arch", "regressor", "--arch-args", '{"width": 8}', "--crop", "24"]
    argv += ["24", "16", "--epochs", "500", "--json", "--stop-on-eof"]
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    events = []
    for line in child.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "epoch" and events[-1]["epoch"] == 1:
            child.stdin.close()
    assert child.wait(timeout=300) == 130  # stopped by the user, as predict: the model is kept
    assert events[-1]["event"] == "done" and events[-1]["reason"] == "stopped"
    assert events[-1]["epochs"] < 500 and (tmp_path / "m" / "weights.safetensors").is_file()
    # a run that ends by itself with its stdin still open exits cleanly (no abort at exit)
    argv[argv.index(str(tmp_path / "m"))] = str(tmp_path / "n")
    argv[argv.index("500")] = "1"
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = child.stdout.read()  # until the child ends, its stdin still open
    assert child.wait(timeout=300) == 0 and b"Fatal Python error" not in output, output.decode()[-500:]
    child.stdin.close()


def test_info_describes_a_model_and_refuses_other_folders(tmp_path, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "not for clinical use" in out and "validation: ICC(2,1)" in out and "stage 6" in out  # full card
    assert "parameters" in out and "crop 64×52×40" in out
    assert main(["info", "default", "--json"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["format"] == "napari-hydranet-model" and "history_tail" not in config
    assert main(["info", str(tmp_path)]) == 2
    assert "not a napari-hydranet model folder" in capsys.readouterr().err


def _predict(*args):
    """``hydranet predict default``; without masks, of whole volumes (``check_roi_masks``)."""
    whole = [] if "--masks" in args else ["--whole-volume"]
    return main(["predict", "default", *map(str, args), "--flips", "1", *whole])


def test_predict_without_masks_is_refused_for_a_masked_model_unless_whole_volumes_are_asked(
    cohort, tmp_path, capsys
):
    """A model trained inside ROI masks counted the whole volumes of three scans 1.5–47× higher,
    in a table like any other, and the command ended with 0."""
    scan, out = cohort / "scans" / "sub-000.nii.gz", tmp_path / "c.csv"
    assert main(["predict", "default", str(scan), "--out", str(out), "--flips", "1"]) == 2
    assert "this model counts inside ROI masks" in capsys.readouterr().err and not out.exists()
    masks = ["--masks", str(cohort / "masks")]
    assert main(["predict", "default", str(scan), "--out", str(out), "--whole-volume", *masks]) == 2
    assert "--whole-volume and --masks contradict" in capsys.readouterr().err and not out.exists()
    assert _predict(scan, "--out", out) == 0
    ((row),) = _rows(out)
    assert float(row["count"]) > 0 and "no ROI mask given" in row["notes"]


def test_predict_refuses_outputs_that_would_destroy_inputs(cohort, tmp_path, capsys):
    scan = tmp_path / "s.nii.gz"
    scan.write_bytes((cohort / "scans" / "sub-000.nii.gz").read_bytes())
    before = scan.read_bytes()
    cases = [
        (["--out", scan], "refusing to overwrite an input scan"),
        (["--out", tmp_path / "c.csv", "--detections", scan], "refusing to overwrite an input scan"),
        (["--out", tmp_path / "c.csv", "--detections", tmp_path / "c.csv"], "two different files"),
        (["--out", tmp_path], "is a folder"),
        (["--out", scan / "c.csv"], "is a file, not a folder"),
        (["--out", tmp_path / "c.csv", "--heatmaps", scan], "is a file"),
        (["--out", tmp_path / "c.nii"], "name it .csv"),
        (["--out", tmp_path / "c.tsv"], "is a comma-separated table; name it .csv"),  # not tabs
    ]
    for extra, message in cases:
        assert _predict(scan, *extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
    assert scan.read_bytes() == before
    assert not (tmp_path / "c.csv").exists()  # refused before any work


def test_predict_overwrites_only_its_own_tables(cohort, tmp_path, capsys):
    scan = cohort / "scans" / "sub-000.nii.gz"
    labels = tmp_path / "labels.csv"
    labels.write_text("scan,label\nsub-000.nii.gz,3\n")  # the user's, named by mistake
    for extra in (["--out", labels], ["--out", tmp_path / "c.csv", "--detections", labels]):
        assert _predict(scan, *extra) == 2
        err = capsys.readouterr().err
        assert f"{labels}: exists and is not a " in err and "written by hydranet" in err
    assert labels.read_text() == "scan,label\nsub-000.nii.gz,3\n"
    (tmp_path / "c.csv").write_bytes(b"")  # an empty file (mktemp's, touch's) is no one's table
    assert _predict(scan, "--out", tmp_path / "c.csv", "--detections", tmp_path / "d.csv") == 0
    assert _predict(scan, "--out", tmp_path / "c.csv", "--detections", tmp_path / "d.csv") == 0  # again
    older = tmp_path / "older.csv"  # a table of 0.3, without the notes column, is ours too
    older.write_text(
        "scan,count,count_sd,detections,threshold,unit,path\nsub-000.nii.gz,1,0,1,0.5,lesions,x\n"
    )
    assert _predict(scan, "--out", older) == 0
    assert _rows(older)[0]["scan"] == "sub-000.nii.gz" and "notes" in _rows(older)[0]


def test_a_scan_out_of_memory_is_skipped_and_the_others_go_on(cohort, tmp_path, capsys, monkeypatch):
    from napari_hydranet import infer

    real = infer.predict_file

    def short_of_memory(model, path, *args, **kw):
        if path.name == "sub-001.nii.gz":
            raise MemoryError
        if path.name == "sub-002.nii.gz":  # torch's own, on the CPU
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory")
        return real(model, path, *args, **kw)

    monkeypatch.setattr(infer, "predict_file", short_of_memory)
    scans = [cohort / "scans" / f"sub-00{i}.nii.gz" for i in range(4)]
    assert _predict(*scans, "--out", tmp_path / "c.csv", "--masks", cohort / "masks") == 3
    err = capsys.readouterr().err
    assert f"skipped: {scans[1]}: not enough memory for it" in err
    assert f"skipped: {scans[2]}: not enough memory for it" in err
    rows = _rows(tmp_path / "c.csv")
    assert [r["scan"] for r in rows] == [s.name for s in scans]
    assert [r["count"] == "" for r in rows] == [False, True, True, False]
    assert rows[1]["notes"] == f"not counted: {scans[1]}: not enough memory for it"


def test_predict_notes_each_kind_once_and_in_the_table(cohort, tmp_path, capsys):
    scans = [cohort / "scans" / f"sub-00{i}.nii.gz" for i in range(3)]
    assert _predict(*scans, "--out", tmp_path / "c.csv") == 0
    err = capsys.readouterr().err
    assert err.count("no ROI mask given") == 1 and err.count("note: sub-000: no ROI mask given") == 1
    assert "note: a note like that on sub-000 also on 2 more scans: sub-001.nii.gz; sub-002" in err
    for row in _rows(tmp_path / "c.csv"):
        assert row["notes"].startswith(f"{row['scan'][:-7]}: no ROI mask given; the whole volume is used")
    # a scan's note and its mask's are two kinds, each told, and each scan named once
    for folder in ("scans", "masks"):
        (tmp_path / folder).mkdir()
        for i in range(3):
            img = nib.load(cohort / folder / f"sub-00{i}.nii.gz")
            data = img.get_fdata().astype(np.float32)
            data[0, 0, : i + 1] = np.nan  # 1, 2, 3 NaNs: notes alike but for their numbers
            nib.save(nib.Nifti1Image(data, img.affine), tmp_path / folder / f"sub-00{i}.nii.gz")
    assert _predict(tmp_path / "scans", "--out", tmp_path / "n.csv", "--masks", tmp_path / "masks") == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert notes[:2] == [f"note: {f}/sub-000.nii.gz: 1 NaN/inf voxels set to 0" for f in ("scans", "masks")]
    alike = "note: a note like that on {}/sub-000.nii.gz also on 2 more scans: sub-001.nii.gz; sub-002.nii.gz"
    assert notes[2:] == [alike.format("scans"), alike.format("masks")]


def test_outputs_in_a_folder_that_cannot_be_written_are_refused_before_the_work(
    cohort, tmp_path, capsys, monkeypatch
):
    """A read-only disk (or no permission) is told at once, not as a traceback after the work.
    Faked: as root, permissions cannot make a folder read-only (a read-only mount was tried by
    hand, with the same messages)."""
    import tempfile

    locked = tmp_path / "locked"
    locked.mkdir()
    real = tempfile.TemporaryFile

    def refused(*args, dir=None, **kw):
        if dir is not None and Path(dir) == locked:
            raise PermissionError(13, "Permission denied", str(locked))
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    scan = cohort / "scans" / "sub-000.nii.gz"
    for extra in (
        ["--out", locked / "c.csv"],
        ["--out", tmp_path / "c.csv", "--heatmaps", locked],
        ["--out", tmp_path / "c.csv", "--heatmaps", locked / "new" / "h"],
    ):
        assert _predict(scan, *extra) == 2
        err = capsys.readouterr().err
        assert f"cannot write in {locked} (read-only, or no permission)" in err and "Traceback" not in err
    train = [
        "train",
        str(cohort / "scans"),
        "--labels",
        str(cohort / "train.csv"),
        "--out",
        str(locked / "m"),
    ]
    assert main(train) == 2
    assert f"cannot write in {locked}" in capsys.readouterr().err
    assert main(["demo", "--headless", "--out", str(locked / "demo")]) == 2
    assert f"cannot write in {locked}" in capsys.readouterr().err
    assert not (tmp_path / "c.csv").exists() and list(locked.iterdir()) == []


def test_predict_goes_on_past_a_bad_scan_and_reports_it(cohort, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("a.nii.gz", "c.nii.gz"):
        (folder / name).write_bytes((cohort / "scans" / "sub-000.nii.gz").read_bytes())
    (folder / "b.nii.gz").write_bytes((cohort / "scans" / "sub-001.nii.gz").read_bytes()[:300])
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), np.eye(4)), folder / "blank.nii.gz")
    (folder / "._a.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS sidecar")  # hidden: not a scan
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), folder / "a_heatmap.nii.gz")
    assert _predict(folder, "--out", tmp_path / "c.csv") == 3  # tables written, not every scan counted
    err = capsys.readouterr().err
    assert "b.nii.gz" in err and "blank.nii.gz" in err and "2 of 4 scans could not be predicted" in err
    assert "every voxel is 0" in err
    rows = _rows(tmp_path / "c.csv")
    assert [r["scan"] for r in rows if r["count"]] == ["a.nii.gz", "c.nii.gz"]
    assert [r["scan"] for r in rows if r["notes"].startswith("not counted: ")] == ["b.nii.gz", "blank.nii.gz"]
    record = json.loads((tmp_path / "c.json").read_text())  # the run's record, beside its table
    assert record["scans"] == {"given": 4, "counted": 2, "not_counted": 2} and record["finished"]
    assert record["command"].startswith("hydranet predict default ") and "--whole-volume" in record["command"]
    assert record["settings"]["whole_volume"] and record["settings"]["flips"] == 1
    weights = Path(record["model"]["path"]) / "weights.safetensors"
    assert record["model"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert set(record["columns"]) == set(rows[0])
    # a JSON file of the user's where the record would go is refused before any work
    (tmp_path / "mine.json").write_text('{"my": "notes"}')
    assert _predict(folder / "a.nii.gz", "--out", tmp_path / "mine.csv") == 2
    assert "mine.json: exists and is not the record of a hydranet predict run" in capsys.readouterr().err
    assert not (tmp_path / "mine.csv").exists() and "my" in json.loads((tmp_path / "mine.json").read_text())


def test_predict_leaves_no_earlier_rows_when_every_scan_fails(cohort, tmp_path, capsys):
    scan = tmp_path / "a.nii.gz"
    scan.write_bytes((cohort / "scans" / "sub-000.nii.gz").read_bytes())
    out, dets = tmp_path / "c.csv", tmp_path / "d.csv"
    assert _predict(scan, "--out", out, "--detections", dets) == 0
    assert len(_rows(out)) == 1 and len(_rows(dets)) > 0
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), np.eye(4)), scan)  # now blank
    assert _predict(scan, "--out", out, "--detections", dets) == 3
    assert "1 of 1 scans could not be predicted" in capsys.readouterr().err
    assert [r["count"] for r in _rows(out)] == [""] and _rows(dets) == []  # not the last run's rows
    assert out.read_text().startswith("scan,")


def test_a_masks_folder_must_exist_and_not_be_the_scans(cohort, tmp_path, capsys):
    scans = cohort / "scans"
    assert _predict(scans / "sub-000.nii.gz", "--out", tmp_path / "c.csv", "--masks", tmp_path / "nope") == 2
    assert "nope: no such folder (of ROI masks)" in capsys.readouterr().err
    assert _predict(scans / "sub-000.nii.gz", "--out", tmp_path / "c.csv", "--masks", scans) == 2
    assert "the masks folder holds the scans; each would be its own ROI mask" in capsys.readouterr().err
    assert not (tmp_path / "c.csv").exists()  # refused before any work
    argv = ["train", str(scans), "--labels", str(cohort / "train.csv"), "--out", str(tmp_path / "m")]
    assert main([*argv, "--masks", str(scans), "--epochs", "1"]) == 2
    assert "the masks folder holds the scans" in capsys.readouterr().err
    assert not (tmp_path / "m" / "weights.safetensors").exists()


def test_predict_refuses_two_scans_with_one_name(cohort, tmp_path, capsys):
    for sub in ("A", "B"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "flair.nii.gz").write_bytes((cohort / "scans" / "sub-000.nii.gz").read_bytes())
    assert _predict(tmp_path / "A", tmp_path / "B", "--out", tmp_path / "c.csv") == 2
    assert "two inputs are named flair" in capsys.readouterr().err
    nib.save(nib.load(tmp_path / "A" / "flair.nii.gz"), tmp_path / "A" / "flair.nii")  # one heatmap name
    assert _predict(tmp_path / "A", "--out", tmp_path / "c.csv") == 2
    assert "two inputs are named flair" in capsys.readouterr().err
    (tmp_path / "A" / "flair.nii").unlink()
    # the same file reached twice (a folder and a file in it) is predicted once
    assert _predict(tmp_path / "A", tmp_path / "A" / "flair.nii.gz", "--out", tmp_path / "c.csv") == 0
    assert len(_rows(tmp_path / "c.csv")) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "default", "x.nii", "--out", "x.csv", "--flips", "0"], "--flips: 0 must be ≥ 1"),
        (["predict", "default", "x.nii", "--out", "x.csv", "--intensity-weight", "5"], "must be ≤ 1"),
        (["train", ".", "--labels", "x.csv", "--out", "m", "--lr", "-1"], "--lr: -1 must be > 0"),
        (["train", ".", "--labels", "x.csv", "--out", "m", "--time-limit", "0"], "must be > 0"),
        (["train", ".", "--labels", "x.csv", "--out", "m", "--lesion-weight", "0"], "must be > 0"),
        (["train", ".", "--labels", "x.csv", "--out", "m", "--crop", "0", "0", "0"], "must be ≥ 16"),
        (
            ["train", ".", "--labels", "x.csv", "--out", "m", "--recalibrate-only", "--no-recalibrate"],
            "not allowed",
        ),
    ],
)
def test_bad_option_values_are_refused_by_the_parser(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--out", "default"], "means the bundled model"),
        (["--out", "labels.csv"], "is a file"),
        (["--out", "m", "--arch-args", "{bad"], "--arch-args: not valid JSON"),
        (["--out", "m", "--arch-args", "[1, 2]"], "a JSON object is needed"),
        (["--out", "m", "--arch-args", '{"features": "x"}'], "bad arguments"),
        (["--out", "m", "--arch-args", '{"features": [0, 8]}'], "the network cannot run on"),
    ],
)
def test_train_refuses_bad_outputs_and_network_arguments(
    cohort, extra, message, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "labels.csv").write_text((cohort / "train.csv").read_text())
    argv = ["train", str(cohort / "scans"), "--labels", "labels.csv", "--epochs", "1", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert (tmp_path / "labels.csv").read_text() == (cohort / "train.csv").read_text()


def test_demo_refuses_an_output_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "f.txt").write_text("mine")
    assert main(["demo", "--headless", "--out", str(tmp_path / "f.txt")]) == 2
    assert "is a file" in capsys.readouterr().err and (tmp_path / "f.txt").read_text() == "mine"


def test_info_on_a_file_says_a_model_is_a_folder(tmp_path, capsys):
    (tmp_path / "scan.nii.gz").write_bytes(b"not a model")
    assert main(["info", str(tmp_path / "scan.nii.gz")]) == 2
    assert "a model is a folder" in capsys.readouterr().err


def test_recalibrate_only_says_so_and_prints_no_nan_loss(cohort, tmp_path, capsys):
    argv = [
        "train",
        str(cohort / "scans"),
        "--labels",
        str(cohort / "train.csv"),
        "--out",
        str(tmp_path / "m"),
    ]
    assert main([*argv, "--masks", str(cohort / "masks"), "--init", "default", "--recalibrate-only"]) == 0
    out = capsys.readouterr().out
    assert "count recalibration only" in out and "epoch    0  loss         –" in out and "nan" not in out
    # kept or not, the user is told which, how it moves the counts and on how many scans
    assert re.search(
        r"count recalibration \(fitted on 20 training scans; counts ×\d+\.\d\d\) (not )?kept: "
        r"validation ICC\(2,1\) \S+ → \S+ on 5 scans",
        out,
    )
    assert main(["info", str(tmp_path / "m")]) == 0  # the model says what it started from
    assert re.search(r"started from: default; count recalibration (not )?kept", capsys.readouterr().out)
    # as JSON lines for programs: strict JSON, the undefined loss as null (jq refuses NaN)
    argv[-1] = str(tmp_path / "j")  # --out
    argv += ["--masks", str(cohort / "masks"), "--init", "default", "--recalibrate-only", "--json"]
    assert main(argv) == 0

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    events = [json.loads(line, parse_constant=refuse) for line in capsys.readouterr().out.splitlines()]
    assert [e["loss"] for e in events if e["event"] == "epoch"] == [None]
    config = json.loads((tmp_path / "j" / "config.json").read_text(), parse_constant=refuse)
    assert config["history_tail"][0]["loss"] is None


def test_an_undefined_validation_icc_prints_as_a_dash(cohort, tmp_path, capsys):
    names = [line.split(",")[0] for line in (cohort / "train.csv").read_text().splitlines()[1:]]
    (tmp_path / "same.csv").write_text("scan,label\n" + "".join(f"{n},5\n" for n in names))
    argv = ["train", str(cohort / "scans"), "--labels", str(tmp_path / "same.csv"), "--masks"]
    argv += [str(cohort / "masks"), "--arch", "regressor", "--arch-args", '{"width": 8}']
    argv += ["--crop", "24", "24", "16", "--epochs", "1", "--out", str(tmp_path / "m")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "val ICC(2,1)      –  MAE" in out and "nan" not in out.lower()


def test_the_run_record_is_finished_on_a_stop_and_never_takes_another_output(cohort, tmp_path, capsys):
    """A stopped run's record says so, with the scans done; the record's file may not be the
    detections table (`--detections counts.json` lost the detections to it)."""
    from napari_hydranet.infer import predict_files
    from napari_hydranet.models import load_model

    scans = [cohort / "scans" / f"sub-00{i}.nii.gz" for i in range(3)]
    out = tmp_path / "c.csv"
    assert _predict(scans[0], "--out", out, "--detections", tmp_path / "c.json") == 2
    assert "c.json: is where the run's record goes" in capsys.readouterr().err and not out.exists()
    done = []
    events = predict_files(
        load_model("default"),
        scans,
        "cpu",
        tmp_path / "run.v1",
        masks_dir=cohort / "masks",
        should_stop=lambda: len(done) == 1,
        flips=1,
    )
    done.extend(e for e in events if e["event"] == "scan")
    record = json.loads((tmp_path / "run.v1.json").read_text())  # run.v1 keeps its suffix
    assert record["stopped"] and record["finished"] and record["scans"]["counted"] == 1
