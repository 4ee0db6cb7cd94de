"""Reader geometry in a real viewer, and writers that round-trip the file's affine."""

import csv
import shutil

import nibabel as nib
import numpy as np
import pytest
from conftest import NIBABEL_DATA

from napari_hydranet import _writer
from napari_hydranet._layers import scanner_mm, tilt_degrees
from napari_hydranet._reader import napari_get_reader
from napari_hydranet._writer import write_volume_layer
from napari_hydranet.errors import HydranetError
from napari_hydranet.infer import DETECTION_COLUMNS

# An oblique scan is shown straightened, with a warning that says so: expected (the true
# affine is kept in the layer's metadata).
pytestmark = [pytest.mark.gui, pytest.mark.filterwarnings("ignore:.*an oblique scan:UserWarning")]


def _straight(matrix: np.ndarray) -> bool:
    rotation = matrix[:3, :3]
    return bool(np.allclose(rotation, np.diag(np.diag(rotation))))


def _oblique_affine() -> np.ndarray:
    a, b = np.deg2rad(17), np.deg2rad(-9)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.9, 1.1, 1.6])
    affine[:3, 3] = [-30.5, 12.25, -7.0]
    return affine


def _volume(shape, peak, seed=0) -> np.ndarray:
    data = np.random.default_rng(seed).uniform(0, 100, shape).astype(np.float32)
    data[peak] = 1000.0  # one unique brightest voxel
    return data


@pytest.fixture(scope="module")
def made_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("geometry")
    nifti2 = folder / "nifti2.nii"
    img = nib.Nifti2Image(_volume((12, 9, 7), (10, 2, 5)), np.diag([-2.0, 1.5, 3.0, 1.0]))
    nib.save(img, str(nifti2))
    oblique = folder / "oblique.nii.gz"
    img = nib.Nifti1Image(_volume((11, 13, 6), (3, 11, 4), 1), _oblique_affine())
    img.set_qform(_oblique_affine(), code=1)  # scanner space, as a scanner's converter writes it
    img.set_sform(_oblique_affine(), code=1)
    nib.save(img, str(oblique))
    sagittal = folder / "sagittal.nii.gz"  # i → P, j → S, k → L: the axes of a sagittal acquisition
    axes = np.array([[0, 0, -1.2, 40], [-1.0, 0, 0, 20], [0, 1.1, 0, -10], [0, 0, 0, 1]])
    img = nib.Nifti1Image(_volume((14, 10, 8), (9, 2, 5), 2), axes)
    img.set_qform(axes, code=1)  # scanner
    img.set_sform(axes, code=4)  # MNI
    nib.save(img, str(sagittal))
    return {"nifti2": nifti2, "oblique": oblique, "sagittal": sagittal}


def _ras_shape(img) -> tuple:
    """The file's spatial shape in RAS voxel order (how layers show it, axes reversed)."""
    shape = [0, 0, 0]
    for n, (axis, _) in zip(img.shape[:3], nib.orientations.io_orientation(img.affine)):
        shape[int(axis)] = n
    return tuple(shape)


def _file_value_at(img, world_xyz, t=None):
    """The file's voxel value at a world position (which must fall on a voxel centre)."""
    ijk = (np.linalg.inv(img.affine) @ np.append(world_xyz, 1.0))[:3]
    np.testing.assert_allclose(ijk, np.round(ijk), atol=1e-4)
    index = tuple(np.round(ijk).astype(int)) + ((t,) if t is not None else ())
    return np.asarray(img.dataobj)[index]


@pytest.mark.parametrize("name", ["example4d.nii.gz", "example_nifti2.nii.gz"])
def test_series_brightest_voxel_at_its_world_position(make_napari_viewer, name):
    """nibabel's oblique 4D file and its NIfTI-2 file open as (t, S, A, R) series."""
    img = nib.load(str(NIBABEL_DATA / name))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(NIBABEL_DATA / name), plugin="napari-hydranet")
    assert layer.data.shape == (img.shape[3], *_ras_shape(img)[::-1])
    assert layer.data.max() == np.asarray(img.dataobj).max()
    index = np.unravel_index(np.argmax(layer.data), layer.data.shape)  # (t, S, A, R)
    world_xyz = scanner_mm(index[1:], img.affine, img.shape[:3])
    assert _file_value_at(img, world_xyz, t=int(index[0])) == layer.data.max()
    assert _straight(layer.affine.affine_matrix[1:, 1:])  # example4d is oblique: shown straightened
    np.testing.assert_allclose(layer.metadata["affine"], img.affine, atol=1e-6)
    assert [str(u) for u in layer.units] == ["second"] + ["millimeter"] * 3  # mm as the scans' layers
    assert layer.affine.affine_matrix[0, 0] == pytest.approx(img.header.get_zooms()[3])  # in seconds


@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz", "nifti2", "oblique", "sagittal"])
def test_brightest_voxel_at_its_world_position(make_napari_viewer, made_files, name):
    """Layers show the volume in RAS order (S, A, R), whatever the file's voxel order, and the
    brightest voxel lies where the file's affine puts it."""
    path = made_files.get(name) or NIBABEL_DATA / name
    img = nib.load(str(path))
    assert img.ndim == 3
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="napari-hydranet")
    assert layer.data.shape == _ras_shape(img)[::-1]
    index = np.unravel_index(np.argmax(layer.data), layer.data.shape)  # (S, A, R)
    world_xyz = scanner_mm(index, img.affine, img.shape)  # where the tables put it
    assert _file_value_at(img, world_xyz) == np.asarray(img.dataobj).max()
    assert _straight(layer.affine.affine_matrix)  # napari slices only along the data axes
    if tilt_degrees(img.affine) < 1e-6:  # napari's coordinates are the scanner's
        np.testing.assert_allclose(np.asarray(layer.data_to_world(index), float)[::-1], world_xyz, atol=1e-6)
    np.testing.assert_allclose(layer.metadata["affine"], img.affine, atol=1e-6)
    assert [str(u) for u in layer.units] == ["millimeter"] * 3


def test_a_scan_stored_sagittally_is_drawn(make_napari_viewer, made_files):
    """napari cannot slice across a layer's data axes; shown in file order, a scan whose axes
    are permuted (stored sagittally) stopped the viewer on its first draw."""
    viewer = make_napari_viewer(show=True)
    viewer.open(str(made_files["sagittal"]), plugin="napari-hydranet")
    assert viewer.screenshot(canvas_only=True).std() > 0


def test_binary_volumes_open_as_masks_on_the_scans_grid(make_napari_viewer, tmp_path):
    from napari.layers import Image, Labels

    mask = np.zeros((12, 9, 7), np.uint8)
    mask[3:6, 2:5, 1:4] = 1
    affine = _oblique_affine()
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "roi.nii.gz")
    noise = np.random.default_rng(0).normal(0, 0.1, mask.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(mask * 2 + noise, affine), tmp_path / "scan.nii.gz")
    half = mask.astype(np.float32) * 0.5
    half[4, 3, 2] = 1
    nib.save(nib.Nifti1Image(half, affine), tmp_path / "half.nii.gz")
    nib.save(nib.Nifti1Image(mask * 0, affine), tmp_path / "empty.nii.gz")  # no lesions
    with_nan = mask.astype(np.float32)
    with_nan[0, 0, 0] = np.nan  # read as 0, as in a scan
    nib.save(nib.Nifti1Image(with_nan, affine), tmp_path / "nan.nii.gz")
    viewer = make_napari_viewer()
    (roi,) = viewer.open(str(tmp_path / "roi.nii.gz"), plugin="napari-hydranet")
    (scan,) = viewer.open(str(tmp_path / "scan.nii.gz"), plugin="napari-hydranet")
    (half_layer,) = viewer.open(str(tmp_path / "half.nii.gz"), plugin="napari-hydranet")
    (empty,) = viewer.open(str(tmp_path / "empty.nii.gz"), plugin="napari-hydranet")
    with pytest.warns(UserWarning, match="1 NaN/inf voxels set to 0"):
        (nan,) = viewer.open(str(tmp_path / "nan.nii.gz"), plugin="napari-hydranet")
    assert isinstance(roi, Labels) and roi.metadata["kind"] == "mask"
    assert isinstance(scan, Image) and "kind" not in scan.metadata  # about 0 and 2: not a mask
    assert set(np.unique(half_layer.data)) == {0, 0.5, 1}
    assert isinstance(half_layer, Image) and "kind" not in half_layer.metadata  # 0, 0.5 and 1: a scan
    assert isinstance(empty, Labels) and not empty.data.any()
    assert isinstance(nan, Labels) and nan.metadata["notes"]  # the NaN is noted
    np.testing.assert_array_equal(roi.data, np.transpose(mask, (2, 1, 0)))
    np.testing.assert_allclose(roi.affine.affine_matrix, scan.affine.affine_matrix)
    np.testing.assert_allclose(roi.metadata["affine"], affine, atol=1e-6)


def test_label_maps_open_as_labels_and_integer_scans_as_scans(make_napari_viewer, tmp_path):
    """A lesion-ID map or a segmentation is no scan: opened as one, the Predict dock took it for
    the scan to count (the scan opened last)."""
    from napari.layers import Image, Labels

    ids = np.zeros((12, 9, 7), np.int16)
    ids[1:3, 1:3, 1:5], ids[6:8, 4:6, 2:4], ids[9:11, 6:8, 1:3] = 1, 2, 300
    rng = np.random.default_rng(1)
    brain = np.zeros(ids.shape, np.int16)  # a skull-stripped scan stored as int16: mostly 0
    brain[2:8, 2:7, 2:5] = rng.integers(200, 900, (6, 5, 3))
    declared = nib.Nifti1Image((ids > 0).astype(np.float32) * rng.integers(1, 4, ids.shape), np.eye(4))
    declared.header.set_intent("label")  # isolated voxels of three values, but the header says labels
    files = {
        "ids": nib.Nifti1Image(ids, np.eye(4)),
        "brain": nib.Nifti1Image(brain, np.eye(4)),
        "declared": declared,
        "mask255": nib.Nifti1Image((ids > 0).astype(np.uint8) * 255, np.eye(4)),
    }
    for name, img in files.items():
        nib.save(img, tmp_path / f"{name}.nii.gz")
    viewer = make_napari_viewer()
    opened = {
        name: viewer.open(str(tmp_path / f"{name}.nii.gz"), plugin="napari-hydranet")[0] for name in files
    }
    for name in ("ids", "declared", "mask255"):
        assert isinstance(opened[name], Labels) and opened[name].metadata["kind"] == "mask", name
    np.testing.assert_array_equal(opened["ids"].data, np.transpose(ids, (2, 1, 0)))  # 300 kept
    assert isinstance(opened["brain"], Image) and "kind" not in opened["brain"].metadata


def test_reader_declines_other_files(tmp_path):
    other = tmp_path / "table.csv"
    other.write_text("a,b\n1,2\n")
    assert napari_get_reader(str(other)) is None
    broken = tmp_path / "broken.nii"
    broken.write_bytes(b"not a nifti file at all")
    assert napari_get_reader(str(broken)) is None
    assert napari_get_reader(str(NIBABEL_DATA / "row_major.dconn.nii")) is None  # CIFTI-2: a NIfTI-2 inside


def test_a_gzipped_scan_named_nii_is_claimed_and_told_how_to_rename(tmp_path, made_files):
    misnamed = tmp_path / "scan.nii"
    misnamed.write_bytes(made_files["oblique"].read_bytes())
    reader = napari_get_reader(str(misnamed))
    with pytest.raises(HydranetError, match="gzip-compressed but named without .gz; rename it scan.nii.gz"):
        reader(str(misnamed))


@pytest.mark.parametrize("name", ["oblique", "sagittal"])
def test_layers_are_written_in_the_files_voxel_order(make_napari_viewer, made_files, tmp_path, name):
    import napari

    viewer = make_napari_viewer()
    (scan,) = viewer.open(str(made_files[name]), plugin="napari-hydranet")
    heat = viewer.add_image(
        scan.data * 0.5, affine=scan.affine, metadata={"affine": scan.metadata["affine"]}, name="heat"
    )
    labels = viewer.add_labels(
        (scan.data > 500).astype(np.uint8), affine=scan.affine, metadata=dict(scan.metadata), name="roi"
    )
    source = nib.load(str(made_files[name]))
    data = np.asarray(source.dataobj)
    for layer, target, expected in (
        (heat, tmp_path / "heat.nii.gz", data * 0.5),
        (labels, tmp_path / "roi.nii", (data > 500).astype(np.uint8)),
    ):
        written = napari.save_layers(str(target), [layer], plugin="napari-hydranet")
        assert written == [str(target)]
        back = nib.load(str(target))
        np.testing.assert_allclose(back.affine, source.affine, atol=1e-5)
        np.testing.assert_allclose(np.asarray(back.dataobj), expected)
    # the labels layer, which names the file, is in the file's space (scanner, MNI: its codes)
    codes = [int(back.header[f"{form}_code"]) for form in ("qform", "sform")]
    assert codes == [int(source.header[f"{form}_code"]) for form in ("qform", "sform")]


def test_writers_fall_back_to_the_layer_affine_and_protect_scans(make_napari_viewer, made_files, tmp_path):
    import napari

    viewer = make_napari_viewer()
    (scan,) = viewer.open(str(made_files["oblique"]), plugin="napari-hydranet")
    source = nib.load(str(made_files["oblique"]))
    # a layer without our metadata falls back to its napari affine
    plain = viewer.add_image(scan.data, affine=scan.affine, name="plain")
    napari.save_layers(str(tmp_path / "plain.nii.gz"), [plain], plugin="napari-hydranet")
    np.testing.assert_allclose(nib.load(str(tmp_path / "plain.nii.gz")).affine, source.affine, atol=1e-5)
    # never an intensity image over its own file, nor anything over the scan a heatmap came
    # from; an integer (labels) layer may replace its own file: a corrected mask
    own = tmp_path / "own.nii.gz"
    own.write_bytes(made_files["oblique"].read_bytes())
    (mine,) = viewer.open(str(own), plugin="napari-hydranet")
    before = own.read_bytes()
    from_own = {"metadata": {"affine": mine.metadata["affine"], "source_path": str(own)}}
    for data, meta in ((mine.data, mine.as_layer_data_tuple()[1]), (mine.data * 0.5, from_own)):
        with pytest.raises(HydranetError, match="refusing to overwrite an input scan"):
            write_volume_layer(str(own), data, meta)
    assert own.read_bytes() == before
    mask = (mine.data > 500).astype(np.uint8)
    write_volume_layer(str(own), mask, {"metadata": dict(mine.metadata)})
    np.testing.assert_array_equal(np.asarray(nib.load(str(own)).dataobj), np.transpose(mask, (2, 1, 0)))


@pytest.mark.parametrize("name", ["oblique", "sagittal"])
def test_points_writer_uses_the_detections_format(make_napari_viewer, made_files, tmp_path, name):
    import napari

    viewer = make_napari_viewer()
    (scan,) = viewer.open(str(made_files[name]), plugin="napari-hydranet")
    affine = np.asarray(scan.metadata["affine"])
    ijk = np.array([[3.0, 7.0, 4.0], [5.5, 2.25, 1.0]])  # in the file's voxel order
    shown = [scan.world_to_data(((affine @ np.append(p, 1))[:3])[::-1]) for p in ijk]
    points = viewer.add_points(
        np.array(shown),
        affine=scan.affine,
        features={"lesion": [1, 2], "size": [7, 3], "score": [0.9, 0.4]},
        metadata={"affine": affine.tolist(), "source": f"{name}.nii.gz"},
        name="dets",
    )
    target = tmp_path / "dets.csv"
    napari.save_layers(str(target), [points], plugin="napari-hydranet")
    with open(target, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == DETECTION_COLUMNS
    for row, p in zip(rows, ijk):
        assert row["scan"] == f"{name}.nii.gz"
        np.testing.assert_allclose([float(row[c]) for c in "ijk"], p, atol=1e-5)
        xyz = (affine @ np.append(p, 1))[:3]
        np.testing.assert_allclose([float(row[c]) for c in "xyz"], xyz, rtol=1e-5, atol=1e-4)
        # the world position napari shows for the point is the one written
        at = np.asarray(points.data_to_world(points.data[int(row["lesion"]) - 1]))[::-1]
        np.testing.assert_allclose(at, xyz, atol=1e-4)
    voxel = abs(np.linalg.det(affine[:3, :3]))
    assert float(rows[0]["size_mm3"]) == pytest.approx(7 * voxel, rel=1e-5)
    assert float(rows[1]["score"]) == pytest.approx(0.4)


def test_points_drawn_over_a_scan_get_its_voxel_indices(make_napari_viewer, made_files, tmp_path):
    """napari's "new points" copies the scan layer's transform, not our metadata; points with
    no scan behind them get no voxel indices, rather than made-up ones."""
    import napari

    viewer = make_napari_viewer()
    (scan,) = viewer.open(str(made_files["sagittal"]), plugin="napari-hydranet")
    affine = np.asarray(scan.metadata["affine"])
    ijk = np.array([9.0, 2.0, 5.0])  # in the file's voxel order
    shown = scan.world_to_data(((affine @ np.append(ijk, 1))[:3])[::-1])
    drawn = viewer.add_points([shown], affine=scan.affine, name="mine")
    napari.save_layers(str(tmp_path / "mine.csv"), [drawn], plugin="napari-hydranet")
    with open(tmp_path / "mine.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["scan"] == "sagittal.nii.gz"
    np.testing.assert_allclose([float(row[c]) for c in "ijk"], ijk, atol=1e-4)
    loose = viewer.add_points([[5.0, 6.0, 7.0]], name="loose")
    with pytest.warns(UserWarning, match="no scan file behind these points"):
        napari.save_layers(str(tmp_path / "loose.csv"), [loose], plugin="napari-hydranet")
    with open(tmp_path / "loose.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert [row[c] for c in "ijk"] == ["", "", ""] and [float(row[c]) for c in "xyz"] == [7, 6, 5]


def test_layers_drawn_over_scans_sharing_a_grid_take_it_and_name_a_scan_only_when_one(
    make_napari_viewer, made_files, tmp_path
):
    import shutil

    import napari

    viewer = make_napari_viewer()
    (scan,) = viewer.open(str(made_files["oblique"]), plugin="napari-hydranet")
    source = nib.load(str(made_files["oblique"]))
    noisy = tmp_path / "roi.nii.gz"  # a mask whose affine differs from the scan's by float noise
    affine = source.affine.copy()
    affine[:3] *= 1 + 4e-6  # as float32 storage leaves it: within napari's tolerance, not equal
    nib.save(nib.Nifti1Image(np.ones(source.shape, np.uint8), affine), str(noisy))
    viewer.open(str(noisy), plugin="napari-hydranet")
    points = viewer.add_points([[1.0, 2.0, 3.0]], affine=scan.affine, name="mine")
    napari.save_layers(str(tmp_path / "a.csv"), [points], plugin="napari-hydranet")
    with open(tmp_path / "a.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["scan"] == "oblique.nii.gz" and row["i"] != ""
    # a second subject on the same grid: the voxels are the same, which scan is not known
    shutil.copy(made_files["oblique"], tmp_path / "other.nii.gz")
    viewer.open(str(tmp_path / "other.nii.gz"), plugin="napari-hydranet")
    napari.save_layers(str(tmp_path / "b.csv"), [points], plugin="napari-hydranet")
    with open(tmp_path / "b.csv", newline="") as fh:
        (again,) = list(csv.DictReader(fh))
    assert again["scan"] == "mine" and [again[c] for c in "ijk"] == [row[c] for c in "ijk"]
    # a volume with nothing of ours under it is saved as shown, and the user is told
    loose = viewer.add_labels(np.zeros((3, 4, 5), np.uint8), name="loose")
    with pytest.warns(UserWarning, match="no scan opened with napari-hydranet lies under it"):
        napari.save_layers(str(tmp_path / "loose.nii.gz"), [loose], plugin="napari-hydranet")
    assert nib.load(str(tmp_path / "loose.nii.gz")).shape == (5, 4, 3)


def test_a_point_added_to_detections_is_saved_as_the_users_not_a_copy(
    make_napari_viewer, made_files, tmp_path
):
    """napari gives a point added by hand the features of the last selected one; the CSV must
    not credit it with that detection's number, size and score."""
    import napari

    viewer = make_napari_viewer()
    (scan,) = viewer.open(str(made_files["oblique"]), plugin="napari-hydranet")
    at = np.array([[2.0, 3.0, 4.0], [4.0, 6.0, 8.0], [1.0, 1.0, 1.0]])
    metadata = {
        "affine": scan.metadata["affine"],
        "source": "oblique.nii.gz",
        "detected": [[n + 1, *p] for n, p in enumerate(at.tolist())],
    }
    features = {"lesion": [1, 2, 3], "size": [7, 3, 2], "score": [0.9, 0.4, 0.2]}
    text = {"string": {"array": ["1", "2", "3"], "default": ""}}  # as detections_layer draws them
    dets = viewer.add_points(
        at, affine=scan.affine, features=features, text=text, metadata=metadata, name="d"
    )
    dets.selected_data = {2}
    dets.remove_selected()  # the user deletes lesion 3, a false positive,
    dets.selected_data = {1}
    dets.add([3.0, 5.0, 5.0])  # and marks one the model missed
    dets.data = np.vstack([dets.data[:1] + [0, 0, 1], dets.data[1:]])  # and moves lesion 1
    assert list(dets.features["lesion"]) == [1, 2, 2]  # napari copied lesion 2's features,
    assert list(dets.text.values) == ["1", "2", ""]  # but draws no number beside the new point
    napari.save_layers(str(tmp_path / "d.csv"), [dets], plugin="napari-hydranet")
    with open(tmp_path / "d.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # the moved ring keeps the number drawn beside it, the added one gets a new number
    assert [(r["lesion"], r["size"], r["score"]) for r in rows] == [
        ("1", "", ""),
        ("2", "3", "0.4"),
        ("4", "", ""),
    ]
    # a layer whose text is not such a list: every point off its detected place is renumbered
    plain = {k: v for k, v in dets.as_layer_data_tuple()[1].items() if k != "text"}
    rows = _writer.detection_rows(dets.data, plain)
    assert [(r[1], r[8]) for r in rows] == [(4, ""), (2, 3), (5, "")]


@pytest.mark.parametrize("name", ["nifti2", "sagittal"])
def test_a_mask_drawn_over_a_scan_fits_it_when_saved_or_counted(
    make_napari_viewer, made_files, tmp_path, name
):
    """A labels layer made over a scan copies its shown affine, not our metadata: saved, or
    taken by the Predict dock, it must still lie on the scan's grid."""
    import napari

    from napari_hydranet._widgets._common import layer_to_scan
    from napari_hydranet.io import read_scan
    from napari_hydranet.preprocess import PreprocessConfig, prepare

    viewer = make_napari_viewer()
    (scan,) = viewer.open(str(made_files[name]), plugin="napari-hydranet")
    drawn = np.zeros(scan.data.shape, np.uint8)
    drawn[:2, :3, :4] = 1  # a corner: mirrored or transposed, it would lie elsewhere
    labels = viewer.add_labels(drawn, affine=scan.affine, name="roi")  # as napari's "new labels"
    napari.save_layers(str(tmp_path / "roi.nii.gz"), [labels], plugin="napari-hydranet")
    saved = read_scan(tmp_path / "roi.nii.gz")
    source = read_scan(made_files[name])
    # in the scan's own voxel order, so that voxel-for-voxel tools (fslmaths -mas) take it
    assert saved.array.shape == source.array.shape
    np.testing.assert_allclose(saved.affine, source.affine, atol=1e-6)
    ijk = np.argwhere(saved.array > 0)
    world_saved = ijk @ saved.affine[:3, :3].T + saved.affine[:3, 3]
    world_drawn = np.array([labels.data_to_world(p) for p in np.argwhere(drawn > 0)])[:, ::-1]
    key = lambda w: sorted(map(tuple, np.round(w, 3)))  # noqa: E731
    assert key(world_saved) == key(world_drawn)
    cfg = PreprocessConfig(crop_shape=None)
    from_file = prepare(source, cfg, saved)  # the scan's grid in another voxel order: accepted
    from_layer = prepare(source, cfg, layer_to_scan(labels, like=layer_to_scan(scan)))
    np.testing.assert_array_equal(from_file.array, from_layer.array)


def test_a_mask_layer_in_its_files_voxel_order_is_not_mirrored():
    """A labels layer from elsewhere, in the file's voxel order with its own correct affine."""
    from napari.layers import Labels

    from napari_hydranet._layers import napari_affine
    from napari_hydranet._widgets._common import layer_to_scan
    from napari_hydranet.io import Scan

    affine = np.diag([-1.2, 1.2, 1.2, 1.0])  # LAS
    scan = Scan(np.random.default_rng(0).random((30, 20, 10)).astype(np.float32), affine)
    mask = np.zeros(scan.array.shape, np.uint8)
    mask[2:6, 5:10, 3:6] = 1
    layer = Labels(np.transpose(mask, (2, 1, 0)), affine=napari_affine(affine), name="roi")
    got = layer_to_scan(layer, like=scan)
    np.testing.assert_allclose(got.affine, affine)
    np.testing.assert_array_equal(got.array, mask)


def test_a_series_layer_is_refused_with_how_to_split_it():
    from napari.layers import Image

    from napari_hydranet._widgets._common import layer_to_scan

    told = r"layer 'fmri': 4D data; a 3D scan is needed \(split .* fslsplit"
    with pytest.raises(HydranetError, match=told):
        layer_to_scan(Image(np.zeros((3, 10, 10, 10), np.float32), name="fmri"))


def test_a_mask_layer_on_another_grid_is_refused_not_moved():
    """A labels layer from elsewhere whose napari transform (scale, translation) puts it
    12 mm away from the scan has the scan's shape but not its grid."""
    from napari.layers import Labels

    from napari_hydranet._layers import to_display
    from napari_hydranet._widgets._common import layer_to_scan
    from napari_hydranet.io import Scan
    from napari_hydranet.preprocess import PreprocessConfig, prepare

    affine = np.diag([1.2, 1.2, 1.4, 1.0])
    scan = Scan(np.random.default_rng(0).random((30, 20, 10)).astype(np.float32) + 1, affine)
    mask = to_display(np.ones(scan.array.shape, np.uint8), affine)
    shifted = Labels(mask, scale=(1.4, 1.2, 1.2), translate=(0, 0, 12.0), name="elsewhere")
    with pytest.raises(HydranetError, match="mask affine differs"):
        prepare(scan, PreprocessConfig(crop_shape=None), layer_to_scan(shifted, like=scan))
    on_grid = Labels(mask, scale=(1.4, 1.2, 1.2), name="on the grid")
    prepare(scan, PreprocessConfig(crop_shape=None), layer_to_scan(on_grid, like=scan))


def test_a_layer_without_voxel_size_says_1_mm_is_assumed_and_colour_is_refused():
    from napari.layers import Image

    from napari_hydranet._widgets._common import layer_to_scan

    volume = np.random.default_rng(0).random((10, 12, 14)).astype(np.float32)
    bare = layer_to_scan(Image(volume, name="from the console"))
    (note,) = bare.notes
    assert note.endswith("; no voxel size (no affine or scale): 1 mm assumed")
    np.testing.assert_allclose(bare.affine, np.eye(4))
    # an (i, j, k) array from nibabel, added with its voxel sizes, was counted with its axes
    # taken in another order (half the count) without a word
    (note,) = layer_to_scan(Image(volume, scale=(1.4, 1.2, 1.2), name="scaled")).notes
    assert note == (
        "layer 'scaled' is not a file opened here: its axes are taken as napari shows them, "
        "(z, y, x) = (S, A, R) with axial slices (an (i, j, k) array from nibabel needs "
        ".transpose(2, 1, 0), or open the file with this plugin)"
    )
    rgb = Image(np.zeros((10, 12, 14, 3), np.uint8), rgb=True, name="photo")
    with pytest.raises(HydranetError, match="layer 'photo': colour \\(RGB\\) data"):
        layer_to_scan(rgb)


def test_a_labels_layer_is_saved_with_whole_numbers(make_napari_viewer, tmp_path):
    """A corrected ROI or lesion labels: its file keeps integers, as the mask it came from."""
    from napari_hydranet import _writer

    viewer = make_napari_viewer()
    mask = np.zeros((7, 8, 9), np.uint8)
    mask[2:4, 3:5, 4:6] = 1
    roi = viewer.add_labels(mask, name="roi")
    lesions = viewer.add_labels(mask.astype(np.int32) * 300, name="lesions")
    heat = viewer.add_image(mask * 0.25, name="heat")
    for layer, dtype in ((roi, np.uint8), (lesions, np.int16), (heat, np.float32)):
        with pytest.warns(UserWarning, match="saved as napari shows it"):  # no scan under it
            (written,) = _writer.write_volume_layer(
                str(tmp_path / layer.name), layer.data, layer.as_layer_data_tuple()[1]
            )
        img = nib.load(written)
        assert img.get_data_dtype() == dtype
        np.testing.assert_array_equal(np.asarray(img.dataobj), np.transpose(layer.data, (2, 1, 0)))


def test_a_folder_opens_its_scans_or_says_to_count_it_in_cohort(make_napari_viewer, tmp_path):
    """File › Open Folder gave "not a compatible reader … Available readers: ['napari']"."""
    from napari_hydranet._reader import MAX_FOLDER_LAYERS
    from napari_hydranet.sample import load_sample

    sample = load_sample()
    folder = tmp_path / "two"
    folder.mkdir()
    shutil.copy(sample.scan, folder / "a.nii.gz")
    shutil.copy(sample.mask, folder / "a_roi.nii.gz")
    viewer = make_napari_viewer()
    layers = viewer.open(str(folder), plugin="napari-hydranet")
    assert [(ly.name, type(ly).__name__) for ly in layers] == [("a", "Image"), ("a_roi", "Labels")]
    for n in range(MAX_FOLDER_LAYERS - 1):
        shutil.copy(sample.scan, folder / f"b{n}.nii.gz")
    with pytest.raises(
        Exception, match=r"13 NIfTI files; napari opens up to 12 of a folder. Count a whole folder with"
    ):
        viewer.open(str(folder), plugin="napari-hydranet")
    (tmp_path / "empty").mkdir()
    assert napari_get_reader(str(tmp_path / "empty")) is None  # not ours: napari's readers may take it


def test_two_oblique_scans_of_one_session_still_overlay_once_straightened():
    """Each volume was straightened about its own centre: a 1 mm scan and a 0.5×0.5×2 mm scan
    with one tilt put one scanner point 9 mm apart in napari."""
    from napari_hydranet._layers import display_affine
    from napari_hydranet.preprocess import ras_grid

    tilt = _oblique_affine()[:3, :3] / np.linalg.norm(_oblique_affine()[:3, :3], axis=0)
    point = np.array([-10.0, 35.0, 12.0, 1.0])  # scanner mm
    shown = []
    for spacing, origin, shape in (
        ((1, 1, 1), (-40.0, 10, -5), (60, 70, 50)),
        ((0.5, 0.5, 2), (-20.0, 30, 9), (90, 80, 20)),
    ):
        affine = np.eye(4)
        affine[:3, :3] = tilt @ np.diag(spacing)
        affine[:3, 3] = origin
        ras_index = np.linalg.solve(ras_grid(affine, shape)[1], point)[:3]  # of the RAS-ordered volume
        shown.append(display_affine(affine, shape) @ np.r_[ras_index[::-1], 1.0])  # napari's world
    np.testing.assert_allclose(shown[0], shown[1], atol=1e-6)
