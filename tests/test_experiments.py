"""Experiments layer: statistics against scipy, verdicts, the results store, resume after
SIGKILL, parallel == sequential, and the transfer tool end to end on a tiny study."""
import json
import math
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats as sps

from mmvitscale.experiments import (ResultStore, StoreError, kendall_tau, paired_interval,
                                    paired_t_test, ranks, summarize, t_interval, to_markdown,
                                    verdict)
from mmvitscale.experiments.stats import Interval
from mmvitscale.experiments.trial import Trial
from scripts import load_script

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(ROOT, 'tools', 'transfer.py')


# ---------------------------------------------------------------------------- statistics
@pytest.mark.parametrize('n', [2, 3, 5, 10])
def test_t_interval_matches_scipy(n):
    x = np.random.default_rng(n).normal(50, 3, size=n)
    iv = t_interval(x)
    lo, hi = sps.t.interval(0.95, n - 1, loc=x.mean(), scale=sps.sem(x))
    assert (iv.mean, iv.low, iv.high) == pytest.approx((x.mean(), lo, hi), rel=1e-12)
    assert iv.half_width == pytest.approx((hi - lo) / 2) and iv.n == n
    lo90, hi90 = sps.t.interval(0.9, n - 1, loc=x.mean(), scale=sps.sem(x))
    assert t_interval(x, 0.9).low == pytest.approx(lo90, rel=1e-12)


def test_t_interval_edge_cases():
    one = t_interval([3.0])
    assert one.mean == 3.0 and math.isnan(one.low) and math.isnan(one.half_width)
    flat = t_interval([2.0, 2.0, 2.0])
    assert (flat.low, flat.high) == (2.0, 2.0)
    with pytest.raises(ValueError, match='t_interval: needs at least one value'):
        t_interval([])
    with pytest.raises(ValueError, match=r'values must be finite, got \[1.0, nan\]'):
        t_interval([1.0, float('nan')])
    with pytest.raises(ValueError, match='confidence must be in'):
        t_interval([1.0, 2.0], confidence=95)


@pytest.mark.parametrize('seed', range(4))
def test_paired_difference_matches_ttest_rel(seed):
    rng = np.random.default_rng(seed)
    base = rng.normal(60, 5, size=5)
    rule = base + rng.normal(0.8, 1.0, size=5)  # shared per-seed noise cancels
    ref = sps.ttest_rel(rule, base)
    test = paired_t_test(rule, base)
    assert test['statistic'] == pytest.approx(ref.statistic, rel=1e-10)
    assert test['p_value'] == pytest.approx(ref.pvalue, rel=1e-10)
    d = rule - base
    iv = paired_interval(rule, base)
    lo, hi = sps.t.interval(0.95, 4, loc=d.mean(), scale=sps.sem(d))
    assert (iv.low, iv.high) == pytest.approx((lo, hi), rel=1e-10)
    # the interval excludes 0 exactly when the paired test rejects at 5%
    assert (iv.low > 0 or iv.high < 0) == (ref.pvalue < 0.05)
    with pytest.raises(ValueError, match='2 treatment vs 3 baseline'):
        paired_interval([1, 2], [1, 2, 3])


@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('n', [2, 3, 4, 8, 20, 33, 34, 60])
def test_kendall_tau_and_p_value_match_scipy(n, ties):
    rng = np.random.default_rng(n + 100 * ties)
    for _ in range(3):
        x = rng.normal(size=n)
        y = 0.5 * x + rng.normal(size=n)
        if ties:
            x, y = np.round(x), np.round(y * 2)
        ref = sps.kendalltau(x, y)
        got = kendall_tau(x, y)
        if math.isnan(ref.statistic):
            assert math.isnan(got.tau) and math.isnan(got.p_value)
            continue
        assert got.tau == pytest.approx(ref.statistic, abs=1e-12)
        assert got.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)
        assert got.method == ('exact' if not ties and n <= 33 else got.method)


def test_kendall_tau_special_cases():
    perfect = kendall_tau(range(40), range(40))  # n > 33, no swaps: exact distribution
    ref = sps.kendalltau(range(40), range(40))
    assert perfect.tau == 1.0 and perfect.method == 'exact'
    assert perfect.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert kendall_tau([1, 2, 3], [3, 2, 1]).tau == -1.0
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]).tau)
    assert math.isnan(kendall_tau([1.0], [2.0]).p_value)
    assert math.isnan(kendall_tau([1, 2, float('nan')], [1, 2, 3]).tau)
    with pytest.raises(ValueError, match='2 vs 3 values'):
        kendall_tau([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match='ties found'):
        kendall_tau([1, 1, 2], [1, 2, 3], method='exact')


def test_kendall_interval_is_scipys_percentile_bootstrap():
    from mmvitscale.experiments.stats import kendall_interval
    rng = np.random.default_rng(7)
    x = rng.normal(size=30)
    y = 0.6 * x + rng.normal(size=30)
    got = kendall_interval(x, y, draws=4000, seed=1)
    ref = sps.bootstrap((x, y), lambda a, b: sps.kendalltau(a, b).statistic, paired=True,
                        vectorized=False, n_resamples=4000, method='percentile',
                        random_state=np.random.default_rng(2)).confidence_interval
    # two Monte-Carlo estimates of the same quantiles: agree to their sampling error
    assert (got['low'], got['high']) == pytest.approx((ref.low, ref.high), abs=0.03)
    assert got['low'] < kendall_tau(x, y).tau < got['high']
    assert got == kendall_interval(x, y, draws=4000, seed=1)  # seeded
    perfect = kendall_interval(range(10), range(10), draws=50)
    assert (perfect['low'], perfect['high'], perfect['undefined']) == pytest.approx((1, 1, 0))
    # three items: some draws repeat one item on a side, their tau is undefined and left out
    small = kendall_interval([1, 2, 3], [1, 3, 2], draws=200)
    assert 0 < small['undefined'] < 200 and -1 <= small['low'] <= small['high'] <= 1
    assert math.isnan(kendall_interval([1, 2], [1, 2])['low'])
    assert math.isnan(kendall_interval([1, 1, 1], [1, 2, 3])['high'])
    with pytest.raises(ValueError, match='draws must be a positive integer, got 0'):
        kendall_interval(x, y, draws=0)
    with pytest.raises(ValueError, match='confidence must be in'):
        kendall_interval(x, y, confidence=1.5)


def test_tau_over_seeds_and_seed_agreement_match_scipy():
    from mmvitscale.experiments.stats import seed_agreement, tau_over_seeds
    rng = np.random.default_rng(3)
    x = rng.normal(size=12)
    per_seed = [x + rng.normal(scale=0.5, size=12) for _ in range(3)]
    got = tau_over_seeds(x, per_seed, draws=300)
    ref = sps.kendalltau(x, np.mean(per_seed, axis=0))
    assert (got['tau'], got['p'], got['n']) == pytest.approx((ref.statistic, ref.pvalue, 12))
    assert got['per_seed'] == pytest.approx([sps.kendalltau(x, v).statistic for v in per_seed])
    assert got['ci95'][0] <= got['tau'] <= got['ci95'][1]
    agree = seed_agreement(per_seed, [4, 5, 6])
    assert [p['seeds'] for p in agree['pairs']] == [[4, 5], [4, 6], [5, 6]]
    pairs = ((0, 1), (0, 2), (1, 2))
    taus = [sps.kendalltau(per_seed[a], per_seed[b]).statistic for a, b in pairs]
    assert agree['mean_tau'] == pytest.approx(np.mean(taus))
    assert math.isnan(seed_agreement(per_seed[:1], [0])['mean_tau'])
    with pytest.raises(ValueError, match=r'every seed needs 12 values, got \[12, 11\]'):
        tau_over_seeds(x, [per_seed[0], per_seed[1][:11]])
    with pytest.raises(ValueError, match='3 value lists for 2 seeds'):
        seed_agreement(per_seed, [0, 1])


def test_ranks_match_scipy_and_put_non_finite_last():
    v = [3.0, 1.0, 2.0, 1.0, 5.0]
    assert ranks(v, higher_is_better=False) == list(sps.rankdata(v) - 1)
    assert ranks(v, higher_is_better=True) == list(sps.rankdata([-x for x in v]) - 1)
    assert ranks(v, higher_is_better=False, method='ordinal') == [3.0, 0.0, 2.0, 1.0, 4.0]
    assert ranks([1.0, float('inf'), float('nan'), 0.5], higher_is_better=True) == \
        [0.0, 2.5, 2.5, 1.0]
    w = [3.0, 1.0, 2.0, 1.0, 5.0, 2.0, 7.0]
    for higher in (False, True):
        assert ranks(w, higher_is_better=higher, method='dense') == list(
            sps.rankdata([-x if higher else x for x in w], method='dense') - 1)
    assert ranks([2.0, float('nan'), 1.0, 2.0], method='dense') == [0.0, 2.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="method must be 'average', 'ordinal' or 'dense', "
                                         "got 'min'"):
        ranks([1.0], method='min')


def test_search_and_tools_use_the_one_kendall_and_ranks():
    from mmvitscale.experiments import stats
    from mmvitscale.experiments import device_ranking
    from mmvitscale.search import rule_search
    assert rule_search.ranks is stats.ranks
    assert device_ranking.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == \
        stats.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]).tau
    k = device_ranking.kendall_with_p([1, 2, 3, 4, 5], [1, 3, 2, 5, 4])
    assert k.p_value == pytest.approx(sps.kendalltau([1, 2, 3, 4, 5], [1, 3, 2, 5, 4]).pvalue)
    for rel in ('tools/proxy_correlation.py', 'tools/supernet_scorer.py'):
        src = open(osp.join(ROOT, rel)).read()
        assert 'scipy.stats import kendalltau' not in src, rel


def _iv(diffs):
    return t_interval(diffs)


def test_verdict_words_follow_the_interval():
    better = verdict(_iv([1.1, 0.9, 1.3, 1.0]))
    assert better['verdict'] == 'better' and better['text'].startswith('better: +1.07 points')
    worse = verdict(_iv([-2.0, -1.5, -2.5]))
    assert worse['verdict'] == 'worse' and '95% interval -3.24 to -0.76' in worse['text']
    # a bigger mean but a noisy one: the interval holds 0, so no claim either way
    noisy = verdict(_iv([4.0, -1.0, 3.0]))
    assert noisy['verdict'] == 'inconclusive'
    assert noisy['text'].endswith(f"(+-{noisy['half_width']:.2f} points)")
    one = verdict(_iv([5.0]))
    assert one['verdict'] == 'inconclusive' and 'no interval' in one['text']
    edge = verdict(Interval(1.0, 0.0, 2.0, 3, 1.0))  # touching 0 does not exclude it
    assert edge['verdict'] == 'inconclusive'


@pytest.mark.parametrize('m', [1, 2, 3, 6])
def test_compare_gives_the_95_and_the_bonferroni_interval_as_scipy_does(m):
    from mmvitscale.experiments.stats import compare
    d = np.array([0.75, 0.25, 0.6, 0.4])
    c = compare(d, family_size=m)
    assert c['diff_mean'] == pytest.approx(d.mean())
    assert c['ci95'] == pytest.approx(list(sps.t.interval(0.95, 3, loc=d.mean(),
                                                          scale=sps.sem(d))))
    level = 1 - 0.05 / m
    assert c['family_confidence'] == pytest.approx(level) and c['family_size'] == m
    assert c['ci_family'] == pytest.approx(list(sps.t.interval(level, 3, loc=d.mean(),
                                                               scale=sps.sem(d))))
    p = sps.ttest_1samp(d, 0.0).pvalue
    assert c['p_value'] == pytest.approx(p) and c['p_adjusted'] == pytest.approx(min(1, m * p))
    assert c['verdict_half_width'] == pytest.approx((c['ci_family'][1] - c['ci_family'][0]) / 2)
    # the verdict follows the family-wise interval: +0.50 (p 0.020) is "better" alone, not
    # among 3 or 6 rules compared with the same baseline
    assert c['verdict'] == ('better' if m < 3 else 'inconclusive')
    from mmvitscale.experiments.stats import percent
    family = f' (Bonferroni, {m} comparisons)' if m > 1 else ''
    assert f'{percent(level)}{family} interval {c["ci_family"][0]:+.2f}' in c['text']
    none = compare(d, family_size=m, correction='none')
    assert none['ci_family'] == none['ci95'] and none['verdict'] == 'better'
    assert none['p_adjusted'] == pytest.approx(p)


def test_family_confidence_refuses_bad_arguments_by_name():
    from mmvitscale.experiments.stats import compare, family_confidence, percent
    assert family_confidence(0.95, 4) == pytest.approx(0.9875)
    assert family_confidence(0.95, 4, 'none') == 0.95 and family_confidence(0.9, 1) == 0.9
    assert (percent(0.95), percent(1 - 0.05 / 3), percent(0.9875)) == ('95%', '98.3%', '98.8%')
    with pytest.raises(ValueError, match=r"correction must be one of \('bonferroni', 'none'\), "
                       r"got 'holm'"):
        compare([1.0, 2.0, 3.0], family_size=3, correction='holm')
    with pytest.raises(ValueError, match='family_size must be an integer >= 1, got 0'):
        family_confidence(0.95, 0)
    for bad in (None, True, 2.0):
        with pytest.raises(ValueError, match=f'family_size must be an integer >= 1, got {bad}'):
            family_confidence(0.95, bad)
    with pytest.raises(ValueError, match=r'confidence must be in \(0, 1\), got 1.5'):
        family_confidence(1.5, 2)


def test_summary_verdicts_follow_the_family_wise_interval():
    seeds = [0, 1, 2, 3]
    gain = dict(b=[0.0] * 4, mid=[0.75, 0.25, 0.6, 0.4], big=[2.1, 1.9, 2.0, 2.2],
                flat=[0.3, -0.2, 0.1, -0.1])
    rows = [_row('src', r, s, 50 + g[s]) for r, g in gain.items() for s in seeds]
    fw = summarize(rows, ['src'], list(gain), 'b', seeds)
    plain = summarize(rows, ['src'], list(gain), 'b', seeds, correction='none')
    comp = {c['rule']: c for c in fw['comparisons']}
    assert fw['correction'] == 'bonferroni' and plain['correction'] == 'none'
    assert {c['family_size'] for c in fw['comparisons']} == {3}
    assert (comp['mid']['verdict'], comp['big']['verdict']) == ('inconclusive', 'better')
    assert [c['verdict'] for c in plain['comparisons']] == ['better', 'better', 'inconclusive']
    assert comp['mid']['ci95'] == plain['comparisons'][0]['ci95']  # the 95% one is unchanged
    assert fw['winner'] == plain['winner'] == 'big'
    md = to_markdown(fw, 'T')
    assert '| 98.3% interval (bonferroni, 3 rules): the verdict\'s |' in md
    assert 'corrected (Bonferroni) for the number of rules' in md
    lo, hi = comp['big']['ci_family']
    assert (f'big beats the baseline on src: +2.05 points, 95% interval '
            f"{comp['big']['ci95'][0]:+.2f} to {comp['big']['ci95'][1]:+.2f}; 98.3% interval "
            f'over the 3 rules (Bonferroni, what the verdict follows) {lo:+.2f} to {hi:+.2f}.'
            ) in fw['headline']
    assert "verdict's interval (= 95%)" in to_markdown(plain)
    with pytest.raises(ValueError, match="correction must be one of .* got 'sidak'"):
        summarize(rows, ['src'], list(gain), 'b', seeds, correction='sidak')


# ---------------------------------------------------------------------------- store
def test_store_appends_repairs_a_torn_line_and_refuses_a_corrupt_middle(tmp_path):
    path = tmp_path / 'sub' / 'trials.jsonl'
    store = ResultStore(str(path))
    store.append(dict(key='a', metric=1.0))
    store.append(dict(key='b', metric=float('nan')))
    assert len(store) == 2 and 'a' in store and math.isnan(store.get('b')['metric'])
    whole = path.read_bytes()
    with open(path, 'ab') as f:  # a crash in the middle of a write
        f.write(b'{"key": "c", "met')
    again = ResultStore(str(path))
    assert again.repaired_bytes == len(b'{"key": "c", "met')
    assert path.read_bytes() == whole and [r['key'] for r in again.rows()] == ['a', 'b']
    again.append(dict(key='c', metric=3.0))
    lines = path.read_text().splitlines()
    assert [json.loads(s)['key'] for s in lines] == ['a', 'b', 'c']
    with open(path, 'ab') as f:  # a full line that is not JSON is also a torn tail
        f.write(b'garbage\n')
    assert len(ResultStore(str(path))) == 3
    path.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(StoreError, match=r'trials\.jsonl:2: not a JSON line'):
        ResultStore(str(path))


def test_progress_eta_expects_each_task_to_take_what_its_trials_took():
    from mmvitscale.experiments.pool import Progress
    trials = [Trial(task, 'r.py', seed) for task in ('cls', 'det') for seed in range(3)]
    lines = []
    progress = Progress(trials, lines.append, workers=2)
    assert math.isnan(progress.eta())

    def row(seconds):
        return dict(metric=1.0, metric_unit='top-1 %', timings=dict(total_s=seconds))
    progress.finished(trials[0], row(10.0))
    assert progress.eta() == pytest.approx((2 * 10 + 3 * 10) / 2)  # det: no data yet
    progress.finished(trials[3], row(40.0))
    assert progress.eta() == pytest.approx((2 * 10 + 2 * 40) / 2)
    assert lines[-1].startswith('[2/6] det/r/seed0: 1.00 top-1 % in 40.0s')
    assert 'ETA 0m50s' in lines[-1]
    for t in trials[1:3] + trials[4:]:
        progress.finished(t, row(1.0))
    assert lines[-1].endswith('done')


def test_eta_falls_back_to_the_groups_of_the_same_kind():
    from mmvitscale.experiments.console import Eta
    groups = [('proxy', 0), ('proxy', 1), ('train', 0), ('train', 1), ('train', 0)]
    clock = Eta(groups)
    count, times = clock.finished(('proxy', 0), 1.0)
    assert count == '[1/5]' and 'ETA' in times
    assert clock.eta() == pytest.approx(4 * 1.0)  # no training yet: every trial's mean
    clock.finished(('proxy', 1), 1.0)
    clock.finished(('train', 0), 30.0)
    # train 1 has no time of its own: the other trainings' mean, not the proxies'
    assert clock.eta() == pytest.approx(30.0 + 30.0)
    clock.finished(('train', 1), 10.0)
    assert clock.eta() == pytest.approx(30.0)  # the second train-0 as the first took
    assert clock.finished(('train', 0), 1.0)[1].endswith('done')


def test_trial_key_follows_the_task_config_not_its_comments(tmp_path):
    """A changed task config (or base) trains again; a comment or another rule path does not."""
    from mmvitscale.experiments.tasks import TASKS, get_task, register_task
    from mmvitscale.experiments.trial import make_trial
    base = get_task('cls')
    config = tmp_path / 'task.py'
    with open(base.config_path) as f:  # the cls config, its bases by absolute path
        text = f.read().replace("'../_base_/", f"'{ROOT}/configs/_base_/")
    config.write_text(text)
    rule = osp.join(ROOT, 'configs', '_base_', 'scaling', 'deit_tiny_shape.py')
    copy = tmp_path / 'deit_tiny_shape.py'
    copy.write_bytes(open(rule, 'rb').read())
    spec = register_task(base.__class__(**{**base.__dict__, 'name': 'cls_keytest',
                                           'config': str(config)}))
    try:
        keys = [make_trial('cls_keytest', rule, 0).key, make_trial('cls_keytest', str(copy), 0).key]
        # the same config by another path: the same digest
        sha = make_trial('cls_keytest', rule, 0).config_sha
        assert sha == make_trial('cls', rule, 0).config_sha
        st = os.stat(config)

        def rewrite(new_text, bump):
            config.write_text(new_text)
            os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns + bump))
            return make_trial('cls_keytest', rule, 0).key
        keys.append(rewrite(text + '# a comment\n', 10 ** 9))
        keys.append(rewrite(text + 'optim_wrapper = dict(clip_grad=None)\n', 2 * 10 ** 9))
        assert keys[0] == keys[1] == keys[2] != keys[3]
    finally:
        TASKS.pop(spec.name)


def test_offline_task_refuses_data_made_for_another_variant(tmp_path):
    """A task's data_params (a harder video) must match the data found in its folder."""
    from dataclasses import replace

    from mmvitscale.datasets import generate_video
    from mmvitscale.experiments.tasks import TaskError, ensure_data, get_task, trial_size
    spec = replace(get_task('video'), name='video_hard', data_dir='hard',
                   data_params=dict(distractors=1, noise=4.0))
    size = trial_size(spec, train=8, val=4)
    generate_video(str(tmp_path / 'hard'), num_train=8, num_val=4, distractors=1, noise=4.0,
                   show_progress=False)
    assert ensure_data(spec, str(tmp_path), size) == dict(train=8, val=4)
    generate_video(str(tmp_path / 'plain' / 'hard'), num_train=8, num_val=4,
                   show_progress=False)
    with pytest.raises(TaskError) as err:
        ensure_data(spec, str(tmp_path / 'plain'), size)
    assert str(err.value) == (
        f"video_hard data at {tmp_path / 'plain' / 'hard'} was made with "
        "{'distractors': None, 'noise': None}, the task needs {'distractors': 1, 'noise': 4.0}: "
        'remove that folder (it is made again) or pass another --data-root')


# ---------------------------------------------------------------------------- summary
def _row(task, rule, seed, metric, gflops=1.0):
    return dict(key=f'{task}{rule}{seed}', task=task, rule=rule, seed=seed, metric=metric,
                metric_name='acc', metric_unit='top-1 %', rule_file=f'{rule}.py',
                cost=dict(gflops=gflops, params_m=1.0), timings=dict(train_s=1.0, total_s=2.0),
                machine=dict(cpu='cpu', torch='2', threads=1, loadavg=[1.0, 1.0, 1.0]))


def test_summary_comparisons_winner_transfer_and_rank_agreement():
    seeds = [0, 1, 2]
    noise = [0.3, -0.2, 0.1]
    effect = dict(src=dict(base=0.0, good=2.0, meh=0.5, big=5.0),
                  det=dict(base=0.0, good=1.0, meh=0.2, big=3.0))
    flops = dict(base=1.0, good=1.05, meh=0.9, big=2.0)
    rows = [_row(t, r, s, 50 + e + noise[s] + (0.4 * s if r == 'meh' else 0), flops[r])
            for t, eff in effect.items() for r, e in eff.items() for s in seeds]
    rules = ['base', 'good', 'meh', 'big']
    summary = summarize(rows, ['src', 'det'], rules, 'base', seeds, tolerance=0.15)
    comp = {(c['task'], c['rule']): c for c in summary['comparisons']}
    assert comp[('src', 'good')]['diff_mean'] == pytest.approx(2.0)
    assert comp[('src', 'good')]['ci95'] == pytest.approx([2.0, 2.0])
    assert comp[('src', 'good')]['verdict'] == 'better'
    assert comp[('src', 'big')]['equal_cost'] is False  # 2x the FLOPs: never the winner
    assert summary['winner'] == 'good'
    assert any(s.startswith('good transferred to det: +1.00 points') for s in
               summary['headline'])
    arm = next(a for a in summary['arms'] if (a['task'], a['rule']) == ('src', 'meh'))
    assert arm['metrics'] == pytest.approx([50.8, 50.7, 51.4])
    assert arm['ci95'] == pytest.approx(list(sps.t.interval(
        0.95, 2, loc=np.mean(arm['metrics']), scale=sps.sem(arm['metrics']))))
    (agree,) = summary['rank_agreement']
    assert (agree['source'], agree['target'], agree['kendall_tau']) == ('src', 'det', 1.0)
    assert agree['p_value'] == pytest.approx(sps.kendalltau([0, 2, 0.5, 5], [0, 1, .2, 3]).pvalue)
    md = to_markdown(summary, 'T')
    assert 'good transferred to det: +1.00 points, 95% interval +1.00 to +1.00' in md
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    with pytest.raises(ValueError, match='lacks 1 trials.*det/big/seed2'):
        summarize(rows[:-1], ['src', 'det'], rules, 'base', seeds)


def test_summary_skips_arms_that_do_not_apply_to_a_task():
    seeds = [0, 1, 2]
    rows = [_row(t, r, s, 50 + dict(b=0, good=2, other=1)[r] + 0.1 * s * (r != 'b'))
            for t in ('src', 'pit') for r in ('b', 'good', 'other') for s in seeds
            if not (t == 'pit' and r == 'good')]
    skip = {'pit': {'good': 'turns depth 1 into 0'}}
    summary = summarize(rows, ['src', 'pit'], ['b', 'good', 'other'], 'b', seeds,
                        not_applicable=skip)
    # the family on each task is the rules compared there: 2 on src, 1 on pit (95% itself)
    assert {(c['task'], c['family_size']) for c in summary['comparisons']} == {('src', 2),
                                                                               ('pit', 1)}
    pit = next(c for c in summary['comparisons'] if c['task'] == 'pit')
    assert pit['ci_family'] == pit['ci95'] and pit['family_confidence'] == 0.95
    assert summary['winner'] == 'good'
    assert 'good does not apply to pit: turns depth 1 into 0.' in summary['headline']
    assert [a['rule'] for a in summary['arms'] if a['task'] == 'pit'] == ['b', 'other']
    (agree,) = summary['rank_agreement']
    assert agree['rules'] == ['b', 'other'] and agree['n'] == 2
    assert summary['not_applicable'] == [dict(task='pit', rule='good',
                                              reason='turns depth 1 into 0')]
    assert '- good on pit: turns depth 1 into 0' in to_markdown(summary)
    with pytest.raises(ValueError, match="baseline 'b' must apply to every task"):
        summarize(rows, ['src'], ['b'], 'b', seeds, not_applicable={'src': {'b': 'x'}})


def test_applicability_names_the_rules_a_task_cannot_build(tmp_path):
    from mmvitscale.experiments.study import applicability
    scaling = osp.join(ROOT, 'configs', '_base_', 'scaling')
    rules = [osp.join(scaling, f'{n}.py') for n in ('deeper_narrower', 'wider_shallower')]
    skip = applicability(['cls', 'cls_pit'], rules)
    assert list(skip) == ['cls_pit'] and list(skip['cls_pit']) == ['wider_shallower']
    assert 'depth_mult=0.5 turns depth 1 into 0' in skip['cls_pit']['wider_shallower']
    bad = tmp_path / 'bad_rule.py'
    bad.write_text('width = 3\n')
    with pytest.raises(ValueError, match=r'bad_rule\.py has no top-level `scaling'):
        applicability(['cls'], [str(bad)])


def test_summary_says_no_rule_beats_the_baseline():
    rows = [_row('src', r, s, 50 + [0.5, -0.5, 0.2][s] * (r == 'x')) for r in ('b', 'x')
            for s in range(3)]
    summary = summarize(rows, ['src'], ['b', 'x'], 'b', [0, 1, 2])
    assert summary['winner'] is None and summary['comparisons'][0]['verdict'] == 'inconclusive'
    assert summary['headline'][0].startswith('No rule in the tested set beats the baseline')


# ---------------------------------------------------------------------------- end to end
@pytest.fixture(scope='module')
def tiny(tmp_path_factory, fmnist_data_root):
    """Data root with Fashion-MNIST laid out and tiny det data; two small rule files."""
    from mmvitscale import datasets
    root = tmp_path_factory.mktemp('exp')
    data = root / 'data'
    datasets.prepare_classification(str(data / 'fashion_mnist'))
    datasets.generate_det(str(data / 'fmnist_det'), num_train=16, num_val=8,
                          show_progress=False)
    rules = root / 'rules'
    rules.mkdir()
    (rules / 'small.py').write_text('scaling = dict(depth_mult=0.34, width_mult=0.5)\n')
    (rules / 'small_deep.py').write_text('scaling = dict(depth_mult=0.5, width_mult=0.5)\n')
    (rules / 'small_wide.py').write_text('scaling = dict(depth_mult=0.34, width_mult=0.75)\n')
    return root


def _cmd(tiny, out, *extra):
    return [sys.executable, TOOL, '--tasks', 'cls', '--baseline', str(tiny / 'rules/small.py'),
            '--rules', str(tiny / 'rules/small_deep.py'), '--seeds', '0', '1',
            '--data-root', str(tiny / 'data'), '--out-dir', str(out), '--epochs', '1',
            '--cls-train', '64', '--cls-val', '64', '--cls-batch', '32',
            '--latency-backends', 'eager', '--latency-rounds', '2', '--latency-repeats', '3',
            *extra]


def _report_bytes(out):
    return {ext: (out / f'transfer.{ext}').read_bytes() for ext in ('json', 'md', 'png')}


@pytest.mark.slow
def test_killed_study_resumes_and_parallel_matches_sequential(tiny, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    out = tmp_path / 'seq'
    store = out / 'trials.jsonl'
    proc = subprocess.Popen(_cmd(tiny, out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (store.is_file() and store.read_bytes().count(b'\n') >= 1):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, 'no trial finished in 300 s'
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(s) for s in store.read_text().splitlines() if s.endswith('}')]
    assert 1 <= len(before) < 4 and not (out / 'transfer.json').exists()
    done = subprocess.run(_cmd(tiny, out), env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f'{len(before)} already in' in done.stdout
    lines = store.read_text().splitlines()
    rows = [json.loads(s) for s in lines if '"kind": "latency"' not in s]
    assert len(rows) == 4 and len({r['key'] for r in rows}) == 4  # nothing ran twice
    assert rows[:len(before)] == before
    assert len(lines) == 6  # and one latency row per arm
    first = _report_bytes(out)
    again = subprocess.run(_cmd(tiny, out), env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and '4 already in' in again.stdout and '0 to run' in again.stdout
    assert store.read_text().splitlines() == lines and _report_bytes(out) == first
    report = json.loads(first['json'])
    assert {(a['rule'], tuple(a['seeds'])) for a in report['arms']} == \
        {('small', (0, 1)), ('small_deep', (0, 1))}

    par = tmp_path / 'par'
    run = subprocess.run(_cmd(tiny, par, '--workers', '2'), env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert 'on 2 worker(s)' in run.stdout and 'ETA' in run.stdout
    par_rows = {json.loads(s)['key']: json.loads(s)
                for s in (par / 'trials.jsonl').read_text().splitlines()
                if '"kind": "latency"' not in s}
    assert set(par_rows) == {r['key'] for r in rows}
    for r in rows:  # same seed, same result, whichever process ran it
        assert par_rows[r['key']]['metrics'] == r['metrics']
        assert par_rows[r['key']]['cost'] == r['cost']
    par_report = json.loads((par / 'transfer.json').read_text())
    # timings and latency are measurements of the machine, not the seed; rule_file is the
    # cost-matched rule written under each study's own out dir (compared by name below)
    timed = {'train_s_mean', 'latency', 'latency_ratio', 'within_latency_budget', 'rule_file'}

    def untimed(items):
        return [{k: v for k, v in d.items() if k not in timed} for d in items]
    assert [osp.relpath(a['rule_file'], par) for a in par_report['arms']] == \
        [osp.relpath(a['rule_file'], out) for a in report['arms']]
    assert untimed(par_report['arms']) == untimed(report['arms'])
    assert untimed(par_report['comparisons']) == untimed(report['comparisons'])
    assert par_report['headline'][0] == report['headline'][0]


def _load_tool():
    return load_script('tools/transfer.py')


def test_transfer_tool_rejects_bad_input_before_any_work(tmp_path):
    tool = _load_tool()
    out = tmp_path / 'out'
    with pytest.raises(SystemExit, match=r'--rules .*nope\.py: rule file not found'):
        tool.main(['--rules', str(tmp_path / 'nope.py'), '--out-dir', str(out)])
    with pytest.raises(SystemExit, match='--cls-train must be >= 1, got 0'):
        tool.main(['--tasks', 'cls', '--cls-train', '0', '--out-dir', str(out)])
    with pytest.raises(SystemExit,
                       match=r'--seeds: must be distinct integers >= 0, got \[1, 1\]'):
        tool.main(['--tasks', 'cls', '--seeds', '1', '1', '--out-dir', str(out)])
    with pytest.raises(SystemExit, match='--workers and --threads must be >= 1, got 0'):
        tool.main(['--tasks', 'cls', '--workers', '0', '--out-dir', str(out)])
    bad = tmp_path / 'bad_rule.py'
    bad.write_text('width = 3\n')
    with pytest.raises(SystemExit, match=r'bad_rule\.py has no top-level `scaling'):
        tool.main(['--rules', str(bad), '--tasks', 'cls', '--out-dir', str(out)])
    shallow = osp.join(ROOT, 'configs', '_base_', 'scaling', 'wider_shallower.py')
    with pytest.raises(SystemExit, match=r'--baseline .*wider_shallower\.py does not apply to '
                       r'task cls_pit: .*turns depth 1 into 0'):
        tool.main(['--baseline', shallow, '--tasks', 'cls', 'cls_pit', '--out-dir', str(out)])
    assert not out.exists()


@pytest.mark.slow
def test_transfer_tool_end_to_end_cls_to_det(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out-dir, as on the command line
    tool = _load_tool()
    rules = tiny / 'rules'
    summary = tool.main([
        '--tasks', 'cls', 'det', '--baseline', str(rules / 'small.py'),
        '--rules', str(rules / 'small_deep.py'), str(rules / 'small_wide.py'),
        '--seeds', '0', '1', '--data-root', str(tiny / 'data'), '--out-dir', 'work_dirs/t',
        '--epochs', '1', '--cls-train', '64', '--cls-val', '64', '--cls-batch', '32',
        '--det-train', '8', '--det-val', '8', '--det-batch', '8',
        '--latency-backends', 'eager', '--latency-rounds', '2', '--latency-repeats', '3'])
    out = tmp_path / 'work_dirs' / 't'
    data = json.loads((out / 'transfer.json').read_text())
    assert data == summary
    assert len(data['arms']) == 6 and len(data['comparisons']) == 4
    for arm in data['arms']:
        assert arm['seeds'] == [0, 1] and len(arm['metrics']) == 2
        assert all(0.0 <= m <= 100.0 for m in arm['metrics'])
        lo, hi = arm['ci95']
        assert lo <= arm['mean'] <= hi
    for c in data['comparisons']:
        assert c['baseline'] == 'small' and c['verdict'] in ('better', 'worse', 'inconclusive')
        assert c['diff_mean'] == pytest.approx(np.mean(c['diffs']))
    (agree,) = data['rank_agreement']
    assert (agree['source'], agree['target'], agree['n']) == ('cls', 'det', 3)
    # every rule re-matched to each task's baseline FLOPs (--match flops, the default)
    assert data['match'] == 'flops'
    for c in data['comparisons']:
        assert c['match']['knob'] == 'width' and c['cost_ratio'] == pytest.approx(
            c['flops_ratio'])
        assert c['matched'] == (abs(c['cost_ratio'] - 1) <= 0.05)
        assert c['matched'] or c['match_reason'].startswith(f"rule {c['rule']} on task ")
    (effect,) = data['effect_transfer']
    assert (effect['source'], effect['target'], effect['rules']) == \
        ('cls', 'det', ['small_deep', 'small_wide'])
    assert (out / 'transfer_matrix.png').read_bytes().startswith(b'\x89PNG')
    md = (out / 'transfer.md').read_text()
    for line in data['headline']:
        assert line in md
    assert '## det: coco/bbox_mAP (bbox mAP x100)' in md and 'Kendall tau' in md
    for arm in data['arms']:  # latency per arm, with the round spread as its noise floor
        lat = arm['latency']['eager']
        assert 0 < lat['round_min_ms'] <= lat['median_ms'] <= lat['round_max_ms']
    for c in data['comparisons']:
        assert set(c['latency_ratio']) == {'eager'}
        assert isinstance(c['within_latency_budget'], bool)
    assert any(s.startswith("At the baseline's eager latency") for s in data['headline'])
    png = (out / 'transfer.png').read_bytes()
    assert png.startswith(b'\x89PNG') and len(png) > 10_000
    assert not [p for p in os.listdir(out) if p.endswith('.tmp')]


def test_latency_of_a_task_is_timed_together_when_a_rule_is_added(tmp_path):
    """Arms compared by latency are always timed in the same alternating rounds: adding a
    rule to a finished study re-times every arm of the task; a plain rerun times nothing."""
    from mmvitscale.experiments.latency import measure_arms
    from mmvitscale.experiments.tasks import SCALING_DIR
    store = ResultStore(str(tmp_path / 'trials.jsonl'))
    rules = [osp.join(SCALING_DIR, f'{n}.py') for n in
             ('deit_tiny_shape', 'deeper_narrower_mild', 'search_deeper_lowres')]
    said = []
    measure_arms(['cls'], rules[:2], store, rounds=1, repeats=1, warmup_s=0.0, say=said.append)
    assert said == ['cls: eager latency of 2 arm(s), 1 rounds x 1 runs']
    said.clear()
    rows = measure_arms(['cls'], rules, store, rounds=1, repeats=1, warmup_s=0.0,
                        say=said.append)
    assert said == ['cls: eager latency of 3 arm(s) (1 new, all timed together), 1 rounds x 1 '
                    'runs']
    assert [r['rule'] for r in rows] == ['deit_tiny_shape', 'deeper_narrower_mild',
                                         'search_deeper_lowres']
    with open(store.path) as f:
        assert len(f.readlines()) == 5  # 2 first, then all 3 again (the later lines win)
    said.clear()
    again = measure_arms(['cls'], rules, ResultStore(store.path), rounds=1, repeats=1,
                         warmup_s=0.0, say=said.append)
    assert said == [] and again == rows


def _comp(task, rule, diff, lo, hi, verdict, seeds):
    return dict(task=task, rule=rule, diff_mean=diff, ci95=[lo, hi], verdict=verdict,
                seeds=seeds)


def test_agreement_of_two_runs_counts_verdicts_and_opposites(tmp_path):
    from mmvitscale.experiments.report import agreement, agreement_markdown
    a = dict(baseline='base', comparisons=[
        _comp('cls', 'r1', -0.08, -0.53, 0.37, 'inconclusive', [0, 1, 2]),
        _comp('cls', 'r2', 0.5, 0.1, 0.9, 'better', [0, 1, 2]),
        _comp('det', 'r1', 0.2, -0.1, 0.5, 'inconclusive', [0, 1, 2]),
        _comp('video', 'r1', 1.0, 0.5, 1.5, 'better', [0, 1, 2])])
    b = dict(baseline='base', comparisons=[
        _comp('cls', 'r1', -0.39, -0.77, -0.01, 'worse', [3, 4, 5]),
        _comp('cls', 'r2', 0.4, 0.2, 0.6, 'better', [3, 4, 5]),
        _comp('det', 'r1', -0.3, -0.5, -0.1, 'worse', [3, 4, 5])])
    res = agreement(a, b)
    assert (res['agreed'], res['total'], res['opposed'], res['same_sign']) == (1, 3, 0, 2)
    assert [(r['task'], r['rule'], r['agree']) for r in res['rows']] == [
        ('cls', 'r1', False), ('cls', 'r2', True), ('det', 'r1', False)]
    b['comparisons'][1] = _comp('cls', 'r2', -0.4, -0.6, -0.2, 'worse', [3, 4, 5])
    assert agreement(a, b)['opposed'] == 1
    text = agreement_markdown(res, ['A', 'B'])
    assert text.startswith('Verdicts agree in 1 of 3 comparisons with base; opposite verdicts '
                           '(better vs worse): 0; same sign of the mean difference: 2 of 3.')
    assert ('| cls | r1 | inconclusive: -0.08 (-0.53 to +0.37; seeds 0, 1, 2) | worse: -0.39 '
            '(-0.77 to -0.01; seeds 3, 4, 5) | no |') in text
    with pytest.raises(ValueError, match="different baselines: 'base' and 'other'"):
        agreement(a, dict(b, baseline='other'))
    with pytest.raises(ValueError, match='no \\(task, rule\\) comparison in common'):
        agreement(a, dict(baseline='base', comparisons=[]))


def test_study_agreement_tool(tmp_path, capsys):
    tool = load_script('tools/analysis/study_agreement.py')
    a = dict(baseline='base', comparisons=[_comp('cls', 'r1', 0.5, 0.1, 0.9, 'better', [0])])
    b = dict(baseline='base', comparisons=[_comp('cls', 'r1', 0.1, -0.3, 0.5, 'inconclusive',
                                                 [1])])
    (tmp_path / 'a.json').write_text(json.dumps(a))
    (tmp_path / 'b.json').write_text(json.dumps(b))
    out = tmp_path / 'agree.md'
    res = tool.main([str(tmp_path / 'a.json'), str(tmp_path / 'b.json'), '--out', str(out)])
    assert res['agreed'] == 0 and out.read_text().startswith('Verdicts agree in 0 of 1')
    assert json.loads((tmp_path / 'agree.json').read_text())['total'] == 1
    (tmp_path / 'c.json').write_text('{"arms": []}')
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / 'a.json'), str(tmp_path / 'c.json')])
    err = capsys.readouterr().err
    assert f'second {tmp_path / "c.json"}: not a study report (no "comparisons")' in err
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / 'a.json'), str(tmp_path / 'b.json'), '--out', 'x.txt'])
    assert '--out must end in .md, got x.txt' in capsys.readouterr().err


def test_expected_agreement_resamples_a_pooled_report(tmp_path, capsys):
    from mmvitscale.experiments.report import expected_agreement
    seeds = list(range(8))
    noise = [0.1, -0.2, 0.05, 0.3, -0.1, 0.0, 0.2, -0.15]
    arms = [dict(task='cls', rule='base', seeds=seeds, metrics=[50.0 + n for n in noise]),
            dict(task='cls', rule='big', seeds=seeds, metrics=[53.0 + n * 1.1 for n in noise]),
            dict(task='cls', rule='same', seeds=seeds, metrics=[50.0 + n * 0.9 for n in noise])]
    comps = [dict(task='cls', rule=r, baseline='base') for r in ('big', 'same')]
    pooled = dict(seeds=seeds, arms=arms, comparisons=comps, confidence=0.95, baseline='base')
    res = expected_agreement(pooled, 3, draws=50)
    # +3 points on a 0.03-point paired spread: better in every draw; a 10% scaled copy of the
    # baseline's noise (mean -0.02) is inconclusive or, now and then, detected either way
    assert res['comparisons'] == 2 and res['draws'] == 50 and res['seeds_per_run'] == 3
    assert 1.0 <= res['mean_agreed'] <= 2.0 and 1.0 <= res['mean_detected'] <= 2.0
    assert res == expected_agreement(pooled, 3, draws=50)  # seeded
    big = dict(pooled, comparisons=comps[:1])
    one = expected_agreement(big, 4, draws=20, correction='none')
    assert (one['mean_agreed'], one['p_all_agree'], one['p_any_opposed'],
            one['mean_detected']) == (1.0, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match=r'seeds_per_run must be an integer in \[2, 4\] for a '
                       r'report with 8 seeds, got 5'):
        expected_agreement(pooled, 5)
    tool = load_script('tools/analysis/study_agreement.py')
    (tmp_path / 'pooled.json').write_text(json.dumps(pooled))
    out = tool.main([str(tmp_path / 'pooled.json'), '--seeds-per-run', '3', '4',
                     '--draws', '20', '--out', str(tmp_path / 'e.md')])
    assert [(r['seeds_per_run'], r['correction']) for r in out['rows']] == [
        (3, 'bonferroni'), (3, 'none'), (4, 'bonferroni'), (4, 'none')]
    assert '| 4 | none | ' in (tmp_path / 'e.md').read_text()
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / 'pooled.json'), '--seeds-per-run', '5'])
    assert ('--seeds-per-run 5: seeds_per_run must be an integer in [2, 4]'
            in capsys.readouterr().err)
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / 'pooled.json'), str(tmp_path / 'pooled.json'),
                   '--seeds-per-run', '3'])
    assert 'give either SECOND' in capsys.readouterr().err
    few = dict(pooled, seeds=seeds[:3])
    (tmp_path / 'few.json').write_text(json.dumps(few))
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / 'few.json'), '--seeds-per-run', '2'])
    assert 'needs a report with at least 4 seeds, got 3' in capsys.readouterr().err
    seeded_like = dict(pooled, arms=[dict(arm='a', seeds=seeds, metrics=[1.0] * 8)])
    (tmp_path / 'seeded.json').write_text(json.dumps(seeded_like))
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / 'seeded.json'), '--seeds-per-run', '2'])
    assert 'needs a transfer-study report' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / 'pooled.json'), '--seeds-per-run', '2', '--draws', '0'])
    assert '--draws 0: draws must be a positive integer, got 0' in capsys.readouterr().err


_SLOW_TRIAL = '''
import os, time
def slow(trial, out_dir, data_root, threads):
    open(os.path.join(out_dir, f'pid{os.getpid()}'), 'w').close()
    time.sleep(120)
'''

_STUDY = '''
import sys
sys.path.insert(0, sys.argv[1])
from slow_trial import slow
from mmvitscale.experiments.pool import run_trials
from mmvitscale.experiments.store import ResultStore
from mmvitscale.experiments.trial import Trial
if __name__ == '__main__':
    rules = [sys.argv[1] + f'/rule{i}.py' for i in range(2)]
    for r in rules:
        open(r, 'w').write('scaling = dict()')
    trials = [Trial('cls', r, i) for i, r in enumerate(rules)]
    run_trials(trials, ResultStore(sys.argv[1] + '/t.jsonl'), sys.argv[1], sys.argv[1],
               workers=2, fn=slow, say=lambda m: None)
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG is Linux')
def test_killed_study_leaves_no_worker_running(tmp_path):
    (tmp_path / 'slow_trial.py').write_text(_SLOW_TRIAL)
    (tmp_path / 'study.py').write_text(_STUDY)
    proc = subprocess.Popen([sys.executable, str(tmp_path / 'study.py'), str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(list(tmp_path.glob('pid*'))) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, 'the workers did not start in 120 s'
        time.sleep(0.05)
    pids = [int(p.name[3:]) for p in tmp_path.glob('pid*')]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    alive = pids
    while alive and time.time() < deadline:
        alive = [p for p in pids if osp.exists(f'/proc/{p}') and
                 open(f'/proc/{p}/stat').read().split()[2] != 'Z']
        time.sleep(0.1)
    assert not alive, f'workers {alive} outlived the killed study'


# ---------------------------------------------------------------------------- effect transfer
def test_effect_transfer_intervals_are_a_paired_bootstrap_over_seeds():
    from mmvitscale.experiments.stats import effect_transfer
    rng = np.random.default_rng(5)
    rules, k = ['a', 'b', 'c', 'd', 'e'], 6
    true = np.array([-3.0, -1.0, 0.0, 1.0, 2.5])
    src = {r: (true[i] + rng.normal(scale=0.8, size=k)).tolist() for i, r in enumerate(rules)}
    tgt = {r: (0.7 * true[i] + rng.normal(scale=0.8, size=k)).tolist()
           for i, r in enumerate(rules)}
    got = effect_transfer(src, tgt, draws=500, seed=3)
    # by hand: the same seed indices for every rule and both tasks, then scipy's coefficients
    s, t = np.array([src[r] for r in rules]), np.array([tgt[r] for r in rules])
    idx = np.random.default_rng(3).integers(0, k, (500, k))
    taus = [sps.kendalltau(s[:, i].mean(1), t[:, i].mean(1)).statistic for i in idx]
    rs = [sps.pearsonr(s[:, i].mean(1), t[:, i].mean(1)).statistic for i in idx]
    assert got['ci95']['kendall_tau'] == pytest.approx(np.quantile(taus, [0.025, 0.975]))
    assert got['ci95']['pearson_r'] == pytest.approx(np.quantile(rs, [0.025, 0.975]))
    assert got['kendall_tau'] == pytest.approx(sps.kendalltau(s.mean(1), t.mean(1)).statistic)
    assert got['pearson_r'] == pytest.approx(sps.pearsonr(s.mean(1), t.mean(1)).statistic)
    assert got['verdict'] == 'transfers' and got['rules'] == rules and got['undefined'] == 0
    flipped = effect_transfer(src, {r: [-v for v in tgt[r]] for r in rules}, draws=500, seed=3)
    assert flipped['verdict'] == 'reverses'
    assert flipped['ci95']['kendall_tau'] == pytest.approx(
        [-got['ci95']['kendall_tau'][1], -got['ci95']['kendall_tau'][0]])
    noise = {r: rng.normal(size=k).tolist() for r in rules}
    assert effect_transfer(noise, tgt, draws=300)['verdict'] == 'inconclusive'
    two = effect_transfer({'a': [1, 2, 3], 'b': [2, 3, 4]}, {'a': [1, 1, 2], 'b': [3, 3, 3]})
    assert two['verdict'] == 'inconclusive' and math.isnan(two['ci95']['kendall_tau'][0])
    with pytest.raises(ValueError, match='same seeds on both tasks'):
        effect_transfer({'a': [1, 2], 'b': [1, 2, 3]}, {'a': [1, 2], 'b': [1, 2, 3]})


def test_summary_matches_effect_transfer_and_the_matrix_plot_equals_the_json(tmp_path):
    from mmvitscale.experiments.report import matrix_cells, plot_matrix
    seeds = [0, 1, 2]
    noise = [0.3, -0.2, 0.1]
    effect = dict(src=dict(base=0.0, good=2.0, meh=0.5, bad=-3.0),
                  det=dict(base=0.0, good=1.0, meh=0.2, bad=-6.0))
    rows = [_row(t, r, s, 50 + e + noise[s] * (r != 'base') * (1 + (t == 'det')))
            for t, eff in effect.items() for r, e in eff.items() for s in seeds]
    rules = ['base', 'good', 'meh', 'bad']
    matches = {'det': {r: dict(knob='width', value=40, metric='flops', matched=r != 'meh',
                               ratio=1.01, rule_ratio=1.3, tolerance=0.05,
                               reason='' if r != 'meh' else 'rule meh on task det: no width')
                       for r in rules[1:]}}
    summary = summarize(rows, ['src', 'det'], rules, 'base', seeds, matches=matches,
                        match='flops', draws=200)
    comp = {(c['task'], c['rule']): c for c in summary['comparisons']}
    assert comp[('det', 'meh')]['matched'] is False
    assert comp[('det', 'meh')]['match_reason'] == 'rule meh on task det: no width'
    assert comp[('det', 'good')]['matched'] and comp[('det', 'good')]['cost_ratio'] == 1.0
    assert comp[('det', 'good')]['match']['value'] == 40
    assert comp[('src', 'good')]['matched'] and comp[('src', 'good')]['match'] is None
    (e,) = summary['effect_transfer']
    assert (e['source'], e['target'], e['rules']) == ('src', 'det', ['good', 'meh', 'bad'])
    assert e['kendall_tau'] == pytest.approx(1.0) and e['verdict'] == 'transfers'
    assert set(e['ci95']) == {'kendall_tau', 'pearson_r'}
    assert any(s.startswith('bad: worse on src at equal FLOPs (-2.93 points, ')
               for s in summary['headline'])
    line = next(s for s in summary['headline'] if s.startswith('meh:'))
    assert 'on det at x1.00 FLOPs, not matched' in line
    assert any(s.startswith('Effect transfer src -> det over 3 rules') for s in
               summary['headline'])
    md = to_markdown(summary, 'T')
    assert '## Effect transfer' in md and 'not matched: rule meh on task det: no width' in md
    cells = plot_matrix(summary, str(tmp_path / 'm.png'))
    assert (tmp_path / 'm.png').read_bytes().startswith(b'\x89PNG')
    assert cells == matrix_cells(summary) and len(cells) == 6
    for cell in cells:  # every cell is the JSON's comparison
        c = comp[(cell['task'], cell['rule'])]
        assert (cell['mean'], [cell['low'], cell['high']], cell['verdict'], cell['matched']) == \
            (c['diff_mean'], c['ci_family'], c['verdict'], c['matched'])
    # the figure's own texts are the cells' texts, where the cells say
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    from mmvitscale.experiments import report
    seen = {}
    real = report.save_figure

    def keep(fig, path, **kw):
        seen['texts'] = [(t.get_position(), t.get_text()) for t in fig.axes[0].texts]
        real(fig, path, **kw)
    report.save_figure = keep
    try:
        plot_matrix(summary, str(tmp_path / 'm2.png'))
    finally:
        report.save_figure = real
        plt.close('all')
    assert sorted(seen['texts']) == sorted(((c['col'], c['row']), c['text']) for c in cells)
    assert any(c['text'].endswith(' *') for c in cells if not c['matched'])
