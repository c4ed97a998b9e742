"""Atomic file output: write next to the target, then rename, so readers never see half a file.

Every report, table and plot the tools write goes through here.
"""
import contextlib
import os
import os.path as osp
import tempfile
from typing import Any, Iterator, Union


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
