"""Checkpoints never execute code: a corpus of hostile files against every loading path.

Every file in the corpus creates a marker file when it is fully unpickled (checked by a guard
test, so the corpus is real). Every untrusted path must refuse it without creating the marker:
``compat.torch_load``, :func:`load_pretrained`, mmengine's ``load_checkpoint``,
``init_cfg=dict(type='Pretrained')``, ``Runner(load_from=...)``, ``http(s)://`` checkpoints
(from the hub cache), ``tools/test.py`` and ``mim test``. Real mmengine checkpoints still load
(history buffers rebuilt from plain data), resume stays possible and survives a truncated
latest checkpoint, and backbone-format files given to ``load_from`` are converted, not ignored.
"""
import hashlib
import io
import itertools
import json
import os
import os.path as osp
import pathlib
import pickle
import re
import struct
import subprocess
import sys
import tarfile
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from test_trainers import CLS_CFG, fmnist_root, run, tiny_options  # noqa: F401,F811
from torch import nn

from mmvitscale import compat
from mmvitscale.checkpoint import load_pretrained
from mmvitscale.checkpoint.safe_load import (CheckpointReadError, CheckpointRefusedError,
                                             CheckpointTooLargeError, safe_torch_load)
from mmvitscale.models import ScaledViT

ARCH = dict(embed_dims=16, num_layers=1, num_heads=2)
_COUNTER = itertools.count()


# --------------------------------------------------------------------------- the corpus
class Call:
    """Pickles as ``func(*args)``; ``func`` may itself be a :class:`Call` (a call chain)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self, *args):  # pickle wants a callable in the function slot; never called
        raise AssertionError('a Call is only pickled')


def _system(marker):
    return Call(os.system, f'touch {marker}')


def _history_buffer_gadget(marker):
    """The reported chain: getattr from an allow-listed class to eval via ``__globals__``."""
    init = Call(getattr, HistoryBuffer, '__init__')
    module_globals = Call(getattr, init, '__globals__')
    builtins = Call(Call(getattr, module_globals, 'get'), '__builtins__')
    evaluate = Call(Call(getattr, builtins, 'get'), 'eval')
    return Call(evaluate, f"__import__('os').system('touch {marker}')")


def _statistics_gadget(marker):
    """A history buffer whose state registers a 'statistics method' that is os.system."""
    buf = HistoryBuffer([1.0], [1])
    buf.__dict__['statistics_methods'] = {'mean': os.system}
    return {'hub': buf, 'then': _history_buffer_gadget(marker)}


def _numpy_object_array(marker):
    return np.array([_system(marker), 1], dtype=object)


def _nested(marker):
    return {'a': [({'b': (1, [_system(marker)])}, )]}


def _reconstruct_with_code(marker):
    from numpy.core.multiarray import _reconstruct
    return Call(_reconstruct, Call(os.system, f'touch {marker}'), (0, ), b'b')


PAYLOADS = {
    'reduce': _system,
    'history-buffer-getattr-chain': _history_buffer_gadget,
    'history-buffer-statistics': _statistics_gadget,
    'numpy-object-array': _numpy_object_array,
    'nested-containers': _nested,
    'numpy-reconstruct-callable': _reconstruct_with_code,
}
GLOBALS = {  # the global each payload's refusal names
    'reduce': r'posix\.system', 'history-buffer-getattr-chain': r'builtins\.getattr',
    'history-buffer-statistics': r'(posix\.system|builtins\.getattr)',
    'numpy-object-array': r'posix\.system', 'nested-containers': r'posix\.system',
    'numpy-reconstruct-callable': r'posix\.system'}
FORMATS = {f'zip-p{p}': dict(pickle_protocol=p) for p in (0, 1, 2, 3, 4, 5)}
FORMATS.update({f'legacy-p{p}': dict(_use_new_zipfile_serialization=False, pickle_protocol=p)
                for p in (1, 2, 5)})
CORPUS = [(p, f) for p in PAYLOADS for f in FORMATS if f in ('zip-p2', 'legacy-p2')
          or p == 'history-buffer-getattr-chain']


def plant(folder, payload: str, fmt: str = 'zip-p2'):
    """A checkpoint with real weights and the payload in its meta; returns (path, marker)."""
    marker = osp.join(str(folder), f'{payload}-{fmt}.pwned')
    model = ScaledViT(ARCH, img_size=32)
    path = osp.join(str(folder), f'{payload}-{fmt}.pth')
    content = {'state_dict': model.state_dict(), 'meta': PAYLOADS[payload](marker)}
    if fmt == 'zip-p0':  # torch cannot store tensors with protocol 0 (string persistent ids)
        content.pop('state_dict')
    torch.save(content, path, **FORMATS[fmt])
    return path, marker


@pytest.mark.parametrize('payload,fmt', itertools.product(PAYLOADS, FORMATS))
def test_corpus_is_real(tmp_path, payload, fmt):
    """Guard: full unpickling of each planted file does run its payload."""
    path, marker = plant(tmp_path, payload, fmt)
    try:
        torch.load(path, weights_only=False)
    except Exception:  # noqa: BLE001 - the payload ran before whatever failed after it
        pass
    assert osp.exists(marker)


def _paths(path):
    """Every untrusted way a user reads a checkpoint, as callables."""

    def init_cfg():
        ScaledViT(ARCH, img_size=32, init_cfg=dict(type='Pretrained', checkpoint=path)) \
            .init_weights()

    def runner_load_from():
        name = f'lf-{osp.basename(path)}-{next(_COUNTER)}'
        Runner(model=ToyModel(), work_dir=osp.join(osp.dirname(path), 'wd'), load_from=path,
               default_scope='mmengine', experiment_name=name).load_or_resume()

    return {
        'torch_load': lambda: compat.torch_load(path),
        'load_pretrained': lambda: load_pretrained(ScaledViT(ARCH, img_size=32), path),
        'mmengine.load_checkpoint': lambda: load_checkpoint(ScaledViT(ARCH, img_size=32), path),
        'init_cfg': init_cfg,
        'runner_load_from': runner_load_from,
    }


@pytest.mark.parametrize('payload,fmt', CORPUS)
def test_no_untrusted_path_executes_code(tmp_path, payload, fmt):
    path, marker = plant(tmp_path, payload, fmt)
    for name, load in _paths(path).items():
        with pytest.raises((pickle.UnpicklingError, ValueError, TypeError)):
            load()
        assert not osp.exists(marker), f'{name} ran the payload of {payload}/{fmt}'


def test_refusal_names_the_file_and_the_global(tmp_path):
    path, _ = plant(tmp_path, 'reduce')
    with pytest.raises(pickle.UnpicklingError, match=rf'{path}: refused to load.*system'):
        compat.torch_load(path)


def test_weights_only_cannot_be_turned_off_by_the_caller(tmp_path):
    path, marker = plant(tmp_path, 'reduce')
    with pytest.raises(pickle.UnpicklingError):
        compat.torch_load(path, weights_only=False)
    assert not osp.exists(marker)


@pytest.mark.parametrize('content,match', [(b'', 'is empty'), (None, 'truncated')])
def test_empty_or_truncated_file_is_named(tmp_path, content, match):
    path = str(tmp_path / 'bad.pth')
    if content is None:
        torch.save({'state_dict': ScaledViT(ARCH, img_size=32).state_dict()}, path)
        with open(path, 'rb') as f:
            content = f.read()[:200]
    with open(path, 'wb') as f:
        f.write(content)
    with pytest.raises(CheckpointReadError, match=rf'{path}.*{match}'):
        compat.torch_load(path)
    with pytest.raises(CheckpointReadError, match=rf'{path}.*{match}'):
        load_pretrained(ScaledViT(ARCH, img_size=32), path)
    with pytest.raises(FileNotFoundError, match='nothere.pth'):
        safe_torch_load(str(tmp_path / 'nothere.pth'))


# --------------------------------------------------------------------------- hand-built files
class Pid:
    """A persistent id, pickled as-is (``('storage', torch.FloatStorage, key, loc, numel)``)."""

    def __init__(self, *pid):
        self.pid = pid


class _PidPickler(pickle.Pickler):

    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, Pid) else None


def dumps(obj, protocol=2) -> bytes:
    buf = io.BytesIO()
    _PidPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def torch_zip(path, pickled: bytes, records=(), compress=None):
    """A file in torch's zip layout: ``archive/data.pkl`` plus ``archive/data/<key>`` records
    (bytes, or an int: that many zero bytes written in chunks, deflated)."""
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr('archive/data.pkl', pickled, compress_type=compress or zipfile.ZIP_STORED)
        zf.writestr('archive/byteorder', b'little', compress_type=zipfile.ZIP_STORED)
        for key, data in dict(records).items():
            if isinstance(data, int):
                with zf.open(f'archive/data/{key}', 'w') as out:
                    for _ in range(data // (1 << 20)):
                        out.write(bytes(1 << 20))
            else:
                zf.writestr(f'archive/data/{key}', data, compress_type=zipfile.ZIP_STORED)
    return str(path)


def legacy_file(path, main: bytes, keys, storages=()):
    """A file in torch's legacy layout: magic, protocol, sys info, ``main``, keys, storages
    (each ``(numel, bytes)``)."""
    with open(path, 'wb') as f:
        for head in (0x1950A86A20F9469CFC6C, 1001,
                     dict(protocol_version=1001, little_endian=True,
                          type_sizes=dict(short=2, int=4, long=4))):
            pickle.dump(head, f, protocol=2)
        f.write(main)
        pickle.dump(list(keys), f, protocol=2)
        for numel, data in storages:
            f.write(struct.pack('<q', numel) + data)
    return str(path)


def _tensor_past_storage(folder):
    from torch._utils import _rebuild_tensor_v2
    pid = Pid('storage', torch.FloatStorage, '0', 'cpu', 1)
    obj = {'w': Call(_rebuild_tensor_v2, pid, 0, (1 << 29, ), (1, ), False, OrderedDict())}
    return torch_zip(folder / 'tensor-past-storage.pth', dumps(obj), {'0': bytes(4)})


def _lying_zip_member(folder):
    """A deflated record of 256 MB of zeros whose central directory says 4 bytes."""
    pid = Pid('storage', torch.FloatStorage, '0', 'cpu', 1)
    from torch._utils import _rebuild_tensor_v2
    obj = {'w': Call(_rebuild_tensor_v2, pid, 0, (1, ), (1, ), False, OrderedDict())}
    path = torch_zip(folder / 'zip-bomb-lying.pth', dumps(obj), {'0': BOMB})
    data = bytearray(open(path, 'rb').read())
    at = data.rfind(b'PK\x01\x02')  # the last central entry: archive/data/0
    assert data[at + 46:at + 46 + 14] == b'archive/data/0'
    data[at + 24:at + 28] = struct.pack('<I', 4)  # its uncompressed size
    open(path, 'wb').write(bytes(data))
    return path


BOMB = 256 << 20  # bytes a zip bomb inflates to: more than the 200 MB allowance


def _bombs(folder):
    """Memory bombs and malformed files: name -> (path, what the refusal must say)."""
    from torch._utils import _rebuild_tensor_v2
    folder = pathlib.Path(folder)
    huge = Pid('storage', torch.FloatStorage, '0', 'cpu', 25_000_000_000)  # 100 GB
    deflated = Pid('storage', torch.FloatStorage, '0', 'cpu', BOMB // 4)
    nested = b'\x80\x02' + b']' * 100_000 + b'a' * 99_999 + b'.'
    out = {
        'bytearray-2gb': (torch_zip(folder / 'bytearray-2gb.pth',
                                    dumps({'x': Call(bytearray, 2_000_000_000)})),
                          r'builtins\.bytearray.*2000000000'),
        'bytes-2gb-legacy': (legacy_file(folder / 'bytes-2gb-legacy.pth',
                                         dumps(Call(bytes, 2_000_000_000)), []),
                             r'builtins\.bytes.*2000000000'),
        'tensor-past-storage': (_tensor_past_storage(folder), r'536870912 elements'),
        'legacy-declares-100gb': (legacy_file(
            folder / 'legacy-100gb.pth',
            dumps({'w': Call(_rebuild_tensor_v2, huge, 0, (4, ), (1, ), False, OrderedDict())}),
            ['0'], [(25_000_000_000, bytes(16))]), r'100000000000 bytes'),
        'zip-declares-100gb': (torch_zip(
            folder / 'zip-100gb.pth',
            dumps({'w': Call(_rebuild_tensor_v2, huge, 0, (4, ), (1, ), False, OrderedDict())}),
            {'0': bytes(16)}), r'100000000000 bytes'),
        'zip-bomb-256mb': (torch_zip(
            folder / 'zip-bomb.pth',
            dumps({'w': Call(_rebuild_tensor_v2, deflated, 0, (4, ), (1, ), False,
                             OrderedDict())}), {'0': BOMB}),
                           rf'declare.*{BOMB // 10**4}\d+ bytes'),
        'zip-bomb-lying': (_lying_zip_member(folder), r'zip member archive/data/0'),
        'deep-nesting': (torch_zip(folder / 'deep.pth', nested), r'nested deeper than 100'),
        'memo-index-bomb': (torch_zip(folder / 'memo.pth',
                                      b'\x80\x02N' + b'r' + struct.pack('<I', 2**31 - 1) + b'.'),
                            r'memo index 2147483647'),
        'opcode-flood': (torch_zip(folder / 'flood.pth', b'\x80\x02' + b'N' * 1_100_000 + b'.'),
                         r'more than 10\d{5} pickle opcodes'),
        'binbytes8-claims-1tb': (torch_zip(folder / 'claims.pth', b'\x80\x04\x8e'
                                           + struct.pack('<Q', 1 << 40) + b'x' * 16 + b'.'),
                                 r'not a complete pickle'),
        'getattr-gadget': (torch_zip(folder / 'chain.pth', dumps(
            Call(Call(getattr, Call(getattr, HistoryBuffer, '__init__'), '__globals__'), 'x'))),
            r'builtins\.getattr'),
    }
    garbage = folder / 'garbage.pth'
    garbage.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    text = folder / 'text.pth'
    text.write_text('hello, not a checkpoint\n')
    nozip = folder / 'not-torch.zip'
    with zipfile.ZipFile(nozip, 'w') as zf:
        zf.writestr('readme.txt', 'hi')
    tar = folder / 'old.tar'
    with tarfile.open(tar, 'w') as tf:
        tf.add(str(text), arcname='storages')
    sparse = folder / 'sparse.pth'
    with open(sparse, 'wb') as f:
        f.truncate(1 << 30)
    fifo = folder / 'fifo.pth'
    os.mkfifo(fifo)
    os.symlink('/dev/zero', folder / 'zero-link.pth')
    out.update({
        'garbage': (str(garbage), r'(malformed|not a torch checkpoint)'),
        'text': (str(text), r'(malformed|not a torch checkpoint)'),
        'zip-without-data-pkl': (str(nozip), r'not a torch checkpoint'),
        'tar-legacy': (str(tar), r'tar archive'),
        'sparse-1gb': (str(sparse), r'sparse file'),
        'fifo': (str(fifo), r'is a FIFO'),
        'dev-zero': ('/dev/zero', r'is a character device'),
        'symlink-to-dev-zero': (str(folder / 'zero-link.pth'), r'is a character device'),
        'directory': (str(folder), r'is a directory'),
    })
    return out


_STATUS = r'''
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
'''  # a child's /proc/self/status field in bytes (VmRSS, VmHWM)

_BATCH = r'''
import json, os, sys
from mmvitscale.checkpoint.safe_load import safe_torch_load
''' + _STATUS + r'''
for path in sys.argv[1:]:
    open('/proc/self/clear_refs', 'w').write('5')  # peak RSS := current RSS
    base = status('VmRSS')
    try:
        safe_torch_load(path)
        row = dict(error=None)
    except BaseException as err:
        row = dict(error=type(err).__name__, message=str(err),
                   global_name=getattr(err, 'global_name', None))
    row.update(path=path, peak=status('VmHWM') - base)
    print(json.dumps(row), flush=True)
'''


def test_corpus_in_one_subprocess(tmp_path):
    """Every hostile file, all payloads x protocols 0-5 + legacy, every bomb and non-file, in
    one fresh interpreter: no marker, a refusal naming the file (and the global), never
    torch's advice, and peak memory under 2 x the file's size + 200 MB."""
    expect = {}
    for payload in PAYLOADS:
        for fmt in FORMATS:
            path, marker = plant(tmp_path, payload, fmt)
            expect[path] = (marker, GLOBALS[payload])
    os.makedirs(tmp_path / 'bombs')
    bombs = _bombs(tmp_path / 'bombs')
    for name, (path, pattern) in bombs.items():
        expect[path] = (None, pattern)
    out = subprocess.run([sys.executable, '-c', _BATCH, *expect], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r['path'] for r in rows] == list(expect)
    wrong = []
    for row in rows:
        path, (marker, pattern) = row['path'], expect[row['path']]
        size = os.stat(path).st_size if osp.isfile(path) and 'sparse' not in path else 0
        ok = (row['error'] in ('CheckpointRefusedError', 'CheckpointReadError',
                               'CheckpointTooLargeError')
              and path in row['message'] and re.search(pattern, row['message'])
              and 'weights_only' not in row['message']
              and row['peak'] < 2 * size + (200 << 20))
        if marker is not None:
            ok = ok and not osp.exists(marker) and row['error'] == 'CheckpointRefusedError' \
                and re.search(pattern, row['global_name'])
        if not ok:
            wrong.append(row)
    assert not wrong, '\n'.join(map(str, wrong))


def test_mmengine_paths_say_what_a_non_file_is(tmp_path):
    """mmengine's own local loader calls a FIFO or a device "not found"; ours says what it
    is, never opens a FIFO, and a missing file is still FileNotFoundError."""
    fifo = str(tmp_path / 'pipe.pth')
    os.mkfifo(fifo)
    for path, what in ((fifo, 'is a FIFO'), ('/dev/zero', 'is a character device'),
                       (str(tmp_path), 'is a directory')):
        with pytest.raises(CheckpointReadError, match=rf'{re.escape(path)} {what}'):
            load_checkpoint(ScaledViT(ARCH, img_size=32), path)
    with pytest.raises(CheckpointReadError, match=f'{re.escape(fifo)} is a FIFO'):
        Runner(model=ToyModel(), work_dir=str(tmp_path / 'wd'), load_from=fifo,
               default_scope='mmengine', experiment_name='fifo').load_or_resume()
    with pytest.raises(FileNotFoundError, match='nothere.pth'):
        load_checkpoint(ScaledViT(ARCH, img_size=32), str(tmp_path / 'nothere.pth'))


def test_a_flipped_byte_in_a_tensor_record_is_refused(tmp_path):
    """torch.load does not check the zip records' CRC-32 (a flipped byte loads silently);
    the safe reader does, naming the record."""
    path = str(tmp_path / 'flipped.pth')
    torch.save({'w': torch.zeros(1000)}, path)
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith('/data/0'))
    data = bytearray(open(path, 'rb').read())
    start = info.header_offset
    name_len, extra_len = struct.unpack('<HH', data[start + 26:start + 30])
    data[start + 30 + name_len + extra_len + 100] ^= 0xFF
    open(path, 'wb').write(bytes(data))
    assert torch.load(path, weights_only=True)['w'].any(), 'the guard: torch loads it'
    with pytest.raises(CheckpointReadError, match=rf'{re.escape(path)} .*damaged zip member '
                                                  r'\S+/data/0 \(Bad CRC-32'):
        safe_torch_load(path)


def test_max_bytes_bounds_a_real_checkpoint(tmp_path):
    path = str(tmp_path / 'real.pth')
    state = ScaledViT(ARCH, img_size=32).state_dict()
    torch.save({'state_dict': state}, path)
    size = os.stat(path).st_size
    loaded = safe_torch_load(path, max_bytes=size)
    torch.testing.assert_close(loaded['state_dict'], state)
    with pytest.raises(CheckpointTooLargeError, match=rf'{re.escape(path)}: refused to load: '
                                                      r'.* \d+ bytes, more than max_bytes=1000'):
        safe_torch_load(path, max_bytes=1000)


# --------------------------------------------------------------------------- real checkpoints
class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((out.squeeze(-1) - labels)**2).mean())
        return out


class ToyData(torch.utils.data.Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(4, generator=g), labels=torch.tensor(float(i % 2)))


def _runner(work_dir, max_epochs, **kw):
    cfg = dict(
        model=ToyModel(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyData(),
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=4, num_workers=0, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0), default_scope='mmengine')
    cfg.update(kw)
    return Runner(**cfg)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A 3-epoch toy run's work dir (epoch_1..3.pth, real mmengine metadata)."""
    work = tmp_path_factory.mktemp('toyrun')
    run = _runner(work, 3, experiment_name='toy')
    run.train()
    return str(work), {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def test_mmengine_checkpoint_metadata_rebuilt_from_plain_data(trained):
    work, _ = trained
    path = osp.join(work, 'epoch_2.pth')
    with pytest.raises(pickle.UnpicklingError):  # what stock torch says about these files
        torch.load(path, weights_only=True)
    full = torch.load(path, weights_only=False)
    safe = compat.torch_load(path)
    torch.testing.assert_close(safe['state_dict'], full['state_dict'])
    scalars = full['message_hub']['log_scalars']
    assert scalars, 'the toy run logged no scalars: the test would check nothing'
    for key, buf in scalars.items():
        rebuilt = safe['message_hub']['log_scalars'][key]
        assert type(rebuilt) is HistoryBuffer
        np.testing.assert_array_equal(rebuilt.data[0], buf.data[0])
        np.testing.assert_array_equal(rebuilt.data[1], buf.data[1])
        assert rebuilt.max_length == buf.max_length
    assert safe['meta']['epoch'] == full['meta']['epoch'] == 2
    assert safe['meta']['seed'] == full['meta']['seed']


def test_resume_and_load_from_real_checkpoint(trained, tmp_path):
    work, weights = trained
    ckpt = osp.join(work, 'epoch_3.pth')
    resumed = _runner(work, 4, resume=True, load_from=ckpt, experiment_name='resumed')
    resumed.train()
    assert resumed.epoch == 4 and resumed.iter == 8
    ft = _runner(tmp_path / 'ft', 1, load_from=ckpt, experiment_name='ft')
    ft.load_or_resume()
    torch.testing.assert_close(ft.model.state_dict(), weights)


def test_truncated_latest_checkpoint_falls_back_to_previous(trained, tmp_path):
    import shutil
    work = str(tmp_path / 'copy')
    shutil.copytree(trained[0], work)
    latest = osp.join(work, 'epoch_3.pth')
    with open(latest, 'r+b') as f:
        f.truncate(300)
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(latest)
    auto = _runner(work, 3, resume=True, experiment_name='auto')
    with pytest.warns(UserWarning, match=r'epoch_3.pth .*truncated.*previous checkpoint '
                                         r'.*epoch_2.pth'):
        auto.load_or_resume()
    assert auto.epoch == 2
    explicit = _runner(work, 3, resume=True, load_from=latest, experiment_name='explicit')
    with pytest.raises(CheckpointReadError, match=r'cannot resume from .*epoch_3.pth.*truncated'):
        explicit.load_or_resume()


# --------------------------------------------------------------------------- resume
def _adam_runner(work_dir, max_epochs, **kw):
    torch.manual_seed(0)  # the same initial weights in every run
    return _runner(work_dir, max_epochs, optim_wrapper=dict(optimizer=dict(type='Adam', lr=0.01)),
                   param_scheduler=dict(type='ExponentialLR', gamma=0.9, by_epoch=False), **kw)


def _same(a, b, where='checkpoint'):
    """Recursive equality of two loaded checkpoints (tensors, numpy, history buffers)."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride(), where
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, HistoryBuffer):
        _same(a.data, b.data, where)
        assert a.max_length == b.max_length
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f'{where}[{k!r}]')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f'{where}[{i}]')
    else:
        assert a == b or (a != a and b != b), (where, a, b)


def test_resume_restores_optimizer_scheduler_and_message_hub(tmp_path):
    """One epoch, resume (auto, through last_checkpoint), one more: the same weights, Adam
    state, scheduler state and logged losses and learning rates as two epochs in one go; and
    the safe reader gives exactly what a full unpickling gives."""
    import shutil
    straight = _adam_runner(tmp_path / 'straight', 2, experiment_name='straight')
    straight.train()
    split = tmp_path / 'split'  # as if that run had been stopped after its first epoch
    os.makedirs(split)
    shutil.copy(tmp_path / 'straight' / 'epoch_1.pth', split / 'epoch_1.pth')
    (split / 'last_checkpoint').write_text(str(split / 'epoch_1.pth'))
    resumed = _adam_runner(split, 2, resume=True, experiment_name='split2')
    resumed.train()
    assert resumed.epoch == 2 and resumed.iter == 4
    _same(resumed.model.state_dict(), straight.model.state_dict(), 'model')
    _same(resumed.optim_wrapper.state_dict(), straight.optim_wrapper.state_dict(), 'optimizer')
    for mine, ref in zip(resumed.param_schedulers, straight.param_schedulers):
        _same(mine.state_dict(), ref.state_dict(), 'scheduler')
    for key in ('train/loss', 'train/lr'):
        _same(resumed.message_hub.get_scalar(key).data,
              straight.message_hub.get_scalar(key).data, key)
    path = str(tmp_path / 'split' / 'epoch_2.pth')
    _same(safe_torch_load(path), torch.load(path, weights_only=False))


def test_real_checkpoint_in_every_protocol_reads_as_a_full_unpickling(trained, tmp_path):
    """An mmengine checkpoint (optimizer, message hub with history buffers and numpy values)
    re-saved in pickle protocols 1-5 (zip) and 1, 2, 5 (legacy) reads exactly as a full
    unpickling of the same file."""
    full = torch.load(osp.join(trained[0], 'epoch_2.pth'), weights_only=False)
    for kw in [dict(pickle_protocol=p) for p in (1, 2, 3, 4, 5)] + [
            dict(_use_new_zipfile_serialization=False, pickle_protocol=p) for p in (1, 2, 5)]:
        path = str(tmp_path / 'resaved.pth')
        torch.save(full, path, **kw)
        _same(safe_torch_load(path), torch.load(path, weights_only=False), str(kw))


def _hostile_work_dir(tmp_path, payload='reduce'):
    work = tmp_path / 'work'
    os.makedirs(work)
    path, marker = plant(work, payload)
    (work / 'last_checkpoint').write_text(path)
    return str(work), path, marker


@pytest.mark.parametrize('how', ['explicit', 'auto'])
def test_resume_refuses_hostile_checkpoints(tmp_path, how):
    work, path, marker = _hostile_work_dir(tmp_path)
    load_from = path if how == 'explicit' else None
    runner = _runner(work, 1, resume=True, load_from=load_from, experiment_name=how)
    with pytest.raises(CheckpointRefusedError, match=rf'{re.escape(path)}.*posix\.system'):
        runner.load_or_resume()
    assert not osp.exists(marker)


def test_auto_resume_refuses_a_last_checkpoint_outside_the_work_dir(trained, tmp_path):
    work = tmp_path / 'work'
    os.makedirs(work)
    outside = osp.join(trained[0], 'epoch_1.pth')  # a clean checkpoint, elsewhere
    (work / 'last_checkpoint').write_text(outside)
    auto = _runner(work, 2, resume=True, experiment_name='outside-auto')
    with pytest.raises(CheckpointRefusedError, match=rf'last_checkpoint points to '
                                                     rf'{re.escape(outside)}, outside the '
                                                     rf'work dir.*--resume {re.escape(outside)}'):
        auto.load_or_resume()
    os.symlink(outside, work / 'link.pth')  # a link inside pointing out is outside too
    (work / 'last_checkpoint').write_text(str(work / 'link.pth'))
    with pytest.raises(CheckpointRefusedError, match='outside the work dir'):
        _runner(work, 2, resume=True, experiment_name='outside-link').load_or_resume()
    named = _runner(work, 2, resume=True, load_from=outside, experiment_name='outside-named')
    named.load_or_resume()  # the user named it: allowed
    assert named.epoch == 1


def test_resume_refuses_a_config_that_mmengine_would_execute(trained, tmp_path):
    """mmengine's Runner.resume runs ``Config.fromstring(meta['config'], '.py')``: Python code
    from the file. The guard shows that it does; the safe resume refuses the file."""
    from mmengine.config import Config
    marker = str(tmp_path / 'config.pwned')
    code = f"x = __import__('os').system('touch {marker}')\n"
    Config.fromstring(code, file_format='.py')
    assert osp.exists(marker), 'the guard: mmengine executes a config string'
    os.remove(marker)
    ckpt = torch.load(osp.join(trained[0], 'epoch_1.pth'), weights_only=False)
    ckpt['meta']['config'] = code
    path = str(tmp_path / 'config.pth')
    torch.save(ckpt, path)
    runner = _runner(tmp_path / 'wd', 2, resume=True, load_from=path, experiment_name='cfg')
    with pytest.raises(CheckpointRefusedError, match=rf"{re.escape(path)}: refused to resume.*"
                                                     r'"config"'):
        runner.load_or_resume()
    assert not osp.exists(marker)


def test_train_tool_resume_paths_refuse_hostile_files(tmp_path, monkeypatch):
    """``tools/train.py``'s own argument handling: ``--resume FILE`` and ``--cfg-options
    resume=True`` (auto) both reach the safe reader."""
    import runpy
    train = runpy.run_path(osp.join(osp.dirname(__file__), '..', 'tools', 'train.py'))
    work, path, marker = _hostile_work_dir(tmp_path)
    for argv in (['--resume', path], ['--cfg-options', 'resume=True']):
        args = train['parse_args']([CLS_CFG, '--work-dir', work] + argv)
        from mmvitscale.engine.config import load_config
        cfg = train['merge_args'](load_config(args.config, args.rule, args.cfg_options), args)
        assert cfg.resume is True and cfg.load_from == (path if argv[0] == '--resume' else None)
        runner = _runner(work, 1, resume=cfg.resume, load_from=cfg.load_from,
                         experiment_name=f'tool-{argv[0]}')
        with pytest.raises(CheckpointRefusedError, match=re.escape(path)):
            runner.load_or_resume()
        assert not osp.exists(marker)


# --------------------------------------------------------------------------- URLs
@pytest.fixture
def http_root(tmp_path, monkeypatch):
    """A local HTTP server over a folder; torch's hub dir in a temporary folder."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):

        def log_message(self, *args):
            pass

    root = tmp_path / 'served'
    os.makedirs(root)
    server = ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    yield root, f'http://127.0.0.1:{server.server_address[1]}'
    torch.hub.set_dir(old)
    server.shutdown()
    server.server_close()


def test_url_checkpoints_are_read_safely_and_cached_by_content(http_root):
    root, base = http_root
    models = {}
    for sub in ('a', 'b'):
        os.makedirs(root / sub)
        models[sub] = ScaledViT(ARCH, img_size=32)
        torch.save({'state_dict': models[sub].state_dict()}, root / sub / 'model.pth')
    for sub in ('a', 'b', 'a'):  # same base name, two URLs; 'a' again from the cache
        fresh = ScaledViT(ARCH, img_size=32)
        load_checkpoint(fresh, f'{base}/{sub}/model.pth')
        torch.testing.assert_close(fresh.state_dict(), models[sub].state_dict())
    cached = sorted(os.listdir(osp.join(torch.hub.get_dir(), 'checkpoints')))
    assert len(cached) == 2, cached
    for sub in ('a', 'b'):
        url = f'{base}/{sub}/model.pth'
        data = (root / sub / 'model.pth').read_bytes()
        assert compat.cache_name(url, hashlib.sha256(data).hexdigest()) in cached
    os.makedirs(root / 'evil')
    path, marker = plant(root / 'evil', 'history-buffer-getattr-chain')
    url = f'{base}/evil/{osp.basename(path)}'
    with pytest.raises(CheckpointRefusedError, match=rf'{re.escape(url)} \(cached as .*'
                                                     r'builtins\.getattr'):
        load_checkpoint(ScaledViT(ARCH, img_size=32), url)
    runner = _runner(root / 'wd', 1, resume=True, load_from=url, experiment_name='url-resume')
    with pytest.raises(CheckpointRefusedError, match=re.escape(url)):
        runner.load_or_resume()  # --resume http://...
    assert not osp.exists(marker)


def test_file_urls_with_one_base_name_keep_their_own_content(tmp_path):
    for sub in ('x', 'y'):
        os.makedirs(tmp_path / sub)
        torch.save({'w': torch.full((2, ), float(ord(sub)))}, tmp_path / sub / 'w.pth')
    cache = str(tmp_path / 'cache')
    for sub in ('x', 'y', 'x'):
        got = compat.safe_load_url(f'file://{tmp_path}/{sub}/w.pth', model_dir=cache,
                                   progress=False)
        assert got['w'][0].item() == ord(sub)
    assert len(os.listdir(cache)) == 2


# --------------------------------------------------------------------------- truncation
def test_truncated_latest_checkpoint_fallback_at_every_cut_size(trained, tmp_path):
    """A kill while saving leaves the latest checkpoint cut anywhere: every cut is a
    CheckpointReadError naming the file, and auto-resume falls back to the previous one."""
    ckpt = torch.load(osp.join(trained[0], 'epoch_3.pth'), weights_only=False)
    ckpt['state_dict']['pad'] = torch.arange(30000, dtype=torch.float32)  # ~120 KB
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    data = buf.getvalue()
    assert len(data) > 120_000
    cut_path = str(tmp_path / 'cut.pth')
    for cut in range(1, len(data), 331):
        with open(cut_path, 'wb') as f:
            f.write(data[:cut])
        with pytest.raises(CheckpointReadError, match=re.escape(cut_path)):
            safe_torch_load(cut_path)
    import shutil
    work = str(tmp_path / 'work')
    shutil.copytree(trained[0], work)
    latest = osp.join(work, 'epoch_3.pth')
    for cut in (3_000, 5_000, 20_000, 40_000, 69_000, 100_000, len(data) - 1):
        with open(latest, 'wb') as f:
            f.write(data[:cut])
        (pathlib.Path(work) / 'last_checkpoint').write_text(latest)
        auto = _runner(work, 3, resume=True, experiment_name=f'cut-{cut}')
        with pytest.warns(UserWarning, match=r'epoch_3.pth .*truncated.*previous checkpoint'):
            auto.load_or_resume()
        assert auto.epoch == 2, cut


# --------------------------------------------------------------------------- load_from formats
def _classifier():
    from mmengine.registry import DefaultScope
    from mmpretrain.models import ImageClassifier
    DefaultScope.get_instance(f'safe-loading-{id(object())}', scope_name='mmpretrain')
    return ImageClassifier(
        backbone=dict(type='mmvitscale.ScaledViT', arch=ARCH, img_size=32, patch_size=8),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=16))


def _timm_state(width=16):
    timm = pytest.importorskip('timm')
    ref = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32, patch_size=8,
                            embed_dim=width, depth=1, num_heads=2, num_classes=10)
    for p in ref.parameters():
        nn.init.normal_(p, std=0.2)
    return ref.state_dict()


@pytest.mark.parametrize('wrap', ['plain', 'model'])
def test_load_from_converts_backbone_checkpoints(tmp_path, wrap):
    state = _timm_state()
    path = str(tmp_path / f'{wrap}.pth')
    torch.save(state if wrap == 'plain' else {'model': state}, path)
    runner = Runner(model=_classifier(), work_dir=str(tmp_path / 'wd'), load_from=path,
                    experiment_name=f'convert-{wrap}')
    runner.load_or_resume()
    backbone = runner.model.backbone.state_dict()
    torch.testing.assert_close(backbone['patch_embed.projection.weight']
                               if 'patch_embed.projection.weight' in backbone else
                               backbone['patch_embed.proj.weight'],
                               state['patch_embed.proj.weight'])
    torch.testing.assert_close(backbone['cls_token'], state['cls_token'])


def test_load_from_refuses_mismatched_or_foreign_checkpoints(tmp_path):
    path = str(tmp_path / 'wide.pth')
    torch.save(_timm_state(width=32), path)
    runner = Runner(model=_classifier(), work_dir=str(tmp_path / 'wd'), load_from=path,
                    experiment_name='wide')
    with pytest.raises(ValueError, match=r"(?s)load_from='.*wide.pth'.*adapted, not width"):
        runner.load_or_resume()
    foreign = str(tmp_path / 'foreign.pth')
    torch.save({'state_dict': {'encoder.w': torch.zeros(2)}}, foreign)
    toy = Runner(model=ToyModel(), work_dir=str(tmp_path / 'wd2'), load_from=foreign,
                 default_scope='mmengine', experiment_name='foreign')
    with pytest.raises(ValueError, match=r"load_from='.*foreign.pth': none of its 1 keys"):
        toy.load_or_resume()


# --------------------------------------------------------------------------- entry points
@pytest.mark.slow
def test_tools_test_and_mim_test_refuse_hostile_checkpoints(tmp_path, fmnist_root):  # noqa: F811
    """The real command-line paths, each in a fresh interpreter, with real test data."""
    path, marker = plant(tmp_path, 'history-buffer-getattr-chain')
    for cmd in ([sys.executable, 'tools/test.py', CLS_CFG, path],
                [sys.executable, '-m', 'mim', 'test', 'mmvitscale', CLS_CFG, '--checkpoint', path]):
        out = run(cmd + ['--work-dir', str(tmp_path / 'wd'), '--cfg-options']
                  + tiny_options(fmnist_root), ok=False)
        text = out.stdout + out.stderr
        assert out.returncode != 0 and 'refused to load' in text, text[-3000:]
        assert not osp.exists(marker), ' '.join(cmd)


@pytest.mark.slow
def test_train_tool_resume_refuses_hostile_checkpoints(tmp_path, fmnist_root):  # noqa: F811
    """``tools/train.py --resume FILE`` in a fresh interpreter with real data: refused, nothing
    run (``--cfg-options resume=True`` reaches the same Runner.resume: tested in-process)."""
    work, path, marker = _hostile_work_dir(tmp_path)
    for extra in (['--resume', path, '--cfg-options'], ):
        cmd = [sys.executable, 'tools/train.py', CLS_CFG, '--work-dir', work] + extra
        out = run(cmd + tiny_options(fmnist_root), ok=False)
        text = out.stdout + out.stderr
        assert out.returncode != 0 and f'{path}: refused to load global posix.system' in text, \
            text[-3000:]
        assert 'weights_only' not in text and not osp.exists(marker), ' '.join(cmd)


def test_remote_backend_refusals_name_the_checkpoint(tmp_path):
    """pavi / ceph / petrel loaders hand ``torch.load`` bytes; the refusal still names the
    file the user gave."""
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint
    path, marker = plant(tmp_path, 'reduce')

    def load_from_memtest(filename, map_location=None):  # what load_from_ceph does
        from mmengine.runner import checkpoint as ckpt_module
        with open(filename[len('memtest://'):], 'rb') as f:
            return ckpt_module.torch.load(io.BytesIO(f.read()), map_location=map_location)

    CheckpointLoader.register_scheme(prefixes='memtest://', force=True)(load_from_memtest)
    url = 'memtest://' + path
    with pytest.raises(CheckpointRefusedError, match=rf'{re.escape(url)}: .*posix\.system') \
            as info:
        _load_checkpoint(url)
    assert info.value.global_name == 'posix.system' and not osp.exists(marker)


# --------------------------------------------------------------------------- pickle data files
def _annotations():
    """What mmdet / mmaction / mmpretrain annotation and result pickles hold."""
    shared = ['xsub_train', 'xsub_val']
    return {
        'metainfo': {'classes': ('cat', 'dog'), 'palette': [(220, 20, 60), (0, 0, 142)]},
        'data_list': [{'img_path': f'train/{i:06d}.jpg', 'height': 480, 'width': 640,
                       'instances': [{'bbox': [0.5, 1.0, 20.25, 30.0], 'bbox_label': i % 2,
                                      'ignore_flag': 0}],
                       'gt_bboxes': np.arange(8, dtype=np.float32).reshape(2, 4) + i,
                       'gt_labels': np.array([0, 1], dtype=np.int64)} for i in range(3)],
        'split': {'xsub': shared, 'again': shared},  # shared references stay shared
        'annotations': [{'frame_dir': 'S001C001P001R001A001', 'total_frames': 30,
                         'img_shape': (1080, 1920), 'label': 3,
                         'keypoint': np.linspace(0, 1, 1020).astype(np.float16)
                                       .reshape(1, 30, 17, 2),
                         'keypoint_score': np.ones((1, 30, 17), dtype=np.float16)}],
        'results': [{'pred_score': torch.tensor([0.1, 0.9]), 'pred_label': torch.tensor([1]),
                     'gt_label': torch.arange(6).reshape(2, 3)[:, 1]}],  # a strided view
        'extras': OrderedDict(a=np.float64(2.5), b=np.int32(-7), c=np.dtype('float16'),
                              d=np.asfortranarray(np.arange(6).reshape(2, 3)),
                              e=np.array(['ab', 'c']), f=np.array([True, False]),
                              g={1, 2}, h=frozenset({'x'}), i=b'\x00\xff', j=None, k=3 + 4j,
                              m=float('inf'), n=2**70),
    }


@pytest.mark.parametrize('protocol', [None, 0, 1, 3, 4, 5])
def test_annotation_pickle_round_trips_through_mmengine_load(tmp_path, protocol):
    """An annotation / result pickle written by ``mmengine.dump`` (protocol 2, or the one
    given) reads back through ``mmengine.fileio.load`` equal to what was written: dtypes,
    shapes, Fortran order, numpy scalars, tensors, shared references."""
    import mmengine
    from mmengine.fileio.handlers import PickleHandler
    assert getattr(PickleHandler.load_from_fileobj, '__wrapped__', None) is not None
    data = _annotations()
    path = str(tmp_path / 'ann.pkl')
    mmengine.dump(data, path, **({} if protocol is None else dict(protocol=protocol)))
    back = mmengine.fileio.load(path)
    _same(data, back, 'annotations')
    assert back['split']['xsub'] is back['split']['again']
    assert back['extras']['d'].flags.f_contiguous
    with open(path, 'rb') as f:  # a file object, by mmengine.load and by the handler
        _same(data, mmengine.load(f, file_format='pkl'), 'file object')


def test_pickle_stream_is_left_after_the_pickle(tmp_path):
    """Like ``pickle.load``, a load from a file object stops after its pickle."""
    from mmengine.fileio.handlers import PickleHandler
    path = tmp_path / 'two.pkl'
    with open(path, 'wb') as f:
        pickle.dump({'first': np.arange(3)}, f, protocol=2)
        pickle.dump(['second'], f, protocol=4)
    with open(path, 'rb') as f:
        _same({'first': np.arange(3)}, PickleHandler().load_from_fileobj(f))
        assert PickleHandler().load_from_fileobj(f) == ['second']
        assert f.read() == b''


def test_mmengine_dataset_reads_its_annotation_pickle_safely(tmp_path):
    """``BaseDataset(ann_file=...pkl)``, the path host datasets take: a real file loads, a
    hostile one is refused naming the file and the global, and runs nothing."""
    from mmengine.dataset import BaseDataset
    good, evil = str(tmp_path / 'good.pkl'), str(tmp_path / 'evil.pkl')
    marker = str(tmp_path / 'dataset.pwned')
    with open(good, 'wb') as f:
        pickle.dump({'metainfo': {'classes': ('a', )},
                     'data_list': [{'img_path': 'x.jpg', 'gt_label': np.int64(0)}]}, f)
    with open(evil, 'wb') as f:
        pickle.dump({'metainfo': {}, 'data_list': [{'img_path': _system(marker)}]}, f)
    assert len(BaseDataset(ann_file=good, serialize_data=False)) == 1
    with pytest.raises(CheckpointRefusedError, match=rf'{re.escape(evil)}: .*posix\.system'):
        BaseDataset(ann_file=evil, serialize_data=False)
    assert not osp.exists(marker)


@pytest.mark.parametrize('payload,protocol', itertools.product(PAYLOADS, (0, 2, 5)))
def test_hostile_annotation_pickles_are_refused(tmp_path, payload, protocol):
    """Every corpus payload inside an annotation list, in pickle protocols 0, 2 and 5: mmengine's
    own handler runs it (the guard); ``mmengine.fileio.load`` refuses it as an
    ``UnpicklingError`` naming the file and the global, and no marker is written."""
    import mmengine
    from mmengine.fileio.handlers import PickleHandler
    marker = str(tmp_path / f'{payload}.pwned')
    path = str(tmp_path / f'{payload}-p{protocol}.pkl')
    with open(path, 'wb') as f:
        pickle.dump([{'img_path': 'a.jpg', 'ann': PAYLOADS[payload](marker)}], f, protocol)
    with open(path, 'rb') as f:
        try:
            PickleHandler.load_from_fileobj.__wrapped__(None, f)  # mmengine's own: pickle.load
        except Exception:  # noqa: BLE001 - the payload ran before whatever failed after it
            pass
    assert osp.exists(marker), 'guard: the payload does not run under pickle.load'
    os.remove(marker)
    with pytest.raises(pickle.UnpicklingError) as info:
        mmengine.fileio.load(path)
    err = info.value
    assert isinstance(err, CheckpointRefusedError) and not osp.exists(marker)
    assert str(err).startswith(f'{path}: refused to load global ') and err.path == path
    assert re.search(GLOBALS[payload], err.global_name) and err.global_name in str(err)
    assert 'weights_only' not in str(err)


class _ArrayBomb:
    """A numpy array whose state declares 10^10 float64 elements with 16 bytes of data."""

    def __reduce__(self):
        from numpy.core.multiarray import _reconstruct
        return _reconstruct, (np.ndarray, (0, ), b'b'), \
            (1, (100_000, 100_000), np.dtype('float64'), False, bytes(16))


def _pickle_bombs(folder):
    """Hostile .pkl files: name -> (path, what the refusal must say)."""
    from torch._utils import _rebuild_tensor_v2
    from torch.storage import _load_from_bytes
    folder = pathlib.Path(folder)
    inner = legacy_file(folder / 'inner.bin',
                        dumps(Pid('storage', torch.FloatStorage, '0', 'cpu', 25_000_000_000)),
                        ['0'], [(25_000_000_000, bytes(16))])
    storage_bomb = Call(_load_from_bytes, pathlib.Path(inner).read_bytes())
    files = {
        'bytearray-2gb': (dumps({'x': Call(bytearray, 2_000_000_000)}),
                          r'builtins\.bytearray.*2000000000'),
        'bytes-2gb': (dumps([Call(bytes, 2_000_000_000)]), r'builtins\.bytes.*2000000000'),
        'numpy-shape-bomb': (dumps([_ArrayBomb()]), r'shape \(100000, 100000\).*16 bytes'),
        'tensor-storage-declares-100gb': (
            dumps({'t': Call(_rebuild_tensor_v2, storage_bomb, 0, (4, ), (1, ), False,
                             OrderedDict())}), r'storage inside it.*100000000000 bytes'),
        'memo-index-bomb': (b'\x80\x02N' + b'r' + struct.pack('<I', 2**31 - 1) + b'.',
                            r'memo index 2147483647'),
        'binbytes8-claims-1tb': (b'\x80\x04\x8e' + struct.pack('<Q', 1 << 40) + b'x' * 16
                                 + b'.', r'not a complete pickle'),
        'deep-nesting': (b'\x80\x02' + b']' * 100_000 + b'a' * 99_999 + b'.',
                         r'nested deeper than 100'),
        'garbage': (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
                    r'(malformed|not a complete pickle)'),
        'empty': (b'', r'empty'),
    }
    out = {}
    for name, (content, pattern) in files.items():
        (folder / f'{name}.pkl').write_bytes(content)
        out[str(folder / f'{name}.pkl')] = pattern
    fifo = folder / 'fifo.pkl'
    os.mkfifo(fifo)
    os.symlink('/dev/zero', folder / 'zero-link.pkl')
    out.update({f'handler:{fifo}': r'is a FIFO',
                f'handler:{folder / "zero-link.pkl"}': r'is a character device',
                f'handler:{folder}': r'is a directory'})
    return out


_PICKLE_BATCH = r'''
import json, sys
import mmengine
from mmengine.fileio.handlers import PickleHandler
assert 'mmvitscale' not in sys.modules  # the start-up hook alone routes the handler
mmengine.load(sys.argv[1])  # a real annotation file first: imports the safe reader
assert 'mmvitscale' in sys.modules
''' + _STATUS + r'''
for arg in sys.argv[2:]:
    open('/proc/self/clear_refs', 'w').write('5')  # peak RSS := current RSS
    base = status('VmRSS')
    path = arg.split(':', 1)[1] if arg.startswith('handler:') else arg
    try:
        if arg.startswith('handler:'):  # mmengine.load reads a path whole before the handler
            PickleHandler().load_from_path(path)
        else:
            mmengine.load(path)
        row = dict(error=None)
    except BaseException as err:
        row = dict(error=type(err).__name__, message=str(err),
                   unpickling=isinstance(err, __import__('pickle').UnpicklingError))
    row.update(path=path, peak=status('VmHWM') - base)
    print(json.dumps(row), flush=True)
'''


def test_pickle_bombs_in_a_fresh_interpreter(tmp_path):
    """Memory bombs, malformed and non-regular .pkl files through ``mmengine.load`` in a fresh
    interpreter that never imports mmvitscale itself (the start-up hook routes mmengine's
    handler): each refused naming the file and the cause, peak memory under 200 MB."""
    good = str(tmp_path / 'good.pkl')
    with open(good, 'wb') as f:
        pickle.dump([{'img_path': 'a.jpg', 'gt_bboxes': np.zeros((1, 4), np.float32)}], f)
    expect = _pickle_bombs(tmp_path)
    out = subprocess.run([sys.executable, '-c', _PICKLE_BATCH, good, *expect],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r['path'] for r in rows] == [a.split(':', 1)[-1] for a in expect]
    wrong = [row for row, pattern in zip(rows, expect.values())
             if not (row['error'] in ('CheckpointRefusedError', 'CheckpointReadError',
                                      'CheckpointTooLargeError')
                     and row['path'] in row['message'] and re.search(pattern, row['message'])
                     and row['peak'] < (200 << 20))]
    assert not wrong, '\n'.join(map(str, wrong))
