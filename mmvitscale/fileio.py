"""Atomic file output: write next to the target, then rename, so readers never see half a file.

Every report, table and plot the tools write goes through here. So do the JSON-lines files
(results stores, latency tables, datasets): :func:`to_jsonl`, :func:`append_jsonl`,
:func:`repair_jsonl`, :func:`read_jsonl`.
"""
import contextlib
import hashlib
import json
import os
import os.path as osp
import tempfile
import warnings
from typing import Any, Iterable, Iterator, List, Mapping, Tuple, Union


@contextlib.contextmanager
def atomic_path(path: str, mode: int = 0o644) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    For writers that want a file name (``fig.savefig``, ``torch.onnx.export``). On an exception
    the temporary file is removed and ``path`` is left as it was. The result gets ``mode``
    (``mkstemp`` would leave it readable by the owner only).
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + osp.basename(path) + '.', suffix='.tmp')
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def atomic_write(path: str, data: Union[str, bytes], mode: int = 0o644) -> None:
    """Write text or bytes to ``path`` atomically (fsynced before the rename)."""
    with atomic_path(path, mode) as tmp:
        with open(tmp, 'wb' if isinstance(data, bytes) else 'w',
                  **({} if isinstance(data, bytes) else dict(encoding='utf-8'))) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def sha256_file(path: str) -> str:
    """Hex sha256 of a file's content (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend: the tools write PNGs and never
    open a window, so a headless machine (CI, a cluster node) plots the same as a laptop."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig: Any, path: str, dpi: int = 110) -> None:
    """``fig.savefig`` as a PNG, atomically; closes the figure."""
    import matplotlib.pyplot as plt
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format='png')
    finally:
        plt.close(fig)


def json_ready(obj: Any) -> Any:
    """Mappings (ConfigDict too) -> dicts with str keys, tuples -> lists, recursively: what a
    JSON row or a subprocess payload can hold."""
    from collections.abc import Mapping
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------- JSON lines
class JsonlError(ValueError):
    """A line of a JSON-lines file that is not JSON; ``path``, ``lineno`` (1-based) and
    ``err`` say where and why."""

    def __init__(self, path: str, lineno: int, err: Exception) -> None:
        super().__init__(f'{path}:{lineno}: not JSON ({err})')
        self.path, self.lineno, self.err = path, lineno, err


def to_jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    """``rows`` as JSON lines: one object a line, keys sorted, each line ending in a newline."""
    return ''.join(json.dumps(dict(r), sort_keys=True) + '\n' for r in rows)


def append_jsonl(path: str, rows: Iterable[Mapping[str, Any]], lock: bool = False) -> int:
    """Append ``rows`` to ``path`` as JSON lines; returns the number written (0: file untouched).

    All lines go out in one ``write`` (looped, as ``os.write`` may write less) and are fsynced,
    so a crash leaves at most one torn last line. A torn last line already there (no newline)
    is closed with a newline first, so it stays one bad line instead of corrupting ours. With
    ``lock``, an exclusive ``fcntl.flock`` on ``path + '.lock'`` is held around the append, so
    appends from several processes never interleave.
    """
    rows = list(rows)
    if not rows:
        return 0
    data = to_jsonl(rows).encode('utf-8')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with _flocked(path + '.lock') if lock else contextlib.nullcontext():
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b'\n':
                data = b'\n' + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    return len(rows)


@contextlib.contextmanager
def _flocked(lock_path: str) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``lock_path`` (created when missing)."""
    import fcntl
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def repair_jsonl(path: str) -> int:
    """Cut a torn last line off ``path`` in place; returns the bytes removed (0: none, or no file).

    Torn: a last line without its newline, or a last whole line that is not JSON. Only for a
    file with one writer, which repairs before it appends (readers of a shared file skip a torn
    tail instead: :func:`read_jsonl` with ``skip_torn_tail``).
    """
    if not osp.isfile(path):
        return 0
    with open(path, 'rb+') as f:
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


def read_jsonl(path: str, on_bad: str = 'raise',
               skip_torn_tail: bool = False) -> List[Tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line of ``path`` ([] if missing).

    A line that is not JSON raises :class:`JsonlError` (``on_bad='raise'``) or is skipped with
    a warning naming ``file:line`` (``on_bad='warn'``). With ``skip_torn_tail``, an unparsable
    last line without its newline (a write in progress, or a crashed writer) is skipped
    silently. The values are not checked: a caller validates its own rows.
    """
    if on_bad not in ('raise', 'warn'):
        raise ValueError(f"on_bad must be 'raise' or 'warn', got {on_bad!r}")
    if not osp.isfile(path):
        return []
    with open(path, 'rb') as f:
        lines = f.read().split(b'\n')
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as err:  # UnicodeDecodeError too
            if skip_torn_tail and i == len(lines) - 1:  # no newline after it: torn
                continue
            if on_bad == 'raise':
                raise JsonlError(path, i + 1, err) from None
            warnings.warn(f'{path}:{i + 1}: skipping an unparsable line')
            continue
        out.append((i + 1, value))
    return out
