"""Train dock: click-to-train in a child process (``hydranet train --json``) that the dock
starts, watches (progress, curves, time) and can stop; GPU memory goes with the process."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .. import options
from ..data import check_split
from ..errors import HydranetError
from ..io import check_masks_folder, read_labels, unlisted_scans
from ..models import DEFAULT_NAME, WEIGHTS, Model, read_config
from ..text import figure, plural
from ..train import check_labels_for_base
from ._common import COLUMNS_HINT, ColumnPicker, Dock, PathPicker, scrolling_layout
from ._curves import CurvePanels
from ._registry import model_registry
from ._train_process import RESUME_TEXT, TrainProcess, for_dock

START_FROM = ("default model", "a model folder", "scratch")


def _spin(cls, lo, hi, value, step=None):
    box = cls()
    box.setRange(lo, hi)
    if step is not None:
        box.setSingleStep(step)
    box.setValue(value)
    return box


def _earlier_epochs(out: Path | None, before: int) -> list[dict]:
    """The epochs a resumed training ran before (its history.csv), as epoch events."""
    try:
        with open(Path(out) / "history.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, TypeError, csv.Error, UnicodeDecodeError):
        return []

    def number(text):
        try:
            return float(text)
        except (TypeError, ValueError):
            return None

    events = [{k: number(v) for k, v in row.items()} for row in rows]
    return [e for e in events if e.get("epoch") is not None and e["epoch"] < before]


def _hms(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TrainWidget(Dock):
    model_ready = Signal(str)  # the model folder of a finished training

    def __init__(self, napari_viewer=None, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner = TrainProcess(self)
        self.runner.received.connect(self.handle_event)
        self.runner.ended.connect(self._on_ended)
        self.history: list[dict] = []
        self.last_event: dict | None = None
        self._plan = (1, 1, 1)  # start epoch, last epoch, steps per epoch
        self._unit = ""  # of the labels, for the MAE
        self._patience, self._best_epoch = 0, None  # early stopping: epochs, best epoch so far
        self._checkpoint, self._killed = None, False  # the last saved best model; Kill pressed
        self._started = False  # the child reported its start: scans loaded and checked
        self._t0 = 0.0
        self._first_step: tuple[float, int] | None = None  # clock and progress at the first step

        self.scans = PathPicker("dir", placeholder="folder of NIfTI scans")
        self.labels = PathPicker("file", "Tables (*.csv *.tsv)", "CSV (or TSV) with scan,label columns")
        self.masks = PathPicker("dir", placeholder="ROI masks named like the scans")
        self.masks.setToolTip("needed to fine-tune a model trained inside ROI masks (the default one)")
        self.columns = ColumnPicker()
        self.problems = QListWidget()
        self.problems.setMaximumHeight(80)
        self.problems.setWordWrap(True)  # a problem is read whole, not scrolled sideways
        self.arch = QComboBox()
        self.arch.addItems(options.ARCHITECTURES)
        self.heads = _spin(QSpinBox, 1, 16, 4)
        self.p_black = _spin(QDoubleSpinBox, 0.0, 0.9, 0.1, 0.05)
        self.epochs = _spin(QSpinBox, 1, 10000, options.EPOCHS)
        self.lr = QLineEdit()
        self.val_fraction = _spin(QDoubleSpinBox, 0.05, 0.5, 0.2, 0.05)
        self.start_from = QComboBox()
        self.start_from.addItems(START_FROM)
        self.init = PathPicker("dir", placeholder="model folder to fine-tune (or default)")
        self.recal_only = QCheckBox("only recalibrate the count to these labels (seconds)")
        self.recal_only.setToolTip(
            "A fast first step on a new cohort: the heatmap stays, the count's level and scale "
            "are fitted to your labels. Without it, the fine-tune does this and then trains."
        )
        self.out = PathPicker("dir", placeholder="new model folder")
        self.resume = QCheckBox(RESUME_TEXT)
        self.resume.setToolTip(
            "Go on from the last epoch of a training stopped (or timed out) in the Output folder, "
            "with the settings it started with"
        )
        self.label_name, self.unit = QLineEdit(), QLineEdit()
        self.label_name.setPlaceholderText("e.g. WMH volume")
        self.unit.setPlaceholderText("e.g. mm3")
        for field in (self.label_name, self.unit):
            field.setToolTip(
                "what the labels are and their unit, shown with every count and written to the "
                "tables; blank: the starting model's, or lesion count in lesions"
            )
        self.time_limit = _spin(QDoubleSpinBox, 0, 100000, 0, 1)
        self.time_limit.setSuffix(" min")
        self.time_limit.setSpecialValueText("none")
        self.lr.setPlaceholderText("default")
        self.arch_args, self.crop = QLineEdit(), QLineEdit()
        self.arch_args.setPlaceholderText('network arguments, e.g. {"width": 16}')
        self.crop.setPlaceholderText("input size I J K (default 64 52 40)")
        self.start_button, self.stop_button = QPushButton("Start"), QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar()
        self.time_label, self.status, self.notes_label = QLabel(""), QLabel(""), QLabel("")
        self.status.setWordWrap(True)
        self.notes_label.setWordWrap(True)
        self.time_label.setToolTip(
            "With early stopping the shorter time is the end if validation does not improve;"
            " each better epoch moves it later, up to the longer one"
        )
        self.curves = CurvePanels(["training loss", "val ICC(2,1)", "val MAE"])

        self.heads.setToolTip(
            "set-sum heads: each training example is n scans whose counts are summed and "
            "compared with the sum of their labels (Hydranet); 1 = plain regression"
        )
        self.p_black.setToolTip(
            "the chance that a slot of a set holds an empty (black) image, which adds exactly 0"
        )
        self.val_fraction.setToolTip(
            "fraction of the labelled scans held out to choose the best epoch (never trained on)"
        )
        data = QFormLayout()
        data.addRow("Scans", self.scans)
        data.addRow("Labels", self.labels)
        data.addRow("Columns", self.columns)
        data.addRow("Masks", self.masks)
        data.addRow(self.problems)
        settings = QFormLayout()
        settings.addRow("Start from", self.start_from)
        settings.addRow("Model folder", self.init)
        settings.addRow("", self.recal_only)
        settings.addRow("Architecture", self.arch)
        settings.addRow("Heads n", self.heads)
        settings.addRow("p black", self.p_black)
        settings.addRow("Epochs", self.epochs)
        settings.addRow("Learning rate", self.lr)
        settings.addRow("Validation", self.val_fraction)
        label_row = QHBoxLayout()
        label_row.addWidget(self.label_name, 2)
        label_row.addWidget(QLabel("unit"))
        label_row.addWidget(self.unit, 1)
        settings.addRow("Labels are", label_row)
        settings.addRow("Time limit", self.time_limit)
        settings.addRow("Output", self.out)
        settings.addRow("", self.resume)
        advanced = QGroupBox("Advanced (training from scratch)")
        adv = QFormLayout(advanced)
        adv.addRow("Network", self.arch_args)
        adv.addRow("Crop", self.crop)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        # folded away while a training runs, so that its curves are in view on a laptop's screen
        self.inputs_panel = QWidget()
        inputs = QVBoxLayout(self.inputs_panel)
        inputs.setContentsMargins(0, 0, 0, 0)
        inputs.addLayout(data)
        inputs.addLayout(settings)
        inputs.addWidget(advanced)
        self.settings_toggle = QPushButton("Show the settings")
        self.settings_toggle.setCheckable(True)
        self.settings_toggle.setVisible(False)
        self.settings_toggle.toggled.connect(self._show_settings)
        box = scrolling_layout(self, footer=buttons)  # Start and Stop in view on a laptop's screen
        box.addWidget(self.settings_toggle)
        box.addWidget(self.inputs_panel)
        box.addWidget(self.progress)
        box.addWidget(self.time_label)
        box.addWidget(self.status)
        box.addWidget(self.notes_label)
        box.addWidget(self.curves, 1)

        for picker in (self.scans, self.labels, self.masks, self.init):
            picker.edit.editingFinished.connect(self.check_labels)
        self.columns.changed.connect(self.check_labels)
        self.start_from.currentIndexChanged.connect(self._update_enabled)
        self.start_from.currentIndexChanged.connect(self.check_labels)
        self.recal_only.toggled.connect(self._update_enabled)
        self.val_fraction.valueChanged.connect(self.check_labels)  # it decides how few scans are too few
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self._update_enabled()
        self._draw()

    # inputs -----------------------------------------------------------------------------
    def set_inputs(self, scans_dir, labels_csv, masks_dir=None) -> bool:
        """Fill the data fields (the Cohort dock's "Send labels to Train") and check them."""
        self.scans.set_path(scans_dir)
        self.labels.set_path(labels_csv)
        self.masks.set_path(masks_dir)
        return self.check_labels()

    def check_labels(self) -> bool:
        """Validate the labels CSV against the scans folder; list problems row by row."""
        self.problems.clear()
        scans, labels = self.scans.path(), self.labels.path()
        self.columns.load(labels)
        if labels is None or scans is None:
            return False
        try:
            found = read_labels(labels, scans, *self.columns.columns(), columns_hint=COLUMNS_HINT)
        except HydranetError as exc:  # each bad row, or the file's one problem, named once
            prefix = f"{labels}: "
            self.problems.addItems(
                [f"✗ {p[len(prefix) :] if p.startswith(prefix) else p}" for p in exc.problems]
            )
            return False
        n = len(found.values)
        try:
            check_split(n, self.val_fraction.value())
            check_masks_folder(self.masks.path(), [scans / name for name in found.values])
            base_notes = self._check_base(list(found.values.values()))
        except HydranetError as exc:
            self.problems.addItem(f"✗ {for_dock(str(exc))}")  # the fields' names, not the options'
            return False
        self.problems.addItem(f"✓ {plural(n, 'labelled scan')}")
        unlisted = unlisted_scans(scans, found.listed)
        notes = found.notes + ([unlisted] if unlisted else []) + base_notes
        self.problems.addItems([f"note: {note}" for note in notes])
        return True

    def _base_config(self) -> dict | None:
        """The config of the model a fine-tune starts from; None from scratch or unreadable
        (an unreadable model folder is told at Start)."""
        choice = self.start_from.currentText()
        folder = DEFAULT_NAME if choice == "default model" else self.init.path()
        if choice == "scratch" or folder is None:
            return None
        try:
            return read_config(folder)
        except HydranetError:
            return None

    def _check_base(self, labels) -> list[str]:
        """What the training refuses or notes after its start about the model it starts
        from, said beside the labels before Start: ROI masks it needs, labels it cannot learn."""
        config = self._base_config()
        if config is None:
            return []
        notes = check_labels_for_base(config, np.asarray(labels, dtype=float))
        if self.masks.path() is None and Model(None, config, None).preprocess.use_mask:
            default = self.start_from.currentText() == "default model"
            raise HydranetError(
                f"the {'default model' if default else 'model'} counts inside ROI masks: "
                "choose the Masks folder (ROI masks named like the scans)"
            )
        return notes

    def _update_enabled(self) -> None:
        choice = self.start_from.currentText()
        self.init.setEnabled(choice == "a model folder")
        for w in (self.arch, self.arch_args, self.crop):
            w.setEnabled(choice == "scratch")
        self.recal_only.setEnabled(choice != "scratch")
        steps = not (self.recal_only.isEnabled() and self.recal_only.isChecked())
        for w in (self.heads, self.p_black, self.epochs, self.lr, self.time_limit):
            w.setEnabled(steps)  # a recalibration takes no gradient steps

    def build_args(self) -> list[str]:
        """The ``hydranet train`` arguments for the current settings (HydranetError if wrong)."""
        scans, labels, out = self.scans.path(), self.labels.path(), self.out.path()
        if scans is None or labels is None or out is None:
            raise HydranetError("choose the scans folder, the labels CSV and an output folder")
        args = ["train", str(scans.resolve()), "--labels", str(labels.resolve())]
        args += ["--out", str(out.resolve()), "--json", "--low-priority", "--stop-on-eof"]
        args += ["--resume"] if self.resume.isChecked() else []
        args += ["--heads", str(self.heads.value())]
        args += ["--p-black", f"{self.p_black.value():g}", "--epochs", str(self.epochs.value())]
        args += ["--val-fraction", f"{self.val_fraction.value():g}"]
        if self.masks.path() is not None:
            args += ["--masks", str(self.masks.path().resolve())]
        scan_column, label_column = self.columns.columns()
        args += ["--scan-column", scan_column]
        args += ["--label-column", label_column] if label_column != "label" else []
        choice = self.start_from.currentText()
        if choice == "default model":
            args += ["--init", "default"]
        elif choice == "a model folder":
            folder = self.init.path()
            if folder is None:
                raise HydranetError("choose the model folder to start from")
            if str(folder) == DEFAULT_NAME:  # the bundled model, as the command line reads it
                args += ["--init", DEFAULT_NAME]
            else:
                args += ["--init", str(folder.resolve())]
        if choice != "scratch" and self.recal_only.isChecked():
            args += ["--recalibrate-only"]
        if choice == "scratch":
            args += ["--arch", self.arch.currentText()]
            if self.arch_args.text().strip():
                try:
                    json.loads(self.arch_args.text())
                except json.JSONDecodeError as exc:
                    raise HydranetError(f"network arguments: not valid JSON ({exc})") from None
                args += ["--arch-args", self.arch_args.text().strip()]
            if self.crop.text().strip():
                crop = self.crop.text().replace(",", " ").split()
                if len(crop) != 3 or not all(c.isdigit() for c in crop):
                    raise HydranetError("crop: three whole numbers, e.g. 64 52 40")
                args += ["--crop", *crop]
        if self.lr.text().strip():
            try:
                args += ["--lr", f"{float(self.lr.text()):g}"]
            except ValueError:
                raise HydranetError(f"learning rate '{self.lr.text()}' is not a number") from None
        if self.time_limit.value() > 0:
            args += ["--time-limit", f"{self.time_limit.value():g}"]
        for option, field in (("--label-name", self.label_name), ("--unit", self.unit)):
            if field.text().strip():
                args += [option, field.text().strip()]
        return args

    # the child process ------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.runner.is_running()

    def start(self) -> None:
        if self.is_running():
            return
        try:
            args = self.build_args()
        except HydranetError as exc:
            show_error(f"Train: {exc}")
            self.status.setText(f"⚠ not started: {exc}")
            return
        if not self.check_labels():
            show_error("Train: not started; the problems are listed under Masks")
            self.status.setText("⚠ not started: the problems are listed under Masks")
            return
        self.history, self.last_event = [], None
        self._checkpoint, self._killed, self._started = None, False, False
        self._draw()
        self._t0 = time.monotonic()
        self.status.setText("starting…")
        self.time_label.setText("")  # not the last run's
        self.notes_label.setText("")
        self.notes_label.setToolTip("")
        self.progress.setRange(0, 0)
        self.progress.setFormat("%p%")  # not the last run's ending
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.stop_button.setText("Stop")
        self._fold_settings(True)
        self.runner.start(args, window=self.window())

    def _fold_settings(self, running: bool) -> None:
        """While a training runs its settings are folded under a button (and cannot change)."""
        self.inputs_panel.setEnabled(not running)
        self.settings_toggle.setChecked(False)
        self.settings_toggle.setVisible(running)
        self.inputs_panel.setVisible(not running)

    def _show_settings(self, shown: bool) -> None:
        self.settings_toggle.setText("Hide the settings" if shown else "Show the settings")
        self.inputs_panel.setVisible(shown)

    def stop(self) -> None:
        """First press: ask the training to stop after the current step (it keeps the best model);
        the second kills it."""
        if not self.is_running() or (self.last_event or {}).get("event") == "done":
            return  # nothing to stop, or it has just finished
        if self.stop_button.text() == "Stop":
            self.runner.terminate()
            self.status.setText("stopping after the current step…")
            self.stop_button.setText("Kill")
        else:
            self._killed = True
            self.runner.kill()

    def handle_event(self, ev: dict) -> None:
        kind = ev["event"]
        self.last_event = ev
        stopping = self.stop_button.text() == "Kill"  # Stop was pressed: say so until it ends
        if kind == "status":
            self.status.setText(ev["message"] + ("  ·  stopping after the current step…" if stopping else ""))
        elif kind == "start":
            self._started = True
            self._plan = (ev["start_epoch"], ev["epochs"], ev["steps_per_epoch"])
            self._unit = f" {ev['unit']}" if ev.get("unit") else ""
            if self.resume.isChecked():  # the curves go on from the epochs run before
                self.history = _earlier_epochs(self.out.path(), ev["start_epoch"])
                self._draw()
                self.resume.setChecked(False)  # done: the next Start is a new training unless ticked
            self._patience, self._best_epoch = ev.get("patience") or 0, ev.get("best_epoch")
            self._first_step = None
            self.progress.setRange(0, (ev["epochs"] - ev["start_epoch"] + 1) * ev["steps_per_epoch"])
            self.progress.setValue(0)
            shown, notes = 5, [f"note: {for_dock(n)}" for n in ev["notes"]]
            more = (
                f"\n… {len(notes) - shown} more notes (hover to read them all)" if len(notes) > shown else ""
            )
            self.notes_label.setText("\n".join(notes[:shown]) + more)  # kept while the run goes on
            self.notes_label.setToolTip("\n".join(notes))
            self.status.setText(
                f"training on {ev['device']}: {ev['train']} scans, {ev['val']} for validation"
                + ("\nstopping after the current step…" if stopping else "")
            )
        elif kind == "step":
            first, _, per = self._plan
            self.progress.setValue((ev["epoch"] - first) * per + ev["step"])
            self.progress.setFormat(f"epoch {ev['epoch']}  step {ev['step']}/{ev['steps']}")
            if self._first_step is None:  # start-up (loading, epoch 0) does not count in the rate
                self._first_step = (time.monotonic(), self.progress.value())
            self._show_time()
        elif kind == "epoch":
            self.history.append(ev)
            self._draw()
        elif kind == "checkpoint":
            self._best_epoch, self._checkpoint = ev["epoch"], ev["path"]
            self.status.setText(
                f"best so far: epoch {ev['epoch']} (val ICC(2,1) {figure(ev['val_icc21'])}, "
                f"MAE {figure(ev['val_mae'])}{self._unit}) saved in {ev['path']}"
            )
        elif kind == "done":
            saved = (Path(ev["path"]) / WEIGHTS).is_file()
            best = ev.get("best") or {}
            where = f"best epoch {best.get('epoch')} in {ev['path']}" if saved else "no model saved"
            self.status.setText(f"done ({ev['message']}) after {plural(ev['epochs'], 'epoch')}; {where}")
            self.time_label.setText(f"took {_hms(ev['seconds'])}")
            self.progress.setValue(self.progress.maximum())
            self.progress.setFormat(ev["message"])  # not the last step's "epoch 2 step 3/7"
            if saved:
                model_registry().add(ev["path"])
                self.model_ready.emit(ev["path"])

    def _show_time(self) -> None:
        now = time.monotonic()
        elapsed = now - self._t0
        total, done = self.progress.maximum(), self.progress.value()
        text = f"elapsed {_hms(elapsed)}"
        if done > 0 and total > 0:
            t1, d1 = self._first_step or (self._t0, 0)
            per_step = (now - t1) / (done - d1) if done > d1 else elapsed / done
            limit = self.time_limit.value() * 60 - elapsed if self.time_limit.value() > 0 else float("inf")
            remaining = min(per_step * (total - done), limit)
            early = self._early_stop_steps()
            stops_early = early is not None and early < total - done
            until_stop = min(per_step * early, limit) if stops_early else remaining
            if _hms(until_stop) != _hms(remaining):  # the time limit may cap both ends alike
                text += f"  ·  remaining ~{_hms(until_stop)} to {_hms(remaining)}"
            else:
                text += f"  ·  remaining ~{_hms(remaining)}"
        self.time_label.setText(text)

    def _early_stop_steps(self) -> int | None:
        """Steps left until early stopping ends the run if validation does not improve."""
        if not self._patience:
            return None
        first, _, per = self._plan
        best = first - 1 if self._best_epoch is None else self._best_epoch
        return max((best + self._patience - first + 1) * per - self.progress.value(), 0)

    def _on_ended(self, code: int, reason: str) -> None:
        if self._started:  # the curves stay in view; the settings are a click away
            self.inputs_panel.setEnabled(True)
        else:  # something to correct
            self._fold_settings(False)
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.progress.setRange(0, max(self.progress.maximum(), 1))
        self.stop_button.setText("Stop")
        if self.last_event is not None and self.last_event["event"] == "done":
            show_info(f"Train: {self.status.text()}")
            return
        self.time_label.setText("")
        if self._killed:
            reason = "killed"
        if self._checkpoint is not None:  # a model was saved before it ended: keep it in use
            model_registry().add(self._checkpoint)
            self.model_ready.emit(self._checkpoint)
            reason += f"; the best model so far (epoch {self._best_epoch}) is kept in {self._checkpoint}"
        started = self._started  # the scans were loaded and checked, the training under way
        self.status.setText(f"{'training ended' if started else 'training did not start'}: {reason}")
        if code not in (0, 130) and not self._killed:
            show_error(f"Train: {reason}")

    def _draw(self) -> None:
        keys = ("loss", "val_icc21", "val_mae")
        self.curves.set_series(
            [h["epoch"] for h in self.history],
            [[math.nan if h[k] is None else h[k] for h in self.history] for k in keys],  # JSON null: NaN
        )

    def release(self) -> None:
        self.runner.release()
