"""Device-transfer report: Kendall tau, rankings / winners on synthetic tables, CLI errors."""
import json
import os.path as osp

import numpy as np
import pytest
from scipy import stats

from mmvitscale.cost.latency_table import append_rows, fingerprint_id
from mmvitscale.experiments.device_ranking import (TransferError, collect, kendall_tau,
                                                   transfer_report)
from scripts import load_script

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _tool():
    return load_script('tools/device_transfer.py')


def _fp(backend, device='cpu'):
    return dict(device='Test CPU', device_type=device, threads=1, torch='2.x',
                onnxruntime=None, backend=backend, machine='x86_64')


def _arch(width, depth=4):
    return dict(embed_dims=width, num_layers=depth, num_heads=2, mlp_ratio=4.0,
                img_size=[32, 32], patch_size=16)


def _rows(backend, latencies, widths=(32, 48, 64, 96, 128), labels=True):
    fp = _fp(backend)
    return [dict(fingerprint=fp, fingerprint_id=fingerprint_id(fp), family='vit',
                 arch=_arch(w), input_shape=[3, 32, 32], batch_size=1, median_ms=float(ms),
                 **(dict(label=f'w{w}') if labels else {}))
            for w, ms in zip(widths, latencies)]


@pytest.mark.parametrize('ties', [False, True])
def test_kendall_tau_matches_scipy(ties):
    rng = np.random.default_rng(0)
    for n in (3, 7, 30):
        x, y = rng.normal(size=n), rng.normal(size=n)
        if ties:
            x, y = np.round(x), np.round(y * 2)
        ref = stats.kendalltau(x, y, variant='b').statistic
        assert kendall_tau(x, y) == pytest.approx(ref, abs=1e-12)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert np.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match='2 vs 3 values'):
        kendall_tau([1, 2], [1, 2, 3])


def test_report_identical_reversed_and_winner_change():
    # FLOPs grow with width, so w128 is best when feasible; latencies set the rankings
    rows = (_rows('eager', [1, 2, 3, 4, 5]) + _rows('compile', [2, 4, 6, 8, 10])
            + _rows('onnxruntime', [5, 4, 3, 2, 1]))
    m = collect(rows)
    assert [m.names[f] for f in m.settings] == ['cpu/eager/1t', 'cpu/compile/1t',
                                                'cpu/onnxruntime/1t']
    rep = transfer_report(m, budget_quantiles=[0.5], budget_ms=[3.5])
    tau = {(p['a'], p['b']): p['tau'] for p in rep['pairs']}
    assert tau[('cpu/eager/1t', 'cpu/compile/1t')] == pytest.approx(1.0)
    assert tau[('cpu/eager/1t', 'cpu/onnxruntime/1t')] == pytest.approx(-1.0)
    assert tau[('cpu/compile/1t', 'cpu/onnxruntime/1t')] == pytest.approx(-1.0)
    assert np.allclose(np.diag(rep['tau_matrix']['values']), 1.0)
    q50, ms35 = rep['budgets']
    # median budget: eager 3 ms / compile 6 ms -> w64; onnxruntime 3 ms -> w128 (1 ms)
    assert q50['name'] == 'q0.5'
    assert {k: v['winner'] for k, v in q50['per_setting'].items()} == {
        'cpu/eager/1t': 'w64', 'cpu/compile/1t': 'w64', 'cpu/onnxruntime/1t': 'w128'}
    assert q50['per_setting']['cpu/compile/1t']['budget_ms'] == pytest.approx(6.0)
    assert q50['winner_changes'] and q50['winners'] == ['w128', 'w64']
    # 3.5 ms everywhere: eager w64, compile (2, 4, ...) only w32, onnxruntime w128
    assert [v['winner'] for v in ms35['per_setting'].values()] == ['w64', 'w32', 'w128']
    assert ms35['per_setting']['cpu/compile/1t']['n_feasible'] == 1
    moved = {(t['source'], t['target']): t for t in ms35['transfer']}
    t = moved[('cpu/onnxruntime/1t', 'cpu/eager/1t')]
    assert t['winner'] == 'w128' and t['latency_on_target_ms'] == 5.0
    assert not t['feasible_on_target']
    # same rankings and budgets that scale with them: the winner does not change
    same = transfer_report(collect(_rows('eager', [1, 2, 3, 4, 5])
                                   + _rows('compile', [2, 4, 6, 8, 10])))
    assert not same['budgets'][0]['winner_changes']
    assert same['budgets'][0]['winners'] == ['w64']


def test_collect_reduces_repeats_and_pairwise_shared():
    rows = _rows('eager', [1, 2, 3, 4, 5]) + _rows('eager', [0.5, 9, 9, 9, 9])
    rows += _rows('onnxruntime', [1, 2, 3, 4], widths=(32, 48, 64, 96), labels=False)
    m = collect(rows)
    eager = m.settings[0]
    assert sorted(m.latency[eager].values()) == [0.5, 2, 3, 4, 5]  # min of repeats
    assert len(m.shared()) == 4
    med = collect(rows, reduce='median')
    assert sorted(med.latency[eager].values())[0] == pytest.approx(0.75)
    rep = transfer_report(m)
    assert rep['n_shared'] == 4 and rep['pairs'][0]['n'] == 4
    assert 'w128' not in rep['budgets'][0]['winners']


def test_errors():
    with pytest.raises(TransferError, match=r'^need latency rows of at least 2 \(device, '
                       r'backend\) fingerprints, found 1: [0-9a-f]{16} \(cpu/eager/1t\)$'):
        transfer_report(collect(_rows('eager', [1, 2, 3])))
    two = _rows('eager', [1, 2, 3]) + _rows('onnxruntime', [1, 2], widths=(32, 96))
    with pytest.raises(TransferError) as err:
        transfer_report(collect(two))
    assert str(err.value) == ('only 1 architecture(s) measured on all 2 fingerprints, need at '
                              'least 3 (archs per fingerprint: cpu/eager/1t: 3, '
                              'cpu/onnxruntime/1t: 2)')
    with pytest.raises(TransferError, match="--fingerprints: 'zz' matches no fingerprint"):
        collect(two, fingerprints=['zz'])


def _run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        _tool().main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_cli_errors_before_work(tmp_path, capsys):
    table = str(tmp_path / 't.jsonl')
    append_rows(table, _rows('eager', [1, 2, 3, 4, 5]))
    out = str(tmp_path / 'out')
    prog = 'device_transfer.py: error: '
    assert _run_cli([], capsys) == prog + 'give one or more latency TABLEs, or --measure'
    assert _run_cli([table, str(tmp_path / 'nope.jsonl')], capsys) == (
        prog + f'TABLE: file not found: {tmp_path / "nope.jsonl"}')
    assert _run_cli([table, '--scores', 'missing.json'], capsys) == (
        prog + '--scores: file not found: missing.json')
    assert _run_cli([table, '--budget-quantile', '1.5'], capsys) == (
        prog + '--budget-quantile: must be in [0, 1], got 1.5')
    assert _run_cli([table, '--out-dir', out], capsys).startswith(
        prog + 'need latency rows of at least 2 (device, backend) fingerprints, found 1')
    assert _run_cli(['--measure', '--rules', 'no_rule.py'], capsys) == (
        prog + '--rules: rule file not found: no_rule.py')
    assert _run_cli(['--measure', '--backends', 'eager', '--num-random', '3', '--table',
                     str(tmp_path / 'm.jsonl')], capsys).startswith(
        prog + '--backends: need latency rows of at least 2 (device, backend) fingerprints')
    assert _run_cli(['--measure', '--backends', 'eager', 'compile', '--compile-max-archs', '2'],
                    capsys) == (prog + '--compile-max-archs: must be >= 3 (archs shared by all '
                                'settings), got 2')
    assert not osp.exists(out) and not osp.exists(tmp_path / 'm.jsonl')


def test_cli_writes_report(tmp_path, capsys):
    table = str(tmp_path / 't.jsonl')
    append_rows(table, _rows('eager', [1, 2, 3, 4, 5]) + _rows('onnxruntime', [5, 4, 3, 2, 1]))
    scores = tmp_path / 'scores.json'
    scores.write_text(json.dumps({'w32': 10, 'w48': 1, 'w64': 1, 'w96': 1, 'w128': 0}))
    out = tmp_path / 'out'
    rep = _tool().main([table, '--budget-ms', '5', '--scores', str(scores), '--out-dir',
                        str(out), '--name', 'r'])
    assert sorted(p.name for p in out.iterdir()) == ['r.json', 'r.md', 'r.png']
    assert (out / 'r.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    saved = json.loads((out / 'r.json').read_text())
    assert saved['pairs'][0]['tau'] == pytest.approx(-1.0)
    assert saved['budgets'][0]['winners'] == ['w32']  # the score file, not FLOPs, decides
    assert not saved['budgets'][0]['winner_changes']
    assert rep['score'].startswith('scores:')
    md = (out / 'r.md').read_text()
    assert '| cpu/eager/1t | cpu/onnxruntime/1t | 5 | -1.000 |' in md
    assert 'same winner everywhere: w32' in md


# ---------------------------------------------------------------------------- package API
def _rule(name):
    return osp.join(ROOT, 'configs', '_base_', 'scaling', f'{name}.py')


def test_plan_archs_seeded_and_deduplicated():
    from mmvitscale.experiments.device_measure import MeasureSpec, plan_archs
    files = [_rule('deit_tiny_shape'), _rule('deeper_narrower'), _rule('deit_tiny_shape')]
    spec = MeasureSpec(rules=files, num_random=3, seed=1)
    assert spec.rules == tuple(files)
    archs = plan_archs(spec)
    assert archs == plan_archs(MeasureSpec(rules=files, num_random=3, seed=1))
    labels = [label for label, _ in archs]
    assert labels[:2] == ['deit_tiny_shape', 'deeper_narrower']  # the repeated file is skipped
    assert archs[0][1] == {} and len(archs) == 5
    assert all(label.startswith(f'rand{i}(') for i, label in enumerate(labels[2:]))
    other = plan_archs(MeasureSpec(rules=files, num_random=3, seed=2))
    assert other[:2] == archs[:2] and other[2:] != archs[2:]
    assert len(MeasureSpec().rules) >= 3  # default: every configs/_base_/scaling/*.py


def test_package_checks_name_the_argument(tmp_path):
    from mmvitscale.experiments.device_measure import MeasureSpec, check_measure_spec
    from mmvitscale.errors import InputError
    from mmvitscale.experiments.device_ranking import check_report_inputs
    files = [_rule('deit_tiny_shape'), _rule('deeper_narrower'), _rule('wider_shallower')]
    check_measure_spec(MeasureSpec(rules=files, num_random=0, backends=['eager', 'compile']))
    cases = [(dict(rules=['no_rule.py']), ('rules', ), 'rules: rule file not found: no_rule.py'),
             (dict(threads=0), ('threads', ), 'threads: must be >= 1, got 0'),
             (dict(warmup=-0.5), ('warmup', ), 'warmup: must be >= 0, got -0.5'),
             (dict(rules=files[:1], num_random=1), ('rules', 'num_random'),
              'rules / num_random: 1 rule file(s) + 1 random rule(s) give fewer than 3 '
              'architectures'),
             (dict(backends=['eager', 'tpu']), ('backends', ), "backends: unknown backend 'tpu'"),
             (dict(backends=['eager', 'compile'], compile_max_archs=2), ('compile_max_archs', ),
              'compile_max_archs: must be >= 3'),
             (dict(backends=['eager']), ('backends', ),
              'backends: need latency rows of at least 2 (device, backend) fingerprints')]
    for kwargs, names, message in cases:
        spec = MeasureSpec(**{**dict(rules=files, num_random=0), **kwargs})
        with pytest.raises(InputError) as err:
            check_measure_spec(spec)
        assert isinstance(err.value, ValueError) and err.value.names == names
        assert str(err.value).startswith(message)
    # restricting the report to given fingerprints leaves the 2-settings check to the report
    check_measure_spec(MeasureSpec(rules=files, num_random=0, backends=['eager']),
                       fingerprints=['abc'])
    assert check_report_inputs([]) == [0.5]
    assert check_report_inputs([], budget_ms=[40]) == []
    assert check_report_inputs([], budget_quantiles=[0.25, 1]) == [0.25, 1.0]
    with pytest.raises(InputError, match=r'^budget_ms: must be > 0, got -1$'):
        check_report_inputs([], budget_ms=[-1])
    with pytest.raises(InputError) as err:
        check_report_inputs([str(tmp_path / 'nope.jsonl')])
    assert err.value.format(str.upper) == f'TABLES: file not found: {tmp_path / "nope.jsonl"}'


def test_measure_archs_tiny(tmp_path, tiny_arch):
    from mmvitscale.cost.latency_table import read_rows
    from mmvitscale.experiments.device_measure import MeasureSpec, measure_archs, plan_archs
    spec = MeasureSpec(rules=[_rule('deit_tiny_shape')], num_random=0, arch=tiny_arch,
                       img_size=32, patch_size=16, backends=['eager'], rounds=1, repeats=2,
                       warmup=0.0)
    archs = plan_archs(spec)
    assert [label for label, _ in archs] == ['deit_tiny_shape']
    table, seen = str(tmp_path / 'm.jsonl'), []
    info = measure_archs(spec, table, archs, on_result=lambda *a: seen.append(a[:2]))
    assert seen == [('deit_tiny_shape', 'eager')]
    assert info['archs'] == ['deit_tiny_shape'] and info['failures'] == []
    (row, ) = read_rows(table)
    assert row['label'] == 'deit_tiny_shape' and row['source'] == 'device_transfer'
    assert row['median_ms'] > 0 and row['arch']['embed_dims'] == 32
    assert row['fingerprint']['backend'] == 'eager'
