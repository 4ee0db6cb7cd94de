"""Choosing where tensors live: CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

from .errors import HydranetError
from .text import plural


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; a named device must be available."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HydranetError(f"--device {name}: no CUDA GPU is available here (use auto or cpu)")
    index = name.partition(":")[2]
    if name.startswith("cuda") and index.isdigit() and int(index) >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise HydranetError(
            f"--device {name}: this machine has {plural(n, 'CUDA GPU')} "
            f"({', '.join(f'cuda:{i}' for i in range(n))})"
        )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise HydranetError("--device mps: Apple MPS is not available here (use auto or cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise HydranetError(f"--device {name}: unknown device (auto, cpu, cuda, mps)") from None


def place(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move ``net`` to ``device``; on the CPU in channels-last 3D layout.

    oneDNN's 3D convolutions run about twice as fast channels-last on the CPU (training
    step and prediction, benchmarks/speed.py); the arithmetic is the same up to rounding.
    Inputs may stay in the default layout: the convolutions follow the weights'.
    """
    device = torch.device(device)
    layout = torch.channels_last_3d if device.type == "cpu" else torch.preserve_format
    return net.to(device=device, memory_format=layout)
