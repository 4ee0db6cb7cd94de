"""napari-hydranet: lesion counts and localisation from one global label per scan."""

__version__ = "0.3.0"
