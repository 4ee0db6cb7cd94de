"""On-the-fly standard augmentation: flips and whole-voxel translations; in pretraining on
lesion masks, optionally smoothing (``smooth``).

Every output voxel is a copy of an input voxel (or zero where the image moved in), so the
noise texture of the scan is unchanged. 000 §3.2 also rotates; resampling a rotated or
sub-voxel-shifted image interpolates, which smooths the noise, and a count network learns
that texture: a fine-tune trained on interpolated scans counted 28 % less on them than on
the scans as they are, and after 30 epochs 65 % more on the real scans than on its training
views (docs/benchmarks.md, "Augmentation").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _shifted(x: torch.Tensor, shift: list[int]) -> torch.Tensor:
    """x: (C, I, J, K) moved by whole voxels along I, J, K; zeros where it moved in."""
    out = torch.zeros_like(x)
    src, dst = [slice(None)], [slice(None)]
    for s, n in zip(shift, x.shape[1:]):
        src.append(slice(max(0, -s), n - max(0, s)))
        dst.append(slice(max(0, s), n - max(0, -s)))
    out[tuple(dst)] = x[tuple(src)]
    return out


def augment(
    x: torch.Tensor, generator: torch.Generator, flip: bool = True, max_shift: int = 2
) -> torch.Tensor:
    """Randomly flip each axis and shift by up to ±``max_shift`` whole voxels, image by image.

    x: (B, C, I, J, K); all channels of an image move together (scan and density target).
    """
    b = x.shape[0]
    flips = torch.rand(b, 3, generator=generator) < 0.5
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 3), generator=generator)
    out = []
    for i in range(b):
        xi = x[i]
        if flip and flips[i].any():
            xi = torch.flip(xi, [d + 1 for d in range(3) if flips[i, d]])
        out.append(_shifted(xi, shifts[i].tolist()) if max_shift > 0 else xi)
    return torch.stack(out)


def smooth(x: torch.Tensor, generator: torch.Generator, p: float, max_sigma: float = 0.7) -> torch.Tensor:
    """Blur each image with probability ``p`` by a Gaussian whose width along each axis is
    drawn from U(0, ``max_sigma``) voxels: the texture of scans interpolated or filtered after
    acquisition, on which the bundled model counted 22–64 % less (docs/benchmarks.md, "Scans
    interpolated after acquisition"). For pretraining on lesion masks only: the target stays
    where the lesions are, so the map must find them whatever the texture.

    x: (B, 1, I, J, K) scans; returns a new tensor.
    """
    chosen = torch.rand(x.shape[0], generator=generator) < p
    sigmas = torch.rand(x.shape[0], 3, generator=generator) * max_sigma
    out = x.clone()
    for i in torch.nonzero(chosen).flatten().tolist():
        xi = x[i : i + 1]
        for axis, sigma in enumerate(sigmas[i].tolist()):
            if sigma < 0.05:
                continue
            taps = torch.arange(-2, 3, dtype=x.dtype, device=x.device)
            kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
            shape = [1, 1, 1, 1, 1]
            shape[axis + 2] = 5
            pad = [0] * 6
            pad[4 - 2 * axis : 6 - 2 * axis] = [2, 2]  # F.pad lists the last axis first
            xi = F.conv3d(F.pad(xi, pad, mode="replicate"), (kernel / kernel.sum()).reshape(shape))
        out[i : i + 1] = xi
    return out


def flip_variants(n: int = 8) -> list[tuple[int, ...]]:
    """The first ``n`` of the 8 flip combinations over the three spatial axes (none first)."""
    combos = [tuple(d for d in range(3) if m >> d & 1) for m in range(8)]
    return combos[: max(1, min(n, 8))]
