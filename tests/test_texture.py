import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_hydranet.infer import predict_scan
from napari_hydranet.io import Scan
from napari_hydranet.models import Model, build_net
from napari_hydranet.texture import noise_texture, texture_range


def _tissue(seed=0, shape=(48, 44, 36), noise=0.05):
    """A smooth 'anatomy' (a bright ball on a slope) with independent noise in each voxel."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    ball = np.exp(-(((grid.T - np.array(shape) / 2) ** 2).sum(-1).T) / 200)
    return (0.5 + 0.3 * ball + 0.002 * grid[0] + rng.normal(0, noise, shape)).astype(np.float32)


def _half_shift(array):
    """What a half-voxel shift with linear interpolation does: each voxel the mean of two."""
    for axis in range(3):
        n = array.shape[axis]
        array = (array.take(range(n - 1), axis) + array.take(range(1, n), axis)) / 2
    return array


def test_independent_noise_reads_one_and_interpolated_or_smoothed_noise_less():
    roi = np.zeros((48, 44, 36), bool)
    roi[8:40, 8:36, 6:30] = True
    sharp = [noise_texture(_tissue(seed), roi) for seed in range(3)]
    assert all(0.95 < t < 1.05 for t in sharp)
    shifted = [noise_texture(_half_shift(_tissue(seed)), roi[:-1, :-1, :-1]) for seed in range(3)]
    assert all(t < 0.9 for t in shifted)  # simulated scans: 0.77–0.87 against 0.96–1.01 as stored
    assert noise_texture(ndimage.gaussian_filter(_tissue(0), 0.7), roi) < 0.9
    assert 0.95 < noise_texture(_tissue(0)) < 1.05  # without a region: the brighter half of the voxels
    assert noise_texture(_tissue(0) * 1000 + 50, roi) == pytest.approx(sharp[0], abs=1e-4)  # gain, offset
    # stored as integers with noise of about one grey level (a median absolute deviation read 0.82–1.64)
    stepped = [
        noise_texture(np.round(100 + _tissue(seed, noise=sd)), roi) for seed, sd in enumerate((0.8, 1, 2))
    ]
    assert all(0.95 < t < 1.05 for t in stepped)
    coarse = np.round(
        100 + 0.7 * np.indices(roi.shape)[0] + np.random.default_rng(0).normal(0, 0.2, roi.shape)
    )
    assert noise_texture(coarse, roi) is None  # noise below the storage step: nothing to measure (read 0.87)


def test_no_texture_without_noise_or_region():
    roi = np.zeros((48, 44, 36), bool)
    roi[8:40, 8:36, 6:30] = True
    assert noise_texture(np.full((48, 44, 36), 3.0, np.float32), roi) is None  # nothing to measure
    tiny = np.zeros_like(roi)
    tiny[20:24, 20:24, 20:24] = True
    assert noise_texture(_tissue(0), tiny) is None  # too few voxels
    assert noise_texture(_tissue(0), np.zeros_like(roi)) is None
    assert texture_range([None, 0.97, 1.01, None]) == [0.9708, 1.0092] and texture_range([None]) is None


def test_a_scan_smoother_than_the_models_training_scans_is_noted():
    net = build_net("gpunet", {"features": [2, 4]})
    config = {"preprocess": {"crop_shape": [32, 32, 24]}, "training": {}}
    model = Model(net, config, None)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    roi = np.zeros((48, 44, 36), np.float32)
    roi[8:40, 8:36, 6:30] = 1
    sharp, smooth = _tissue(0), ndimage.gaussian_filter(_tissue(0), 0.7)
    device = torch.device("cpu")

    def notes(array, seen):
        model.config["training"]["noise_texture"] = seen
        pred = predict_scan(model, Scan(array, affine), device, Scan(roi, affine))
        return [n for n in pred.notes if "noise" in n]

    seen = {"region": "ROI", "range": [0.96, 1.01]}
    assert notes(sharp, seen) == []
    (note,) = notes(smooth, seen)
    assert "scan: noise smoother than in the model's training scans (texture 0." in note
    assert "theirs mostly 0.96–1.01): interpolated or smoothed (reslicing" in note
    assert notes(smooth, {"region": "foreground", "range": [0.96, 1.01]}) == []  # measured otherwise
    assert notes(smooth, None) == []  # a model that does not record its scans' texture
    low = noise_texture(smooth, roi > 0)
    assert notes(smooth, {"region": "ROI", "range": [low + 0.02, 1.01]}) == []  # within the margin


def test_a_model_records_the_percentiles_of_all_its_scans_so_one_odd_scan_does_not_set_them():
    from napari_hydranet.data import Cohort
    from napari_hydranet.train import _texture_seen

    def cohort(textures):
        n = len(textures)
        return Cohort(
            [f"s{i}" for i in range(n)],
            np.zeros((n, 1, 1, 1), np.float32),
            np.zeros(n),
            [],
            textures=textures,
        )

    seen = _texture_seen(cohort([0.98] * 100), cohort([0.80] + [0.98] * 24))  # the odd one in validation
    assert seen == {"region": "ROI", "range": [0.98, 0.98]}
    assert _texture_seen(cohort([None, None]), cohort([None])) is None
