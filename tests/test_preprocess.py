from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from synth import stored_otherwise

from napari_hydranet.errors import HydranetError
from napari_hydranet.io import Scan
from napari_hydranet.preprocess import (
    MEDIAN_SPAN,
    PreprocessConfig,
    crop_box,
    network_zoom,
    prepare,
    rescale,
    smooth_mask,
)


def _world(affine, ijk):
    return affine[:3, :3] @ np.asarray(ijk, float) + affine[:3, 3]


def test_crop_keeps_world_positions_and_uncrop_inverts():
    rng = np.random.default_rng(0)
    affine = np.array([[0.9, 0.1, 0, -40], [0, 1.1, 0.05, -30], [0, 0, 1.3, -20], [0, 0, 0, 1]])
    arr = rng.random((50, 44, 30)).astype(np.float32) + 0.5
    mask = np.zeros(arr.shape, np.uint8)
    mask[20:30, 15:25, 10:18] = 1
    p = prepare(Scan(arr, affine), PreprocessConfig(crop_shape=(24, 20, 16)), Scan(mask, affine))
    assert p.array.shape == (24, 20, 16)
    c = np.array([5, 7, 9])
    src = p.to_source_index(c)
    np.testing.assert_allclose(_world(p.affine, c), _world(affine, src))
    back = p.uncrop(p.array)
    assert back.shape == arr.shape
    np.testing.assert_array_equal(back[tuple(src.astype(int))], p.array[tuple(c)])


def test_crop_beyond_border_is_zero_padded():
    arr = np.ones((10, 10, 10), np.float32)
    out, offset = crop_box(arr, np.array([1.0, 1.0, 1.0]), (8, 8, 8))
    assert offset == (-3, -3, -3)
    assert out[:3].sum() == 0 and out[3:, 3:, 3:].all()


def test_mask_is_dilated_and_smoothed():
    m = np.zeros((21, 21, 21), bool)
    m[10, 10, 10] = True
    w = smooth_mask(m, dilation=2, sigma=2.0)
    assert 0 < w[10, 10, 10] <= 1 and w[10, 10, 14] > 0 and w.min() >= 0


def test_rescale_trims_top_percent():
    arr = np.linspace(0, 100, 1001).astype(np.float32)
    out = rescale(arr, arr > 0, 99.0)
    assert out.max() == 1.0 and (out == 1.0).sum() >= 10 and out.min() == 0.0


def test_median_reference_keeps_the_tissue_level_when_the_bright_tail_grows():
    rng = np.random.default_rng(0)
    tissue = rng.normal(100, 5, 20_000).astype(np.float32)
    few, many = tissue.copy(), tissue.copy()
    few[:100], many[:400] = 220, 220  # bright voxels (lesions, lacunes) above 99 % in one scan only
    roi = np.ones(tissue.shape, bool)
    by_percentile = [np.median(rescale(a, roi, 99.0)) for a in (few, many)]
    by_median = [np.median(rescale(a, roi, 99.0, "median")) for a in (few, many)]
    assert by_percentile[1] < 0.6 * by_percentile[0]  # the 99th percentile moved: tissue darker
    assert by_median == pytest.approx([1 / MEDIAN_SPAN] * 2, abs=0.01)
    assert rescale(many, roi, 99.0, "median").max() == 1.0
    z_scored = Scan((tissue - tissue.mean() - 1).reshape(20, 25, 40), np.eye(4))
    with pytest.raises(HydranetError, match="median intensity"):
        prepare(z_scored, PreprocessConfig(intensity_reference="median"))


def test_intensity_reference_round_trips_and_defaults_for_older_models():
    cfg = PreprocessConfig(intensity_reference="median")
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert PreprocessConfig.from_dict({}).intensity_reference == "percentile"
    with pytest.raises(HydranetError, match="intensity_reference"):
        PreprocessConfig.from_dict({"intensity_reference": "zscore"})


def test_mask_grid_must_match():
    arr = np.ones((8, 8, 8), np.float32)
    with pytest.raises(HydranetError, match="shape"):
        prepare(Scan(arr, np.eye(4)), PreprocessConfig(), Scan(np.ones((4, 4, 4)), np.eye(4)))
    with pytest.raises(HydranetError, match="empty"):
        prepare(Scan(arr, np.eye(4)), PreprocessConfig(), Scan(np.zeros((8, 8, 8)), np.eye(4)))


def test_a_mask_of_negative_values_is_refused_and_one_not_0_1_noted():
    rng = np.random.default_rng(0)
    scan = Scan(rng.random((40, 30, 30)).astype(np.float32), np.eye(4))
    roi = np.zeros((40, 30, 30), np.float32)
    roi[10:30, 8:22, 8:22] = 1
    with pytest.raises(HydranetError, match=r"roi: no voxel of the mask is > 0 \(its values are -1 to 0\)"):
        prepare(scan, PreprocessConfig(), Scan(0 - roi, np.eye(4), label="roi"))  # int8 255 read as -1
    for binary in (roi, 255 * roi):  # 0/1, and 0/255 as some tools export masks
        notes = prepare(scan, PreprocessConfig(), Scan(binary, np.eye(4))).notes
        assert not any("more values than" in n for n in notes)
    probability = 0.5 * roi + 0.1 * rng.random(roi.shape).astype(np.float32)  # > 0 everywhere
    notes = prepare(scan, PreprocessConfig(), Scan(probability, np.eye(4), label="p")).notes
    assert any(
        n.startswith("p: the ROI mask holds more values than 0 and one other") and "(100% of the volume)" in n
        for n in notes
    )


def test_blank_scans_are_refused_and_tiny_ones_noted():
    rng = np.random.default_rng(0)
    with pytest.raises(HydranetError, match="every voxel is 0"):
        prepare(Scan(np.zeros((8, 8, 8), np.float32), np.eye(4)), PreprocessConfig())
    inside = np.zeros((8, 8, 8), np.float32)
    inside[2:6, 2:6, 2:6] = 1
    scan = Scan(rng.random((8, 8, 8)).astype(np.float32) * (1 - inside) + 3 * inside, np.eye(4))
    with pytest.raises(
        HydranetError, match=r"every voxel inside the ROI mask \(64 voxels\) is 3: a blank scan"
    ):
        prepare(scan, PreprocessConfig(), Scan(inside, np.eye(4)))
    one = np.zeros((8, 8, 8), np.float32)
    one[4, 4, 4] = 1  # the scan is not what is wrong
    with pytest.raises(HydranetError, match=r"mask \(1 voxel\) is [\d.]+: an ROI mask of one voxel, nothing"):
        prepare(scan, PreprocessConfig(), Scan(one, np.eye(4)))
    for value in (1, 255):  # folders swapped: a mask saved as 0/1 or as 0/255
        swapped = f"m.nii.gz: holds only 0s and {value}s: an ROI or lesion mask, not a scan"
        with pytest.raises(HydranetError, match=swapped):
            prepare(Scan(inside * value, np.eye(4), Path("m.nii.gz")), PreprocessConfig())
    tiny = prepare(Scan(rng.random((5, 30, 30)).astype(np.float32), np.eye(4)), PreprocessConfig())
    assert any("5×30×30 voxels, under half the network's input (64×52×40)" in n for n in tiny.notes)
    full = prepare(Scan(rng.random((40, 30, 30)).astype(np.float32), np.eye(4)), PreprocessConfig())
    assert not any("under half" in n for n in full.notes)


def test_implausible_voxel_sizes_and_constant_scans_are_refused_with_their_reason():
    rng = np.random.default_rng(0)
    data = rng.random((20, 20, 20)).astype(np.float32)
    for edge in (100.0, 0.0014):  # a header's mistake; lengths in metres read as mm
        size = "×".join([f"{edge:g}"] * 3)
        with pytest.raises(HydranetError, match=rf"s.nii.gz: voxel size {size} mm, outside"):
            prepare(Scan(data, np.diag([edge, edge, edge, 1.0]), Path("s.nii.gz")), PreprocessConfig())
    # within that range, a resampling that would not fit in memory is refused before it starts
    coarse = PreprocessConfig(crop_shape=None, spacing_range_mm=(0.9, 1.1), spacing_mm=(0.06,) * 3)
    with pytest.raises(HydranetError, match="too many to hold in memory"):
        prepare(Scan(data, np.diag([19.0, 19.0, 19.0, 1.0]), Path("s.nii.gz")), coarse)
    with pytest.raises(HydranetError, match="every voxel is 7: a blank scan"):  # not "a mask"
        prepare(Scan(np.full((8, 8, 8), 7, np.float32), np.eye(4)), PreprocessConfig())


def test_a_mask_of_a_few_lesions_is_noted():
    """Basal-ganglia ROIs fill 6-27 % of the 64×52×40 input; a lesion mask a fraction of 1 %."""
    rng = np.random.default_rng(0)
    scan = Scan(rng.random((64, 52, 40)).astype(np.float32), np.eye(4))
    lesions, roi = np.zeros((64, 52, 40), np.uint8), np.zeros((64, 52, 40), np.uint8)
    lesions[30:33, 25:28, 18:23] = 1
    roi[20:44, 15:37, 10:30] = 1  # 8 % of the box
    noted = prepare(scan, PreprocessConfig(), Scan(lesions, np.eye(4), label="lesions"))
    assert any(
        "lesions: the ROI mask holds 45 voxels, under 1% of the network's input" in n for n in noted.notes
    )
    assert not any(
        "ROI mask holds" in n for n in prepare(scan, PreprocessConfig(), Scan(roi, np.eye(4))).notes
    )


def test_an_roi_larger_than_the_networks_input_is_noted():
    """A white-matter ROI (WMH volumes) is larger than the basal ganglia the default crop was
    made for: what lies outside the crop is never counted."""
    rng = np.random.default_rng(0)
    scan = Scan(rng.random((100, 100, 60)).astype(np.float32), np.eye(4), label="wm")
    roi = np.zeros((100, 100, 60), np.uint8)
    roi[10:90, 10:90, 10:50] = 1
    noted = prepare(scan, PreprocessConfig(), Scan(roi, np.eye(4), label="wm"))
    share = 64 * 52 * 40 / (80 * 80 * 40)
    assert f"wm: the network's input (64×52×40 voxels) holds {share:.0%} of the ROI mask" in " ".join(
        noted.notes
    )
    fits = prepare(scan, PreprocessConfig(crop_shape=(80, 80, 40)), Scan(roi, np.eye(4), label="wm"))
    assert not any("of the ROI mask" in n for n in fits.notes)


def test_a_masks_reading_notes_reach_the_prediction():
    rng = np.random.default_rng(0)
    scan = Scan(rng.random((64, 52, 40)).astype(np.float32), np.eye(4), label="s")
    roi = np.zeros((64, 52, 40), np.uint8)
    roi[20:44, 15:37, 10:30] = 1
    mask = Scan(roi, np.eye(4), label="m", notes=["m: 3 NaN/inf voxels set to 0"])
    assert "m: 3 NaN/inf voxels set to 0" in prepare(scan, PreprocessConfig(), mask).notes


def test_an_inverted_or_z_scored_scan_is_noted():
    rng = np.random.default_rng(0)
    positive = rng.random((40, 30, 30)).astype(np.float32) + 0.1
    roi = np.zeros((40, 30, 30), np.uint8)
    roi[10:30, 8:22, 8:22] = 1
    for scan, mask in ((Scan(positive, np.eye(4)), None), (Scan(positive, np.eye(4)), Scan(roi, np.eye(4)))):
        assert not any("median intensity" in n for n in prepare(scan, PreprocessConfig(), mask).notes)
    inverted = Scan(-positive, np.eye(4), label="flipped")
    (note,) = [n for n in prepare(inverted, PreprocessConfig()).notes if "median intensity" in n]
    assert note.startswith("flipped: the median intensity of the non-zero voxels is -0.6")
    z_scored = Scan(positive - np.median(positive[roi > 0]) - 0.01, np.eye(4), label="z")
    noted = prepare(z_scored, PreprocessConfig(), Scan(roi, np.eye(4))).notes
    assert any(n.startswith("z: the median intensity inside the ROI mask is -0.01") for n in noted)


@pytest.mark.parametrize("order, flips", [((0, 1, 2), (0, 1)), ((2, 0, 1), ()), ((1, 2, 0), (2,))])
def test_a_scan_stored_in_another_voxel_order_prepares_like_ras(order, flips):
    rng = np.random.default_rng(1)
    affine = np.array([[1.2, 0, 0, -40], [0, 1.1, 0, -30], [0, 0, 1.4, -20], [0, 0, 0, 1]])
    arr = rng.random((40, 34, 26)).astype(np.float32) + 0.5
    mask = np.zeros(arr.shape, np.uint8)
    mask[12:30, 8:20, 6:16] = 1
    cfg = PreprocessConfig(crop_shape=(24, 20, 16))
    ras = prepare(Scan(arr, affine), cfg, Scan(mask, affine))
    stored, stored_affine = stored_otherwise(arr, affine, order, flips)
    other = prepare(
        Scan(stored, stored_affine), cfg, Scan(stored_otherwise(mask, affine, order, flips)[0], stored_affine)
    )
    assert ras.on_source_grid and not other.on_source_grid
    np.testing.assert_array_equal(other.array, ras.array)  # the network sees the same input
    np.testing.assert_allclose(other.affine, ras.affine, atol=1e-9)
    crop_voxels = np.array([[3.0, 7.0, 11.0], [20.0, 1.0, 0.0]])
    for c, src in zip(crop_voxels, other.to_source_index(crop_voxels)):
        np.testing.assert_allclose(_world(stored_affine, src), _world(ras.affine, c))
    back = other.uncrop(other.array)  # on the stored file's grid
    assert back.shape == stored.shape
    np.testing.assert_array_equal(back, stored_otherwise(ras.uncrop(ras.array), affine, order, flips)[0])
    lesions = rng.random(arr.shape).astype(np.float32)
    np.testing.assert_array_equal(
        other.crop_source(stored_otherwise(lesions, affine, order, flips)[0]), ras.crop_source(lesions)
    )


def test_voxels_outside_the_models_range_are_resampled_into_it():
    """A 0.5 mm scan for a model trained on 0.9-1.6 mm voxels: the network sees 0.9 mm voxels,
    and a bright spot found on its grid maps back to where it lies in the file."""
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    affine[:3, 3] = [-30, -25, -20]
    arr = np.full((120, 100, 80), 100.0, np.float32)
    arr[70:73, 40:43, 30:33] = 1000.0  # a bright spot, centre (71, 41, 31)
    mask = np.zeros(arr.shape, np.uint8)
    mask[30:90, 20:80, 15:65] = 1
    cfg = PreprocessConfig(crop_shape=(40, 40, 32), trim_percentile=100.0, spacing_range_mm=(0.9, 1.6))
    p = prepare(Scan(arr, affine), cfg, Scan(mask, affine))
    np.testing.assert_allclose(np.linalg.norm(p.affine[:3, :3], axis=0), 0.9)
    assert p.resampled and not p.on_source_grid
    assert any("resampled to 0.9×0.9×0.9 mm" in n for n in p.notes)
    peak = np.array(np.unravel_index(np.argmax(p.array), p.array.shape), float)
    src = p.to_source_index(peak)
    np.testing.assert_allclose(_world(affine, src), _world(p.affine, peak))
    assert np.linalg.norm(src - [71, 41, 31]) * 0.5 <= 0.9  # within one network voxel
    back = p.uncrop(p.array)
    assert back.shape == arr.shape
    near = np.round(src).astype(int)
    assert back[tuple(near)] > 0.5 * p.array.max()  # the spot is back where it was
    with pytest.raises(HydranetError, match="lesion maps of resampled scans"):
        p.crop_source(arr)
    inside = prepare(
        Scan(arr, affine * [[2.4], [2.4], [2.4], [1]]), cfg, Scan(mask, affine * [[2.4], [2.4], [2.4], [1]])
    )
    assert not inside.resampled and inside.on_source_grid  # 1.2 mm voxels: as stored


def test_preprocess_config_keeps_its_voxel_range():
    cfg = PreprocessConfig(spacing_range_mm=(0.9, 1.6), spacing_mm=(1.2, 1.2, 1.25))
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert "spacing_range_mm" not in PreprocessConfig().to_dict()  # older readers keep working


def test_only_axes_outside_the_range_go_to_the_typical_voxel():
    cfg = PreprocessConfig(spacing_range_mm=(0.9, 1.6), spacing_mm=(1.2, 1.2, 1.3))
    np.testing.assert_allclose(network_zoom((0.5, 0.5, 1.0), cfg), (2.4, 2.4, 1.0))
    np.testing.assert_allclose(network_zoom((1.0, 1.0, 3.0), cfg), (1.0, 1.0, 1.3 / 3.0))
    assert network_zoom((0.89, 1.6, 1.62), cfg) is None  # within 2 %: rounding in headers
    assert network_zoom((0.5, 0.5, 0.5), PreprocessConfig()) is None  # a model without a range
    nearest_end = PreprocessConfig(spacing_range_mm=(0.9, 1.6))
    np.testing.assert_allclose(network_zoom((0.5, 1.0, 2.0), nearest_end), (1.8, 1.0, 0.8))


def test_a_mask_saved_in_another_voxel_order_of_the_same_grid_is_accepted():
    rng = np.random.default_rng(3)
    affine = np.diag([-1.2, 1.2, 1.4, 1.0])  # LAS, as FSL writes
    arr = rng.random((30, 28, 20)).astype(np.float32) + 0.5
    mask = np.zeros(arr.shape, np.uint8)
    mask[5:20, 8:22, 4:15] = 1
    cfg = PreprocessConfig(crop_shape=(16, 16, 12))
    same = prepare(Scan(arr, affine), cfg, Scan(mask, affine))
    ras_mask, ras_affine = stored_otherwise(mask, affine, order=(0, 1, 2), flips=(0,))  # as napari saves it
    other = prepare(Scan(arr, affine), cfg, Scan(ras_mask, ras_affine))
    np.testing.assert_array_equal(other.array, same.array)
    shifted = ras_affine.copy()
    shifted[0, 3] += 1.2
    # how far, and what to do: the message named neither
    with pytest.raises(
        HydranetError, match=r"mask affine differs .*: the mask's voxels lie up to 1.2 mm .*Resample"
    ):
        prepare(Scan(arr, affine), cfg, Scan(ras_mask, shifted))
    finer = ras_affine.copy()
    finer[:3, :3] *= 0.5
    with pytest.raises(HydranetError, match=r"voxels 0.60×0.60×0.70 mm against the scan's 1.20×1.20×1.40"):
        prepare(Scan(arr, affine), cfg, Scan(ras_mask, finer))


@pytest.mark.parametrize("spacing", [(0.5, 0.5, 0.5), (1.2, 1.2, 4.0), (1.0, 1.0, 3.0), (0.6, 1.2, 2.0)])
def test_a_resampled_heatmap_keeps_its_sum_and_place_on_the_files_grid(spacing):
    affine = np.diag([*spacing, 1.0])
    shape = tuple(int(round(60 / s)) for s in spacing)
    arr = np.random.default_rng(4).random(shape).astype(np.float32) + 0.5
    cfg = PreprocessConfig(crop_shape=(32, 32, 24), spacing_range_mm=(0.9, 1.6), spacing_mm=(1.2, 1.2, 1.2))
    p = prepare(Scan(arr, affine), cfg)
    assert p.resampled
    grid = np.indices(p.array.shape).astype(float)
    centre = np.array([12.3, 14.6, 10.4])  # one lesion's share of the count, a Gaussian blob
    density = np.exp(-((grid - centre[:, None, None, None]) ** 2).sum(0) / (2 * 1.5**2)).astype(np.float32)
    density *= 0.8 / density.sum()
    back = p.uncrop(density, density=True)
    assert back.shape == shape
    assert back.sum() == pytest.approx(0.8, rel=0.01)
    np.testing.assert_allclose(ndimage.center_of_mass(back), p.to_source_index(centre), atol=0.1)


def test_an_roi_thinner_than_the_networks_voxels_is_kept():
    affine = np.diag([0.45, 0.45, 0.45, 1.0])
    arr = np.random.default_rng(5).random((120, 110, 90)).astype(np.float32) + 0.5
    roi = np.zeros(arr.shape, np.uint8)
    roi[30:90, 55, 20:70] = 1  # one voxel thick
    cfg = PreprocessConfig(crop_shape=(32, 32, 24), spacing_range_mm=(0.9, 1.6), spacing_mm=(1.2, 1.2, 1.2))
    p = prepare(Scan(arr, affine), cfg, Scan(roi, affine))
    assert p.array.max() > 0
