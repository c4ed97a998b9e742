"""Results store: one JSON line per finished trial, appended as each trial finishes.

A line is written with one ``write`` of the whole line, then flushed and fsynced, so a crash
(SIGKILL, power loss) leaves at most one torn last line. Opening the store repairs that: the
torn tail is cut off (it was an unfinished trial, which reruns). Rows are keyed by their
trial key; a study that reruns after a crash skips every key already in the store.
"""
import json
import os
import os.path as osp
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

import torch


class StoreError(ValueError):
    """A results store that cannot be read (a corrupt line before the last)."""


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
        self.repaired_bytes = self._repair()
        self._rows: Dict[str, Dict[str, Any]] = {}
        for row in self._read():
            self._rows[self.key_fn(row)] = row

    def _repair(self) -> int:
        """Cut a torn last line (no newline, or not valid JSON); return the bytes removed."""
        if not osp.isfile(self.path):
            return 0
        with open(self.path, 'rb+') as f:
            data = f.read()
            if not data:
                return 0
            keep = len(data)
            if not data.endswith(b'\n'):
                keep = data.rfind(b'\n') + 1
            else:
                last_start = data.rfind(b'\n', 0, len(data) - 1) + 1
                try:
                    json.loads(data[last_start:].decode('utf-8'))
                except ValueError:
                    keep = last_start
            if keep < len(data):
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
            return len(data) - keep

    def _read(self) -> Iterator[Dict[str, Any]]:
        if not osp.isfile(self.path):
            return
        with open(self.path, encoding='utf-8') as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as err:
                    raise StoreError(f'{self.path}:{lineno}: not a JSON line ({err}); '
                                     'only a torn last line is repaired') from err
                if not isinstance(row, dict) or 'key' not in row:
                    raise StoreError(f'{self.path}:{lineno}: a row needs a "key"')
                yield row

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
        line = (json.dumps(row, sort_keys=True, allow_nan=True) + '\n').encode('utf-8')
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        self._rows[self.key_fn(row)] = json.loads(line)
