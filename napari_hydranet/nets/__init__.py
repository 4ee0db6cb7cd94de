"""Networks: the Hydranet base regressor and GP-UNet (with its no-decoder CAM variant)."""

from .gpunet import GPUNet
from .regressor import HydraRegressor

ARCHITECTURES = {"gpunet": GPUNet, "regressor": HydraRegressor}

__all__ = ["ARCHITECTURES", "GPUNet", "HydraRegressor"]
