"""Progress for long commands: a rich bar on a terminal, plain log lines otherwise.

A bar redrawn in place is useless in a log file (nohup, CI), so when stderr is not a
terminal each validation record is printed as one line instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

Advance = Callable[[int, dict[str, float]], None]
SHOWN = ("loss", "train_accuracy", "val_accuracy", "best_val_accuracy", "val_mse", "best_val_mse")


def describe(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k}={metrics[k]:.4f}" for k in SHOWN if k in metrics)


@contextmanager
def progress_bar(console: Console, label: str, total: int, quiet: bool = False) -> Iterator[Advance]:
    if quiet:
        yield lambda step, metrics: None
        return
    if not console.is_terminal:

        def log_line(step: int, metrics: dict[str, float]) -> None:
            if any(key.startswith("val_") for key in metrics) or step == total:
                console.print(f"{label} {step}/{total}  {describe(metrics)}".rstrip(), soft_wrap=True)

        yield log_line
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
            status = describe(metrics)
            progress.update(task, completed=step, status=status or progress.tasks[0].fields["status"])

        yield advance


@contextmanager
def embedding_progress(console: Console, quiet: bool = False) -> Iterator[None]:
    """A bar for the library's chunked embedding (hundreds of photos take seconds on a CPU).

    Shown only on a terminal and only for inputs of several chunks: a 5x5 support set
    finishes before a bar would be readable.
    """
    from fewshot_sdk.progress import reporting_progress

    if quiet or not console.is_terminal:
        yield
        return
    with Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), console=console, transient=True) as bar:
        tasks: dict[int, TaskID] = {}

        def update(done: int, total: int) -> None:
            if total not in tasks:
                tasks[total] = bar.add_task("embedding", total=total)
            bar.update(tasks[total], completed=done)

        with reporting_progress(update):
            yield
