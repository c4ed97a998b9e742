"""Scaling transfer: loading a task config under another rule. The study itself (seeds,
intervals, verdicts, the tool end to end) is tested in tests/test_experiments.py."""
import os
import os.path as osp

import pytest

from mmvitscale.rules import load_with_rule

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
    assert tuple(hires['det'].model.bbox_head.anchor_generator.strides) == (10, 20, 40, 80, 160)
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
    assert cfg.scaled['arch']['num_layers'] == 3
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
