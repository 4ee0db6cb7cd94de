"""GP-UNet (004 §2.2): a 3D U-Net-like regressor whose pooled output is the lesion count."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import conv3, crop_to, init_weights, pad_to_multiple


def soft_gradient_relu(u: torch.Tensor) -> torch.Tensor:
    """ReLU in value, with the softplus derivative sigmoid(u) in the backward pass.

    The background stays exactly zero (no count from it, black images give 0), but voxels
    below the threshold still receive gradient, so a density that was pushed under zero
    everywhere can come back instead of dying for good.
    """
    soft = F.softplus(u)
    return soft - (soft - F.relu(u)).detach()


class GPUNet(nn.Module):
    """3D FCN trained on counts that gives a full-size heatmap at test time.

    Encoder: per level two 3×3×3 convolutions with ReLU, 2×2×2 max pooling between levels;
    decoder: 2×2×2 upsampling, concatenated skip connection, two convolutions with ReLU;
    last: a 1×1×1 convolution to one map, which the count head below turns into the heatmap.

    Two count heads (``head``):

    ``"gap"`` (004 Eq. 2): count = w · GAP(f) + b; heatmap M = Σ wᵢ fᵢ (Eq. 3). The count
    is the heatmap's *mean* plus b, so one lesion of ~10 voxels in a 64×52×40 crop moves it
    by ~1e-4 of a feature unit, and training from count labels alone stalls (docs).

    ``"density"`` (default): M = s · ReLU(w · f + b) and count = Σ M, s a fixed scale. The same linear map of
    the last features, pooled by a sum instead of a mean, with a ReLU that keeps the
    background at exactly zero (it then adds neither count nor gradient). The convolutions
    have no bias, so an all-zero (black) image gives a count of exactly 0, as set-sum
    augmentation assumes (000 Eq. 2). The ReLU passes a softplus gradient, so it cannot
    die (in training mode; eval passes the plain ReLU gradient, as saliency maps need).
    ``calibrate.calibrate_output`` sets b and s from data before training.

    ``decoder=False`` drops the upsampling path (the CAM-like regression network, 004
    baseline d); its heatmap is upsampled to the input size.

    Parameters
    ----------
    features : feature maps per level, from the finest.
    in_channels : input channels.
    head : "density" or "gap".
    decoder : keep the upsampling path.
    init_std : weights ~ N(0, init_std); None for He-normal.
    """

    has_heatmap = True

    def __init__(
        self,
        features: tuple[int, ...] = (8, 16, 32),
        in_channels: int = 1,
        head: str = "density",
        decoder: bool = True,
        init_std: float | None = None,
    ):
        super().__init__()
        if head not in ("density", "gap"):
            raise ValueError(f"head must be 'density' or 'gap', not {head!r}")
        features = tuple(int(f) for f in features)
        self.head, self.decoder = head, decoder
        bias = head == "gap"
        self.down = nn.ModuleList()
        cin = in_channels
        for f in features:
            self.down.append(nn.ModuleList([conv3(cin, f, bias), conv3(f, f, bias)]))
            cin = f
        self.up = nn.ModuleList()
        if decoder:
            for f_skip in reversed(features[:-1]):
                self.up.append(
                    nn.ModuleList([conv3(cin + f_skip, f_skip, bias), conv3(f_skip, f_skip, bias)])
                )
                cin = f_skip
        self.last = nn.Conv3d(cin, 1, 1, bias=True)
        # Fixed (not trained) count units per unit of ReLU(w·f + b): keeps w and b of order
        # one, so optimiser steps stay small relative to them; set by ``calibrate``.
        self.register_buffer("count_scale", torch.ones(()))
        self.multiple = 2 ** (len(features) - 1)
        init_weights(self, init_std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature maps f, (B, C, I', J', K') on the padded grid."""
        skips = []
        h = x
        for i, (c1, c2) in enumerate(self.down):
            if i > 0:
                h = F.max_pool3d(h, 2)
            h = F.relu(c2(F.relu(c1(h))))
            skips.append(h)
        for (c1, c2), skip in zip(self.up, reversed(skips[:-1])):
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = F.relu(c2(F.relu(c1(torch.cat([h, skip], 1)))))
        return h

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, I, J, K) → counts (B,), heatmaps (B, I, J, K) at the input size."""
        xp, size = pad_to_multiple(x, self.multiple)
        f = self.features(xp)
        z = F.conv3d(f, self.last.weight)  # Σ wᵢ fᵢ, without bias
        if self.head == "density":  # the softplus gradient is for training; eval (saliency) gets ReLU's
            relu = soft_gradient_relu if self.training else F.relu
            z = self.count_scale * relu(z + self.last.bias.view(1, -1, 1, 1, 1))
        if not self.decoder:
            cells = (xp.shape[-3] * xp.shape[-2] * xp.shape[-1]) / z[0, 0].numel()
            z = F.interpolate(z, size=xp.shape[-3:], mode="trilinear", align_corners=False)
            if self.head == "density":  # keep Σ heatmap = count on the finer grid
                z = z / cells
        heat = crop_to(z, size)[:, 0]
        if self.head == "density":
            return heat.sum(dim=(1, 2, 3)), heat
        return heat.mean(dim=(1, 2, 3)) + self.last.bias[0], heat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, I, J, K) → counts (B,)."""
        return self.forward_both(x)[0]

    @property
    def output_bias(self) -> torch.Tensor:
        return self.last.bias
