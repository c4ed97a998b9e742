"""Scaling transfer: loading a task config under another rule, verdicts, the report tool."""
import json
import math
import os
import os.path as osp
import sys

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
sys.path.insert(0, osp.join(ROOT, 'tools'))

import transfer  # noqa: E402


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


def _run(metric, gflops, latency=1.0):
    return dict(metric=metric, gflops=gflops, latency_ms=latency)


def test_verdict_equal_cost_tolerance_and_margin():
    v = transfer.verdict(_run(50.0, 1.0), _run(52.5, 0.9))
    assert v['status'] == 'transferred' and v['metric_delta'] == pytest.approx(2.5)
    assert v['flops_ratio'] == pytest.approx(0.9) and 'x0.90' in v['text']
    assert transfer.verdict(_run(50.0, 1.0), _run(49.0, 1.1))['status'] == 'did not transfer'
    assert transfer.verdict(_run(50.0, 1.0), _run(50.0, 1.0))['status'] == 'did not transfer'
    # FLOPs outside the tolerance: no claim either way, even with a big gain
    assert transfer.verdict(_run(50.0, 1.0), _run(90.0, 1.2))['status'] == 'not comparable'
    assert transfer.verdict(_run(50.0, 1.0), _run(10.0, 0.8))['status'] == 'not comparable'
    assert transfer.verdict(_run(50.0, 1.0), _run(90.0, 1.2),
                            tolerance=0.25)['status'] == 'transferred'
    assert transfer.verdict(_run(50.0, 1.0), _run(60.0, 1.14))['status'] == 'transferred'
    assert transfer.verdict(_run(50.0, 1.0), _run(60.0, 1.16))['status'] == 'not comparable'
    # the margin turns small gains into ties
    tie = transfer.verdict(_run(50.0, 1.0), _run(50.5, 1.0), margin=1.0)
    assert tie['status'] == 'did not transfer' and 'ties' in tie['text']
    with pytest.raises(ValueError, match='baseline FLOPs must be positive'):
        transfer.verdict(_run(50.0, 0.0), _run(50.0, 1.0))


def test_bad_input_fails_before_any_work(tmp_path, capsys):
    out = tmp_path / 'out'
    with pytest.raises(SystemExit, match=r'--rule .*nope\.py: rule file not found'):
        transfer.main(['--rule', str(tmp_path / 'nope.py'), '--out-dir', str(out)])
    with pytest.raises(SystemExit) as err:
        transfer.main(['--tasks', 'cls', 'seg', '--out-dir', str(out)])
    assert err.value.code == 2 and "invalid choice: 'seg'" in capsys.readouterr().err
    bad = tmp_path / 'bad_rule.py'
    bad.write_text('width = 3\n')
    with pytest.raises(SystemExit, match=r'bad_rule\.py has no top-level `scaling'):
        transfer.main(['--rule', str(bad), '--tasks', 'cls', '--out-dir', str(out)])
    with pytest.raises(SystemExit, match='cls train must be >= 1, got 0'):
        transfer.main(['--tasks', 'cls', '--cls-train', '0', '--out-dir', str(out)])
    assert not out.exists()


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    from mmvitscale import datasets
    try:
        datasets.source_dir()
    except datasets.FashionMNISTNotFoundError as err:
        pytest.skip(str(err))
    root = tmp_path_factory.mktemp('data')
    datasets.generate_det(str(root / 'fmnist_det'), num_train=24, num_val=12,
                          show_progress=False)
    datasets.generate_video(str(root / 'fmnist_video'), num_train=24, num_val=12,
                            show_progress=False)
    return root


@pytest.mark.slow
def test_transfer_end_to_end_writes_the_report(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out-dir, as on the command line
    out = tmp_path / 'work_dirs' / 'report'
    manifest = (tiny_data / 'fmnist_det' / 'manifest.json').read_text()
    report = transfer.main([
        '--tasks', 'det', 'video', '--data-root', str(tiny_data),
        '--out-dir', 'work_dirs/report',
        '--epochs', '1', '--det-train', '16', '--det-val', '8', '--det-batch', '8',
        '--video-train', '16', '--video-val', '12', '--video-batch', '8',
        '--latency-repeats', '2', '--latency-rounds', '2', '--latency-warmup', '0'])
    assert (tiny_data / 'fmnist_det' / 'manifest.json').read_text() == manifest  # kept
    data = json.loads((out / 'transfer.json').read_text())
    assert data == json.loads(json.dumps(report))
    assert list(data['tasks']) == ['det', 'video']
    assert data['meta']['rule'] == 'configs/_base_/scaling/deeper_narrower.py'
    for name, task in data['tasks'].items():
        base, new = task['runs']['baseline'], task['runs']['rule']
        assert (base['label'], new['label']) == ('deit_tiny_shape', 'deeper_narrower')
        assert (base['arch']['width'], new['arch']['width']) == (64, 48)
        assert 0 < new['gflops'] < base['gflops'] and new['params_m'] < base['params_m']
        for run in (base, new):
            assert 0.0 <= run['metric'] <= 100.0 and math.isfinite(run['metric'])
            assert run['latency_ms'] > 0 and run['latency_rounds'] == 2
        assert task['verdict'] == transfer.verdict(base, new, 0.15, 0.0)
        assert task['settings'] == dict(epochs=1, train=16, val=task['settings']['val'],
                                        batch=8)
    assert data['tasks']['det']['runs']['baseline']['input_shape'] == [3, 128, 128]
    assert data['tasks']['video']['runs']['rule']['input_shape'] == [3, 8, 32, 32]
    subset = json.loads((out / 'det' / 'instances_val_subset.json').read_text())
    assert len(subset['images']) == 8
    md = (out / 'transfer.md').read_text()
    for name in ('det', 'video'):
        section = md[md.index(f'## {name}:'):]
        assert '| baseline | deit_tiny_shape |' in section
        assert '| rule | deeper_narrower |' in section
        assert '**Verdict:** ' + data['tasks'][name]['verdict']['text'] in section
    png = (out / 'transfer.png').read_bytes()
    assert png.startswith(b'\x89PNG') and len(png) > 10_000
    assert not [p for p in os.listdir(out) if p.endswith('.tmp')]
    assert (out / 'det' / 'rule' / 'epoch_1.pth').is_file()
