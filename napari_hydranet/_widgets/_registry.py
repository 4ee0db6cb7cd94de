"""The one piece of shared state of the docks: the model folders known in this session.

The Train dock adds the folder of each finished training; the Predict and Cohort docks list
every known folder and refresh their choices when ``changed`` fires.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QObject, Signal

from ..models import DEFAULT_NAME


class ModelRegistry(QObject):
    """An ordered set of model folders ("default" first); ``changed`` fires on additions."""

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self._folders: list[str] = []

    def models(self) -> list[str]:
        return [DEFAULT_NAME, *self._folders]

    def add(self, folder: str | Path) -> str:
        """Remember a model folder; returns its key (the absolute path, or "default", the
        bundled model's name, given as that string)."""
        key = folder if folder == DEFAULT_NAME else str(Path(folder).resolve())  # a Path is a folder
        if key != DEFAULT_NAME and key not in self._folders:
            self._folders.append(key)
            self.changed.emit()
        return key


_REGISTRY: ModelRegistry | None = None


def model_registry() -> ModelRegistry:
    """The session's registry, made on first use (needs a QApplication)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = ModelRegistry()
    return _REGISTRY
