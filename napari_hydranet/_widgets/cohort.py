"""Cohort dock: predict a folder of scans, review them one by one, correct counts, export the
table, send corrections to the Train dock, and see agreement with labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
)

from .._layers import brain_view, detections_layer, heatmap_layer, scan_layer
from ..device import select_device
from ..errors import HydranetError
from ..infer import DETECTION_COLUMNS, NOT_COUNTED, predict_file
from ..io import (
    check_masks_folder,
    check_table_output,
    find_scans,
    match_labels,
    read_labels,
    read_scan,
    scan_stem,
    unmatched_labels,
    write_csv,
)
from ..models import load_model
from ..provenance import (
    COHORT_COLUMNS,
    COHORT_WRITTEN_BY,
    check_record_output,
    finish_record,
    now_utc,
    run_settings,
    start_record,
    write_record,
)
from ..text import first_of, plural
from ._agreement import AgreementPlots
from ._cohort_table import COLUMNS, CohortTable
from ._common import COLUMNS_HINT, ColumnPicker, Dock, ModelPicker, PathPicker, error_text, scrolling_layout

EXPORT_COLUMNS = ["scan", "count", "count_sd", "detections", "label", "corrected", "unit", "notes"]
OLD_EXPORT_COLUMNS = (EXPORT_COLUMNS[:6], EXPORT_COLUMNS[:6] + ["notes"])  # 0.3.0's exports: overwritten too


def _cohort_job(model_dir, scans_dir, masks_dir):
    """Worker generator: yields ("total", n, unit, record) (the record for the exported
    table, ``provenance``), then ("scan", path, pred, affine) or ("error", name, reason) per
    scan, or ("fatal", message) when nothing can be predicted (the model, the folder); stops
    cleanly when the worker is quit."""
    try:
        device = select_device("auto")
        model = load_model(model_dir, device)
        paths = find_scans([scans_dir])
        check_masks_folder(masks_dir, paths)
    except Exception as exc:
        yield ("fatal", error_text(exc))
        return
    settings = {"scans": str(scans_dir), **run_settings(masks_dir, device)}
    record = start_record(model, len(paths), settings, written_by=COHORT_WRITTEN_BY, columns=COHORT_COLUMNS)
    yield ("total", len(paths), model.label.get("unit", ""), record)
    for path in paths:
        try:
            pred, affine = predict_file(model, path, device, masks_dir=masks_dir)
            yield ("scan", path, pred, affine)
        except Exception as exc:  # one bad scan does not stop the cohort
            yield ("error", path.name, error_text(exc))


def _gist(path: Path, notes: list[str]) -> list[str]:
    """A scan's notes without the scan's name or path in front (its mask's notes keep
    theirs), so that notes of several scans compare."""
    own = {scan_stem(path), path.name, f"{path.parent.name}/{path.name}", str(path)}
    gists = []
    for note in notes:
        head, sep, rest = note.partition(": ")
        gists.append(rest if sep and head in own else note)
    return gists


def _named(name: str, reason: str) -> str:
    """A skipped scan's reason, its name in front once (most reasons start with its path)."""
    return reason if name in reason else f"{name}: {reason}"


def _write_table(path, header, rows, what: str, *older) -> bool:
    """Write a CSV; False, with the reason shown, when the path cannot be written or holds a
    file other than an earlier table of this kind (``header``, or one of the ``older``
    headers): the save dialog's "replace?" would otherwise let a labels file go."""
    try:
        check_table_output(path, what, (), header, *older)
        write_csv(path, header, rows)
    except HydranetError as exc:
        show_error(f"Cohort: {exc}")
        return False
    except OSError as exc:
        show_error(f"Cohort: cannot write {path} ({exc.strerror or exc})")
        return False
    return True


class CohortWidget(Dock):
    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        brain_view(napari_viewer)  # as the demo shows scans: anterior at the top
        self.worker = None
        self.results: dict[str, tuple] = {}  # scan file name → (path, Prediction, affine)
        self.labels: dict[str, float] = {}
        self.labels_note = ""  # what loading the labels CSV found wrong or missing
        self.corrections: dict[Path, dict[str, float]] = {}  # scans folder → the user's counts
        self._unit = ""  # what the model's counts are in
        self._record = None  # the run's record, written beside an exported table
        self._folder: Path | None = None  # the folder the table shows, and its masks
        self._masks: Path | None = None
        self._shown: list = []  # layers this dock opened for the selected row

        self.scans = PathPicker("dir", placeholder="folder of NIfTI scans")
        self.masks = PathPicker("dir", placeholder="optional: ROI masks named like the scans")
        self.labels_csv = PathPicker("file", "Tables (*.csv *.tsv)", "optional: labels to compare with")
        self.columns = ColumnPicker()
        self.model_picker = ModelPicker()
        self.run_button, self.cancel_button = QPushButton("Predict all"), QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("")  # what the last run did, and the scans it skipped
        self.status.setWordWrap(True)
        self.failed: list[tuple[str, str]] = []  # (scan, reason) of the last run
        self.table = CohortTable()
        self.table.setMinimumHeight(160)
        self.table.corrected.connect(self._draw)
        self.send_button = QPushButton("Send labels to Train")
        self.send_button.setToolTip(
            "Save every labelled row (the labels CSV's, with your corrected counts over them) "
            "as a labels CSV and open it in the Train dock"
        )
        self.export_button = QPushButton("Export table…")
        self.detections_button = QPushButton("Export detections…")
        self.detections_button.setToolTip(
            "Every predicted scan's detections in one CSV, as `hydranet predict --detections` "
            "writes them: voxel indices of the file and world positions in mm"
        )
        self.stats = QLabel("")
        self.stats.setWordWrap(True)  # a long labels note must not widen the dock over the canvas
        self.plots = AgreementPlots()

        form = QFormLayout()
        form.addRow("Scans", self.scans)
        form.addRow("Masks", self.masks)
        form.addRow("Labels", self.labels_csv)
        form.addRow("Columns", self.columns)
        form.addRow("Model", self.model_picker)
        run = QHBoxLayout()
        run.addWidget(self.run_button)
        run.addWidget(self.cancel_button)
        out = QHBoxLayout()
        out.addWidget(self.send_button)
        out.addWidget(self.export_button)
        out.addWidget(self.detections_button)
        box = scrolling_layout(self, footer=out)  # Send and Export in view below a long table
        box.addLayout(form)
        box.addLayout(run)
        box.addWidget(self.progress)
        box.addWidget(self.status)
        box.addWidget(QLabel("Click a row to open the scan; type a count to correct it."))
        box.addWidget(self.table, 1)
        box.addWidget(self.stats)
        box.addWidget(self.plots)

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.labels_csv.edit.editingFinished.connect(self.load_labels)
        self.columns.changed.connect(self.load_labels)
        self.table.cellClicked.connect(self._on_click)
        self.send_button.clicked.connect(lambda: self.send_to_train())
        self.export_button.clicked.connect(lambda: self.export())
        self.detections_button.clicked.connect(lambda: self.export_detections())
        self._draw()

    # predicting -------------------------------------------------------------------------
    def run(self) -> None:
        if self.scans.path() is None:
            show_error("Cohort: choose a folder of scans")
            return
        self._keep_corrections()  # a re-run (another model, say) must not lose the user's counts
        self._folder, self._masks = self.scans.path().resolve(), self.masks.path()
        self._record = None  # this run's, once its model is loaded
        self.results.clear()
        self.failed.clear()
        self.table.clear_rows()
        self.status.setText("predicting…")
        self.status.setToolTip("")
        self._draw()
        self.load_labels()
        job = thread_worker(_cohort_job)
        self.worker = job(self.model_picker.model_dir(), self.scans.path(), self.masks.path())
        self.worker.yielded.connect(self._on_item)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.worker.start()

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()  # stops before the next scan; the table keeps those done

    def _on_item(self, item: tuple) -> None:
        kind = item[0]
        if kind == "fatal":
            show_error(f"Cohort: {item[1]}")
            self.status.setText(f"⚠ not run: {item[1]}")
        elif kind == "total":
            self.progress.setRange(0, item[1])
            self._unit, self._record = item[2], item[3]
        elif kind == "error":
            name, reason = item[1], item[2]
            if not self.failed:  # one message a run: the status lists every skipped scan at the end
                show_error(f"Cohort: {_named(name, reason)} (skipped; any others are listed at the end)")
            self.failed.append((name, reason))
            self.progress.setValue(self.progress.value() + 1)
        else:
            _, path, pred, affine = item
            self.results[path.name] = (path, pred, affine)
            kept = self.corrections.get(self._folder, {}).get(path.name)
            self.table.add_row(path.name, pred, self.labels.get(path.name), kept)
            self.progress.setValue(self.progress.value() + 1)
            self._draw()

    def _keep_corrections(self) -> None:
        if self._folder is not None:
            self.corrections.setdefault(self._folder, {}).update(self.table.corrections())

    def _on_finished(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.status.text().startswith("⚠"):
            return  # the run never started; the reason is shown
        if self._record is None:  # stopped before the model and the folder were read
            self.status.setText("cancelled before any scan was predicted")
            return
        done, total = len(self.results), self.progress.maximum()
        text = f"{done} of {total} scans predicted"
        cancelled = done + len(self.failed) < total
        if cancelled:
            text += " (cancelled)"
        finish_record(self._record, done, len(self.failed), stopped=cancelled)
        if self.failed:
            text += f"; {len(self.failed)} skipped: " + "; ".join(
                f"{name} ({reason.split(': ', 1)[-1]})" for name, reason in self.failed[:3]
            )
            text += " …" if len(self.failed) > 3 else ""
        kept = len(self.table.corrections())  # earlier ones, on the rows of this run
        if kept:
            text += f"; your {plural(kept, 'corrected count')} kept"
        noted = {name: _gist(self.results[name][0], n) for name, n in sorted(self.table.noted().items())}
        if noted:  # e.g. no ROI mask: counts not comparable with masked ones
            common = set.intersection(*(set(gists) for gists in noted.values()))
            text += f"; ⚠ {len(noted)} with notes" + (
                f" (every scan: {sorted(common)[0]}; more on hover)"
                if len(noted) == done and common
                else " (⚠ beside their names; hover to read)"
            )
        self.status.setText(text)
        self.status.setToolTip(
            "\n".join(
                [_named(name, reason) for name, reason in self.failed]
                + [f"{name}: {n}" for name, gists in noted.items() for n in gists]
            )
        )

    def load_labels(self) -> None:
        csv = self.labels_csv.path()
        self.columns.load(csv)
        if csv is None:
            self.labels, self.labels_note = {}, ""
            self.table.set_labels({})
            self._draw()
            return
        try:
            listed = read_labels(csv, None, *self.columns.columns(), columns_hint=COLUMNS_HINT).values
        except HydranetError as exc:
            note = f"⚠ labels not loaded: {exc}"
            if note != self.labels_note and not self.columns.needs_choice():  # told once; the dock
                show_error(f"Cohort: {exc}")  # says it, and a column to choose is no error yet
            self.labels, self.labels_note = {}, note
        else:
            names = self._scan_names()  # the folder read once
            self.labels = match_labels(names, listed)  # rows may omit .nii.gz
            missing = unmatched_labels(names, listed)  # a larger cohort's file is fine
            verb = "is" if len(missing) == 1 else "are"
            note = (
                f"{len(missing)} of the {plural(len(listed), 'labelled scan')} {verb} not in the "
                f"scans folder: {first_of(missing, 3)}"
            )
            self.labels_note = note if missing and self._shown_folder() else ""
        self.table.set_labels(self.labels)
        self._draw()

    def _shown_folder(self) -> Path | None:
        """The scans folder of the table (the picker's until a run)."""
        return self._folder or self.scans.path()

    def _scan_names(self) -> list[str]:
        """File names of the scans folder's scans (none while it is unset or holds none)."""
        try:
            return [p.name for p in find_scans([self._shown_folder()])] if self._shown_folder() else []
        except HydranetError:
            return []

    # reviewing --------------------------------------------------------------------------
    def _on_click(self, row: int, column: int) -> None:
        if column == COLUMNS.index("count"):
            return  # the user is correcting the count
        self.show_scan(self.table.scan_at(row))

    def show_scan(self, name: str) -> None:
        """Open a scan with its heatmap and detections, replacing the previous row's layers."""
        if name not in self.results:
            return
        path, pred, affine = self.results[name]
        try:
            scan = read_scan(path)
            if scan.array.shape != pred.prepared.source_shape or not np.allclose(scan.affine, affine):
                raise HydranetError(f"{path}: changed since it was predicted; predict the folder again")
        except HydranetError as exc:  # moved or changed since it was predicted
            show_error(f"Cohort: {exc}")
            return
        for layer in self._shown:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        tuples = [scan_layer(scan)]
        if pred.heatmap is not None:
            tuples += [
                heatmap_layer(pred, affine, f"{scan.name} heatmap"),
                detections_layer(pred, affine, f"{scan.name} detections"),
            ]
        self._shown = [getattr(self.viewer, f"add_{kind}")(data, **kw) for data, kw, kind in tuples]
        self.viewer.reset_view()
        points = self._shown[-1] if pred.heatmap is not None else None
        if points is not None and len(points.data):  # the first detection's slice, its ring drawn
            world = np.asarray(points.data_to_world(points.data[0]), float)
            self.viewer.dims.set_point(range(len(world)), world)

    # outputs ----------------------------------------------------------------------------
    def rows(self) -> list[list]:
        """The table in the export format (``EXPORT_COLUMNS``), with a row without a count for
        each scan the run skipped (as ``hydranet predict`` lists them), in scan order."""
        skipped = [
            [name, "", "", "", self.labels.get(name, ""), 0, self._unit, f"{NOT_COUNTED}{reason}"]
            for name, reason in self.failed
        ]
        return sorted(self.table.export_rows(self._unit) + skipped, key=lambda row: row[0])

    def export(self, path=None) -> Path | None:
        if not self.results:
            show_error("Cohort: nothing to export yet; predict a folder first")
            return None
        if self.worker is not None and self.worker.is_running:
            show_error("Cohort: still predicting; export when the run has finished or is cancelled")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export counts", "cohort_counts.csv", "CSV (*.csv)")
            if not path:
                return None
        try:
            record_at = check_record_output(path)
        except HydranetError as exc:
            show_error(f"Cohort: {exc}")
            return None
        rows = self.rows()
        if not _write_table(path, EXPORT_COLUMNS, rows, "counts table", *OLD_EXPORT_COLUMNS):
            return None
        record = dict(self._record, labels=str(self.labels_csv.path() or "") or None)
        record.update(corrected=sum(row[5] for row in rows), exported=now_utc())
        try:
            write_record(record_at, record)
        except OSError as exc:
            try:
                record_at.unlink(missing_ok=True)  # an earlier record there would describe another table
                stale = ""
            except OSError:
                stale = "; the record there is an earlier run's: delete it"
            show_error(
                f"Cohort: table written, but not its record {record_at} ({exc.strerror or exc}){stale}"
            )
            return Path(path)
        show_info(f"Cohort: table written to {path}, its record to {record_at.name}")
        return Path(path)

    def export_detections(self, path=None) -> Path | None:
        """Write the detections of every predicted scan (``DETECTION_COLUMNS``), scans in name order."""
        found = [(p, pred, a) for _, (p, pred, a) in sorted(self.results.items()) if pred.result is not None]
        if not found:
            why = "the model gives counts only (a regressor)" if self.results else "predict a folder first"
            show_error(f"Cohort: no detections to export; {why}")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Export detections", "cohort_detections.csv", "CSV (*.csv)"
            )
            if not path:
                return None
        rows = [row for _, pred, affine in found for row in pred.detection_rows(affine)]
        if not _write_table(path, DETECTION_COLUMNS, rows, "detections table"):
            return None
        written = f"{plural(len(rows), 'detection')} of {plural(len(found), 'scan')}"
        show_info(f"Cohort: {written} written to {path}")
        return Path(path)

    def send_to_train(self, path=None):
        """Write every labelled row (the labels CSV's, with the user's corrections over them)
        as a labels CSV and fill the Train dock with it."""
        labelled = [(r[0], r[4]) for r in self.table.export_rows(self._unit) if r[4] != ""]
        if not labelled:
            show_error(
                "Cohort: no labels yet (load a labels CSV, or type the right count in a row's count cell)"
            )
            return None
        if path is None:
            start = str(self._shown_folder().parent / "labels_corrected.csv") if self._shown_folder() else ""
            path, _ = QFileDialog.getSaveFileName(self, "Save the labels for training", start, "CSV (*.csv)")
            if not path:
                return None
        loaded = self.labels_csv.path()
        if loaded is not None and Path(path).resolve() == loaded.resolve():
            show_error(
                f"Cohort: {path} is the labels file loaded; save the corrected labels to a new "
                "file (it holds only this folder's scans, and yours stays as it is)"
            )
            return None
        if not _write_table(path, ["scan", "label"], labelled, "labels table"):
            return None
        trainer = self._train_widget()
        if trainer is not None:
            masks = self._masks if self._folder else self.masks.path()  # those the table was made with
            trainer.set_inputs(self._shown_folder(), path, masks)
        return trainer

    def _train_widget(self):
        from .train import TrainWidget

        window = getattr(self.viewer, "window", None)
        if window is None:
            return None
        for widget in window.dock_widgets.values():
            if isinstance(widget, TrainWidget):
                widget.parent().show()
                widget.parent().raise_()
                return widget
        try:
            # as a tab beside this dock: stacked under it, the Train dock had no room for its curves
            return window.add_plugin_dock_widget("napari-hydranet", "Train", tabify=True)[1]
        except Exception as exc:
            show_error(f"Cohort: could not open the Train dock ({error_text(exc)})")
            return None

    def _draw(self, *_) -> None:
        text = self.plots.set_pairs(self.table.pairs(), self._unit)
        self.stats.setText(f"{text}\n{self.labels_note}" if self.labels_note else text)

    def release(self) -> None:
        self.model_picker.disconnect_registry()
        self.cancel()
