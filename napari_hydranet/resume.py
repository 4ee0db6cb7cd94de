"""A training's ``resume/`` folder: the network, optimiser and random states after its last
finished epoch (``state.safetensors``) and its history, best epoch and settings (``state.json``).

Written atomically after every epoch; read back without executing code, and refused with the
file and the missing field named when damaged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .errors import HydranetError
from .io import atomic_write_files

# What resuming reads from state.json, and its type.
KEYS = {
    "config": dict,
    "epoch": int,
    "history": list,
    "numpy_rng": dict,
    "param_groups": list,
    "opt_scalars": dict,
}


def save_state(folder: Path, net, opt, state: dict, gen: torch.Generator) -> None:
    """Write ``state`` (JSON-able: epoch, history, best, config, numpy_rng) with the network's,
    the optimiser's and ``gen``'s states."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    opt_state = opt.state_dict()
    scalars = {}
    for pid, pstate in opt_state["state"].items():
        for k, v in pstate.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    tensors["rng.torch"] = gen.get_state()
    # the epoch in both files: a training killed between the two renames is told, not mixed
    state = dict(state, opt_scalars=scalars, param_groups=opt_state["param_groups"])
    atomic_write_files(
        {
            folder / "state.safetensors": safetensors_bytes(tensors, {"epoch": str(state["epoch"])}),
            folder / "state.json": json.dumps(state, indent=1).encode(),
        }
    )


def _net_weights(tensors: dict) -> dict:
    return {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}


def resume_weights(folder: Path) -> dict:
    """The network's weights at the last finished epoch, from a training's ``resume/`` folder."""
    return _net_weights(load_file(str(Path(folder) / "state.safetensors")))


def read_state(folder: Path) -> dict:
    """``state.json`` of a training's ``resume/`` folder, checked for what resuming reads."""
    path = folder / "state.json"
    try:
        state = json.loads(path.read_text())
    except OSError as exc:
        raise HydranetError(f"{path}: cannot resume: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise HydranetError(f"{path}: cannot resume: not JSON ({exc})") from None
    if not isinstance(state, dict):
        raise HydranetError(f"{path}: cannot resume: not a training's state")
    wrong = [k for k, kind in KEYS.items() if not isinstance(state.get(k), kind)]
    if wrong or "best" not in state:
        lacks = ", ".join(wrong + ([] if "best" in state else ["best"]))
        raise HydranetError(f"{path}: cannot resume: missing or malformed {lacks}")
    return state


def load_state(folder: Path, state: dict, net, opt, gen: torch.Generator, rng: np.random.Generator) -> None:
    """Put the saved network, optimiser and random states back; ``state`` is state.json's."""
    path = folder / "state.safetensors"
    try:
        with safe_open(str(path), "pt") as fh:
            epoch = (fh.metadata() or {}).get("epoch")
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    except (SafetensorError, OSError) as exc:
        raise HydranetError(f"{path}: cannot resume: {exc}") from None
    if epoch is not None and epoch != str(state["epoch"]):
        raise HydranetError(
            f"{folder}: cannot resume: state.safetensors is from epoch {epoch}, state.json from "
            f"epoch {state['epoch']} (the training was killed while saving); the best model beside "
            "resume/ is whole: fine-tune from it with --init"
        )
    try:
        net.load_state_dict(_net_weights(tensors))
        opt_state: dict = {"state": {}, "param_groups": state["param_groups"]}
        for key, v in tensors.items():
            if key.startswith("opt."):
                _, pid, name = key.split(".", 2)
                opt_state["state"].setdefault(int(pid), {})[name] = v
        for key, v in state["opt_scalars"].items():
            pid, name = key.split(".", 1)
            opt_state["state"].setdefault(int(pid), {})[name] = v
        opt.load_state_dict(opt_state)
        gen.set_state(tensors["rng.torch"])
        rng.bit_generator.state = state["numpy_rng"]
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise HydranetError(
            f"{path}: cannot resume: the saved state does not fit this training's network "
            f"or optimiser ({exc})"
        ) from None
