"""Scaling transfer: loading a task config under another rule. The study itself (seeds,
intervals, verdicts, the tool end to end) is tested in tests/test_experiments.py."""
import os
import os.path as osp

import pytest

from mmvitscale.engine.config import load_with_rule

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG = osp.join(ROOT, 'configs')
SCALING = osp.join(CFG, '_base_', 'scaling')
OFFLINE = {
    'cls': osp.join(CFG, 'cls', 'scaled_vit_fmnist.py'),
    'det': osp.join(CFG, 'det', 'scaled_vit_retina_fmnist.py'),
    'video': osp.join(CFG, 'video', 'scaled_vit_fmnist_video.py'),
}


def rule(name: str) -> str:
    return osp.join(SCALING, f'{name}.py')


def _resize(cfg):
    pipe = cfg.train_dataloader.dataset.pipeline
    return tuple(next(t for t in pipe if t.type == 'Resize').scale)


@pytest.mark.parametrize('task', sorted(OFFLINE))
def test_load_with_rule_derives_everything_from_the_new_rule(task):
    base = load_with_rule(OFFLINE[task], rule('deit_tiny_shape'))
    deeper = load_with_rule(OFFLINE[task], rule('deeper_narrower'))
    depth = base.scaled['arch']['num_layers']
    assert base.scaling == {} and deeper.scaling == dict(depth_mult=1.5, width_mult=0.8)
    assert base.model.backbone.scaling == {}
    assert deeper.model.backbone.scaling == dict(depth_mult=1.5, width_mult=0.8)
    assert (deeper.scaled['arch']['num_layers'], deeper.scaled['arch']['embed_dims']) == \
        (round(depth * 1.5), 48)
    assert _resize(deeper) == _resize(base)
    # the other bases still resolve: data settings and host model parts are inherited
    assert base.train_dataloader.batch_size == deeper.train_dataloader.batch_size == \
        {'cls': 128, 'det': 16, 'video': 16}[task]
    if task == 'cls':
        assert deeper.model.head.in_channels == 48
    elif task == 'det':
        assert deeper.model.neck.in_channels == 48
        assert deeper.model.bbox_head.type == 'RetinaHead'  # from ../_base_/retinanet_sfp.py
    else:
        assert deeper.model.cls_head.in_channels == 48


def test_load_with_rule_resolution_and_frame_knobs():
    hires = {t: load_with_rule(p, rule('hires_bigpatch')) for t, p in OFFLINE.items()}
    assert _resize(hires['cls']) == (40, 40)
    assert _resize(hires['det']) == (160, 160)
    # the light study head: three levels at strides p/2, p, 2p
    assert tuple(hires['det'].model.bbox_head.anchor_generator.strides) == (10, 20, 40)
    frames = {t: load_with_rule(p, rule('more_frames_shallower')) for t, p in OFFLINE.items()}
    sample = next(t for t in frames['video'].train_dataloader.dataset.pipeline
                  if t.type == 'SampleFrames')
    assert sample.clip_len == frames['video'].scaled['num_frames'] == 16
    assert frames['video'].scaled['arch']['num_layers'] == 2
    assert frames['cls'].scaled['arch']['num_layers'] == 3  # image tasks ignore frames


def test_load_with_rule_leaves_no_temp_files_and_any_cwd(tmp_path, monkeypatch):
    import tempfile
    scratch = tmp_path / 'tmp'
    scratch.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
    monkeypatch.chdir(tmp_path)
    before = open(OFFLINE['det']).read()
    cfg = load_with_rule(osp.relpath(OFFLINE['det']), osp.relpath(rule('wider_shallower')))
    assert cfg.scaled['arch']['num_layers'] == 2  # 4 x 0.5
    assert not [p for p in os.listdir(scratch) if p.startswith('mmvitscale_rule_')]
    assert open(OFFLINE['det']).read() == before


def test_load_with_rule_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match=r'rule file not found: .*nope\.py'):
        load_with_rule(OFFLINE['cls'], str(tmp_path / 'nope.py'))
    no_scaling = tmp_path / 'no_scaling.py'
    no_scaling.write_text('depth = 3\n')
    with pytest.raises(ValueError, match=r'no_scaling\.py has no top-level `scaling'):
        load_with_rule(OFFLINE['cls'], str(no_scaling))
    not_dict = tmp_path / 'not_dict.py'
    not_dict.write_text('scaling = 3\n')
    with pytest.raises(ValueError, match=r'not_dict\.py has no top-level `scaling'):
        load_with_rule(OFFLINE['cls'], str(not_dict))
    base_only = osp.join(CFG, '_base_', 'cls_fashion_mnist.py')
    with pytest.raises(ValueError, match=r'cls_fashion_mnist\.py has 0 scaling rule bases'):
        load_with_rule(base_only, rule('deeper_narrower'))
    with pytest.raises(ValueError, match=r'deit_tiny_shape\.py has no `_base_'):
        load_with_rule(rule('deit_tiny_shape'), rule('deeper_narrower'))
    with pytest.raises(ValueError, match=r'config file not found: .*missing\.py'):
        load_with_rule(str(tmp_path / 'missing.py'), rule('deeper_narrower'))


# ---------------------------------------------------------------------------- equal cost
def _task_cost(config, rule_file):
    """(the backbone's scaling, FLOPs of the task's backbone under a scaling, task shape)."""
    from mmvitscale.cost.matching import backbone_flops
    from mmvitscale.experiments.tasks import TASKS, input_shape
    from mmvitscale.fileio import json_ready
    spec = next(s for s in TASKS.values() if s.config_path == config)
    cfg = load_with_rule(config, rule_file)
    backbone = json_ready(cfg.model.backbone)
    shape = input_shape(spec, cfg)
    return (dict(backbone['scaling']),
            lambda scaling: backbone_flops(dict(backbone, scaling=scaling), shape), cfg)


@pytest.mark.parametrize('task', ['cls', 'cls_pit', 'video'])
def test_cost_matching_solves_the_width_on_each_family(task):
    from mmvitscale.cost import get_complexity
    from mmvitscale.cost.backends import build_model
    from mmvitscale.cost.matching import solve_width
    from mmvitscale.experiments.tasks import TASKS, input_shape
    spec = TASKS[task]
    _, base_cost, _ = _task_cost(spec.config_path, rule('deit_tiny_shape'))
    target = base_cost({})
    scaling, cost, _ = _task_cost(spec.config_path, rule('deeper_narrower'))
    m = solve_width(cost, scaling, target, 0.05, 'deeper_narrower', task)
    assert m.matched and m.reason == '' and abs(m.ratio - 1) <= 0.05
    assert m.scaling == dict(depth_mult=1.5, width=m.value)  # the other knob kept
    assert m.rule_ratio == pytest.approx(cost(scaling) / target)
    # the solved width is the nearest: one legal step either side is farther from 1
    for w in (m.value - 1, m.value + 1):
        try:
            other = cost(dict(depth_mult=1.5, width=w)) / target
        except ValueError:
            continue
        assert abs(other - 1) >= abs(m.ratio - 1)
    # what a trial counts agrees: the rule file with the solved width, built and counted
    cfg = _task_cost(spec.config_path, rule('deeper_narrower'))[2]
    cfg.model.backbone.scaling = m.scaling
    counted = get_complexity(build_model(cfg.model.backbone), input_shape(spec, cfg))['flops']
    assert counted == pytest.approx(m.cost)


def test_cost_matching_refuses_an_impossible_target_naming_rule_and_task():
    from mmvitscale.cost.matching import MatchError, solve_width
    from mmvitscale.experiments.tasks import TASKS
    spec = TASKS['cls']
    scaling, cost, _ = _task_cost(spec.config_path, rule('deeper_narrower'))
    tiny = cost(dict(depth_mult=1.5, width=2)) / 10  # below even the narrowest width
    with pytest.raises(MatchError, match=r'rule deeper_narrower on task cls: even the narrowest '
                       r'width \(2\) costs x10\.00 the baseline flops'):
        solve_width(cost, scaling, tiny, 0.05, 'deeper_narrower', 'cls', strict=True)
    m = solve_width(cost, scaling, tiny, 0.05, 'deeper_narrower', 'cls')
    assert not m.matched and m.reason.startswith('rule deeper_narrower on task cls:')
    huge = solve_width(cost, scaling, 1e15, 0.05, 'deeper_narrower', 'cls', max_width=256)
    assert not huge.matched and 'widest width tried' in huge.reason
    # a step the width cannot make finer than the tolerance is refused, not rounded into it
    steps = solve_width(lambda s: float(s.get('width', 8) // 8 * 8 or 1e-9), {}, 12.0, 0.01,
                        'r', 't')
    assert not steps.matched and 'outside the tolerance (1%)' in steps.reason
    with pytest.raises(ValueError, match='tolerance must be in'):
        solve_width(cost, scaling, 1.0, 1.5, 'r', 't')


def test_video_items_are_decoded_once_when_cached(tmp_path, monkeypatch):
    """The study's video task keeps decoded clips (its pipeline is deterministic): the cached
    items equal freshly decoded ones, and a second epoch decodes nothing."""
    import torch
    from mmengine.registry import init_default_scope

    from mmvitscale import datasets
    from mmvitscale.datasets import hosts
    from mmvitscale.registry import DATASETS
    data = tmp_path / 'video'
    datasets.generate_video(str(data), num_train=6, num_val=2, distractors=2, noise=24.0,
                            show_progress=False)
    cfg = load_with_rule(OFFLINE['video'], rule('deit_tiny_shape'))
    ds_cfg = dict(cfg.train_dataloader.dataset, ann_file=str(data / 'train_list_videos.txt'),
                  data_prefix=dict(video=str(data / 'videos_train')))
    assert ds_cfg['cache_items'] is True
    init_default_scope('mmaction')
    cached = DATASETS.build(ds_cfg)
    fresh = DATASETS.build(dict(ds_cfg, cache_items=False))
    calls = []
    parent = hosts.NamesFailingFile.prepare_data
    monkeypatch.setattr(hosts.NamesFailingFile, 'prepare_data',
                        lambda self, idx: calls.append(idx) or parent(self, idx))
    for epoch in range(2):
        for i in range(len(cached)):
            a, b = cached[i], fresh[i]
            assert torch.equal(a['inputs'], b['inputs'])
            assert a['data_samples'].gt_label == b['data_samples'].gt_label
    assert calls.count(0) == 3  # cached: once; fresh: every epoch
