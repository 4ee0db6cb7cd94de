import numpy as np

from napari_hydranet.detect import at_threshold, count_consistent, score_map


def _blobs(centres, shape=(30, 30, 20), heights=None):
    grid = np.indices(shape).astype(float)
    out = np.zeros(shape)
    for n, c in enumerate(centres):
        h = 1.0 if heights is None else heights[n]
        out += h * np.exp(-((grid - np.array(c)[:, None, None, None]) ** 2).sum(0) / 2)
    return out


def test_threshold_gives_the_predicted_number_of_components():
    centres = [(5, 5, 5), (15, 20, 10), (25, 8, 14), (10, 25, 4)]
    heat = _blobs(centres, heights=[1.0, 0.8, 0.6, 0.4])
    for count in (1, 2, 3, 4):
        res = count_consistent(heat, count + 0.2)
        assert len(res.detections) == count
    found = np.array([d.centre for d in count_consistent(heat, 4).detections])
    for c in centres:
        assert np.linalg.norm(found - c, axis=1).min() < 0.5
    assert count_consistent(heat, 0.3).detections == []


def test_detection_properties_and_manual_threshold():
    heat = _blobs([(10, 10, 10)])
    det = count_consistent(heat, 1).detections[0]
    assert det.size >= 1 and det.score == heat.max()
    assert len(at_threshold(heat, 2.0).detections) == 0


def test_score_map_with_intensities():
    heat = _blobs([(10, 10, 10)])
    inten = np.zeros_like(heat)
    inten[20, 20, 10] = 1.0
    assert np.allclose(score_map(heat, inten, 0.0, sigma=0), heat)
    mixed = score_map(heat, inten, 0.5, sigma=0)
    assert mixed[20, 20, 10] == 0.5 and mixed.max() == mixed[10, 10, 10]


def test_smoothed_score_map_finds_a_large_faint_lesion_before_a_noise_voxel():
    """A density spreads each lesion's count over its voxels: a large lesion's voxels are
    fainter than a single noise voxel, but its smoothed peak is not."""
    heat = np.zeros((30, 20, 20), np.float32)
    heat[5, 5, 5] = 1.0  # a one-voxel lesion, count 1
    heat[14:17, 9:12, 9:12] = 1 / 27  # a 27-voxel lesion, count 1
    heat[25, 15, 15] = 0.1  # noise
    raw = {tuple(np.round(d.centre).astype(int)) for d in count_consistent(heat, 2).detections}
    assert raw == {(5, 5, 5), (25, 15, 15)}
    found = count_consistent(score_map(heat, np.zeros_like(heat)), 2).detections
    assert {tuple(np.round(d.centre).astype(int)) for d in found} == {(5, 5, 5), (15, 10, 10)}
