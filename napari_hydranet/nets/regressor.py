"""The Hydranet base regressor (000 Fig. 1)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import conv3, init_weights


class HydraRegressor(nn.Module):
    """Shallow 3D ResNet-like regressor: one number per image.

    Two blocks of two 3×3×3 convolutions (``width`` and ``2·width`` features) with ReLU,
    each block's input concatenated to its output (the skip connections of 000 Fig. 1),
    a 2×2×2 max pooling between the blocks, global average pooling and a fully connected
    output without activation. With the defaults it has 196,418 parameters, as in 000 §2.

    Parameters
    ----------
    width : features of the first block.
    in_channels : input channels.
    init_std : weights ~ N(0, init_std); None for He-normal.
    """

    has_heatmap = False

    def __init__(self, width: int = 32, in_channels: int = 1, init_std: float | None = 0.05):
        super().__init__()
        self.block1 = nn.ModuleList([conv3(in_channels, width), conv3(width, width)])
        c1 = in_channels + width
        self.block2 = nn.ModuleList([conv3(c1, 2 * width), conv3(2 * width, 2 * width)])
        self.fc = nn.Linear(c1 + 2 * width, 1)
        # Fixed standardisation of the pooled features (set from data by ``calibrate``):
        # pooled means vary across scans by ~1e-2, so without it the output would need
        # weights of ~1e2 to span the labels, far from where an optimiser starts.
        self.register_buffer("pool_mean", torch.zeros(c1 + 2 * width))
        self.register_buffer("pool_scale", torch.ones(c1 + 2 * width))
        init_weights(self, init_std)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, I, J, K) → standardised global-average-pooled features (B, F)."""
        h = x
        for conv in self.block1:
            h = F.relu(conv(h))
        h = F.max_pool3d(torch.cat([x, h], 1), 2, ceil_mode=True)
        g = h
        for conv in self.block2:
            g = F.relu(conv(g))
        pooled = torch.cat([h, g], 1).mean(dim=(2, 3, 4))
        return (pooled - self.pool_mean) / self.pool_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, I, J, K) → counts (B,)."""
        return self.fc(self.pooled(x)).squeeze(1)

    @property
    def output_bias(self) -> torch.Tensor:
        return self.fc.bias
