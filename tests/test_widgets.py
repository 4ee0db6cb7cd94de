"""The Predict, Train and Cohort docks with a real viewer (pytest-xvfb provides the display)."""

import csv
import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from napari.layers import Labels
from qtpy.QtWidgets import QScrollArea
from synth import make_cohort, save_stored_otherwise

from napari_hydranet import _writer
from napari_hydranet.errors import HydranetError
from napari_hydranet.infer import DETECTION_COLUMNS, predict_file
from napari_hydranet.io import read_scan
from napari_hydranet.models import WEIGHTS, build_net, load_model, save_model
from napari_hydranet.preprocess import PreprocessConfig, prepare
from napari_hydranet.sample import load_sample

pytestmark = pytest.mark.gui
TIMEOUT = 120_000  # ms; the CPU is shared


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small GP-UNet whose count on the sample is about 6 (random weights, scaled)."""
    torch.manual_seed(0)
    args = {"features": [4, 8, 16]}
    net = build_net("gpunet", args)
    pre = PreprocessConfig(crop_shape=(48, 36, 24))  # holds the sample's ROI (45×33×24 voxels)
    sample = load_sample()
    prepared = prepare(read_scan(sample.scan), pre, read_scan(sample.mask))
    with torch.no_grad():
        raw = float(net(torch.from_numpy(prepared.array)[None, None]))
    net.count_scale.fill_(6.0 / raw)
    config = {
        "name": "tiny test model",
        "architecture": {"name": "gpunet", "args": args},
        "preprocess": pre.to_dict(),
        "label": {"name": "lesion count", "unit": "lesions"},
        "training": {"data": "nothing (random weights)"},
    }
    return save_model(tmp_path_factory.mktemp("models") / "tiny", net, config)


@pytest.fixture
def errors(monkeypatch):
    """Messages the docks show with show_error."""
    shown = []
    for module in ("predict", "train", "cohort", "_cohort_table"):
        monkeypatch.setattr(f"napari_hydranet._widgets.{module}.show_error", shown.append)
    return shown


@pytest.fixture
def sample_viewer(make_napari_viewer):
    sample = load_sample()
    viewer = make_napari_viewer()
    (scan,) = viewer.open(str(sample.scan), plugin="napari-hydranet")
    (mask,) = viewer.open(str(sample.mask), plugin="napari-hydranet")
    return viewer, scan, mask


def _wait_worker(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is not None and widget.run_button.isEnabled(), timeout=TIMEOUT)


def _predicted(qtbot, viewer, model, scan, mask):
    """A Predict dock that has run ``model`` on the layer ``scan`` inside ``mask`` (None: none)."""
    from napari_hydranet._widgets import PredictWidget

    widget = PredictWidget(viewer)
    widget.model_picker.select(model)
    widget.image_combo.set_layer(scan)
    widget.mask_combo.set_layer(mask)
    widget.run()
    _wait_worker(qtbot, widget)
    return widget


def test_deleting_the_detections_ends_their_inspection_in_a_dock_from_the_menu(
    qtbot, sample_viewer, tiny_model, errors
):
    """napari gives a dock opened from its Plugins menu a proxy of the viewer, whose layers are
    proxies too: the dock missed its detections' removal and kept stale, live controls."""
    viewer, scan, mask = sample_viewer
    _, widget = viewer.window.add_plugin_dock_widget("napari-hydranet", "Predict")
    widget.model_picker.select(tiny_model)
    widget.image_combo.set_layer(scan)
    widget.run()
    _wait_worker(qtbot, widget)
    assert errors == [] and widget.next_button.isEnabled()
    viewer.layers.remove("sample detections")
    assert widget.lesion_label.text() == "" and not widget.next_button.isEnabled()


def test_a_layer_from_the_console_is_predicted_with_its_axes_said_and_its_units(
    qtbot, make_napari_viewer, tiny_model, errors
):
    """A numpy array added with add_image (units: pixel) got overlays in mm: napari warned of
    inconsistent units and dropped them; and which axis order was assumed went unsaid."""
    from napari_hydranet._widgets import PredictWidget

    scan = read_scan(load_sample().scan)
    viewer = make_napari_viewer()
    plain = viewer.add_image(np.ascontiguousarray(scan.array.transpose(2, 1, 0)), name="plain")
    widget = PredictWidget(viewer)
    widget.model_picker.select(tiny_model)
    widget.image_combo.set_layer(plain)
    widget.run()
    _wait_worker(qtbot, widget)  # a units warning is an error under pytest's settings
    assert errors == []
    assert viewer.layers["plain heatmap"].units == plain.units
    assert "(z, y, x) = (S, A, R) with axial slices" in widget.notes_label.text()


def test_a_renamed_scan_gets_its_overlays_refilled_and_renamed(qtbot, sample_viewer, tiny_model, errors):
    """Predict after renaming the scan added a second heatmap and detections pair, the old
    pair left under the new one."""
    from napari_hydranet._widgets import PredictWidget

    viewer, scan, mask = sample_viewer
    widget = PredictWidget(viewer)
    widget.model_picker.select(tiny_model)
    widget.image_combo.set_layer(scan)
    widget.run()
    _wait_worker(qtbot, widget)
    n_layers = len(viewer.layers)
    scan.name = "patient A"
    widget.run()
    _wait_worker(qtbot, widget)
    assert errors == [] and len(viewer.layers) == n_layers
    assert {"patient A heatmap", "patient A detections"} <= {ly.name for ly in viewer.layers}
    assert widget.result_label.text().startswith("patient A: ")
    assert widget.next_button.isEnabled() and [r.name for r in widget._runs.values()] == ["patient A"]


def test_a_mask_drawn_over_an_oblique_scan_fits_it_and_a_tilted_console_layer_keeps_its_tilt(
    qtbot, make_napari_viewer, tiny_model, errors, tmp_path
):
    """napari's "new labels" copies the scan layer's (straightened) transform but not its
    metadata: the mask was refused as 13 mm off the scan. A layer from the console keeps its
    tilt, and its overlays were straightened, 8 mm away."""
    from scipy.spatial.transform import Rotation

    from napari_hydranet._widgets._common import layer_to_scan

    sample = load_sample()
    tilt = np.eye(4)
    tilt[:3, :3] = Rotation.from_euler("x", 15, degrees=True).as_matrix()
    img = nib.load(sample.scan)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), tilt @ img.affine), tmp_path / "oblique.nii.gz")
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match="an oblique scan"):
        (scan_layer,) = viewer.open(str(tmp_path / "oblique.nii.gz"), plugin="napari-hydranet")
    drawn = viewer.add_labels(
        np.ones(scan_layer.data.shape, np.uint8), affine=scan_layer.affine.affine_matrix, name="drawn"
    )
    scan = layer_to_scan(scan_layer)
    mask = layer_to_scan(drawn, like=scan)
    np.testing.assert_allclose(mask.affine, scan.affine)
    assert mask.notes == []  # not "a file opened elsewhere"
    prepare(scan, PreprocessConfig(crop_shape=None), mask)  # on the scan's grid

    console = viewer.add_image(
        np.asarray(scan_layer.data),
        affine=scan_layer.affine.affine_matrix @ np.linalg.inv(tilt),
        name="tilted",
    )
    widget = _predicted(qtbot, viewer, tiny_model, console, mask=None)
    assert errors == []
    np.testing.assert_allclose(
        viewer.layers["tilted heatmap"].affine.affine_matrix, console.affine.affine_matrix
    )
    assert "oblique" not in widget.notes_label.text()  # napari shows it as it is


def test_the_roi_mask_follows_the_chosen_scan(make_napari_viewer, tmp_path):
    """Two subjects on one grid, each opened with its mask: choosing the second scan kept the
    first one's mask, and the second subject was counted inside it."""
    from napari_hydranet._widgets import PredictWidget

    sample = load_sample()
    files = {
        "a/subA.nii.gz": sample.scan,
        "ma/subA.nii.gz": sample.mask,
        "b/sub-02_T2w.nii.gz": sample.scan,
        "mb/sub-02_desc-bg_mask.nii.gz": sample.mask,
        "c/subC.nii.gz": sample.scan,
    }
    for name, source in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(source, tmp_path / name)
    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    opened = {name: viewer.open(str(tmp_path / name), plugin="napari-hydranet")[0] for name in files}
    a, mask_a = opened["a/subA.nii.gz"], opened["ma/subA.nii.gz"]
    b, mask_b = opened["b/sub-02_T2w.nii.gz"], opened["mb/sub-02_desc-bg_mask.nii.gz"]
    assert widget.image_combo.layer() is opened["c/subC.nii.gz"]  # the scan opened last
    assert widget.mask_combo.layer() is None  # none of its own
    widget.image_combo.set_layer(a)
    assert widget.mask_combo.layer() is mask_a
    widget.image_combo.set_layer(b)  # a BIDS mask of it
    assert widget.mask_combo.layer() is mask_b
    widget.image_combo.set_layer(opened["c/subC.nii.gz"])  # none of its own: not another's
    assert widget.mask_combo.layer() is None
    widget.mask_combo.set_layer(mask_a)  # the user's choice stands until the scan changes
    widget._on_mask_chosen()  # what the user's pick in the box does
    assert widget.mask_combo.layer() is mask_a
    viewer.add_points(np.zeros((1, 3)), name="a point")  # an overlay, a dock's results
    assert widget.mask_combo.layer() is mask_a  # it was reset at every layer added
    viewer.open(str(tmp_path / "a/subA.nii.gz"), plugin="napari-hydranet")  # a second look at A
    assert widget.image_combo.layer() is opened["c/subC.nii.gz"]  # chosen by the user: kept


def test_an_oblique_scan_is_shown_straightened_with_its_detections_drawn(
    qtbot, make_napari_viewer, tiny_model, errors, tmp_path
):
    """napari slices only along a layer's data axes: with the tilted affine the scan was shown
    turned, no detection ring was drawn on it and Next landed 12 mm from the lesion."""
    from scipy.spatial.transform import Rotation

    from napari_hydranet._widgets import PredictWidget

    sample = load_sample()
    tilt = np.eye(4)
    tilt[:3, :3] = Rotation.from_euler("x", 15, degrees=True).as_matrix()  # about R: S and A mix
    for name, path in (("oblique", sample.scan), ("oblique_mask", sample.mask)):
        img = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), tilt @ img.affine), tmp_path / f"{name}.nii.gz")
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match=r"oblique: an oblique scan \(15.0° from the scanner axes\)"):
        (scan,) = viewer.open(str(tmp_path / "oblique.nii.gz"), plugin="napari-hydranet")
    (mask,) = viewer.open(str(tmp_path / "oblique_mask.nii.gz"), plugin="napari-hydranet")
    matrix = scan.affine.affine_matrix[:3, :3]
    assert np.allclose(matrix, np.diag(np.diag(matrix)))  # straightened, voxel sizes kept
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_picker.select(tiny_model)
    widget.image_combo.set_layer(scan)
    widget.mask_combo.set_layer(mask)
    widget.run()
    _wait_worker(qtbot, widget)
    assert errors == []
    assert "an oblique scan (15.0° from the scanner axes)" in widget.notes_label.text()
    points = viewer.layers["oblique detections"]
    expected, affine = predict_file(
        load_model(tiny_model),
        tmp_path / "oblique.nii.gz",
        torch.device("cpu"),
        mask_path=tmp_path / "oblique_mask.nii.gz",
    )
    rows = expected.detection_rows(affine)
    assert len(points.data) == len(rows) > 1
    for n in range(len(rows)):
        widget.go_to(+1)
        assert n in points._view_indices  # its ring is drawn on the slice the view went to
        x, y, z = rows[n][5:8]  # the dock gives the table's scanner mm
        assert widget.lesion_label.text().splitlines()[1] == f"x {x:.1f}, y {y:.1f}, z {z:.1f} mm"


def test_predict_adds_overlays_and_replaces_its_own(qtbot, sample_viewer, tiny_model, errors, tmp_path):
    from napari_hydranet._widgets import PredictWidget

    viewer, scan, mask = sample_viewer
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    assert tuple(map(str, camera.orientation2d)) == ("up", "right")  # anterior at the top, as in the demo
    widget.model_picker.select(tiny_model)
    assert "tiny test model" in widget.model_picker.card.text()
    assert widget.model_picker.card.toolTip() == load_model(tiny_model).card(full=True)
    # the reader opens the binary ROI as a mask, which is offered as a mask, not as a scan
    assert isinstance(mask, Labels) and mask.metadata["kind"] == "mask"
    assert widget.image_combo.findText(mask.name) == -1 and widget.mask_combo.layer() is mask
    widget.image_combo.set_layer(scan)
    foreign = viewer.add_image(np.zeros(scan.data.shape), name="sample heatmap", units="mm")  # not ours

    widget.run()
    _wait_worker(qtbot, widget)
    assert errors == []
    heat, points = viewer.layers["sample heatmap [1]"], viewer.layers["sample detections"]
    assert widget.mask_combo.findText(heat.name) == -1  # our overlays are not masks
    assert heat.data.shape == scan.data.shape
    np.testing.assert_allclose(heat.affine.affine_matrix, scan.affine.affine_matrix)
    np.testing.assert_allclose(heat.metadata["affine"], scan.metadata["affine"])
    assert heat.metadata["source_path"] == scan.metadata["path"]  # the writer protects that scan
    expected, affine = predict_file(
        load_model(tiny_model), load_sample().scan, torch.device("cpu"), mask_path=load_sample().mask
    )
    assert len(points.data) == expected.n_detections > 0
    assert f"{expected.count:.1f} ± {expected.count_sd:.1f}" in widget.result_label.text()
    # its mask, by layer name and file: masks named like their scans share the scan's name
    where = Path(load_sample().mask)
    assert (
        widget.result_label.text()
        .splitlines()[0]
        .endswith(f"inside {mask.name} ({where.parent.name}/{where.name})")
    )

    # the detections layer saves in the engine's format, with the engine's numbers
    _writer.write_points_layer(str(tmp_path / "d.csv"), points.data, points.as_layer_data_tuple()[1])
    with open(tmp_path / "d.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == DETECTION_COLUMNS
    # untouched detections keep their numbers and sizes (the writer knows where each was put)
    assert [(int(r[1]), int(r[8])) for r in rows[1:]] == [
        (r[1], r[8]) for r in expected.detection_rows(affine)
    ]
    np.testing.assert_allclose(
        np.array([r[2:8] for r in rows[1:]], float),
        np.array([r[2:8] for r in expected.detection_rows(affine)], float),
        rtol=1e-4,
        atol=1e-3,
    )

    # next/previous centre the view on a detection, in world coordinates
    widget.go_to(+1)
    widget.go_to(+1)
    target = np.asarray(points.data_to_world(points.data[1]))
    half_step = np.array([r.step for r in viewer.dims.range]) / 2  # the slider snaps to slices
    assert np.all(np.abs(np.asarray(viewer.dims.point) - target) <= half_step + 1e-6)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    np.testing.assert_allclose(camera.center[-2:], target[-2:], atol=1e-6)
    assert points.selected_data == {1}
    widget.go_to(-1)
    first = np.asarray(points.data_to_world(points.data[0]))
    assert np.all(np.abs(np.asarray(viewer.dims.point) - first) <= half_step + 1e-6)
    x, y, z = expected.detection_rows(affine)[0][5:8]  # the lesion's place as the table gives it
    assert widget.lesion_label.text().splitlines()[1] == f"x {x:.1f}, y {y:.1f}, z {z:.1f} mm"

    # the threshold slider recomputes detections live; back to the count-consistent default
    n0 = len(points.data)
    width = widget.findChild(QScrollArea).widget().minimumSizeHint().width()
    widget.slider.setValue(widget.slider.maximum())
    assert len(points.data) < n0
    assert widget.lesion_label.text() == f"{len(points.data)} detections at this threshold"
    assert widget.findChild(QScrollArea).widget().minimumSizeHint().width() == width  # no jump
    assert widget.next_button.isEnabled() == (len(points.data) > 0)
    widget.slider.setValue(widget.slider.minimum())
    assert len(points.data) > 0 and widget.next_button.isEnabled()
    numbers = [str(i) for i in range(1, len(points.data) + 1)]
    assert points.text.visible and list(points.text.values) == numbers  # each ring numbered, as in the CSV
    widget.reset_button.click()
    assert len(points.data) == n0 and widget.lesion_label.text() == f"{n0} detections"
    widget.combine_box.setChecked(True)
    assert points.metadata["threshold"] != pytest.approx(expected.result.threshold)

    # a second run refills this dock's layers for this scan, and only those
    n_layers = len(viewer.layers)
    heat.data = np.zeros_like(heat.data)
    widget.run()
    _wait_worker(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert viewer.layers["sample heatmap [1]"] is heat and viewer.layers["sample detections"] is points
    assert heat.data.max() > 0 and points.metadata["threshold"] == widget._current.default_threshold
    # a deleted overlay comes back on the next run
    viewer.layers.remove(points)
    widget.run()
    _wait_worker(qtbot, widget)
    assert len(viewer.layers) == n_layers and viewer.layers["sample detections"] is not points
    assert foreign in viewer.layers and scan in viewer.layers and mask in viewer.layers
    assert [ly.name for ly in viewer.layers].count("sample detections") == 1
    # a closed scan's prediction (its heatmap, its score maps) is let go
    assert [r.name for r in widget._runs.values()] == ["sample"]
    viewer.layers.remove(scan)
    assert widget._runs == {}


def test_an_unexpected_error_leaves_its_traceback_on_the_console(capsys):
    from napari_hydranet._widgets._common import error_text

    try:
        raise ValueError("boom")
    except ValueError as exc:
        assert error_text(exc) == "ValueError: boom"
    assert "Traceback" in capsys.readouterr().err
    assert error_text(HydranetError("a known problem")) == "a known problem"
    assert capsys.readouterr().err == ""


def test_predict_with_a_regressor_hides_detections(qtbot, sample_viewer, tiny_model, errors, tmp_path):
    from napari_hydranet._widgets import PredictWidget

    args = {"width": 4}
    config = {
        "architecture": {"name": "regressor", "args": args},
        "preprocess": PreprocessConfig(crop_shape=(48, 36, 24)).to_dict(),
        "label": {"name": "WMH volume", "unit": "mm3"},
    }
    regressor = save_model(tmp_path / "regressor", build_net("regressor", args), config)
    viewer, scan, _ = sample_viewer
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_picker.select(tiny_model)
    assert widget.combine_box.isVisibleTo(widget) and widget.detections_section.isVisibleTo(widget)
    widget.model_picker.select(regressor)
    assert not widget.combine_box.isVisibleTo(widget) and not widget.detections_section.isVisibleTo(widget)
    widget.model_picker.select(tiny_model)
    widget.image_combo.set_layer(scan)
    widget.run()
    _wait_worker(qtbot, widget)
    widget.model_picker.select(regressor)  # the detections shown stay inspectable until replaced
    assert widget.detections_section.isVisibleTo(widget) and widget.next_button.isEnabled()
    widget.run()
    _wait_worker(qtbot, widget)
    assert errors == []
    assert not widget.combine_box.isVisibleTo(widget) and not widget.detections_section.isVisibleTo(widget)
    assert "no heatmap or detections (a regressor)" in widget.result_label.text()
    assert [layer.name for layer in viewer.layers] == [scan.name, sample_viewer[2].name]
    widget.model_picker.select(tiny_model)  # back to a model with a heatmap
    assert widget.combine_box.isVisibleTo(widget) and widget.detections_section.isVisibleTo(widget)


def test_predict_on_a_scan_stored_in_another_voxel_order(
    qtbot, make_napari_viewer, tiny_model, errors, tmp_path
):
    """A scan stored LPS with permuted axes: the dock's overlays save as the engine's outputs
    for that file, on its own grid."""
    from napari_hydranet._widgets import PredictWidget

    sample = load_sample()
    scan_path = save_stored_otherwise(sample.scan, tmp_path / "other.nii.gz")
    mask_path = save_stored_otherwise(sample.mask, tmp_path / "other_mask.nii.gz")
    viewer = make_napari_viewer()
    viewer.open(str(scan_path), plugin="napari-hydranet")
    viewer.open(str(mask_path), plugin="napari-hydranet")
    widget = PredictWidget(viewer)
    widget.model_picker.select(tiny_model)
    widget.run()
    _wait_worker(qtbot, widget)
    assert errors == []
    expected, affine = predict_file(
        load_model(tiny_model), scan_path, torch.device("cpu"), mask_path=mask_path
    )
    heat, points = viewer.layers["other heatmap"], viewer.layers["other detections"]
    _writer.write_volume_layer(str(tmp_path / "heat.nii.gz"), heat.data, heat.as_layer_data_tuple()[1])
    written = nib.load(str(tmp_path / "heat.nii.gz"))
    np.testing.assert_allclose(written.affine, affine, atol=1e-6)
    np.testing.assert_allclose(np.asanyarray(written.dataobj), expected.source_heatmap(), atol=1e-6)
    _writer.write_points_layer(str(tmp_path / "d.csv"), points.data, points.as_layer_data_tuple()[1])
    with open(tmp_path / "d.csv", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    assert len(rows) == expected.n_detections > 0
    np.testing.assert_allclose(
        np.array([r[2:8] for r in rows], float),
        np.array([r[2:8] for r in expected.detection_rows(affine)], float),
        atol=1e-3,
    )


def test_two_subjects_scans_of_one_file_name_get_overlays_of_their_own(
    qtbot, make_napari_viewer, tiny_model, errors, tmp_path
):
    from napari_hydranet._widgets import PredictWidget

    sample = load_sample()
    viewer = make_napari_viewer()
    layers = []
    for sub in ("subA", "subB"):
        (tmp_path / sub).mkdir()
        shutil.copy(sample.scan, tmp_path / sub / "T2.nii.gz")
        (layer,) = viewer.open(str(tmp_path / sub / "T2.nii.gz"), plugin="napari-hydranet")
        layers.append(layer)
    layers[1].data = layers[1].data * 0.5 + 0.5 * np.roll(layers[1].data, 3, axis=0)  # another subject
    widget = PredictWidget(viewer)
    widget.model_picker.select(tiny_model)
    for layer in layers:
        widget.image_combo.set_layer(layer)
        widget.mask_combo.set_layer(None)
        widget.run()
        _wait_worker(qtbot, widget)
    assert errors == []
    a, b = (viewer.layers[f"{ly.name} heatmap"] for ly in layers)
    assert layers[1].name != layers[0].name and a is not b and not np.allclose(a.data, b.data)
    assert [ly.name for ly in viewer.layers].count(f"{layers[0].name} detections") == 1
    assert widget.result_label.text().startswith(f"{layers[1].name}: ")


def test_a_scan_closed_while_predicting_gets_no_overlays(qtbot, sample_viewer, tiny_model, errors):
    from napari_hydranet._widgets import PredictWidget

    viewer, scan, mask = sample_viewer
    widget = PredictWidget(viewer)
    widget.model_picker.select(tiny_model)
    widget.image_combo.set_layer(scan)
    widget.run()
    viewer.layers.remove(scan)  # before the worker's result reaches the main thread
    _wait_worker(qtbot, widget)
    assert errors == []
    assert [ly.name for ly in viewer.layers] == [mask.name]
    assert widget.result_label.text() == "sample was closed while it was predicted; no overlays added."
    assert not widget.next_button.isEnabled()


def test_predict_picks_an_opened_mask_unless_one_is_chosen(make_napari_viewer):
    from napari_hydranet._widgets import PredictWidget

    viewer = make_napari_viewer()
    volume = np.ones((4, 5, 6), np.uint8)
    before = viewer.add_labels(volume, name="opened before", metadata={"kind": "mask"})
    assert PredictWidget(viewer).mask_combo.layer() is before  # masks already open count too
    viewer.layers.remove(before)
    widget = PredictWidget(viewer)
    assert widget.mask_combo.layer() is None
    viewer.add_labels(volume * 0, name="empty", metadata={"kind": "mask"})  # no ROI: not chosen
    assert widget.mask_combo.layer() is None
    first = viewer.add_labels(volume, name="roi a", metadata={"kind": "mask"})
    assert widget.mask_combo.layer() is first
    second = viewer.add_labels(volume, name="roi b", metadata={"kind": "mask"})
    assert widget.mask_combo.layer() is first  # a chosen mask stays chosen
    first.name = "roi a renamed"  # ... renamed too, and shown by its new name
    assert widget.mask_combo.layer() is first and widget.mask_combo.currentText() == "roi a renamed"
    viewer.layers.remove(first)
    assert widget.mask_combo.layer() is None  # not replaced by another mask behind the user's back
    widget.mask_combo.set_layer(None)  # the user chooses no mask ...
    second.name = "roi b renamed"
    viewer.add_labels(volume, name="roi c", metadata={"kind": "mask"})  # ... and no mask is forced
    viewer.add_labels(volume, name="drawn")  # painted in napari: offered, not chosen for the user
    assert widget.mask_combo.layer() is None and widget.mask_combo.findText("drawn") > 0
    assert widget.mask_combo.findText("roi b renamed") > 0


def test_predict_reports_errors_without_traceback(qtbot, sample_viewer, tiny_model, errors, tmp_path):

    viewer, scan, _ = sample_viewer
    bad_mask = viewer.add_labels(np.zeros((5, 5, 5), np.uint8), name="wrong grid")
    widget = _predicted(qtbot, viewer, tiny_model, scan, mask=bad_mask)
    assert len(errors) == 1 and "mask shape" in errors[0]
    assert "sample detections" not in viewer.layers
    text = widget.result_label.text()  # the dock says so too, not only a passing toast
    assert "not predicted" in text and "mask shape" in text and "layer 'wrong grid'" in text
    widget.mask_combo.set_layer(scan)  # the scan offered as its own ROI: refused, not counted
    widget.run()
    assert len(errors) == 2 and "the ROI mask is the scan itself" in errors[1]
    assert "sample detections" not in viewer.layers
    del errors[1]

    # NaNs in a layer (not read through our reader) are set to 0 and noted, as for files
    data = scan.data.copy()
    data[0] = np.nan
    widget.image_combo.set_layer(viewer.add_image(data, affine=scan.affine, metadata=dict(scan.metadata)))
    widget.mask_combo.set_layer(None)
    widget.run()
    _wait_worker(qtbot, widget)
    assert len(errors) == 1
    assert "NaN/inf voxels set to 0" in widget.notes_label.text()
    assert "note" not in widget.result_label.text()  # the headline stays the count
    assert "inside" not in widget.result_label.text()  # counted without a mask

    # NaNs in a file: our reader sets them to 0 when it opens it; its note reaches the dock
    nib.save(nib.Nifti1Image(data, scan.metadata["affine"]), str(tmp_path / "nan.nii.gz"))
    with pytest.warns(UserWarning, match="NaN/inf voxels set to 0"):
        (opened,) = viewer.open(str(tmp_path / "nan.nii.gz"), plugin="napari-hydranet")
    widget.image_combo.set_layer(opened)
    widget.run()
    _wait_worker(qtbot, widget)
    assert "nan.nii.gz: " in widget.notes_label.text()
    assert "NaN/inf voxels set to 0" in widget.notes_label.text()

    # the detections section follows its layer and the last run: never another scan's
    assert widget.lesion_label.text().endswith("detections") and widget.slider.isEnabled()
    viewer.layers.remove(f"{opened.name} detections")
    assert widget.lesion_label.text() == widget.threshold_label.text() == ""
    assert not (widget.slider.isEnabled() or widget.next_button.isEnabled())
    widget.run()
    _wait_worker(qtbot, widget)
    assert widget.lesion_label.text().endswith("detections") and widget.next_button.isEnabled()
    widget.mask_combo.set_layer(bad_mask)
    widget.run()
    _wait_worker(qtbot, widget)
    assert "not predicted" in widget.result_label.text() and errors.pop()
    assert widget.lesion_label.text() == "" and not widget.slider.isEnabled()
    widget.close()


def test_train_start_stop_registers_the_model(qtbot, make_napari_viewer, tmp_path, errors):
    from napari_hydranet._widgets import PredictWidget, TrainWidget

    data = make_cohort(tmp_path / "cohort", n=8, shape=(24, 24, 16))
    viewer = make_napari_viewer()
    predict = PredictWidget(viewer)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)

    # problems in the labels CSV are listed row by row, before anything starts
    bad = tmp_path / "bad.csv"
    bad.write_text("scan,label\nsub-000.nii.gz,3\nmissing.nii.gz,2\nsub-001.nii.gz,many\n")
    assert not widget.set_inputs(data / "scans", bad, data / "masks")
    problems = [widget.problems.item(i).text() for i in range(widget.problems.count())]
    assert any("row 3" in p and "missing.nii.gz" in p for p in problems)
    assert any("row 4" in p and "many" in p for p in problems)
    assert len(problems) == 2 and all(p.startswith("✗ row ") for p in problems)  # one per bad row
    # a German Excel's "CSV": semicolons, decimal commas, "Scan" for scan
    lines = (data / "labels.csv").read_text().splitlines()
    german = tmp_path / "german.csv"
    german.write_text(
        "Scan;Label\n" + "".join(f"{ln.split(',')[0]};{i},5\n" for i, ln in enumerate(lines[1:]))
    )
    assert widget.set_inputs(data / "scans", german, data / "masks")
    assert widget.columns.columns() == ("Scan", "Label")
    problems = [widget.problems.item(i).text() for i in range(widget.problems.count())]
    assert problems == [
        "✓ 8 labelled scans",
        "note: german.csv: read as separated by semicolons",
        "note: 8 labels written with a decimal comma (3,5) read as 3.5",
    ]
    # a scan of the folder that the table forgot is named before Start
    (tmp_path / "seven.csv").write_text("\n".join(lines[:-1]) + "\n")
    assert widget.set_inputs(data / "scans", tmp_path / "seven.csv", data / "masks")
    forgotten = lines[-1].split(",")[0]
    assert widget.problems.item(1).text() == (
        f"note: 1 scan in {data / 'scans'} has no row in the labels and is not used: {forgotten}"
    )

    # a masks folder with no mask for the scans is told before Start, not after the scans load
    assert not widget.set_inputs(data / "scans", data / "labels.csv", tmp_path)
    assert widget.problems.item(0).text().startswith(f"✗ {tmp_path}: no ROI mask for any of the 8 scans")
    # no masks: the default model, trained inside ROI masks, asks for them; from scratch, none needed
    assert not widget.set_inputs(data / "scans", data / "labels.csv", None)
    assert widget.problems.item(0).text() == (
        "✗ the default model counts inside ROI masks: "
        "choose the Masks folder (ROI masks named like the scans)"
    )
    widget.start_from.setCurrentText("scratch")
    assert widget.problems.item(0).text() == "✓ 8 labelled scans"
    # volumes (mm³) for the default model of counts: refused before Start, not after the scans load
    volumes = tmp_path / "volumes.csv"
    volumes.write_text(
        "scan,label\n" + "".join(f"{ln.split(',')[0]},{2000 + i}\n" for i, ln in enumerate(lines[1:]))
    )
    assert widget.set_inputs(data / "scans", volumes, data / "masks")  # from scratch: any unit
    widget.start_from.setCurrentText("default model")
    refused = widget.problems.item(0).text()
    assert refused.startswith("✗ a fine-tune of this model cannot learn these labels: they average 2004 ")
    assert refused.endswith("(for volumes, a regressor: Architecture regressor, with Labels are and unit)")
    assert widget.set_inputs(data / "scans", data / "labels.csv", data / "masks")
    assert widget.problems.count() == 1
    widget.out.set_path(tmp_path / "model")
    assert not widget.recal_only.isChecked()  # the default: a fine-tune (it recalibrates first)
    widget.recal_only.setChecked(True)
    args = widget.build_args()
    assert args[args.index("--init") + 1] == "default" and "--recalibrate-only" in args
    assert not widget.epochs.isEnabled() and not widget.lr.isEnabled()  # no gradient steps to set
    widget.start_from.setCurrentText("a model folder")
    widget.init.set_path("default")  # the bundled model's name, as on the command line
    args = widget.build_args()
    assert args[args.index("--init") + 1] == "default"
    widget.init.set_path(tmp_path / "elsewhere")
    args = widget.build_args()
    assert args[args.index("--init") + 1] == str((tmp_path / "elsewhere").resolve())
    widget.start_from.setCurrentText("scratch")
    assert not widget.recal_only.isEnabled() and "--recalibrate-only" not in widget.build_args()
    assert widget.epochs.isEnabled() and widget.lr.isEnabled()
    widget.arch.setCurrentText("regressor")
    widget.arch_args.setText(json.dumps({"width": 4}))
    widget.crop.setText("24 24 16")
    widget.epochs.setValue(50)
    widget.heads.setValue(2)
    out = tmp_path / "model"
    widget.out.set_path(out)
    args = widget.build_args()
    assert args[:2] == ["train", str((data / "scans").resolve())] and "--json" in args
    assert "--unit" not in args and "--label-name" not in args  # blank: the model's, or the defaults
    widget.label_name.setText("WMH volume")
    widget.unit.setText("mm3")
    args = widget.build_args()
    assert args[args.index("--label-name") + 1] == "WMH volume" and args[args.index("--unit") + 1] == "mm3"
    assert args[args.index("--crop") + 1 : args.index("--crop") + 4] == ["24", "24", "16"]

    with qtbot.waitSignal(widget.model_ready, timeout=TIMEOUT) as ready:
        widget.start()
        # the settings fold under a button while it runs (the curves come into view)
        assert not widget.inputs_panel.isVisibleTo(widget) and widget.settings_toggle.isVisibleTo(widget)
        widget.settings_toggle.click()
        assert widget.inputs_panel.isVisibleTo(widget) and not widget.inputs_panel.isEnabled()
        assert widget.settings_toggle.text() == "Hide the settings"
        qtbot.waitUntil(lambda: len(widget.history) >= 1, timeout=TIMEOUT)
        assert widget.progress.value() > 0
        assert widget.curves.ys[0][: len(widget.history)] == [h["loss"] for h in widget.history]
        assert not widget.curves.grab().isNull()  # the curves paint
        widget.stop()
    qtbot.waitUntil(lambda: not widget.is_running(), timeout=TIMEOUT)
    assert ready.args == [str(out.resolve())]
    assert widget.last_event["event"] == "done" and widget.last_event["reason"] == "stopped"
    assert "stopped on request" in widget.status.text() and widget.time_label.text().startswith("took ")
    # the settings stay as the user left them (shown, above), now enabled; folded again on a click
    assert widget.inputs_panel.isVisibleTo(widget) and widget.inputs_panel.isEnabled()
    widget.settings_toggle.click()
    assert not widget.inputs_panel.isVisibleTo(widget) and widget.settings_toggle.isVisibleTo(widget)
    # the start's notes stay in view to the end, in the dock's words (8 scans: 2 validation scans)
    assert "note: only 2 validation scans" in widget.notes_label.text()
    assert widget.progress.format() == "stopped on request"
    assert (out / WEIGHTS).is_file()
    assert load_model(out).arch == "regressor" and load_model(out).label == {
        "name": "WMH volume",
        "unit": "mm3",
    }
    assert str(out.resolve()) in predict.model_picker.keys()
    assert widget.stop_button.text() == "Stop"

    # Start again on that Output: refused with how to go on; ticked, it goes on from its last epoch
    before = [(h["epoch"], h["loss"]) for h in widget.history]
    widget.start()
    qtbot.waitUntil(lambda: not widget.is_running() and widget.start_button.isEnabled(), timeout=TIMEOUT)
    assert "tick 'continue the stopped training in Output' to go on with it" in widget.status.text()
    assert "to go on with it" in errors.pop()
    widget.resume.setChecked(True)
    widget.start()
    qtbot.waitUntil(lambda: len(widget.history) > len(before), timeout=TIMEOUT)
    # it goes on after the last epoch, and its curves keep the epochs run before
    again = [(h["epoch"], h["loss"]) for h in widget.history[: len(before)]]
    np.testing.assert_allclose(again, before, rtol=1e-5)  # history.csv keeps 6 digits
    assert widget.history[len(before)]["epoch"] == before[-1][0] + 1
    assert not widget.resume.isChecked()  # once: the next Start is a new training
    widget.stop()
    qtbot.waitUntil(lambda: not widget.is_running(), timeout=TIMEOUT)

    # Stop twice kills the child: the best model saved before is kept, said so and offered
    widget.out.set_path(tmp_path / "killed")
    with qtbot.waitSignal(widget.model_ready, timeout=TIMEOUT) as ready:
        widget.start()
        assert widget.progress.format() == "%p%"  # not the last run's "stopped on request"
        qtbot.waitUntil(lambda: widget._checkpoint is not None, timeout=TIMEOUT)
        widget.stop()
        widget.stop()
    qtbot.waitUntil(lambda: not widget.is_running(), timeout=TIMEOUT)
    kept = (tmp_path / "killed").resolve()
    assert ready.args == [str(kept)] and (kept / WEIGHTS).is_file()
    assert widget.status.text().startswith("training ended: killed; the best model so far (epoch")
    assert widget.stop_button.text() == "Stop" and widget.time_label.text() == ""
    assert errors == []

    # an output folder holding the user's files: refused by the child before it starts, untouched
    widget.out.set_path(data / "masks")
    before = sorted(p.name for p in (data / "masks").iterdir())
    widget.start()
    qtbot.waitUntil(lambda: not widget.is_running() and widget.start_button.isEnabled(), timeout=TIMEOUT)
    assert widget.status.text().startswith("training did not start: ")
    assert "a new model needs a new or empty folder (Output)" in widget.status.text()
    assert widget.inputs_panel.isVisibleTo(widget) and widget.inputs_panel.isEnabled()  # to correct it
    assert sorted(p.name for p in (data / "masks").iterdir()) == before and len(errors) == 1
    # the scans folder given as the masks' too: found by the check before Start
    assert not widget.set_inputs(data / "scans", data / "labels.csv", data / "scans")
    widget.out.set_path(tmp_path / "swapped")
    widget.start()
    assert widget.status.text() == "⚠ not started: the problems are listed under Masks"
    assert "the masks folder holds the scans" in widget.problems.item(0).text()
    assert not (tmp_path / "swapped").exists()
    predict.close()


def _long_scratch_training(widget):
    widget.start_from.setCurrentText("scratch")
    widget.arch.setCurrentText("regressor")
    widget.arch_args.setText(json.dumps({"width": 4}))
    widget.crop.setText("24 24 16")
    widget.epochs.setValue(5000)


def test_a_train_dock_taken_away_by_its_x_stops_its_training_cleanly(qtbot, make_napari_viewer, tmp_path):
    """napari's × on a dock never closes it (it only unparents it): the training must still be
    asked to stop after its step and save, not be killed when the dock is collected."""
    from napari_hydranet._widgets import TrainWidget
    from napari_hydranet._widgets._train_process import _RUNNING, _stop_at_quit

    data = make_cohort(tmp_path / "cohort", n=8, shape=(24, 24, 16))
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.set_inputs(data / "scans", data / "labels.csv", data / "masks")
    _long_scratch_training(widget)
    widget.out.set_path(tmp_path / "model")
    widget.start()
    qtbot.waitUntil(lambda: len(widget.history) >= 1, timeout=TIMEOUT)
    proc = widget.runner.process
    viewer.window.remove_dock_widget(widget)  # what the dock's × does
    qtbot.waitUntil(lambda: proc not in _RUNNING, timeout=TIMEOUT)
    # it ended as Stop ends it (exit 130: stopped on request), not killed
    assert proc.exitStatus() == proc.ExitStatus.NormalExit and proc.exitCode() == 130
    rows = (tmp_path / "model" / "history.csv").read_text().splitlines()
    assert 2 <= len(rows) < 5001 and (tmp_path / "model" / WEIGHTS).is_file()
    assert load_model(tmp_path / "model").arch == "regressor"

    # closing napari's window with a training in an open dock stops it the same way: napari
    # deletes its window (and the dock) without closing the dock, and viewer.close() in a
    # script or notebook left the training running to its end; quitting then waits for it
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_inputs(data / "scans", data / "labels.csv", data / "masks")
    _long_scratch_training(widget)
    widget.out.set_path(tmp_path / "quit")
    widget.start()
    qtbot.waitUntil(lambda: len(widget.history) >= 1, timeout=TIMEOUT)
    proc = widget.runner.process
    viewer.close()
    qtbot.waitUntil(lambda: proc not in _RUNNING, timeout=TIMEOUT)  # it ends by itself
    _stop_at_quit()  # what the application's aboutToQuit runs: nothing left to wait for
    assert proc.exitStatus() == proc.ExitStatus.NormalExit and proc.exitCode() == 130
    assert load_model(tmp_path / "quit").arch == "regressor"


def _small_cohort(folder):
    """Three scans on the sample's grid (the sample, flipped, dimmer) with masks and labels."""
    sample = load_sample()
    img, roi = nib.load(str(sample.scan)), nib.load(str(sample.mask))
    data = np.asarray(img.dataobj, np.float32)
    (folder / "scans").mkdir(parents=True)
    (folder / "masks").mkdir()
    variants = {"a.nii.gz": data, "b.nii.gz": data[::-1].copy(), "c.nii.gz": data * 0.5 + 20}
    for name, vol in variants.items():
        nib.save(nib.Nifti1Image(vol, img.affine), str(folder / "scans" / name))
        shutil.copy(sample.mask, folder / "masks" / name)
        if name == "b.nii.gz":
            nib.save(
                nib.Nifti1Image(np.asarray(roi.dataobj)[::-1].copy(), img.affine),
                str(folder / "masks" / name),
            )
    (folder / "labels.csv").write_text("scan,label\na.nii.gz,6\nb.nii.gz,5\nc.nii.gz,\n")
    return folder


def test_cohort_notes_name_their_scan_once():
    from napari_hydranet._widgets.cohort import _gist

    notes = ["a: no ROI mask given", "/d/scans/a.nii.gz: 3 NaN/inf voxels set to 0", "/d/masks/b.nii.gz: x"]
    notes += ["scans/a.nii.gz: no orientation", "masks/a.nii.gz: 2 NaN/inf voxels set to 0"]
    gists = ["no ROI mask given", "3 NaN/inf voxels set to 0", notes[2], "no orientation", notes[4]]
    assert _gist(Path("/d/scans/a.nii.gz"), notes) == gists  # the mask's notes stay the mask's


def test_cohort_shows_each_scans_notes(qtbot, make_napari_viewer, tiny_model, tmp_path, errors):
    """Without masks every count covers the whole volume: the table, the status line and the
    export say so, as the Predict dock does for one scan."""
    from napari_hydranet._widgets import CohortWidget

    folder = _small_cohort(tmp_path / "cohort")
    viewer = make_napari_viewer(show=True)
    widget = CohortWidget(viewer)
    viewer.window.add_dock_widget(widget)  # shown, as a user sees it
    qtbot.waitUntil(lambda: widget._dock_placed)
    widget.scans.set_path(folder / "scans")
    widget.model_picker.select(tiny_model)
    widget.run()
    _wait_worker(qtbot, widget)
    assert errors == []
    widget.table.cellClicked.emit(0, 0)  # a shown dock still opens a row's scan
    assert [ly.name for ly in viewer.layers] == ["a", "a heatmap", "a detections"]
    status = widget.status.text()
    assert "3 of 3 scans predicted; ⚠ 3 with notes (every scan: no ROI mask given" in status
    assert "a.nii.gz: no ROI mask given" in widget.status.toolTip()
    name = widget.table.item(0, 0)
    assert not name.icon().isNull() and "no ROI mask given" in name.toolTip()
    rows = widget.rows()
    assert all("no ROI mask given" in r[7] for r in rows)
    widget.masks.set_path(folder / "masks")  # with masks: no notes, no signs
    widget.run()
    _wait_worker(qtbot, widget)
    assert "notes" not in widget.status.text() and widget.table.item(0, 0).icon().isNull()
    assert [r[7] for r in widget.rows()] == ["", "", ""]


def test_train_and_cohort_take_the_columns_of_a_participants_table(make_napari_viewer, tmp_path, errors):
    """A BIDS participants.tsv names its scans and ratings in columns of its own; the docks
    had no way to say which (the command line has --scan-column and --label-column)."""
    from napari_hydranet._widgets import CohortWidget, TrainWidget

    data = make_cohort(tmp_path / "d", n=8)
    rows = [line.split(",") for line in (data / "labels.csv").read_text().splitlines()[1:]]
    table = tmp_path / "participants.tsv"
    table.write_text(
        "participant_id\tage\tepvs_rater\n" + "".join(f"{scan}\t70\t{label}\n" for scan, label in rows)
    )
    viewer = make_napari_viewer()
    train = TrainWidget(viewer)
    assert not train.set_inputs(data / "scans", table, data / "masks")
    assert train.columns.columns() == ("participant_id", "label")  # the scans' column found, not the label
    problem = train.problems.item(0).text()
    assert "no column 'label'" in problem and "choose its columns beside Columns" in problem
    train.columns.label_combo.setCurrentText("epvs_rater")
    train.columns.label_combo.activated.emit(train.columns.label_combo.currentIndex())  # as a click
    assert train.problems.item(0).text() == "✓ 8 labelled scans"
    train.out.set_path(tmp_path / "model")
    args = train.build_args()
    assert args[args.index("--scan-column") + 1] == "participant_id"
    assert args[args.index("--label-column") + 1] == "epvs_rater"
    assert train.set_inputs(data / "scans", data / "labels.csv", data / "masks")  # a scan,label table again
    args = train.build_args()  # the scan column always named: the command line would choose alike
    assert args[args.index("--scan-column") + 1] == "scan" and "--label-column" not in args

    cohort = CohortWidget(viewer)
    cohort.scans.set_path(data / "scans")
    cohort.labels_csv.set_path(table)
    cohort.load_labels()
    assert "no column 'label'" in cohort.labels_note and len(errors) == 0  # said in the dock, no pop-up
    cohort.columns.label_combo.setCurrentText("epvs_rater")
    cohort.columns.label_combo.activated.emit(cohort.columns.label_combo.currentIndex())
    assert cohort.labels == {scan: float(label) for scan, label in rows} and cohort.labels_note == ""


def test_train_says_it_is_stopping_until_it_stops(make_napari_viewer):
    from napari_hydranet._widgets import TrainWidget

    widget = TrainWidget(make_napari_viewer())
    widget.stop_button.setText("Kill")  # Stop pressed while the scans were loading
    widget.handle_event(dict(event="status", message="count recalibration kept"))
    assert widget.status.text() == "count recalibration kept  ·  stopping after the current step…"
    start = dict(event="start", device="cpu", train=20, val=5, notes=[], start_epoch=1, epochs=2)
    widget.handle_event(dict(start, steps_per_epoch=10, patience=3, best_epoch=None))
    assert widget.status.text().endswith("\nstopping after the current step…")
    widget.close()


def test_train_time_estimate_counts_early_stopping(make_napari_viewer, monkeypatch):
    from napari_hydranet._widgets import TrainWidget
    from napari_hydranet._widgets import train as dock

    widget = TrainWidget(make_napari_viewer())
    widget.time_limit.setValue(0)
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(dock, "time", SimpleNamespace(monotonic=lambda: clock.now))
    widget._t0 = 900.0  # 100 s of start-up (loading, epoch 0) before the first step
    start = dict(event="start", device="cpu", train=20, val=5, notes=[], start_epoch=1, epochs=20)
    widget.handle_event(dict(start, steps_per_epoch=10, patience=3, best_epoch=None))
    widget.handle_event(dict(event="step", epoch=1, step=1, steps=10, loss=1.0))
    clock.now = 1090.0  # then 10 s a step
    widget.handle_event(dict(event="step", epoch=1, step=10, steps=10, loss=1.0))
    # no better epoch yet: stops after epoch 3 (20 steps left); all 20 epochs: 190 steps left
    assert widget.time_label.text() == "elapsed 0:03:10  ·  remaining ~0:03:20 to 0:31:40"
    widget.handle_event(dict(event="checkpoint", epoch=1, path="m", val_icc21=0.5, val_mae=1.0))
    widget.handle_event(dict(event="step", epoch=1, step=10, steps=10, loss=1.0))
    assert widget.time_label.text().endswith("remaining ~0:05:00 to 0:31:40")
    widget.time_limit.setValue(10)  # 10 minutes: 6:50 left
    widget.handle_event(dict(event="step", epoch=1, step=10, steps=10, loss=1.0))
    assert widget.time_label.text().endswith("remaining ~0:05:00 to 0:06:50")
    widget.time_limit.setValue(5)  # 1:50 left: the limit ends the run either way, one figure
    widget.handle_event(dict(event="step", epoch=1, step=10, steps=10, loss=1.0))
    assert widget.time_label.text().endswith("remaining ~0:01:50")
    widget.time_limit.setValue(0)
    widget._t0 = clock.now - 100  # a new run without early stopping
    widget.handle_event(dict(start, steps_per_epoch=10, patience=0, best_epoch=None))
    widget.handle_event(dict(event="step", epoch=1, step=10, steps=10, loss=1.0))
    assert widget.time_label.text().endswith("remaining ~0:31:40")  # one step seen: elapsed / steps
    widget.close()


def test_cohort_cancelled_at_once_or_exported_while_running_keeps_its_record_true(
    qtbot, make_napari_viewer, tiny_model, tmp_path, errors, monkeypatch
):
    """Cancelled before the model was loaded, the finished run had no record to finish (the
    dock raised and stayed at "predicting…"); exported mid-run, the record described no scan."""
    from napari.qt.threading import GeneratorWorker

    from napari_hydranet._widgets import CohortWidget
    from napari_hydranet._widgets import cohort as cohort_module

    folder = _small_cohort(tmp_path / "cohort")
    widget = CohortWidget(make_napari_viewer())
    widget.scans.set_path(folder / "scans")
    widget.masks.set_path(folder / "masks")
    widget.model_picker.select(tiny_model)
    start = GeneratorWorker.start  # Cancel pressed before the thread began: run() then cancel()

    def cancelled_first(worker):  # raced, and lost when the cores were busy
        worker.quit()
        start(worker)

    monkeypatch.setattr(GeneratorWorker, "start", cancelled_first)
    widget.run()
    _wait_worker(qtbot, widget)
    assert widget.status.text() == "cancelled before any scan was predicted"
    monkeypatch.setattr(GeneratorWorker, "start", start)

    slow = cohort_module.predict_file
    started = []

    def predict_slowly(*args, **kwargs):
        started.append(1)
        if len(started) > 1:
            time.sleep(1.5)
        return slow(*args, **kwargs)

    monkeypatch.setattr(cohort_module, "predict_file", predict_slowly)
    widget.run()
    qtbot.waitUntil(lambda: len(widget.results) == 1, timeout=TIMEOUT)
    assert widget.export(tmp_path / "early.csv") is None and not (tmp_path / "early.csv").exists()
    assert errors.pop() == "Cohort: still predicting; export when the run has finished or is cancelled"
    _wait_worker(qtbot, widget)
    assert widget.export(tmp_path / "done.csv") is not None
    record = json.loads((tmp_path / "done.json").read_text())
    assert record["scans"] == {"given": 3, "counted": 3, "not_counted": 0} and record["finished"]


def test_cohort_predicts_exports_and_sends_corrections(
    qtbot, make_napari_viewer, tiny_model, tmp_path, errors
):
    from napari_hydranet._widgets import CohortWidget, TrainWidget

    folder = _small_cohort(tmp_path / "cohort")
    viewer = make_napari_viewer()
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train")
    widget = CohortWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.scans.set_path(folder / "scans")
    widget.masks.set_path(folder / "masks")
    widget.labels_csv.set_path(folder / "labels.csv")
    widget.model_picker.select(tiny_model)
    assert widget.export(tmp_path / "early.csv") is None and not (tmp_path / "early.csv").exists()
    assert errors.pop() == "Cohort: nothing to export yet; predict a folder first"
    assert _accent_pixels(widget.plots) == 0  # no labelled scans: empty plots
    widget.run()
    _wait_worker(qtbot, widget)
    assert errors == []
    assert [widget.table.scan_at(r) for r in range(3)] == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    assert "n = 2" in widget.stats.text() and "ICC(2,1)" in widget.stats.text()
    assert "2 labelled scans: too few to judge agreement" in widget.stats.text()
    in_unit = r"MAE = [\d.]+ lesions   bias = [-+][\d.]+ \(limits ±[\d.]+\) lesions"
    assert re.search(in_unit, widget.stats.text())
    from napari_hydranet._widgets._agreement import agreement_text

    one = agreement_text(np.array([3.0]), np.array([2.0]), "lesions")
    assert one.endswith("bias = +1.00 lesions\n1 labelled scan: too few to judge agreement")  # no limits
    assert _accent_pixels(widget.plots) > 0  # the two labelled scans are drawn

    exported = widget.export(tmp_path / "table.csv")
    with open(exported, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["scan", "count", "count_sd", "detections", "label", "corrected", "unit", "notes"]
    assert {r["unit"] for r in rows} == {"lesions"}
    assert [r["notes"] for r in rows] == ["", "", ""] and "notes" not in widget.status.text()
    record = json.loads((tmp_path / "table.json").read_text())  # as predict writes beside its table
    assert record["written_by"] == "napari-hydranet Cohort dock" and list(record["columns"]) == list(rows[0])
    weights = hashlib.sha256((Path(tiny_model) / WEIGHTS).read_bytes()).hexdigest()
    assert record["model"]["weights_sha256"] == weights
    assert record["scans"] == {"given": 3, "counted": 3, "not_counted": 0}
    assert record["settings"]["masks"] == str(folder / "masks") and not record["settings"]["whole_volume"]
    assert record["labels"] == str(folder / "labels.csv") and record["corrected"] == 0
    assert record["finished"] <= record["exported"]
    (tmp_path / "mine.json").write_text("{}")  # a file of the user's beside the table's name
    assert widget.export(tmp_path / "mine.csv") is None and not (tmp_path / "mine.csv").exists()
    assert "mine.json: exists and is not the record" in errors.pop()
    assert (tmp_path / "mine.json").read_text() == "{}"
    # the save dialog's "replace?" aside, no export overwrites a file not of its kind: her labels
    theirs = folder / "labels.csv"
    before = theirs.read_text()
    for export, what in ((widget.export, "counts table"), (widget.export_detections, "detections table")):
        assert export(theirs) is None
        assert errors.pop() == (
            f"Cohort: {theirs}: exists and is not a {what} written by hydranet; choose another file, "
            "or delete it (only a previous output is overwritten)"
        )
    assert widget.send_to_train(theirs) is None  # a labels table, but the one loaded
    assert errors.pop().startswith(f"Cohort: {theirs} is the labels file loaded; save the corrected labels")
    assert theirs.read_text() == before and not theirs.with_suffix(".json").exists()
    older = tmp_path / "exported_by_0.3.0.csv"  # an earlier version's export is overwritten, as predict's
    older.write_text("scan,count,count_sd,detections,label,corrected\na.nii.gz,1,0,1,,0\n")
    header = "scan,count,count_sd,detections,label,corrected,unit,notes"
    assert widget.export(older) == older and older.read_text().startswith(header)
    model = load_model(tiny_model)
    with open(widget.export_detections(tmp_path / "detections.csv"), newline="") as fh:  # as predict writes
        detections = list(csv.DictReader(fh))
    for row in rows:
        scan = folder / "scans" / row["scan"]
        pred, affine = predict_file(model, scan, torch.device("cpu"), folder / "masks")
        theirs = [[d[c] for c in DETECTION_COLUMNS] for d in detections if d["scan"] == row["scan"]]
        assert len(theirs) == pred.n_detections == int(row["detections"]) > 0
        for mine, exported in zip(pred.detection_rows(affine), theirs):
            assert mine[:2] == [exported[0], int(exported[1])]
            np.testing.assert_allclose(np.array(mine[2:8], float), np.array(exported[2:8], float), atol=1e-3)
        assert float(row["count"]) == pytest.approx(pred.count, rel=1e-4)
        assert float(row["count_sd"]) == pytest.approx(pred.count_sd, rel=1e-3, abs=1e-5)
        assert int(row["detections"]) == pred.n_detections
        assert row["corrected"] == "0"
    assert [r["label"] for r in rows] == ["6", "5", ""]

    # sorting by count keeps rows whole
    widget.table.sortItems(1)
    counts = [float(widget.table.item(r, 1).text()) for r in range(3)]
    assert counts == sorted(counts)

    # clicking rows opens that scan with its overlays, replacing the previous row's
    row_c = next(r for r in range(3) if widget.table.scan_at(r) == "c.nii.gz")
    widget.table.cellClicked.emit(row_c, 0)
    assert [ly.name for ly in viewer.layers] == ["c", "c heatmap", "c detections"]
    row_a = next(r for r in range(3) if widget.table.scan_at(r) == "a.nii.gz")
    widget.table.cellClicked.emit(row_a, 0)
    assert [ly.name for ly in viewer.layers] == ["a", "a heatmap", "a detections"]
    points = viewer.layers["a detections"]  # on the slice of its first detection, its ring drawn
    assert len(points.data) and 0 in points._view_indices
    (folder / "scans" / "c.nii.gz").rename(tmp_path / "c moved.nii.gz")  # gone since it was predicted
    widget.table.cellClicked.emit(row_c, 0)
    assert len(errors) == 1 and "c.nii.gz: no such file" in errors.pop()
    assert [ly.name for ly in viewer.layers] == ["a", "a heatmap", "a detections"]  # left as they were
    (tmp_path / "c moved.nii.gz").rename(folder / "scans" / "c.nii.gz")
    original = (folder / "scans" / "c.nii.gz").read_bytes()
    img = nib.load(folder / "scans" / "c.nii.gz")
    nib.save(nib.Nifti1Image(img.get_fdata()[:-2], img.affine), folder / "scans" / "c.nii.gz")  # rewritten
    widget.table.cellClicked.emit(row_c, 0)
    assert len(errors) == 1 and "c.nii.gz: changed since it was predicted" in errors.pop()
    (folder / "scans" / "c.nii.gz").write_bytes(original)

    # typing a count corrects the row: it becomes the label
    widget.table.item(row_c, 1).setText("4")
    assert widget.table.records["c.nii.gz"]["label"] == 4.0
    assert widget.table.records["c.nii.gz"]["corrected"]
    assert float(widget.table.item(row_c, 1).text()) == pytest.approx(
        widget.table.records["c.nii.gz"]["count"], abs=0.05
    )
    assert "n = 3" in widget.stats.text()

    sent = widget.send_to_train(tmp_path / "corrected.csv")
    assert sent is train
    labels = ["scan,label", "a.nii.gz,6", "b.nii.gz,5", "c.nii.gz,4"]  # the CSV's, and the correction
    assert (tmp_path / "corrected.csv").read_text().splitlines() == labels
    assert train.labels.path() == tmp_path / "corrected.csv"
    assert train.scans.path() == folder / "scans" and train.masks.path() == folder / "masks"
    # three labelled scans are too few to train on, and the Train dock says so before Start
    assert "✗ 3 labelled scans are too few to hold out 2 for validation" in train.problems.item(0).text()
    assert widget.status.text() == "3 of 3 scans predicted"

    # a second run starts a new table that keeps the user's correction; a blank scan is skipped
    # and listed; a labels file that also lists scans of other folders gives the ones here
    for blank in ("blank.nii.gz", "blank2.nii.gz"):  # two skipped: one message
        nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), np.eye(4)), folder / "scans" / blank)
        nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.uint8), np.eye(4)), folder / "masks" / blank)
    (tmp_path / "more.csv").write_text("scan,label\na,7\nb.nii.gz,5\nelsewhere.nii.gz,2\n")
    widget.labels_csv.set_path(tmp_path / "more.csv")
    widget.run()
    _wait_worker(qtbot, widget)
    assert (
        sorted(widget.table.records) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"] and widget.table.rowCount() == 3
    )
    assert widget.status.text().startswith("3 of 5 scans predicted; 2 skipped: blank.nii.gz")
    assert widget.status.text().endswith("; your 1 corrected count kept")
    assert len(errors) == 1 and errors[0].count("blank.nii.gz") == 1  # named once: its path
    assert widget.status.toolTip().count("blank.nii.gz") == 1  # and in the status line's tooltip
    assert (
        errors[0].startswith("Cohort: /")
        and "every voxel inside the ROI mask (8000 voxels) is 0" in errors[0]
    )
    assert errors[0].endswith("(skipped; any others are listed at the end)")
    labels = {r[0]: (r[4], r[5]) for r in widget.rows() if r[1] != ""}
    assert labels == {"a.nii.gz": (7.0, 0), "b.nii.gz": (5.0, 0), "c.nii.gz": (4.0, 1)}
    # the export lists the skipped scans too, without a count, as `hydranet predict` does
    skipped = [(r[0], r[7].split(": ")[0]) for r in widget.rows() if r[1] == ""]
    assert skipped == [("blank.nii.gz", "not counted"), ("blank2.nii.gz", "not counted")]
    assert "1 of the 3 labelled scans is not in the scans folder: elsewhere.nii.gz" in widget.stats.text()
    width = widget.minimumSizeHint().width()
    deep = tmp_path / ("a folder named at length by a study's data manager " * 4).strip()
    deep.mkdir()
    (deep / "bad.csv").write_text("scan,label\na.nii.gz,many\n")
    widget.labels_csv.set_path(deep / "bad.csv")
    widget.load_labels()
    assert "⚠ labels not loaded" in widget.stats.text() and "label 'many'" in widget.stats.text()
    assert len(errors) == 2 and "label 'many'" in errors.pop()
    widget.load_labels()  # a run reloads them: the dock says it still, no second pop-up
    assert len(errors) == 1 and "label 'many'" in widget.stats.text()
    # the note wraps: it does not widen the dock (unwrapped, over 1,000 px, over the image)
    assert widget.stats.minimumSizeHint().width() <= width
    assert {r[0]: r[4] for r in widget.rows() if r[1] != ""} == {
        "a.nii.gz": "",
        "b.nii.gz": "",
        "c.nii.gz": 4.0,
    }


def _accent_pixels(widget, width: int | None = None) -> int:
    """How many pixels of ``widget`` (its left ``width`` pixels) are drawn in the plots' data
    colour (light blue; the background and axes are grey)."""
    image = widget.grab().toImage()
    columns = range(width or image.width())
    colours = (image.pixelColor(x, y) for x in columns for y in range(image.height()))
    return sum(c.blue() - c.red() > 80 for c in colours)


def test_agreement_plots_draw_each_scan_and_tell_the_figures(qtbot):
    from napari_hydranet._widgets._agreement import EMPTY, AgreementPlots

    plots = AgreementPlots()
    plots.resize(420, 180)
    assert plots.set_pairs([]) == EMPTY and _accent_pixels(plots) == 0
    text = plots.set_pairs([(2.0, 2.5), (5.0, 4.0), (9.5, 10.0)])
    assert text.startswith("n = 3   ICC(2,1) = ") and "bias = +0.00" in text
    one = _accent_pixels(plots)
    plots.set_pairs([(2.0, 2.5), (5.0, 4.0), (9.5, 10.0), (0.0, 0.0)])  # a point in the corner too
    assert one > 0 and _accent_pixels(plots) > one
    # a regressor's negative prediction (a volume below 0) is drawn in the scatter, not off it
    plots.set_pairs([(10.0, 10.0), (20.0, 20.0)])
    two = _accent_pixels(plots, 200)  # the scatter: the left half
    plots.set_pairs([(10.0, 10.0), (20.0, 20.0), (-30.0, 5.0)])
    assert _accent_pixels(plots, 200) > two * 1.3
    # as `hydranet evaluate`: under 10 scans an ICC is too uncertain to read
    assert "too few" in plots.set_pairs([(i, i + 0.5) for i in range(9)])
    assert "too few" not in plots.set_pairs([(i, i + 0.5) for i in range(10)])


def test_curve_ticks_are_round_and_cover_the_range():
    from napari_hydranet._widgets._plots import nice_ticks

    assert nice_ticks(0.0, 1.0, 4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(3.2, 47.0, 4) == [10.0, 20.0, 30.0, 40.0]
    flat = nice_ticks(5.0, 5.0, 3)  # a flat series still gets an axis around it
    assert len(flat) >= 2 and flat[0] < 5.0 < flat[-1]
    assert nice_ticks(float("nan"), 1.0) == []


def test_a_flat_series_a_few_ulps_wide_gets_ticks_at_once():
    """A loss that no longer moves differs between epochs in its last bit: the tick loop once
    added a step too small to change the value, for ever."""
    import math

    from napari_hydranet._widgets._plots import nice_ticks, padded

    for values in ([0.5, math.nextafter(0.5, 1)], [0.15000000000000002, 0.15], [100.0, 100.00000000000001]):
        lo, hi = padded(values)
        assert lo < min(values) and hi > max(values)
        ticks = nice_ticks(lo, hi, 3)
        assert 1 <= len(ticks) <= 13 and ticks == sorted(set(ticks))
    assert len(nice_ticks(0.5, math.nextafter(0.5, 1), 3)) <= 13


def test_curve_tick_labels_tell_close_ticks_apart():
    from napari_hydranet._widgets._plots import nice_ticks, tick_labels

    close = nice_ticks(0.9326, 0.9342, 3)  # a validation ICC that barely moves
    labels = tick_labels(close)
    assert len(set(labels)) == len(labels) == len(close) and all(float(x) == t for x, t in zip(labels, close))
    assert tick_labels([0.0, 0.25, 0.5]) == ["0.00", "0.25", "0.50"]
    assert tick_labels([0.0, 100.0, 200.0]) == ["0", "100", "200"]
    assert tick_labels([5e6, 7.5e6]) == ["5.0M", "7.5M"] and tick_labels([0.0, 2.5e5]) == ["0k", "250k"]
    assert tick_labels([1.6e6, 1.65e6]) == ["1.60M", "1.65M"]  # not "650000", cut on the left
    assert tick_labels([0.0, 1e12, 2e12]) == ["0", "1e+12", "2e+12"]  # a diverging loss
    assert tick_labels([0.0005, 0.001]) == ["0.0005", "0.0010"]
    assert tick_labels([1.2e-05, 1.4e-05, 1.6e-05]) == ["1.2e-05", "1.4e-05", "1.6e-05"]  # fits


def test_a_score_moving_in_its_fourth_decimal_is_drawn_nearly_flat():
    """A validation ICC from 0.96265 to 0.96273 once filled the panel's height: it looked like
    a collapse, and its tick labels lost their first digit."""
    from napari_hydranet._widgets._plots import nice_ticks, padded, tick_labels

    lo, hi = padded([0.96265, 0.96273, 0.96270])
    assert hi - lo >= 0.019 and lo < 0.96265 and hi > 0.96273
    assert all(len(label) <= 5 for label in tick_labels(nice_ticks(lo, hi, 3)))
    flat = nice_ticks(*padded([0.203, 0.203, 0.203]), 3)  # a loss that no longer moves
    assert len(set(tick_labels(flat))) == len(flat) >= 2
    assert padded([5.0, 40.0]) == pytest.approx((5.0 - 2.8, 40.0 + 2.8))  # a moving series keeps its 8 %
    assert padded([0.0, 0.0]) == (-1.0, 1.0)


def test_demo_viewer_shows_the_count_and_anterior_up(make_napari_viewer, tiny_model, monkeypatch):
    from napari_hydranet import _viewer

    monkeypatch.setattr(_viewer.napari, "Viewer", lambda **kw: make_napari_viewer(**kw))
    sample = load_sample()
    model = load_model(tiny_model)
    pred = predict_file(model, sample.scan, torch.device("cpu"), mask_path=sample.mask)[0]
    viewer = _viewer.show_prediction(sample.scan, pred, model, sample.mask, run=False)
    names = ["sample", "sample_mask", "sample heatmap", "sample detections"]
    assert [layer.name for layer in viewer.layers] == names
    assert (
        not viewer.layers["sample_mask"].visible and viewer.layers["sample_mask"].metadata["kind"] == "mask"
    )
    text = viewer.canvas.overlays.text
    assert text.visible and f"{pred.count:.1f} ± {pred.count_sd:.1f} lesions" in text.text
    assert f"({pred.n_detections} detections)" in text.text
    assert tuple(viewer.scene.camera.orientation2d) == ("up", "right")


def test_the_sample_opens_with_its_mask_and_the_default_models_overlays(
    qtbot, make_napari_viewer, tiny_model, errors
):
    from napari_hydranet._widgets import PredictWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-hydranet", "epvs_sample")
    names = ["sample", "sample_mask", "sample heatmap", "sample detections"]
    assert [layer.name for layer in viewer.layers] == names
    detections = viewer.layers["sample detections"]
    assert len(detections.data) == round(detections.metadata["count"]) > 0  # count-consistent
    # Predict on the sample refills its overlays rather than drawing a second set over them
    widget = PredictWidget(viewer)
    widget.model_picker.select(tiny_model)
    widget.image_combo.set_layer(viewer.layers["sample"])
    widget.run()
    _wait_worker(qtbot, widget)
    assert errors == [] and [layer.name for layer in viewer.layers] == names
    assert viewer.layers["sample detections"] is detections and widget._current.points is detections
    assert detections.metadata["count"] == pytest.approx(widget._current.pred.count)


def test_train_child_errors_are_told_in_the_docks_words():
    from napari_hydranet._widgets._train_process import for_dock

    line = "hydranet: error: m: already holds a model; use --resume to continue it or choose another --out"
    assert for_dock(line) == (
        "m: already holds a model; tick 'continue the stopped training in Output' to go on with it "
        "or choose another Output"
    )
    assert for_dock("hydranet: error: --time-limit: 0 must be > 0") == "Time limit: 0 must be > 0"
    assert for_dock("exit status 9") == "exit status 9"
    argparse_line = "hydranet train: error: argument --lr: -1 must be > 0"  # argparse's own wording
    assert for_dock(argparse_line) == "Learning rate: -1 must be > 0"


def test_train_dock_draws_and_tells_undefined_figures(make_napari_viewer, errors):
    """The child's JSON gives an epoch 0 without steps, and an ICC of constant labels, as null."""
    from napari_hydranet._widgets import TrainWidget

    widget = TrainWidget(make_napari_viewer())
    widget.time_label.setText("took 0:00:59")  # a previous run's
    widget.start()  # nothing chosen: the dock says why, not only a passing notification
    assert errors == ["Train: choose the scans folder, the labels CSV and an output folder"]
    assert widget.status.text() == f"⚠ not started: {errors[0].removeprefix('Train: ')}"
    assert widget.time_label.text() == "took 0:00:59"  # not started: the last run's time stays
    widget.handle_event({"event": "epoch", "epoch": 0, "loss": None, "val_icc21": None, "val_mae": 1.5})
    widget.handle_event({"event": "epoch", "epoch": 1, "loss": 2.0, "val_icc21": 0.5, "val_mae": 1.0})
    widget.handle_event({"event": "checkpoint", "epoch": 0, "path": "m", "val_icc21": None, "val_mae": 1.5})
    assert widget.status.text() == "best so far: epoch 0 (val ICC(2,1) –, MAE 1.50) saved in m"
    start = {"event": "start", "device": "cpu", "train": 20, "val": 5, "steps_per_epoch": 3, "epochs": 9}
    widget.handle_event({**start, "start_epoch": 1, "notes": [], "unit": "mm3"})  # the MAE in its unit
    widget.handle_event({"event": "checkpoint", "epoch": 1, "path": "m", "val_icc21": 0.5, "val_mae": 1.0})
    assert widget.status.text() == "best so far: epoch 1 (val ICC(2,1) 0.50, MAE 1.00 mm3) saved in m"
    widget.close()


def test_a_dock_opened_beside_another_becomes_its_tab(make_napari_viewer, qtbot):
    """Stacked, the second dock got a strip of the window (the Train dock 50 px at 1920×1080)."""
    viewer = make_napari_viewer(show=True)
    docks = []
    for name in ("Predict", "Train", "Cohort"):  # the user opens one, then the next
        dock, _ = viewer.window.add_plugin_dock_widget("napari-hydranet", name)
        docks.append(dock)
        qtbot.waitUntil(lambda: dock.widget()._dock_placed)  # noqa: B023 (this loop's dock)
    window = viewer.window._qt_window
    assert set(window.tabifiedDockWidgets(docks[0])) == {docks[1], docks[2]}
    # the last opened, in front, whole height, once Qt has laid the tabs out (a check at once
    # read the height of the strip before the layout settled, depending on the machine's timing)
    qtbot.waitUntil(lambda: docks[2].height() > window.height() / 2, timeout=5000)


def test_a_training_that_cannot_start_gives_the_settings_back(make_napari_viewer, qtbot, monkeypatch):
    from napari_hydranet._widgets import TrainWidget, _train_process

    widget = TrainWidget(make_napari_viewer())
    monkeypatch.setattr(_train_process.sys, "executable", "/nonexistent/python")
    monkeypatch.setattr(widget, "build_args", lambda: ["train"])
    monkeypatch.setattr(widget, "check_labels", lambda: True)
    with qtbot.waitSignal(widget.runner.ended, timeout=10_000):
        widget.start()
    assert widget.start_button.isEnabled() and widget.inputs_panel.isVisibleTo(widget)
    assert "could not start /nonexistent/python" in widget.status.text()
