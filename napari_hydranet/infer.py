"""Inference: counts with test-time flips, heatmaps, detections, written as CSV and NIfTI."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .augment import flip_variants
from .detect import DetectionResult, count_consistent, score_map
from .errors import HydranetError
from .io import (
    HEATMAP_SUFFIX,
    Scan,
    check_folder_output,
    check_masks_folder,
    check_table_output,
    find_mask,
    read_scan,
    scan_stem,
    write_csv,
    write_volume,
)
from .models import Model
from .preprocess import Prepared, prepare
from .provenance import check_record_output, finish_record, run_settings, start_record, write_record
from .texture import MARGIN as TEXTURE_MARGIN

COUNT_COLUMNS = ["scan", "count", "count_sd", "detections", "threshold", "unit", "path", "notes"]
OLD_COUNT_COLUMNS = COUNT_COLUMNS[:-1]  # before 0.4: an earlier run's table is overwritten too
NOT_COUNTED = "not counted: "  # the notes of a scan that could not be predicted, before the reason
DETECTION_COLUMNS = ["scan", "lesion", "i", "j", "k", "x", "y", "z", "size", "score", "size_mm3"]


def format_count(value: float, digits: int = 1) -> str:
    """A count for people to read: ``digits`` decimals, and never "-0.0" for a count near 0."""
    return f"{round(value, digits) + 0.0:.{digits}f}"  # -0.0 + 0.0 is +0.0


def rounded(coordinates: np.ndarray) -> np.ndarray:
    """Voxel or mm coordinates to 1e-4, far below any scan's precision: no 1.8e-06 from
    rounding errors, and no -0."""
    return np.round(coordinates, 4) + 0.0


@dataclass
class Prediction:
    """What a model says about one scan.

    ``heatmap`` is on the crop grid of ``prepared`` (None for models without one);
    detections' centres are crop voxel coordinates, mapped to the source file on export.
    """

    scan: str
    path: Path | None
    count: float
    count_sd: float
    prepared: Prepared
    heatmap: np.ndarray | None = None
    result: DetectionResult | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n_detections(self) -> int | None:
        """How many detections; None for a model without a heatmap (a regressor: counts only)."""
        return None if self.result is None else len(self.result.detections)

    def detections_text(self) -> str:
        """ "7 detections", or what a model without a heatmap gives instead of "0 detections"."""
        n = self.n_detections
        return "no heatmap or detections (a regressor)" if n is None else f"{n} detections"

    def summary(self, unit: str) -> str:
        """The count and its spread over the test-time flips, e.g. "6.5 ± 0.3 lesions"."""
        return f"{format_count(self.count)} ± {self.count_sd:.1f} {unit}".rstrip()

    def count_row(self, unit: str) -> list:
        """The row of the counts CSV (``COUNT_COLUMNS``)."""
        threshold = self.result.threshold if self.result else ""
        return [
            self.scan,
            self.count,
            self.count_sd,
            self.n_detections,
            threshold,
            unit,
            str(self.path) if self.path else "",
            "; ".join(self.notes),
        ]

    def source_heatmap(self) -> np.ndarray | None:
        """The heatmap on the source file's grid (its sum is still the count)."""
        return None if self.heatmap is None else self.prepared.uncrop(self.heatmap, density=True)

    def detection_rows(self, source_affine: np.ndarray) -> list[list]:
        """Rows of the detections CSV: source voxel indices and world mm of each centre."""
        if not self.result:
            return []
        voxel_mm3 = self.prepared.voxel_mm3  # sizes are counted on the network's grid
        dets = self.result.detections
        ijk = self.prepared.to_source_index(np.array([d.centre for d in dets], float).reshape(-1, 3))
        xyz = ijk @ source_affine[:3, :3].T + source_affine[:3, 3]
        ijk, xyz = rounded(ijk), rounded(xyz)
        return [
            [self.scan, n, *i, *x, det.size, det.score, det.size * voxel_mm3]
            for n, (det, i, x) in enumerate(zip(dets, ijk, xyz), start=1)
        ]


@torch.no_grad()
def run_network(
    model: Model, array: np.ndarray, device: torch.device, flips: int = 8
) -> tuple[list[float], np.ndarray | None]:
    """Counts for each flip of one prepared volume, and the mean heatmap (flipped back)."""
    net = model.net
    x = torch.from_numpy(array)[None, None].to(device)
    counts, heat = [], None
    for dims in flip_variants(flips):  # one flip at a time: memory stays that of one pass
        flipped = torch.flip(x, [d + 2 for d in dims]) if dims else x
        if getattr(net, "has_heatmap", False):
            count, h = net.forward_both(flipped)
            h = torch.flip(h[0], list(dims)) if dims else h[0]
            heat = h if heat is None else heat + h
        else:
            count = net(flipped)
        counts.append(float(count.float().cpu()[0]))
    if heat is not None:
        heat = (heat / len(counts)).float().cpu().numpy()
    if not np.all(np.isfinite(counts)) or (heat is not None and not np.all(np.isfinite(heat))):
        raise HydranetError(
            f"{model.path or 'the model'}: the network gave a NaN or infinite output (its weights "
            "may hold NaNs, e.g. from a diverged training); use another model"
        )
    return counts, heat


def predict_prepared(
    model: Model,
    prepared: Prepared,
    device: torch.device,
    flips: int = 8,
    intensity_weight: float = 0.0,
    path: Path | None = None,
) -> Prediction:
    """Count (mean over the test-time flips, and their SD), heatmap and count-consistent
    detections of one prepared volume."""
    counts, heat = run_network(model, prepared.array, device, flips)
    pred = Prediction(
        scan=path.name if path else prepared.name,
        path=path,
        count=float(np.mean(counts)),
        count_sd=float(np.std(counts, ddof=1)) if len(counts) > 1 else 0.0,
        prepared=prepared,
        heatmap=heat,
        notes=list(prepared.notes),
    )
    if heat is not None:
        score = score_map(heat, prepared.array, intensity_weight)
        pred.result = count_consistent(score, pred.count)
    return pred


def predict_file(
    model: Model,
    path: Path,
    device: torch.device,
    masks_dir: Path | None = None,
    mask_path: Path | None = None,
    **kwargs,
) -> tuple[Prediction, np.ndarray]:
    """Read, prepare and predict one file; returns the prediction and the file's affine.

    The ROI mask is ``mask_path`` if given, else the file named like the scan in ``masks_dir``.
    """
    scan = read_scan(path)
    mask_path = mask_path or find_mask(masks_dir, path)
    mask = read_scan(mask_path) if mask_path else None
    return predict_scan(model, scan, device, mask, **kwargs), scan.affine


def predict_scan(
    model: Model, scan: Scan, device: torch.device, mask: Scan | None = None, **kwargs
) -> Prediction:
    """Prepare and predict one scan (the CLI's files and the Predict dock's layers alike)."""
    prepared = prepare(scan, model.preprocess, mask)
    pred = predict_prepared(model, prepared, device, path=scan.path, **kwargs)
    pred.notes += (
        spacing_notes(model, prepared)
        + texture_notes(model, prepared)
        + negative_notes(pred, model.label.get("unit", ""))
    )
    return pred


def negative_notes(pred: Prediction, unit: str = "") -> list[str]:
    """A regressor's output is unbounded: a value below 0 (a count, a volume) is kept as it is
    (for statistics over a cohort) and said to be read as 0."""
    if not format_count(pred.count).startswith("-"):  # -0.03 reads as 0.0
        return []
    value = f"{format_count(pred.count)} {unit}".strip()
    return [
        f"{pred.prepared.name}: predicted {value}, below 0: the regressor extrapolates below its "
        "training labels; read it as 0"
    ]


def spacing_notes(model: Model, prepared: Prepared) -> list[str]:
    """A note when the voxels the network saw (along R, A, S) differ by over 30 % from those
    the model was trained on; models that know their voxel range resample into it instead."""
    trained = (model.config.get("training") or {}).get("spacing_mm")
    if not trained or model.preprocess.spacing_range_mm:
        return []
    spacing = prepared.spacing
    if np.all(np.abs(spacing / np.asarray(trained, float) - 1) <= 0.3):
        return []
    return [
        f"{prepared.name}: voxel size {tuple(round(float(s), 2) for s in spacing)} mm differs from the "
        f"model's training data ({tuple(round(s, 2) for s in trained)} mm); counts may be off"
    ]


def texture_notes(model: Model, prepared: Prepared) -> list[str]:
    """A note when the scan's noise is smoother than that of nearly every scan the model was
    trained on (``texture``: below their 2nd percentile by ``MARGIN``), measured alike (in the
    ROI, or without masks in the foreground): as after interpolation or smoothing, which
    lowers the counts of a model trained on scans as acquired."""
    seen = (model.config.get("training") or {}).get("noise_texture") or {}
    if prepared.texture is None or seen.get("region") != prepared.texture_region:
        return []
    low, high = seen["range"]
    if prepared.texture >= low - TEXTURE_MARGIN:
        return []
    return [
        f"{prepared.name}: noise smoother than in the model's training scans (texture "
        f"{prepared.texture:.2f}, theirs mostly {low:.2f}–{high:.2f}): interpolated or smoothed "
        "(reslicing, registration, resampling, a scanner filter, zero-filling), or of a far higher "
        "SNR? counts may be too low"
    ]


def check_outputs(
    paths: Sequence[Path],
    out_csv: Path,
    detections_csv: Path | None = None,
    heatmaps_dir: Path | None = None,
) -> None:
    """Refuse outputs that would destroy an input or each other, and scans sharing a name."""
    check_table_output(out_csv, "counts table", paths, COUNT_COLUMNS, OLD_COUNT_COLUMNS)
    if detections_csv is not None:
        check_table_output(detections_csv, "detections table", paths, DETECTION_COLUMNS)
        if Path(detections_csv).resolve() == Path(out_csv).resolve():
            raise HydranetError(f"{out_csv}: the counts and the detections need two different files")
    if heatmaps_dir is not None:
        check_folder_output(heatmaps_dir, "heatmaps folder")
    by_stem: dict[str, Path] = {}
    for path in paths:
        stem = scan_stem(path)
        if stem in by_stem:
            raise HydranetError(
                f"two inputs are named {stem} ({by_stem[stem]}, {path}): the tables and heatmaps "
                "name scans by file name; predict them into separate outputs, or rename one"
            )
        by_stem[stem] = path


def check_roi_masks(model: Model, masks_dir, whole_volume: bool) -> None:
    """Refuse a cohort without ROI masks for a model that counts inside them, unless whole
    volumes are asked for: its counts of whole volumes are far higher than masked ones (3 scans
    of a simulated cohort: 1.5×, 3.8× and 47×), and a table of them reads like any other."""
    if whole_volume and masks_dir is not None:
        raise HydranetError("--whole-volume and --masks contradict each other: give one of them")
    if model.preprocess.use_mask and masks_dir is None and not whole_volume:
        raise HydranetError(
            f"{model.path or 'the model'}: this model counts inside ROI masks; give the folder of ROI "
            "masks named like the scans (--masks), or --whole-volume to count whole volumes anyway "
            "(counts far higher than masked ones, not comparable with them)"
        )


def predict_files(
    model: Model,
    paths: Sequence[Path],
    device: torch.device,
    out_csv: Path,
    masks_dir: Path | None = None,
    heatmaps_dir: Path | None = None,
    detections_csv: Path | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    whole_volume: bool = False,
    command: str | None = None,
    **kwargs,
) -> Iterator[dict]:
    """Predict every file and write the outputs; yields one event per scan: ``scan``, or
    ``failed`` with the reason for a scan that could not be read or prepared (the others go on);
    ``stopped`` ends the events early when ``should_stop`` says so.

    ``whole_volume``: count whole volumes with a model trained inside ROI masks (``check_roi_masks``).
    The run's record (model, weights' SHA-256, settings, software; ``provenance``) is written
    beside the counts table, named like it with ``.json``; ``command`` is its command line.
    The output paths are checked before any work (none may name an input, a folder or lie
    under a file; scans must differ in file name without .nii/.nii.gz, which keys the tables
    and heatmaps). The
    counts CSV (and detections CSV) are rewritten atomically after each scan, so a
    cancelled run leaves complete tables of the scans done so far.
    """
    check_outputs(paths, out_csv, detections_csv, heatmaps_dir)
    check_masks_folder(masks_dir, paths)
    if (heatmaps_dir is not None or detections_csv is not None) and not getattr(
        model.net, "has_heatmap", False
    ):
        raise HydranetError(
            f"{model.path or 'the model'}: a {type(model.net).__name__} gives counts only; heatmaps and "
            "detections need a GP-UNet (leave out --heatmaps and --detections)"
        )
    check_roi_masks(model, masks_dir, whole_volume)
    record_at = check_record_output(out_csv, detections_csv, heatmaps_dir)
    record = start_record(model, len(paths), run_settings(masks_dir, device, **kwargs), command)
    write_record(record_at, record)
    unit = model.label.get("unit", "")
    count_rows, det_rows = [], []
    write_csv(out_csv, COUNT_COLUMNS, count_rows)  # no earlier run's rows, whatever follows
    if detections_csv is not None:
        write_csv(detections_csv, DETECTION_COLUMNS, det_rows)
    inputs = {p.resolve() for p in paths}
    counted = failed = 0
    ended = False  # the record is finished whatever ends the run (a stop, a full disk, a crash)
    try:
        for done, path in enumerate(paths, start=1):
            if should_stop():
                write_record(record_at, finish_record(record, counted, failed, stopped=True))
                ended = True
                yield {"event": "stopped", "done": done - 1, "total": len(paths)}
                return
            try:
                pred, affine = predict_file(model, path, device, masks_dir, **kwargs)
            # this scan is skipped, the others go on
            except (HydranetError, MemoryError, RuntimeError) as exc:
                if isinstance(exc, HydranetError):
                    message = str(exc)
                elif isinstance(exc, MemoryError) or "memory" in str(exc):  # torch's CPU and CUDA ones too
                    message = f"{path}: not enough memory for it"
                else:
                    raise
                # a row without a count, so that the table still lists every scan of the cohort
                count_rows.append([path.name, "", "", "", "", unit, str(path), f"{NOT_COUNTED}{message}"])
                write_csv(out_csv, COUNT_COLUMNS, count_rows)
                failed += 1
                yield {
                    "event": "failed",
                    "done": done,
                    "total": len(paths),
                    "scan": path.name,
                    "message": message,
                }
                continue
            count_rows.append(pred.count_row(unit))
            write_csv(out_csv, COUNT_COLUMNS, count_rows)
            counted += 1
            if detections_csv is not None:
                det_rows.extend(pred.detection_rows(affine))
                write_csv(detections_csv, DETECTION_COLUMNS, det_rows)
            if heatmaps_dir is not None and pred.heatmap is not None:
                target = Path(heatmaps_dir) / f"{scan_stem(path)}{HEATMAP_SUFFIX}.nii.gz"
                write_volume(target, pred.source_heatmap(), affine, protect=inputs, like=path)
            yield {
                "event": "scan",
                "done": done,
                "total": len(paths),
                "scan": pred.scan,
                "count": pred.count,
                "count_sd": pred.count_sd,
                "detections": pred.n_detections,
                "notes": pred.notes,
            }
        write_record(record_at, finish_record(record, counted, failed))
        ended = True
    finally:
        if not ended:
            write_record(record_at, finish_record(record, counted, failed, stopped=True))
