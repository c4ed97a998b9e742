"""Console lines of a study: one per stage, with its duration and the total so far, and the
time left of a queue of trials."""
import contextlib
import math
import os
import sys
import time
from typing import Any, Dict, Hashable, Iterator, List, Optional, Sequence, Tuple


def clock(seconds: float) -> str:
    """``m:ss.s`` right-aligned, for stage lines."""
    return f'{int(seconds // 60):2d}:{seconds % 60:04.1f}'


def duration(seconds: float) -> str:
    """``1h05m`` / ``3m07s`` (never negative), for elapsed times and ETAs."""
    seconds = max(0.0, seconds)
    if seconds >= 3600:
        return f'{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m'
    return f'{int(seconds // 60)}m{int(seconds % 60):02d}s'


class Eta:
    """Time left of a queue of trials, each in a group (a task, an arm).

    A pending trial is expected to take as long as the finished trials of its group took on
    average; while its group has none, a tuple group ``(kind, ...)`` takes the mean of the
    finished groups of the same ``kind``, and otherwise all finished trials'. The sum is shared
    by ``workers``; ``nan`` until a trial has finished.
    """

    def __init__(self, groups: Sequence[Hashable], workers: int = 1) -> None:
        self.remaining: List[Hashable] = list(groups)
        self.total, self.done = len(self.remaining), 0
        self.workers = max(1, min(workers, self.total))
        self.seconds: Dict[Hashable, List[float]] = {}
        self.start = time.perf_counter()

    def eta(self) -> float:
        every = [s for v in self.seconds.values() for s in v]
        if not every:
            return math.nan
        overall = sum(every) / len(every)
        est = {k: sum(v) / len(v) for k, v in self.seconds.items()}
        kinds: Dict[Hashable, List[float]] = {}
        for k, v in self.seconds.items():
            if isinstance(k, tuple) and k:
                kinds.setdefault(k[0], []).extend(v)

        def guess(group: Hashable) -> float:
            if group in est:
                return est[group]
            same = kinds.get(group[0]) if isinstance(group, tuple) and group else None
            return sum(same) / len(same) if same else overall
        return sum(guess(g) for g in self.remaining) / self.workers

    def finished(self, group: Hashable, seconds: float) -> Tuple[str, str]:
        """Record one finished trial; return ``[done/total]`` and ``elapsed ..., ETA ...``
        (``done`` after the last) for its console line."""
        self.done += 1
        if group in self.remaining:
            self.remaining.remove(group)
        self.seconds.setdefault(group, []).append(float(seconds))
        left = 'done' if self.done >= self.total else f'ETA {duration(self.eta())}'
        return (f'[{self.done}/{self.total}]',
                f'elapsed {duration(time.perf_counter() - self.start)}, {left}')


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
