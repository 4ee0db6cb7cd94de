"""The `hydranet` command as users and other tools call it."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from napari_hydranet.cli import main
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
    assert "ICC(2,1)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "default", "/nonexistent.nii.gz", "--out", "x.csv"], "no such file or folder"),
        (["predict", "/nonexistent_model", "x.nii", "--out", "x.csv"], "no such model folder"),
        (["train", "/nonexistent", "--labels", "/nonexistent.csv", "--out", "m"], "no such labels file"),
        (["train", ".", "--labels", "x.csv", "--out", "m", "--p-black", "1.5"], "--p-black"),
    ],
)
def test_user_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hydranet: error:") and message in err and "\n" not in err


def test_4d_input_is_refused_by_predict(tmp_path, capsys):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)), tmp_path / "f.nii.gz")
    assert main(["predict", "default", str(tmp_path / "f.nii.gz"), "--out", str(tmp_path / "c.csv")]) == 2
    assert "(8, 8, 8, 3)" in capsys.readouterr().err
    assert not (tmp_path / "c.csv").exists()


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
    # out of time before the first epoch finished: no model, and the command says so
    assert main([*common, "--out", str(tmp_path / "n"), "--time-limit", "0.00001"]) == 1
    captured = capsys.readouterr()
    assert "no model saved: no epoch finished" in captured.out
    assert "stopped before its first epoch finished" in captured.err
    assert not (tmp_path / "n" / "weights.safetensors").exists()


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
