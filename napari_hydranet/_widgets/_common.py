"""Small building blocks shared by the docks: their base class, path fields, layer and model
choosers, layer → ``Scan`` conversion and error messages."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import numpy as np
from qtpy.QtCore import QEvent, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from .._layers import display_affine, display_shape, file_volume, from_display, layer_transform, shown_affine
from ..errors import HydranetError
from ..io import SCAN_COLUMNS, Scan, finite, first_column, table_header
from ..models import DEFAULT_NAME, Model, read_config, resolve_model_dir
from ..nets import ARCHITECTURES
from ._registry import model_registry


class Dock(QWidget):
    """A dock of this plugin. Opened beside another of its docks, it becomes a tab of it:
    stacked, each got a strip of the window's height (the Train dock 50 px, its Start button
    and curves out of sight, at 1366×768 and at 1920×1080 alike)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._dock_shown = self._dock_placed = self._dock_released = False  # names no subclass uses

    def release(self) -> None:
        """Let go of what the dock holds (workers, a training, connections to the viewer)."""

    def closeEvent(self, event) -> None:
        self._release_once()
        super().closeEvent(event)

    def event(self, event) -> bool:
        # napari's × on a dock takes the widget out of it (setParent(None)) and never closes it
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self._release_once()
        return super().event(event)

    def _release_once(self) -> None:
        if not self._dock_released:
            self._dock_released = True
            self.release()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._dock_shown:
            self._dock_shown = True
            QTimer.singleShot(0, self._tab_beside_siblings)  # once napari has placed the dock

    def _tab_beside_siblings(self) -> None:
        try:
            self._join_a_placed_sibling()
        finally:
            self._dock_placed = True  # docks opened later join this one, not the other way round

    def _join_a_placed_sibling(self) -> None:
        dock = self.parentWidget()
        while dock is not None and not isinstance(dock, QDockWidget):
            dock = dock.parentWidget()
        window = dock.parentWidget() if dock is not None else None
        if not isinstance(window, QMainWindow) or dock.isFloating():
            return
        area = window.dockWidgetArea(dock)
        for other in window.findChildren(QDockWidget):
            if (
                other is not dock
                and not other.isHidden()  # open, if perhaps behind another tab
                and not other.isFloating()
                and window.dockWidgetArea(other) == area
                and isinstance(other.widget(), Dock)
                and other.widget()._dock_placed
                and dock not in window.tabifiedDockWidgets(other)
            ):
                window.tabifyDockWidget(other, dock)
                dock.show()
                dock.raise_()
                return


def error_text(exc: BaseException) -> str:
    """One line for the user: the message of a HydranetError, else type and message. An
    unexpected error's traceback goes to the console (stderr), for a bug report."""
    if isinstance(exc, HydranetError):
        return str(exc)
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    return f"{type(exc).__name__}: {exc}"


class _VerticalScroll(QScrollArea):
    """Scrolls vertically only, and is as wide as its contents need (plus the scroll bar)."""

    def setWidget(self, widget: QWidget) -> None:
        super().setWidget(widget)
        widget.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the scroll area is a layout boundary: pass the new size on
        return super().eventFilter(obj, event)

    def _widen(self, hint):
        inner = self.widget()
        if inner is not None:
            hint.setWidth(inner.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width())
        return hint

    def minimumSizeHint(self):
        return self._widen(super().minimumSizeHint())

    def sizeHint(self):
        hint = self._widen(super().sizeHint())
        if self.widget() is not None:
            hint.setHeight(self.widget().sizeHint().height())
        return hint


def scrolling_layout(dock: QWidget, footer: QLayout | None = None) -> QVBoxLayout:
    """A layout for the dock's contents inside a vertical scroll area, so that a dock taller
    than the screen (or than its share of napari's dock area) still shows every control;
    ``footer`` (the dock's main buttons) stays in view below it."""
    inner = QWidget()
    scroll = _VerticalScroll()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(inner)
    outer = QVBoxLayout(dock)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    if footer is not None:
        footer.setContentsMargins(9, 0, 9, 9)  # the scroll area's contents' margins
        outer.addLayout(footer)
    return QVBoxLayout(inner)


def layer_to_scan(layer, like: Scan | None = None) -> Scan:
    """An Image/Labels layer → ``Scan`` in the file's voxel order (i, j, k) with its affine.

    Layers opened with our reader carry the true affine in ``metadata["affine"]`` and show the
    volume in RAS order (``_layers.to_display``). Any other 3D layer is taken as it is, its
    affine recovered from the layer's whole napari transform (affine, scale, translation),
    except one whose shape is ``like``'s (the scan's) as shown and which has no transform or
    the scan layer's: made over the scan (in the console, or napari's "new labels"), it is
    taken on the scan's grid.
    """
    data = np.asarray(layer.data)
    if getattr(layer, "rgb", False):
        raise HydranetError(f"layer '{layer.name}': colour (RGB) data; a 3D scan of intensities is needed")
    if data.ndim != 3:
        split = " (split the series first, e.g. with fslsplit, and open one volume)" if data.ndim > 3 else ""
        raise HydranetError(f"layer '{layer.name}': {data.ndim}D data; a 3D scan is needed{split}")
    meta = layer.metadata or {}
    notes = list(meta.get("notes") or [])  # the reader's (NaNs it set to 0, no orientation…)
    state = {"metadata": meta, **layer_transform(layer)}
    array, affine = file_volume(data, state)
    untransformed = meta.get("affine") is None and np.allclose(affine, np.eye(4))
    over_like = (  # made over the scan: in the console, or with napari's "new labels"
        meta.get("affine") is None
        and like is not None
        and data.shape == display_shape(like.array.shape, like.affine)
        and (
            untransformed
            or np.allclose(shown_affine(state), display_affine(like.affine, like.array.shape), atol=1e-6)
        )
    )
    if over_like:  # the scan's true grid: an oblique scan is shown straightened
        affine, array = like.affine, from_display(data, like.affine)
    elif meta.get("affine") is None:  # an array from the console or another plugin
        notes.append(
            f"layer '{layer.name}' is not a file opened here: its axes are taken as napari shows "
            "them, (z, y, x) = (S, A, R) with axial slices (an (i, j, k) array from nibabel needs "
            ".transpose(2, 1, 0), or open the file with this plugin)"
            + ("; no voxel size (no affine or scale): 1 mm assumed" if untransformed else "")
        )
    path = Path(meta["path"]) if meta.get("path") else None
    array, nan_notes = finite(np.ascontiguousarray(array, dtype=np.float32), f"layer '{layer.name}'")
    return Scan(array, affine, path, notes + nan_notes, label=f"layer '{layer.name}'")  # notes reach the dock


class PathPicker(QWidget):
    """A line edit with a Browse… button for a folder, an existing file or a file to save."""

    def __init__(self, mode: str = "dir", filter: str = "", placeholder: str = "", parent=None):
        super().__init__(parent)
        self.mode, self.filter = mode, filter
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        button = QPushButton("Browse…")
        button.clicked.connect(self._browse)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(button)

    def _browse(self) -> None:
        start = self.edit.text() or str(Path.home())
        if self.mode == "dir":
            chosen = QFileDialog.getExistingDirectory(self, "Choose a folder", start)
        elif self.mode == "save":
            chosen, _ = QFileDialog.getSaveFileName(self, "Save as", start, self.filter)
        else:
            chosen, _ = QFileDialog.getOpenFileName(self, "Choose a file", start, self.filter)
        if chosen:
            self.edit.setText(chosen)

    def path(self) -> Path | None:
        text = self.edit.text().strip()
        return Path(text).expanduser() if text else None

    def set_path(self, path) -> None:
        self.edit.setText("" if path is None else str(path))


COLUMNS_HINT = "choose its columns beside Columns"  # ends a labels error that names no column


class ColumnPicker(QWidget):
    """The scan and label columns of a labels table, chosen from its header (``load``):
    "scan" and "label" where the table has them; a BIDS participants.tsv names its scans in
    another column and may hold several ratings. ``changed`` is emitted on a choice."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.scan_combo, self.label_combo = QComboBox(), QComboBox()
        self.scan_combo.setToolTip("the column naming each scan's file (relative to the scans folder)")
        self.label_combo.setToolTip("the column of the labels: counts, or volumes")
        rows = QFormLayout(self)  # one row each: a participants.tsv's names are long
        rows.setContentsMargins(0, 0, 0, 0)
        for text, combo in (("scan", self.scan_combo), ("label", self.label_combo)):
            rows.addRow(text, combo)
            combo.activated.connect(lambda *_: self.changed.emit())
        self.load(None)

    def load(self, path) -> None:
        """Offer the columns of the table at ``path`` (none: the defaults), keeping choices that
        are still there."""
        header = table_header(path) if path is not None else []
        for combo, default, fallback in (
            (self.scan_combo, "scan", first_column(header, SCAN_COLUMNS)),
            (self.label_combo, "label", first_column(header, ("label",))),
        ):
            choice = next((c for c in (combo.currentText(), fallback) if c in header), None)
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(header or [default])
            if choice is None and header:  # no column of that name: the user chooses
                combo.insertItem(0, f"(choose; no '{default}' column)", default)
                choice = combo.itemText(0)
            combo.setCurrentText(choice or default)
            combo.blockSignals(False)

    def needs_choice(self) -> bool:
        """Whether the table lacks a column of the default names and none is chosen yet."""
        return any(combo.currentData() is not None for combo in (self.scan_combo, self.label_combo))

    def columns(self) -> tuple[str, str]:
        """The chosen scan and label column names ("scan", "label" until one is chosen)."""
        return tuple(
            combo.currentData() or combo.currentText() for combo in (self.scan_combo, self.label_combo)
        )


class LayerCombo(QComboBox):
    """Chooses a layer of the given types; follows the viewer's layers (added, removed, renamed).

    ``prefer``: until the user chooses an entry, a layer it accepts is chosen when the combo is
    made (the last such layer) and when one is added, while nothing is chosen (``follow``:
    whatever is chosen).
    """

    def __init__(
        self,
        viewer,
        kinds: tuple,
        none_text: str | None = None,
        accept=None,
        prefer=None,
        follow: bool = False,
        parent=None,
    ):
        super().__init__(parent)
        self.viewer, self.kinds, self.none_text, self.follow = viewer, kinds, none_text, follow
        self.accept = accept or (lambda layer: True)
        self.prefer = prefer or (lambda layer: False)
        self._layers: list = []  # the layers listed, in order (after none_text)
        self._user_chose = False
        self.activated.connect(self._on_user_choice)
        for emitter in self._emitters():
            emitter.connect(self.refresh)
        self.refresh()

    def _emitters(self) -> tuple:
        events = self.viewer.layers.events
        return events.inserted, events.removed, events.renamed

    def _on_user_choice(self, *_) -> None:
        self._user_chose = True

    def refresh(self, *_) -> None:
        current = self.layer()
        layers = [ly for ly in self.viewer.layers if isinstance(ly, self.kinds) and self.accept(ly)]
        if (current is None or self.follow) and not self._user_chose:
            new = [ly for ly in layers if not any(ly is old for old in self._layers) and self.prefer(ly)]
            current = new[-1] if new else current
        self._layers = layers
        self.blockSignals(True)
        self.clear()
        if self.none_text is not None:
            self.addItem(self.none_text)
        self.addItems([ly.name for ly in layers])
        if current is not None:
            self._select(current)
        self.blockSignals(False)

    @property
    def _offset(self) -> int:
        """Index of the first layer in the list (after ``none_text``)."""
        return 0 if self.none_text is None else 1

    def _select(self, layer) -> None:
        index = next((i for i, ly in enumerate(self._layers) if ly is layer), None)
        self.setCurrentIndex(0 if index is None else index + self._offset)

    def layer(self):
        index = self.currentIndex() - self._offset
        if 0 <= index < len(self._layers) and any(self._layers[index] is ly for ly in self.viewer.layers):
            return self._layers[index]
        return None

    def layers(self) -> list:
        """The layers listed."""
        return list(self._layers)

    def choose(self, layer) -> None:
        """Show ``layer`` (None: ``none_text``) as chosen, on the dock's behalf."""
        self._select(layer)

    def set_layer(self, layer) -> None:
        """Choose ``layer`` (None: ``none_text``), as the user would."""
        self._user_chose = True
        self.refresh()
        self._select(layer)

    def disconnect_viewer(self) -> None:
        for emitter in self._emitters():
            emitter.disconnect(self.refresh)


class ModelPicker(QWidget):
    """The bundled model or any model folder (folder dialog), with the model's card shown;
    ``shown`` is emitted after each card."""

    shown = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.config: dict | None = None  # the chosen model's, None when it cannot be read
        self.combo = QComboBox()
        self.combo.setToolTip("'default' is the model shipped with the plugin")
        browse = QPushButton("Folder…")
        browse.clicked.connect(self._browse)
        self.card = QLabel()
        self.card.setWordWrap(True)
        self.card.setStyleSheet("font-size: 11px;")
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.combo, 1)
        row.addWidget(browse)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addLayout(row)
        box.addWidget(self.card)
        self.registry = model_registry()
        self.registry.changed.connect(self.refresh)
        self.combo.currentIndexChanged.connect(self._show_card)
        self.refresh()

    def refresh(self) -> None:
        current = self.combo.currentData()
        self.combo.blockSignals(True)
        self.combo.clear()
        for key in self.registry.models():
            shown = "default (bundled)" if key == DEFAULT_NAME else Path(key).name
            self.combo.addItem(shown, key)
            self.combo.setItemData(self.combo.count() - 1, key, Qt.ItemDataRole.ToolTipRole)
        if current is not None:
            self.combo.setCurrentIndex(max(self.combo.findData(current), 0))
        self.combo.blockSignals(False)
        self._show_card()

    def keys(self) -> list[str]:
        """The model keys listed: "default" and absolute folder paths."""
        return [self.combo.itemData(i) for i in range(self.combo.count())]

    def _browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Choose a model folder", str(Path.home()))
        if chosen:
            self.select(chosen)

    def select(self, folder) -> None:
        """Register a model folder (or "default") and choose it."""
        key = self.registry.add(folder)
        self.refresh()
        self.combo.setCurrentIndex(self.combo.findData(key))
        self._show_card()

    def model_dir(self) -> Path:
        return resolve_model_dir(self.combo.currentData() or DEFAULT_NAME)

    def _show_card(self, *_) -> None:
        name, self.config = self.combo.currentData(), None
        if not name:
            self.card.setText("")
            self.card.setToolTip("")
        else:
            try:
                folder = resolve_model_dir(name)
                model = Model(None, read_config(folder), folder)
                self.card.setText(model.card())
                self.card.setToolTip(model.card(full=True))
                self.config = model.config
            except HydranetError as exc:
                self.card.setText(f"⚠ {exc}")
                self.card.setToolTip("")
        self.shown.emit()

    def has_heatmap(self) -> bool:
        """Whether the chosen model gives a heatmap (True while it is unknown: not readable)."""
        if self.config is None:
            return True
        arch = ARCHITECTURES.get(self.config["architecture"].get("name"))
        return arch is None or arch.has_heatmap

    def disconnect_registry(self) -> None:
        try:
            self.registry.changed.disconnect(self.refresh)
        except (TypeError, RuntimeError):  # already disconnected
            pass
