"""Console lines of a study: one per stage, with its duration and the total so far."""
import contextlib
import os
import sys
import time
from typing import Any, Iterator, Optional


def clock(seconds: float) -> str:
    """``m:ss.s`` right-aligned, for stage lines."""
    return f'{int(seconds // 60):2d}:{seconds % 60:04.1f}'


def loadavg_text() -> str:
    """The 1, 5 and 15 minute load averages, or ``n/a``."""
    try:
        return ' '.join(f'{v:.2f}' for v in os.getloadavg())
    except OSError:
        return 'n/a'


class Stages:
    """One console line per stage: what starts, then how long it took and the total so far."""

    def __init__(self, console: Optional[Any] = None) -> None:
        from rich.console import Console
        # bound to the real stdout now: runs redirect sys.stdout to their log files
        self.console = console or Console(file=sys.stdout, highlight=False, soft_wrap=True)
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextlib.contextmanager
    def stage(self, what: str) -> Iterator[None]:
        self.console.print(f'[{clock(self.elapsed())}] {what} ...')
        t0 = time.perf_counter()
        yield
        self.console.print(f'[{clock(self.elapsed())}]   done in {time.perf_counter() - t0:.1f}s')
