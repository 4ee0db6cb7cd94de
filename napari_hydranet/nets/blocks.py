"""Small pieces shared by the networks."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv3(cin: int, cout: int, bias: bool = True) -> nn.Conv3d:
    """3×3×3 convolution with zero padding."""
    return nn.Conv3d(cin, cout, 3, padding=1, bias=bias)


def init_weights(module: nn.Module, std: float | None) -> None:
    """N(0, std) for every weight (000 §3.2 uses 0.05), He-normal when ``std`` is None."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.Linear)):
            if std is None:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Zero-pad the last three dims up to a multiple; return padded tensor and original size."""
    size = tuple(x.shape[-3:])
    pads = []
    for s in reversed(size):
        pads.extend([0, (-s) % multiple])
    if any(pads):
        x = F.pad(x, pads)
    return x, size


def crop_to(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    return x[..., : size[0], : size[1], : size[2]]
