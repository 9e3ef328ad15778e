"""Progress display for long work: a live bar on a terminal, plain lines elsewhere.

Off a terminal (a log file, a batch job) the reporter prints one line per epoch and, within an
epoch, a line every ``HEARTBEAT_S`` seconds (steps done, share of the run, elapsed time), so a long
epoch is never silent. :func:`slow_task` prints a line when some work (decoding a dataset) is still
running after a couple of seconds, and how long it took.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True)
HEARTBEAT_S = 30.0
SLOW_S = 2.0


def _clock_text(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@contextlib.contextmanager
def slow_task(label: str, after: float = SLOW_S,
              emit: Callable[[str], None] | None = None) -> Iterator[None]:
    """Say ``label ...`` if the block still runs after ``after`` seconds, then how long it took."""
    say = emit or (lambda text: console.print(text, markup=False, highlight=False))
    t0 = time.monotonic()
    shown = threading.Event()

    def announce() -> None:
        shown.set()
        say(f"{label} ...")

    timer = threading.Timer(after, announce)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if shown.is_set():
            say(f"{label}: done in {time.monotonic() - t0:.1f} s")


class Reporter:
    """Receives the engine's progress; this one draws a rich bar (or prints epoch lines)."""

    def __init__(self, enabled: bool = True, live: bool | None = None,
                 heartbeat_s: float = HEARTBEAT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled
        self.live = console.is_terminal if live is None else live
        self._progress: Progress | None = None
        self._task: Any = None
        self.label = ""
        self.heartbeat_s = heartbeat_s
        self.clock = clock
        self._total = self._done = self._started_at = 0
        self._t0 = self._last = 0.0

    def start_run(self, label: str, total_steps: int, done_steps: int = 0) -> None:
        self.label = label
        self._total, self._done, self._started_at = total_steps, done_steps, done_steps
        self._t0 = self._last = self.clock()
        if not (self.enabled and self.live):
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
            transient=False)
        self._progress.start()
        self._task = self._progress.add_task(label, total=total_steps, completed=done_steps, info="")

    def step(self, advance: int, info: str = "") -> None:
        self._done += advance
        if self._progress is not None:
            self._progress.update(self._task, advance=advance, info=info)
        elif self.enabled and self.clock() - self._last >= self.heartbeat_s:
            self._heartbeat()

    def _heartbeat(self) -> None:
        now = self.clock()
        self._last = now
        share = 100.0 * self._done / max(self._total, 1)
        elapsed = now - self._t0
        rate = (self._done - self._started_at) / max(elapsed, 1e-9)
        left = f", about {_clock_text((self._total - self._done) / rate)} left" if rate > 0 else ""
        print(f"{self.label} step {self._done}/{self._total} ({share:.1f}%), "
              f"{_clock_text(elapsed)} elapsed{left}", file=sys.stderr, flush=True)

    def epoch(self, record: dict[str, Any], epochs: int) -> None:
        if not self.enabled:
            return
        line = (f"{self.label} epoch {record['epoch'] + 1}/{epochs} loss {record['train/loss']:.4f}"
                f" acc {record['eval/acc']:.2f}% ({record['eval/split']}) "
                f"{record['images_per_s']:.0f} img/s")
        if self._progress is not None:
            self._progress.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)
            self._last = self.clock()

    def message(self, text: str) -> None:
        if self.enabled:
            console.print(text)

    def end_run(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
