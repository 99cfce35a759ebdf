"""Progress of a long run: a bar per stage in a terminal, plain lines otherwise (logs, CI, schedulers).

The flow reports through ``current()``; the CLI chooses the reporter for its console. Outside the CLI
(a deployment), plain lines go through print(), which the flows' log_prints records as run logs.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class PlainProgress:
    """One line per step: `ingest 3/34 balances/2025-03`, to the CLI's console, or else through print()
    (which a flow run with log_prints records in its logs)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def stage(self, name: str, total: int) -> None:
        self.totals[name], self.done[name] = total, 0

    def note(self, text: str) -> None:
        """A line said before or between the stages (a program skipped, a cascade taken over)."""
        if self.console is None:
            print(text, flush=True)
        else:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def advance(self, name: str, label: str) -> None:
        self.done[name] += 1
        line = f"{name} {self.done[name]}/{self.totals[name]} {label}"
        if self.console is None:
            print(line, flush=True)
        else:
            self.console.print(line, markup=False, highlight=False)


class BarProgress:
    """A rich progress bar per stage, labelled with the month (or file) being worked on."""

    def __init__(self, console: Console) -> None:
        self.bars = Progress(
            TextColumn("{task.fields[stage]:<9}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
        )
        self.tasks: dict[str, int] = {}

    def stage(self, name: str, total: int) -> None:
        if not self.tasks:
            self.bars.start()
        self.tasks[name] = self.bars.add_task("", total=total, stage=name)

    def note(self, text: str) -> None:
        self.bars.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def advance(self, name: str, label: str) -> None:
        self.bars.update(self.tasks[name], advance=1, description=label)

    def stop(self) -> None:
        if self.tasks:
            self.bars.stop()


_current: PlainProgress | BarProgress = PlainProgress()


def current() -> PlainProgress | BarProgress:
    return _current


@contextmanager
def reporting(console: Console) -> Iterator[None]:
    """Bars when ``console`` is a terminal, plain lines otherwise, for the duration of a command."""
    global _current
    previous = _current
    _current = BarProgress(console) if console.is_terminal else PlainProgress(console)
    try:
        yield
    finally:
        if isinstance(_current, BarProgress):
            _current.stop()
        _current = previous
