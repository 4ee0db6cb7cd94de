import copy
import json

import pytest
import torch
from safetensors.torch import save_file

from napari_hydranet.errors import HydranetError
from napari_hydranet.models import FORMAT_VERSION, Model, load_model, read_config, save_model
from napari_hydranet.nets import GPUNet


def _config(args):
    return {"architecture": {"name": "gpunet", "args": args}, "label": {"name": "EPVS", "unit": "lesions"}}


def test_round_trip(tmp_path):
    net = GPUNet(features=(4, 8))
    with torch.no_grad():
        net.count_scale.fill_(0.25)
    save_model(tmp_path, net, _config({"features": [4, 8]}))
    model = load_model(tmp_path)
    for a, b in zip(net.state_dict().values(), model.net.state_dict().values()):
        assert torch.equal(a, b)
    assert model.config["format"] == "napari-hydranet-model" and "EPVS" in model.card()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "weights.safetensors"]


def test_a_folder_called_default_is_the_users_not_the_bundled_model(tmp_path, monkeypatch):
    """Only the bare name ``default`` means the bundled model; ``./default`` is a folder, and
    its config goes with its weights (read_config once mapped Path('./default') back)."""
    monkeypatch.chdir(tmp_path)
    save_model("my/default", GPUNet(features=(4, 8)), dict(_config({"features": [4, 8]}), name="mine"))
    monkeypatch.chdir(tmp_path / "my")
    for name in ("./default", tmp_path / "my" / "default"):
        model = load_model(name)
        assert model.config["name"] == "mine" and model.path.resolve() == tmp_path / "my" / "default"
    assert load_model("default").config["name"] != "mine"


def test_missing_files_and_foreign_folders(tmp_path):
    with pytest.raises(HydranetError, match="missing config.json, weights.safetensors"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    save_file({"w": torch.zeros(1)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(HydranetError, match="not a napari-hydranet model config"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(HydranetError, match="not valid JSON"):
        read_config(tmp_path)


def test_other_architecture_and_mismatched_shapes(tmp_path):
    save_model(tmp_path, GPUNet(features=(4, 8)), _config({"features": [4, 8]}))
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["architecture"] = {"name": "vnet", "args": {}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HydranetError, match="unknown architecture 'vnet'"):
        load_model(tmp_path)
    cfg["architecture"] = {"name": "gpunet", "args": {"features": [4, 16]}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HydranetError, match="shape"):
        load_model(tmp_path)
    cfg["architecture"] = {"name": "gpunet", "args": {"features": [4, 8]}}
    cfg["preprocess"] = {"intensity_reference": "zscore"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HydranetError, match="config.json: unknown intensity_reference 'zscore'"):
        load_model(tmp_path)


def test_format_version_is_the_lowest_that_holds_the_model(tmp_path):
    save_model(tmp_path / "a", GPUNet(features=(4, 8)), _config({"features": [4, 8]}))
    assert read_config(tmp_path / "a")["format_version"] == 1  # older packages read it
    median = dict(_config({"features": [4, 8]}), preprocess={"intensity_reference": "median"})
    save_model(tmp_path / "b", GPUNet(features=(4, 8)), median)
    # a version-1 reader would scale its inputs by the percentile: it must refuse instead
    assert read_config(tmp_path / "b")["format_version"] == 2 <= FORMAT_VERSION
    load_model(tmp_path / "b")
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    (tmp_path / "b" / "config.json").write_text(json.dumps(dict(cfg, format_version=FORMAT_VERSION + 1)))
    with pytest.raises(HydranetError, match="newer than this napari-hydranet"):
        load_model(tmp_path / "b")


def test_pickle_weights_are_not_loaded(tmp_path):
    save_model(tmp_path, GPUNet(features=(4, 8)), _config({"features": [4, 8]}))
    torch.save(GPUNet(features=(4, 8)).state_dict(), tmp_path / "weights.safetensors")
    with pytest.raises(HydranetError, match="unreadable weights"):
        load_model(tmp_path)


def test_bundled_default_model_loads_and_its_card_leads_with_what_matters():
    model = load_model("default")
    assert model.arch == "gpunet"
    short, full = model.card().splitlines(), model.card(full=True).splitlines()
    assert "not for clinical use" in short[1]
    assert short[2].startswith("validation: ICC(2,1) 0.94, MAE 0.76 lesions (") and "seed 200" in short[2]
    assert short[3].startswith("detection: sensitivity 75% at 0.80 false positives per scan")
    assert short[4] == "voxels: 0.9–1.6 mm; scans outside this range are resampled to 1.24×1.24×1.23 mm"
    # the training history is cut to its first clause; the full card keeps all of it
    assert short[-1].endswith(" …") and len(short[-1]) < 300 < len(full[-1])
    assert full[-1].startswith(short[-1][:-2])
    # and says what noise its training scans had (texture.py), which the dock's card leaves out
    texture = "noise texture of its training scans: 0.97–1.00 (2nd–98th percentile, in the ROI); scans"
    assert full[5].startswith(texture) and full[:5] + full[6:-1] == short[:-1]


def test_cpu_placement_is_channels_last_with_the_same_outputs(tmp_path):
    model = load_model("default")
    weight = model.net.down[0][1].weight
    assert weight.is_contiguous(memory_format=torch.channels_last_3d) and not weight.is_contiguous()
    reference = copy.deepcopy(model.net).to(memory_format=torch.contiguous_format)
    x = torch.rand(2, 1, 20, 18, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.net.forward_both(x), reference.forward_both(x))
    save_model(tmp_path, model.net, model.config)
    for a, b in zip(reference.state_dict().values(), load_model(tmp_path).net.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format_version": "two"}, "malformed"),
        ({"architecture": "gpunet"}, "malformed"),
        ({"preprocess": {"crop_shape": "64x52x40"}}, "crop_shape 64x52x40: expected three whole numbers"),
        ({"preprocess": {"crop_shape": [0, 52, 40]}}, r"crop_shape \[0, 52, 40\]: .* each 16 to 256"),
        ({"preprocess": {"crop_shape": [4000, 52, 40]}}, r"each 16 to 256"),  # 238 GiB of feature maps
        ({"preprocess": {"trim_percentile": 150}}, "trim_percentile 150: expected a number from 50 to 100"),
        ({"preprocess": {"mask_sigma": -3}}, "mask_sigma -3: expected a number from 0 to 20"),
        ({"preprocess": {"mask_dilation": "two"}}, "mask_dilation 'two': expected a number"),
        ({"preprocess": {"use_mask": "no"}}, "use_mask 'no': expected true or false"),  # bool("no") is True
        ({"preprocess": {"spacing_mm": [0.01] * 3}}, r"each 0.05 to 20"),  # a 1.7 TiB resampling
        ({"label": "lesions"}, "config.json: malformed label"),  # killed napari's Predict dock
        ({"label": {"unit": 3}}, "config.json: malformed label"),
        ({"architecture": {"name": "gpunet", "args": {"features": [100000, 100000]}}}, "too large a network"),
        ({"architecture": {"name": "gpunet", "args": {"features": [-4, 8]}}}, r"are refused \("),
        ({"preprocess": {"mask_dilation": 2.7}}, "mask_dilation 2.7: expected a number"),  # whole voxels
        ({"preprocess": {"crop_shape": [64, "x", 40]}}, "malformed preprocess settings"),
        ({"architecture": {"name": "vnet"}}, r"config.json: unknown architecture 'vnet'"),
        ({"preprocess": {"spacing_range_mm": [1.6, 0.9]}}, r"expected \[smallest, largest\]"),
        ({"preprocess": {"spacing_mm": [1.2, 0, 1.2]}}, "expected three voxel edges"),
        ({"architecture": {"name": "gpunet", "args": [4, 8]}}, "must be a JSON object"),
        ({"architecture": {"name": "gpunet", "args": {"features": "x"}}}, "bad arguments"),
    ],
)
def test_hand_edited_configs_give_a_clear_error(tmp_path, change, message):
    save_model(tmp_path, GPUNet(features=(4, 8)), _config({"features": [4, 8]}))
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, **change)))
    with pytest.raises(HydranetError, match=message):
        load_model(tmp_path)


@pytest.mark.parametrize(
    "change",
    [
        {"validation": {"icc21": "high"}},
        {"detection": {"tpr": 0.7}},  # no fp_per_scan
        {"training": {"data": 25}},
    ],
)
def test_a_model_card_from_a_hand_edited_config_is_a_clear_error(tmp_path, change):
    """What the Predict dock's model picker and `hydranet info` show, from read_config alone."""
    save_model(tmp_path, GPUNet(features=(4, 8)), _config({"features": [4, 8]}))
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, **change)))
    with pytest.raises(HydranetError, match="config.json: malformed"):
        Model(None, read_config(tmp_path), tmp_path).card()


def test_a_fine_tunes_card_says_what_it_started_from_even_with_undefined_scores(tmp_path):
    """Five validation scans with one label give no ICC: saved as null, shown as '–'."""
    save_model(tmp_path, GPUNet(features=(4, 8)), _config({"features": [4, 8]}))
    cfg = json.loads((tmp_path / "config.json").read_text())
    recal = {"kept": False, "val_icc21_before": None, "val_icc21_after": None}
    training = dict(cfg.get("training") or {}, settings={"init": "default"}, recalibration=recal)
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, training=training)))
    card = Model(None, read_config(tmp_path), tmp_path).card()
    assert "started from: default; count recalibration not kept (validation ICC(2,1) – → –)" in card


def test_the_names_the_cli_offers_are_those_the_core_knows():
    from napari_hydranet import options
    from napari_hydranet.nets import ARCHITECTURES
    from napari_hydranet.train import OPTIMIZERS

    assert tuple(ARCHITECTURES) == options.ARCHITECTURES and tuple(OPTIMIZERS) == options.OPTIMIZERS


def test_weights_stored_as_whole_numbers_are_refused(tmp_path):
    """int32 weights were cast to float without a word, and the model counted 0."""
    save_model(tmp_path, GPUNet(features=(4, 8)), _config({"features": [4, 8]}))
    state = {k: v.to(torch.int32) for k, v in GPUNet(features=(4, 8)).state_dict().items()}
    save_file(state, str(tmp_path / "weights.safetensors"))
    with pytest.raises(HydranetError, match=r"int32 numbers, not floating point"):
        load_model(tmp_path)


def test_weights_from_another_save_are_refused(tmp_path):
    """A save interrupted between its two files, or weights copied over from another model
    of the same shape, left a config describing other weights (its validation, its epoch)."""
    save_model(tmp_path / "a", GPUNet(features=(4, 8)), _config({"features": [4, 8]}))
    save_model(tmp_path / "b", GPUNet(features=(4, 8)), _config({"features": [4, 8]}))
    load_model(tmp_path / "a")
    other = (tmp_path / "b" / "weights.safetensors").read_bytes()
    (tmp_path / "a" / "weights.safetensors").write_bytes(other)
    with pytest.raises(HydranetError, match="weights.safetensors is not the one config.json was saved with"):
        load_model(tmp_path / "a")
