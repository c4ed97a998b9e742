"""Reading checkpoints without running code from them, with memory bounded before allocation.

:func:`safe_torch_load` is how mmvitscale reads every checkpoint: pretrained weights,
``load_from``, ``tools/test.py``, :func:`~mmvitscale.checkpoint.load_pretrained` and
``Runner.resume`` (see :mod:`mmvitscale.compat`). It does not call ``torch.load``: it reads
torch's two formats itself (the zip archive of ``torch.save``, and the legacy
``_use_new_zipfile_serialization=False`` stream) with the restricted unpickler of
:mod:`mmvitscale.checkpoint.safe_pickle`, which resolves no class or function of torch, numpy or
mmengine: only inert stand-ins that record data, rebuilt afterwards by this package's code.

Before anything is allocated it checks, each refusal naming the file and the number:

* the path is a regular file (a FIFO, a device such as ``/dev/zero``, a directory or a sparse
  file without data is refused saying what it is; a FIFO is never opened for reading);
* zip: the member count, then the declared (uncompressed) sizes of all members against
  ``max_bytes`` (default :data:`SIZE_FACTOR` x the file's size), each member read through a
  bounded stream that stops at its declared size;
* the pickle's opcode count and memo indices (:func:`~.safe_pickle.scan_pickle`);
* the storages the pickle declares (zip and legacy) against the same ``max_bytes``, and each
  against the bytes present in the file; each tensor against its storage.

Every failure is :class:`CheckpointRefusedError` (a global outside the allow-list, named) or
:class:`CheckpointReadError` (truncated, malformed, not a regular file, too large), with the
file's name; no message relays torch's advice to turn ``weights_only`` off.
"""
import contextlib
import io
import itertools
import os
import stat
import struct
import zipfile
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch

from .safe_pickle import (CheckpointError, CheckpointReadError, CheckpointRefusedError,
                          CheckpointTooLargeError, Malformed, Refused, RestrictedUnpickler,
                          StorageRef, TensorRecord, materialize, scan_pickle, storage_id)

__all__ = ['CheckpointError', 'CheckpointReadError', 'CheckpointRefusedError',
           'CheckpointTooLargeError', 'safe_torch_load', 'safe_pickle_load', 'check_regular_file',
           'SIZE_FACTOR']

SIZE_FACTOR = 2  # default max_bytes: this many times the file's size
_MAGIC = 0x1950A86A20F9469CFC6C  # torch's legacy format
_LEGACY_PROTOCOL = 1001
_CHUNK = 1 << 20
_KINDS = ((stat.S_ISFIFO, 'a FIFO (named pipe)'), (stat.S_ISCHR, 'a character device'),
          (stat.S_ISBLK, 'a block device'), (stat.S_ISDIR, 'a directory'),
          (stat.S_ISSOCK, 'a socket'))


def _kind(mode: int) -> str:
    return next((text for test, text in _KINDS if test(mode)), 'not a regular file')


def check_regular_file(path: str) -> os.stat_result:
    """``os.stat(path)``; ``FileNotFoundError`` if missing, :class:`CheckpointReadError`
    saying what it is when it is not a regular file (nothing is opened)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f'checkpoint {path} does not exist') from None
    except OSError as err:
        raise CheckpointReadError(f'{path}: cannot stat the checkpoint ({err.strerror})',
                                  path) from None
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointReadError(f'{path} is {_kind(info.st_mode)}, not a regular file: '
                                  'refusing to read it as a checkpoint', path)
    return info


def _open_regular(path: str) -> Tuple[Any, int]:
    """Open a regular file for reading (never blocks on a FIFO swapped in after the stat);
    refuse a sparse file whose first byte is a hole. Returns (file, size)."""
    before = check_regular_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_CLOEXEC', 0))
    except OSError as err:
        raise CheckpointReadError(f'{path}: cannot open the checkpoint ({err.strerror})',
                                  path) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (before.st_dev,
                                                                            before.st_ino):
            raise CheckpointReadError(f'{path} changed while it was opened (now '
                                      f'{_kind(info.st_mode)}): refusing to read it', path)
        _check_not_sparse(fd, path, info.st_size)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, 'rb'), info.st_size


def _check_not_sparse(fd: int, path: str, size: int) -> None:
    seek_data = getattr(os, 'SEEK_DATA', None)
    if seek_data is None or size == 0:
        return
    try:
        first = os.lseek(fd, 0, seek_data)
    except OSError as err:
        if err.errno == 6:  # ENXIO: no data at all
            raise CheckpointReadError(f'{path} is a sparse file: its {size} bytes are all '
                                      'holes (no data), not a checkpoint', path) from None
        return  # the file system cannot tell
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
    if first > 0:
        raise CheckpointReadError(f'{path} is a sparse file starting with a hole of {first} '
                                  f'bytes (of {size}): not a checkpoint', path)


class _Reader:
    """One checkpoint being read: its name, size, bounds and storages."""

    what = 'checkpoints'  # what the refusals say is read

    def __init__(self, f: Any, name: str, size: int, max_bytes: Optional[int],
                 map_location: Any) -> None:
        self.f, self.name, self.size = f, name, size
        self.cap = SIZE_FACTOR * size if max_bytes is None else int(max_bytes)
        self.cap_text = (f'the cap of {self.cap} bytes ({SIZE_FACTOR} x its size of {size} '
                         'bytes; pass max_bytes= to raise it)' if max_bytes is None else
                         f'max_bytes={self.cap}')
        self.max_ops = 1_000_000 + size // 64
        self.map_location = map_location
        self.roots: Dict[str, Tuple[int, str]] = {}  # key -> (nbytes, location)
        self.declared = 0
        self.storages: Dict[str, Any] = {}  # key -> untyped storage, placed

    # ----------------------------------------------------------------- errors
    def read_error(self, detail: str) -> CheckpointReadError:
        return CheckpointReadError(f'{self.name} ({self.size} bytes): {detail}', self.name)

    def too_large(self, what: str, number: int) -> CheckpointTooLargeError:
        return CheckpointTooLargeError(f'{self.name}: refused to load: {what} {number} bytes, '
                                       f'more than {self.cap_text}', self.name)

    def refused(self, err: Refused) -> CheckpointRefusedError:
        return CheckpointRefusedError(
            f'{self.name}: refused to load global {err.global_name}: {err} (only tensors and '
            f'plain data are read from {self.what}; no code from the file is run)',
            self.name, err.global_name)

    # ----------------------------------------------------------------- storages
    def declare(self, key: str, nbytes: int, location: str) -> None:
        if key in self.roots:
            if self.roots[key][0] < nbytes:
                raise Malformed(f'storage {key} declared with two sizes')
            return
        self.declared += nbytes
        if self.declared > self.cap:
            raise self.too_large('its storages declare at least', self.declared)
        self.roots[key] = (nbytes, location)

    def unpickle(self, data: bytes, on_storage: Callable[[Any], Any]) -> Any:
        scan_pickle(data, self.max_ops)
        return RestrictedUnpickler(io.BytesIO(data), on_storage).load()

    def read_into(self, stream: Any, nbytes: int, what: str) -> torch.Tensor:
        """``nbytes`` from ``stream`` into a new uint8 tensor, in chunks; refuses a short read
        and a stream that yields more than declared."""
        buf = torch.empty(nbytes, dtype=torch.uint8)
        view = memoryview(buf.numpy()) if nbytes else memoryview(b'')
        got = 0
        while got < nbytes:
            chunk = stream.read(min(_CHUNK, nbytes - got))
            if not chunk:
                raise self.read_error(f'truncated: {what} holds {got} of its {nbytes} bytes')
            view[got:got + len(chunk)] = chunk
            got += len(chunk)
        return buf

    def place(self, buf: torch.Tensor, location: str) -> Any:
        """The storage of ``buf`` moved where ``map_location`` (or the file) says."""
        storage = buf.untyped_storage()
        target: Any = location
        mapping = self.map_location
        if callable(mapping):
            out = mapping(storage, location)
            if out is not None:
                return out if isinstance(out, torch.UntypedStorage) else out.untyped_storage()
        elif isinstance(mapping, dict):
            target = mapping.get(location, location)
        elif mapping is not None:
            target = mapping
        try:
            device = torch.device(target)
            if device.type == 'cpu':
                return storage
            return buf.to(device).untyped_storage()
        except (RuntimeError, AssertionError, ValueError, TypeError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise CheckpointReadError(
                f'{self.name}: its tensors are stored on {location!r}, which cannot be used '
                f'here ({first}); load it with map_location="cpu"', self.name) from None

    def tensor(self, record: TensorRecord) -> torch.Tensor:
        ref = record.storage
        storage = self.storage(ref)
        itemsize = torch.empty((), dtype=record.dtype).element_size()
        if record.extent() * itemsize > ref.nbytes:
            raise Malformed(f'a tensor of size {record.size} reaches {record.extent()} '
                            f'elements of a {ref.nbytes}-byte storage')
        tensor = torch.empty(0, dtype=record.dtype, device=storage.device).set_(
            storage, record.offset, record.size, record.stride)
        grad = record.requires_grad and (tensor.is_floating_point() or tensor.is_complex())
        if record.parameter:
            return torch.nn.Parameter(tensor, requires_grad=grad)
        return tensor.requires_grad_(grad) if grad else tensor

    def storage(self, ref: StorageRef) -> Any:
        root = self.storages[ref.key]
        if ref.offset == 0 and ref.nbytes == root.nbytes():
            return root
        return root[ref.offset:ref.offset + ref.nbytes]

    def typed_storage(self, ref: StorageRef) -> Any:
        return torch.TypedStorage(wrap_storage=self.storage(ref), dtype=ref.dtype,
                                  _internal=True)

    def finish(self, obj: Any) -> Any:
        return materialize(obj, self.tensor, self.typed_storage)


# --------------------------------------------------------------------------- zip format
def _eocd(reader: _Reader) -> Tuple[int, int, int]:
    """(entries, central directory size, offset) from the end records, zip64 included."""
    f, size = reader.f, reader.size
    tail_len = min(size, 65557)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(b'PK\x05\x06')
    if at < 0 or len(tail) - at < 22:
        raise reader.read_error('truncated or damaged: a zip archive without its end record '
                                '(a save cut short?)')
    entries, cd_size, cd_offset = struct.unpack('<xxxxxxxxxxHII', tail[at:at + 20])
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        loc = tail.rfind(b'PK\x06\x07', 0, at)
        if loc < 0:
            raise reader.read_error('damaged: a zip64 archive without its zip64 locator')
        (record,) = struct.unpack('<Q', tail[loc + 8:loc + 16])
        if record + 56 > size:
            raise reader.read_error('truncated: its zip64 end record lies past its end')
        f.seek(record)
        head = f.read(56)
        if head[:4] != b'PK\x06\x06':
            raise reader.read_error('damaged: no zip64 end record where its locator points')
        entries, cd_size, cd_offset = struct.unpack('<QQQ', head[32:56])
    if cd_offset + cd_size > size:
        raise reader.read_error(f'truncated: its central directory ends at byte '
                                f'{cd_offset + cd_size}')
    return entries, cd_size, cd_offset


def _load_zip(reader: _Reader) -> Any:
    entries, _, _ = _eocd(reader)
    max_members = 20_000 + reader.size // 4096
    if entries > max_members:
        raise reader.read_error(f'refused to load: {entries} zip members, more than the bound '
                                f'of {max_members} for its size')
    reader.f.seek(0)
    try:
        archive = zipfile.ZipFile(reader.f)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise reader.read_error(f'damaged zip archive ({err})') from None
    infos = archive.infolist()
    pickles = [i for i in infos if i.filename.endswith('/data.pkl')
               and i.filename.count('/') == 1]
    if len(pickles) != 1:
        raise reader.read_error('a zip archive, but not a torch checkpoint (no single '
                                '<archive>/data.pkl)')
    prefix = pickles[0].filename[:-len('data.pkl')]
    total = 0
    for info in infos:
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise reader.read_error(f'zip member {info.filename} uses compression '
                                    f'{info.compress_type} (only stored / deflated are read)')
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise reader.read_error(f'damaged: stored zip member {info.filename} declares '
                                    f'{info.file_size} bytes but holds {info.compress_size}')
        if info.header_offset + info.compress_size > reader.size:
            raise reader.read_error(f'truncated: zip member {info.filename} ends past the end '
                                    'of the file')
        total += info.file_size
        if total > reader.cap:
            raise reader.too_large('its zip members declare (uncompressed) at least', total)
    members = {i.filename: i for i in infos}

    def member(name: str, limit: int) -> bytes:
        info = members[name]
        if info.file_size > limit:
            raise reader.too_large(f'zip member {name} declares', info.file_size)
        with archive.open(info) as stream:
            data = stream.read(info.file_size)
            if len(data) != info.file_size or stream.read(1):
                raise reader.read_error(f'zip member {name} inflates to a size other than '
                                        f'the {info.file_size} bytes it declares')
        return data

    order = members.get(prefix + 'byteorder')
    if order is not None and member(order.filename, 16) != b'little':
        raise reader.read_error('a big-endian checkpoint (only little-endian files are read)')

    def on_storage(saved_id: Any) -> StorageRef:
        key, dtype, location, numel, view = storage_id(saved_id)
        if view is not None:
            raise Malformed('a legacy storage view in a zip checkpoint')
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        info = members.get(f'{prefix}data/{key}')
        if info is None:
            raise Malformed(f'storage {key} has no data/{key} record')
        if info.file_size != nbytes:
            raise Malformed(f'storage {key} declares {nbytes} bytes, its record holds '
                            f'{info.file_size}')
        reader.declare(key, nbytes, location)
        return StorageRef(key, dtype, 0, nbytes, location)

    obj = reader.unpickle(member(pickles[0].filename, reader.cap), on_storage)
    for key, (nbytes, location) in reader.roots.items():
        name = f'{prefix}data/{key}'
        try:
            with archive.open(members[name]) as stream:
                buf = reader.read_into(stream, nbytes, f'zip member {name}')
                if stream.read(1):
                    raise reader.read_error(f'zip member {name} inflates past the {nbytes} '
                                            'bytes it declares')
        except zipfile.BadZipFile as err:
            raise reader.read_error(f'damaged zip member {name} ({err})') from None
        reader.storages[key] = reader.place(buf, location)
    return reader.finish(obj)


# --------------------------------------------------------------------------- legacy format
class _Bounded:
    """``read`` / ``readline`` that never ask the file for more than it has left."""

    def __init__(self, f: Any, size: int) -> None:
        self.f, self.size = f, size

    def tell(self) -> int:
        return self.f.tell()

    def read(self, n: int = -1) -> bytes:
        left = max(0, self.size - self.f.tell())
        return self.f.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self.f.readline(max(0, self.size - self.f.tell()))


def _next_pickle(reader: _Reader, on_storage: Callable[[Any], Any]) -> Any:
    start = reader.f.tell()
    end = scan_pickle(_Bounded(reader.f, reader.size), reader.max_ops)
    if end <= start or end > reader.size:
        raise Malformed('a pickle that runs past the end of the file')
    reader.f.seek(start)
    data = reader.f.read(end - start)
    reader.f.seek(end)
    return reader.unpickle(data, on_storage)


def _no_storage(saved_id: Any) -> Any:
    raise Malformed('a storage id outside the checkpoint\'s main pickle')


def _load_legacy(reader: _Reader) -> Any:
    f = reader.f
    if reader.size >= 262:
        f.seek(257)
        if f.read(5) == b'ustar':
            raise reader.read_error('a tar archive (the torch < 0.4 format), which is not read')
    f.seek(0)
    magic = _next_pickle(reader, _no_storage)
    if type(magic) is not int or magic != _MAGIC:
        raise reader.read_error('not a torch checkpoint: neither a zip archive nor a pickle '
                                'stream that starts with torch\'s magic number')
    if _next_pickle(reader, _no_storage) != _LEGACY_PROTOCOL:
        raise reader.read_error('a legacy torch checkpoint of an unknown protocol version')
    info = _next_pickle(reader, _no_storage)
    if not isinstance(info, dict) or info.get('little_endian') is not True:
        raise reader.read_error('a legacy checkpoint that is not little-endian')
    views: Dict[str, StorageRef] = {}

    def on_storage(saved_id: Any) -> StorageRef:
        key, dtype, location, numel, view = storage_id(saved_id)
        itemsize = torch.empty((), dtype=dtype).element_size()
        reader.declare(key, numel * itemsize, location)
        root = reader.roots[key][0]
        if view is None:
            return StorageRef(key, dtype, 0, root, location)
        if not (isinstance(view, tuple) and len(view) == 3 and type(view[1]) is int
                and type(view[2]) is int and view[1] >= 0 and view[2] >= 0):
            raise Malformed(f'storage view {view!r}')
        _, offset, length = view
        if (offset + length) * itemsize > root:
            raise Malformed(f'a storage view past the end of storage {key}')
        ref = StorageRef(key, dtype, offset * itemsize, length * itemsize, location)
        return views.setdefault(str(view[0]), ref)

    obj = _next_pickle(reader, on_storage)
    keys = _next_pickle(reader, _no_storage)
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)
            and sorted(keys) == sorted(reader.roots)):
        raise Malformed('its storage key list does not match the storages it declares')
    for key in keys:
        nbytes, location = reader.roots[key]
        head = f.read(8)
        if len(head) != 8:
            raise reader.read_error(f'truncated: storage {key} has no data')
        (numel,) = struct.unpack('<q', head)
        if numel < 0:
            raise Malformed(f'storage {key} declares {numel} elements')
        left = reader.size - f.tell()
        if nbytes > left:
            raise reader.read_error(f'truncated: storage {key} declares {nbytes} bytes, '
                                    f'{left} are left in the file')
        buf = reader.read_into(f, nbytes, f'storage {key}')
        reader.storages[key] = reader.place(buf, location)
    return reader.finish(obj)


# --------------------------------------------------------------------------- entry point
def safe_torch_load(filename: Any, map_location: Any = None, max_bytes: Optional[int] = None,
                    name: Optional[str] = None) -> Any:
    """Read a ``torch.save`` checkpoint (zip or legacy format) without running code from it.

    ``filename``: a path or a seekable binary file object (``name`` names it in messages).
    ``map_location``: as ``torch.load`` (None, a device string / ``torch.device``, a dict of
    locations, or a callable ``(storage, location) -> storage``). ``max_bytes``: the bound on
    the declared storage / member bytes (default :data:`SIZE_FACTOR` x the file's size).

    Returns the checkpoint with tensors, numpy values and mmengine's ``HistoryBuffer`` rebuilt
    from plain data. Raises ``FileNotFoundError``, :class:`CheckpointRefusedError` (naming the
    global) or :class:`CheckpointReadError` (naming the cause), each naming the file.
    """
    if isinstance(filename, (str, os.PathLike)):
        path = os.fspath(filename)
        f, size = _open_regular(path)
        label = name or path
    elif hasattr(filename, 'read') and hasattr(filename, 'seek'):
        f = filename
        label = name or getattr(filename, 'name', None) or '<checkpoint stream>'
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(0)
    else:
        raise TypeError(f'safe_torch_load reads a path or a binary file, got '
                        f'{type(filename).__name__}')
    reader = _Reader(f, str(label), size, max_bytes, map_location)
    try:
        return _load(reader)
    finally:
        if f is not filename:
            f.close()


def _load(reader: _Reader) -> Any:
    if reader.size == 0:
        raise CheckpointReadError(f'{reader.name} is empty (0 bytes): not a checkpoint',
                                  reader.name)
    reader.f.seek(0)
    head = reader.f.read(4)
    with _named_errors(reader, 'checkpoint'):
        if head == b'PK\x05\x06' or b'PK\x03\x04'.startswith(head):  # (a cut one too)
            return _load_zip(reader)
        return _load_legacy(reader)


@contextlib.contextmanager
def _named_errors(reader: _Reader, what: str) -> Iterator[None]:
    """Turn every failure inside into a :class:`CheckpointError` naming the file."""
    try:
        yield
    except CheckpointError:
        raise
    except Refused as err:
        raise reader.refused(err) from None
    except Malformed as err:
        raise reader.read_error(f'malformed {what}: {err}') from None
    except RecursionError:
        raise reader.read_error(f'malformed {what}: nested too deeply') from None
    except MemoryError:
        raise reader.read_error(f'malformed {what}: it asked for more memory than this '
                                'machine has') from None
    except Exception as err:  # pickle / zipfile / struct / torch errors on bad data
        text = str(err).splitlines()[0][:200] if str(err) else ''
        raise reader.read_error(f'truncated or malformed {what} ({type(err).__name__}: '
                                f'{text})') from None


# --------------------------------------------------------------------------- pickle files
class _PickleReader(_Reader):
    """One plain-data pickle file (``pickle.dump`` / ``mmengine.dump``) being read."""

    what = 'pickle files'

    def load_from_bytes(self) -> Callable[[Any], StorageRef]:
        """The stand-in of ``torch.storage._load_from_bytes``, which a plain pickle of a tensor
        names for its storage: the bytes (a legacy torch stream inside this file) are read by
        :func:`safe_torch_load`, within what is left of this file's ``max_bytes``."""
        count = itertools.count()

        def load_from_bytes(data: Any) -> StorageRef:
            if not isinstance(data, (bytes, bytearray)):
                raise Refused('torch.storage._load_from_bytes',
                              f'a tensor storage from a {type(data).__name__}')
            storage = safe_torch_load(io.BytesIO(bytes(data)), map_location='cpu',
                                      max_bytes=max(0, self.cap - self.declared),
                                      name=f'{self.name} (a tensor storage inside it)')
            if not isinstance(storage, torch.TypedStorage):
                raise Malformed('torch.storage._load_from_bytes of data that is not a storage')
            key, untyped = f'bytes{next(count)}', storage._untyped_storage
            self.declare(key, untyped.nbytes(), 'cpu')
            self.storages[key] = untyped
            return StorageRef(key, storage.dtype, 0, untyped.nbytes(), 'cpu')

        return load_from_bytes


def _no_persistent_id(saved_id: Any) -> Any:
    raise Malformed(f'a persistent id ({type(saved_id).__name__}), which plain pickle files '
                    'do not hold')


def safe_pickle_load(file: Any, name: Optional[str] = None, max_bytes: Optional[int] = None,
                     encoding: str = 'ASCII', errors: str = 'strict') -> Any:
    """``pickle.load`` for plain-data files (annotation / result ``.pkl`` files written by
    ``pickle.dump`` or ``mmengine.dump``) without running code from them.

    ``file``: a path or a binary file object positioned at the pickle (left just after it, as
    ``pickle.load`` leaves it); ``name`` names it in messages. Dicts, lists, tuples, sets,
    strings, bytes, numbers, ``None``, ``OrderedDict`` / ``Counter``, numpy arrays, scalars and
    dtypes, and torch tensors (put on the CPU) are rebuilt by this package's code, through the
    restricted unpickler of :mod:`~mmvitscale.checkpoint.safe_pickle`; any other global is
    refused by name. Bounds: a path must be a regular file; the opcodes are scanned first (no
    memo index ahead of the memo, no size handed to a constructor), so the memory used is a
    constant multiple of the file's size; tensor storages may declare at most ``max_bytes``
    (default :data:`SIZE_FACTOR` x the file's size). ``encoding`` / ``errors``: as for
    :func:`pickle.load` (Python 2 strings).

    Raises ``FileNotFoundError``, :class:`CheckpointRefusedError` (a ``pickle.UnpicklingError``
    naming the global) or :class:`CheckpointReadError` (a ``ValueError`` naming the cause),
    each naming the file.
    """
    if isinstance(file, (str, os.PathLike)):
        path = os.fspath(file)
        f, _ = _open_regular(path)
        with f:
            return safe_pickle_load(f, name or path, max_bytes, encoding, errors)
    if not hasattr(file, 'read'):
        raise TypeError(f'safe_pickle_load reads a path or a binary file, got '
                        f'{type(file).__name__}')
    label = str(name or getattr(file, 'name', None) or '<pickle stream>')
    seekable = bool(getattr(file, 'seekable', lambda: False)())
    start = file.tell() if seekable else 0
    data = file.read()
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f'{label}: a pickle is read from a binary file, got '
                        f'{type(data).__name__} from read()')
    reader = _PickleReader(io.BytesIO(data), label, len(data), max_bytes, 'cpu')
    if not data:
        raise reader.read_error('empty: no pickle to read')
    with _named_errors(reader, 'pickle file'):
        end = scan_pickle(data, max_ops=len(data))  # every opcode takes at least one byte
        extra = {('torch.storage', '_load_from_bytes'): reader.load_from_bytes()}
        obj = RestrictedUnpickler(io.BytesIO(data), _no_persistent_id, extra, encoding,
                                  errors).load()
        out = reader.finish(obj)
    if seekable:
        file.seek(start + end)
    return out
