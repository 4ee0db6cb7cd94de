"""The names a training's settings may take, for the core, the CLI and the docks alike.

Plain tuples with no imports, so `hydranet --help` can offer them without loading torch.
The core's registries (``nets.ARCHITECTURES``, ``train.OPTIMIZERS``) hold these names.
"""

ARCHITECTURES = ("gpunet", "regressor")
LOSSES = ("mse", "mae")
OPTIMIZERS = ("adam", "adadelta")
LR_SCHEDULES = ("constant", "cosine")  # after the warm-up: held, or a cosine decay
INTENSITY_REFERENCES = ("percentile", "median")  # what a scan's intensities are divided by
DENSITY_TARGETS = ("voxels", "lesions")  # pretraining's lesion target (data.lesion_target)
EPOCHS = 200  # the most a training runs without --epochs; fine-tunes stop earlier by themselves
