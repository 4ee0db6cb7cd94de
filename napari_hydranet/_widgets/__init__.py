"""The plugin's dock widgets (all Qt code of the package lives here)."""

from .cohort import CohortWidget
from .predict import PredictWidget
from .train import TrainWidget

__all__ = ["CohortWidget", "PredictWidget", "TrainWidget"]
