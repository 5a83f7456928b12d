"""One rich progress display for a build: an overall bar plus a spinner for the stage under way."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


class BuildProgress:
    def __init__(self, console: Console, total_stages: int) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.overall = self.progress.add_task("build", total=total_stages)

    def __enter__(self) -> BuildProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    @contextlib.contextmanager
    def stage(self, description: str) -> Iterator[None]:
        self.progress.update(self.overall, description=description)
        start = time.perf_counter()
        yield
        self.progress.advance(self.overall)
        self.console.print(f"[green]✓[/green] {description} [dim]({time.perf_counter() - start:.1f}s)[/dim]")

    def add_stages(self, count: int) -> None:
        total = self.progress.tasks[self.overall].total or 0
        self.progress.update(self.overall, total=total + count)

    @contextlib.contextmanager
    def steps(self, description: str, total: int) -> Iterator[Callable[[int, float], None]]:
        """A stage of `total` steps with a bar of its own, each step reporting its loss."""
        bar = self.progress.add_task(description, total=total)

        def advance(step: int, loss: float) -> None:
            self.progress.update(bar, completed=step, description=f"{description} (loss {loss:.4f})")

        with self.stage(description):
            try:
                yield advance
            finally:
                self.progress.remove_task(bar)

    @contextlib.contextmanager
    def count(self, description: str, total: int) -> Iterator[Callable[[], None]]:
        """A stage of `total` equal steps with a bar of its own; call the yielded function after each."""
        bar = self.progress.add_task(description, total=total)
        with self.stage(description):
            try:
                yield lambda: self.progress.advance(bar)
            finally:
                self.progress.remove_task(bar)

    def note(self, message: str) -> None:
        self.console.print(f"  [dim]{message}[/dim]")
