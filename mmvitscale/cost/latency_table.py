"""Latency table: measured latencies keyed by device fingerprint and architecture.

One JSON object per line (JSON Lines)::

    {"fingerprint": {...}, "fingerprint_id": "3f2a...", "family": "vit", "arch": {...},
     "input_shape": [3, 224, 224], "batch_size": 1, "median_ms": 9.1, "p10_ms": 8.9,
     "p90_ms": 9.6, "timestamp": "2026-01-01T12:00:00+00:00", ...}

Appends are safe across processes: :func:`append_rows` holds an exclusive ``fcntl.flock`` on a
sidecar ``<table>.lock`` file, writes whole lines in one call and fsyncs before unlocking.
Readers take no lock: a torn last line (a writer in progress or one that crashed) is skipped.

The latency *dataset* shipped in ``data/latency/`` uses the same rows, validated strictly
(:data:`DATASET_SCHEMA`, :func:`read_dataset`, :func:`write_dataset`).
"""
import csv
import datetime
import hashlib
import io
import json
import os.path as osp
import platform
import warnings
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch

from ..fileio import append_jsonl, atomic_write, read_jsonl, to_jsonl
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
    for key in ('median_ms', 'p10_ms', 'p90_ms', 'mean_ms', 'repeats', 'rounds',
                'round_medians_ms', 'noise_pct', 'cpu_share'):
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
    with a newline first, so it stays one bad (skipped) line instead of corrupting ours
    (:func:`~mmvitscale.fileio.append_jsonl`).
    """
    return append_jsonl(path, rows, lock=True)


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
    rows = []
    for lineno, row in read_jsonl(path, on_bad='warn', skip_torn_tail=True):
        problem = row_problem(row)
        if problem is not None:
            warnings.warn(f'{path}:{lineno}: skipping a line that is not a latency row '
                          f'({problem})')
            continue
        if _matches(row, fingerprint):
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------- shipped dataset
DATASET_SCHEMA: Dict[str, str] = {
    'fingerprint': 'object: device (CPU model / GPU name), device_type, backend, threads, '
                   'torch, onnxruntime (version or null), machine [, clock]',
    'fingerprint_id': 'str: fingerprint_id(fingerprint), 16 hex digits',
    'family': "str: the arch's latency family ('vit' or 'pit')",
    'arch': 'object: the resolved ViTArch / PiTArch as_dict()',
    'input_shape': 'list of 3 ints: C, H, W of one image',
    'batch_size': 'int >= 1',
    'median_ms': 'float > 0: median of all timed runs, ms per batch',
    'p10_ms': 'float > 0, <= median_ms',
    'p90_ms': 'float >= median_ms',
    'repeats': 'int >= 1: timed runs behind the statistics',
}
DATASET_OPTIONAL = ('rounds', 'round_medians_ms', 'noise_pct', 'cpu_share', 'run_id', 'clock',
                    'cpus', 'loadavg', 'timestamp', 'source', 'min_ms', 'max_ms', 'mean_ms',
                    'label', 'group', 'rule')


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def dataset_problem(row: Any) -> Optional[str]:
    """Why ``row`` is not a valid dataset row (:data:`DATASET_SCHEMA`), or None."""
    problem = row_problem(row)
    if problem is not None:
        return problem
    missing = [k for k in DATASET_SCHEMA if k not in row]
    if missing:
        return f'missing {missing[0]!r}'
    fp = row['fingerprint']
    for key in ('device', 'backend', 'threads'):
        if key not in fp:
            return f'fingerprint lacks {key!r}'
    if isinstance(fp['threads'], bool) or not isinstance(fp['threads'], int) or \
            fp['threads'] < 1:
        return f"fingerprint.threads must be an int >= 1, got {fp['threads']!r}"
    if row['fingerprint_id'] != fingerprint_id(fp):
        return (f"fingerprint_id {row['fingerprint_id']!r} does not match the fingerprint "
                f'({fingerprint_id(fp)})')
    from ..families import family_of_dict, latency_families, spec_from_dict
    names = tuple(f.name for f in latency_families())
    if row['family'] not in names:
        return f"family must be one of {names}, got {row['family']!r}"
    shape = row['input_shape']
    if not (isinstance(shape, list) and len(shape) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        return f'input_shape must be 3 positive ints, got {shape!r}'
    for key in ('batch_size', 'repeats'):
        v = row[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            return f'{key} must be an int >= 1, got {v!r}'
    for key in ('median_ms', 'p10_ms', 'p90_ms'):
        v = row[key]
        if not _num(v) or not v > 0 or v != v or v == float('inf'):
            return f'{key} must be a positive finite number, got {v!r}'
    if not row['p10_ms'] <= row['median_ms'] <= row['p90_ms']:
        return (f"needs p10_ms <= median_ms <= p90_ms, got {row['p10_ms']!r}, "
                f"{row['median_ms']!r}, {row['p90_ms']!r}")
    try:
        spec_from_dict(row['arch'])
    except (ValueError, TypeError) as err:
        return f'arch: {err}'
    own = family_of_dict(row['arch']).name
    if own != row['family']:
        return f"family {row['family']!r} does not match the arch, a {own} spec"
    return None


def read_dataset(path: str) -> List[Dict[str, Any]]:
    """Every row of a shipped dataset file, validated: ``ValueError`` naming the file, line
    and problem for the first bad line (a dataset is read strictly, unlike a table)."""
    if not osp.isfile(path):
        raise ValueError(f'latency dataset not found: {path}')
    rows = []
    for lineno, row in read_jsonl(path):  # JsonlError (a ValueError): "<path>:<line>: not JSON"
        problem = dataset_problem(row)
        if problem is not None:
            raise ValueError(f'{path}:{lineno}: not a latency dataset row: {problem}')
        rows.append(row)
    return rows


def write_dataset(path: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Validate ``rows`` and write them as a dataset file atomically; returns the count."""
    rows = [dict(r) for r in rows]
    for i, row in enumerate(rows):
        problem = dataset_problem(row)
        if problem is not None:
            raise ValueError(f'write_dataset: row {i} is not a latency dataset row: {problem}')
    atomic_write(path, to_jsonl(rows))
    return len(rows)


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
