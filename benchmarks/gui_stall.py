"""Longest stall of the Qt event loop while the docks work (target: under 100 ms).

    xvfb-run -a .venv/bin/python benchmarks/gui_stall.py

A 5 ms QTimer runs in the viewer's event loop; the longest gap between two of its ticks is
the longest time the viewer could not repaint or react. Measured while Predict runs the
bundled model on the sample scan (twice: the first run adds the overlay layers, the second
refills them; the network phase and the display of the results are reported apart), while
Cohort predicts a folder of 12 small simulated scans with their labels (tests/synth.py; its
table and agreement plots update after each scan), and while Train fine-tunes the bundled
model on that cohort in its child process, from Start until the first two epochs are done.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import napari
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synth import make_cohort  # noqa: E402

from napari_hydranet._widgets import CohortWidget, PredictWidget, TrainWidget  # noqa: E402
from napari_hydranet.sample import load_sample  # noqa: E402


class StallMeter:
    def __init__(self, interval_ms: int = 5):
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.worst = 0.0

        self.gaps: list[tuple[float, float]] = []  # (end time, length in s)

    def _tick(self):
        now = time.perf_counter()
        if self.last is not None:
            self.worst = max(self.worst, now - self.last)
            self.gaps.append((now, now - self.last))
        self.last = now

    def start(self):
        self.last, self.worst, self.gaps = None, 0.0, []
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        return self.worst * 1000

    def worst_between(self, t0: float, t1: float) -> float:
        """Longest gap (ms) that ended within [t0, t1]."""
        return 1000 * max((g for end, g in self.gaps if t0 <= end <= t1), default=0.0)


def run_until(condition, timeout: float = 600.0) -> None:
    app, t0 = QApplication.instance(), time.monotonic()
    while not condition():
        app.processEvents()
        time.sleep(0.001)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError


def settle(seconds: float) -> None:
    app, t0 = QApplication.instance(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        app.processEvents()
        time.sleep(0.001)


def main() -> None:
    viewer = napari.Viewer(show=True)
    sample = load_sample()
    (scan,) = viewer.open(str(sample.scan), plugin="napari-hydranet")
    (mask,) = viewer.open(str(sample.mask), plugin="napari-hydranet")
    meter = StallMeter()

    predict = PredictWidget(viewer)
    viewer.window.add_dock_widget(predict)
    predict.image_combo.set_layer(scan)
    predict.mask_combo.set_layer(mask)
    handled: list[float] = []
    on_result = predict._on_result

    def timed_on_result(*args):
        handled.append(time.perf_counter())
        on_result(*args)

    predict._on_result = timed_on_result
    for attempt in ("first run (adds the layers)", "second run (refills them)"):
        settle(0.2)
        handled.clear()
        meter.start()
        t0 = time.perf_counter()
        predict.run()
        run_until(lambda: predict.worker is not None and predict.run_button.isEnabled())
        t1 = time.perf_counter()
        settle(0.5)  # the first paint of the new layers
        meter.stop()
        print(
            f"Predict {attempt}, bundled model, sample, 8 flips: {t1 - t0:.1f} s; longest stall "
            f"while the network runs {meter.worst_between(t0, handled[0]):.0f} ms, "
            f"while the results are shown {meter.worst_between(handled[0], time.perf_counter()):.0f} ms"
        )

    with tempfile.TemporaryDirectory() as tmp:
        data = make_cohort(Path(tmp) / "cohort", 12, seed=3, shape=(40, 36, 28))
        cohort = CohortWidget(viewer)
        viewer.window.add_dock_widget(cohort)
        cohort.scans.set_path(data / "scans")
        cohort.masks.set_path(data / "masks")
        cohort.labels_csv.set_path(data / "labels.csv")
        settle(0.2)
        meter.start()
        t0 = time.perf_counter()
        cohort.run()
        run_until(lambda: cohort.worker is not None and cohort.run_button.isEnabled())
        print(
            f"Cohort (bundled model, 12 scans with labels, table and plots after each): "
            f"{time.perf_counter() - t0:.1f} s, longest event-loop stall {meter.stop():.0f} ms"
        )
        train = TrainWidget(viewer)
        viewer.window.add_dock_widget(train)
        train.set_inputs(data / "scans", data / "labels.csv", data / "masks")
        train.epochs.setValue(2)
        train.out.set_path(Path(tmp) / "model")
        meter.start()
        t0 = time.perf_counter()
        train.start()
        run_until(lambda: not train.is_running() and train.last_event is not None)
        print(
            f"Train (fine-tune bundled model, 12 scans, 2 epochs, child process): "
            f"{time.perf_counter() - t0:.1f} s, longest event-loop stall {meter.stop():.0f} ms"
        )
    viewer.close()


if __name__ == "__main__":
    main()
