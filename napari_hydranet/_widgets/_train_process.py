"""``hydranet train --json`` as a child process: started, watched and stopped from the GUI.

The process streams one JSON event per line on stdout (see ``train.py``); errors go to
stderr as ``hydranet: error: …``. When it ends, its memory (GPU included) is freed.
"""

from __future__ import annotations

import json
import re
import sys

from qtpy.QtCore import QCoreApplication, QObject, QProcess, QProcessEnvironment, Signal

# Every training started here, until it ends (a dock's, or one a closed dock left stopping)
_RUNNING: set[QProcess] = set()
_quit_hooked = False  # whether the application's aboutToQuit stops them


def _track(proc: QProcess) -> None:
    global _quit_hooked
    if not _quit_hooked:
        QCoreApplication.instance().aboutToQuit.connect(_stop_at_quit)
        _quit_hooked = True
    _RUNNING.add(proc)
    proc.finished.connect(lambda *_: _RUNNING.discard(proc))


def _stop_at_quit(wait_ms: int = 15000) -> None:
    """Quitting: each training stops after its current step and saves, as Stop does; one
    that has not ended after ``wait_ms`` is killed (its last saved checkpoint stays)."""
    for proc in _RUNNING:
        proc.closeWriteChannel()
    for proc in list(_RUNNING):
        if not proc.waitForFinished(wait_ms):
            proc.kill()
            proc.waitForFinished(5000)


class TrainProcess(QObject):
    """Runs ``python -m napari_hydranet.cli <args>``; emits each event and the end."""

    received = Signal(dict)  # one training event
    ended = Signal(int, str)  # exit code, the reason (last error line) when it failed

    def __init__(self, parent=None):
        super().__init__(parent)
        self.process: QProcess | None = None
        self._buffer, self._stderr = b"", ""

    def is_running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    def start(self, args: list[str], window=None) -> None:
        """Start the training; it is asked to stop (as by Stop) when ``window`` is destroyed:
        ``viewer.close()`` in a script or notebook closes napari's window without closing
        its docks, and the training went on to its end with no dock to show it."""
        self._buffer, self._stderr = b"", ""
        # no parent: napari deletes its window, and every child with it, before aboutToQuit,
        # and a QProcess deleted while running kills its child; self.process and _RUNNING keep it
        self.process = proc = QProcess()
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        proc.setProcessEnvironment(env)
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        proc.start(sys.executable, ["-m", "napari_hydranet.cli", *args])
        _track(proc)
        if window is not None:  # the process, not this object: the window's children go with it
            window.destroyed.connect(lambda *_: proc.closeWriteChannel())

    def terminate(self) -> None:
        """Close the child's stdin: run with ``--stop-on-eof``, the CLI stops after the current
        step and keeps the best checkpoint (a SIGTERM would not reach it on Windows)."""
        if self.is_running():
            self.process.closeWriteChannel()

    def kill(self) -> None:
        if self.is_running():
            self.process.kill()

    def release(self) -> None:
        """The dock is gone: ask the training to stop after its current step (it saves its
        checkpoint) without waiting for it. The process outlives this object, whose end would
        kill it; at quit the application waits for it."""
        if not self.is_running():
            return
        proc, self.process = self.process, None
        proc.readyReadStandardOutput.disconnect(self._read_stdout)
        proc.readyReadStandardError.disconnect(self._read_stderr)
        proc.finished.disconnect(self._on_finished)
        proc.closeWriteChannel()  # _RUNNING keeps it to its end

    def _read_stdout(self) -> None:
        self._buffer += bytes(self.process.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(ev, dict) and "event" in ev:
                self.received.emit(ev)

    def _read_stderr(self) -> None:
        text = bytes(self.process.readAllStandardError()).decode(errors="replace")
        self._stderr = (self._stderr + text)[-4000:]

    def _on_error(self, error) -> None:
        """A child that never ran ends too (``finished`` is not emitted for it)."""
        if error == QProcess.ProcessError.FailedToStart:
            self.ended.emit(-1, f"could not start {sys.executable} ({self.process.errorString()})")

    def _on_finished(self, code: int, _status=None) -> None:
        self._read_stdout()
        lines = [ln for ln in self._stderr.strip().splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(lines) if ln.startswith("hydranet:")), None)
        self.ended.emit(code, for_dock(reason or (lines[-1] if lines else f"exit status {code}")))


# The command line's options as the Train dock names them, for the child's messages.
RESUME_TEXT = "continue the stopped training in Output"  # the Train dock's --resume
DOCK_NAMES = {
    "--out": "Output",
    "--init": "Model folder",
    "--labels": "Labels",
    "--masks": "Masks",
    "--epochs": "Epochs",
    "--heads": "Heads n",
    "--p-black": "p black",
    "--lr": "Learning rate",
    "--val-fraction": "Validation",
    "--time-limit": "Time limit",
    "--crop": "Crop",
    "--arch-args": "Network",
    "--label-name": "Labels are",
    "--unit": "unit",
    "--arch": "Architecture",
}


def for_dock(message: str) -> str:
    """A child's error line in the dock's words: no ``hydranet: error:`` prefix, fields by name."""
    for prefix in ("hydranet: error: ", "hydranet: ", "hydranet train: error: ", "argument "):
        message = message.removeprefix(prefix)
    message = message.replace("use --resume to continue it", f"tick '{RESUME_TEXT}' to go on with it")
    return re.sub(r"--[a-z-]+", lambda m: DOCK_NAMES.get(m.group(0), m.group(0)), message)
