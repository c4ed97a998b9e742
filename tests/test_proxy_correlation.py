"""tools/proxy_correlation.py and mmvitscale.experiments.proxy_correlation: sampling, Kendall /
rank combination, resume log, end to end."""
import json
import math
import os.path as osp
import sys

import pytest

from mmvitscale.experiments import proxy_correlation as study

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))

import proxy_correlation as pc  # noqa: E402


def test_sample_rules_distinct_seeded_and_base_first():
    a = study.sample_rules(12, seed=3)
    assert a == study.sample_rules(12, seed=3)
    assert a != study.sample_rules(12, seed=4)
    assert len(a) == 12
    archs = [json.dumps(study.arch_of(r), sort_keys=True) for r in a]
    assert len(set(archs)) == 12
    assert study.arch_of(a[0]) == dict(depth=6, width=64, heads=2, mlp_ratio=4.0,
                                       patch_size=4, img_size=[32, 32])
    assert all(r['patch_size'] in (4, 8) and study.arch_of(r)['img_size'] == [32, 32]
               for r in a)
    everything = study.sample_rules(10**6)
    assert 1 < len(everything) <= 3 * 4 * 3 * 2 * 2


def test_kendall_and_rank_combination_on_synthetic_data():
    acc = [50.0, 60.0, 70.0, 80.0, 90.0]
    assert study.kendall([1, 2, 3, 4, 5], acc)['tau'] == pytest.approx(1.0)
    assert study.kendall([5, 4, 3, 2, 1], acc)['tau'] == pytest.approx(-1.0)
    assert math.isnan(study.kendall([1, 1, 1, 1, 1], acc)['tau'])
    assert math.isnan(study.kendall([1.0], [2.0])['tau'])

    # kappa falls and length rises with accuracy: both proxies and their rank sum agree
    kappa = [500.0, 400.0, 300.0, 200.0, 100.0]
    length = [1.0, 2.0, 3.0, 4.0, 5.0]
    sc = study.proxy_scores(kappa, length)
    assert sc['rank_ntk'] == [4, 3, 2, 1, 0] and sc['rank_length'] == [4, 3, 2, 1, 0]
    assert sc['combined'] == [-8, -6, -4, -2, 0]
    recs = [dict(accuracy=a, ntk_condition=k, length_distortion=L, params_m=1.0 + i)
            for i, (a, k, L) in enumerate(zip(acc, kappa, length))]
    corr = study.correlations(recs)
    assert corr['ntk_condition']['tau'] == pytest.approx(-1.0)
    assert corr['length_distortion']['tau'] == pytest.approx(1.0)
    assert corr['combined']['tau'] == pytest.approx(1.0)
    assert corr['params']['tau'] == pytest.approx(1.0)

    # a singular NTK (inf) counts as the worst kappa; a useless length proxy dilutes the sum
    kappa[0] = float('inf')
    recs = [dict(accuracy=a, ntk_condition=k, length_distortion=L)
            for a, k, L in zip(acc, kappa, [3.0, 1.0, 5.0, 2.0, 4.0])]
    corr = study.correlations(recs)
    assert corr['ntk_condition']['tau'] == pytest.approx(-1.0)
    assert corr['length_distortion']['tau'] == pytest.approx(0.2)
    assert 0.2 < corr['combined']['tau'] < 1.0
    assert 'params' not in corr


def _fakes(calls):
    def fake_train(rule, spec, work_dir, seed):
        calls.append((study.rule_key(rule), seed))
        arch = study.arch_of(rule)
        # depth decides, width breaks ties; the seed shifts everything a little
        return dict(accuracy=10.0 + arch['depth'] + arch['width'] / 100 + 0.01 * seed,
                    params_m=0.1, train_s=0.0, eval_s=0.0)

    def fake_proxy(rule, spec):
        calls.append((study.rule_key(rule), 'proxy'))
        arch = study.arch_of(rule)
        return dict(ntk_condition=100.0 / arch['depth'], length_distortion=float(arch['width']),
                    proxy_s=0.0)
    return fake_train, fake_proxy


def test_resume_log_skips_finished_trainings_and_scores(tmp_path, capsys):
    calls = []
    fake_train, fake_proxy = _fakes(calls)
    argv = ['--num-archs', '4', '--train-seeds', '0', '1', '--out-dir', str(tmp_path)]
    first = pc.main(argv, train_fn=fake_train, proxy_fn=fake_proxy)
    keys = [r['key'] for r in first['runs']]
    # every proxy first, then the trainings seed-major
    assert calls == [(k, 'proxy') for k in keys] + [(k, 0) for k in keys] + [(k, 1) for k in keys]
    assert first['meta']['resumed'] == 0
    log = tmp_path / study.LOG_NAME
    assert len(log.read_text().splitlines()) == 4 + 2 * 4
    assert [r['train_seeds'] for r in first['runs']] == [[0, 1]] * 4
    assert first['runs'][0]['accuracies'] == pytest.approx([16.64, 16.65])
    assert first['runs'][0]['accuracy'] == pytest.approx(16.645)
    out = capsys.readouterr().out
    assert '4 architectures x (2 training seed(s) + proxies): 12 of 12 to run' in out
    assert '[1/12] arch 1/4 d6 w64 h2 mlp4 p4 kappa' in out
    assert '[5/12] arch 1/4 d6 w64 h2 mlp4 p4 seed 0: top-1 16.64%' in out
    assert 'ETA' in out and out.rstrip().count('done') >= 1

    # a killed run: one torn line at the end is ignored, not fatal
    with open(log, 'a') as f:
        f.write('{"key": "torn')
    calls.clear()
    second = pc.main(argv, train_fn=fake_train, proxy_fn=fake_proxy)
    assert calls == [] and second['meta']['resumed'] == 12
    assert [r['key'] for r in second['runs']] == keys

    # one more seed: only its trainings run; more archs: only theirs
    pc.main(argv[:3] + ['1', '2'] + argv[5:], train_fn=fake_train, proxy_fn=fake_proxy)
    assert calls == [(k, 2) for k in keys]
    calls.clear()
    pc.main(['--num-archs', '5', '--train-seeds', '0', '--out-dir', str(tmp_path)],
            train_fn=fake_train, proxy_fn=fake_proxy)
    assert len(calls) == 2 and calls[0][1] == 'proxy' and calls[1][1] == 0
    # the torn tail was cut, so the records after it are whole lines, not glued to it
    assert all(json.loads(line)['kind'] in ('proxy', 'train') for line in
               log.read_text().splitlines())

    # other training settings are not the same experiment: train again, proxies kept
    calls.clear()
    pc.main(argv + ['--epochs', '7'], train_fn=fake_train, proxy_fn=fake_proxy)
    assert sorted(c[1] for c in calls) == [0] * 4 + [1] * 4
    # another proxy seed is another sample and other proxy scores
    calls.clear()
    pc.main(argv + ['--seed', '1'], train_fn=fake_train, proxy_fn=fake_proxy)
    assert sum(c[1] == 'proxy' for c in calls) == 4

    rep = json.loads((tmp_path / 'proxy_correlation.json').read_text())
    assert rep['correlation']['ntk_condition']['n'] == 4
    assert (tmp_path / 'proxy_correlation.png').stat().st_size > 0
    md = (tmp_path / 'proxy_correlation.md').read_text()
    assert 'Kendall tau' in md and 'Seed-to-seed ceiling' in md and '95% interval' in md
    resumed = rep['meta']['resumed']
    assert 0 < resumed < 12 and f'({resumed} of them taken from the resume log)' in md
    assert 'resumed: 12 training(s) / proxy score(s)' in capsys.readouterr().out


def test_report_intervals_per_seed_taus_and_seed_ceiling():
    """Two seeds that rank the archs differently: the ceiling, per-seed taus and the goal
    verdict follow from the intervals."""
    acc0 = [50.0, 60.0, 70.0, 80.0, 90.0, 95.0]
    acc1 = [60.0, 50.0, 70.0, 80.0, 95.0, 90.0]  # two swaps against seed 0
    kappa = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]  # ranks exactly as seed 0
    recs = [study.merge_records(
        dict(key=str(i), rule={}, arch=dict(patch_size=4), ntk_condition=k,
             length_distortion=float(i)),
        [dict(train_seed=0, accuracy=a, params_m=1.0),
         dict(train_seed=1, accuracy=b, params_m=1.0)])
        for i, (k, a, b) in enumerate(zip(kappa, acc0, acc1))]
    assert recs[0]['accuracy'] == 55.0 and recs[0]['accuracies'] == [50.0, 60.0]
    from scipy import stats as sps
    lo, hi = sps.t.interval(0.95, 1, loc=55.0, scale=sps.sem([50.0, 60.0]))
    assert recs[0]['accuracy_ci95'] == pytest.approx([lo, hi])
    rep = study.build_report(recs, dict(seed=0), draws=500)
    tau01 = sps.kendalltau(acc0, acc1).statistic
    assert rep['seed_agreement']['mean_tau'] == pytest.approx(tau01)
    assert rep['seed_agreement']['pairs'][0]['seeds'] == [0, 1]
    ntk = rep['correlation']['ntk_condition']
    assert ntk['per_seed'] == pytest.approx([-1.0, -tau01])
    mean = [(a + b) / 2 for a, b in zip(acc0, acc1)]
    assert ntk['tau'] == pytest.approx(-sps.kendalltau(mean, range(6)).statistic)
    assert ntk['ci95'][0] <= ntk['tau'] <= ntk['ci95'][1]
    comb = rep['correlation']['combined']
    assert rep['goal']['verdict'] == study.goal_verdict(comb)
    # one patch size: the group's numbers are the pooled ones, interval and per seed included
    assert rep['within_patch_size'] == {'patch_size=4': rep['correlation']}
    assert study.goal_verdict(dict(ci95=[0.55, 0.9])) == 'met'
    assert study.goal_verdict(dict(ci95=[0.1, 0.45])) == 'not met'
    assert study.goal_verdict(dict(ci95=[0.3, 0.7])) == 'inconclusive'
    assert study.goal_verdict(dict(ci95=[math.nan, math.nan])) == 'inconclusive'


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        pc.parse_args(['--num-archs', '0'])
    assert '--num-archs must be >= 1, got 0' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pc.parse_args(['--workers', '-1'])
    assert '--workers must be >= 0' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pc.parse_args(['--train-seeds', '1', '1'])
    err = capsys.readouterr().err
    assert '--train-seeds must be distinct integers >= 0, got [1, 1]' in err
    with pytest.raises(SystemExit):
        pc.parse_args(['--seed', '-2'])
    assert '--seed must be >= 0, got -2' in capsys.readouterr().err
    # the package names the field; nothing runs before the check
    from mmvitscale.errors import InputError
    with pytest.raises(InputError) as err:
        study.check_spec(study.CorrelationSpec(proxy_points=0))
    assert err.value.names == ('proxy_points', ) and err.value.detail == 'must be >= 1, got 0'

    def boom(*args):
        raise AssertionError('work started before the inputs were checked')

    with pytest.raises(SystemExit):
        pc.main(['--epochs', '0', '--out-dir', str(tmp_path / 'out')], train_fn=boom,
                proxy_fn=boom)
    assert not (tmp_path / 'out').exists()


def test_rule_sampling_shares_one_distinct_filter():
    from mmvitscale.experiments import device_measure
    from mmvitscale.search import rule_sampling

    def resolve(rule):  # depth 0.5 is infeasible; width alone decides the arch
        if rule.get('depth_mult') == 0.5:
            raise ValueError('infeasible')
        return rule.get('width_mult', 1.0)

    grid = dict(depth_mult=(0.5, 1.0), width_mult=(0.5, 1.0, 2.0))
    perm = rule_sampling.sample_grid_rules(resolve, 10, grid, seed=1)
    assert sorted(r['width_mult'] for r in perm) == [0.5, 1.0, 2.0]  # fewer: space exhausted
    assert all(r['depth_mult'] == 1.0 for r in perm)  # every key kept, infeasible skipped
    first = dict(depth_mult=1.0, width_mult=2.0)
    assert rule_sampling.sample_grid_rules(resolve, 2, grid, seed=1, first=first)[0] == first
    drawn = device_measure.sample_rules(resolve, 2, seed=1, exclude=[1.0], grid=grid)
    assert len(drawn) == 2 and {r['width_mult'] for r in drawn} == {0.5, 2.0}
    assert all('depth_mult' not in r for r in drawn)  # multipliers of 1 left out
    with pytest.raises(ValueError, match='could only sample 2 of 3'):
        device_measure.sample_rules(resolve, 3, seed=1, exclude=[1.0], grid=grid)


@pytest.mark.slow
def test_tiny_end_to_end(tmp_path):
    from mmvitscale import datasets
    try:  # a clean checkout has no data/: lay Fashion-MNIST out in a temp folder
        datasets.prepare_classification(str(tmp_path / 'data' / 'fashion_mnist'))
    except datasets.FashionMNISTNotFoundError as err:
        pytest.skip(str(err))
    rep = pc.main(['--num-archs', '2', '--train', '64', '--val', '64', '--epochs', '1',
                   '--train-seeds', '0', '1', '--out-dir', str(tmp_path / 'out'),
                   '--data-root', str(tmp_path / 'data')])
    tmp_path = tmp_path / 'out'
    assert len(rep['runs']) == 2
    for r in rep['runs']:
        assert r['train_seeds'] == [0, 1] and len(r['accuracies']) == 2
        assert 0.0 <= r['accuracy'] <= 100.0
        assert r['ntk_condition'] > 1.0 and r['length_distortion'] > 0.0
    assert set(rep['correlation']) == {'ntk_condition', 'length_distortion', 'combined',
                                       'params'}
    for name in ('proxy_correlation.json', 'proxy_correlation.md', 'proxy_correlation.png',
                 'runs.jsonl'):
        assert (tmp_path / name).stat().st_size > 0
