"""The Cohort dock's table: one row per scan, sortable by number, count cells editable.

Typing a count into a row makes it that scan's label and marks the row corrected; the count
cell then shows the model's prediction again, so the table always holds both.
"""

from __future__ import annotations

import math

from napari.utils.notifications import show_error
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QIcon
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QStyle, QTableWidget, QTableWidgetItem

from ..infer import format_count

COLUMNS = ["scan", "count", "spread", "detections", "label", "corrected"]
_EDITABLE = {"count", "label"}
_HEADERS = {  # column → (header, tooltip) where the key is too wide for a dock
    "spread": ("SD", "spread of the count over test-time flips"),
    "detections": ("found", "detections: lesions localised on the heatmap"),
    "corrected": ("✓", "corrected by you: your count is the label"),
}
_CORRECTED = QColor(80, 140, 90, 90)


class _Item(QTableWidgetItem):
    """A cell that sorts by its number (UserRole) when it has one, else by text."""

    def __init__(self, text: str, number: float | None = None):
        super().__init__(text)
        self.setData(Qt.ItemDataRole.UserRole, number)

    def __lt__(self, other) -> bool:
        a, b = self.data(Qt.ItemDataRole.UserRole), other.data(Qt.ItemDataRole.UserRole)
        if a is None or b is None:
            return (a is None, self.text()) < (b is None, other.text())
        return a < b


class CohortTable(QTableWidget):
    corrected = Signal(str)  # scan name

    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels([_HEADERS.get(c, (c, ""))[0] for c in COLUMNS])
        for col, key in enumerate(COLUMNS):  # short headers, so the table fits a dock's width
            if key in _HEADERS:
                self.horizontalHeaderItem(col).setToolTip(_HEADERS[key][1])
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked | QAbstractItemView.EditTrigger.EditKeyPressed
        )
        self.verticalHeader().setVisible(False)
        self.setSortingEnabled(True)
        self.sortByColumn(0, Qt.SortOrder.AscendingOrder)  # scans A→Z until the user sorts
        self.records: dict[str, dict] = {}  # scan → count, count_sd, detections, label, corrected, notes
        self._busy = False
        self.itemChanged.connect(self._on_changed)

    def clear_rows(self) -> None:
        """Empty the table and its records (a new run)."""
        self.records.clear()
        self.setRowCount(0)

    def add_row(self, name: str, pred, label: float | None = None, corrected: float | None = None) -> None:
        """A predicted scan; ``corrected``, the user's count from an earlier run, wins over ``label``."""
        self.records[name] = {
            "count": pred.count,
            "count_sd": pred.count_sd,
            "detections": pred.n_detections,
            "label": label if corrected is None else float(corrected),
            "corrected": corrected is not None,
            "notes": list(pred.notes),  # what the count rests on: no mask, resampling, NaNs…
        }
        self._busy = True
        self.setSortingEnabled(False)
        row = self.rowCount()
        self.insertRow(row)
        for col in range(len(COLUMNS)):
            self.setItem(row, col, _Item(""))
        self.item(row, 0).setText(name)
        self._busy = False
        self._fill(row)
        self.setSortingEnabled(True)

    def _row_of(self, name: str) -> int:
        for row in range(self.rowCount()):
            if self.item(row, 0).text() == name:
                return row
        raise KeyError(name)

    def scan_at(self, row: int) -> str:
        return self.item(row, 0).text()

    def _fill(self, row: int) -> None:
        """Write a row's record into its cells (without triggering corrections)."""
        rec = self.records[self.scan_at(row)]
        values = {
            "count": (format_count(rec["count"]), rec["count"]),
            "spread": (f"{rec['count_sd']:.2f}", rec["count_sd"]),
            "detections": ("–", -1.0)
            if rec["detections"] is None
            else (str(rec["detections"]), float(rec["detections"])),
            "label": ("" if rec["label"] is None else f"{rec['label']:g}", rec["label"]),
            "corrected": ("✓" if rec["corrected"] else "", float(rec["corrected"])),
        }
        self._busy = True
        sorting = self.isSortingEnabled()
        self.setSortingEnabled(False)
        for col, key in enumerate(COLUMNS[1:], start=1):
            item = self.item(row, col)
            item.setText(values[key][0])
            item.setData(Qt.ItemDataRole.UserRole, values[key][1])
            flags = item.flags() | Qt.ItemFlag.ItemIsEditable
            item.setFlags(flags if key in _EDITABLE else flags & ~Qt.ItemFlag.ItemIsEditable)
        self.item(row, 0).setFlags(self.item(row, 0).flags() & ~Qt.ItemFlag.ItemIsEditable)
        for col in range(len(COLUMNS)):
            self.item(row, col).setBackground(_CORRECTED if rec["corrected"] else QColor(0, 0, 0, 0))
        self.item(row, COLUMNS.index("count")).setToolTip("type the right count to correct it")
        name = self.item(row, 0)  # a scan with notes gets a warning sign; its notes on hover
        icon = QStyle.StandardPixmap.SP_MessageBoxWarning
        name.setIcon(self.style().standardIcon(icon) if rec["notes"] else QIcon())
        name.setToolTip("\n".join(f"note: {n}" for n in rec["notes"]))
        self.setSortingEnabled(sorting)
        self._busy = False

    def set_labels(self, labels: dict[str, float]) -> None:
        """Labels from a CSV; rows the user corrected keep their correction."""
        for name, rec in self.records.items():
            if not rec["corrected"]:
                rec["label"] = labels.get(name)
                self._fill(self._row_of(name))

    def corrections(self) -> dict[str, float]:
        """The user's counts: scan → label of every corrected row."""
        return {name: rec["label"] for name, rec in self.records.items() if rec["corrected"]}

    def correct(self, name: str, value: float) -> None:
        """The radiologist's count for a scan: becomes its label, row marked corrected."""
        rec = self.records[name]
        rec["label"], rec["corrected"] = float(value), True
        self._fill(self._row_of(name))
        self.corrected.emit(name)

    def _on_changed(self, item: QTableWidgetItem) -> None:
        if self._busy or COLUMNS[item.column()] not in _EDITABLE:
            return
        name = self.scan_at(item.row())
        text = item.text().strip()
        try:
            value = float(text)
            if not math.isfinite(value) or value < 0:
                raise ValueError
        except ValueError:
            show_error(f"Cohort: '{text}' is not a count (a number ≥ 0)")
            self._fill(item.row())
            return
        self.correct(name, value)

    def export_rows(self, unit: str) -> list[list]:
        """scan, count, count_sd, detections, label, corrected (1/0), unit, notes, in scan order."""
        return [
            [
                name,
                r["count"],
                r["count_sd"],
                "" if r["detections"] is None else r["detections"],
                "" if r["label"] is None else r["label"],
                int(r["corrected"]),
                unit,
                "; ".join(r["notes"]),
            ]
            for name, r in sorted(self.records.items())
        ]

    def noted(self) -> dict[str, list[str]]:
        """scan → its notes, for the scans that have some."""
        return {name: r["notes"] for name, r in self.records.items() if r["notes"]}

    def pairs(self) -> list[tuple[float, float]]:
        """(predicted, label) of every labelled row."""
        return [(r["count"], r["label"]) for r in self.records.values() if r["label"] is not None]
