"""Progress of a compare sweep: runs done / running / failed / to do, an ETA, and each running run's epoch.

Three ways of showing it:

* ``inline`` -- one run at a time with the worker's own output on the terminal (the sequential executor): a header
  line before each run (``run 3/12: yolov8s-ema-seed0   (ETA 2h10m)``) and a result line after it;
* ``live`` -- several runs at once and stdout is a terminal: one status line redrawn in place (finished runs are
  printed above it), e.g. ``3/12 done, 4 running, 0 failed, 5 to do, ETA 1h05m | yolov8s-seed1 37/100, ...``;
* ``lines`` -- several runs at once and stdout is not a terminal (logs, CI): one line per finished run.

The ETA is the mean duration of the runs finished OK in this session times the work left (runs to do, plus what the
running runs have left of that mean), divided by the number of runs that go at once; ``?`` until a run finished.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from yolo_attn.compare.worker import read_json, state_paths

PREFIX = "[yolo-attn compare]"


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


class Progress:
    """Counts and display of one compare session (thread-safe: local executors report from their threads).

    Args:
        total: Runs in the comparison (finished earlier or not).
        done: Runs already finished OK before this session.
        todo: Runs this session has to do.
        capacity: Runs that go at once (for the ETA); updated by executors that only know it at run time.
        mode: ``inline``, ``live`` or ``lines`` (see the module docstring); ``quiet`` prints nothing.
        stream: Where to print.
    """

    def __init__(
        self, total: int, done: int, todo: int, capacity: int, mode: str = "lines", stream: TextIO | None = None
    ) -> None:
        self.total, self.done, self.todo_start, self.capacity, self.mode = total, done, todo, max(1, capacity), mode
        self.stream = stream or sys.stdout
        self.failed = 0
        self.finished_here = 0
        self.durations: list[float] = []
        self.running: dict[str, dict[str, Any]] = {}  # run -> {"spec", "since", "state"}
        self.lock = threading.Lock()
        self._last_draw = 0.0
        self._drawn = False

    # ------------------------------------------------------------------------------------------------ counts
    @property
    def todo(self) -> int:
        return self.todo_start - self.finished_here - len(self.running)

    def eta(self, now: float | None = None) -> str:
        if not self.durations:
            return "?"
        now = time.time() if now is None else now
        mean = sum(self.durations) / len(self.durations)
        left = self.todo * mean + sum(max(0.0, mean - (now - r["since"])) for r in self.running.values())
        return format_seconds(left / max(1, self.capacity))

    def counts(self) -> str:
        return (
            f"{self.done}/{self.total} done, {len(self.running)} running, {self.failed} failed, {self.todo} to do, "
            f"ETA {self.eta()}"
        )

    # ------------------------------------------------------------------------------------------------ events
    def started(self, spec: dict[str, Any]) -> None:
        with self.lock:
            self.running[spec["run"]] = {"spec": spec, "since": time.time(), "state": {}}
            if self.mode == "inline":
                eta = self.eta()
                position = self.done + self.failed + 1
                self._print(f"\n{PREFIX} run {position}/{self.total}: {spec['run']}   (ETA {eta})")
            self._draw(force=True)

    def update(self, run: str, state: dict[str, Any]) -> None:
        with self.lock:
            if run in self.running:
                self.running[run]["state"] = state

    def finished(self, spec: dict[str, Any], record: dict[str, Any], seconds: float) -> None:
        with self.lock:
            self.running.pop(spec["run"], None)
            self.finished_here += 1
            status = record.get("status", "missing")
            if status == "ok":
                self.done += 1
                self.durations.append(seconds)
            else:
                self.failed += 1
            line = f"{PREFIX} {spec['run']}: {status} in {format_seconds(seconds)}"
            if status != "ok" and self.mode != "inline":
                line += f": {str(record.get('error', ''))[:160]}"
                if record.get("log"):
                    line += f" (log: {record['log']})"
            if self.mode in {"lines", "live"}:
                line += f"   [{self.counts()}]"
            self._print(line)
            self._draw(force=True)

    def poll(self) -> None:
        """Read the progress files of running runs (local executors) and redraw the live line."""
        with self.lock:
            for entry in self.running.values():
                path = state_paths(entry["spec"])["progress"]
                if Path(path).is_file():
                    state = read_json(path)
                    if state:
                        entry["state"] = state
            self._draw()

    def close(self) -> None:
        with self.lock:
            if self._drawn and self.mode == "live":
                self.stream.write("\r\x1b[2K")
                self.stream.flush()
                self._drawn = False

    # ------------------------------------------------------------------------------------------------ display
    def status_line(self) -> str:
        parts = []
        for run, entry in self.running.items():
            state = entry["state"]
            if state.get("stage") == "train" and state.get("epoch"):
                parts.append(f"{run} epoch {state['epoch']}/{state.get('epochs', '?')}")
            elif state.get("stage") == "eval":
                parts.append(f"{run} eval")
            else:
                parts.append(f"{run} starting")
        line = f"{PREFIX} {self.counts()}"
        return line + (" | " + ", ".join(parts) if parts else "")

    def _print(self, line: str) -> None:
        if self.mode == "quiet":
            return
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self._drawn = False
        self.stream.write(line + "\n")
        self.stream.flush()

    def _draw(self, force: bool = False) -> None:
        if self.mode != "live" or (not force and time.time() - self._last_draw < 0.5):
            return
        width = shutil.get_terminal_size((120, 20)).columns
        line = self.status_line()
        if len(line) > width - 1:
            line = line[: width - 2] + "…"
        self.stream.write("\r\x1b[2K" + line)
        self.stream.flush()
        self._drawn = True
        self._last_draw = time.time()
