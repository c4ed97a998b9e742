"""Each shim of mmvitscale.compat: needed here, applied, and working."""
import os
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from torch import nn

from mmvitscale import compat
from mmvitscale.models import ScaledViT


def test_shims_applied_once():
    assert compat.APPLIED.count('scoped-weights-only') == 1
    assert compat.apply_all() == []  # idempotent


def test_torchvision_and_hosts_import_in_a_fresh_interpreter():
    code = ('import mmvitscale, torchvision, torchvision.transforms, mmdet.models, '
            'mmpretrain.models, mmaction.models; '
            'from mmvitscale.compat import APPLIED; print(",".join(APPLIED))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    applied = out.stdout.strip().split(',')
    # Both package shims are needed by this stack (see stack.md); if upstream fixes them,
    # this test tells us the shim became dead code.
    assert 'torchvision-schemas' in applied
    assert 'mmaction-drn-stub' in applied


def test_torchvision_needs_the_shim():
    code = 'import torchvision'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode != 0 and 'torchvision::nms does not exist' in out.stderr


def test_drn_stub_refuses_to_build():
    from mmaction.models.localizers.drn.drn import DRN
    with pytest.raises(ImportError, match='packaged without mmaction/models/localizers/drn'):
        DRN()


class _Payload:
    """Pickles to a call that creates a marker file when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def _plant(tmp_path, name='evil.pth'):
    marker = tmp_path / f'{name}.pwned'
    model = ScaledViT(dict(embed_dims=16, num_layers=1, num_heads=2), img_size=32)
    path = tmp_path / name
    torch.save({'state_dict': model.state_dict(), 'meta': _Payload(marker)}, path)
    return str(path), marker


def test_planted_payload_is_real(tmp_path):
    """Guard: full unpickling of the planted file does run the payload."""
    path, marker = _plant(tmp_path)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_pretrained_loading_never_unpickles_code(tmp_path):
    path, marker = _plant(tmp_path)
    model = ScaledViT(dict(embed_dims=16, num_layers=1, num_heads=2), img_size=32,
                      init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(pickle.UnpicklingError):
        model.init_weights()
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(model, path)
    with pytest.raises(pickle.UnpicklingError):
        compat.torch_load(path)
    assert not marker.exists()


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


@pytest.mark.slow
def test_resume_own_checkpoint_and_load_from(tmp_path):
    run = _runner(tmp_path / 'a', 2, experiment_name='a')
    run.train()
    ckpt = osp.join(tmp_path / 'a', 'epoch_2.pth')
    # mmengine stores HistoryBuffer / numpy objects: plain weights-only torch.load refuses them
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ckpt, weights_only=True)
    resumed = _runner(tmp_path / 'a', 3, resume=True, load_from=ckpt, experiment_name='b')
    resumed.train()
    assert resumed.epoch == 3 and resumed.iter == 6
    # load_from (not resume) stays weights-only, with mmengine's data classes allowed
    ft = _runner(tmp_path / 'c', 1, load_from=ckpt, experiment_name='c')
    ft.load_or_resume()
    torch.testing.assert_close(ft.model.linear.weight, run.model.linear.weight)
