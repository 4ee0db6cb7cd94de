"""Predict dock: one scan layer + a model → count ± spread, heatmap and detections, with
lesion-by-lesion inspection and a live detection threshold."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from .._layers import brain_view, camera_of, detections_layer, heatmap_layer, scanner_mm, tilt_note
from ..detect import at_threshold, count_consistent, score_map
from ..device import select_device
from ..errors import HydranetError
from ..infer import Prediction, predict_scan
from ..io import mask_fits, scan_stem
from ..models import load_model
from ._common import Dock, LayerCombo, ModelPicker, error_text, layer_to_scan, scrolling_layout

INTENSITY_WEIGHT = 0.5
SLIDER_STEPS = 1000  # the slider spans default / 100 … default × 100 on a log scale
_STAGES = ("loading the model", "running the network (8 flips)")


def _predict_job(model_dir, cache, scan, mask, weight):
    """Generator run in a worker thread: yields stage names, returns a dict (never raises)."""
    try:
        yield _STAGES[0]
        device = select_device("auto")
        key = (str(model_dir), str(device))
        model = cache[1] if cache and cache[0] == key else load_model(model_dir, device)
        yield _STAGES[1]
        pred = predict_scan(model, scan, device, mask, intensity_weight=weight)
        return {"model": (key, model), "pred": pred}
    except Exception as exc:  # reported in the viewer, never as a traceback dialog
        return {"error": error_text(exc)}


def _refill(layer, data, kwargs: dict) -> None:
    """Put a new result into an existing overlay layer of the same scan."""
    layer.affine = kwargs["affine"]
    layer.metadata = kwargs["metadata"]
    if "features" in kwargs:
        layer.selected_data = set()
        layer.data = data
        layer.features = kwargs["features"]
        layer.text = kwargs["text"]
    else:
        layer.data = data
        layer.contrast_limits = kwargs["contrast_limits"]


def _layer_file(layer) -> str:
    """A layer's name and, for a file, its folder and file name: masks named like their scan
    share one layer name with it ('sub-1', 'sub-1 [1]', 'sub-1 [2]')."""
    path = (layer.metadata or {}).get("path")
    return f"{layer.name} ({Path(path).parent.name}/{Path(path).name})" if path else layer.name


def _file_stem(layer) -> str:
    path = (layer.metadata or {}).get("path")
    return scan_stem(path) if path else layer.name


def _mask_of(mask, scan) -> bool:
    """Whether the layer ``mask`` is the ROI mask of the layer ``scan``: named like it (a mask
    sharing the scan's file name gets napari's "name [1]") or a BIDS mask of it."""
    if not isinstance(mask, Labels) and (mask.metadata or {}).get("kind") != "mask":
        return False  # a scan opened twice is no mask of itself
    return mask.name.startswith(f"{scan.name} [") or mask_fits(_file_stem(scan), _file_stem(mask))


@dataclass
class _Run:
    """What one scan's last prediction put in the viewer."""

    name: str
    pred: Prediction
    affine: np.ndarray
    scan: object  # the scan's layer
    heat: object = None
    points: object = None
    default_threshold: float = 0.0
    index: int = -1
    score_maps: dict = field(default_factory=dict)  # by intensity weight: the slider reuses them


class PredictWidget(Dock):
    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        brain_view(napari_viewer)  # as the demo shows scans: anterior at the top
        self.worker = None
        self._model = None  # ((folder, device), Model) of the last run
        self._runs: dict[int, _Run] = {}  # by id of the scan's layer: names may be reused
        self._mask_for = None  # the scan whose mask the dock chose last
        self._mask_chosen_for = None  # the scan the user chose a mask for
        self._current: _Run | None = None

        def kind(layer):
            return (layer.metadata or {}).get("kind")

        self.image_combo = LayerCombo(  # the scan opened last, until the user chooses one
            self.viewer, (Image,), accept=lambda ly: kind(ly) is None, prefer=lambda ly: True, follow=True
        )
        self.mask_combo = LayerCombo(  # our heatmaps are not masks; a mask opened from a file is
            self.viewer,
            (Image, Labels),
            none_text="(no ROI mask)",
            accept=lambda ly: kind(ly) in (None, "mask"),
            prefer=lambda ly: kind(ly) == "mask" and bool(np.any(ly.data)),  # an empty mask is no ROI
        )
        self.model_picker = ModelPicker()
        self.combine_box = QCheckBox(f"heatmap + intensity (w = {INTENSITY_WEIGHT})")
        self.combine_box.setToolTip("Detect lesions on (1 − w)·heatmap + w·intensity")
        self.run_button = QPushButton("Predict")
        self.progress = QProgressBar()
        self.progress.setRange(0, len(_STAGES))
        self.progress.setVisible(False)
        self.result_label = QLabel("No prediction yet.")
        self.result_label.setWordWrap(True)
        self.result_label.setStyleSheet("font-size: 14px; font-weight: bold;")
        self.notes_label = QLabel("")  # what the count rests on, in the body font under the headline
        self.notes_label.setWordWrap(True)

        self.prev_button, self.next_button = QPushButton("◀ Previous"), QPushButton("Next ▶")
        self.lesion_label = QLabel("")
        # one width whatever it says, so the dock does not change width as the user navigates
        widest = (
            "lesion 88/88 (score 0.0000)",
            "x -188.8, y -188.8, z -188.8 mm",
            "88 detections at this threshold",
        )
        self.lesion_label.setMinimumWidth(max(map(self.lesion_label.fontMetrics().horizontalAdvance, widest)))
        self.lesion_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setValue(SLIDER_STEPS // 2)
        self.threshold_label = QLabel("")
        self.threshold_label.setWordWrap(True)
        self.reset_button = QPushButton("Count-consistent")
        self.reset_button.setToolTip("Back to the threshold whose detections match the count")

        form = QFormLayout()
        form.addRow("Scan", self.image_combo)
        form.addRow("ROI mask", self.mask_combo)
        form.addRow("Model", self.model_picker)
        nav = QHBoxLayout()
        nav.addWidget(self.prev_button)
        nav.addWidget(self.lesion_label, 1, Qt.AlignmentFlag.AlignCenter)
        nav.addWidget(self.next_button)
        thr = QHBoxLayout()
        thr.addWidget(self.slider, 1)
        thr.addWidget(self.reset_button)
        self.detections_section = QWidget()  # hidden for a model without a heatmap
        section = QVBoxLayout(self.detections_section)
        section.setContentsMargins(0, 0, 0, 0)
        section.addWidget(QLabel("Detections"))
        section.addLayout(nav)
        section.addLayout(thr)
        section.addWidget(self.threshold_label)
        box = scrolling_layout(self)
        box.addLayout(form)
        box.addWidget(self.combine_box)
        box.addWidget(self.run_button)
        box.addWidget(self.progress)
        box.addWidget(self.result_label)
        box.addWidget(self.notes_label)
        box.addWidget(self.detections_section)
        box.addStretch(1)

        self.run_button.clicked.connect(self.run)
        self.prev_button.clicked.connect(lambda: self.go_to(-1))
        self.next_button.clicked.connect(lambda: self.go_to(+1))
        self.slider.valueChanged.connect(self._on_slider)
        self.reset_button.clicked.connect(lambda: self.slider.setValue(SLIDER_STEPS // 2))
        self.combine_box.toggled.connect(self._on_combine)
        self.model_picker.shown.connect(self._show_model_kind)
        self._show_model_kind()
        self._set_inspection_enabled(False)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.image_combo.currentIndexChanged.connect(self._mask_of_scan)
        self.mask_combo.activated.connect(self._on_mask_chosen)
        self.viewer.layers.events.inserted.connect(self._mask_of_scan)  # a mask opened after its scan
        self._mask_of_scan()

    # running ----------------------------------------------------------------------------
    def run(self) -> None:
        layer = self.image_combo.layer()
        if layer is None:
            hint = "open a scan first (File ▸ Open, or the sample data)"
            show_error(f"Predict: {hint}")
            self.result_label.setText(f"⚠ Nothing to predict: {hint}.")
            return
        try:
            scan = layer_to_scan(layer)
            mask_layer = self.mask_combo.layer()
            if mask_layer is layer:
                raise HydranetError("the ROI mask is the scan itself; choose the mask layer, or no mask")
            mask = layer_to_scan(mask_layer, like=scan) if mask_layer is not None else None
        except Exception as exc:
            show_error(f"Predict: {error_text(exc)}")
            self.result_label.setText(f"⚠ {layer.name}: not predicted. {error_text(exc)}")
            self.notes_label.setText("")
            self._leave_inspection()
            return
        weight = INTENSITY_WEIGHT if self.combine_box.isChecked() else 0.0
        name = layer.name  # unique in the viewer, unlike file names (two subjects' T2.nii.gz)
        where = f"  ·  inside {_layer_file(mask_layer)}" if mask is not None else ""  # may be auto-chosen
        self.result_label.setText(f"{name}: predicting…")
        self.notes_label.setText("")
        self._leave_inspection()  # the detections shown were another run's
        self.worker = thread_worker(_predict_job)(
            self.model_picker.model_dir(), self._model, scan, mask, weight
        )
        self.worker.yielded.connect(self._on_stage)
        self.worker.returned.connect(lambda out: self._on_result(out, layer, name, scan.affine, where))
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.progress.setVisible(True)
        self.progress.setValue(0)
        self.worker.start()

    def _on_stage(self, stage: str) -> None:
        self.progress.setValue(_STAGES.index(stage))
        self.progress.setFormat(stage)

    def _on_finished(self) -> None:
        self.run_button.setEnabled(True)
        self.progress.setVisible(False)

    def _on_result(self, out: dict, scan_layer, name: str, affine: np.ndarray, where: str) -> None:
        if "error" in out:
            show_error(f"Predict: {out['error']}")
            self.result_label.setText(f"⚠ {name}: not predicted. {out['error']}")
            return
        self._model = out["model"]
        if scan_layer not in self.viewer.layers:  # closed while the network ran: nothing to overlay
            self.result_label.setText(f"{name} was closed while it was predicted; no overlays added.")
            return
        pred: Prediction = out["pred"]
        name = scan_layer.name  # renamed while the network ran, or since its last prediction
        old = self._runs.pop(id(scan_layer), None)
        run = _Run(name, pred, np.asarray(affine, float), scan_layer)
        # a layer this plugin opened is shown straightened; another keeps its own transform
        ours = (scan_layer.metadata or {}).get("affine") is not None
        if pred.heatmap is not None:
            for data, kwargs, kind in (
                heatmap_layer(pred, affine, f"{name} heatmap", straighten=ours),
                detections_layer(pred, affine, f"{name} detections", straighten=ours),
            ):
                # the scan's units: mm claimed over a unit-less layer made napari warn and drop them
                kwargs = dict(kwargs, units=tuple(str(u) for u in scan_layer.units))
                slot = "heat" if kind == "image" else "points"
                layer = getattr(old, slot) if old is not None else self._opened_overlay(kwargs)
                if layer is not None and layer in self.viewer.layers:
                    _refill(layer, data, kwargs)  # much cheaper than remove + add
                    layer.name = kwargs["name"]
                else:
                    layer = getattr(self.viewer, f"add_{kind}")(data, **kwargs)
                setattr(run, slot, layer)
            run.default_threshold = pred.result.threshold if pred.result else 0.0
        if old is not None:  # a model without a heatmap: drop the previous overlays
            for slot in ("heat", "points"):
                layer = getattr(old, slot)
                if layer is not None and getattr(run, slot) is not layer and layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
        self._runs[id(scan_layer)] = run
        self._current = run
        unit = self._model[1].label.get("unit", "")
        self.result_label.setText(f"{name}: {pred.summary(unit)}  ·  {pred.detections_text()}{where}")
        notes = pred.notes + (tilt_note(name, affine) if ours else [])
        self.notes_label.setText("\n".join(f"note: {note}" for note in notes))
        self._set_inspection_enabled(run.points is not None)
        self._show_model_kind()
        self.slider.blockSignals(True)
        self.slider.setValue(SLIDER_STEPS // 2)
        self.slider.blockSignals(False)
        self._show_threshold()

    def _opened_overlay(self, kwargs: dict):
        """An overlay of the same scan file that this dock did not make (the sample's, the
        demo's, a Cohort row's), to be refilled rather than doubled."""
        md = kwargs["metadata"]
        for layer in self.viewer.layers:
            other = layer.metadata or {}
            if (
                layer.name == kwargs["name"]
                and other.get("kind") == md["kind"]
                and md["source_path"] is not None
                and other.get("source_path") == md["source_path"]
            ):
                return layer
        return None

    # inspection -------------------------------------------------------------------------
    def _leave_inspection(self) -> None:
        """No detections to step through: none predicted yet, or their layer is gone."""
        self._current = None
        self._set_inspection_enabled(False)
        self._show_threshold()
        self._show_model_kind()

    def _show_model_kind(self) -> None:
        """A model without a heatmap (a regressor) has no detections to combine or step through;
        the detections shown stay inspectable while another model is picked."""
        heat = self.model_picker.has_heatmap() or self._live() is not None
        self.combine_box.setVisible(heat)
        self.detections_section.setVisible(heat)

    def _on_mask_chosen(self, *_) -> None:
        self._mask_chosen_for = self.image_combo.layer()

    def _mask_of_scan(self, event=None) -> None:
        """The ROI mask follows the scan: on a new scan, its own mask when one is open (named
        like it, as ``find_mask`` pairs files), none rather than another open scan's; a mask of
        the scan opened later is taken unless the user chose one for it. After opening two
        subjects on one grid, the second was counted inside the first one's mask."""
        scan = self.image_combo.layer()
        if scan is None:
            return
        if scan is not self._mask_for:
            self._mask_for, self._mask_chosen_for = scan, None
            current = self.mask_combo.layer()
            own = [m for m in self.mask_combo.layers() if m is not scan and _mask_of(m, scan)]
            if own:
                if not any(current is m for m in own):
                    self.mask_combo.choose(own[-1])
            elif current is not None and any(
                _mask_of(current, other) for other in self.image_combo.layers() if other is not scan
            ):
                self.mask_combo.choose(None)
            return
        added = getattr(event, "value", None)
        if (
            added is not None
            and self._mask_chosen_for is not scan
            and any(added is m for m in self.mask_combo.layers())
            and _mask_of(added, scan)
        ):
            self.mask_combo.choose(added)

    def _on_layer_removed(self, event) -> None:
        run = self._current  # by membership: a dock from napari's menu holds proxies of its layers
        if run is not None and run.points is not None and run.points not in self.viewer.layers:
            self._leave_inspection()
        for key, old in list(self._runs.items()):  # a closed scan's prediction is not kept
            overlays = [ly for ly in (old.heat, old.points) if ly is not None]
            if old.scan not in self.viewer.layers or (
                overlays and not any(ly in self.viewer.layers for ly in overlays)
            ):
                del self._runs[key]

    def _set_inspection_enabled(self, on: bool) -> None:
        for w in (self.prev_button, self.next_button, self.slider, self.reset_button):
            w.setEnabled(on)

    def _live(self) -> _Run | None:
        run = self._current
        if run is None or run.points is None or run.points not in self.viewer.layers:
            return None
        return run

    def go_to(self, step: int) -> None:
        """Centre the view on the next (+1) or previous (−1) detection."""
        run = self._live()
        if run is None or len(run.points.data) == 0:
            return
        run.index = (run.index + step) % len(run.points.data)
        world = np.asarray(run.points.data_to_world(run.points.data[run.index]), float)
        self.viewer.dims.set_point(range(len(world)), world)
        camera_of(self.viewer).center = tuple(world)
        run.points.selected_data = {run.index}
        score = run.points.features["score"].iloc[run.index]
        x, y, z = scanner_mm(run.points.data[run.index], run.affine, run.pred.prepared.source_shape)
        self.lesion_label.setText(  # scanner mm, as in the detections table
            f"lesion {run.index + 1}/{len(run.points.data)} (score {score:.3g})\n"
            f"x {x:.1f}, y {y:.1f}, z {z:.1f} mm"
        )

    def threshold(self) -> float:
        run = self._current
        base = run.default_threshold if run else 0.0
        return base * 10 ** ((self.slider.value() - SLIDER_STEPS // 2) / (SLIDER_STEPS / 4))

    def _score_map(self, run: _Run) -> np.ndarray:
        weight = INTENSITY_WEIGHT if self.combine_box.isChecked() else 0.0
        if weight not in run.score_maps:  # smoothing once per run, not per slider step
            run.score_maps[weight] = score_map(run.pred.heatmap, run.pred.prepared.array, weight)
        return run.score_maps[weight]

    def _on_slider(self, *_) -> None:
        run = self._live()
        if run is None:
            return
        self._apply(run, at_threshold(self._score_map(run), self.threshold()))

    def _on_combine(self, *_) -> None:
        run = self._live()
        if run is None:
            return
        result = count_consistent(self._score_map(run), run.pred.count)
        run.default_threshold = result.threshold
        self.slider.blockSignals(True)
        self.slider.setValue(SLIDER_STEPS // 2)
        self.slider.blockSignals(False)
        self._apply(run, result)

    def _apply(self, run: _Run, result) -> None:
        run.pred = replace(run.pred, result=result)
        data, kwargs, _ = detections_layer(run.pred, run.affine, run.points.name)
        _refill(run.points, data, kwargs)
        run.index = -1
        self._show_threshold()

    def _show_threshold(self) -> None:
        run = self._current
        if run is None or run.points is None:
            self.threshold_label.setText("")
            self.lesion_label.setText("")
            return
        n = len(run.points.data)
        moved = self.slider.value() != SLIDER_STEPS // 2  # the headline holds the count-consistent one
        self.lesion_label.setText(f"{n} detections" + (" at this threshold" if moved else ""))
        for button in (self.prev_button, self.next_button):
            button.setEnabled(n > 0)
        self.threshold_label.setText(
            f"threshold {self.threshold():.3g} (count-consistent {run.default_threshold:.3g})"
        )

    def release(self) -> None:
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        self.image_combo.disconnect_viewer()
        self.mask_combo.disconnect_viewer()
        self.model_picker.disconnect_registry()
        if self.worker is not None:
            self.worker.quit()
