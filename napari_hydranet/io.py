"""Reading scans and labels, writing volumes and tables atomically.

Geometry convention: arrays keep nibabel's voxel order ``(i, j, k)`` as stored on disk,
never reoriented, and travel with their 4×4 ``affine`` mapping ``(i, j, k, 1)`` to world
``(x, y, z, 1)`` in mm (RAS+, as NIfTI defines it). Every function that moves voxels
returns the affine of its output, so any result can be written back on the source grid.
The napari layer code (``_layers.py``) is the only place that transposes for display.
"""

from __future__ import annotations

import bisect
import csv
import errno
import functools
import io
import logging
import math
import os
import re
import tempfile
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import HydranetError
from .text import first_of, plural

NIFTI_SUFFIXES = (".nii.gz", ".nii")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # labels are float32 tensors in training
MAX_SCAN_VOXELS = 2**29  # 2 GB as float32; a 0.3 mm whole-head scan has about 2.5e8
# Excel's "CSV" in locales whose decimal mark is a comma (German, French, ...) separates with
# semicolons; a header without commas but with one of these gives the table's separator
SEPARATORS = {";": "semicolons", "\t": "tabs"}


@dataclass
class Scan:
    """A 3D volume with its geometry.

    Attributes
    ----------
    array : float32 array, shape (I, J, K), in the file's voxel order.
    affine : (4, 4) voxel-to-world (mm) matrix of the file.
    path : the source file, or None for data made in memory.
    notes : what reading changed, for the user (NaN or inf voxels set to 0).
    label : what to call data without a file in messages (e.g. a napari layer).
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    notes: list[str] = field(default_factory=list)
    label: str | None = None

    @property
    def where(self) -> str:
        """What messages call it: its file's path, else its name."""
        return str(self.path) if self.path is not None else self.name

    @property
    def name(self) -> str:
        return scan_stem(self.path) if self.path is not None else self.label or "scan"

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def ras_orientation(self) -> np.ndarray:
        """nibabel orientation (3, 2): the RAS axis and direction of each file axis."""
        return nib.orientations.io_orientation(self.affine)


def scan_stem(path: str | os.PathLike) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def gzip_misnamed(path: str | os.PathLike) -> bool:
    """Whether a file holds gzip data under a name without .gz (nibabel would not unpack it);
    OSError when it cannot be opened."""
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b" and not str(path).lower().endswith(".gz")


def _plain_nifti(path: Path) -> bool:
    """Whether a file starts with an uncompressed NIfTI-1 or NIfTI-2 header (either byte order)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return (
        len(head) == 4 and {int.from_bytes(head, "little"), int.from_bytes(head, "big")} & {348, 540} != set()
    )


def read_scan(path: str | os.PathLike) -> Scan:
    """Read a NIfTI-1/2 file into a float32 ``Scan``.

    Scaling (scl_slope/inter) is applied; a 4D file holding one volume is squeezed; NaN and
    inf become 0 with a warning. Raises ``HydranetError`` naming the file for anything that
    is not a readable 3D volume.
    """
    path = Path(path)
    if not path.is_file():
        raise HydranetError(f"{path}: no such file")
    try:
        misnamed = gzip_misnamed(path)
    except OSError as exc:  # unreadable (permissions): this scan, not the whole run
        raise HydranetError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if misnamed:
        raise HydranetError(f"{path}: gzip-compressed but named without .gz; rename it {path.name}.gz")
    if path.name.lower().endswith(".gz") and _plain_nifti(path):
        raise HydranetError(f"{path}: not gzip-compressed though named .gz; rename it {path.name[:-3]}")
    said: list[str] = []  # what nibabel logs of the header
    try:
        with _nibabel_messages(said):
            img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise HydranetError(f"{path}: not a readable NIfTI file ({exc})") from None
    if isinstance(img, nib.Cifti2Image):
        raise HydranetError(f"{path}: a CIFTI-2 file (surface and greyordinate data), not a 3D volume")
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise HydranetError(f"{path}: not a NIfTI image ({type(img).__name__})")
    shape = img.shape
    if len(shape) > 3:
        extra = [s for s in shape[3:] if s != 1]
        if extra:
            raise HydranetError(
                f"{path}: a {len(shape)}D volume of shape {tuple(shape)}; expected one 3D "
                "volume (split the series first, e.g. with fslsplit)"
            )
    if len(shape) < 3:
        raise HydranetError(f"{path}: a {len(shape)}D image of shape {tuple(shape)}; expected 3D")
    if 0 in shape[:3]:
        raise HydranetError(f"{path}: an empty volume of shape {tuple(shape)}: no voxels to count")
    dtype = img.get_data_dtype()
    if dtype.kind == "c" or dtype.names:
        raise HydranetError(
            f"{path}: voxels of type {dtype} (complex or RGB); expected one real intensity each"
        )
    _check_claimed_size(path, img, shape, dtype)
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is told below, with its cause
            data = np.asarray(img.dataobj, dtype=np.float32)
    except MemoryError:
        raise HydranetError(f"{path}: not enough memory to read its {_voxels(shape)}") from None
    except Exception as exc:
        raise HydranetError(f"{path}: the voxel data cannot be read ({exc})") from None
    data = data.reshape(shape[:3])
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise HydranetError(f"{path}: the header's affine is not a valid voxel-to-world matrix")
    where = f"{path.parent.name}/{path.name}"  # masks share their scan's name
    data, notes = finite(data, where)
    if notes and dtype.kind in "iu":  # whole numbers are finite: the scaling took them out of range
        slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
        notes[0] += (
            f" (the header's scaling, scl_slope {slope:g} and scl_inter {inter:g}, takes them "
            "beyond 32-bit floats)"
        )
    notes += [f"{where}: {message} (nibabel, reading its header)" for message in dict.fromkeys(said)]
    notes += _qform_sform_note(img, where, shape[:3])
    if img.header["qform_code"] == 0 and img.header["sform_code"] == 0:
        axes = ", ".join(nib.aff2axcodes(affine))
        notes.append(
            f"{where}: the header gives no orientation (qform and sform codes 0): the voxel axes are "
            f"taken as {axes}, as nibabel and FSL assume, so left and right may be swapped and "
            "positions are not scanner mm"
        )
    return Scan(np.ascontiguousarray(data), affine, path, notes)


def _qform_sform_note(img, where: str, shape) -> list[str]:
    """A note when the header's two affines (both set) put the volume in different places:
    the sform is used, as by nibabel and FSL; software that prefers the qform (ITK-based
    tools, for one) would place the scan, and the detections' mm, elsewhere."""
    header = img.header
    if header["qform_code"] == 0 or header["sform_code"] == 0:
        return []
    corners = corner_voxels(shape)
    try:
        qform = header.get_qform()
    except ValueError:  # an invalid quaternion (nibabel refuses it); the sform is used anyway
        return [f"{where}: the header's qform is invalid; the sform is used"]
    apart = np.abs(corners @ (qform - header.get_sform()).T)[:, :3].max()
    if apart < 0.5:  # mm: float32 storage and quaternion rounding differ far less
        return []
    return [
        f"{where}: the header's qform and sform differ (by up to {apart:.1f} mm at the volume's "
        "corners); the sform is used, as by nibabel and FSL, so tools that take the qform place "
        "the scan and its detections elsewhere"
    ]


def corner_voxels(shape) -> np.ndarray:
    """The 8 corner voxels of a volume of ``shape``, as homogeneous (i, j, k, 1) rows: where two
    affines of it part most."""
    ends = [(0, n - 1) for n in shape[:3]]
    return np.array([[i, j, k, 1] for i in ends[0] for j in ends[1] for k in ends[2]])


def _voxels(shape) -> str:
    return f"{'×'.join(map(str, shape[:3]))} voxels"


def _check_claimed_size(path: Path, img, shape, dtype) -> None:
    """Refuse a header whose shape no scan has, or (uncompressed) more data than the file
    holds, before memory is set aside for it: a damaged header of a few bytes asked for GBs."""
    n = math.prod(shape)
    if n > MAX_SCAN_VOXELS:
        raise HydranetError(
            f"{path}: the header claims {_voxels(shape)} ({n * 4 / 1e9:.3g} GB as float32), "
            "more than any scan; is the file damaged?"
        )
    if path.name.lower().endswith(".nii"):  # uncompressed: its size is known
        need = int(getattr(img.dataobj, "offset", 0)) + n * dtype.itemsize
        held = path.stat().st_size
        if held < need:
            raise HydranetError(
                f"{path}: the header claims {_voxels(shape)} ({need:,} bytes) but the file holds "
                f"{held:,} bytes: truncated or damaged"
            )


_NIBABEL_LOG = logging.getLogger("nibabel.global")
_NIBABEL_LOCK = threading.Lock()  # the Cohort dock reads in a thread while napari may open a file


class _Collect(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@contextmanager
def _nibabel_messages(into: list[str]):
    """Collect what nibabel logs while reading a header into ``into`` instead of the terminal
    ("pixdim[1,2,3] should be non-zero; setting 0 dims to 1"): it travels with the scan as a note."""
    with _NIBABEL_LOCK:
        handlers, propagate = _NIBABEL_LOG.handlers, _NIBABEL_LOG.propagate
        _NIBABEL_LOG.handlers, _NIBABEL_LOG.propagate = [_Collect(into)], False
        try:
            yield
        finally:
            _NIBABEL_LOG.handlers, _NIBABEL_LOG.propagate = handlers, propagate


def finite(data: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """``data`` with NaN and inf set to 0, and a note saying how many were."""
    bad = ~np.isfinite(data)
    if not bad.any():
        return data, []
    return np.where(bad, np.float32(0), data), [f"{where}: {int(bad.sum())} NaN/inf voxels set to 0"]


HEATMAP_SUFFIX = "_heatmap"  # heatmaps are written as <scan>_heatmap.nii.gz


def is_heatmap(path: str | os.PathLike) -> bool:
    """A heatmap this package wrote (``<scan>_heatmap.nii[.gz]``), not a scan."""
    return scan_stem(path).endswith(HEATMAP_SUFFIX)


def scan_place(path: str | os.PathLike) -> str:
    """Which scan a path names, by its place: ``sub-1.nii.gz`` and ``/data/scans/sub-1.nii.gz``
    are one scan; links are not followed (DataLad and git-annex link scans of equal content
    to one file, and they stay two scans)."""
    return os.path.normpath(os.path.abspath(path))


def _is_scan_name(path: Path) -> bool:
    """A folder's NIfTI file that may be a scan: not a heatmap of ours, not hidden (macOS ``._``)."""
    return is_nifti(path) and not is_heatmap(path) and not path.name.startswith(".")


def _bids_hint(subjects: list[Path]) -> str:
    """How to give the scans of the BIDS dataset whose subjects' folders are ``subjects``
    (none: ""), with its sessions' level where any subject has one."""
    if not subjects:
        return ""

    def sessions(folder: Path) -> bool:
        try:
            return any(q.is_dir() and q.name.startswith("ses-") for q in folder.iterdir())
        except OSError:  # an unreadable subject tells nothing
            return False

    levels = ["sub-*", *(["ses-*"] if any(sessions(q) for q in subjects) else []), "anat", "*_T2w.nii.gz"]
    root = subjects[0].parent
    return f"; {root} looks like a BIDS dataset: give its scans, e.g. {root.joinpath(*levels)}"


def find_scans(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand a mix of NIfTI files and folders (not recursive) into a list of files.

    Folders give their NIfTI files sorted by name, except the heatmaps this package writes
    and hidden files (such as macOS ``._`` sidecars); a file reached twice is listed once.
    """
    found: list[Path] = []
    skipped = pairs = 0
    bids: list[Path] = []  # the subjects' folders of a BIDS dataset's root given as a folder of scans
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            entries = list(p.iterdir())
            bids = bids or [q for q in entries if q.is_dir() and q.name.startswith("sub-")]
            files = sorted(q for q in entries if q.is_file() and is_nifti(q))
            kept = [q for q in files if _is_scan_name(q)]
            skipped += len(files) - len(kept)
            pairs += sum(q.suffix.lower() == ".hdr" for q in entries)
            found.extend(kept)
        elif p.is_file():
            if p.suffix.lower() in (".hdr", ".img"):
                raise HydranetError(
                    f"{p}: a .hdr/.img pair (NIfTI pair or Analyze); convert it to a single .nii.gz "
                    "file first (e.g. fslchfiletype NIFTI_GZ, or nibabel's nib.save to a .nii.gz name)"
                )
            if not is_nifti(p):
                raise HydranetError(f"{p}: not a NIfTI file (.nii or .nii.gz)")
            found.append(p)
        else:
            raise HydranetError(f"{p}: no such file or folder")
    if not found:
        also = f"; {skipped} hidden or *{HEATMAP_SUFFIX} files are not scans" if skipped else ""
        also += f"; {pairs} .hdr/.img pairs: convert them to .nii.gz first" if pairs else ""
        also += _bids_hint(bids)
        raise HydranetError(
            f"no NIfTI files (.nii, .nii.gz) found in the inputs (folders are not searched recursively{also})"
        )
    unique: dict[str, Path] = {}
    for q in found:  # a path reached twice, not two links to one file (DataLad stores those)
        unique.setdefault(os.path.abspath(q), q)
    return list(unique.values())


def _check_parents(path: Path) -> None:
    """Refuse a path whose nearest existing ancestor is a file, not a folder, or one this
    process cannot write in (a read-only disk, no permission): told before the work, not after."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise HydranetError(f"{path}: {parent} is a file, not a folder")
            _check_writable(path, parent)
            return


def _check_writable(path: Path, folder: Path) -> None:
    if not _can_write(folder):
        raise HydranetError(f"{path}: cannot write in {folder} (read-only, or no permission)")


def _can_write(folder: Path) -> bool:
    """Whether a file can be made in ``folder``: tried, since permission bits do not tell on
    Windows, on network file systems, or for root on a read-only disk."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_table_output(
    path: str | os.PathLike,
    what: str,
    inputs: Iterable[Path] = (),
    *headers: Sequence[str],
) -> Path:
    """Refuse an output table path that is a folder, lies under a file or a folder that cannot
    be written, names an input scan or is named like a NIfTI scan, or (with ``headers``) is a
    file other than a table with one of these headers, such as the user's labels; checked
    before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise HydranetError(f"{path}: is a folder; give the {what} a file name (.csv)")
    _check_parents(path)
    if any(path.resolve() == Path(q).resolve() for q in inputs):
        raise HydranetError(f"{path}: refusing to overwrite an input scan with the {what}")
    if is_nifti(path) or path.suffix.lower() in (".tsv", ".tab"):
        raise HydranetError(f"{path}: the {what} is a comma-separated table; name it .csv")
    if (
        headers
        and path.is_file()
        and path.stat().st_size
        and _first_line(path) not in {",".join(h) for h in headers}
    ):
        raise HydranetError(
            f"{path}: exists and is not a {what} written by hydranet; choose another file, or "
            "delete it (only a previous output is overwritten)"
        )
    return path


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            return fh.readline().strip()
    except OSError:
        return ""


def check_folder_output(path: str | os.PathLike, what: str) -> Path:
    """Refuse an output folder path that is an existing file or lies under one, or that cannot
    be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HydranetError(f"{path}: is a file; the {what} must be a folder")
    if path.is_dir():
        _check_writable(path, path)
    else:
        _check_parents(path)
    return path


def held_files(folder: str | os.PathLike) -> list[str]:
    """Sorted names of what a folder holds, hidden entries (``.DS_Store``, our markers) aside;
    none when it does not exist."""
    folder = Path(folder)
    return sorted(e.name for e in folder.iterdir() if not e.name.startswith(".")) if folder.is_dir() else []


def _name_forms(name: str) -> list[str]:
    """``name`` as typed and in both Unicode forms (é as one code point; e + accent, as a Mac
    stores it), each once."""
    return list(dict.fromkeys([name, *(unicodedata.normalize(f, name) for f in ("NFC", "NFD"))]))


def bids_subject(stem: str) -> str | None:
    """The subject (``sub-01``) of a scan named as BIDS names them (``sub-01_…_T2w``), or None."""
    subject, sep, _ = stem.partition("_")
    return subject if sep and subject.startswith("sub-") else None


def _same_form(name: str) -> str:
    """A name in one Unicode form (é typed, or e + accent from a Mac, compare equal)."""
    return unicodedata.normalize("NFC", name)


def _label_keys(names: list[str], labels: dict[str, float]) -> dict[str, str]:
    """The row of ``labels`` (its key) that each scan name takes its label from, for the
    names that have one (see ``match_labels``)."""
    by_stem = {_same_form(scan_stem(k)): k for k in labels}
    found = {n: n if n in labels else by_stem.get(_same_form(scan_stem(n))) for n in names}
    scans_of: dict[str, list[str]] = {}
    for n in names:
        subject = bids_subject(_same_form(scan_stem(n)))
        if subject:
            scans_of.setdefault(subject, []).append(n)
    for subject, scans in scans_of.items():
        if len(scans) == 1 and found[scans[0]] is None:
            found[scans[0]] = by_stem.get(subject)
    return {n: k for n, k in found.items() if k is not None}


def match_labels(names: Iterable[str], labels: dict[str, float]) -> dict[str, float]:
    """The label of each scan name that has one: by its name, else by its name without
    .nii/.nii.gz (tables may differ in suffixes), else by its BIDS subject when it is that
    subject's only scan (a participants.tsv's ``sub-01`` for ``sub-01_T2w.nii.gz``)."""
    return {n: labels[k] for n, k in _label_keys(list(names), labels).items()}


def unmatched_labels(names: Iterable[str], labels: dict[str, float]) -> list[str]:
    """The rows of ``labels`` that none of the scan ``names`` takes, as ``match_labels``
    matches them."""
    used = set(_label_keys(list(names), labels).values())
    return [k for k in labels if k not in used]


def check_masks_folder(masks_dir: str | os.PathLike | None, scan_paths: Sequence[Path]) -> None:
    """Refuse a masks folder that is missing, or that holds the scans themselves (each scan
    would be its own ROI mask)."""
    if masks_dir is None:
        return
    folder = Path(masks_dir)
    if not folder.is_dir():
        raise HydranetError(f"{folder}: no such folder (of ROI masks)")
    # a scan's folder is where its name lies, not where a link (DataLad, git-annex) points
    parents = {Path(p).absolute().parent for p in scan_paths}
    if folder.resolve() in {parent.resolve() for parent in parents}:
        raise HydranetError(
            f"{folder}: the masks folder holds the scans; each would be its own ROI mask. "
            "Give the folder of ROI masks, named like the scans"
        )
    reasons = []
    for path in scan_paths:
        try:
            find_mask(folder, Path(path))
            return
        except HydranetError as exc:
            reasons.append(str(exc))
    several = next((r for r in reasons if " fit it (" in r), None)
    if several:  # masks there, of two kinds
        raise HydranetError(several)
    if reasons:  # not one scan has a mask: the wrong folder, or masks named otherwise
        scans = "its scan" if len(reasons) == 1 else f"any of the {len(reasons)} scans"
        inner = _inner_masks_folder(folder, Path(scan_paths[0]))
        raise HydranetError(
            f"{folder}: no ROI mask for {scans} ({reasons[0]}); "
            + (f"did you mean {inner}? " if inner else "")
            + "name each mask like its scan (sub-01_T2w.nii.gz), or keep BIDS derivatives "
            "(sub-01/anat/sub-01_desc-BG_mask.nii.gz)"
        )


def find_mask(masks_dir: str | os.PathLike | None, scan_path: Path) -> Path | None:
    """The mask in ``masks_dir`` with the scan's name (any NIfTI suffix, the name's accents
    in either Unicode form, as macOS and Linux may store them), or None."""
    if masks_dir is None:
        return None
    stem = scan_stem(scan_path)
    for form in _name_forms(stem):
        for suffix in NIFTI_SUFFIXES:
            cand = Path(masks_dir) / f"{form}{suffix}"
            if cand.is_file():
                return cand
    found = _bids_masks(Path(masks_dir), stem)
    if len(found) == 1:
        return found[0]
    if found:
        raise HydranetError(
            f"{scan_path.name}: {len(found)} masks in {masks_dir} fit it "
            f"({first_of([f.name for f in found], 3)}); give a folder with one kind of mask"
        )
    raise HydranetError(f"{scan_path.name}: no mask named {stem}.nii[.gz] in {masks_dir}")


def _inner_masks_folder(folder: Path, scan: Path) -> Path | None:
    """A folder inside ``folder`` holding ``scan``'s mask (``derivatives/`` given for
    ``derivatives/bgmask/``), or None."""
    try:
        inside = sorted(f for f in folder.iterdir() if f.is_dir())[:50]
    except OSError:
        return None
    for candidate in inside:
        try:
            find_mask(candidate, scan)
            return candidate
        except HydranetError:
            continue
    return None


def mask_fits(scan_name: str, mask_name: str) -> bool:
    """Whether the mask file named ``mask_name`` (a stem) is that of the scan named
    ``scan_name``: the same name, or a BIDS ``…_mask`` whose entities hold the scan's
    (``sub-01_ses-1_desc-bg_mask`` for ``sub-01_ses-1_T2w``), as ``find_mask`` takes them."""
    if mask_name == scan_name:
        return True
    wanted = _mask_entities(scan_name)
    *theirs, suffix = mask_name.split("_")
    return wanted is not None and suffix == "mask" and wanted <= set(theirs)


def _mask_entities(stem: str) -> set[str] | None:
    """The entities a BIDS mask of the scan named ``stem`` holds (``sub-01_ses-1_desc-x_T2w``:
    sub-01, ses-1; a preprocessed scan's ``desc-`` is not its mask's), or None for a name
    that is not BIDS."""
    *entities, _suffix = stem.split("_")
    if not entities or not entities[0].startswith("sub-") or not all("-" in e for e in entities):
        return None
    return {e for e in entities if not e.startswith("desc-")}


def _bids_masks(masks_dir: Path, stem: str) -> list[Path]:
    """The masks of a BIDS derivatives folder for a scan named as BIDS names them:
    ``sub-01[_ses-1]/anat/sub-01[_ses-1]_…_mask.nii.gz`` (or the same files side by side)
    whose entities hold every entity of the scan's name (``sub-01_ses-1_T2w``: sub-01, ses-1)."""
    wanted = _mask_entities(stem)
    if wanted is None:
        return []
    subject_id = stem.split("_")[0]
    session = sorted(e for e in wanted if e.startswith("ses-"))
    subject = masks_dir / subject_id
    folders = [masks_dir, subject, subject / "anat"]
    folders += [subject / s / d for s in session for d in ("", "anat")]
    return [
        f
        for folder in dict.fromkeys(folders)
        for theirs, f in _masks_by_subject(str(folder), _mtime(folder)).get(subject_id, ())
        if wanted <= theirs
    ]


def _mtime(folder: Path) -> int:
    try:
        return folder.stat().st_mtime_ns
    except OSError:
        return -1


@functools.lru_cache(maxsize=64)
def _masks_by_subject(folder: str, _mtime_ns: int) -> dict[str, list[tuple[frozenset, Path]]]:
    """A folder's ``…_mask.nii[.gz]`` files by subject (``sub-01``), each with its entities;
    listed once while the folder is unchanged (its mtime is part of the key): a cohort's
    masks are looked up scan by scan."""
    index: dict[str, list[tuple[frozenset, Path]]] = {}
    if _mtime_ns < 0:
        return index
    for f in sorted(Path(folder).iterdir()):
        *theirs, suffix = scan_stem(f).split("_")
        if suffix == "mask" and theirs and is_nifti(f) and f.is_file():
            index.setdefault(theirs[0], []).append((frozenset(theirs), f))
    return index


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it sets it: done once, before any thread starts
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def _atomic_target(path: Path, suffix: str):
    """A temporary file beside ``path`` (same file system, so the rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    return Path(tmp)


def _flush(tmp: Path) -> None:
    """Flush ``tmp`` to disk before it is renamed: after a crash or power cut the file is
    the old one or the new one, never empty."""
    with open(tmp, "rb+") as fh:
        try:
            os.fsync(fh.fileno())
        except OSError as exc:  # some network and FUSE file systems cannot: the rename still is atomic
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
                raise


def _replace(tmp: Path, path: Path) -> None:
    _flush(tmp)
    os.replace(tmp, path)


@contextmanager
def _writing(path: Path):
    """Name ``path`` in a write's OSError that names no file (a full disk's ENOSPC), so that
    the message says which output could not be written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to ``path`` via a temporary file and a rename."""
    atomic_write_files({path: data})


def atomic_write_files(files: dict) -> None:
    """Write several files (path: bytes) that belong together: every temporary file is
    written and flushed first, then all are renamed in order, back to back, so a failure while
    writing (a full disk) leaves every old file as it was."""
    tmps: dict[Path, Path] = {}
    try:
        for path in files:  # inside the try: a failure to make the second removes the first
            tmps[Path(path)] = _atomic_target(Path(path), ".tmp")
        for (path, tmp), data in zip(tmps.items(), files.values()):
            with _writing(path):
                tmp.write_bytes(data)
                _flush(tmp)
        for path, tmp in tmps.items():
            os.replace(tmp, path)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


def _voxel_type(array: np.ndarray) -> type:
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        return np.float32
    lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
    return next(
        t for t in (np.uint8, np.int16, np.int32, np.int64) if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max
    )


def write_volume(
    path: str | os.PathLike,
    array: np.ndarray,
    affine: np.ndarray,
    protect: Sequence[str | os.PathLike] = (),
    like: str | os.PathLike | None = None,
) -> Path:
    """Write a 3D array as NIfTI with ``affine``, atomically; refuse to overwrite ``protect``.
    Integer arrays (masks, labels) keep whole numbers in the smallest type that holds them;
    everything else is float32. With ``like``, a NIfTI file on the same grid (the scan a
    heatmap or mask belongs to), its qform and sform codes and its qform are kept, so the
    output names the same space (scanner, MNI, …) as the scan."""
    path = Path(path)
    if not is_nifti(path):
        raise HydranetError(f"{path}: output must end in .nii or .nii.gz")
    for p in protect:
        if Path(p).exists() and path.exists() and path.resolve() == Path(p).resolve():
            raise HydranetError(f"{path}: refusing to overwrite an input scan")
    img = nib.Nifti1Image(np.asarray(array, dtype=_voxel_type(array)), np.asarray(affine, float))
    img.header.set_xyzt_units("mm")
    _copy_space(img, like)
    suffix = ".nii.gz" if str(path).lower().endswith(".gz") else ".nii"
    tmp = _atomic_target(path, suffix)
    try:
        with _writing(path):
            nib.save(img, str(tmp))
            _replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _copy_space(img: nib.Nifti1Image, like: str | os.PathLike | None) -> None:
    """Give ``img`` the space codes and qform of ``like`` when ``like`` is a NIfTI file whose
    affine is ``img``'s and that has codes; otherwise leave nibabel's (sform "aligned", no
    qform)."""
    if like is None:
        return
    try:
        header = nib.load(str(like)).header
        if not isinstance(header, nib.Nifti1Header):  # NIfTI-2's header is a subclass
            return
        qform, qcode = header.get_qform(coded=True)
        sform, scode = header.get_sform(coded=True)
    except Exception:  # moved, unreadable, not NIfTI: the file is still right without the codes
        return
    if (qform is None and sform is None) or not np.allclose(header.get_best_affine(), img.affine, atol=1e-4):
        return  # no codes to keep (an Analyze-like file), or another grid
    img.set_qform(qform, int(qcode))
    img.set_sform(img.affine if sform is not None else None, int(scode))


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """Write a CSV atomically; floats are written with up to 6 significant digits."""
    path = Path(path)
    tmp = _atomic_target(path, ".csv")
    try:
        with _writing(path):
            with open(tmp, "w", newline="", encoding="utf-8") as fh:  # as read_labels reads it
                w = csv.writer(fh)
                w.writerow(header)
                for row in rows:
                    w.writerow([_fmt(v) for v in row])
            _replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _fmt(v):
    """A table's number: 6 significant digits, every digit before the point kept (a volume of
    1234567.8 mm³ is 1234568, not 1.23457e+06), no minus before a 0."""
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return ""
        v = float(v) + 0.0  # -0.0 → 0.0
        text = f"{v:.6g}"
        return f"{v:.0f}" if "e+" in text else text  # 999999.5 rounds to 1e+06 too
    return v


MISSING = {"na", "n/a", "#n/a", "nan", "none", "null", "-", "?"}  # a spreadsheet's "no value"


@dataclass
class Labels:
    """Global labels per scan, read from a CSV.

    ``values`` maps the scan file (relative to the scans folder) to its label; ``notes``
    lists scans left out (no label) and how the table was read, so callers can report them;
    ``listed`` holds the file of every row found in the scans folder, labelled or not (see
    ``unlisted_scans``); ``read_as``: the notes on how the table was read (its encoding,
    separator and decimal mark).
    """

    values: dict[str, float]
    notes: list[str] = field(default_factory=list)
    listed: frozenset[str] = frozenset()
    read_as: list[str] = field(default_factory=list)


def unlisted_scans(scans_dir: str | os.PathLike, listed: Iterable[str]) -> str | None:
    """A note naming the scans of ``scans_dir`` that no row of the labels tables names
    (``Labels.listed`` of each), or None: a scan left out of a spreadsheet by mistake."""

    def identity(path) -> tuple[int, int]:  # the entry itself, links not followed (git-annex)
        st = os.lstat(path)
        return st.st_dev, st.st_ino

    # by the file system's entry, not by spelling: macOS and Windows find 'Sub-1.nii.gz' for
    # 'sub-1.nii.gz', and an accent stored decomposed, which iterdir() spells otherwise
    listed = list(listed)
    candidates = [*Path(scans_dir).iterdir(), *_bids_places(Path(scans_dir), listed)]
    seen = {identity(p) for p in listed if os.path.lexists(p)}
    names = sorted(
        str(f.relative_to(scans_dir))
        for f in dict.fromkeys(candidates)
        if f.is_file() and _is_scan_name(f) and identity(f) not in seen
    )
    if not names:
        return None
    have, be = ("has", "is") if len(names) == 1 else ("have", "are")
    return (
        f"{plural(len(names), 'scan')} in {scans_dir} {have} no row in the labels and {be} "
        f"not used: {first_of(names, 3)}"
    )


def _bids_places(scans_dir: Path, listed: list[str]) -> list[Path]:
    """The files at the BIDS places of the listed scans under ``scans_dir``: for
    ``sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz`` every ``sub-*/ses-*/anat/*_T2w.nii*``, so a
    session or a subject that no row names is found (derivatives, other folders and other
    modalities are not searched)."""
    base = Path(scan_place(scans_dir))
    patterns = set()
    for path in listed:
        parts = Path(path).parts[len(base.parts) :] if Path(path).is_relative_to(base) else ()
        if len(parts) > 1 and parts[0].startswith("sub-"):
            folders = [re.sub(r"^(sub|ses)-.*", r"\1-*", part) for part in parts[:-1]]
            stem = scan_stem(parts[-1])  # its BIDS suffix (T2w): the other modalities are not scans
            patterns.add("/".join([*folders, f"*_{stem.rsplit('_', 1)[1]}.nii*" if "_" in stem else "*"]))
    return [f for pattern in sorted(patterns) for f in sorted(Path(scans_dir).glob(pattern))]


def _scan_file(scans_dir: Path, scan: str, entries: list[str]) -> tuple[str, str | None]:
    """The file a labels row names, relative to ``scans_dir``, and why it is missing (or None).

    A name without .nii/.nii.gz (or with the other) is taken when exactly one of them exists,
    and a BIDS subject (``sub-01``) names the one scan named after it (``sub-01_T2w.nii.gz``),
    as evaluate and the Cohort dock match names. ``entries``: the folder's names, sorted
    (listed once a table)."""
    forms = _name_forms(scan)
    for form in forms:  # é typed in the CSV, e + accent in a file copied from a Mac
        if (scans_dir / form).is_file():
            return form, None
    bases = [next((f[: -len(x)] for x in NIFTI_SUFFIXES if f.lower().endswith(x)), f) for f in forms]
    named = list(
        dict.fromkeys(
            f"{base}{x}" for base in bases for x in NIFTI_SUFFIXES if (scans_dir / f"{base}{x}").is_file()
        )
    )
    if len(named) == 1:
        return named[0], None
    like = [] if named else _named_after(scans_dir, scan, entries)
    if len(like) == 1 and bids_subject(scan_stem(like[0])) == scan:  # a participant_id
        return like[0], None
    both = f" ({' and '.join(named)} both exist: write the one meant)" if named else ""
    if not both and len(Path(scan).parts) > 1 and not Path(scan).is_absolute():
        both = " (names are relative to the scans folder)"  # 'scans/sub-1' where 'sub-1' was meant
    if not both:  # a name for the file 'sub-01_T2w.nii.gz', or a subject of several scans
        if like:
            both = f" (did you mean {first_of(like, 2)}? name each scan's file in full)"
    return scan, f"scan '{scan}' not found in {scans_dir}{both}"


def _named_after(scans_dir: Path, name: str, entries: list[str]) -> list[str]:
    """Scans of ``scans_dir`` (its sorted ``entries``) named ``<name>_…``, or under its folder
    ``<name>/`` (a BIDS subject's), relative to ``scans_dir``."""
    if "/" in name or name in (".", ".."):
        return []
    start = bisect.bisect_left(entries, f"{name}_")
    beside = []
    for entry in entries[start : start + 20]:
        if not entry.startswith(f"{name}_"):
            break
        if is_nifti(entry) and _is_scan_name(Path(entry)):
            beside.append(entry)
    folder = scans_dir / name
    under = sorted(
        str(f.relative_to(scans_dir)) for f in folder.rglob("*") if is_nifti(f) and _is_scan_name(f)
    )
    return beside + under


def _table_text(path: Path) -> tuple[str, str | None]:
    """A table's text, and a note when it was not UTF-8: Excel on Windows saves "CSV" in
    Windows-1252 and "Unicode text" in UTF-16."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise HydranetError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16"), None
        except UnicodeDecodeError:
            raise HydranetError(f"{path}: not a readable UTF-16 table (a damaged or cut file?)") from None
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        pass
    if b"\0" in raw:
        raise HydranetError(f"{path}: not a text table (it holds binary data)")
    return raw.decode("cp1252", errors="replace"), (
        f'{path.name} is not UTF-8: read as Windows-1252 (Excel\'s "CSV"); if names with accents '
        'do not match, save it as "CSV UTF-8"'
    )


def _table_rows(path: Path) -> tuple[list[list[str]], str, list[str]]:
    """A table's rows, its separator and notes on how it was read: its encoding, and semicolons
    or tabs taken for the separator of a CSV whose header has no comma."""
    text, encoding_note = _table_text(path)
    notes = [encoding_note] if encoding_note else []
    if path.suffix.lower() in (".tsv", ".tab"):  # BIDS's participants.tsv quotes nothing: a
        dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}  # leading " is text
    else:
        first = next((line for line in text.splitlines() if line.strip()), "")
        first = re.sub(r'"[^"]*"', "", first)  # a quoted name may hold a comma: "Volume, mm3"
        found = [c for c in SEPARATORS if c in first] if "," not in first else []
        dialect = {"delimiter": found[0]} if len(found) == 1 else {}
        if dialect:
            notes.append(f"{path.name}: read as separated by {SEPARATORS[found[0]]}")
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), **dialect))
    except csv.Error as exc:
        raise HydranetError(f"{path}: not a readable CSV file ({exc})") from None
    return rows, dialect.get("delimiter", ","), notes


def table_rows(path: Path) -> list[list[str]]:
    """A table's rows, its header's names stripped, read as the labels reader reads it
    (encodings, .tsv); at least the header (empty for an empty file)."""
    rows, _, _ = _table_rows(path)
    return [[h.strip() for h in rows[0]], *rows[1:]] if rows else [[]]


def column_index(header: Sequence[str], name: str) -> int | None:
    """Where the column ``name`` is in ``header``: by its exact name, else by the one name
    equal to it but for case ("Scan" for scan); None if neither."""
    if name in header:
        return list(header).index(name)
    folded = [i for i, h in enumerate(header) if h.casefold() == name.casefold()]
    return folded[0] if len(folded) == 1 else None


def table_header(path: str | os.PathLike) -> list[str]:
    """The column names of a labels table; [] when it cannot be read (read_labels says why)."""
    try:
        return table_rows(Path(path))[0]
    except (HydranetError, OSError):
        return []


# The columns that may name a table's scans, in order of preference: a BIDS participants.tsv
# names them in participant_id.
SCAN_COLUMNS = ("scan", "participant_id", "subject", "file")


def first_column(header: list[str], names: Sequence[str]) -> str | None:
    """The header's own spelling of the first of ``names`` it has (``column_index``), or None."""
    at = next((i for i in (column_index(header, n) for n in names) if i is not None), None)
    return None if at is None else header[at]


def scan_column_of(path: str | os.PathLike) -> str:
    """The first of ``SCAN_COLUMNS`` in the table's header ("scan" when none is)."""
    return first_column(table_header(path), SCAN_COLUMNS) or "scan"


GROUPED = re.compile(r"[-+]?\d{1,3}(\.\d{3})+(,\d+)?")  # 1.234 or 1.234,5: thousands grouped by points


def _point_decimal(raw: str, commas: bool | None) -> tuple[str, str]:
    """A label as ``float`` reads it ("" where it must not be read), and what to say if it is
    no number. ``commas`` is None where commas separate the fields (a comma in a quoted label
    is no decimal mark), True where the table writes decimals with a comma (so points group
    thousands: 1.234,5) and False where it writes them with a point."""
    if commas is None:
        if "," in raw:
            thousands = "." in raw
            return raw, (
                " (write numbers without thousands separators: 2337.2, not 2,337.2)"
                if thousands
                else " (write decimals with a point: 3.5, not 3,5)"
            )
        return raw, ""
    if not commas:
        return raw, ""
    if GROUPED.fullmatch(raw):
        return raw.replace(".", "").replace(",", "."), ""
    if "." in raw:
        return "", " (other rows write decimals with a comma: write this one so too, without a point)"
    return raw.replace(",", "."), ""


def read_labels(
    path: str | os.PathLike,
    scans_dir: str | os.PathLike | None = None,
    scan_column: str = "scan",
    label_column: str = "label",
    allow_negative: bool = False,
    columns_hint: str = "use --scan-column/--label-column to name yours",
    none_left: str = "no labelled scans",
) -> Labels:
    """Read a labels CSV, checking each row; errors name the file and row number.

    Rows with an empty label are left out with a note. With ``scans_dir`` given, every
    listed scan must exist there. ``columns_hint`` ends the error for a missing column,
    ``none_left`` the error for a table with no value at all.
    """
    path = Path(path)
    if not path.is_file():
        raise HydranetError(f"{path}: no such labels file")
    if scans_dir is not None and not Path(scans_dir).is_dir():
        raise HydranetError(f"{scans_dir}: no such scans folder")
    entries = sorted(os.listdir(scans_dir)) if scans_dir is not None else []
    rows, separator, read_as = _table_rows(path)  # and notes on its encoding and separator
    if not rows:
        raise HydranetError(f"{path}: empty file")
    header = [h.strip() for h in rows[0]]
    for col in (scan_column, label_column):
        if column_index(header, col) is None:
            bids = "participant_id" in header and col == scan_column
            bids = " (a participants.tsv names its scans in participant_id)" if bids else ""
            raise HydranetError(f"{path}: no column '{col}' in the header {header} ({columns_hint}){bids}")
    si, li = column_index(header, scan_column), column_index(header, label_column)
    for at in dict.fromkeys((si, li)):
        same = [h for h in header if h == header[at]]
        if len(same) > 1:
            raise HydranetError(
                f"{path}: the header has {len(same)} columns named '{header[at]}'; "
                "rename or delete the ones not meant"
            )
    label_column = header[li]  # as the table names it, in what is said about its rows
    # where a comma cannot separate fields (semicolons, tabs), labels with one make it the
    # decimal mark of the table (Excel's "CSV" in German, French, ...); None: commas separate
    commas = any("," in row[li] for row in rows[1:] if len(row) > li) if separator in (";", "\t") else None
    decimal_commas = grouped_points = 0
    values: dict[str, float] = {}
    seen: dict = {}  # labelled or not, a scan may be listed once: its row
    listed: set[str] = set()
    errors: list[str] = []
    notes: list[str] = []
    unlabelled: list[tuple[str, str]] = []  # rows without a label: ("row 27: 'sub-026'", " (n/a)")
    not_found = 0
    suffixed = by_subject = 0  # scans named without their .nii/.nii.gz; by their BIDS subject
    for rownum, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) <= max(si, li):
            errors.append(f"row {rownum}: {len(row)} fields, expected {len(header)}")
            continue
        scan, raw = row[si].strip(), row[li].strip()
        if not scan:
            errors.append(f"row {rownum}: empty scan name")
            continue
        named = scan = os.path.normpath(scan)  # ./a.nii.gz and a.nii.gz are one scan
        missing = None
        if scans_dir is not None:
            scan, missing = _scan_file(Path(scans_dir), scan, entries)
        same = scan if scans_dir is None or missing else scan_place(Path(scans_dir) / scan)
        if same in seen:
            errors.append(f"row {rownum}: scan '{scan}' is listed twice (also in row {seen[same]})")
            continue
        seen[same] = rownum
        if not missing and scans_dir is not None:
            listed.add(same)
        if raw == "" or raw.lower() in MISSING:
            unlabelled.append((f"row {rownum}: '{scan}'", f" ({raw})" if raw else ""))
            continue
        text, why = _point_decimal(raw, commas)
        try:
            value = float(text)
        except ValueError:
            errors.append(f"row {rownum}: {label_column} '{raw}' of '{scan}' is not a number{why}")
            continue
        decimal_commas += commas is True and "," in raw
        grouped_points += commas is False and bool(GROUPED.fullmatch(raw))
        if not abs(value) <= FLOAT32_MAX:
            errors.append(f"row {rownum}: {label_column} {raw} of '{scan}' is beyond ±3.4e38")
            continue
        if value < 0 and not allow_negative:
            errors.append(f"row {rownum}: {label_column} {raw} of '{scan}' must be a number ≥ 0")
            continue
        if missing:
            errors.append(f"row {rownum}: {missing}")
            not_found += 1
            continue
        values[scan] = value
        subject = bids_subject(scan_stem(scan)) == named  # sub-01 for sub-01_T2w.nii.gz
        by_subject += subject
        suffixed += scan != named and not subject
    if len(unlabelled) == 1:
        (row, shown), *_ = unlabelled
        notes.append(f"{row} has no {label_column}{shown} and is left out")
    elif unlabelled:
        shown = first_of([row + why for row, why in unlabelled], 3)
        notes.append(f"{len(unlabelled)} rows have no {label_column} and are left out: {shown}")
    if not values and not_found == len(errors) > 1:  # the wrong folder, or names of another kind
        held = [e for e in entries if _is_scan_name(Path(e))]
        errors.insert(
            0,
            f"none of its {not_found} scans is in {scans_dir}, which holds "
            + (first_of(held, 3) if held else "no NIfTI files (folders are not searched)"),
        )
    if decimal_commas:
        read_as.append(f"{plural(decimal_commas, 'label')} written with a decimal comma (3,5) read as 3.5")
    if grouped_points:
        read_as.append(
            f"{plural(grouped_points, 'label')} such as 1.234 read with a decimal point (1.234); "
            "if the point groups thousands (1234), write the labels without it"
        )
    if errors:
        raise HydranetError(f"{path}: {first_of(errors)}", errors)
    if not values:
        raise HydranetError(f"{path}: {none_left}")
    if suffixed:
        notes.append(
            f"{plural(suffixed, 'scan')} named without .nii/.nii.gz (or with the other), matched to "
            "the file that has it"
        )
    if by_subject:
        notes.append(
            f"{plural(by_subject, 'scan')} named by their BIDS subject (sub-01), each matched to the one "
            "scan named after it (sub-01_T2w.nii.gz)"
        )
    return Labels(values, read_as + notes, frozenset(listed), read_as)
