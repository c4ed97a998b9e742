"""Checkpoints never execute code: a corpus of hostile files against every loading path.

Every file in the corpus creates a marker file when it is fully unpickled (checked by a guard
test, so the corpus is real). Every untrusted path must refuse it without creating the marker:
``compat.torch_load``, :func:`load_pretrained`, mmengine's ``load_checkpoint``,
``init_cfg=dict(type='Pretrained')``, ``Runner(load_from=...)``, ``http(s)://`` checkpoints
(from the hub cache), ``tools/test.py`` and ``mim test``. Real mmengine checkpoints still load
(history buffers rebuilt from plain data), resume stays possible and survives a truncated
latest checkpoint, and backbone-format files given to ``load_from`` are converted, not ignored.
"""
import itertools
import os
import os.path as osp
import pickle
import sys

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
from mmvitscale.checkpoint.safe_load import CheckpointReadError, safe_torch_load
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
FORMATS = {f'zip-p{p}': dict(pickle_protocol=p) for p in (0, 1, 2, 3, 4, 5)}
FORMATS['legacy-p2'] = dict(_use_new_zipfile_serialization=False)
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


@pytest.mark.parametrize('payload,fmt', CORPUS)
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


def test_http_checkpoints_are_read_weights_only(tmp_path, monkeypatch):
    """mmengine's http loader calls torch.hub's, which unpickles fully; ours does not."""
    hub = tmp_path / 'hub'
    os.makedirs(hub / 'checkpoints')
    path, marker = plant(hub / 'checkpoints', 'history-buffer-getattr-chain')
    monkeypatch.setattr(torch.hub, '_hub_dir', str(hub))
    url = 'https://example.invalid/ckpt/' + osp.basename(path)  # cached: no download
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(ScaledViT(ARCH, img_size=32), url)
    assert not osp.exists(marker)
    clean = hub / 'checkpoints' / 'clean.pth'
    model = ScaledViT(ARCH, img_size=32)
    torch.save({'state_dict': model.state_dict()}, clean)
    fresh = ScaledViT(ARCH, img_size=32)
    load_checkpoint(fresh, 'https://example.invalid/ckpt/clean.pth')
    torch.testing.assert_close(fresh.state_dict(), model.state_dict())


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
    return Runner(
        model=ToyModel(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyData(),
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=4, num_workers=0, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0), default_scope='mmengine', **kw)


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
