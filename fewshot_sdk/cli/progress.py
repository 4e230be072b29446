"""A rich progress bar that the library's callbacks can drive, or nothing when output is JSON."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

Advance = Callable[[int, dict[str, float]], None]


@contextmanager
def progress_bar(console: Console, label: str, total: int, quiet: bool = False) -> Iterator[Advance]:
    if quiet:
        yield lambda step, metrics: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=total, status="")

        def advance(step: int, metrics: dict[str, float]) -> None:
            status = "  ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k in ("loss", "val_accuracy"))
            progress.update(task, completed=step, status=status or progress.tasks[0].fields["status"])

        yield advance
