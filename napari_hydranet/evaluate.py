"""Agreement between a counts table (``hydranet predict``) and a labels table."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import numpy as np

from .errors import HydranetError
from .io import bids_subject, column_index, match_labels, read_labels, scan_stem, table_rows
from .metrics import FEW_FOR_ICC, SCALE_APART, agreement_report
from .models import WEIGHTS, read_config
from .provenance import file_sha256
from .text import first_of, plural


def evaluate_tables(counts_csv, labels_csv, scan_column: str = "scan", label_column: str = "label") -> dict:
    """ICC(2,1) with its 95 % interval, ICC(3,1), MAE, MSE, Spearman's rho, the Bland-Altman
    bias and limits, and n over the scans both tables hold (``metrics.agreement_report``).

    Scans are matched by file name, or by name without .nii/.nii.gz when the tables
    differ in suffixes; scans in only one table are listed in ``notes``.
    """
    if not Path(counts_csv).is_file():
        raise HydranetError(f"{counts_csv}: no such counts table")
    hint = "the counts table comes first, as `hydranet predict --out` writes it: scan, count"
    none_left = "no scan has a count (the run could not count any; its notes column says why)"
    read = read_labels(
        counts_csv, None, "scan", "count", allow_negative=True, columns_hint=hint, none_left=none_left
    )
    counts = read.values
    labels_read = read_labels(labels_csv, None, scan_column, label_column)
    labels = labels_read.values
    _one_row_per_scan(counts_csv, counts)
    used = {scan_stem(s) for s in counts}  # a master labels file may hold other sites' scans
    _one_row_per_scan(labels_csv, {k: v for k, v in labels.items() if scan_stem(k) in used})
    found = match_labels(counts, labels)
    pred, ref, notes = [], [], [f"{counts_csv}: {note}" for note in read.notes]  # rows without a count
    notes += [f"{labels_csv}: {note}" for note in labels_read.read_as]
    for scan, value in counts.items():
        if scan in found:
            pred.append(value)
            ref.append(found[scan])
    listed = _named(labels_csv, scan_column, subjects=False)  # with a label or a blank (NaN, n/a) one
    scans_of: dict[str, list[str]] = {}  # a subject's predicted scans: its row names one of them only
    for scan in counts:
        scans_of.setdefault(bids_subject(_nfc(scan_stem(scan))), []).append(scan)
    scans_of.pop(None, None)
    several = {s: subject for subject, scans in scans_of.items() if len(scans) > 1 for s in scans}
    left = [s for s in counts if s not in found]
    shared = [s for s in left if _nfc(scan_stem(s)) not in listed and several.get(s) in listed]
    blank = [
        s
        for s in left
        if _nfc(scan_stem(s)) in listed or (s not in shared and bids_subject(_nfc(scan_stem(s))) in listed)
    ]  # its own row or its subject's
    unlabelled = [s for s in left if s not in blank and s not in shared]
    if shared:
        subjects = sorted({several[s] for s in shared})
        notes.append(
            f"{plural(len(shared), 'predicted scan')} of {plural(len(subjects), 'subject')} named by one "
            f"row each in {labels_csv} left out, as several scans share that row "
            f"({first_of([f'{x}: {len(scans_of[x])} scans' for x in subjects], 3)}): name each scan "
            "in a row of its own"
        )
    if unlabelled:
        notes.append(
            f"{plural(len(unlabelled), 'predicted scan')} without a label, left out: "
            f"{first_of(unlabelled, 3)}"
        )
    if blank:
        notes.append(
            f"{plural(len(blank), 'predicted scan')} whose label is blank or not a number in "
            f"{labels_csv}, left out: {first_of(blank, 3)}"
        )
    matched = {_nfc(scan_stem(s)) for s in counts} | {bids_subject(_nfc(scan_stem(s))) for s in found}
    matched |= _named(counts_csv, "scan")  # a row without a count is noted above, not "not predicted"
    matched |= {several[s] for s in shared}  # and so is a subject of several scans
    missing = [s for s in labels if _nfc(scan_stem(s)) not in matched]  # NFC: macOS writes NFD names
    if missing:
        notes.append(f"{plural(len(missing), 'labelled scan')} not predicted: {first_of(missing, 3)}")
    trained = _trained_on(counts_csv, [s for s in counts if s in found])
    if trained:
        notes.append(trained)
    if len(pred) < 2:
        raise HydranetError(
            f"{counts_csv} and {labels_csv} share {plural(len(pred), 'scan')}; need at least 2"
        )
    if len(pred) < FEW_FOR_ICC:
        notes.append(f"only {len(pred)} scans in common: the ICCs are too uncertain to read much into")
    mid_pred, mid_ref = float(np.median(pred)), float(np.median(ref))
    ratio = mid_pred / mid_ref if mid_pred > 0 and mid_ref > 0 else 1.0
    if not 1 / SCALE_APART < ratio < SCALE_APART:
        notes.append(
            f"the counts are about {f'{ratio:.0f}×' if ratio > 1 else f'1/{1 / ratio:.0f} of'} the "
            f"labels (medians {mid_pred:.4g} and {mid_ref:.4g}): another unit (mL and mm³ differ "
            "1000×) or another finding?"
        )
    for name, values in (("counts", pred), ("labels", ref)):
        if len(set(values)) == 1:
            notes.append(f"every one of the {name} is {values[0]:g}: the ICCs cannot measure agreement")
    return {**agreement_report(pred, ref), "unit": _unit(counts_csv), "notes": notes}


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _named(table, column: str, subjects: bool = True) -> set[str]:
    """The scans a table names in ``column``, with a value or without (``predict`` lists a
    scan it could not count), by name without .nii/.nii.gz (NFC), and with ``subjects`` by
    subject too (``sub-01``)."""
    header, *rows = table_rows(Path(table))
    at = column_index(header, column) or 0
    stems = {_nfc(scan_stem(row[at].strip())) for row in rows if len(row) > at and row[at].strip()}
    return stems | {bids_subject(s) for s in stems} - {None} if subjects else stems


def _trained_on(counts_csv, scans: list[str]) -> str | None:
    """A note when the model that made the counts has seen some of ``scans``: the run's
    record beside the table names the model, whose config lists the files it was trained and
    validated on (``training.split``, relative to ``training.scans_dir``), matched to the
    table's ``path`` column, so a scan of another cohort with the same name is not one."""
    try:
        model = json.loads(Path(counts_csv).with_suffix(".json").read_text())["model"]
        folder = Path(model["path"])
        training = read_config(folder)["training"]
        split, scans_dir = dict(training["split"]), Path(training["scans_dir"])
        parts = {(scans_dir / name).resolve(): part for part, names in split.items() for name in dict(names)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, HydranetError):
        return None  # no record, its model has gone, or its config does not list its files
    if file_sha256(folder / WEIGHTS) != model.get("weights_sha256"):
        return None  # the folder now holds another model
    header, *rows = table_rows(Path(counts_csv))
    si, at = column_index(header, "scan"), column_index(header, "path")
    if si is None or at is None:
        return None
    files = {
        os.path.normpath(row[si].strip()): Path(row[at].strip()).resolve()
        for row in rows
        if len(row) > max(si, at) and row[at].strip()
    }  # keyed as read_labels keys the counts
    seen = [s for s in scans if files.get(s) in parts]
    if not seen:
        return None
    validation = sum(parts[files[s]] == "validation" for s in seen)
    return (
        f"{len(seen)} of the {plural(len(scans), 'scan')} compared trained the model that counted them "
        f"({folder}; {validation} of them chose its epoch), e.g. {first_of(seen, 3)}: its agreement on "
        "them is optimistic; compare scans it has not seen"
    )


def _unit(counts_csv) -> str:
    """The counts' unit from the table's ``unit`` column (as ``predict`` writes it), or ""
    when it has none or names several."""
    header, *rows = table_rows(Path(counts_csv))
    if "unit" not in header:
        return ""
    at = header.index("unit")
    units = {row[at].strip() for row in rows if len(row) > at}
    return units.pop() if len(units) == 1 else ""


def _one_row_per_scan(table, values: dict) -> None:
    """Refuse a table naming one scan in two rows (``a``, ``a.nii.gz``, ``other/a.nii.gz``):
    scans are matched by file name, so one of the two would be dropped or counted twice."""
    rows: dict[str, list[str]] = {}
    for name in values:
        rows.setdefault(scan_stem(name), []).append(name)
    twice = next((names for names in rows.values() if len(names) > 1), None)
    if twice:
        shown = ", ".join(f"{n} ({values[n]:g})" for n in twice)
        raise HydranetError(
            f"{table}: {len(twice)} rows name one scan ({shown}); scans are matched by file name, "
            "so keep one row per scan"
        )
