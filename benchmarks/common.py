"""Shared pieces of the comparison benchmarks: a simulated cohort split into a training
pool and a test set, its prepared network inputs (cached), and evaluation of a model's
counts and detections against the simulation's truth.

A cohort folder is what ``benchmarks/simulate.py`` writes. Training labels are the rater's
(``labels.csv``); test scores are against the expert count (``expert.csv``) and the centres
of the visible lesions (``lesions.csv``), in voxel indices of the source files.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from napari_hydranet.detect import count_consistent, score_map
from napari_hydranet.infer import run_network
from napari_hydranet.io import read_scan, write_csv
from napari_hydranet.metrics import agreement, detection_scores, froc, match, sensitivity_at
from napari_hydranet.preprocess import PreprocessConfig, prepare

RADIUS = 3.0  # voxels: a detection within this distance of a lesion centre finds it (004 §3)


def _table(path: Path, column: str = "label") -> dict[str, float]:
    with open(path, newline="") as fh:
        return {r["scan"]: float(r[column]) for r in csv.DictReader(fh)}


@dataclass
class SimCohort:
    """A simulated cohort: names, rater and expert labels, lesion centres, prepared inputs."""

    root: Path
    names: list[str]
    rater: np.ndarray
    expert: np.ndarray
    centres: list[np.ndarray]  # visible lesions, source voxel indices (i, j, k)
    images: np.ndarray  # (N, I, J, K) network inputs (preprocessed with ``pre``)
    offsets: np.ndarray  # (N, 3) crop offsets: source index = crop index + offset (NaN: resampled)
    spacing: np.ndarray  # (N, 3) voxel sizes, mm
    train_source: str = "rater"  # whose counts the training scans carry: "rater" or "expert"
    pre: PreprocessConfig = PreprocessConfig()
    cache_key: str = ""  # what the cached inputs were made from (``cache_key``)

    def training_labels(self, idx: np.ndarray) -> np.ndarray:
        return getattr(self, self.train_source)[idx]

    def index(self, names) -> np.ndarray:
        where = {n: i for i, n in enumerate(self.names)}
        return np.array([where[n] for n in names])


def cache_suffix(pre: PreprocessConfig) -> str:
    """Names the caches of one preprocessing; the default keeps the old names (no suffix)."""
    key = json.dumps(pre.to_dict(), sort_keys=True)
    return "" if pre == PreprocessConfig() else "-" + hashlib.sha1(key.encode()).hexdigest()[:8]


def load_labels(root: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A simulated cohort's scan names (sorted, the order of every index here), rater and expert counts."""
    rater, expert = _table(Path(root) / "labels.csv"), _table(Path(root) / "expert.csv")
    names = sorted(expert)
    return names, np.array([rater[n] for n in names]), np.array([expert[n] for n in names])


def cache_key(root: Path, names: list[str], pre: PreprocessConfig) -> str:
    """What a cache of prepared inputs depends on: the preprocessing, and each scan and mask
    file's name, size and modification time (a cohort simulated again into the same folder,
    or extended, makes its caches stale)."""
    files = []
    for n in names:
        for kind in ("scans", "masks"):
            stat = (Path(root) / kind / n).stat()
            files.append([kind, n, stat.st_size, stat.st_mtime_ns])
    return json.dumps({"pre": pre.to_dict(), "files": files}, sort_keys=True)


def load_sim(root: Path, pre: PreprocessConfig | None = None) -> SimCohort:
    """Read a simulated cohort and prepare every scan once (cached in ``root/prepared.npz``,
    remade when the preprocessing or the scan files change)."""
    root = Path(root)
    pre = pre or PreprocessConfig()
    names, rater, expert = load_labels(root)
    centres: dict[str, list] = {n: [] for n in names}
    if (root / "lesions.csv").exists():  # the WMH task has volumes, not lesion centres
        with open(root / "lesions.csv", newline="") as fh:
            for r in csv.DictReader(fh):
                if r["visible"].strip() == "1":
                    centres[r["scan"]].append([float(r[k]) for k in "ijk"])
    key = cache_key(root, names, pre)
    cache = root / f"prepared{cache_suffix(pre)}.npz"
    if cache.exists() and str(np.load(cache)["key"]) == key:
        z = np.load(cache)
        images, offsets, spacing = z["images"], z["offsets"], z["spacing"]
    else:
        images, offsets, spacing = [], [], []
        for n in names:
            scan = read_scan(root / "scans" / n)
            p = prepare(scan, pre, read_scan(root / "masks" / n))
            images.append(p.array)
            offsets.append(p.offset if p.on_source_grid else (np.nan,) * 3)  # see source_offsets
            spacing.append(np.sqrt((scan.affine[:3, :3] ** 2).sum(0)))
        images, offsets, spacing = np.stack(images), np.array(offsets), np.array(spacing)
        np.savez(cache, images=images, offsets=offsets, spacing=spacing, key=key)
    return SimCohort(
        root,
        names,
        rater,
        expert,
        [np.array(centres[n], float).reshape(-1, 3) for n in names],
        images,
        offsets,
        spacing,
        pre=pre,
        cache_key=key,
    )


def source_offsets(cohort: SimCohort) -> np.ndarray:
    """The crop offsets, for scoring against lesion centres in the files' voxel indices: only
    scans the network sees on their own grid (stored RAS, not resampled) have one."""
    if np.isnan(cohort.offsets).any():
        raise SystemExit(f"{cohort.root}: lesion scores need scans on the network's grid (not resampled)")
    return cohort.offsets


def splits(cohort: SimCohort, n_test: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(training pool, test set) indices: the last ``n_test`` scans are the test set."""
    n = len(cohort.names)
    if n <= n_test:
        raise SystemExit(f"{cohort.root}: {n} scans; need more than {n_test}")
    return np.arange(n - n_test), np.arange(n - n_test, n)


def draw_training(pool: np.ndarray, size: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(pool, size, replace=False))


def write_labels(cohort: SimCohort, idx: np.ndarray, path: Path) -> Path:
    """A training labels CSV (``cohort.train_source``'s labels) for the scans ``idx``."""
    labels = cohort.training_labels(idx)
    write_csv(path, ["scan", "label"], [[cohort.names[i], y] for i, y in zip(idx, labels)])
    return path


def prepared_as(cohort: SimCohort, pre: PreprocessConfig) -> SimCohort:
    """The same cohort (and training labels) with its scans prepared by ``pre``."""
    if pre == cohort.pre:
        return cohort
    other = load_sim(cohort.root, pre)
    other.train_source = cohort.train_source
    return other


def for_model(cohort: SimCohort, model) -> SimCohort:
    """The cohort prepared as ``model`` expects (its intensity reference, crop, ...)."""
    return prepared_as(cohort, model.preprocess)


def model_outputs(model, cohort: SimCohort, idx: np.ndarray, flips: int = 1) -> tuple[np.ndarray, list]:
    """Counts and heatmaps (None for models without one) of ``model`` on scans ``idx``,
    each scan prepared as the model expects."""
    cohort = for_model(cohort, model)
    counts, heats = [], []
    for i in idx:
        c, h = run_network(model, cohort.images[i], torch.device("cpu"), flips)
        counts.append(float(np.mean(c)))
        heats.append(h)
    return np.array(counts), heats


def count_scores(pred: np.ndarray, cohort: SimCohort, idx: np.ndarray) -> dict:
    """Agreement (ICC(2,1), ICC(3,1), MAE, MSE) with the expert count, and in ``vs_rater``
    with the training labels' rater on the same test scans."""
    return {**agreement(pred, cohort.expert[idx]), "vs_rater": agreement(pred, cohort.rater[idx])}


def detect_scores(
    maps: list[np.ndarray], counts: np.ndarray, cohort: SimCohort, idx: np.ndarray, fp_limit: float = 1.5
) -> dict:
    """Count-consistent detections on each score map (004 §2.2) against the lesion centres;
    plus an FROC from the map's highest local maxima (3× the count + 10 of them, scored by
    their value), and the sensitivity at ≤ ``fp_limit`` false positives per scan."""
    matches, candidates, truths = [], [], []
    offsets = source_offsets(cohort)
    for m, c, i in zip(maps, counts, idx):
        truth = cohort.centres[i]
        found = count_consistent(m, c).detections
        matches.append(match(np.array([d.centre for d in found]).reshape(-1, 3) + offsets[i], truth, RADIUS))
        centres, values = local_peaks(m, 3 * int(round(max(c, 0))) + 10)
        candidates.append((centres + offsets[i], values))
        truths.append(truth)
    scores = np.concatenate([s for _, s in candidates] or [np.zeros(1)])
    levels = np.unique(np.quantile(scores, np.linspace(0, 1, 80)))[::-1]
    curve = froc(candidates, truths, RADIUS, levels)
    return {
        **detection_scores(matches),
        "tpr_at_fp": sensitivity_at(curve, fp_limit),
        "fp_limit": fp_limit,
        "froc": {k: v.tolist() for k, v in curve.items()},
    }


def local_peaks(score_map: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` highest local maxima (3×3×3) above the map's minimum: voxel indices, values."""
    peak = (ndimage.maximum_filter(score_map, size=3) == score_map) & (score_map > score_map.min())
    idx = np.argwhere(peak)
    values = score_map[peak]
    order = np.argsort(-values, kind="stable")[:n]
    return idx[order].astype(float).reshape(-1, 3), values[order].astype(float)


def intensity_map(cohort: SimCohort, i: int) -> np.ndarray:
    """004 (a): the network input itself (ROI-weighted, rescaled intensities)."""
    return cohort.images[i]


def combined_map(heat: np.ndarray, cohort: SimCohort, i: int, weight: float = 0.5) -> np.ndarray:
    """004 (f): heatmap and intensities, weighted."""
    return score_map(heat, cohort.images[i], weight)


def save_json(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=float))
