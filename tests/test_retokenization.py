"""Progressive re-tokenization: set_token_stride on the backbones and its mmengine hook."""
import copy
import glob
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MMLogger

import mmvitscale  # noqa: F401
from mmvitscale.engine import ProgressiveTokenizationHook
from mmvitscale.models import ScaledPiT, ScaledVideoViT, ScaledViT

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.0)
PIT = dict(base_dims=(16, 16), depths=(1, 1), heads=(2, 2), patch_size=4, patch_stride=2)


def vit(**kw):
    kw = dict(dict(img_size=32, patch_size=4, in_channels=1, out_type='raw'), **kw)
    return ScaledViT(TINY, **kw).eval()


def pit(**kw):
    return ScaledPiT(PIT, img_size=32, in_channels=1, out_type='raw', **kw).eval()


@pytest.mark.parametrize('make, stride, grids', [
    (vit, 4, {1: 8, 2: 4, 4: 2}),  # 32 px / (4 * factor): 64 -> 16 -> 4 tokens
    (pit, 2, {1: 15, 2: 7, 4: 3}),  # (32 - dilated extent) // (2 * factor) + 1
])
def test_token_counts_and_conv_settings(make, stride, grids):
    model = make(out_indices=0)  # PiT: first stage, before pooling
    conv = model._tokenizer_conv()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        for factor, side in grids.items():
            model.set_token_stride(factor)
            assert model.token_stride == factor
            assert conv.dilation == (factor, factor)
            assert conv.stride == (stride * factor, ) * 2
            assert conv(x).shape[-2:] == (side, side)
            assert model(x)[0].shape == (2, 1 + side * side, model.embed_dims)


def test_vit_featmap_grid_follows_the_factor():
    model = vit(out_type='featmap')
    model.set_token_stride(2)
    assert model(torch.randn(1, 1, 32, 64))[0].shape == (1, 32, 4, 8)


def test_video_vit_spatial_tokenizer_only():
    model = ScaledVideoViT(TINY, img_size=32, patch_size=4, num_frames=4, tubelet_size=2,
                           out_type='raw', return_tuple=False).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        ref = model(x)
        assert ref.shape == (1, 1 + 2 * 8 * 8, 32)  # T'=2, 8x8 grid
        model.set_token_stride(2)
        conv = model.patch_embed.proj
        assert conv.stride == (2, 8, 8) and conv.dilation == (1, 2, 2)
        assert model(x).shape == (1, 1 + 2 * 4 * 4, 32)  # T'=2, 4x4 grid
        model.set_token_stride(1)
        assert torch.equal(model(x), ref)


@pytest.mark.parametrize('make', [vit, pit])
def test_factor_one_after_two_is_bit_identical_to_a_fresh_model(make):
    torch.manual_seed(0)
    model = make()
    model.init_weights()
    fresh = copy.deepcopy(model)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        model.set_token_stride(2)
        coarse = model(x)[0]
        model.set_token_stride(1)
        again = model(x)[0]
        ref = fresh(x)[0]
    assert coarse.shape != ref.shape
    assert torch.equal(again, ref)
    for attr in ('stride', 'dilation', 'padding', 'kernel_size'):
        assert getattr(model._tokenizer_conv(), attr) == getattr(fresh._tokenizer_conv(), attr)


def _grad_support(model, token, factor):
    """Input pixels (rows, cols) with a non-zero gradient of one token's embedding."""
    model.set_token_stride(factor)
    x = torch.randn(1, 1, 32, 32, requires_grad=True)
    out = model._tokenizer_conv()(x).flatten(2)[0, :, token]
    (out * torch.randn_like(out)).sum().backward()
    nz = x.grad[0, 0].abs() > 0
    return (sorted(set(nz.nonzero()[:, 0].tolist())), sorted(set(nz.nonzero()[:, 1].tolist())),
            int(nz.sum()))


def test_vit_receptive_field_is_a_dilated_2p_window():
    model = vit()
    # factor 1: token (1, 2) of the 8x8 grid sees the contiguous 4x4 patch at (4, 8)
    assert _grad_support(model, 1 * 8 + 2, 1) == ([4, 5, 6, 7], [8, 9, 10, 11], 16)
    # factor 2: token (1, 2) of the 4x4 grid spans the 8x8 window at (8, 16), every 2nd pixel
    rows, cols, n = _grad_support(model, 1 * 4 + 2, 2)
    assert rows == [8, 10, 12, 14] and cols == [16, 18, 20, 22] and n == 16


def test_pit_receptive_field_is_dilated():
    model = pit()  # kernel 4, stride 2 -> factor 2: stride 4, dilation 2, extent 7
    rows, cols, n = _grad_support(model, 1 * 7 + 2, 2)
    assert rows == [4, 6, 8, 10] and cols == [8, 10, 12, 14] and n == 16


def test_bad_factors_and_inputs_name_the_field_and_value():
    model = vit()
    for bad in (0, -1, 2.0, True, '2'):
        with pytest.raises(ValueError, match=f'token_stride factor .* got {bad!r}'):
            model.set_token_stride(bad)
    with pytest.raises(ValueError, match=r'img_size 32x32 .* token stride 12 .*token_stride=3'):
        model.set_token_stride(3)
    assert model.token_stride == 1 and model.patch_embed.proj.stride == (4, 4)
    model.set_token_stride(2)
    with pytest.raises(ValueError, match=r'input size 36x36 .* token stride 8 .*token_stride=2'):
        model(torch.randn(1, 1, 36, 36))
    model.set_token_stride(1)
    assert model(torch.randn(1, 1, 36, 36))[0].shape[1] == 1 + 9 * 9  # factor 1 as before
    small = pit()
    with pytest.raises(ValueError, match=r'img_size 32x32 is smaller .* extent 37 at '
                                         r'token_stride=12'):
        small.set_token_stride(12)
    small.set_token_stride(4)
    with pytest.raises(ValueError, match=r'input size 12x12 is smaller .* extent 13'):
        small(torch.randn(1, 1, 12, 12))


@pytest.mark.parametrize('schedule, match', [
    ([], 'schedule must be a non-empty list'),
    ([(1, 2), (3, 1)], 'schedule must start at milestone 0, got 1'),
    ([(0, 2), (3, 4), (2, 1)], 'strictly increasing, got 2 after 3'),
    ([(0, 2), (2, 2), (2, 1)], 'strictly increasing, got 2 after 2'),
    ([(0, 0)], r'schedule\[0\] factor must be a positive int, got 0'),
    ([(0, 2), (1, -1)], r'schedule\[1\] factor must be a positive int, got -1'),
    ([(0, 2), (1, 1.5)], r'schedule\[1\] factor must be a positive int, got 1.5'),
    ([(0, 2), (-1, 1)], r'schedule\[1\] milestone must be a non-negative int, got -1'),
    ([(0, 2, 3)], r'schedule\[0\] must be a \(milestone, factor\) pair, got \(0, 2, 3\)'),
])
def test_bad_schedules_raise_at_construction(schedule, match):
    with pytest.raises(ValueError, match=match):
        ProgressiveTokenizationHook(schedule=schedule)


def test_hook_by_iteration_with_a_fake_runner():
    model = SimpleNamespace(backbone=vit())
    runner = SimpleNamespace(model=model, epoch=0, iter=0,
                             logger=MMLogger.get_instance('retok_test'))
    hook = ProgressiveTokenizationHook(schedule=[[0, 4], [3, 2], [5, 1]], by_epoch=False)
    seen = []
    for it in range(7):
        runner.iter = it
        hook.before_train_iter(runner, it)
        seen.append(model.backbone.token_stride)
        if it == 3:
            hook.before_val_epoch(runner)
            assert model.backbone.token_stride == 1
    assert seen == [4, 4, 4, 2, 2, 1, 1]
    runner.iter = 0
    hook.before_train_iter(runner, 0)
    hook.after_train(runner)
    assert model.backbone.token_stride == 1
    with pytest.raises(TypeError, match='needs a backbone with set_token_stride.*Linear'):
        hook.before_run(SimpleNamespace(model=torch.nn.Sequential(torch.nn.Linear(2, 2))[0]))


def _data_root(tmp_path_factory):
    local = osp.join(ROOT, 'data', 'fashion_mnist')
    if glob.glob(osp.join(local, 'train-images-idx3-ubyte*')):
        return local
    from mmvitscale import datasets
    try:
        datasets.source_dir()
    except datasets.FashionMNISTNotFoundError as err:
        pytest.skip(str(err))
    root = str(tmp_path_factory.mktemp('data') / 'fashion_mnist')
    datasets.prepare_classification(root)
    return root


class Recorder(Hook):
    """Records the tokenizer's output grid per phase ('train', epoch) / ('val', epoch)."""

    def __init__(self, conv):
        self.phase, self.grids = None, []
        conv.register_forward_hook(lambda m, i, o: self.grids.append((self.phase, o.shape[-2:])))

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.phase = ('train', runner.epoch)

    def before_val_iter(self, runner, batch_idx, data_batch=None):
        self.phase = ('val', runner.epoch)

    def before_test_iter(self, runner, batch_idx, data_batch=None):
        self.phase = ('test', runner.epoch)


@pytest.mark.slow
def test_hook_in_a_real_runner(tmp_path, tmp_path_factory):
    from mmengine.runner import Runner
    root = _data_root(tmp_path_factory)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'cls', 'scaled_vit_fmnist.py'))

    def loader(n):
        return dict(num_workers=0, persistent_workers=False, batch_size=16,
                    dataset=dict(data_root=root, indices=n))

    cfg.merge_from_dict(dict(
        train_cfg=dict(max_epochs=2, val_interval=1),
        train_dataloader=loader(64), val_dataloader=loader(16), test_dataloader=loader(16),
        default_hooks=dict(checkpoint=None),
        custom_hooks=[dict(type='mmvitscale.ProgressiveTokenizationHook',
                           schedule=[(0, 2), (1, 1)])]))
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    backbone = runner.model.backbone
    recorder = Recorder(backbone.patch_embed.proj)
    runner.register_hook(recorder, priority='LOWEST')
    runner.train()
    runner.test()

    by_phase = {}
    for phase, grid in recorder.grids:
        by_phase.setdefault(phase, set()).add(tuple(grid))
    assert by_phase == {('train', 0): {(4, 4)}, ('val', 1): {(8, 8)},
                        ('train', 1): {(8, 8)}, ('val', 2): {(8, 8)}, ('test', 2): {(8, 8)}}
    train_iters = sum(1 for p, _ in recorder.grids if p and p[0] == 'train')
    assert train_iters == 2 * 64 // 16
    assert backbone.token_stride == 1 and backbone.patch_embed.proj.stride == (4, 4)
    log = open(glob.glob(osp.join(runner.log_dir, '*.log'))[0]).read()
    assert log.count('ProgressiveTokenizationHook: token_stride') == 2  # not at each val
    assert 'token_stride 1 -> 2 (epoch 0, iter 0)' in log
    assert 'token_stride 2 -> 1 (epoch 1, iter 4)' in log
