"""Progress of long library calls (embedding hundreds of photos), for whoever wants to show it.

The library never prints: ``adapt`` and ``predict`` report ``(done, total)`` to the
callback installed with :func:`reporting_progress`, if any (the CLI installs a bar).
A context variable, so threads and async tasks each see their own reporter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Reporter = Callable[[int, int], None]
_REPORTER: ContextVar[Reporter | None] = ContextVar("fewshot_progress", default=None)


@contextmanager
def reporting_progress(reporter: Reporter) -> Iterator[None]:
    """Within this block, images embedded in chunks are reported as ``reporter(done, total)``."""
    token = _REPORTER.set(reporter)
    try:
        yield
    finally:
        _REPORTER.reset(token)


def report(done: int, total: int) -> None:
    reporter = _REPORTER.get()
    if reporter is not None:
        reporter(done, total)
