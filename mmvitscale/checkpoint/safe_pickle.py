"""The restricted unpickler behind :func:`mmvitscale.checkpoint.safe_load.safe_torch_load`.

A pickle is first scanned opcode by opcode (:func:`scan_pickle`, nothing is built), then
unpickled by :class:`RestrictedUnpickler`, whose ``find_class`` resolves only the names of
:data:`ALLOWED` and refuses every other global by name. Nothing it resolves is a class or
function of torch, numpy or mmengine: each name maps to an inert stand-in of this module that
checks and *records* the primitive data it is given (a tensor is a :class:`TensorRecord`
pointing at a :class:`StorageRef`, a numpy array an :class:`ArrayRecord`, ...). After
unpickling, :func:`materialize` replaces every record by a value that this module's own code
builds from validated data, with the storages' bytes read by the caller, bounded.

Bounds: the scan refuses more opcodes than a cap, memo indices that skip ahead (the C
unpickler allocates its memo table up to the largest index), and extension codes; the
constructors refuse sizes given as numbers (``bytearray(2**31)``); a tensor must lie inside its
storage (``Tensor.set_`` would otherwise grow the storage); nesting is limited to
:data:`MAX_DEPTH` levels.
"""
import pickle
import pickletools
import re
from collections import Counter, OrderedDict
from typing import Any, Callable, Dict, Optional, Tuple

import torch

__all__ = ['CheckpointError', 'CheckpointReadError', 'CheckpointRefusedError',
           'CheckpointTooLargeError', 'RestrictedUnpickler', 'StorageRef', 'TensorRecord',
           'scan_pickle', 'materialize', 'ALLOWED', 'MAX_DEPTH']

MAX_DEPTH = 100  # containers nested deeper than this are refused (mmengine's go ~8 deep)
_PLAIN_KINDS = frozenset('biufcSU?')  # numpy dtype kinds rebuilt from raw bytes
_STATISTICS = ('min', 'max', 'mean', 'current')
_PY2_MODULES = {'__builtin__': 'builtins', 'copy_reg': 'copyreg'}  # protocols 0-2 write these
_LOCATION = re.compile(r'^[a-z_]{1,16}(:\d{1,4})?$')
_KEY = re.compile(r'^\w{1,64}$')


# --------------------------------------------------------------------------- errors
class CheckpointError(Exception):
    """Base of the errors about one checkpoint file; ``path`` names it."""

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        super().__init__(message)
        self.path = path


class CheckpointReadError(CheckpointError, ValueError):
    """A file that cannot be read as a checkpoint: missing data, truncated, malformed, not a
    regular file, or over a size bound. The message names the file and the cause."""


class CheckpointTooLargeError(CheckpointReadError):
    """A checkpoint that declares more memory than its bound; the message names the number."""


class CheckpointRefusedError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint that asks for a global outside the allow-list; ``global_name`` names it."""

    def __init__(self, message: str, path: Optional[str] = None,
                 global_name: Optional[str] = None) -> None:
        super().__init__(message, path)
        self.global_name = global_name


class Malformed(Exception):
    """Raised by the stand-ins on data that is not what torch / numpy / mmengine write; the
    loader turns it into :class:`CheckpointReadError` naming the file."""


class Refused(Exception):
    """Raised by the stand-ins for a call an allowed name must not make (``bytearray(2**31)``)
    or a global refused; ``global_name`` is what the file asked for."""

    def __init__(self, global_name: str, detail: str) -> None:
        super().__init__(detail)
        self.global_name = global_name


# --------------------------------------------------------------------------- the scan
def scan_pickle(data: Any, max_ops: int) -> int:
    """Walk the opcodes of one pickle in ``data`` (bytes or a file at the pickle's start)
    without building anything; returns the end offset (after STOP).

    Raises :class:`Malformed` for a pickle that is truncated or not a pickle, has more than
    ``max_ops`` opcodes, uses extension codes, or writes a memo index ahead of the memo (the C
    unpickler sizes its memo table by the largest index it is given).
    """
    memo_len = 0
    count = 0
    end = 0
    try:
        for op, arg, pos in pickletools.genops(data):
            count += 1
            if count > max_ops:
                raise Malformed(f'it holds more than {max_ops} pickle opcodes (the bound for its '
                                'size)')
            name = op.name
            if name in ('PUT', 'BINPUT', 'LONG_BINPUT'):
                if not isinstance(arg, int) or arg > memo_len:
                    raise Malformed(f'pickle memo index {arg} skips ahead of the memo '
                                    f'({memo_len} entries)')
                memo_len = max(memo_len, arg + 1)
            elif name == 'MEMOIZE':
                memo_len += 1
            elif name in ('EXT1', 'EXT2', 'EXT4'):
                raise Malformed(f'pickle extension code {arg} (torch never writes one)')
            elif name in ('NEXT_BUFFER', 'READONLY_BUFFER'):
                raise Malformed('pickle out-of-band buffers (torch never writes one)')
            end = pos
    except ValueError as err:  # pickletools: truncated data, unknown opcode, bad argument
        raise Malformed(f'not a complete pickle ({err})') from None
    if count == 0:
        raise Malformed('empty pickle')
    return end + 1


# --------------------------------------------------------------------------- stand-ins
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
            raise Refused('numpy.dtype', f'numpy dtype {spec!r}')
        dtype = np.dtype(spec)
        if dtype.kind not in _PLAIN_KINDS:
            raise Refused('numpy.dtype', f'numpy dtype {spec!r} (kind {dtype.kind!r}): only '
                          'numeric, bool and string arrays are read')
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
            raise Malformed('malformed numpy array state')
        _, shape, dtype, fortran, raw = state
        if isinstance(raw, str):  # a Python 2 pickle read with encoding='latin1' (as numpy)
            raw = raw.encode('latin1')
        if not isinstance(dtype, _DTypeRecord) or not isinstance(raw, (bytes, bytearray)):
            raise Refused('numpy.ndarray', 'a numpy array that is not plain data (object '
                          'arrays are not read from checkpoints)')
        if not (isinstance(shape, tuple) and len(shape) <= 32
                and all(type(d) is int and d >= 0 for d in shape)):
            raise Malformed(f'malformed numpy array shape {shape!r}')
        resolved = dtype.value()
        numel = 1
        for d in shape:
            numel *= d
        if numel * resolved.itemsize != len(raw):
            raise Malformed(f'numpy array of shape {shape} and dtype {resolved} with '
                            f'{len(raw)} bytes of data')
        flat = np.frombuffer(bytes(raw), dtype=resolved)
        order = 'F' if fortran else 'C'
        return flat.reshape(shape, order=order).copy(order=order)


class _HistoryBufferRecord(_Record):
    """mmengine's ``HistoryBuffer``: its ``__dict__`` kept as data, rebuilt by :meth:`value`."""

    __slots__ = ()

    def value(self, convert: Callable[[Any], Any]):
        import numpy as np
        from mmengine.logging import HistoryBuffer
        state = self.state if isinstance(self.state, dict) else {}
        logs = convert(state.get('_log_history', []))
        counts = convert(state.get('_count_history', []))
        max_length = state.get('max_length', 1000000)
        ok = (isinstance(logs, np.ndarray) and isinstance(counts, np.ndarray)
              and logs.ndim == 1 and counts.shape == logs.shape
              and logs.dtype.kind in 'biuf' and counts.dtype.kind in 'biuf'
              and type(max_length) is int and max_length > 0)
        if not ok:
            raise Malformed('malformed mmengine HistoryBuffer')
        return HistoryBuffer(logs.tolist(), counts.tolist(), max_length)


class _DroppedRef(_Record):
    """A function reference (``HistoryBuffer.mean``): never resolved, dropped."""

    __slots__ = ()


def _getattr(owner: Any, name: Any, *default: Any) -> _DroppedRef:
    """``getattr`` as protocols 0-3 write a method reference: only ``HistoryBuffer``'s
    statistics methods, recorded and dropped; any other use (a gadget chain) is refused."""
    if owner is not _HistoryBufferRecord or name not in _STATISTICS or default:
        shown = getattr(owner, '__name__', type(owner).__name__)
        raise Refused('builtins.getattr', f'getattr({shown}, {name!r}) (only mmengine '
                      "HistoryBuffer's statistics methods are named this way)")
    return _DroppedRef(owner, name)


class _OrderedDictRecord(OrderedDict):
    """``collections.OrderedDict``; its BUILD state may only carry a state dict's
    ``_metadata`` (per-module versions), which is kept as data."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or set(state) - {'_metadata'}:
            raise Malformed('an OrderedDict with attributes other than _metadata')
        self.__dict__['_metadata'] = state.get('_metadata')


class _CounterRecord(Counter):
    """``collections.Counter``: no BUILD state."""

    def __setstate__(self, state: Any) -> None:
        raise Malformed('a Counter with attributes')


class StorageRef:
    """A storage named by the file (``data/<key>`` in a zip, or a legacy root key): its
    ``dtype``, byte ``offset`` and ``nbytes`` within the root, and ``location``."""

    __slots__ = ('key', 'dtype', 'offset', 'nbytes', 'location')

    def __init__(self, key: str, dtype: torch.dtype, offset: int, nbytes: int,
                 location: str) -> None:
        self.key, self.dtype, self.offset, self.nbytes = key, dtype, offset, nbytes
        self.location = location


class TensorRecord:
    """``_rebuild_tensor_v2/v3`` / ``_rebuild_parameter`` arguments, checked when built."""

    __slots__ = ('storage', 'dtype', 'offset', 'size', 'stride', 'requires_grad', 'parameter')

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                 dtype: Optional[torch.dtype] = None) -> None:
        if not isinstance(storage, StorageRef):
            raise Malformed('a tensor whose storage is not a storage of the file')
        if not (type(offset) is int and offset >= 0):
            raise Malformed(f'tensor storage offset {offset!r}')
        for name, seq in (('size', size), ('stride', stride)):
            if not (isinstance(seq, tuple) and len(seq) <= 64
                    and all(type(d) is int and d >= 0 for d in seq)):
                raise Malformed(f'tensor {name} {seq!r}')
        if len(size) != len(stride):
            raise Malformed(f'tensor size {size} and stride {stride} of different ranks')
        self.storage, self.dtype = storage, dtype or storage.dtype
        self.offset, self.size, self.stride = offset, size, stride
        self.requires_grad = bool(requires_grad)
        self.parameter = False

    def extent(self) -> int:
        """Elements of the storage the tensor reaches (0 when it is empty)."""
        if any(d == 0 for d in self.size):
            return 0
        return self.offset + sum((d - 1) * s for d, s in zip(self.size, self.stride)) + 1


class _Marker:
    """A name the file may mention but never call (``torch.Tensor``, storage classes)."""

    __slots__ = ('name', 'dtype')

    def __init__(self, name: str, dtype: Optional[torch.dtype] = None) -> None:
        self.name, self.dtype = name, dtype

    def __call__(self, *args: Any) -> Any:
        raise Refused(self.name, f'calling {self.name}')


_TENSOR = _Marker('torch.Tensor')
_PARAMETER = _Marker('torch.nn.parameter.Parameter')
_OBJECT = _Marker('builtins.object')
_UNTYPED = _Marker('torch.storage.UntypedStorage', torch.uint8)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None,
                       metadata=None):
    return TensorRecord(storage, offset, size, stride, requires_grad)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype,
                       metadata=None):
    if not isinstance(dtype, torch.dtype):
        raise Malformed(f'tensor dtype {dtype!r}')
    return TensorRecord(storage, offset, size, stride, requires_grad, dtype)


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    if not isinstance(data, TensorRecord):
        raise Malformed('a parameter that is not a tensor of the file')
    data.requires_grad, data.parameter = bool(requires_grad), True
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    """A tensor with Python attributes, or a subclass: only ``torch.Tensor`` / ``Parameter``
    built by a tensor rebuild function; the attributes are dropped."""
    if func not in (_rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter) \
            or new_type not in (_TENSOR, _PARAMETER) or not isinstance(args, tuple):
        raise Refused('torch._tensor._rebuild_from_type_v2',
                      'a tensor subclass or a tensor rebuilt by another function')
    out = func(*args)
    if new_type is _PARAMETER and isinstance(out, TensorRecord):
        out.parameter = True
    return out


def _numpy_scalar(dtype: Any, data: Any = None):
    """``numpy.core.multiarray.scalar(dtype, raw)`` for plain dtypes, from the raw bytes."""
    import numpy as np
    if isinstance(data, str):  # a Python 2 pickle read with encoding='latin1' (as numpy)
        data = data.encode('latin1')
    if not isinstance(dtype, _DTypeRecord) or not isinstance(data, (bytes, bytearray)):
        raise Refused('numpy.core.multiarray.scalar', 'a numpy scalar that is not plain data')
    resolved = dtype.value()
    if len(data) != resolved.itemsize:
        raise Malformed('malformed numpy scalar')
    return np.frombuffer(bytes(data), dtype=resolved, count=1)[0]


def _numpy_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any = 'C'):
    """``numpy.core.numeric._frombuffer`` (protocol 5 in-band arrays) as an array record."""
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, _DTypeRecord) \
            or order not in ('C', 'F'):
        raise Refused('numpy.core.numeric._frombuffer', 'a numpy array that is not plain data')
    record = _ArrayRecord()
    record.state = (1, shape, dtype, order == 'F', buf)
    return record


def _reconstructor(cls: Any, base: Any, state: Any = None):
    """``copyreg._reconstructor`` (protocols 0-1 objects): only for the stand-in classes."""
    if not (isinstance(cls, type) and issubclass(cls, _Record)) or base is not _OBJECT \
            or state is not None:
        raise Refused('copyreg._reconstructor', 'rebuilding an object other than mmengine\'s '
                      'HistoryBuffer')
    return cls.__new__(cls)


def _sized_text(name: str, value: Any, encoding: Any = None) -> bytes:
    """The bytes of ``bytes(...)`` / ``bytearray(...)`` / ``_codecs.encode(...)``: only from
    text or bytes already in the file, never from a number (a size to allocate)."""
    if isinstance(value, (bytes, bytearray)) and encoding is None:
        return bytes(value)
    if isinstance(value, str) and encoding in ('latin1', 'latin-1', 'latin_1'):
        return value.encode('latin1')
    if isinstance(value, int) and not isinstance(value, bool):
        raise Refused(name, f'{name}({value}): a size to allocate, not data')
    raise Refused(name, f'{name} of a {type(value).__name__}')


def _bytes(value: Any = b'', encoding: Any = None) -> bytes:
    return _sized_text('builtins.bytes', value, encoding)


def _bytearray(value: Any = b'', encoding: Any = None) -> bytearray:
    return bytearray(_sized_text('builtins.bytearray', value, encoding))


def _codecs_encode(value: Any, encoding: Any = 'utf-8') -> bytes:
    return _sized_text('_codecs.encode', value, encoding)


def _container(name: str, kind: type) -> Callable:
    def build(items: Any = ()) -> Any:
        if not isinstance(items, (list, tuple, set, frozenset)):
            raise Refused(name, f'{name} of a {type(items).__name__}')
        return kind(items)
    return build


def _ordered_dict(items: Any = ()) -> OrderedDict:
    if not isinstance(items, (list, tuple)):
        raise Refused('collections.OrderedDict', 'an OrderedDict from a '
                      f'{type(items).__name__}')
    return _OrderedDictRecord(items)


def _counter(mapping: Any = None) -> Counter:
    if mapping is not None and type(mapping) is not dict:
        raise Refused('collections.Counter', f'a Counter from a {type(mapping).__name__}')
    return _CounterRecord(mapping or {})


def _number(name: str, kind: type) -> Callable:
    def build(*args: Any) -> Any:
        if len(args) > 2 or not all(type(a) in (int, float) for a in args):
            raise Refused(name, f'{name} of {[type(a).__name__ for a in args]}')
        return kind(*args)
    return build


def _slice(*args: Any) -> slice:
    if len(args) > 3 or not all(a is None or type(a) is int for a in args):
        raise Refused('builtins.slice', 'a slice of non-integers')
    return slice(*args)


def _torch_size(dims: Any = ()) -> torch.Size:
    if not (isinstance(dims, (tuple, list)) and len(dims) <= 64
            and all(type(d) is int for d in dims)):
        raise Refused('torch.Size', 'a torch.Size of non-integers')
    return torch.Size(dims)


def _torch_device(kind: Any, index: Any = None) -> torch.device:
    if not (isinstance(kind, str) and _LOCATION.match(kind)) \
            or not (index is None or type(index) is int):
        raise Refused('torch.device', f'torch.device({kind!r}, {index!r})')
    return torch.device(kind) if index is None else torch.device(kind, index)


def _torch_version(text: Any) -> str:
    if not isinstance(text, str) or len(text) > 64:
        raise Refused('torch.torch_version.TorchVersion', 'a TorchVersion of non-text')
    return str(text)


def _storage_types() -> Dict[Tuple[str, str], _Marker]:
    dtypes = dict(Double=torch.float64, Float=torch.float32, Half=torch.float16,
                  BFloat16=torch.bfloat16, Long=torch.int64, Int=torch.int32, Short=torch.int16,
                  Char=torch.int8, Byte=torch.uint8, Bool=torch.bool,
                  ComplexDouble=torch.complex128, ComplexFloat=torch.complex64)
    out = {('torch', f'{stem}Storage'): _Marker(f'torch.{stem}Storage', dtype)
           for stem, dtype in dtypes.items()}
    out[('torch', 'UntypedStorage')] = out[('torch.storage', 'UntypedStorage')] = _UNTYPED
    return out


def _dtypes() -> Dict[Tuple[str, str], torch.dtype]:
    return {('torch', name): value for name, value in vars(torch).items()
            if isinstance(value, torch.dtype)}


def _allowed() -> Dict[Tuple[str, str], Any]:
    table: Dict[Tuple[str, str], Any] = {
        ('collections', 'OrderedDict'): _ordered_dict,
        ('collections', 'Counter'): _counter,
        ('builtins', 'set'): _container('builtins.set', set),
        ('builtins', 'frozenset'): _container('builtins.frozenset', frozenset),
        ('builtins', 'bytes'): _bytes,
        ('builtins', 'bytearray'): _bytearray,
        ('builtins', 'complex'): _number('builtins.complex', complex),
        ('builtins', 'slice'): _slice,
        ('builtins', 'object'): _OBJECT,
        ('builtins', 'getattr'): _getattr,
        ('_codecs', 'encode'): _codecs_encode,
        ('copyreg', '_reconstructor'): _reconstructor,
        ('torch', 'Size'): _torch_size,
        ('torch', 'device'): _torch_device,
        ('torch', 'Tensor'): _TENSOR,
        ('torch.nn.parameter', 'Parameter'): _PARAMETER,
        ('torch.torch_version', 'TorchVersion'): _torch_version,
        ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
        ('torch._utils', '_rebuild_tensor_v3'): _rebuild_tensor_v3,
        ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
        ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
        ('torch._tensor', '_rebuild_from_type_v2'): _rebuild_from_type_v2,
        ('numpy', 'dtype'): _DTypeRecord,
        ('numpy', 'ndarray'): _ArrayRecord,
        ('mmengine.logging.history_buffer', 'HistoryBuffer'): _HistoryBufferRecord,
    }
    for core in ('numpy.core', 'numpy._core'):
        table[(f'{core}.multiarray', '_reconstruct')] = _ArrayRecord
        table[(f'{core}.multiarray', 'scalar')] = _numpy_scalar
        table[(f'{core}.numeric', '_frombuffer')] = _numpy_frombuffer
    for name in _STATISTICS:
        table[('mmengine.logging.history_buffer', f'HistoryBuffer.{name}')] = _DroppedRef
    table.update(_storage_types())
    table.update(_dtypes())
    return table


ALLOWED: Dict[Tuple[str, str], Any] = _allowed()


class RestrictedUnpickler(pickle.Unpickler):
    """``find_class`` limited to :data:`ALLOWED` (stand-ins only) plus ``extra`` names;
    ``persistent_load`` hands each storage id to ``on_storage(saved_id) -> StorageRef``.
    ``encoding`` / ``errors`` decode Python 2 strings, as for :func:`pickle.load`."""

    def __init__(self, file: Any, on_storage: Callable[[Any], Any],
                 extra: Optional[Dict[Tuple[str, str], Any]] = None, encoding: str = 'utf-8',
                 errors: str = 'strict') -> None:
        super().__init__(file, encoding=encoding, errors=errors)
        self._on_storage = on_storage
        self._allowed = {**ALLOWED, **extra} if extra else ALLOWED

    def find_class(self, module: Any, name: Any) -> Any:
        if not (isinstance(module, str) and isinstance(name, str)):
            raise Malformed('a global whose name is not text')
        found = self._allowed.get((_PY2_MODULES.get(module, module), name))
        if found is None:
            raise Refused(f'{module}.{name}', 'not in the allow-list of tensor and plain-data '
                          'names')
        return found

    def persistent_load(self, saved_id: Any) -> Any:
        return self._on_storage(saved_id)


def storage_id(saved_id: Any) -> Tuple[str, torch.dtype, str, int, Any]:
    """``(key, dtype, location, numel, view)`` of a storage id ``('storage', type, key,
    location, numel[, view])``, checked; :class:`Malformed` otherwise."""
    if not (isinstance(saved_id, tuple) and len(saved_id) in (5, 6)):
        raise Malformed(f'persistent id {type(saved_id).__name__} (not a torch storage id)')
    kind, storage_type, key, location, numel = saved_id[:5]
    view = saved_id[5] if len(saved_id) == 6 else None
    if isinstance(kind, bytes):
        kind = kind.decode('ascii', 'replace')
    if isinstance(location, bytes):
        location = location.decode('ascii', 'replace')
    if kind != 'storage' or not isinstance(storage_type, _Marker) \
            or storage_type.dtype is None:
        raise Malformed(f'persistent id of kind {kind!r} (not a torch storage)')
    if not (isinstance(key, str) and _KEY.match(key)):
        raise Malformed(f'storage key {key!r}')
    if not (isinstance(location, str) and _LOCATION.match(location)):
        raise Malformed(f'storage location {location!r}')
    if not (type(numel) is int and numel >= 0):
        raise Malformed(f'storage size {numel!r}')
    return key, storage_type.dtype, location, numel, view


# --------------------------------------------------------------------------- materialize
def materialize(obj: Any, build_tensor: Callable[[TensorRecord], Any],
                build_storage: Callable[[StorageRef], Any]) -> Any:
    """Replace the records in ``obj`` by values (containers walked, shared objects kept
    shared, nesting bounded by :data:`MAX_DEPTH`)."""
    memo: Dict[int, Any] = {}

    def convert(x: Any, depth: int) -> Any:
        if isinstance(x, (str, bytes, int, float, bool, type(None), complex, torch.dtype,
                          torch.device, torch.Size)):
            return x
        if depth > MAX_DEPTH:
            raise Malformed(f'containers nested deeper than {MAX_DEPTH} levels')
        key = id(x)
        if key in memo:
            return memo[key]
        sub = depth + 1
        if isinstance(x, TensorRecord):
            out = build_tensor(x)
        elif isinstance(x, StorageRef):
            out = build_storage(x)
        elif isinstance(x, (_DTypeRecord, _ArrayRecord)):
            out = x.value()
        elif isinstance(x, _HistoryBufferRecord):
            out = x.value(lambda v: convert(v, sub))
        elif isinstance(x, (_DroppedRef, _Marker)):
            out = None
        elif isinstance(x, dict):
            out = OrderedDict() if isinstance(x, OrderedDict) else (
                Counter() if isinstance(x, Counter) else {})
            memo[key] = out
            for k, v in x.items():
                if isinstance(v, _DroppedRef) or k == 'statistics_methods':
                    continue
                out[convert(k, sub)] = convert(v, sub)
            metadata = x.__dict__.get('_metadata') if isinstance(x, OrderedDict) else None
            if isinstance(metadata, dict):  # state dicts carry per-module version metadata
                out._metadata = convert(metadata, sub)
            return out
        elif isinstance(x, list):
            out = []
            memo[key] = out
            out.extend(convert(v, sub) for v in x)
            return out
        elif isinstance(x, tuple):
            out = tuple(convert(v, sub) for v in x)
        elif isinstance(x, (set, frozenset)):
            out = type(x)(convert(v, sub) for v in x)
        elif isinstance(x, (bytearray, slice)) or type(x).__module__ == 'numpy':
            out = x  # built here from checked data (numpy scalars included)
        else:
            raise Malformed(f'an object of type {type(x).__name__}')
        memo[key] = out
        return out

    return convert(obj, 0)
