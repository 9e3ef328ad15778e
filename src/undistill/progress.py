"""Progress display for long work: a live bar on a terminal, one line per epoch elsewhere."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True)


class Reporter:
    """Receives the engine's progress; this one draws a rich bar (or prints epoch lines)."""

    def __init__(self, enabled: bool = True, live: bool | None = None) -> None:
        self.enabled = enabled
        self.live = console.is_terminal if live is None else live
        self._progress: Progress | None = None
        self._task: Any = None
        self.label = ""

    def start_run(self, label: str, total_steps: int, done_steps: int = 0) -> None:
        self.label = label
        if not (self.enabled and self.live):
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
            transient=False)
        self._progress.start()
        self._task = self._progress.add_task(label, total=total_steps, completed=done_steps, info="")

    def step(self, advance: int, info: str = "") -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=advance, info=info)

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

    def message(self, text: str) -> None:
        if self.enabled:
            console.print(text)

    def end_run(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
