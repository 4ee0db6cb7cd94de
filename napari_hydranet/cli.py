"""The ``hydranet`` command: train, predict, evaluate, info, demo. Thin over the core modules."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import textwrap
import threading
import warnings
from pathlib import Path

from . import __version__, options
from .errors import HydranetError
from .text import figure, first_of, json_safe, note_kind, plural, signed

# Exit statuses beside 0: 1 no model saved (train), 2 an error (a user's, found before any
# work; or the disk, mid-run), 3 predict wrote its tables but could not count every scan,
# 130 stopped (Ctrl-C).
EXIT_SOME_FAILED = 3


def _progress(done: int, total: int, text: str) -> None:
    width = 28
    fill = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total} {text[:60]:<60}")
    sys.stderr.flush()
    if done >= total:
        sys.stderr.write("\n")


def _emit(event: dict, as_json: bool, tty: bool) -> None:
    """Print a training event: JSON lines for programs, a bar and a line per epoch for people."""
    if as_json:
        print(json.dumps(json_safe(event)), flush=True)
        return
    kind = event["event"]
    if kind == "start":
        plan = (
            f"{event['steps_per_epoch']} steps per epoch, epochs {event['start_epoch']}..{event['epochs']}"
            if not event["recalibrate_only"]
            else "count recalibration only"
        )
        print(f"training on {event['device']}: {event['train']} scans, {event['val']} for validation, {plan}")
        for note in event["notes"]:
            print(f"note: {note}")
    elif kind == "step" and tty:
        _progress(event["step"], event["steps"], f"epoch {event['epoch']} loss {event['loss']:.3g}")
    elif kind == "epoch":
        refit = (
            f"  after refit {figure(event['val_icc21_refit'], 3):>6}" if "val_icc21_refit" in event else ""
        )
        loss = "–" if event["loss"] != event["loss"] else f"{event['loss']:.4g}"  # NaN: epoch 0, no steps
        print(
            f"epoch {event['epoch']:4d}  loss {loss:>9}  "
            f"val ICC(2,1) {figure(event['val_icc21'], 3):>6}{refit}  MAE {event['val_mae']:7.3f}  "
            f"spread {event['val_pred_sd']:6.2f}  {event['seconds']:5.1f}s",
            flush=True,
        )
    elif kind == "status":  # what the run is doing, and whether a recalibration was kept
        print(event["message"], flush=True)
    elif kind == "checkpoint":
        print(f"  saved best model (epoch {event['epoch']}) to {event['path']}")
    elif kind == "done":
        best = event["best"]
        saved = (
            f"best epoch {best['epoch']}, val ICC(2,1) {figure(best['val_icc21'], 3)}, "
            f"model in {event['path']}"
            if best
            else "no model saved: no epoch finished"
        )
        took = f"{plural(event['epochs'], 'epoch')}, {event['seconds']:.0f} s"
        print(f"done ({event['message']}) after {took}; {saved}")


class _StopFlag:
    """Set by SIGINT/SIGTERM, or by the end of stdin (``watch_stdin``): the loop stops after
    the current step."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        def handler(signum, frame):
            if self.event.is_set():
                raise KeyboardInterrupt
            self.event.set()
            sys.stderr.write("\nstopping after this step (again to abort)…\n")

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def watch_stdin(self) -> None:
        """Stop when stdin closes: how the Train dock stops its child on every platform
        (Windows sends console programs no SIGTERM)."""

        def wait_for_eof():
            # os.read on the descriptor: a thread blocked in sys.stdin.buffer.read holds the
            # reader's lock, and Python aborts at exit when the run ends with stdin still open
            try:
                fd = sys.stdin.fileno()
                while os.read(fd, 1024):
                    pass
            except (AttributeError, OSError, ValueError):  # no stdin (pythonw, <&-): signals only
                return
            self.event.set()

        threading.Thread(target=wait_for_eof, daemon=True).start()

    def __call__(self) -> bool:
        return self.event.is_set()


def _number(kind, low=None, high=None, low_open=False):
    """An argparse type: ``kind`` (int or float) within [low, high] ((low, high] if ``low_open``)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value != value or (low is not None and (value <= low if low_open else value < low)):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if low_open else '≥'} {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} must be ≤ {high}")
        return value

    return parse


def _arch_args(text: str | None) -> dict:
    if not text:
        return {}
    try:
        args = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HydranetError(f"--arch-args: not valid JSON ({exc})") from None
    if not isinstance(args, dict):
        raise HydranetError("--arch-args: a JSON object is needed, e.g. '{\"features\": [8, 16, 32]}'")
    return args


def train_config(a: argparse.Namespace):
    """The TrainConfig that ``hydranet train``'s parsed arguments ask for."""
    from .train import TrainConfig

    return TrainConfig(
        scans_dir=a.scans_dir,
        labels=a.labels,
        out=a.out,
        arch=a.arch,
        arch_args=_arch_args(a.arch_args),
        heads=a.heads,
        p_black=a.p_black,
        sets_per_batch=a.sets_per_batch,
        epochs=a.epochs,
        val_fraction=a.val_fraction,
        val_labels=a.val_labels,
        masks_dir=a.masks,
        init=a.init,
        loss=a.loss,
        optimizer=a.optimizer,
        lr=a.lr,
        lr_schedule=a.lr_schedule,
        seed=a.seed,
        device=a.device,
        augment=not a.no_augment,
        patience=a.patience,
        time_limit=a.time_limit,
        scan_column=a.scan_column or _scan_column(a.labels),
        label_column=a.label_column,
        label_name=a.label_name,
        label_unit=a.unit,
        crop_shape=tuple(a.crop) if a.crop else None,
        intensity_reference=a.intensity_reference,
        density_dir=a.density,
        density_target=a.density_target,
        count_weight=a.count_weight,
        lesion_weight=a.lesion_weight,
        augment_smooth=a.augment_smooth,
        recalibrate=not a.no_recalibrate,
        recalibrate_only=a.recalibrate_only,
    )


def _scan_column(labels) -> str:
    """The scan column when --scan-column is not given: "scan", else the first of
    ``SCAN_COLUMNS`` in the table (a participants.tsv's participant_id), said on stderr."""
    from .io import scan_column_of

    column = scan_column_of(labels)
    if column.casefold() != "scan":  # "Scan" is the scan column
        print(f"note: {labels}: no 'scan' column; the scans are named by '{column}'", file=sys.stderr)
    return column


def cmd_train(a: argparse.Namespace) -> int:
    from .train import train

    cfg = train_config(a)
    if a.low_priority and hasattr(os, "nice"):
        os.nice(10)  # the scheduler serves the interactive viewer first
    stop = _StopFlag()
    stop.install()
    if a.stop_on_eof:
        stop.watch_stdin()
    tty = sys.stderr.isatty() and not a.json
    for event in train(cfg, should_stop=stop, resume=a.resume):
        _emit(event, a.json, tty)
    if event["event"] == "done" and not event["best"]:  # stopped or out of time in epoch 1
        why = "out of time" if event["reason"] == "time_limit" else "stopped"
        hint = " (give it more time with --time-limit)" if event["reason"] == "time_limit" else ""
        print(
            f"hydranet train: no model in {cfg.out}: {why} before its first epoch finished{hint}",
            file=sys.stderr,
        )
        return 1
    return 130 if event["reason"] == "stopped" else 0  # as predict: `train && predict` stops here too


def cmd_predict(a: argparse.Namespace) -> int:
    from .device import select_device
    from .infer import format_count, predict_files
    from .io import find_scans
    from .models import load_model

    device = select_device(a.device)
    model = load_model(a.model_dir, device)
    paths = find_scans(a.inputs)
    stop = _StopFlag()
    stop.install()
    tty = sys.stderr.isatty()
    events = predict_files(
        model,
        paths,
        device,
        Path(a.out),
        masks_dir=a.masks,
        heatmaps_dir=a.heatmaps,
        detections_csv=Path(a.detections) if a.detections else None,
        should_stop=stop,
        flips=a.flips,
        intensity_weight=a.intensity_weight,
        whole_volume=a.whole_volume,
        command=shlex.join(["hydranet", *a.argv]),
    )
    failed = []
    noted: dict[tuple, tuple] = {}  # each kind of note, printed once: who it was on first, all scans
    for ev in events:
        if ev["event"] == "stopped":
            held = ev["done"] - len(failed)
            _repeated_notes(noted)
            print(
                f"stopped after {ev['done']} of {ev['total']} scans; the tables hold the {held} predicted"
                + (f" and the {len(failed)} not counted, without a count" if failed else "")
            )
            return 130
        if ev["event"] == "failed":
            failed.append(ev["message"])
            print(("\n" if tty else "") + f"hydranet: skipped: {ev['message']}", file=sys.stderr)
            continue
        for note in ev["notes"]:
            who = note.partition(": ")[0]  # a scan's name; "masks/<name>" for its mask's notes
            first, scans = noted.setdefault((who.rpartition("/")[0], note_kind(note)), (who, {}))
            if not scans:
                print(("\n" if tty else "") + f"note: {note}", file=sys.stderr)
            scans[ev["scan"]] = None
        if tty:
            _progress(ev["done"], ev["total"], f"{ev['scan']}: {format_count(ev['count'])}")
    _repeated_notes(noted)
    done = len(paths) - len(failed)
    if done:
        print(f"counts for {plural(done, 'scan')} written to {a.out}")
        if a.detections:
            print(f"detections written to {a.detections}")
        if a.heatmaps:
            print(f"heatmaps written to {a.heatmaps}")
    if failed:
        print(
            f"hydranet: {len(failed)} of {len(paths)} scans could not be predicted (listed above); their "
            f"rows in {a.out} have no count and say why",
            file=sys.stderr,
        )
        return EXIT_SOME_FAILED
    return 0


def _repeated_notes(noted: dict[tuple, tuple]) -> None:
    """After the scans, the others that had a note like one printed (numbers may differ)."""
    for first, scans in noted.values():
        _, *more = scans
        if more:
            print(
                f"note: a note like that on {first} also on {plural(len(more), 'more scan')}: "
                f"{first_of(more, 3)}",
                file=sys.stderr,
            )


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .evaluate import evaluate_tables

    scan_column = a.scan_column or _scan_column(a.labels_csv)
    result = evaluate_tables(a.counts_csv, a.labels_csv, scan_column, a.label_column)
    if a.json:
        print(json.dumps(json_safe(result)))
    else:
        for note in result.pop("notes"):
            print(f"note: {note}")
        print(f"n        {result['n']}")
        interval = f"{figure(result['icc21_low'], 4)} to {figure(result['icc21_high'], 4)}"
        print(f"ICC(2,1) {figure(result['icc21'], 4)}   (absolute agreement; 95 % interval {interval})")
        print(f"ICC(3,1) {figure(result['icc31'], 4)}   (consistency)")
        unit = f" {result['unit']}" if result["unit"] else ""
        print(f"MAE      {result['mae']:.4f}{unit}")
        print(f"MSE      {result['mse']:.4f}{unit}{'²' if unit else ''}")
        print(f"Spearman {figure(result['spearman'], 4)}")
        print(
            f"bias     {result['bias']:+.4f}{unit}   (counts − labels; 95 % limits of agreement "
            f"{signed(result['loa_low'], 4)} to {signed(result['loa_high'], 4)})"
        )
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from .models import load_model
    from .preprocess import MEDIAN_SPAN

    model = load_model(a.model_dir)  # checks the weights fit the architecture, without running code
    if a.json:
        print(json.dumps(json_safe({k: v for k, v in model.config.items() if k != "history_tail"}), indent=1))
        return 0
    cfg, pre = model.config, model.preprocess
    params = sum(t.numel() for t in model.net.parameters())
    crop = "×".join(map(str, pre.crop_shape)) if pre.crop_shape else "whole scan"
    args = cfg["architecture"].get("args") or {}
    where = "the ROI's" if pre.use_mask else "the non-zero voxels'"
    scale = (
        f"{MEDIAN_SPAN:g} × {where} median"
        if pre.intensity_reference == "median"
        else f"{where} {pre.trim_percentile:g}th percentile"
    )
    width = max(min(shutil.get_terminal_size().columns, 100) - 1, 40)
    lines = [
        *model.card(full=True).splitlines(),
        f"network: {model.arch}{f' {args}' if args else ''}, {params:,} parameters",
        f"input: ROI mask {'used' if pre.use_mask else 'not used'}, crop {crop}, "
        f"intensities divided by {scale}",
    ]
    for line in lines:  # wrapped, later lines indented, so each item stands out
        print(textwrap.fill(line, width, subsequent_indent="    ", break_on_hyphens=False))
    print(  # not wrapped: the path may hold spaces
        f"folder: {model.path} (format {cfg.get('format_version')}, written by napari-hydranet "
        f"{cfg.get('package_version', '?')} on {cfg.get('created', '?')})"
    )
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(a.out), headless=a.headless, device=a.device)


def _crop_edge(text: str) -> int:
    from .preprocess import MAX_CROP, MIN_CROP  # here, not at import: `hydranet --help` stays quick

    return _number(int, MIN_CROP, MAX_CROP)(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hydranet", description=__doc__)
    p.add_argument("--version", action="version", version=f"napari-hydranet {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a count model from globally labelled scans")
    t.add_argument("scans_dir")
    t.add_argument("--labels", required=True, help="CSV with a scan and a label column")
    t.add_argument("--out", required=True, help="model folder to create")
    t.add_argument("--arch", choices=options.ARCHITECTURES, default="gpunet")
    t.add_argument("--arch-args", help="JSON of network arguments, e.g. '{\"features\": [8, 16, 32]}'")
    t.add_argument("--heads", type=int, default=4, help="set size n (1 = plain regressor)")
    t.add_argument("--p-black", type=float, default=0.1, help="probability of a black image per slot")
    t.add_argument("--sets-per-batch", type=int, default=1, help="sets per optimiser step (batch = n × this)")
    t.add_argument("--epochs", type=int, default=options.EPOCHS)
    v = t.add_mutually_exclusive_group()
    v.add_argument("--val-fraction", type=float, default=0.2)
    v.add_argument("--val-labels", help="CSV of validation scans (same folder)")
    t.add_argument("--masks", help="folder of ROI masks named like the scans")
    t.add_argument("--init", help="model folder to fine-tune, or 'default' for the bundled one")
    t.add_argument("--loss", choices=options.LOSSES, default="mse")
    t.add_argument("--optimizer", choices=options.OPTIMIZERS, default="adam")
    t.add_argument(
        "--lr", type=_number(float, 0, low_open=True), help="learning rate (default: adam 1e-4, adadelta 1.0)"
    )
    t.add_argument(
        "--lr-schedule",
        choices=options.LR_SCHEDULES,
        default="constant",
        help="after a 30-step warm-up: constant, or a cosine decay to 1%% of --lr over --epochs",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    t.add_argument("--json", action="store_true", help="print events as JSON lines")
    t.add_argument("--resume", action="store_true", help="continue the training in --out")
    r = t.add_mutually_exclusive_group()
    r.add_argument(
        "--recalibrate-only",
        action="store_true",
        help="with --init: only refit the count's scale and offset to the labels (seconds)",
    )
    r.add_argument(
        "--no-recalibrate", action="store_true", help="with --init: skip that refit before fine-tuning"
    )
    t.add_argument("--stop-on-eof", action="store_true", help=argparse.SUPPRESS)  # the Train dock's Stop
    t.add_argument(
        "--low-priority",
        action="store_true",
        help="run at a lower CPU priority (nice 10), as the Train dock does",
    )
    t.add_argument(
        "--patience",
        type=int,
        help="stop after this many epochs without a better validation score "
        "(default: 10 when fine-tuning with --init, never from scratch; 0: never)",
    )
    t.add_argument(
        "--time-limit", type=_number(float, 0, low_open=True), help="minutes; stop cleanly when reached"
    )
    t.add_argument("--no-augment", action="store_true", help="no flips or shifts")
    t.add_argument(
        "--crop",
        type=_crop_edge,
        nargs=3,
        default=[64, 52, 40],
        metavar=("I", "J", "K"),
        help="network input size around the ROI (voxels)",
    )
    t.add_argument(
        "--intensity-reference",
        choices=("auto", *options.INTENSITY_REFERENCES),
        default="auto",
        help="from scratch only (--init keeps the model's): scale intensities by the ROI's 99th "
        "percentile, or by its median, which does not move with the lesions; auto: the median "
        "for a GP-UNet trained on counts, the percentile otherwise",
    )
    t.add_argument(
        "--density",
        metavar="DIR",
        help="lesion label masks named like the scans: pretraining on simulated data "
        "(adds a voxel-wise density loss; users' data needs only the labels)",
    )
    t.add_argument(
        "--density-target",
        choices=options.DENSITY_TARGETS,
        default="voxels",
        help="with --density: 1 on every lesion voxel, or the same mass for every lesion "
        "(the map then sums to the count whatever the lesions' sizes in voxels)",
    )
    t.add_argument(
        "--count-weight",
        type=float,
        default=0.0,
        help="with --density: weight of the count loss beside the lesion-voxel loss",
    )
    t.add_argument(
        "--augment-smooth",
        type=_number(float, 0, 1),
        default=0.0,
        help="with --density: probability of blurring a training view (Gaussian up to 0.7 voxel "
        "per axis), so that the lesion map does not depend on the scans' noise texture",
    )
    t.add_argument(
        "--lesion-weight",
        type=_number(float, 0, low_open=True),
        default=20.0,
        help="with --density: weight of lesion voxels against background voxels in the "
        "lesion-voxel loss (1: the map's sum estimates the count without bias)",
    )
    t.add_argument(
        "--scan-column",
        help="the column naming the scans (default: scan, else participant_id, subject or file, "
        "the first the table has)",
    )
    t.add_argument("--label-column", default="label")
    t.add_argument("--label-name", default="lesion count", help="what the label counts")
    t.add_argument("--unit", default="lesions", help="unit of the label")
    t.set_defaults(func=cmd_train)

    q = sub.add_parser("predict", help="counts, heatmaps and detections for scans")
    q.add_argument("model_dir", help="model folder, or 'default' for the bundled one")
    q.add_argument("inputs", nargs="+", help="NIfTI files and folders of them")
    q.add_argument("--out", required=True, help="counts CSV to write")
    q.add_argument("--heatmaps", help="folder for <scan>_heatmap.nii.gz")
    q.add_argument("--detections", help="detections CSV to write")
    q.add_argument("--masks", help="folder of ROI masks named like the scans")
    q.add_argument(
        "--whole-volume",
        action="store_true",
        help="no masks: count whole volumes with a model trained inside ROI masks (not comparable)",
    )
    q.add_argument("--device", default="auto")
    q.add_argument(
        "--flips", type=_number(int, 1, 8), default=8, help="test-time flips (1-8) for count and spread"
    )
    q.add_argument(
        "--intensity-weight",
        type=_number(float, 0, 1),
        default=0.0,
        help="threshold (1-w)·heatmap + w·intensity for detections (GP-UNet paper, method f)",
    )
    q.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="agreement of predicted counts with labels")
    e.add_argument("counts_csv")
    e.add_argument("labels_csv")
    e.add_argument(
        "--scan-column",
        help="the column naming the scans (default: scan, else participant_id, subject or file, "
        "the first the table has)",
    )
    e.add_argument("--label-column", default="label")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("info", help="what a model counts, how it was validated and trained")
    i.add_argument("model_dir", nargs="?", default="default", help="model folder, or 'default'")
    i.add_argument("--json", action="store_true", help="its config.json")
    i.set_defaults(func=cmd_info)

    d = sub.add_parser("demo", help="the bundled model on the bundled sample scan")
    d.add_argument("--out", default="hydranet-demo", help="folder for the outputs")
    d.add_argument("--headless", action="store_true", help="never open a window")
    d.add_argument("--device", default="auto")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the records of runs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return args.func(args)
    except HydranetError as exc:
        print(f"hydranet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hydranet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`hydranet info --json | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141
    except OSError as exc:  # the disk filled, a folder became read-only mid-run: said, not a traceback
        target = exc.filename2 or exc.filename  # a rename's target, not its hidden temporary file
        print(f"hydranet: error: {f'{target}: ' if target else ''}{exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
