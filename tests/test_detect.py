import numpy as np

from napari_hydranet.detect import at_threshold, combine, count_consistent


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


def test_combine_with_intensities():
    heat = _blobs([(10, 10, 10)])
    inten = np.zeros_like(heat)
    inten[20, 20, 10] = 1.0
    assert np.allclose(combine(heat, inten, 0.0), heat)
    mixed = combine(heat, inten, 0.5)
    assert mixed[20, 20, 10] == 0.5 and mixed.max() == mixed[10, 10, 10]
