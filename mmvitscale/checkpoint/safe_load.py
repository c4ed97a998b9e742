"""Reading checkpoints without running code from them.

:func:`safe_torch_load` is the only way mmvitscale reads a checkpoint it did not write in the
current run (pretrained weights, ``load_from``, ``tools/test.py``, :func:`load_pretrained`).
It is ``torch.load(weights_only=True)``: torch's opcode-restricted unpickler with torch's own
allowlist of tensor rebuild functions. Nothing of mmengine or numpy is allow-listed. Instead,
the handful of global names an mmengine checkpoint holds outside its weights resolve to inert
stand-ins defined here, which only *record* the primitive data they are given:

========================================================  ======================================
name in the file                                          stand-in
========================================================  ======================================
``numpy.dtype``                                           :class:`_DTypeRecord`
``numpy.ndarray``, ``numpy.core.multiarray._reconstruct``  :class:`_ArrayRecord`
``numpy.core.multiarray.scalar``                          :func:`_numpy_scalar`
``mmengine.logging.history_buffer.HistoryBuffer``         :class:`_HistoryBufferRecord`
``builtins.getattr``, ``HistoryBuffer.{min,max,...}``     :class:`_DroppedRef`
========================================================  ======================================

After unpickling, :func:`_materialize` walks the result and replaces every record by a value
that this module's own code builds from validated primitive data: numpy arrays and scalars of
plain numeric / bool / string dtypes via ``np.frombuffer``, history buffers through
``HistoryBuffer``'s public constructor (their pickled ``statistics_methods``, function
references, are dropped: they are how a crafted file reached ``object.__getattribute__`` before).
No stand-in has a ``__setstate__`` that touches anything but its own slots, none calls
``getattr`` on unpickled data, and no class of mmengine or numpy is ever called by the unpickler.

Only ``Runner.resume`` (the run's own checkpoint) may unpickle fully; see
:mod:`mmvitscale.compat`.
"""
import io
import os
import pickle
import threading
import zipfile
from collections import Counter, OrderedDict
from typing import Any, Dict, Optional

import torch

__all__ = ['CheckpointReadError', 'safe_torch_load', 'describe_read_error']

_LOCK = threading.Lock()  # torch's user allowlist is process-wide: one safe load at a time
_PLAIN_KINDS = frozenset('biufcSU?')  # numpy dtype kinds rebuilt from raw bytes
_STATISTICS = ('min', 'max', 'mean', 'current')


class CheckpointReadError(ValueError):
    """A checkpoint file that cannot be read: missing, empty, truncated or not a checkpoint."""


class _Record:
    """Base of the stand-ins: slots only, no behaviour but storing what it was given."""

    __slots__ = ('args', 'state')

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _DTypeRecord(_Record):
    """``numpy.dtype(spec, align, copy)`` + byte-order state, kept as data."""

    __slots__ = ()

    def value(self):
        import numpy as np
        spec = self.args[0] if self.args else None
        if not isinstance(spec, str) or len(spec) > 8 or not spec.isalnum():
            raise pickle.UnpicklingError(f'refusing numpy dtype {spec!r} in a checkpoint')
        dtype = np.dtype(spec)
        if dtype.kind not in _PLAIN_KINDS:
            raise pickle.UnpicklingError(f'refusing numpy dtype {spec!r} (kind {dtype.kind!r}) '
                                         'in a checkpoint: only numeric, bool and string arrays')
        order = self.state[1] if isinstance(self.state, tuple) and len(self.state) > 1 else '='
        if order in ('<', '>'):
            dtype = dtype.newbyteorder(order)
        return dtype


class _ArrayRecord(_Record):
    """``numpy.core.multiarray._reconstruct(ndarray, shape, typecode)`` + its BUILD state."""

    __slots__ = ()

    def value(self):
        import numpy as np
        state = self.state
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError('malformed numpy array state in a checkpoint')
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DTypeRecord) or not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError('refusing a numpy array that is not plain data '
                                         '(object arrays are not loaded from checkpoints)')
        if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)):
            raise pickle.UnpicklingError(f'malformed numpy array shape {shape!r} in a checkpoint')
        flat = np.frombuffer(bytes(raw), dtype=dtype.value())
        order = 'F' if fortran else 'C'
        try:
            return flat.reshape(shape, order=order).copy(order=order)
        except ValueError as err:
            raise pickle.UnpicklingError(f'malformed numpy array in a checkpoint: {err}') from None


class _HistoryBufferRecord(_Record):
    """mmengine's ``HistoryBuffer``: its ``__dict__`` kept as data, rebuilt by :meth:`value`."""

    __slots__ = ()

    def value(self, materialize):
        from mmengine.logging import HistoryBuffer
        state = self.state if isinstance(self.state, dict) else {}
        logs = materialize(state.get('_log_history', []))
        counts = materialize(state.get('_count_history', []))
        max_length = state.get('max_length', 1000000)
        import numpy as np
        ok = (isinstance(logs, np.ndarray) and isinstance(counts, np.ndarray)
              and logs.ndim == 1 and counts.shape == logs.shape
              and logs.dtype.kind in 'biuf' and counts.dtype.kind in 'biuf'
              and type(max_length) is int and max_length > 0)
        if not ok:
            raise pickle.UnpicklingError('malformed mmengine HistoryBuffer in a checkpoint')
        return HistoryBuffer(logs.tolist(), counts.tolist(), max_length)


class _DroppedRef(_Record):
    """A function reference (``getattr(HistoryBuffer, 'mean')``): never resolved, dropped."""

    __slots__ = ()


def _numpy_scalar(dtype: Any, data: Any = None):
    """``numpy.core.multiarray.scalar(dtype, raw)`` for plain dtypes, from the raw bytes."""
    import numpy as np
    if not isinstance(dtype, _DTypeRecord) or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError('refusing a numpy scalar that is not plain data')
    resolved = dtype.value()
    if len(data) != resolved.itemsize:
        raise pickle.UnpicklingError('malformed numpy scalar in a checkpoint')
    return np.frombuffer(bytes(data), dtype=resolved, count=1)[0]


def _stand_ins() -> list:
    """(stand-in, 'module.name') pairs for torch's ``safe_globals``."""
    pairs = [(_DTypeRecord, 'numpy.dtype'), (_ArrayRecord, 'numpy.ndarray'),
             (_HistoryBufferRecord, 'mmengine.logging.history_buffer.HistoryBuffer'),
             (_DroppedRef, 'builtins.getattr')]
    for core in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        pairs += [(_ArrayRecord, f'{core}._reconstruct'), (_numpy_scalar, f'{core}.scalar')]
    for name in _STATISTICS:
        pairs.append((_DroppedRef, f'mmengine.logging.history_buffer.HistoryBuffer.{name}'))
    return pairs


def _materialize(obj: Any, memo: Optional[Dict[int, Any]] = None) -> Any:
    """Replace the stand-ins in ``obj`` (containers walked, shared objects kept shared)."""
    if memo is None:
        memo = {}
    if isinstance(obj, (torch.Tensor, str, bytes, int, float, bool, type(None))):
        return obj
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, (_DTypeRecord, _ArrayRecord)):
        out = obj.value()
    elif isinstance(obj, _HistoryBufferRecord):
        out = obj.value(lambda x: _materialize(x, memo))
    elif isinstance(obj, _DroppedRef):
        out = None
    elif isinstance(obj, dict):
        out = type(obj)() if type(obj) in (dict, OrderedDict, Counter) else {}
        memo[key] = out
        for k, v in obj.items():
            if isinstance(v, _DroppedRef) or k == 'statistics_methods':
                continue
            out[_materialize(k, memo)] = _materialize(v, memo)
        metadata = vars(obj).get('_metadata') if isinstance(obj, OrderedDict) else None
        if isinstance(metadata, dict):  # state dicts carry per-module version metadata
            out._metadata = _materialize(metadata, memo)
        return out
    elif isinstance(obj, list):
        out = []
        memo[key] = out
        out.extend(_materialize(v, memo) for v in obj)
        return out
    elif isinstance(obj, tuple):
        out = tuple(_materialize(v, memo) for v in obj)
    elif isinstance(obj, (set, frozenset)):
        out = type(obj)(_materialize(v, memo) for v in obj)
    else:
        out = obj  # torch's own allow-listed types (dtype, device, Size, ...)
    memo[key] = out
    return out


def describe_read_error(path: str, err: BaseException) -> Optional[str]:
    """A message naming ``path`` for a file that is empty, truncated or not a checkpoint."""
    try:
        size = os.path.getsize(path)
    except (OSError, TypeError):
        size = None
    if size == 0:
        return f'{path} is empty (0 bytes): not a checkpoint'
    text = str(err)
    signs = ('PytorchStreamReader', 'zip archive', 'central directory', 'Ran out of input',
             'invalid load key', 'unpickling stack underflow', 'truncated', 'file not found')
    if isinstance(err, (EOFError, zipfile.BadZipFile)) or any(s in text for s in signs):
        return (f'{path} ({size} bytes) is truncated or not a torch checkpoint '
                f'({type(err).__name__}: {text.splitlines()[0] if text else "no detail"})')
    return None


def _refusal_detail(err: BaseException) -> str:
    """The line of torch's weights-only error that says what was refused (not its advice)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if line.startswith('WeightsUnpickler error:'):
            line = line[len('WeightsUnpickler error:'):].strip()
        if not line.startswith(('Weights only load failed', 'Check the documentation')):
            return line.split(' Please use', 1)[0].strip()
    return lines[0] if lines else type(err).__name__


def safe_torch_load(filename: Any, map_location: Any = None) -> Any:
    """``torch.load`` that cannot execute code, also for mmengine checkpoints.

    Returns the checkpoint with mmengine's history buffers and numpy values rebuilt from plain
    data. Raises ``pickle.UnpicklingError`` naming the refused global for anything else, and
    :class:`CheckpointReadError` naming the file for an empty / truncated / foreign file.
    """
    if isinstance(filename, (str, os.PathLike)) and not os.path.isfile(filename):
        raise FileNotFoundError(f'checkpoint {os.fspath(filename)} does not exist')
    try:
        with _LOCK, torch.serialization.safe_globals(_stand_ins()):
            raw = torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        name = os.fspath(filename) if isinstance(filename, (str, os.PathLike)) else 'checkpoint'
        raise pickle.UnpicklingError(
            f'{name}: refused to load: {_refusal_detail(err)} (only tensors and plain data are '
            'read from checkpoints; resuming a run\'s own checkpoint is the one exception)'
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, io.UnsupportedOperation) as err:
        message = describe_read_error(filename, err) if isinstance(filename, str) else None
        if message is None:
            raise
        raise CheckpointReadError(message) from None
    return _materialize(raw)
