"""Results store: one JSON line per finished trial, appended as each trial finishes.

A line is written with one ``write`` of the whole line, then flushed and fsynced, so a crash
(SIGKILL, power loss) leaves at most one torn last line. Opening the store repairs that: the
torn tail is cut off (it was an unfinished trial, which reruns). Rows are keyed by their
trial key; a study that reruns after a crash skips every key already in the store.

One study owns an out dir while it trains: :func:`owning_study` / :func:`hold_study` take an
``fcntl`` lock on ``<out_dir>/study.lock`` (the holder's pid, host and start time written in
it); a second study on the same out dir waits for it (then finds the first one's trials in the
store) or refuses, naming the holder. :class:`TrialClaim` is the same per trial folder, so two Slurm
array tasks never train one trial at once.
"""
import contextlib
import json
import os
import os.path as osp
import socket
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

import torch

from ..fileio import JsonlError, append_jsonl, read_jsonl, repair_jsonl


class StoreError(ValueError):
    """A results store that cannot be read (a corrupt line before the last, a metric that is
    not a number), or an out dir / trial that another study holds."""


LOCK_NAME = 'study.lock'
CLAIM_NAME = 'claim.lock'
_HELD: Dict[str, int] = {}  # lock file -> fd, the locks this process holds


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            info = json.loads(f.read() or '{}')
    except (OSError, ValueError):
        info = {}
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"
            + (f" since {info['since']}" if 'since' in info else '')
            + (f" ({info['what']})" if info.get('what') else ''))


def _try_lock(path: str, what: str) -> Optional[int]:
    """The fd of ``path`` locked exclusively by this process, or None when another holds it."""
    import fcntl
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    info = dict(pid=os.getpid(), host=socket.gethostname(),
                since=time.strftime('%Y-%m-%dT%H:%M:%S'), what=what)
    os.pwrite(fd, (json.dumps(info) + '\n').encode(), 0)
    os.fsync(fd)
    return fd


def _acquire(path: str, what: str, wait: bool, say: Optional[Callable[[str], None]],
             poll_s: float, timeout: Optional[float], kind: str) -> str:
    path = osp.abspath(path)
    if path in _HELD:
        return path
    os.makedirs(osp.dirname(path), exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    told = False
    while True:
        fd = _try_lock(path, what)
        if fd is not None:
            _HELD[path] = fd
            return path
        holder = _holder(path)
        if not wait or (deadline is not None and time.monotonic() > deadline):
            raise StoreError(f'{kind} is held by {holder}; lock {path}'
                             + ('' if not wait else f' (waited {timeout:g} s)'))
        if say and not told:
            say(f'waiting for {holder}: it holds {kind} (lock {path})')
            told = True
        time.sleep(poll_s)


def hold_study(out_dir: str, wait: bool = True, say: Optional[Callable[[str], None]] = None,
               poll_s: float = 1.0, timeout: Optional[float] = None) -> str:
    """Own ``out_dir`` for the rest of this process (or until :func:`release`).

    When another process holds it: wait (``say`` is told who, once) or, with ``wait=False`` or
    after ``timeout`` seconds, raise :class:`StoreError` naming the holder's pid and host.
    Held already by this process: nothing to do. Returns the lock file.
    """
    import sys
    what = osp.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'python'
    return _acquire(osp.join(out_dir, LOCK_NAME), what, wait, say, poll_s, timeout,
                    f'the study out dir {osp.abspath(out_dir)}')


@contextlib.contextmanager
def owning_study(out_dir: str, wait: bool = True, say: Optional[Callable[[str], None]] = None,
                 poll_s: float = 1.0, timeout: Optional[float] = None) -> Iterator[str]:
    """:func:`hold_study` for the ``with`` block (released after it, unless this process
    held the out dir already)."""
    path = osp.abspath(osp.join(out_dir, LOCK_NAME))
    mine = path not in _HELD
    hold_study(out_dir, wait, say, poll_s, timeout)
    try:
        yield path
    finally:
        if mine:
            release(path)


def release(lock_file: str) -> None:
    """Give up a lock taken by :func:`hold_study` or :class:`TrialClaim`."""
    fd = _HELD.pop(osp.abspath(lock_file), None)
    if fd is not None:
        os.close(fd)  # closing the only fd releases the flock


class TrialClaim:
    """Exclusive claim on one trial folder while it trains (``<trial dir>/claim.lock``).

    ``with TrialClaim(folder, what):`` raises :class:`StoreError` naming the holder when
    another process (another Slurm array task, another host) is training that trial; a
    claim dies with its process, so a killed task never blocks the rerun.
    """

    def __init__(self, trial_dir: str, what: str = '') -> None:
        self.path = osp.join(osp.abspath(trial_dir), CLAIM_NAME)
        self.what = what or 'trial'

    def __enter__(self) -> 'TrialClaim':
        _acquire(self.path, self.what, False, None, 0.0, None, f'trial {self.what}')
        return self

    def __exit__(self, *exc: Any) -> None:
        release(self.path)


def _not_number(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, float))


def machine_fingerprint() -> Dict[str, Any]:
    """What makes float results machine-dependent: CPU model, torch, threads, load."""
    import platform

    from ..cost import cpu_name
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return dict(cpu=cpu_name(), cores=os.cpu_count(), torch=torch.__version__,
                threads=torch.get_num_threads(), python=platform.python_version(),
                loadavg=load)


class ResultStore:
    """JSON-lines file of finished trials, keyed by ``row['key']`` (or ``key_fn(row)``).

    Args:
        path: the ``.jsonl`` file (created with its folder when missing).
        key_fn: a row's identity when it is not ``row['key']`` alone.
        stamp: add ``written_at`` (local time) to rows that lack it.
    """

    def __init__(self, path: str, key_fn: Optional[Callable[[Mapping[str, Any]], str]] = None,
                 stamp: bool = True) -> None:
        self.path = osp.abspath(path)
        self.key_fn = key_fn or (lambda row: row['key'])
        self.stamp = stamp
        os.makedirs(osp.dirname(self.path), exist_ok=True)
        self.repaired_bytes = repair_jsonl(self.path)  # cut a torn last line
        self._rows: Dict[str, Dict[str, Any]] = {}
        for row in self._read():
            self._rows[self.key_fn(row)] = row

    def _read(self) -> Iterator[Dict[str, Any]]:
        try:
            lines = read_jsonl(self.path)
        except JsonlError as err:
            raise StoreError(f'{err.path}:{err.lineno}: not a JSON line ({err.err}); '
                             'only a torn last line is repaired') from err
        for lineno, row in lines:
            if not isinstance(row, dict) or 'key' not in row:
                raise StoreError(f'{self.path}:{lineno}: a row needs a "key"')
            if 'metric' in row and _not_number(row['metric']):
                raise StoreError(f'{self.path}:{lineno}: metric {row["metric"]!r} is not a '
                                 'number')
            metrics = row.get('metrics')
            for name, value in (metrics.items() if isinstance(metrics, dict) else ()):
                if _not_number(value):
                    raise StoreError(f'{self.path}:{lineno}: metrics.{name} {value!r} is not '
                                     'a number')
            yield row

    def reload(self) -> int:
        """Read the file again (rows another process appended); returns the rows added."""
        before = len(self._rows)
        self.repaired_bytes += repair_jsonl(self.path)
        for row in self._read():
            self._rows[self.key_fn(row)] = row
        return len(self._rows) - before

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        return self._rows.get(key)

    def rows(self) -> List[Dict[str, Any]]:
        """Every row, in the order written (a key written twice: the last one wins)."""
        return list(self._rows.values())

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one finished trial: one write of the full line, flush, fsync."""
        if 'key' not in row:
            raise ValueError('a result row needs a "key"')
        row = dict(row)
        if self.stamp:
            row.setdefault('written_at', time.strftime('%Y-%m-%dT%H:%M:%S'))
        append_jsonl(self.path, [row])
        self._rows[self.key_fn(row)] = json.loads(json.dumps(row))  # as read back
