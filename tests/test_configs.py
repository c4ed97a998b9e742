"""Rule files -> task configs: inheritance, derived values, building and short training."""
import os
import os.path as osp
import shutil

import pytest
import torch
from mmengine.config import Config

from mmvitscale.cost import get_complexity
from mmvitscale.models import ScaledViT
from mmvitscale.rules import derive_detection, derive_image, rescale_pipeline
from scripts import load_script

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG = osp.join(ROOT, 'configs')
OFFLINE = {
    'cls': 'cls/scaled_vit_fmnist.py',
    'det': 'det/scaled_vit_retina_fmnist.py',
    'video': 'video/scaled_vit_fmnist_video.py',
}
ALL_CONFIGS = sorted(
    osp.relpath(osp.join(d, f), CFG) for d, _, fs in __import__('os').walk(CFG) for f in fs
    if f.endswith('.py') and '_base_' not in d)
RULES = ['deit_tiny_shape', 'deeper_narrower', 'wider_shallower', 'hires_bigpatch',
         'more_frames_shallower']


def load(rel, root=CFG):
    return Config.fromfile(osp.join(root, rel))


@pytest.mark.parametrize('rel', ALL_CONFIGS)
def test_every_config_loads(rel):
    cfg = load(rel)
    assert cfg.model.backbone.type.startswith('mmvitscale.')
    assert 'scaled' in cfg


def _with_rule(tmp_path, rule):
    """A copy of configs/ whose baseline rule file holds another rule's contents."""
    root = tmp_path / 'configs'
    shutil.copytree(CFG, root)
    shutil.copyfile(root / '_base_' / 'scaling' / f'{rule}.py',
                    root / '_base_' / 'scaling' / 'deit_tiny_shape.py')
    return str(root)


def _summary(cfg, task):
    arch = cfg.scaled['arch']
    out = dict(depth=arch['num_layers'], width=arch['embed_dims'],
               input=tuple(cfg.scaled['input_size']))
    pipe = cfg.train_dataloader.dataset.pipeline
    if task == 'cls':
        out['pipe'] = tuple(next(t for t in pipe if t.type == 'Resize').scale)
    elif task == 'det':
        out['pipe'] = tuple(next(t for t in pipe if t.type == 'Resize').scale)
        out['strides'] = tuple(cfg.model.bbox_head.anchor_generator.strides)
    else:
        out['pipe'] = tuple(next(t for t in pipe if t.type == 'Resize').scale)
        out['frames'] = next(t for t in pipe if t.type == 'SampleFrames').clip_len
        assert out['frames'] == cfg.scaled['num_frames']
        from mmvitscale.models import ScaledVideoViT
        b = cfg.model.backbone
        spec = ScaledVideoViT.resolve_arch(b.arch, b.img_size, b.patch_size, b.num_frames,
                                           b.tubelet_size, b.scaling)
        assert spec.num_frames == out['frames']  # the backbone derives the same clip length
    return out


def test_changing_the_rule_file_changes_all_three_tasks(tmp_path):
    base = {t: _summary(load(rel), t) for t, rel in OFFLINE.items()}
    assert base['cls'] == dict(depth=6, width=64, input=(32, 32), pipe=(32, 32))
    # three pyramid levels (p/2, p, 2p) since the lighter study detector
    assert base['det']['strides'] == (8, 16, 32) and base['det']['pipe'] == (128, 128)
    assert base['video']['frames'] == 8

    deeper = _with_rule(tmp_path / 'a', 'deeper_narrower')
    for task, rel in OFFLINE.items():
        s = _summary(load(rel, deeper), task)
        assert (s['depth'], s['width']) == (round(base[task]['depth'] * 1.5), 48), task
        assert s['pipe'] == base[task]['pipe']

    hires = _with_rule(tmp_path / 'b', 'hires_bigpatch')
    cls, det, video = (_summary(load(rel, hires), t) for t, rel in OFFLINE.items())
    assert cls['pipe'] == (40, 40) and cls['depth'] == 6
    assert det['pipe'] == (160, 160) and det['strides'] == (10, 20, 40)
    assert video['pipe'] == (40, 40) and video['frames'] == 8

    frames = _with_rule(tmp_path / 'c', 'more_frames_shallower')
    cls, det, video = (_summary(load(rel, frames), t) for t, rel in OFFLINE.items())
    assert video['frames'] == 16 and video['depth'] == 2
    # image tasks ignore the frame knob: half their own depth
    assert (cls['depth'], det['depth']) == (base['cls']['depth'] // 2, base['det']['depth'] // 2)


@pytest.mark.parametrize('rule', ['deeper_narrower', 'wider_shallower', 'hires_bigpatch'])
@pytest.mark.parametrize('arch, img, patch', [
    ('deit-tiny', 224, 16), (dict(embed_dims=64, num_layers=6, num_heads=2), 32, 4)])
def test_image_rules_keep_flops_near_the_baseline(rule, arch, img, patch):
    rule_cfg = Config.fromfile(osp.join(CFG, '_base_', 'scaling', f'{rule}.py'))

    def flops(scaling):
        d = derive_image('vit', arch, scaling, img_size=img, patch_size=patch)['backbone']
        model = ScaledViT(**{k: v for k, v in d.items() if k != 'type'})
        return get_complexity(model, (3, *model.img_size))['flops']

    assert flops(rule_cfg.scaling) == pytest.approx(flops({}), rel=0.15)


def test_rescale_pipeline_and_detection_rules():
    pipe = rescale_pipeline([dict(type='RandomResizedCrop', scale=224),
                             dict(type='ResizeEdge', scale=256, edge='short'),
                             dict(type='Resize', scale=(-1, 256)),
                             dict(type='CenterCrop', crop_size=224)], 280)
    assert [t.get('scale', t.get('crop_size')) for t in pipe] == [280, 320, (-1, 320), 280]
    video = rescale_pipeline([dict(type='SampleFrames', clip_len=8, frame_interval=32),
                              dict(type='RandomRescale', scale_range=(256, 320))], 112,
                             frames=16)
    assert video[0] == dict(type='SampleFrames', clip_len=16, frame_interval=16)
    assert video[1]['scale_range'] == (128, 160)
    assert rescale_pipeline([dict(type='SampleFrames', clip_len=8)], 224, frames=32)[0] == dict(
        type='SampleFrames', clip_len=32, frame_interval=1)
    with pytest.raises(ValueError, match='even patch size .* the rule gives patch_size=5'):
        derive_detection('deit-tiny', dict(patch_size=5), img_size=225, patch_size=15)
    with pytest.raises(ValueError,
                       match="family must be one of \\('vit', 'pit', 'asvit'\\), got 'cnn'"):
        derive_image('cnn', 'deit-tiny', {})


@pytest.mark.parametrize('rel, host', [
    ('cls/scaled-vit-tiny_4xb256_in1k.py', 'data/imagenet'),
    ('cls/scaled-pit-ti_4xb256_in1k.py', 'data/imagenet'),
    ('det/scaled_vit_retina.py', 'data/coco'),
    ('video/scaled_vit_timesformer_k400.py', 'data/kinetics400'),
])
def test_real_data_configs_stop_with_a_hint_before_building(rel, host, tmp_path, monkeypatch):
    from mmengine.registry import RUNNERS
    monkeypatch.chdir(tmp_path)
    cfg = load(rel)
    with pytest.raises(SystemExit) as err:
        RUNNERS.build(cfg)
    message = str(err.value)
    assert message.startswith('dataset not found; missing or empty:') and host in message
    assert 'offline variant' in message and 'tools/train.py configs/' in message
    assert not (tmp_path / 'work_dirs').exists()


def test_data_check_follows_configured_root_and_refuses_empty(tmp_path, monkeypatch):
    """The hint says to point data_root elsewhere with --cfg-options: that must work."""
    from mmvitscale.engine.runner import data_problems
    monkeypatch.chdir(tmp_path)
    cfg = load('det/scaled_vit_retina.py')
    coco = tmp_path / 'elsewhere' / 'coco'
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = str(coco) + '/'
    problems = data_problems(cfg)
    assert all(str(coco) in p and p.endswith('(missing)') for p in problems) and problems
    for name in ('train2017', 'val2017'):
        os.makedirs(coco / name)
    os.makedirs(coco / 'annotations')
    for name in ('instances_train2017.json', 'instances_val2017.json'):
        (coco / 'annotations' / name).write_text('')
    assert sorted(data_problems(cfg)) == sorted(
        [f'{coco}/annotations/instances_train2017.json (empty file)',
         f'{coco}/annotations/instances_val2017.json (empty file)',
         f'{coco}/train2017/ (empty folder)', f'{coco}/val2017/ (empty folder)'])
    for name in ('instances_train2017.json', 'instances_val2017.json'):
        (coco / 'annotations' / name).write_text('{}')
    for name in ('train2017', 'val2017'):
        (coco / name / '1.jpg').write_bytes(b'x')
    assert data_problems(cfg) == []


def test_rule_overrides_rederive_the_whole_config():
    """--cfg-options on the rule re-derive input size, head width and strides, not only the
    backbone (a 64-px model on 32-px images before)."""
    from mmvitscale.engine.config import load_config
    cls_cfg = osp.join(CFG, 'cls', 'scaled_vit_fmnist.py')
    base = load_config(cls_cfg)
    assert base.train_dataloader.dataset.pipeline[0]['scale'] == (32, 32)
    for key in ('model.backbone.scaling.resolution', 'scaling.resolution'):
        cfg = load_config(cls_cfg, cfg_options={key: 64, 'train_cfg.max_epochs': 2})
        assert cfg.model.backbone.scaling['resolution'] == 64
        assert [p['scale'] for p in (cfg.train_dataloader.dataset.pipeline[0],
                                     cfg.test_dataloader.dataset.pipeline[0])] == [(64, 64)] * 2
        assert cfg.train_cfg.max_epochs == 2
    wide = load_config(cls_cfg, cfg_options={'scaling.width_mult': 2})
    assert wide.model.head.in_channels == 2 * base.model.head.in_channels
    det = load_config(osp.join(CFG, 'det', 'scaled_vit_retina_fmnist.py'),
                      cfg_options={'scaling.patch_size': 8})
    assert det.model.bbox_head.anchor_generator.strides == [4, 8, 16]
    assert det.model.data_preprocessor.pad_size_divisor == 16
    with pytest.raises(ValueError, match=r'--cfg-options scaling.bogus=3: .*bogus'):
        load_config(cls_cfg, cfg_options={'scaling.bogus': 3})
    with pytest.raises(ValueError, match=r'--cfg-options scaling.a.b=1: a rule key has no dots'):
        load_config(cls_cfg, cfg_options={'scaling.a.b': 1})


def _build(cfg):
    from mmengine.registry import DefaultScope, MODELS
    DefaultScope.get_instance(f'cfg-{id(cfg)}', scope_name=cfg.default_scope)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_pit_in1k_config_is_pit_ti_with_the_vit_recipe():
    """The in1k_pit arm: PiT-Ti (4.85M params with its 1000-way head, as published) trained
    with exactly the ViT in1k config's data pipeline, schedule and optimiser."""
    from mmvitscale.models import ScaledPiT
    pit, vit = load('cls/scaled-pit-ti_4xb256_in1k.py'), load('cls/scaled-vit-tiny_4xb256_in1k.py')
    model = _build(pit)
    assert type(model.backbone) is ScaledPiT and pit.model.backbone.arch == 'pit-ti'
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(4.85, rel=1e-2)
    assert pit.model.head.in_channels == 256 and pit.scaled['input_size'] == (224, 224)
    for key in ('train_dataloader', 'val_dataloader', 'optim_wrapper', 'param_scheduler',
                'train_cfg', 'runner_type'):
        assert pit[key] == vit[key], key
    assert pit.model.train_cfg == vit.model.train_cfg  # Mixup / CutMix
    from mmvitscale.engine.config import load_with_rule
    ruled = load_with_rule(osp.join(CFG, 'cls', 'scaled-pit-ti_4xb256_in1k.py'),
                           osp.join(CFG, '_base_', 'scaling', 'wider_shallower.py'))
    assert ruled.model.backbone.scaling == dict(depth_mult=0.5, width_mult=1.4)
    assert ruled.model.head.in_channels == ruled.scaled['arch']['base_dims'][-1] * 8


def test_real_detection_config_builds_and_runs():
    cfg = load('det/scaled_vit_retina.py')
    model = _build(cfg).eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 256, 320))
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 40), (16, 20), (8, 10), (4, 5), (2, 3)]


@pytest.fixture(scope='module')
def offline_data(tmp_path_factory):
    from mmvitscale import datasets
    try:
        datasets.source_dir()
    except datasets.FashionMNISTNotFoundError as err:
        pytest.skip(str(err))
    root = tmp_path_factory.mktemp('data')
    datasets.prepare_classification(str(root / 'fashion_mnist'))
    datasets.generate_det(str(root / 'fmnist_det'), num_train=32, num_val=16,
                          show_progress=False)
    datasets.generate_video(str(root / 'fmnist_video'), num_train=32, num_val=16,
                            show_progress=False)
    return root


def _loader(batch_size, **dataset):
    return dict(num_workers=0, persistent_workers=False, batch_size=batch_size,
                dataset=dataset)


def _short_run_options(task, root):
    opts = dict(train_cfg=dict(max_epochs=1, val_interval=1))
    if task == 'cls':
        r = str(root / 'fashion_mnist')
        for split in ('train', 'val', 'test'):
            opts[f'{split}_dataloader'] = _loader(16, data_root=r, indices=32)
    elif task == 'det':
        r = str(root / 'fmnist_det') + '/'
        for split in ('train', 'val', 'test'):
            opts[f'{split}_dataloader'] = _loader(8, data_root=r)
        opts['model'] = dict(test_cfg=dict(score_thr=0.0))  # untrained: keep every box
        opts['val_evaluator'] = dict(ann_file=r + 'annotations/instances_val.json')
        opts['test_evaluator'] = opts['val_evaluator']
    else:
        r = str(root / 'fmnist_video') + '/'
        for split, name in (('train', 'train'), ('val', 'val'), ('test', 'val')):
            opts[f'{split}_dataloader'] = _loader(
                8, ann_file=r + f'{name}_list_videos.txt',
                data_prefix=dict(video=r + f'videos_{name}'))
    return opts


@pytest.mark.slow
@pytest.mark.parametrize('task', sorted(OFFLINE))
def test_offline_configs_train_and_evaluate(task, offline_data, tmp_path):
    from mmengine.runner import Runner
    cfg = load(OFFLINE[task])
    cfg.merge_from_dict(_short_run_options(task, offline_data))
    cfg.work_dir = str(tmp_path / task)
    runner = Runner.from_cfg(cfg)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    after = runner.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    metrics = runner.test()
    key = {'cls': 'accuracy/top1', 'det': 'coco/bbox_mAP', 'video': 'acc/top1'}[task]
    assert key in metrics and 0.0 <= metrics[key] <= 100.0


def test_train_script_rule_flag_swaps_the_rule(monkeypatch):
    train = load_script('tools/train.py')
    seen = {}

    class FakeRunner:

        @classmethod
        def from_cfg(cls, cfg):
            seen['cfg'] = cfg
            return cls()

        def train(self):
            seen['trained'] = True

    monkeypatch.setattr(train, 'Runner', FakeRunner)
    rule = osp.join(CFG, '_base_', 'scaling', 'wider_shallower.py')
    train.main([osp.join(CFG, OFFLINE['cls']), '--rule', rule, '--work-dir', '/tmp/x'])
    cfg = seen['cfg']
    assert seen['trained'] and cfg.work_dir == '/tmp/x'
    assert (cfg.scaled['arch']['num_layers'], cfg.scaled['arch']['embed_dims']) == (3, 88)
    assert cfg.model.backbone.scaling == dict(depth_mult=0.5, width_mult=1.4)


@pytest.mark.parametrize('rel, shape', [
    ('cls/scaled-vit-tiny_4xb256_in1k.py', (2, 3, 64, 64)),
    ('cls/scaled-pit-ti_4xb256_in1k.py', (2, 3, 64, 64)),
    ('video/scaled_vit_timesformer_k400.py', (2, 1, 3, 2, 64, 64)),
])
def test_real_cls_and_video_configs_build_and_run(rel, shape):
    cfg = load(rel)
    model = _build(cfg).eval()
    assert type(model.backbone).__module__.startswith('mmvitscale.models')
    with torch.no_grad():
        out = model(torch.randn(*shape), mode='tensor')
        if rel.startswith('video'):  # mmaction's tensor mode stops at the backbone features
            assert out.shape == (2, 192)
            out = model.cls_head(out)
    assert out.shape == (2, 1000 if rel.startswith('cls') else 400)
    assert torch.isfinite(out).all()
