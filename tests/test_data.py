"""Pretraining targets made from lesion label masks; loading a labelled cohort."""

import re

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


def test_load_cohort_passes_on_the_scans_notes_and_skips_unusable_scans_naming_each(cohort, tmp_path):
    import shutil

    import nibabel as nib

    from napari_hydranet.data import load_cohort
    from napari_hydranet.preprocess import PreprocessConfig

    scans = tmp_path / "scans"
    shutil.copytree(cohort / "scans", scans)
    img = nib.load(scans / "sub-001.nii.gz")
    data = img.get_fdata().astype(np.float32)
    data[0, 0, :3] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), scans / "sub-001.nii.gz")
    (tmp_path / "l.csv").write_text("scan,label\nsub-000.nii.gz,0\nsub-001.nii.gz,5\nsub-002.nii.gz,3\n")
    loaded = load_cohort(scans, tmp_path / "l.csv", PreprocessConfig(), cohort / "masks")
    assert loaded.names == ["sub-000.nii.gz", "sub-001.nii.gz", "sub-002.nii.gz"]
    assert any("sub-001.nii.gz" in n and "3 NaN/inf voxels set to 0" in n for n in loaded.notes)
    # what preparing the scans noted too, once for what several share (a masked model, no masks)
    unmasked = load_cohort(scans, tmp_path / "l.csv", PreprocessConfig(use_mask=True))
    assert [n for n in unmasked.notes if "no ROI mask given" in n] == [
        "3 scans (sub-000; sub-001; sub-002), e.g. sub-000: no ROI mask given; the whole volume is "
        "used, though the model was trained on ROIs: counts are not comparable with masked ones"
    ]

    # a blank scan and a truncated file: the others are loaded, and each skip says why
    nib.save(nib.Nifti1Image(np.full(data.shape, np.nan, np.float32), img.affine), scans / "sub-001.nii.gz")
    whole = (scans / "sub-002.nii.gz").read_bytes()
    (scans / "sub-002.nii.gz").write_bytes(whole[: len(whole) // 2])
    loaded = load_cohort(scans, tmp_path / "l.csv", PreprocessConfig(), cohort / "masks")
    assert loaded.names == ["sub-000.nii.gz"] and loaded.labels.tolist() == [0.0]
    assert len(loaded.images) == 1
    skips = [n for n in loaded.notes if n.startswith("skipped (not trained on): ")]
    assert len(skips) == 2 and skips == loaded.notes[:2]  # first, where a dock shows its notes
    assert re.search(r"sub-001.nii.gz: every voxel inside the ROI mask \(\d+ voxels\) is 0", skips[0])
    assert "sub-002.nii.gz" in skips[1]

    # nothing usable: one error that lists every scan's problem
    (tmp_path / "l.csv").write_text("scan,label\nsub-001.nii.gz,5\nsub-002.nii.gz,3\n")
    with pytest.raises(HydranetError, match="none of its 2 scans can be used") as err:
        load_cohort(scans, tmp_path / "l.csv", PreprocessConfig(), cohort / "masks")
    assert "sub-001.nii.gz: every voxel" in str(err.value) and "sub-002.nii.gz" in str(err.value)


def test_notes_that_differ_only_in_their_numbers_are_one_line():
    from napari_hydranet.data import shared

    notes = [
        f"sub-{i}: the median intensity inside the ROI mask is -0.{i}; a scan with inverted sign"
        for i in range(1, 301)
    ]
    notes.append("sub-9: the ROI mask holds 45 voxels")
    assert shared(notes) == [
        "300 scans (sub-1; sub-2; sub-3; … 297 more), e.g. sub-1: the median intensity inside the ROI mask "
        "is -0.1; a scan with inverted sign",
        "sub-9: the ROI mask holds 45 voxels",
    ]


def test_load_cohort_refuses_a_lesion_mask_off_its_scans_grid(cohort, tmp_path):
    """Pretraining cuts each lesion target out of its scan's voxels as stored; a mask on
    another grid (here the same voxels stored in another order) would be cut wrong."""
    import shutil

    import nibabel as nib
    from synth import save_stored_otherwise

    from napari_hydranet.data import load_cohort
    from napari_hydranet.preprocess import PreprocessConfig

    lesions = tmp_path / "lesions"
    shutil.copytree(cohort / "masks", lesions)  # ROI masks stand in for lesion masks
    (tmp_path / "l.csv").write_text("scan,label\nsub-000.nii.gz,0\nsub-001.nii.gz,5\n")
    args = (cohort / "scans", tmp_path / "l.csv", PreprocessConfig(), cohort / "masks")
    loaded = load_cohort(*args, density_dir=lesions)
    roi = np.asarray(nib.load(cohort / "masks" / "sub-001.nii.gz").dataobj)
    assert loaded.densities[1].sum() == pytest.approx((roi > 0).sum())
    save_stored_otherwise(cohort / "masks" / "sub-001.nii.gz", lesions / "sub-001.nii.gz")
    with pytest.raises(
        HydranetError, match=r"sub-001.nii.gz: the lesion mask's shape .* differs from its scan's"
    ):
        load_cohort(*args, density_dir=lesions)
