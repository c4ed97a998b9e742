"""Loud instead of silent (issue 25, item 4): checkpoints that would load with a warning and
evaluate at chance, a corrupted clip that decodes to wrong frames, a FLOPs count that ignored
a rule override, and float16 on CPU. Each case asserts the exact error type and message."""
import os
import os.path as osp
import re
import sys
import types

import pytest
import torch

from mmvitscale.checkpoint.loading import (MIN_COVERAGE, fit_model_checkpoint, load_pretrained,
                                           min_coverage)
from mmvitscale.models import ScaledViT

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import get_flops  # noqa: E402

FMNIST_VIT = osp.join(ROOT, 'configs', 'cls', 'scaled_vit_fmnist.py')
ARCH = dict(embed_dims=32, num_layers=2, num_heads=2)


def vit(**kw) -> ScaledViT:
    return ScaledViT(ARCH, img_size=32, patch_size=8, **kw)


def save(tmp_path, obj, name='ckpt.pth') -> str:
    path = str(tmp_path / name)
    torch.save(obj, path)
    return path


def numel(module, keys) -> tuple:
    params = dict(module.named_parameters())
    return sum(params[k].numel() for k in keys if k in params), \
        sum(p.numel() for p in params.values())


def classifier(num_classes: int = 10):
    """The Fashion-MNIST ViT classifier (mmpretrain ImageClassifier, LinearClsHead)."""
    from mmengine.registry import MODELS, init_default_scope

    from mmvitscale.engine.config import load_config
    cfg = load_config(FMNIST_VIT, cfg_options={
        'model.head.num_classes': num_classes})
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    return MODELS.build(cfg.model)


# ----------------------------------------------------------------------------- load_pretrained
def test_load_pretrained_refuses_an_empty_state_dict(tmp_path):
    for obj in ({}, {'state_dict': {}}):
        path = save(tmp_path, obj)
        with pytest.raises(ValueError) as err:
            load_pretrained(vit(), path)
        assert str(err.value) == f'{path}: its state_dict is empty (no weight tensors)'


def test_load_pretrained_names_non_finite_tensors(tmp_path):
    state = vit().state_dict()
    state['blocks.0.attn.qkv.weight'][0, 0] = float('nan')
    state['norm.bias'][1] = float('inf')
    path = save(tmp_path, state)
    with pytest.raises(ValueError) as err:
        load_pretrained(vit(), path)
    assert str(err.value) == (f'{path}: non-finite weights (NaN or inf) in 2 tensors: '
                              'blocks.0.attn.qkv.weight, norm.bias')


def test_load_pretrained_refuses_a_checkpoint_covering_little_of_the_model(tmp_path):
    model = vit()
    # the blocks' attention and norms only: the MLPs (most of the elements) are missing
    state = {k: v for k, v in model.state_dict().items() if '.mlp.' not in k}
    path = save(tmp_path, state)
    have, total = numel(model, state)
    assert have / total < MIN_COVERAGE == 0.5
    missing = [k for k, _ in model.named_parameters() if k not in state]
    with pytest.raises(ValueError) as err:
        load_pretrained(vit(), path, strict=False)
    assert re.sub(r' \(\w+\): ', ' (FMT): ', str(err.value), count=1) == (
        f'{path} (FMT): covers {have / total:.1%} of the {total} parameter elements '
        f'of ScaledViT, less than min_coverage=0.5 (a checkpoint of another model?); missing: '
        f'{", ".join(missing[:6])}, ... ({len(missing)} in all)')
    # the share is a parameter: a lower one accepts the same file, reporting what is missing
    result = load_pretrained(vit(), path, strict=False, min_coverage=0.1)
    assert sorted(result.missing_keys) == sorted(missing)
    with pytest.raises(ValueError, match=r'^min_coverage must be a number in \[0, 1\] \(a share '
                                         r'of the parameter elements\), got 1.5$'):
        load_pretrained(vit(), path, strict=False, min_coverage=1.5)


# ----------------------------------------------------------------------------- init_cfg
def pretrained(path) -> ScaledViT:
    model = vit(init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    return model


def test_init_cfg_pretrained_refuses_empty_non_finite_and_partial(tmp_path):
    good = vit().state_dict()
    path = save(tmp_path, {'state_dict': {}}, 'empty.pth')
    with pytest.raises(ValueError) as err:
        pretrained(path)
    assert str(err.value) == (f'init_cfg Pretrained checkpoint={path!r}: its state_dict is '
                              'empty (no weights)')
    bad = dict(good, cls_token=torch.full_like(good['cls_token'], float('nan')))
    path = save(tmp_path, bad, 'nan.pth')
    with pytest.raises(ValueError) as err:
        pretrained(path)
    assert str(err.value) == (f'init_cfg Pretrained checkpoint={path!r}: non-finite weights '
                              '(NaN or inf) in 1 tensor: cls_token')
    partial = {k: v for k, v in good.items() if '.mlp.' not in k}
    path = save(tmp_path, partial, 'partial.pth')
    with pytest.raises(ValueError, match=r"^init_cfg Pretrained checkpoint='.*partial.pth': "
                                         r'covers \d+\.\d% of the \d+ parameter elements of '
                                         r'ScaledViT, less than min_coverage=0.5 .*missing: '
                                         r'blocks.0.mlp.fc1.weight'):
        pretrained(path)
    with min_coverage(0.1):  # documented opt-out for a deliberately partial file
        model = pretrained(path)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, good['blocks.0.attn.qkv.weight'])
    # a complete checkpoint loads as before
    torch.testing.assert_close(pretrained(save(tmp_path, good)).cls_token, good['cls_token'])


# ----------------------------------------------------------------------------- load_from
def test_load_from_head_class_count_mismatch_is_an_error_unless_reinit(tmp_path):
    src, dst = classifier(num_classes=5), classifier(num_classes=10)
    ckpt = {'state_dict': src.state_dict(), 'meta': {}}
    with pytest.raises(ValueError) as err:
        fit_model_checkpoint(dst, ckpt, 'cls5.pth')
    assert str(err.value) == (
        "load_from='cls5.pth': the checkpoint's head was trained for another number of "
        "classes than the model's num_classes=10 (head.fc.weight: checkpoint (5, 64) vs model "
        '(10, 64)); set num_classes to match, or re-initialise the head: load_from_options='
        'dict(reinit_head=True) (--cfg-options load_from_options.reinit_head=True)')
    fitted = fit_model_checkpoint(dst, ckpt, 'cls5.pth', options=dict(reinit_head=True))
    assert not any(k.startswith('head.') for k in fitted['state_dict'])
    assert set(fitted['state_dict']) == {k for k in ckpt['state_dict'] if k.startswith('backbone')}
    with pytest.raises(ValueError, match=r"^load_from_options: unknown key 'reinit' \(known: "
                                         r'min_coverage, reinit_head\)$'):
        fit_model_checkpoint(dst, ckpt, 'cls5.pth', options=dict(reinit=True))


def test_load_from_refuses_empty_non_finite_and_one_matching_key(tmp_path):
    model = classifier()
    with pytest.raises(ValueError) as err:
        fit_model_checkpoint(model, {'state_dict': {}}, 'e.pth')
    assert str(err.value) == "load_from='e.pth': its state_dict is empty (no weight tensors)"
    state = model.state_dict()
    nan = dict(state, **{'head.fc.bias': torch.full_like(state['head.fc.bias'], float('nan'))})
    with pytest.raises(ValueError) as err:
        fit_model_checkpoint(model, {'state_dict': nan}, 'n.pth')
    assert str(err.value) == ("load_from='n.pth': non-finite weights (NaN or inf) in 1 tensor: "
                              'head.fc.bias')
    one = {'backbone.cls_token': state['backbone.cls_token'], 'other.weight': torch.zeros(3)}
    with pytest.raises(ValueError, match=r"^load_from='one.pth': covers 0.0% of the \d+ parameter "
                                         r'elements of backbone, less than min_coverage=0.5 '
                                         r'\(a checkpoint of another model\?\); missing: '
                                         r'backbone.pos_embed, backbone.patch_embed'):
        fit_model_checkpoint(model, {'state_dict': one}, 'one.pth')


def test_load_from_partial_loads_that_are_legitimate_still_load():
    model = classifier()
    state = model.state_dict()
    # a classifier's backbone (with its 'backbone.' prefix) into a classifier: the share counts
    # the backbone, which it covers; the head keeps its initialisation
    backbone_only = {k: v for k, v in state.items() if k.startswith('backbone.')}
    assert fit_model_checkpoint(model, {'state_dict': backbone_only}, 'b.pth')['state_dict'] \
        is backbone_only
    # a bare backbone checkpoint (ScaledViT's own keys) is fitted to the backbone
    bare = {k[len('backbone.'):]: v for k, v in backbone_only.items()}
    fitted = fit_model_checkpoint(model, bare, 'bare.pth')
    assert set(fitted['state_dict']) == set(backbone_only)


def test_runner_load_checkpoint_reads_load_from_options(tmp_path):
    """The compat shim passes the config's ``load_from_options`` on (what tools/test.py and
    ``load_from`` run)."""
    from mmengine.runner import Runner
    src, dst = classifier(num_classes=5), classifier(num_classes=10)
    path = save(tmp_path, {'state_dict': src.state_dict(), 'meta': {}})
    logger = types.SimpleNamespace(info=lambda *a, **k: None)

    def runner(options):
        cfg = {} if options is None else {'load_from_options': options}
        return types.SimpleNamespace(model=dst, cfg=cfg, call_hook=lambda *a, **k: None,
                                     logger=logger)
    with pytest.raises(ValueError, match=r"num_classes=10 \(head.fc.weight: checkpoint \(5, 64\)"):
        Runner.load_checkpoint(runner(None), path)
    before = dst.head.fc.weight.detach().clone()
    Runner.load_checkpoint(runner(dict(reinit_head=True)), path)
    torch.testing.assert_close(dst.head.fc.weight, before)  # kept its initialisation
    torch.testing.assert_close(dst.backbone.cls_token, src.backbone.cls_token)


# ----------------------------------------------------------------------------- get_flops
def flops(*options: str) -> dict:
    argv = [FMNIST_VIT, '--json'] + (['--cfg-options', *options] if options else [])
    return get_flops.main(argv)


def test_get_flops_applies_rule_overrides(capsys):
    base = flops()
    assert base['input_shape'] == [1, 32, 32]
    wide = flops('scaling.width_mult=2')
    assert wide['params'] > 3 * base['params'] and wide['flops'] > 3 * base['flops']
    hires = flops('scaling.resolution=64')
    assert hires['input_shape'] == [1, 64, 64] and hires['params'] > base['params']
    # the model and the counted input both follow a model.backbone.scaling override
    at56 = flops('model.backbone.scaling.resolution=56')
    assert at56['input_shape'] == [1, 56, 56]
    same = get_flops.main([FMNIST_VIT, '--json', '--shape', '56', '--cfg-options',
                           'scaling.resolution=56'])
    assert at56['flops'] == same['flops'] and at56['params'] == same['params']
    capsys.readouterr()


# ----------------------------------------------------------------------------- video clips
def _video_dataset(root: str, split: str = 'train'):
    from mmengine.config import Config
    from mmengine.registry import DATASETS, DefaultScope
    pytest.importorskip('mmaction.datasets')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', '_base_', 'video_fashion_mnist.py'))
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.update(ann_file=osp.join(root, f'{split}_list_videos.txt'),
                  data_prefix=dict(video=osp.join(root, f'videos_{split}')))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return DATASETS.build(ds_cfg)


def _flip_middle_byte(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert os.path.getsize(path) == size


@pytest.fixture
def video_root(tmp_path):
    from mmvitscale.datasets import FashionMNISTNotFoundError, generate_video, source_dir
    try:
        source_dir()
    except FashionMNISTNotFoundError as err:
        pytest.skip(str(err))
    root = str(tmp_path / 'video')
    generate_video(root, num_train=2, num_val=2, frames=4, size=32, item_size=8, min_travel=4,
                   show_progress=False)
    return root


def test_corrupted_clip_is_named_when_loaded(video_root):
    from mmvitscale.datasets import DatasetError
    clip = osp.join(video_root, 'videos_train', '000000.mp4')
    _flip_middle_byte(clip)
    dataset = _video_dataset(video_root)
    assert dataset[1]['inputs'].shape[0] >= 1  # an intact clip still loads
    with pytest.raises(DatasetError) as err:
        dataset[0]
    manifest = osp.join(video_root, 'manifest.json')
    assert str(err.value) == (f'{clip}: modified or corrupt: its sha256 differs from {manifest} '
                              '(regenerate the dataset with --overwrite)')


def test_modified_clip_list_is_named_before_any_clip(video_root):
    from mmvitscale.datasets import DatasetError
    ann = osp.join(video_root, 'train_list_videos.txt')
    with open(ann) as f:
        lines = f.read()
    with open(ann, 'w') as f:
        f.write(re.sub(r' (\d)\n', lambda m: f' {(int(m.group(1)) + 1) % 8}\n', lines, count=1))
    with pytest.raises(DatasetError) as err:
        _video_dataset(video_root)
    assert str(err.value).startswith(f'{ann}: modified or corrupt: its sha256 differs from ')


# ----------------------------------------------------------------------------- float16 on CPU
def _pit():
    from mmvitscale.models import ScaledPiT
    return ScaledPiT(dict(base_dims=(16, 16, 16), depths=(1, 1, 1), heads=(2, 2, 2),
                          patch_size=8, patch_stride=4), img_size=32)


def _video():
    from mmvitscale.models.video_vit import ScaledVideoViT
    return ScaledVideoViT(ARCH, img_size=32, patch_size=8, num_frames=4, tubelet_size=2)


@pytest.mark.parametrize('build, shape', [
    (vit, (2, 3, 32, 32)), (lambda: vit(attn_type='linear_angular', linear_kernel_size=3),
                            (2, 3, 32, 32)),
    (_pit, (2, 3, 32, 32)), (_video, (2, 3, 4, 32, 32))], ids=['vit', 'vit-linear', 'pit',
                                                               'video'])
def test_float16_forward_on_cpu(build, shape):
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(shape)
    with torch.no_grad():
        ref = model(x)[0]
        half = model.half()(x.half())[0]
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), ref, rtol=0.02, atol=0.02)


def test_input_of_another_dtype_than_the_weights_is_named():
    model = vit().eval()
    with pytest.raises(TypeError) as err:
        model(torch.zeros(1, 3, 32, 32, dtype=torch.float16))
    assert str(err.value) == (
        'ScaledViT has torch.float32 weights but got a torch.float16 input of shape '
        '(1, 3, 32, 32): cast the input (x.to(torch.float32)) or the model '
        '(model.to(torch.float16)); float16, bfloat16 and float32 models all run on CPU')
    with torch.autocast('cpu', dtype=torch.bfloat16), torch.no_grad():  # mixed precision: fine
        assert model(torch.zeros(1, 3, 32, 32, dtype=torch.bfloat16))[0].shape[0] == 1


def test_backbone_checkpoints_load_into_a_detector(tmp_path):
    """Partial loads that are meant: the share counts the detector's backbone, not the whole
    detector (its neck and head keep their initialisation)."""
    pytest.importorskip('mmdet')
    from mmengine.registry import MODELS, init_default_scope

    from mmvitscale.engine.config import load_config
    cfg = load_config(osp.join(ROOT, 'configs', 'det', 'scaled_vit_retina_fmnist.py'))
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    det = MODELS.build(cfg.model)
    backbone = {k[len('backbone.'):]: v for k, v in det.state_dict().items()
                if k.startswith('backbone.')}
    have, total = numel(det, ['backbone.' + k for k in backbone])
    strict = dict(min_coverage=0.95)  # more than the backbone's share of the detector
    assert have / total < strict['min_coverage']
    # a bare backbone checkpoint (ScaledViT's own keys), and a classifier's ('backbone.' keys
    # plus a head the detector does not have)
    fitted = fit_model_checkpoint(det, backbone, 'bare.pth', options=strict)
    assert set(fitted['state_dict']) == {'backbone.' + k for k in backbone}
    from_cls = {'backbone.' + k: v for k, v in backbone.items()}
    from_cls['head.fc.weight'] = torch.zeros(10, 8)
    assert fit_model_checkpoint(det, {'state_dict': from_cls}, 'cls.pth',
                                options=strict)['state_dict'] is from_cls
    # ... and init_cfg Pretrained on the detector's backbone
    path = save(tmp_path, backbone)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=path)
    det = MODELS.build(cfg.model)
    with min_coverage(0.95):
        det.init_weights()
    torch.testing.assert_close(det.backbone.patch_embed.proj.weight,
                               backbone['patch_embed.proj.weight'])
