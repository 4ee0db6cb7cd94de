"""Model folders: ``weights.safetensors`` + ``config.json``; loading never executes code."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from . import __version__
from .device import place
from .errors import HydranetError
from .io import atomic_write_files
from .nets import ARCHITECTURES
from .preprocess import PreprocessConfig
from .text import figure, json_safe

FORMAT = "napari-hydranet-model"
# The newest format this package reads. A model is saved with the lowest version that holds
# it (``format_version_of``), so older packages keep reading the models they can use.
FORMAT_VERSION = 2
WEIGHTS, CONFIG = "weights.safetensors", "config.json"
DIGEST = "weights_sha256"  # in the config
DEFAULT_NAME = "default"


@dataclass
class Model:
    """A network with everything needed to use it on new scans."""

    net: torch.nn.Module
    config: dict
    path: Path | None = None

    @property
    def arch(self) -> str:
        return self.config["architecture"]["name"]

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.config.get("preprocess", {}))

    @property
    def label(self) -> dict:
        return self.config.get("label", {"name": "count", "unit": ""})

    def card(self, full: bool = False) -> str:
        """A human-readable description for the widget and the CLI: what the model counts, its
        notice, its validation and detection figures and its training data, cut to the first
        clause unless ``full``. A hand-edited config.json that cannot be described is an error
        naming it."""
        try:
            return self._card(full)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            where = self.path / CONFIG if self.path else CONFIG
            raise HydranetError(f"{where}: malformed description ({type(exc).__name__}: {exc})") from None

    def _card(self, full: bool) -> str:
        lab = self.label
        val = self.config.get("validation") or {}
        det = self.config.get("detection") or {}
        data = (self.config.get("training") or {}).get("data", "unknown data")
        if not full and "; " in data:
            data = data.split("; ", 1)[0] + " …"
        lines = [
            f"{self.config.get('name', self.path.name if self.path else 'model')}: "
            f"{self.arch}, counts {lab.get('name', 'count')} ({lab.get('unit', '')})"
        ]
        if self.config.get("notice"):
            lines.append(self.config["notice"])
        if val.get("icc21") is not None:
            # a training's own validation scans chose its epoch: a hopeful figure on a few scans
            where = f"; {val['cohort']}" if val.get("cohort") else "; the scans that chose this epoch"
            lines.append(
                f"validation: ICC(2,1) {val['icc21']:.2f}, MAE {val.get('mae', float('nan')):.2f}"
                f"{' ' + lab['unit'] if lab.get('unit') else ''} "
                f"(n = {val.get('n', '?')}{where})"
            )
        if det.get("tpr") is not None:
            lines.append(
                f"detection: sensitivity {det['tpr']:.0%} at {det['fp_per_scan']:.2f} false positives "
                f"per scan (within {det.get('radius_voxels', '?')} voxels of a lesion, "
                f"{det.get('scans', '?')} scans)"
            )
        pre = self.preprocess
        if pre.spacing_range_mm:
            typical = "×".join(f"{v:.2f}" for v in pre.spacing_mm) if pre.spacing_mm else None
            lines.append(
                f"voxels: {pre.spacing_range_mm[0]:.3g}–{pre.spacing_range_mm[1]:.3g} mm; scans outside "
                f"this range are resampled{f' to {typical} mm' if typical else ' into it'}"
            )
        training = self.config.get("training") or {}
        texture = training.get("noise_texture")
        if full and texture:  # texture.py; in the long card (tooltip, hydranet info) only
            low, high = texture["range"]
            lines.append(
                f"noise texture of its training scans: {low:.2f}–{high:.2f} (2nd–98th percentile, in "
                f"the {texture['region']}); scans with smoother noise (interpolated, smoothed) are noted"
            )
        init = (training.get("settings") or {}).get("init")
        if init:  # what a user's model started from, and whether its counts were refitted
            recal = training.get("recalibration") or {}
            refit = ""
            if "kept" in recal:
                before, after = (figure(recal.get(k)) for k in ("val_icc21_before", "val_icc21_after"))
                refit = (
                    f"; count recalibration {'kept' if recal['kept'] else 'not kept'} (validation "
                    f"ICC(2,1) {before} → {after})"
                )
            lines.append(f"started from: {init}{refit}")
        lines.append(f"trained on: {data}")  # last: the long paragraph the short card cuts
        return "\n".join(lines)


def build_net(arch: str, args: dict) -> torch.nn.Module:
    if arch not in ARCHITECTURES:
        raise HydranetError(f"unknown architecture '{arch}' (known: {', '.join(ARCHITECTURES)})")
    if not isinstance(args, dict):
        raise HydranetError(f"architecture '{arch}': arguments must be a JSON object, not {args!r}")
    try:
        return ARCHITECTURES[arch](**args)
    except (TypeError, ValueError) as exc:
        raise HydranetError(f"architecture '{arch}': bad arguments {args} ({exc})") from None
    except (RuntimeError, MemoryError) as exc:  # {"features": [200000, 200000]}; [-4, 8]
        too_big = isinstance(exc, MemoryError) or "alloc" in str(exc)
        why = "make too large a network" if too_big else f"are refused ({exc})"
        raise HydranetError(f"architecture '{arch}': arguments {args} {why}") from None


def default_model_dir() -> Path:
    """The model folder shipped inside the package."""
    return Path(str(resources.files("napari_hydranet") / "data" / "default_model"))


def resolve_model_dir(name: str | os.PathLike) -> Path:
    """The string ``default`` names the bundled model; anything else is a folder path (a
    ``Path``, or ``./default``, is a folder even where its name is ``default``)."""
    return default_model_dir() if isinstance(name, str) and name == DEFAULT_NAME else Path(name)


def format_version_of(config: dict) -> int:
    """1, or 2 for inputs an older package would scale otherwise (a median intensity reference)."""
    reference = config.get("preprocess", {}).get("intensity_reference", "percentile")
    return 1 if reference == "percentile" else 2


def save_model(folder: str | os.PathLike, net: torch.nn.Module, config: dict) -> Path:
    """Write weights and config together (``atomic_write_files``); config last, so a new
    folder holding a config.json holds its weights too. The config records the weights'
    SHA-256, so a folder whose two files come from different saves is refused on loading."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = dict(config)
    cfg.update(format=FORMAT, format_version=format_version_of(cfg), package_version=__version__)
    cfg.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    buffer = safetensors_bytes(tensors, {"format": FORMAT})
    cfg[DIGEST] = hashlib.sha256(buffer).hexdigest()
    text = json.dumps(json_safe(cfg), indent=2).encode()
    atomic_write_files({folder / WEIGHTS: buffer, folder / CONFIG: text})
    return folder


def _check_digest(folder: Path, config: dict, weights: bytes) -> None:
    """Refuse ``weights`` (the file's bytes) that are not those the config was saved with
    (older models record no digest and are not checked)."""
    digest = config.get(DIGEST)
    if digest is None:
        return
    if hashlib.sha256(weights).hexdigest() != digest:
        raise HydranetError(
            f"{folder}: {WEIGHTS} is not the one {CONFIG} was saved with (a save interrupted "
            "between the two files, or one file copied from another model); use a complete copy "
            "of the model folder"
        )


def read_config(folder: str | os.PathLike) -> dict:
    folder = resolve_model_dir(folder)
    if folder.is_file():
        raise HydranetError(f"{folder}: a file; a model is a folder (config.json, weights.safetensors)")
    if not folder.is_dir():
        raise HydranetError(f"{folder}: no such model folder")
    missing = [f for f in (CONFIG, WEIGHTS) if not (folder / f).is_file()]
    if missing:
        raise HydranetError(f"{folder}: not a napari-hydranet model folder (missing {', '.join(missing)})")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HydranetError(f"{folder / CONFIG}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise HydranetError(f"{folder / CONFIG}: not a napari-hydranet model config")
    version = config.get("format_version", 0)
    if not isinstance(version, int) or not isinstance(config.get("architecture", {}), dict):
        raise HydranetError(
            f"{folder / CONFIG}: malformed (format_version must be a number, architecture an object)"
        )
    label = config.get("label", {})
    if not isinstance(label, dict) or not all(isinstance(v, str) for v in label.values()):
        raise HydranetError(
            f"{folder / CONFIG}: malformed label (expected an object such as "
            '{"name": "EPVS count", "unit": "lesions"})'
        )
    if version > FORMAT_VERSION:
        raise HydranetError(
            f"{folder}: model format {config['format_version']} is newer than this "
            f"napari-hydranet ({__version__}) reads; update the package"
        )
    try:
        PreprocessConfig.from_dict(config.get("preprocess", {}))
    except HydranetError as exc:
        raise HydranetError(f"{folder / CONFIG}: {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise HydranetError(f"{folder / CONFIG}: malformed preprocess settings ({exc})") from None
    return config


def load_model(folder: str | os.PathLike, device: torch.device | str = "cpu") -> Model:
    """Load a model folder; errors say what is missing or does not fit."""
    folder = resolve_model_dir(folder)
    config = read_config(folder)
    arch = config.get("architecture", {})
    try:
        net = build_net(arch.get("name", "?"), arch.get("args", {}))
    except HydranetError as exc:
        raise HydranetError(f"{folder / CONFIG}: {exc}") from None
    try:
        weights = (folder / WEIGHTS).read_bytes()  # read once: loaded and checked against the digest
        state = safetensors_load(weights)
    except (SafetensorError, OSError) as exc:
        raise HydranetError(f"{folder / WEIGHTS}: unreadable weights ({exc})") from None
    expected = net.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k}: shape {tuple(state[k].shape)} ≠ {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems += [
        f"{k}: {str(state[k].dtype).removeprefix('torch.')} numbers, not floating point"
        for k, v in expected.items()
        if k in state and v.is_floating_point() and not state[k].is_floating_point()
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (" …" if len(problems) > 5 else "")
        raise HydranetError(f"{folder}: weights do not fit a {arch.get('name')} network ({shown})")
    _check_digest(folder, config, weights)
    net.load_state_dict(state)
    place(net, device).eval()
    return Model(net, config, folder)
