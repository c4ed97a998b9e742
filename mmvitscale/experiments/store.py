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

from ..fileio import JsonlError, append_jsonl, read_jsonl, repair_jsonl


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
        append_jsonl(self.path, [row])
        self._rows[self.key_fn(row)] = json.loads(json.dumps(row))  # as read back
