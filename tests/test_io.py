import errno
import logging
import os
import subprocess
import sys
import warnings

import nibabel as nib
import numpy as np
import pytest
from conftest import NIBABEL_DATA

from napari_hydranet.errors import HydranetError
from napari_hydranet.io import (
    find_scans,
    read_labels,
    read_scan,
    table_header,
    unlisted_scans,
    write_csv,
    write_volume,
)


def test_reads_big_endian_and_keeps_affine():
    scan = read_scan(NIBABEL_DATA / "anatomical.nii")
    img = nib.load(NIBABEL_DATA / "anatomical.nii")
    assert scan.array.dtype == np.float32 and scan.array.shape == img.shape
    np.testing.assert_allclose(scan.affine, img.affine)
    np.testing.assert_allclose(scan.array, img.get_fdata())


@pytest.mark.parametrize("name", ["example4d.nii.gz", "example_nifti2.nii.gz", "functional.nii"])
def test_true_4d_is_refused_with_file_and_shape(name):
    with pytest.raises(HydranetError) as err:
        read_scan(NIBABEL_DATA / name)
    shape = nib.load(NIBABEL_DATA / name).shape
    assert name in str(err.value) and str(tuple(shape)) in str(err.value)


def test_single_volume_4d_is_squeezed_and_nifti2_read(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4, 1)
    nib.save(nib.Nifti2Image(data, np.eye(4)), tmp_path / "one.nii")
    scan = read_scan(tmp_path / "one.nii")
    assert scan.array.shape == (2, 3, 4)
    assert scan.array[1, 2, 3] == 23


def test_scaling_applied(tmp_path):
    img = nib.Nifti1Image(np.full((3, 3, 3), 10, np.int16), np.eye(4))
    img.header.set_slope_inter(0.5, 3.0)
    nib.save(img, tmp_path / "s.nii.gz")
    assert np.allclose(read_scan(tmp_path / "s.nii.gz").array, 8.0)


def test_nans_become_zero_with_a_note(tmp_path):
    data = np.ones((4, 4, 4), np.float32)
    data[1, 1, 1] = np.nan
    data[2, 2, 2] = np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "n.nii.gz")
    scan = read_scan(tmp_path / "n.nii.gz")
    assert scan.array[1, 1, 1] == 0 and scan.array[2, 2, 2] == 0
    assert scan.notes == [f"{tmp_path.name}/n.nii.gz: 2 NaN/inf voxels set to 0"]


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    with pytest.raises(HydranetError, match="bad.nii.gz"):
        read_scan(bad)
    with pytest.raises(HydranetError, match="no such file"):
        read_scan(tmp_path / "absent.nii")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.complex64), np.eye(4)), tmp_path / "c.nii")
    with pytest.raises(HydranetError, match="c.nii: voxels of type complex64"):
        read_scan(tmp_path / "c.nii")
    rgb = np.zeros((4, 4, 4), [("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii")
    with pytest.raises(HydranetError, match="complex or RGB"):
        read_scan(tmp_path / "rgb.nii")
    nib.save(nib.Nifti1Image(np.ones((0, 5, 5), np.float32), np.eye(4)), tmp_path / "e.nii")
    with pytest.raises(HydranetError, match=r"e.nii: an empty volume of shape \(0, 5, 5\)"):
        read_scan(tmp_path / "e.nii")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "z.nii.gz")
    (tmp_path / "z.nii.gz").rename(tmp_path / "z.nii")  # compressed, named as if not
    with pytest.raises(
        HydranetError, match=r"z.nii: gzip-compressed but named without .gz; rename it z.nii.gz"
    ):
        read_scan(tmp_path / "z.nii")
    (tmp_path / "z.nii").rename(tmp_path / "u.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "u.nii")
    (tmp_path / "u.nii").replace(tmp_path / "u.nii.gz")  # not compressed, named as if it were
    with pytest.raises(
        HydranetError, match=r"u.nii.gz: not gzip-compressed though named .gz; rename it u.nii$"
    ):
        read_scan(tmp_path / "u.nii.gz")


def test_a_header_without_orientation_is_noted(tmp_path):
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    nib.save(img, tmp_path / "coded.nii")
    img.set_qform(None, 0)
    img.set_sform(None, 0)
    nib.save(img, tmp_path / "bare.nii")
    assert read_scan(tmp_path / "coded.nii").notes == []
    notes = read_scan(tmp_path / "bare.nii").notes
    assert notes == [
        f"{tmp_path.name}/bare.nii: the header gives no orientation (qform and sform codes 0): the voxel "
        "axes are taken as L, A, S, as nibabel and FSL assume, so left and right may be swapped and "
        "positions are not scanner mm"
    ]


def test_find_scans_mixes_files_and_folders(tmp_path):
    for n in ("b.nii.gz", "a.nii", "notes.txt"):
        (tmp_path / n).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.nii.gz").write_bytes(b"")
    found = find_scans([tmp_path, tmp_path / "sub" / "c.nii.gz"])
    assert [p.name for p in found] == ["a.nii", "b.nii.gz", "c.nii.gz"]
    with pytest.raises(HydranetError, match="not a NIfTI"):
        find_scans([tmp_path / "notes.txt"])
    nib.save(nib.Nifti1Pair(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "pair.hdr")
    for name in ("pair.hdr", "pair.img"):
        with pytest.raises(HydranetError, match=r"a .hdr/.img pair .*convert it to a single .nii.gz"):
            find_scans([tmp_path / name])
    # two links to one file (as DataLad stores scans) are two scans; a path given twice is one
    (tmp_path / "sub" / "d.nii.gz").symlink_to(tmp_path / "sub" / "c.nii.gz")
    found = find_scans([tmp_path / "sub", tmp_path / "sub" / ".." / "sub" / "c.nii.gz"])
    assert [p.name for p in found] == ["c.nii.gz", "d.nii.gz"]
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "c_heatmap.nii.gz").write_bytes(b"")
    (tmp_path / "only" / "._c.nii.gz").write_bytes(b"")
    with pytest.raises(HydranetError, match="2 hidden or \\*_heatmap files are not scans"):
        find_scans([tmp_path / "only"])


def test_write_volume_is_atomic_and_protects_inputs(tmp_path):
    src = tmp_path / "scan.nii.gz"
    write_volume(src, np.ones((2, 2, 2)), np.diag([2, 2, 2, 1]))
    assert np.allclose(nib.load(src).affine, np.diag([2, 2, 2, 1]))
    with pytest.raises(HydranetError, match="refusing to overwrite"):
        write_volume(src, np.zeros((2, 2, 2)), np.eye(4), protect=[src])
    assert np.allclose(nib.load(src).get_fdata(), 1)
    assert [p.name for p in tmp_path.iterdir()] == ["scan.nii.gz"]  # no temp files left


def test_write_volume_keeps_the_space_codes_of_the_scan_on_its_grid(tmp_path):
    affine = np.array([[0, 0, -1.2, 40], [-1.0, 0, 0, 20], [0, 1.1, 0, -10], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), affine)
    img.set_qform(affine, code=1)  # scanner
    img.set_sform(affine, code=4)  # MNI
    scan = tmp_path / "scan.nii.gz"
    nib.save(img, str(scan))
    kept = nib.load(write_volume(tmp_path / "heat.nii.gz", np.ones((4, 5, 6)), affine, like=scan))
    assert (int(kept.header["qform_code"]), int(kept.header["sform_code"])) == (1, 4)
    np.testing.assert_allclose(kept.header.get_qform(), affine, atol=1e-5)
    np.testing.assert_allclose(kept.affine, affine, atol=1e-6)
    for like in (scan, tmp_path / "gone.nii.gz", None):  # another grid, no file, none: nibabel's
        other = affine if like is not scan else np.diag([2.0, 2.0, 2.0, 1.0])
        back = nib.load(write_volume(tmp_path / "other.nii", np.ones((4, 5, 6)), other, like=like))
        assert (int(back.header["qform_code"]), int(back.header["sform_code"])) == (0, 2)
        np.testing.assert_allclose(back.affine, other)


def test_write_csv(tmp_path):
    rows = [
        ["x", 1.23456789],
        ["y", float("nan")],
        ["mm3", 1234567.8],
        ["zero", -0.0],
        ["small", 2.5e-7],
        ["edge", 999999.5],
    ]
    write_csv(tmp_path / "t.csv", ["a", "b"], rows)
    assert (tmp_path / "t.csv").read_text().splitlines() == [
        "a,b",
        "x,1.23457",
        "y,",
        "mm3,1234568",  # a volume in mm³ keeps its digits (not 1.23457e+06)
        "zero,0",
        "small,2.5e-07",
        "edge,1000000",
    ]


def _labels(tmp_path, text, **kw):
    (tmp_path / "s1.nii.gz").write_bytes(b"")
    (tmp_path / "s2.nii.gz").write_bytes(b"")
    p = tmp_path / "labels.csv"
    p.write_text(text)
    return read_labels(p, tmp_path, **kw)


def test_labels_ok_and_unlabelled_left_out_with_note(tmp_path):
    labels = _labels(tmp_path, "scan,label\ns1.nii.gz,3\ns2.nii.gz,\n")
    assert labels.values == {"s1.nii.gz": 3.0}
    assert "row 3" in labels.notes[0] and "s2.nii.gz" in labels.notes[0]
    for missing in ("NA", "n/a", "#N/A", "NaN", "-"):  # how spreadsheets and R write "no value"
        labels = _labels(tmp_path, f"scan,label\ns1.nii.gz,3\ns2.nii.gz,{missing}\n")
        assert labels.values == {"s1.nii.gz": 3.0}
        assert labels.notes == [f"row 3: 's2.nii.gz' has no label ({missing}) and is left out"]


def test_scans_the_labels_do_not_name_are_found_in_the_folder_only(tmp_path):
    scans = tmp_path / "scans"
    (scans / "sub").mkdir(parents=True)
    (scans / "sub" / "a.nii.gz").touch()
    table = tmp_path / "labels.csv"
    table.write_text("scan,label\nsub/a.nii.gz,3\n")  # a labelled scan in a subfolder, none beside it
    assert unlisted_scans(scans, read_labels(table, scans).listed) is None
    for name in ("b.nii", "c.nii.gz", "c_heatmap.nii.gz", "._c.nii.gz", "notes.txt"):
        (scans / name).touch()
    note = f"2 scans in {scans} have no row in the labels and are not used: b.nii; c.nii.gz"
    assert unlisted_scans(scans, read_labels(table, scans).listed) == note
    table.write_text("scan,label\nb,3\nsub/a.nii.gz,2\n./c.nii.gz,NA\n")  # an unlabelled row names its scan
    assert unlisted_scans(scans, read_labels(table, scans).listed) is None


def test_a_bids_session_no_row_names_is_found_at_the_places_of_those_named(tmp_path):
    bids = tmp_path / "bids"
    files = ["sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz", "sub-01/ses-2/anat/sub-01_ses-2_T2w.nii.gz"]
    files += ["sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz", "derivatives/bg/sub-01/ses-1/anat/x_mask.nii.gz"]
    files += ["sub-02/ses-1/anat/sub-02_ses-1_FLAIR.nii.gz"]  # another modality: not one of these scans
    for name in files:
        (bids / name).parent.mkdir(parents=True, exist_ok=True)
        (bids / name).touch()
    table = tmp_path / "labels.csv"
    table.write_text(f"scan,label\n{files[0]},3\n{files[2]},2\n")
    note = f"1 scan in {bids} has no row in the labels and is not used: {files[1]}"
    assert unlisted_scans(bids, read_labels(table, bids).listed) == note  # not the mask nor the FLAIR


@pytest.mark.parametrize(
    "text, message",
    [
        ("scan,label\ns1.nii.gz,3\ns3.nii.gz,1\n", "row 3: scan 's3.nii.gz' not found"),
        ("scan,label\nscans/s1.nii.gz,3\n", r"not found in .* \(names are relative to the scans folder\)"),
        ("scan,label\ns1,3\ns1.nii.gz,4\n", "row 3: scan 's1.nii.gz' is listed twice"),
        ("scan,label\ns1.nii.gz,3\ns1.nii.gz,4\n", "row 3: scan 's1.nii.gz' is listed twice"),
        ("scan,label\ns1.nii.gz,many\n", "row 2: label 'many'"),
        ("scan,label\ns1.nii.gz,-2\n", "row 2: label -2"),
        ("name,count\ns1.nii.gz,2\n", "no column 'scan'"),
        ("scan,label\ns1.nii.gz,3\n./s1.nii.gz,4\n", "row 3: scan 's1.nii.gz' is listed twice"),
        ("scan,label\ns1.nii.gz,\ns1,4\n", "row 3: scan 's1.nii.gz' is listed twice"),
        ("scan,label\ns1.nii.gz,3\ns1.nii.gz,\n", "row 3: scan 's1.nii.gz' is listed twice"),
        ("scan|label\ns1.nii.gz|3\n", r"no column 'scan' in the header \['scan\|label'\]"),
        ('scan,label\ns1.nii.gz,"3,5"\n', r"label '3,5' .* not a number \(write decimals with a point"),
        ('scan,label\ns1.nii.gz,"2,337.2"\n', r"not a number \(write numbers without thousands separators"),
        ("scan,label,label\ns1.nii.gz,3,5\n", "2 columns named 'label'"),
    ],
)
def test_labels_errors_name_the_row(tmp_path, text, message):
    with pytest.raises(HydranetError, match=message):
        _labels(tmp_path, text)


def test_labels_saved_by_excel_in_a_decimal_comma_locale(tmp_path):
    """German or French Excel's "CSV": semicolons, decimal commas, a BOM, CRLF, a last empty
    row, headers capitalised as typed."""
    (tmp_path / "s1.nii.gz").write_bytes(b"")
    (tmp_path / "s2.nii").write_bytes(b"")
    table = tmp_path / "volumen.csv"
    table.write_bytes("Scan;Volumen (mm³)\r\ns1.nii.gz;1234,5\r\ns2.nii;87\r\n;\r\n".encode("utf-8-sig"))
    found = read_labels(table, tmp_path, label_column="Volumen (mm³)")
    assert found.values == {"s1.nii.gz": 1234.5, "s2.nii": 87.0}
    assert found.notes == [
        "volumen.csv: read as separated by semicolons",
        "1 label written with a decimal comma (3,5) read as 3.5",
    ]
    assert table_header(table) == ["Scan", "Volumen (mm³)"]
    (tmp_path / "t.csv").write_text("scan\tlabel\ns1.nii.gz\t3.5\n")  # a tab-separated .csv
    assert read_labels(tmp_path / "t.csv", tmp_path).values == {"s1.nii.gz": 3.5}
    # points group thousands where other labels have a decimal comma; alone they are ambiguous
    (tmp_path / "g.csv").write_text('Scan;"Volume, mm3"\ns1.nii.gz;1.234\ns2.nii;1.234,5\n')
    found = read_labels(tmp_path / "g.csv", tmp_path, label_column="Volume, mm3")
    assert found.values == {"s1.nii.gz": 1234.0, "s2.nii": 1234.5}
    (tmp_path / "g.csv").write_text("scan;label\ns1.nii.gz;1.234\ns2.nii;87\n")
    found = read_labels(tmp_path / "g.csv", tmp_path)
    assert found.values == {"s1.nii.gz": 1.234, "s2.nii": 87.0}
    assert found.notes[-1] == (
        "1 label such as 1.234 read with a decimal point (1.234); if the point groups thousands "
        "(1234), write the labels without it"
    )
    (tmp_path / "g.csv").write_text("scan;label\ns1.nii.gz;3.5\ns2.nii;4,5\n")  # mixed: refused
    with pytest.raises(
        HydranetError, match=r"row 2: label '3.5' .* \(other rows write decimals with a comma"
    ):
        read_labels(tmp_path / "g.csv", tmp_path)
    # a comma CSV keeps its decimal commas an error: "3,5" in quotes may be two numbers joined
    (tmp_path / "c.csv").write_text('scan,label\ns1.nii.gz,"3,5"\n')
    with pytest.raises(HydranetError, match="write decimals with a point"):
        read_labels(tmp_path / "c.csv", tmp_path)


def test_a_scan_named_twice_by_other_paths_is_listed_twice(tmp_path):
    for other in (tmp_path / "s1.nii.gz", f"../{tmp_path.name}/s1.nii.gz"):
        with pytest.raises(HydranetError, match="row 3: scan .*s1.nii.gz' is listed twice"):
            _labels(tmp_path, f"scan,label\ns1.nii.gz,3\n{other},4\n")


def test_scans_linked_to_one_file_are_two_scans(tmp_path):
    """DataLad and git-annex link scans of equal content to one stored file."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "object").write_bytes(b"")
    for name in ("a.nii.gz", "b.nii.gz"):
        (tmp_path / name).symlink_to(tmp_path / "store" / "object")
    (tmp_path / "labels.csv").write_text("scan,label\na.nii.gz,3\nb.nii.gz,4\n")
    assert read_labels(tmp_path / "labels.csv", tmp_path).values == {"a.nii.gz": 3.0, "b.nii.gz": 4.0}


def test_a_name_typed_in_another_unicode_form_finds_its_file(tmp_path):
    """é typed in the CSV (one code point) and é in a name from a Mac (e + accent) are one name,
    with its suffix or without, and when tables are matched by name."""
    import unicodedata

    from napari_hydranet.io import match_labels

    typed = "sé.nii.gz"
    stored = unicodedata.normalize("NFD", typed)
    assert stored != typed
    (tmp_path / stored).write_bytes(b"")
    assert _labels(tmp_path, f"scan,label\n{typed},3\n").values == {stored: 3.0}
    assert _labels(tmp_path, "scan,label\nsé,3\n").values == {stored: 3.0}
    assert match_labels([stored], {"sé": 3.0}) == {stored: 3.0}


def test_labels_may_name_scans_without_their_suffix(tmp_path):
    """As evaluate and the Cohort dock match them; each name must then point at one file."""
    labels = _labels(tmp_path, "scan,label\ns1,3\ns2.nii.gz,4\n")
    assert labels.values == {"s1.nii.gz": 3.0, "s2.nii.gz": 4.0}
    assert labels.notes == [
        "1 scan named without .nii/.nii.gz (or with the other), matched to the file that has it"
    ]
    (tmp_path / "s1.nii").write_bytes(b"")
    with pytest.raises(
        HydranetError, match=r"row 2: scan 's1' not found in .* \(s1.nii.gz and s1.nii both exist"
    ):
        _labels(tmp_path, "scan,label\ns1,3\n")


def test_labels_custom_columns(tmp_path):
    labels = _labels(tmp_path, "id,epvs\ns2.nii.gz,7\n", scan_column="id", label_column="epvs")
    assert labels.values == {"s2.nii.gz": 7.0}


def test_labels_with_a_missing_scans_folder_say_so_once(tmp_path):
    (tmp_path / "l.csv").write_text("scan,label\na.nii.gz,1\nb.nii.gz,2\n")
    with pytest.raises(HydranetError, match="nowhere: no such scans folder$"):
        read_labels(tmp_path / "l.csv", tmp_path / "nowhere")


def test_an_unreadable_scan_is_a_clear_error_naming_it(tmp_path, monkeypatch):
    import builtins

    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "locked.nii.gz")
    real_open = builtins.open

    def denied(file, *args, **kwargs):  # as for a file without read permission (tests may run as root)
        if str(file).endswith("locked.nii.gz"):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(HydranetError, match="locked.nii.gz: cannot be read \\(Permission denied\\)"):
        read_scan(tmp_path / "locked.nii.gz")


def test_a_masks_folder_holding_links_to_scans_elsewhere_is_still_the_scans_folder(tmp_path):
    from napari_hydranet.io import check_masks_folder

    (tmp_path / "annex").mkdir()
    (tmp_path / "scans").mkdir()
    (tmp_path / "annex" / "MD5E-s1--abc.nii.gz").write_bytes(b"")
    link = tmp_path / "scans" / "a.nii.gz"
    link.symlink_to(tmp_path / "annex" / "MD5E-s1--abc.nii.gz")  # how DataLad stores files
    with pytest.raises(HydranetError, match="the masks folder holds the scans"):
        check_masks_folder(tmp_path / "scans", [link])
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "a.nii.gz").touch()
    check_masks_folder(tmp_path / "masks", [link])
    with pytest.raises(HydranetError, match="no such folder"):
        check_masks_folder(tmp_path / "nowhere", [link])


def test_a_folder_of_hdr_img_pairs_says_to_convert_them(tmp_path):
    nib.save(nib.Nifti1Pair(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "pair.hdr")
    with pytest.raises(HydranetError, match="1 .hdr/.img pairs: convert them to .nii.gz first"):
        find_scans([tmp_path])


def test_tables_are_written_in_utf8_whatever_the_locale(tmp_path):
    """A Windows locale (cp1252) or a C locale would write a scan name such as 'sujet-é' in
    its own encoding, which the labels reader (UTF-8) then refuses, or not write it at all."""
    code = (
        "import sys; from napari_hydranet.io import write_csv, read_labels; "
        "write_csv(sys.argv[1], ['scan', 'label'], [['sujet-\\u00e9-\\u20ac.nii.gz', 3]]); "
        "assert list(read_labels(sys.argv[1]).values) == ['sujet-\\u00e9-\\u20ac.nii.gz']"
    )
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "t.csv")], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "t.csv").read_bytes().decode("utf-8").splitlines()[1] == "sujet-é-€.nii.gz,3"


def test_a_mask_is_found_whichever_unicode_form_its_name_was_stored_in(tmp_path):
    from napari_hydranet.io import find_mask

    nfc, nfd = "sujet-\u00e9", "sujet-e\u0301"  # é as one code point, and as e + accent (macOS)
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / f"{nfd}.nii.gz").touch()
    assert (
        find_mask(tmp_path / "masks", tmp_path / "scans" / f"{nfc}.nii.gz")
        == tmp_path / "masks" / f"{nfd}.nii.gz"
    )
    with pytest.raises(HydranetError, match="no mask named"):
        find_mask(tmp_path / "masks", tmp_path / "scans" / "sujet-e.nii.gz")


def test_masks_are_found_by_name_or_in_a_bids_derivatives_tree(tmp_path):
    from napari_hydranet.io import check_masks_folder, find_mask

    deriv, scans = tmp_path / "derivatives" / "bgmask", tmp_path / "bids"
    masks = [
        "sub-01/anat/sub-01_space-T2w_desc-BG_mask.nii.gz",
        "sub-010/anat/sub-010_desc-BG_mask.nii.gz",  # not sub-01's
        "sub-01/anat/sub-01_T2w.nii.gz",  # a scan, not a mask
        "sub-02/ses-1/anat/sub-02_ses-1_desc-BG_mask.nii.gz",
        "sub-02/ses-2/anat/sub-02_ses-2_desc-BG_mask.nii",
        "sub-03/anat/sub-03_desc-BG_mask.nii.gz",
        "sub-03/anat/sub-03_desc-WM_mask.nii.gz",
        "sub-04_desc-BG_mask.nii.gz",  # side by side in the folder
        "patient7.nii.gz",  # named like its scan
    ]
    for name in masks:
        (deriv / name).parent.mkdir(parents=True, exist_ok=True)
        (deriv / name).touch()
    found = {
        scan: find_mask(deriv, scans / scan)
        for scan in ("sub-01_T2w.nii.gz", "sub-02_ses-2_T2w.nii.gz", "sub-04_FLAIR.nii", "patient7.nii.gz")
    }
    assert found == {
        "sub-01_T2w.nii.gz": deriv / masks[0],
        "sub-02_ses-2_T2w.nii.gz": deriv / masks[4],
        "sub-04_FLAIR.nii": deriv / masks[7],
        "patient7.nii.gz": deriv / masks[8],
    }
    with pytest.raises(HydranetError, match=r"sub-03_T2w.nii.gz: 2 masks in .* fit it \(sub-03_desc-BG_mask"):
        find_mask(deriv, scans / "sub-03_T2w.nii.gz")
    with pytest.raises(HydranetError, match="sub-05_T2w.nii.gz: no mask named sub-05_T2w.nii"):
        find_mask(deriv, scans / "sub-05_T2w.nii.gz")
    check_masks_folder(deriv, [scans / "sub-05_T2w.nii.gz", scans / "sub-01_T2w.nii.gz"])  # one is enough
    # a preprocessed scan's (desc-preproc) brain mask (desc-brain), as fMRIPrep names them
    (deriv / "sub-06" / "anat").mkdir(parents=True)
    (deriv / "sub-06" / "anat" / "sub-06_desc-brain_mask.nii.gz").touch()
    assert find_mask(deriv, scans / "sub-06_desc-preproc_T1w.nii.gz").name == "sub-06_desc-brain_mask.nii.gz"
    # derivatives/ given for derivatives/bgmask/: the folder inside is suggested
    with pytest.raises(HydranetError, match=r"did you mean .*derivatives/bgmask\? name each mask"):
        check_masks_folder(tmp_path / "derivatives", [scans / "sub-01_T2w.nii.gz"])
    (tmp_path / "other").mkdir()  # the wrong folder: said once, before any work
    with pytest.raises(HydranetError, match=r"other: no ROI mask for any of the 2 scans \(sub-01_T2w"):
        check_masks_folder(tmp_path / "other", [scans / "sub-01_T2w.nii.gz", scans / "sub-02_T2w.nii.gz"])


def test_a_header_claiming_more_voxels_than_its_file_holds_is_refused_before_reading(tmp_path):
    """A damaged header of a few KB claimed 1300³ voxels: 8.8 GB were set aside for it."""
    for shape, message in (
        ((1300, 1300, 1300), r"claims 1300×1300×1300 voxels \(8.79 GB as float32\), more than any scan"),
        ((64, 64, 64), r"claims 64×64×64 voxels \(1,048,928 bytes\) but the file holds 1,352 bytes"),
    ):
        header = nib.Nifti1Header()
        header.set_data_shape(shape)
        header.set_data_dtype(np.float32)
        header["vox_offset"] = 352
        (tmp_path / "claim.nii").write_bytes(header.binaryblock + bytes(4 + 1000))
        with pytest.raises(HydranetError, match=message):
            read_scan(tmp_path / "claim.nii")


def test_labels_tables_as_spreadsheets_and_bids_save_them(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("sub-01_T2w.nii.gz", "sub-02_T2w.nii.gz", "sub-03_T2w.nii.gz", "sujet-é.nii.gz"):
        (scans / name).touch()
    # BIDS's participants.tsv: tabs, n/a, a participant_id for the file sub-01_T2w.nii.gz
    tsv = tmp_path / "participants.tsv"
    tsv.write_text("scan\tage\tlabel\nsub-01_T2w\t71\t4\nsub-02_T2w\t66\tn/a\nsub-03_T2w\t80\tn/a\n")
    found = read_labels(tsv, scans)
    assert found.values == {"sub-01_T2w.nii.gz": 4.0}
    assert found.notes[0] == (
        "2 rows have no label and are left out: "
        "row 3: 'sub-02_T2w.nii.gz' (n/a); row 4: 'sub-03_T2w.nii.gz' (n/a)"
    )
    tsv.write_text("participant_id\tlabel\nsub-01\t4\n")  # the CLI's default scan column: told where
    with pytest.raises(
        HydranetError, match=r"no column 'scan' .* \(a participants.tsv names its scans in part"
    ):
        read_labels(tsv, scans)
    # a participant_id (sub-01) names the one scan named after it; a subject of two scans is asked
    (scans / "sub-03_T1w.nii.gz").touch()
    (scans / "sub-04" / "anat").mkdir(parents=True)  # a BIDS tree given as the scans folder
    (scans / "sub-04" / "anat" / "sub-04_T2w.nii.gz").touch()
    tsv.write_text("participant_id\tlabel\nsub-01\t4\nsub-02\t5\nsub-04\t6\n")
    found = read_labels(tsv, scans, "participant_id")
    assert found.values == {
        "sub-01_T2w.nii.gz": 4.0,
        "sub-02_T2w.nii.gz": 5.0,
        "sub-04/anat/sub-04_T2w.nii.gz": 6.0,
    }
    assert found.notes == [
        "3 scans named by their BIDS subject (sub-01), each matched to the one scan named after it "
        "(sub-01_T2w.nii.gz)"
    ]
    tsv.write_text("participant_id\tlabel\nsub-03\t4\n")
    with pytest.raises(HydranetError) as refused:
        read_labels(tsv, scans, "participant_id")
    assert refused.value.problems[0] == (
        f"row 2: scan 'sub-03' not found in {scans} "
        "(did you mean sub-03_T1w.nii.gz; sub-03_T2w.nii.gz? name each scan's file in full)"
    )
    tsv.write_text("scan\tlabel\npatient-1\t4\npatient-2\t5\n")  # names of another kind
    with pytest.raises(HydranetError) as refused:
        read_labels(tsv, scans)
    assert refused.value.problems[0].startswith(f"none of its 2 scans is in {scans}, which holds sub-01_T2w")
    # a table naming a .nii.gz that is stored as .nii (or the other way) finds it
    (tmp_path / "other.csv").write_text("scan,label\nsujet-é.nii,2\n")
    assert read_labels(tmp_path / "other.csv", scans).values == {"sujet-é.nii.gz": 2.0}
    # Excel's "CSV" on Windows (cp1252) and its "Unicode text" (UTF-16): read, the first with a note
    for encoding, text in (("cp1252", "scan,label\nsujet-é,2\n"), ("utf-16", "scan\tlabel\nsujet-é\t2\n")):
        table = tmp_path / ("t.csv" if encoding == "cp1252" else "t.tsv")
        table.write_bytes(text.encode(encoding))
        found = read_labels(table, scans)
        assert found.values == {"sujet-é.nii.gz": 2.0}
        assert any("not UTF-8: read as Windows-1252" in n for n in found.notes) == (encoding == "cp1252")
    # a label too large for the float32 the training holds labels in
    (tmp_path / "huge.csv").write_text("scan,label\nsub-01_T2w,1e308\n")
    with pytest.raises(HydranetError, match="label 1e308 of 'sub-01_T2w.nii.gz' is beyond ±3.4e38"):
        read_labels(tmp_path / "huge.csv", scans)
    # a TSV quotes nothing: a field starting with " does not swallow the rows after it
    tsv.write_text('scan\tnote\tlabel\nsub-01_T2w\t"left-handed\t4\nsub-02_T2w\tok\t5\n')
    assert read_labels(tsv, scans).values == {"sub-01_T2w.nii.gz": 4.0, "sub-02_T2w.nii.gz": 5.0}
    (tmp_path / "cut.csv").write_bytes("scan,label\n".encode("utf-16") + b"\n")  # a stray byte
    with pytest.raises(HydranetError, match="cut.csv: not a readable UTF-16 table"):
        read_labels(tmp_path / "cut.csv", scans)


def test_a_full_disk_names_the_output_it_could_not_write(tmp_path, monkeypatch):
    """ENOSPC carries no file name: the message said only "No space left on device"."""
    from napari_hydranet import io as hio

    def full(*_args, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hio, "_flush", full)
    for write in (
        lambda p: hio.write_csv(p, ["a"], [[1]]),
        lambda p: hio.atomic_write_bytes(p, b"x"),
        lambda p: hio.write_volume(p.with_suffix(".nii"), np.zeros((2, 2, 2)), np.eye(4)),
    ):
        with pytest.raises(OSError) as failed:
            write(tmp_path / "out.csv")
        assert failed.value.filename.startswith(str(tmp_path / "out")) and failed.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary file left behind


def test_files_written_together_are_all_old_or_all_new_when_one_write_fails(tmp_path, monkeypatch):
    """A model's weights were renamed into place before its config was written: a full disk
    then left new weights beside the old config."""
    from napari_hydranet import io as hio

    a, b = tmp_path / "weights", tmp_path / "config"
    hio.atomic_write_files({a: b"old weights", b: b"old config"})
    flushed = []

    def full_on_second(tmp):
        flushed.append(tmp)
        if len(flushed) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hio, "_flush", full_on_second)
    with pytest.raises(OSError) as failed:
        hio.atomic_write_files({a: b"new weights", b: b"new config"})
    assert failed.value.filename == str(b)
    assert (a.read_bytes(), b.read_bytes()) == (b"old weights", b"old config")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "weights"]


def test_a_bids_root_given_as_a_folder_of_scans_says_how_to_give_its_scans(tmp_path):
    (tmp_path / "bids" / "sub-01" / "anat").mkdir(parents=True)
    (tmp_path / "bids" / "sub-01" / "anat" / "sub-01_T2w.nii.gz").touch()
    (tmp_path / "bids" / "participants.tsv").touch()
    with pytest.raises(
        HydranetError, match=r"a BIDS dataset: give its scans, e.g. .*bids/sub-\*/anat/\*_T2w"
    ):
        find_scans([tmp_path / "bids"])
    (tmp_path / "ses" / "sub-00").mkdir(parents=True)  # an empty subject listed first says nothing
    (tmp_path / "ses" / "sub-01" / "ses-1" / "anat").mkdir(parents=True)  # with sessions: their level too
    with pytest.raises(HydranetError, match=r"e.g. .*ses/sub-\*/ses-\*/anat/\*_T2w.nii.gz\)"):
        find_scans([tmp_path / "ses"])


def test_labels_match_scan_names_by_name_stem_or_bids_subject():
    from napari_hydranet.io import match_labels

    names = ["a.nii.gz", "b.nii", "sub-01_T2w.nii.gz", "sub-02_T1w.nii.gz", "sub-02_T2w.nii.gz"]
    labels = {"a.nii.gz": 1.0, "b.nii.gz": 2.0, "sub-01": 3.0, "sub-02": 4.0}
    # sub-02 has two scans: which one its rating is for is not known, so neither gets it
    assert match_labels(names, labels) == {"a.nii.gz": 1.0, "b.nii": 2.0, "sub-01_T2w.nii.gz": 3.0}


def test_what_nibabel_says_of_a_header_is_a_note_not_terminal_output(tmp_path, capfd):
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "z.nii")
    raw = bytearray((tmp_path / "z.nii").read_bytes())
    header = nib.Nifti1Header.from_fileobj(open(tmp_path / "z.nii", "rb"))
    header["pixdim"][1] = 0  # a voxel edge of 0: nibabel logs that it takes 1
    raw[:348] = header.binaryblock
    (tmp_path / "z.nii").write_bytes(bytes(raw))
    scan = read_scan(tmp_path / "z.nii")
    assert scan.notes == [
        f"{tmp_path.name}/z.nii: pixdim[1,2,3] should be non-zero; setting 0 dims to 1 "
        "(nibabel, reading its header)"
    ]
    assert capfd.readouterr().err == ""
    read_scan(tmp_path / "z.nii")  # and again: nibabel's own handler was put back each time
    assert logging.getLogger("nibabel.global").handlers and capfd.readouterr().err == ""


def test_a_scaling_beyond_32_bit_floats_is_told_with_its_cause(tmp_path):
    """numpy's "overflow encountered in cast" reached the terminal, and the note said only that
    999 voxels were NaN or infinite, though the file stores whole numbers."""
    img = nib.Nifti1Image(np.arange(1000, dtype=np.int16).reshape(10, 10, 10) * 30, np.eye(4))
    img.header.set_slope_inter(1e38, 0)
    nib.save(img, tmp_path / "scaled.nii")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scan = read_scan(tmp_path / "scaled.nii")
    assert scan.notes == [
        f"{tmp_path.name}/scaled.nii: 999 NaN/inf voxels set to 0 (the header's scaling, scl_slope "
        "1e+38 and scl_inter 0, takes them beyond 32-bit floats)"
    ]


@pytest.mark.parametrize(
    ("scan", "mask", "fits"),
    [
        ("sub-1", "sub-1", True),
        ("sub-01_ses-1_T2w", "sub-01_ses-1_desc-bg_mask", True),
        ("sub-01_desc-preproc_T2w", "sub-01_mask", True),
        ("sub-01_ses-1_T2w", "sub-01_ses-2_mask", False),
        ("sub-01_T2w", "sub-010_mask", False),
        ("subA", "subB", False),
        ("T2", "T2_mask", False),  # not a BIDS name: only the same name pairs
    ],
)
def test_a_mask_fits_the_scan_named_like_it_or_holding_its_bids_entities(scan, mask, fits):
    from napari_hydranet.io import mask_fits

    assert mask_fits(scan, mask) is fits


def test_a_header_whose_qform_and_sform_disagree_is_noted(tmp_path):
    """The sform is used, as nibabel does; a qform 8° and 6 mm away went unsaid, though tools
    that prefer the qform put the detections 3 to 10 mm elsewhere."""
    affine = np.diag([1.0, 1.0, 1.2, 1.0])
    img = nib.Nifti1Image(np.ones((20, 20, 10), np.float32), affine)
    img.set_sform(affine, code=1)
    moved = affine.copy()
    moved[:3, 3] += [6.0, 0, 0]
    img.set_qform(moved, code=1)
    nib.save(img, tmp_path / "two.nii.gz")
    (note,) = read_scan(tmp_path / "two.nii.gz").notes
    assert (
        "the header's qform and sform differ (by up to 6.0 mm at the volume's corners); the sform is used"
        in note
    )
    img.set_qform(affine, code=1)
    nib.save(img, tmp_path / "one.nii.gz")
    assert read_scan(tmp_path / "one.nii.gz").notes == []


def test_an_invalid_qform_beside_a_valid_sform_is_read_with_a_note(tmp_path):
    """nibabel refuses a quaternion out of range: the new qform/sform check raised its
    ValueError, where the scan (its sform valid) had been read."""
    img = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4))
    img.set_sform(np.eye(4), code=1)
    img.set_qform(np.eye(4), code=1)
    for field in ("quatern_b", "quatern_c", "quatern_d"):
        img.header[field] = 0.8
    nib.save(img, tmp_path / "q.nii.gz")
    assert read_scan(tmp_path / "q.nii.gz").notes == [
        f"{tmp_path.name}/q.nii.gz: the header's qform is invalid; the sform is used"
    ]
