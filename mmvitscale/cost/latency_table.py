"""Latency table: measured latencies keyed by device fingerprint and architecture.

One JSON object per line (JSON Lines)::

    {"fingerprint": {...}, "fingerprint_id": "3f2a...", "family": "vit", "arch": {...},
     "input_shape": [3, 224, 224], "batch_size": 1, "median_ms": 9.1, "p10_ms": 8.9,
     "p90_ms": 9.6, "timestamp": "2026-01-01T12:00:00+00:00", ...}

Appends are safe across processes: :func:`append_rows` holds an exclusive ``fcntl.flock`` on a
sidecar ``<table>.lock`` file, writes whole lines in one call and fsyncs before unlocking.
Readers take no lock: a torn last line (a writer in progress or one that crashed) is skipped.
"""
import csv
import datetime
import hashlib
import io
import json
import os
import os.path as osp
import platform
import warnings
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch

from ..fileio import atomic_write
from .latency import device_name


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(',', ':'))


def fingerprint(device: str = 'cpu', backend: str = 'eager',
                threads: Optional[int] = None) -> Dict[str, Any]:
    """Identity of a measurement setting: device model, torch threads, versions, backend.

    ``device`` is the CPU model (``/proc/cpuinfo``) or the GPU name; ``onnxruntime`` is its
    version for the onnxruntime backends and ``None`` otherwise; ``cuda`` is added on GPUs.
    """
    dev = torch.device(device)
    fp: Dict[str, Any] = dict(device=device_name(device), device_type=dev.type,
                              threads=int(threads or torch.get_num_threads()),
                              torch=torch.__version__.split('+')[0], onnxruntime=None,
                              backend=backend, machine=platform.machine())
    if backend.startswith('onnxruntime'):
        import onnxruntime
        fp['onnxruntime'] = onnxruntime.__version__
    if dev.type == 'cuda':
        fp['cuda'] = torch.version.cuda
    return fp


def fingerprint_id(fp: Mapping[str, Any]) -> str:
    """Short stable hash of a fingerprint dict (16 hex digits)."""
    return hashlib.sha1(_canonical(dict(fp)).encode()).hexdigest()[:16]


def make_row(fp: Mapping[str, Any], family: str, arch: Mapping[str, Any],
             input_shape: Sequence[int], batch_size: int, result: Mapping[str, Any],
             **extra: Any) -> Dict[str, Any]:
    """A table row from a fingerprint, an architecture and a :func:`~.backends.measure` dict."""
    row = dict(fingerprint=dict(fp), fingerprint_id=fingerprint_id(fp), family=family,
               arch=json.loads(_canonical(arch)), input_shape=[int(s) for s in input_shape],
               batch_size=int(batch_size))
    for key in ('median_ms', 'p10_ms', 'p90_ms', 'mean_ms', 'repeats'):
        if key in result:
            row[key] = result[key]
    row.update(extra)
    row['timestamp'] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='seconds')
    return row


def append_rows(path: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Append ``rows`` as JSON lines under an exclusive lock; returns the number written.

    The lock is ``fcntl.flock`` on ``path + '.lock'``; all lines go out in one ``write`` and are
    fsynced before the lock is released. A torn last line left by a crashed writer is closed
    with a newline first, so it stays one bad (skipped) line instead of corrupting ours.
    """
    import fcntl
    lines = [json.dumps(dict(r), sort_keys=True) for r in rows]
    if not lines:
        return 0
    data = ('\n'.join(lines) + '\n').encode()
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    lock_fd = os.open(path + '.lock', os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b'\n':
                data = b'\n' + data
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
    return len(lines)


def _matches(row: Mapping[str, Any], fp: Union[None, str, Mapping[str, Any]]) -> bool:
    if fp is None:
        return True
    if isinstance(fp, str):
        return row.get('fingerprint_id') == fp
    return row.get('fingerprint_id') == fingerprint_id(fp)


ROW_KEYS = (('fingerprint', dict), ('fingerprint_id', str), ('arch', dict))  # make_row's core


def row_problem(row: Any) -> Optional[str]:
    """Why a parsed JSON value is not a latency-table row (None when it is one)."""
    if not isinstance(row, dict):
        return f'a JSON {type(row).__name__}, not an object'
    for key, kind in ROW_KEYS:
        if key not in row:
            return f'no {key!r} key (keys: {sorted(row)[:8]})'
        if not isinstance(row[key], kind):
            return f'{key!r} is a {type(row[key]).__name__}, not a {kind.__name__}'
    return None


def read_rows(path: str, fingerprint: Union[None, str, Mapping[str, Any]] = None
              ) -> List[Dict[str, Any]]:
    """Rows of a table, optionally only those of one fingerprint (dict or its id).

    A missing file reads as empty. An unparsable last line without its newline (a write in
    progress) is skipped silently; any other unparsable line, and any line that is valid JSON
    but not a row (no ``fingerprint`` / ``fingerprint_id`` / ``arch``, e.g. ``[]`` or
    ``{"foo": 1}``), is skipped with a warning naming the file and line.
    """
    if not osp.exists(path):
        return []
    with open(path, 'rb') as f:
        data = f.read()
    lines = data.split(b'\n')
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if i != len(lines) - 1:  # the last piece has no newline: torn, expected
                warnings.warn(f'{path}:{i + 1}: skipping an unparsable line')
            continue
        problem = row_problem(row)
        if problem is not None:
            warnings.warn(f'{path}:{i + 1}: skipping a line that is not a latency row '
                          f'({problem})')
            continue
        if _matches(row, fingerprint):
            rows.append(row)
    return rows


def _flatten(row: Mapping[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in row.items():
        if key in ('fingerprint', 'arch') and isinstance(value, Mapping):
            for k, v in value.items():
                out[f'{key}.{k}'] = _canonical(v) if isinstance(v, (list, dict)) else v
        elif isinstance(value, (list, dict)):
            out[key] = _canonical(value)
        else:
            out[key] = value
    return out


def to_csv(path: str, csv_path: str,
           fingerprint: Union[None, str, Mapping[str, Any]] = None) -> int:
    """Write the table (or one fingerprint's rows) as CSV, atomically; returns the row count.

    ``fingerprint`` and ``arch`` are flattened into ``fingerprint.<key>`` / ``arch.<key>``
    columns; lists are JSON-encoded. Columns are in first-seen order.
    """
    rows = [_flatten(r) for r in read_rows(path, fingerprint)]
    columns: Dict[str, None] = {}
    for r in rows:
        columns.update(dict.fromkeys(r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(csv_path, buf.getvalue())
    return len(rows)
