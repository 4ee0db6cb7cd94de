"""Pretraining targets made from lesion label masks."""

import numpy as np
import pytest

from napari_hydranet.data import LESION_MASS, lesion_target
from napari_hydranet.errors import HydranetError


def _labels() -> np.ndarray:
    lab = np.zeros((12, 10, 8), np.float32)
    lab[1:3, 1:2, 1:2] = 1  # 2 voxels
    lab[5:10, 4:8, 2:4] = 2  # 40 voxels
    lab[0, 9, 7] = 3  # 1 voxel
    return lab


def test_voxel_target_marks_every_lesion_voxel():
    t = lesion_target(_labels(), "voxels")
    assert t.sum() == 43 and set(np.unique(t)) == {0.0, 1.0}


def test_lesion_target_gives_every_lesion_the_same_mass_whatever_its_size():
    lab = _labels()
    t = lesion_target(lab, "lesions")
    for n in (1, 2, 3):
        assert t[lab == n].sum() == pytest.approx(LESION_MASS)
        assert np.ptp(t[lab == n]) == 0  # spread evenly over the lesion
    assert t.sum() == pytest.approx(3 * LESION_MASS) and np.all(t[lab == 0] == 0)


def test_lesion_target_is_unchanged_by_missing_label_ids_and_rejects_bad_input():
    lab = _labels()
    lab[lab == 2] = 7  # ids need not be consecutive
    assert lesion_target(lab, "lesions").sum() == pytest.approx(3 * LESION_MASS)
    with pytest.raises(ValueError, match="density target"):
        lesion_target(lab, "spheres")
    with pytest.raises(HydranetError, match="negative"):
        lesion_target(-lab, "lesions")
