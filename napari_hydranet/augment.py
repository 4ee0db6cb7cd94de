"""On-the-fly standard augmentation (000 §3.2): flips, small 3D rotations, translations."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """(B, 3) angles in radians → (B, 3, 3) rotation matrices (x, then y, then z)."""
    cx, cy, cz = torch.cos(angles).unbind(1)
    sx, sy, sz = torch.sin(angles).unbind(1)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], 1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], 1).view(-1, 3, 3)
    return rz @ ry @ rx


def augment(
    x: torch.Tensor,
    generator: torch.Generator,
    flip: bool = True,
    max_angle: float = 0.2,
    max_shift: float = 2.0,
) -> torch.Tensor:
    """Randomly flip, rotate (±``max_angle`` rad) and shift (±``max_shift`` voxels) a batch.

    x: (B, C, I, J, K). Each image gets its own draw; trilinear resampling, zeros outside.
    """
    b = x.shape[0]
    dev = x.device

    def uniform(*shape):
        return torch.rand(*shape, generator=generator).to(dev) * 2 - 1

    if flip:
        flips = torch.rand(b, 3, generator=generator) < 0.5
        x = torch.stack([torch.flip(x[i], [d + 1 for d in range(3) if flips[i, d]]) for i in range(b)])
    if max_angle <= 0 and max_shift <= 0:
        return x
    size = torch.tensor(x.shape[2:], dtype=torch.float32, device=dev)
    theta = torch.zeros(b, 3, 4, device=dev)
    # affine_grid works in normalised (k, j, i) coordinates; rotate in voxel units.
    rot = _rotation(uniform(b, 3) * max_angle)
    scale = size.flip(0) / size.max()
    theta[:, :, :3] = rot * (1 / scale).view(1, 3, 1) * scale.view(1, 1, 3)
    shift = uniform(b, 3) * max_shift
    theta[:, :, 3] = shift * 2 / size.flip(0)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def flip_variants(n: int = 8) -> list[tuple[int, ...]]:
    """The first ``n`` of the 8 flip combinations over the three spatial axes (none first)."""
    combos = [tuple(d for d in range(3) if m >> d & 1) for m in range(8)]
    return combos[: max(1, min(n, 8))]
