"""Latency protocol, per-kernel predictor, calibration and the latency dataset.

Synthetic tables only: no test asserts on measured timings.
"""
import json
import os
import os.path as osp

import numpy as np
import pytest
import torch

import mmvitscale  # noqa: F401
from mmvitscale.cost import backends, evaluation
from mmvitscale.cost.backends import (interleaved_order, measure_interleaved, noise_pct, pinned,
                                      summarise)
from mmvitscale.cost.calibration import (CalibratedPredictor, calibrate, calibration_curve,
                                         within)
from mmvitscale.cost.kernels import GROUPS, KERNEL_FEATURES, kernel_features, kernels
from mmvitscale.cost.latency_table import (fingerprint_id, make_row, read_dataset,
                                           write_dataset)
from mmvitscale.cost.predictor import (KernelLatencyPredictor, LatencyPredictor,
                                       arch_from_dict, load_predictor, make_predictor)
from mmvitscale.scaling import make_pit_arch, make_vit_arch
from scripts import load_script

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# known per-kernel costs (ms per unit of each KERNEL_FEATURES term)
TRUE = np.array([2e-8, 1e-6, 5e-7, 3e-6, 3e-8, 2e-6, 1e-7, 1e-6, 4e-6, 5e-7, 1e-6, 0.05, 0.3])
FP = dict(device='Test CPU', device_type='cpu', threads=1, torch='2.x', onnxruntime=None,
          backend='eager', machine='x86_64')


def _tool(name):
    return load_script(f'tools/analysis/{name}.py')


def _vits():
    """26 core ViTs (width <= 240) then 4 wider ones (288: beyond the core range)."""
    import itertools
    import random
    grid = list(itertools.product((96, 144, 192, 240), (6, 9, 12), (3, 6), (112, 160, 224),
                                  (2.0, 4.0)))
    core = random.Random(0).sample(grid, 26)
    wide = [(288, 6, 3, 112, 4.0), (288, 9, 6, 160, 2.0), (288, 12, 3, 224, 4.0),
            (288, 6, 6, 224, 2.0)]
    return [make_vit_arch(d, n, h, r, (res, res), 16) for d, n, h, res, r in core + wide]


def _pits():
    return [make_pit_arch(dims, depths, (2, 4, 8), r, (res, res), 16, 8)
            for dims, depths, res, r in [((32, 32, 32), (2, 6, 4), 224, 4.0),
                                         ((24, 24, 24), (1, 3, 2), 224, 4.0),
                                         ((32, 32, 32), (1, 3, 2), 160, 2.0),
                                         ((24, 24, 24), (2, 6, 4), 112, 2.0),
                                         ((32, 32, 32), (2, 3, 2), 112, 4.0)]]


def _archs():
    """Hand-made ViTs and PiTs spanning depth, width, heads, resolution (no model import)."""
    return _vits() + _pits()


def _synthetic_latency(archs, coef=TRUE):
    return np.array([kernel_features(a) @ coef for a in archs])


# ---------------------------------------------------------------------------- protocol
def test_interleaved_order_is_round_robin():
    order = interleaved_order(4, 3)
    assert len(order) == 12
    for r in range(3):
        visits = [i for rr, i in order if rr == r]
        assert sorted(visits) == [0, 1, 2, 3] and visits[0] == r  # rotated per round
    items = [i for _, i in order]
    assert all(a != b for a, b in zip(items, items[1:]))  # never two visits of one in a row
    with pytest.raises(ValueError, match='n_items >= 1 and rounds >= 1, got 0, 3'):
        interleaved_order(0, 3)


def test_measure_interleaved_visits_and_statistics():
    log = []

    def runner(i):
        return (lambda: log.append(i)), (lambda: None)

    res = measure_interleaved([runner(i) for i in range(3)], rounds=2, repeats=3, warmup_s=0,
                              min_warmup=1, visit_warmup=1)
    # warm-up once each, then per round every runner: 1 untimed + 3 timed runs in a block
    assert log[:3] == [0, 1, 2]
    visits = [log[3 + 4 * v] for v in range(6)]
    assert visits == [0, 1, 2, 1, 2, 0]
    assert all(log[3 + 4 * v:3 + 4 * v + 4] == [visits[v]] * 4 for v in range(6))
    assert len(res) == 3
    for r in res:
        assert r['repeats'] == 6 and r['rounds'] == 2 and len(r['round_medians_ms']) == 2
        assert r['min_ms'] <= r['p10_ms'] <= r['median_ms'] <= r['p90_ms'] <= r['max_ms']
        assert r['noise_pct'] >= 0 and r['clock'] == 'wall'
    with pytest.raises(ValueError, match='repeats must be an int >= 1, got 0'):
        measure_interleaved([runner(0)], repeats=0)
    with pytest.raises(ValueError, match="clock must be one of \\('wall', 'thread'\\)"):
        measure_interleaved([runner(0)], clock='cpu')


def test_summarise_quantiles_and_noise():
    s = summarise([11, 1, 5, 3, 2, 4, 6, 8, 7, 9, 10])  # 1..11, unsorted
    assert s['median_ms'] == 6 and s['p10_ms'] == 2 and s['p90_ms'] == 10
    assert s['min_ms'] == 1 and s['max_ms'] == 11 and s['repeats'] == 11
    one = summarise([4.0])
    assert one['p10_ms'] == one['p90_ms'] == one['median_ms'] == 4.0
    assert noise_pct([10, 11, 12]) == pytest.approx(100 * 2 / 11)
    assert noise_pct([5.0]) == 0.0
    with pytest.raises(ValueError, match='no timings'):
        summarise([])


def test_pinned_applies_and_restores(monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '7')
    monkeypatch.delenv('MKL_NUM_THREADS', raising=False)
    before = torch.get_num_threads()
    has_aff = hasattr(os, 'sched_getaffinity')
    aff_before = os.sched_getaffinity(0) if has_aff else None
    with pinned(1) as pin:
        assert torch.get_num_threads() == 1
        assert os.environ['OMP_NUM_THREADS'] == '1' and os.environ['MKL_NUM_THREADS'] == '1'
        if has_aff:
            assert pin['cpus'] == sorted(aff_before)[:1]
            assert os.sched_getaffinity(0) == set(pin['cpus'])
    assert torch.get_num_threads() == before
    assert os.environ['OMP_NUM_THREADS'] == '7' and 'MKL_NUM_THREADS' not in os.environ
    if has_aff:
        assert os.sched_getaffinity(0) == aff_before
    with pinned(1, cpus=None) as pin:  # threads only
        assert pin['cpus'] is None and torch.get_num_threads() == 1
    with pytest.raises(RuntimeError):  # restored on errors too
        with pinned(1):
            raise RuntimeError
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match='threads must be a positive int, got 0'):
        with pinned(0):
            pass
    if has_aff:
        with pytest.raises(ValueError, match=r'cpus \[100000\] are not all usable'):
            with pinned(1, cpus=[100000]):
                pass


def test_make_runner_runs_a_tiny_model():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).train()
    run, sync, info = backends.make_runner(model, (3, 2, 2), 'eager')
    assert run().shape == (1, 2) and not model.training and info == {}
    sync()


# ---------------------------------------------------------------------------- kernels
def test_kernels_of_a_vit_block():
    arch = make_vit_arch(64, 2, 2, 4.0, (32, 32), 16)  # 4 patches + cls = 5 tokens
    ks = kernels(arch)
    gemms = [k for k in ks if k.op == 'gemm']
    assert gemms[0].shape == (4, 3 * 16 * 16, 64)  # patch embedding
    assert [k.shape for k in gemms[1:5]] == [(5, 64, 192), (5, 64, 64), (5, 64, 256),
                                             (5, 256, 64)]
    assert [k.shape for k in ks if k.op == 'attention'] == [(2, 5, 32)] * 2
    f = dict(zip(KERNEL_FEATURES, kernel_features(arch, batch_size=2)))
    assert f['blocks'] == 2 and f['const'] == 1
    assert f['gelu_elem'] == 2 * 2 * 5 * 256  # batch 2, 2 blocks
    assert f['attn_mac'] == 2 * (2 * 2 * 2 * 25 * 32)


def test_kernel_predictor_recovers_known_kernel_costs(tmp_path):
    archs = _archs()
    y = _synthetic_latency(archs)
    pred = KernelLatencyPredictor(dict(note='synthetic')).fit(archs, y)
    np.testing.assert_allclose(pred.coef, TRUE, rtol=1e-6)
    assert pred.families == ['pit', 'vit'] and pred.meta['train_mape'] < 1e-6
    parts = pred.group_contributions(archs[0])
    assert set(parts) == set(GROUPS) and sum(parts.values()) == pytest.approx(y[0])
    path = pred.save(str(tmp_path / 'k.json'))
    loaded = load_predictor(path)
    assert isinstance(loaded, KernelLatencyPredictor)
    assert loaded.predict(archs[3]) == pytest.approx(y[3])
    with pytest.raises(ValueError, match="holds a 'kernel' predictor, not 'analytic'"):
        LatencyPredictor.load(path)


def test_kernel_predictor_generalises_across_family():
    vits, pits = _vits(), _pits()
    coef = TRUE.copy()
    coef[KERNEL_FEATURES.index('dwconv_mac')] = 0.0  # a kernel ViT never runs
    kernel = KernelLatencyPredictor().fit(vits, _synthetic_latency(vits, coef))
    with pytest.raises(ValueError, match="fitted on \\['vit'\\] architectures, not 'pit'"):
        kernel.predict(pits[0])
    pred = kernel.predict_many(pits, any_family=True)
    true = _synthetic_latency(pits, coef)
    assert evaluation.split_metrics(pred, true)['mape'] < 5.0


# ---------------------------------------------------------------------------- calibration
def _fitted():
    archs = _archs()
    return archs, KernelLatencyPredictor().fit(archs, _synthetic_latency(archs))


def test_calibrate_recovers_group_factors_scale_and_affine(tmp_path):
    archs, base = _fitted()
    factors = dict(gemm=0.5, attention=2.0, memory=1.5, overhead=1.0)
    coef = TRUE.copy()
    for g, keys in GROUPS.items():
        for k in keys:
            coef[KERNEL_FEATURES.index(k)] *= factors[g]
    target = _synthetic_latency(archs, coef)
    cal = calibrate(base, archs[:10], target[:10], 'kernel', ridge=0.0)
    for g, v in factors.items():
        assert cal.params[g] == pytest.approx(v, rel=1e-5)
    assert cal.predict_many(archs[10:], any_family=True) == pytest.approx(target[10:])
    feat = calibrate(base, archs[:20], target[:20], 'feature', ridge=0.0)
    assert feat.predict_many(archs[20:30]) == pytest.approx(target[20:30], rel=1e-4)
    y = _synthetic_latency(archs)
    scale = calibrate(base, archs[:5], 1.7 * y[:5], 'scale')
    assert scale.params['s'] == pytest.approx(1.7) and scale.meta['n_calibration'] == 5
    aff = calibrate(base, archs[:5], 2 * y[:5] + 3, 'affine')
    assert aff.params == pytest.approx(dict(a=2.0, b=3.0))
    # shrinkage: with a strong ridge all factors move to the single scale
    shrunk = calibrate(base, archs[:5], 1.7 * y[:5], 'kernel', ridge=1e6)
    assert all(v == pytest.approx(1.7, rel=1e-3) for v in shrunk.params.values())
    path = cal.save(str(tmp_path / 'cal.json'))
    back = load_predictor(path)
    assert isinstance(back, CalibratedPredictor) and back.method == 'kernel'
    assert back.predict(archs[11]) == pytest.approx(target[11])


def test_calibrate_bad_inputs():
    archs, base = _fitted()
    y = _synthetic_latency(archs)
    with pytest.raises(ValueError, match="method must be one of .*, got 'magic'"):
        calibrate(base, archs[:5], y[:5], 'magic')
    with pytest.raises(ValueError, match="method 'affine' needs at least 2 measured"):
        calibrate(base, archs[:1], y[:1], 'affine')
    with pytest.raises(ValueError, match='3 architectures but 2 latencies'):
        calibrate(base, archs[:3], y[:2])
    with pytest.raises(ValueError, match='positive finite'):
        calibrate(base, archs[:2], [1.0, -1.0])
    analytic = LatencyPredictor().fit(archs[:20], y[:20])
    with pytest.raises(ValueError, match="'kernel' needs a KernelLatencyPredictor"):
        calibrate(analytic, archs[:12], y[:12], 'kernel')
    with pytest.raises(ValueError, match='ridge must be >= 0, got -1'):
        calibrate(base, archs[:5], y[:5], ridge=-1)


def test_calibration_curve_rows():
    archs, base = _fitted()
    y = 1.3 * _synthetic_latency(archs)
    rows = calibration_curve(base, archs[:12], y[:12], archs[12:], y[12:], sizes=(3, 5, 50),
                             draws=2)
    assert rows[0]['method'] == 'uncalibrated' and rows[0]['mape'] == pytest.approx(
        100 * 0.3 / 1.3)
    got = {(r['k'], r['method']) for r in rows[1:]}
    methods = ('scale', 'affine', 'kernel', 'feature', 'scratch-analytic', 'scratch-kernel')
    assert got == {(k, m) for k in (3, 5) for m in methods}
    for r in rows:
        if r['method'] == 'scale':
            assert r['mape'] == pytest.approx(0, abs=1e-6) and r['within10'] == 100
    assert within([1.0, 1.2], [1.0, 1.0]) == 50.0


# ---------------------------------------------------------------------------- dataset
def _dataset_rows(archs, y, run_id='A', fp=FP):
    rows = []
    for i, (a, ms) in enumerate(zip(archs, y)):
        fam = 'pit' if hasattr(a, 'depths') else 'vit'
        rows.append(make_row(fp, fam, a.as_dict(), [3, *a.img_size], 1,
                             dict(median_ms=float(ms), p10_ms=0.95 * ms, p90_ms=1.1 * ms,
                                  repeats=15, rounds=3, noise_pct=2.0,
                                  round_medians_ms=[ms, ms, ms]),
                             run_id=run_id, group=('pit' if fam == 'pit' else
                                                   'beyond' if i in (26, 27, 28, 29) else
                                                   'core')))
    return rows


def test_dataset_round_trip_and_validation(tmp_path):
    archs = _archs()
    rows = _dataset_rows(archs, _synthetic_latency(archs))
    path = str(tmp_path / 'ds.jsonl')
    assert write_dataset(path, rows) == len(rows)
    back = read_dataset(path)
    assert back == json.loads(json.dumps(rows))
    assert back[0]['fingerprint_id'] == fingerprint_id(FP) and back[0]['p10_ms'] > 0
    assert arch_from_dict(back[-1]['arch']) == archs[-1]

    def bad(change, message):
        row = json.loads(json.dumps(rows[0]))
        change(row)
        with pytest.raises(ValueError, match=message):
            write_dataset(str(tmp_path / 'x.jsonl'), [row])
        with open(str(tmp_path / 'y.jsonl'), 'w') as f:
            f.write(json.dumps(rows[1]) + '\n' + json.dumps(row) + '\n')
        with pytest.raises(ValueError, match='y.jsonl:2: not a latency dataset row: .*'
                           + message):
            read_dataset(str(tmp_path / 'y.jsonl'))

    bad(lambda r: r.pop('median_ms'), "missing 'median_ms'")
    bad(lambda r: r.update(p10_ms=r['median_ms'] * 2), 'needs p10_ms <= median_ms <= p90_ms')
    bad(lambda r: r.update(repeats=0), 'repeats must be an int >= 1, got 0')
    bad(lambda r: r.update(family='swin'), r"family must be one of \('vit', 'pit'\), got 'swin'")
    bad(lambda r: r.update(family='pit'), "family 'pit' does not match the arch, a vit spec")
    bad(lambda r: r.update(input_shape=[3, 224]), 'input_shape must be 3 positive ints')
    bad(lambda r: r['fingerprint'].update(threads=2), 'does not match the fingerprint')
    bad(lambda r: r.update(median_ms='fast'), "median_ms must be a positive finite number")
    bad(lambda r: r['arch'].pop('num_layers'), "arch: arch dict .* lacks 'num_layers'")
    with pytest.raises(ValueError, match='latency dataset not found: nope.jsonl'):
        read_dataset('nope.jsonl')
    (tmp_path / 'z.jsonl').write_text('{"a": \n')
    with pytest.raises(ValueError, match='z.jsonl:1: not JSON'):
        read_dataset(str(tmp_path / 'z.jsonl'))


def test_evaluate_splits_and_report(tmp_path):
    archs = _archs()
    y = _synthetic_latency(archs)
    data = evaluation.latencies(_dataset_rows(archs, y))
    assert list(data) == [('eager/1t', 'A')]
    d = data[('eager/1t', 'A')]
    assert d['families'].count('pit') == 5 and d['groups'].count('beyond') == 4
    res = evaluation.evaluate(d, train_frac=0.6, seed=0)
    sp = res['splits']
    assert len(sp['train']) == 16 and len(sp['random']) == 10
    assert sp['cross-family'] == list(range(30, 35)) and sp['out-of-range'] == [26, 27, 28, 29]
    rng = res['train_range']
    for i in sp['out-of-range']:  # really outside the training archs' range
        a = d['archs'][i]
        assert (not rng['depth'][0] <= a['num_layers'] <= rng['depth'][1]
                or not rng['width'][0] <= a['embed_dims'] <= rng['width'][1]
                or not rng['resolution'][0] <= a['img_size'][0] <= rng['resolution'][1])
    assert res['noise_floor_pct'] == 2.0
    assert set(res['kinds']) == {'analytic', 'kernel'}
    md = evaluation.markdown({('eager/1t', 'A'): res})
    assert '| eager/1t | A | 2.0 | kernel |' in md


def test_fit_tool_refits_from_the_dataset(tmp_path, capsys):
    archs = _archs()
    y = _synthetic_latency(archs)
    fp2 = dict(FP, backend='onnxruntime', onnxruntime='1.x')
    rows = _dataset_rows(archs, y) + _dataset_rows(archs, 1.5 * y, fp=fp2)
    path = str(tmp_path / 'ds.jsonl')
    write_dataset(path, rows)
    tool = _tool('fit_latency_predictor')
    out = str(tmp_path / 'out')
    summary = tool.main(['--from-dataset', path, '--out-dir', out, '--cal-sizes', '3', '5',
                         '--cal-draws', '2', '--stat', 'median_ms'])
    assert summary['stat'] == 'median_ms'
    kernel = summary['runs']['eager/1t A']['kinds']['kernel']
    assert kernel['metrics']['random']['mape'] < 1e-3  # noise-free synthetic latencies
    assert list(summary['calibration']) == ['eager/1t -> onnxruntime/1t (A)']
    assert sorted(os.listdir(out)) == sorted([
        'report.md', 'summary.json', 'scatter.png', 'calibration.png',
        'eager_1t_A_analytic.json', 'eager_1t_A_kernel.json',
        'onnxruntime_1t_A_analytic.json', 'onnxruntime_1t_A_kernel.json'])
    assert 'held-out MAPE' in capsys.readouterr().out
    loaded = load_predictor(osp.join(out, 'eager_1t_A_kernel.json'))
    assert loaded.predict(archs[0]) == pytest.approx(y[0], rel=1e-3)


@pytest.mark.parametrize('argv, message', [
    (['--from-dataset', 'no/such.jsonl'], '--from-dataset: latency dataset not found'),
    (['--threads', '1', '0'], '--threads: must be >= 1, got 0'),
    (['--clock', 'thread', '--threads', '2'], '--clock thread: needs --threads 1'),
    (['--backends', 'tvm'], "--backends: unknown backend 'tvm'"),
    (['--train-frac', '1.5'], '--train-frac: must be in (0, 1), got 1.5'),
    (['--num-core', '2'], '--num-core must be >= 4'),
])
def test_fit_tool_rejects_bad_input(argv, message, capsys):
    tool = _tool('fit_latency_predictor')
    with pytest.raises(SystemExit) as exc:
        tool.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_make_predictor_kinds():
    assert isinstance(make_predictor('analytic'), LatencyPredictor)
    assert isinstance(make_predictor('kernel'), KernelLatencyPredictor)
    with pytest.raises(ValueError, match="unknown predictor kind 'mlp'"):
        make_predictor('mlp')


# ---------------------------------------------------------------------------- device transfer
def test_device_transfer_noise_floor_column():
    from mmvitscale.experiments.device_ranking import collect, to_markdown, transfer_report
    fp_b = dict(FP, backend='onnxruntime')
    archs = _vits()[:4]
    rows = []
    # A: 10, 20, 30, 40 ms; B: 20.5, 20, 60, 80 ms -> archs 0 and 1 swap (2.5% apart on B)
    for fp, lat, noise in ((FP, [10, 20, 30, 40], 3.0), (fp_b, [20.5, 20, 60, 80], 4.0)):
        for a, ms in zip(archs, lat):
            rows.append(make_row(fp, 'vit', a.as_dict(), [3, *a.img_size], 1,
                                 dict(median_ms=ms, p10_ms=ms, p90_ms=ms, noise_pct=noise)))
    rep = transfer_report(collect(rows))
    pair = rep['pairs'][0]
    assert pair['noise_floor_pct'] == [3.0, 4.0]
    assert pair['discordant'] == 1 and pair['discordant_within_noise'] == 1
    assert pair['within_noise'] is True
    assert rep['settings'][0]['noise_source'] == 'round-to-round'
    md = to_markdown(rep)
    assert '| 3.0 / 4.0 | 1 (1) | all within noise |' in md
    assert '3.0 (round-to-round)' in md
    # without noise_pct, repeated rows give a run-to-run spread
    plain = [dict(r, noise_pct=None) for r in rows] + [
        dict(r, noise_pct=None, median_ms=r['median_ms'] * 1.5) for r in rows[:4]]
    m = collect(plain, reduce='median')
    assert m.noise_source[m.settings[0]] == 'run-to-run'
    assert m.noise_floor(m.settings[0]) == pytest.approx(100 * 0.5 / 1.25)


# ---------------------------------------------------------------------------- search check
def test_scale_search_measures_its_winners(tmp_path, capsys):
    tool = load_script('tools/scale_search.py')
    vits = _vits()
    pred = KernelLatencyPredictor(dict(fingerprint=dict(FP, threads=1)))
    pred.fit(vits, _synthetic_latency(vits))
    path = pred.save(str(tmp_path / 'p.json'))
    work = tmp_path / 'search'
    result = tool.main(['--cost', 'latency', '--predictor', path, '--budget', '1000',
                        '--scorer', 'flops', '--grid', 'depth_mult=0.5,1', '--grid',
                        'width_mult=0.5,1', '--only-grid', '--measure-winners', '2',
                        '--measure-rounds', '1', '--work-dir', str(work),
                        '--out-rule', str(tmp_path / 'rule.py')])
    assert result.winner.latency_ms is not None
    summary = json.loads((work / 'candidates.json').read_text())
    measured = summary['measured']
    assert len(measured) == 2 and measured[0]['rule'] == result.winner.rule
    for m in measured:
        assert m['backend'] == 'eager' and m['threads'] == 1 and m['repeats'] == 5
        assert m['clock'] == 'wall'
        assert m['p10_ms'] <= m['measured_ms'] <= m['p90_ms']
        assert m['meets_budget'] == (m['measured_ms'] <= 1000)
        assert m['error_pct'] == pytest.approx(
            100 * (m['predicted_ms'] - m['measured_ms']) / m['measured_ms'])
    assert '## Predicted vs measured (eager, 1 thread(s), budget 1000 ms)' in \
        (work / 'candidates.md').read_text()
    assert 'meets 1000 ms' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        tool.main(['--budget', '1', '--measure-winners', '2', '--out-rule',
                   str(tmp_path / 'r.py')])
    assert '--measure-winners: needs --cost latency' in capsys.readouterr().err


def test_two_runs_run_to_run_and_cross_run():
    archs = _archs()
    y = _synthetic_latency(archs)
    rows = _dataset_rows(archs, y, 'A') + _dataset_rows(archs, 1.02 * y, 'B')
    data = evaluation.latencies(rows)
    assert sorted(data) == [('eager/1t', 'A'), ('eager/1t', 'B')]
    runs = evaluation.run_to_run(data)
    assert runs['eager/1t']['n'] == len(archs)
    assert runs['eager/1t']['median_pct'] == pytest.approx(200 * 0.02 / 2.02)
    results = {k: evaluation.evaluate(d) for k, d in data.items()}
    crossed = evaluation.cross_run(data, results)
    assert sorted(crossed) == ['eager/1t: A -> B', 'eager/1t: B -> A']
    m = crossed['eager/1t: A -> B']['kernel']['random']
    assert m['n'] == 10 and m['mape'] == pytest.approx(100 * 0.02 / 1.02, rel=1e-3)
    md = evaluation.markdown(results, runs=runs, crossed=crossed)
    assert '| eager/1t | A / B | 35 | 2.0 |' in md and '| eager/1t: A -> B | kernel |' in md


def test_measure_interleaved_reports_cpu_share():
    def busy():
        sum(range(20000))

    res = measure_interleaved([(busy, lambda: None)], rounds=2, repeats=2, warmup_s=0,
                              clock='thread')
    assert res[0]['clock'] == 'thread' and isinstance(res[0]['cpu_share'], float)


@pytest.mark.parametrize('name, runs', [('cpu_amd_epyc_2core.jsonl', {'A', 'B'}),
                                        ('cpu_amd_epyc_2core_quiet.jsonl', {'C', 'D'})])
def test_shipped_latency_datasets_validate_and_cover_every_setting(name, runs):
    rows = read_dataset(osp.join(ROOT, 'data', 'latency', name))
    assert len(rows) == 368 and {r['run_id'] for r in rows} == runs
    settings = {(r['fingerprint']['backend'], r['fingerprint']['threads'], r['run_id'])
                for r in rows}
    assert len(settings) == 2 * 2 * len(runs)  # eager / onnxruntime x 1 / 2 threads x runs
    for s in settings:  # 30 core + 8 beyond + 8 PiT architectures in each
        assert sum((r['fingerprint']['backend'], r['fingerprint']['threads'], r['run_id']) == s
                   for r in rows) == 46
    assert all(r['p10_ms'] <= r['median_ms'] <= r['p90_ms'] for r in rows)
