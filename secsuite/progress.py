"""Progress bars on stderr (rich), silenced with SECSUITE_PROGRESS=0 or when not wanted."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

_console = Console(stderr=True)


def enabled() -> bool:
    return os.environ.get("SECSUITE_PROGRESS", "1") != "0" and "pytest" not in sys.modules


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n=1)`; draws a bar when enabled, otherwise does nothing."""
    if not enabled() or total <= 0:
        yield lambda n=1: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=_console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def log(message: str) -> None:
    if enabled():
        _console.print(message)
