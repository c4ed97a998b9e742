"""Seeded arm studies (mmvitscale.experiments.seeded) and the two tools built on them:
tools/analysis/castling_accuracy.py and tools/analysis/retokenization_study.py (seeds, paired
differences, intervals, verdicts, the results store on rerun)."""
import json

import numpy as np
import pytest
from scipy import stats as sps

from mmvitscale.experiments import seeded
from scripts import load_script

VERDICTS = {'better', 'worse', 'inconclusive'}


def _load_tool(name):
    return load_script(f'tools/analysis/{name}.py')


def _row(arm, seed, top1, train_s=10.0):
    return dict(arm=arm, seed=seed, metrics=dict(top1=top1, train_s=train_s),
                machine=dict(cpu='x', torch='t', threads=1, loadavg=[1.0, 1.0, 1.0]),
                timings=dict(total_s=1.0))


METRICS = (seeded.Metric('top1', 'top-1 %'),
           seeded.Metric('train_s', 'train (s)', unit='%', kind='saving', digits=1,
                         compare_label='time saved'))


# ---------------------------------------------------------------------------- summary
def test_summary_pairs_by_seed_and_matches_scipy():
    seeds = [0, 1, 2]
    base = {0: 60.0, 1: 70.0, 2: 80.0}  # large seed-to-seed spread ...
    treat = {s: v + 1.0 + 0.1 * s for s, v in base.items()}  # ... a steady +1.1 paired gain
    rows = [_row('b', s, treat[s], 6.0 + s) for s in reversed(seeds)]  # order must not matter
    rows += [_row('a', s, base[s], 10.0 + s) for s in seeds]
    summary = seeded.summarize_arms(rows, ['a', 'b'], seeds, [('b', 'a')], METRICS,
                                    labels=dict(a='base', b='treated'))
    a, b = summary['arms']
    assert (a['arm'], b['arm']) == ('a', 'b') and a['seeds'] == b['seeds'] == seeds
    assert b['metrics'] == [treat[s] for s in seeds]
    lo, hi = sps.t.interval(0.95, 2, loc=np.mean(b['metrics']), scale=sps.sem(b['metrics']))
    assert b['mean'] == pytest.approx(np.mean(b['metrics']))
    assert b['ci95'] == pytest.approx([lo, hi])
    top1, saved = summary['comparisons']
    assert top1['diffs'] == pytest.approx([1.0, 1.1, 1.2])  # per seed, not per sorted value
    d = np.array(top1['diffs'])
    lo, hi = sps.t.interval(0.95, 2, loc=d.mean(), scale=sps.sem(d))
    assert top1['ci95'] == pytest.approx([lo, hi]) and top1['diff_mean'] == pytest.approx(1.1)
    assert top1['verdict'] == 'better'  # unpaired, the 10-point spread would hide it
    assert top1['p_value'] == pytest.approx(sps.ttest_rel(b['metrics'], a['metrics']).pvalue)
    assert top1['sentence'] == (f'treated vs base: +1.10 points, 95% interval {lo:+.2f} to '
                                f'{hi:+.2f}: better')
    assert saved['diffs'] == pytest.approx([40.0, 100 * 4 / 11, 100 * 4 / 12])
    assert saved['verdict'] == 'better' and saved['sentence'].startswith(
        f"treated vs base, time saved: {np.mean(saved['diffs']):+.1f}%, 95% interval ")
    lines = seeded.arms_markdown(summary)
    assert '- ' + top1['sentence'] in lines and '- ' + saved['sentence'] in lines
    json.dumps(summary, allow_nan=False)  # strict JSON


def test_summary_worse_inconclusive_and_missing_trials():
    seeds = [0, 1, 2]
    rows = [_row('a', s, 50.0 + s) for s in seeds]
    rows += [_row('w', s, 48.0 + s * 1.1) for s in seeds]
    rows += [_row('i', s, 50.0 + s + (-1, 1, 0.2)[s]) for s in seeds]
    summary = seeded.summarize_arms(rows, ['a', 'w', 'i'], seeds, [('w', 'a'), ('i', 'a')],
                                    METRICS[:1])
    assert [c['verdict'] for c in summary['comparisons']] == ['worse', 'inconclusive']
    with pytest.raises(ValueError, match=r'no result for 1 trial\(s\): w/seed3'):
        seeded.summarize_arms(rows + [_row('a', 3, 1.0)], ['a', 'w'], [0, 1, 2, 3],
                              [('w', 'a')], METRICS[:1])


def test_one_seed_gives_no_interval_and_no_verdict_without_crashing(tmp_path):
    rows = [_row('a', 5, 50.0, 10.0), _row('b', 5, 49.2, 7.0)]
    summary = seeded.summarize_arms(rows, ['a', 'b'], [5], [('b', 'a')], METRICS)
    arm = summary['arms'][1]
    assert arm['metrics'] == [49.2] and arm['mean'] == 49.2 and arm['ci95'] == [None, None]
    c = summary['comparisons'][0]
    assert c['ci95'] == [None, None] and c['verdict'] == 'inconclusive'
    assert c['sentence'] == ('b vs a: -0.80 points from 1 seed: no interval can be computed '
                             '(no verdict)')
    md = '\n'.join(seeded.arms_markdown(summary))
    assert 'n/a (one seed)' in md and 'cannot detect any difference' in md
    seeded.plot_arms(summary, str(tmp_path / 'one.png'))
    assert (tmp_path / 'one.png').read_bytes().startswith(b'\x89PNG')
    from mmvitscale.experiments.retokenization import target
    retok = seeded.summarize_arms(
        [dict(r, arm=dict(a='plain', b='progressive')[r['arm']]) for r in rows],
        ['plain', 'progressive'], [5], [('progressive', 'plain')], METRICS)
    assert target(retok)['met'] is None and 'one seed' in target(retok)['text']


def test_run_arms_keeps_finished_trials_and_runs_seed_major(tmp_path):
    calls = []

    def run_one(arm, seed):
        calls.append((arm, seed))
        if (arm, seed) == ('b', 1):
            raise KeyboardInterrupt  # a study killed in its fourth trial
        return dict(metrics=dict(top1=float(seed)))

    with pytest.raises(KeyboardInterrupt):
        seeded.run_arms('s', ['a', 'b'], [0, 1], lambda a: dict(epochs=1), run_one,
                        str(tmp_path))
    assert calls == [('a', 0), ('b', 0), ('a', 1), ('b', 1)]
    calls.clear()
    seen = []
    rows = seeded.run_arms('s', ['a', 'b'], [0, 1], lambda a: dict(epochs=1),
                           lambda a, s: dict(metrics=dict(top1=s + 10.0)), str(tmp_path),
                           say=seen.append)
    assert '4 trials (2 arm(s) x 2 seed(s)): 3 already in' in seen[0]
    assert len(seen) == 2 and seen[1].startswith('[1/1] b seed 1: top1 11.00 in ')
    assert seen[1].endswith('done')
    assert [(r['arm'], r['seed'], r['metrics']['top1']) for r in rows] == \
        [('a', 0, 0.0), ('b', 0, 0.0), ('a', 1, 1.0), ('b', 1, 11.0)]
    assert seeded.complete_seeds(rows[:3], ['a', 'b'], [0, 1]) == [0]
    other = seeded.run_arms('s', ['a'], [0], lambda a: dict(epochs=2),  # other settings: rerun
                            lambda a, s: dict(metrics=dict(top1=-1.0)), str(tmp_path))
    assert other[0]['metrics']['top1'] == -1.0


# ---------------------------------------------------------------------------- tools: arguments
@pytest.mark.parametrize('tool', ['castling_accuracy', 'retokenization_study'])
def test_tools_validate_seeds_before_any_work(tool, tmp_path, capsys):
    mod = _load_tool(tool)
    out = tmp_path / 'out'
    for bad, shown in ((['1', '1'], '[1, 1]'), (['0', '-2'], '[0, -2]')):
        with pytest.raises(SystemExit):
            mod.main(['--seeds', *bad, '--out-dir', str(out)])
        err = capsys.readouterr().err
        assert f'--seeds must be distinct integers >= 0, got {shown}' in err
    assert not out.exists()
    assert mod.parse_args(['--seed', '4']).seeds == [4]
    assert mod.parse_args([]).seeds == [0, 1, 2]


# ---------------------------------------------------------------------------- tools: end to end
def _check_arms_and_comparisons(data, arms, pairs):
    by = {a['arm']: a for a in data['arms']}
    assert list(by) == arms
    for a in data['arms']:
        assert a['seeds'] == [0, 1] and len(a['metrics']) == 2
        assert [p['seed'] for p in a['per_seed']] == [0, 1]
        assert all(0.0 <= m <= 100.0 for m in a['metrics'])
        assert a['mean'] == pytest.approx(np.mean(a['metrics']))
        lo, hi = a['ci95']
        assert lo <= a['mean'] <= hi
    comps = [c for c in data['comparisons'] if c['metric'] == 'top1']
    assert [(c['arm'], c['baseline']) for c in comps] == pairs
    for c in comps:
        expect = [x - y for x, y in zip(by[c['arm']]['metrics'], by[c['baseline']]['metrics'])]
        assert c['diffs'] == pytest.approx(expect)
        assert c['diff_mean'] == pytest.approx(np.mean(expect))
        lo, hi = c['ci95']
        assert lo <= c['diff_mean'] <= hi and c['verdict'] in VERDICTS
    return by


@pytest.mark.slow
def test_castling_tool_two_seeds_end_to_end_and_rerun_keeps_trials(fmnist_data_root, tmp_path,
                                                                   monkeypatch):
    tool = _load_tool('castling_accuracy')
    out = tmp_path / 'castling'
    argv = ['--seeds', '0', '1', '--epochs', '1', '--train', '64', '--val', '64', '--batch',
            '32', '--runs', 'softmax', 'linear_aux', '--data-root', str(fmnist_data_root),
            '--out-dir', str(out)]
    summary = tool.main(argv)
    data = json.loads((out / 'castling_accuracy.json').read_text())
    assert data == json.loads(json.dumps(summary))
    by = _check_arms_and_comparisons(
        data, ['softmax', 'linear_aux', 'converted'],
        [('linear_aux', 'softmax'), ('converted', 'softmax'), ('converted', 'linear_aux')])
    for p in by['linear_aux']['per_seed']:  # the converted arm is the same training, converted
        assert p['converted']['max_logit_diff_vs_inference_only'] < 1e-4
        assert p['metrics']['gflops'] > p['converted']['gflops'] > 0
    assert len(data['aux_mask']['mean_abs_per_seed']) == 2
    md = (out / 'castling_accuracy.md').read_text()
    for c in data['comparisons']:
        assert f"- {c['sentence']}" in md
        assert c['sentence'].startswith(f"{c['label']} vs {c['baseline_label']}: ")
        assert '95% interval' in c['sentence'] and c['sentence'].endswith(c['verdict'])
    assert (out / 'castling_accuracy.png').read_bytes().startswith(b'\x89PNG')
    lines = (out / 'trials.jsonl').read_text().splitlines()
    assert sorted((json.loads(s)['arm'], json.loads(s)['seed']) for s in lines) == \
        [('linear_aux', 0), ('linear_aux', 1), ('softmax', 0), ('softmax', 1)]

    from mmvitscale.experiments import castling

    def no_training(*args, **kwargs):
        raise AssertionError('a finished trial ran again')
    monkeypatch.setattr(castling, 'run_one', no_training)
    again = tool.main(argv)  # every (arm, seed) is in the store: nothing trains
    assert again['arms'] == summary['arms'] and again['comparisons'] == summary['comparisons']
    assert (out / 'trials.jsonl').read_text().splitlines() == lines


@pytest.mark.slow
def test_retokenization_tool_two_seeds_end_to_end(fmnist_data_root, tmp_path):
    tool = _load_tool('retokenization_study')
    out = tmp_path / 'retok'
    data_arg = str(fmnist_data_root / 'fashion_mnist')  # the old meaning of --data-root still works
    summary = tool.main(['--seeds', '0', '1', '--epochs', '2', '--train-images', '64',
                         '--val-images', '64', '--batch-size', '32', '--data-root', data_arg,
                         '--out-dir', str(out)])
    data = json.loads((out / 'retokenization_study.json').read_text())
    assert data == json.loads(json.dumps(summary))
    by = _check_arms_and_comparisons(data, ['plain', 'progressive'], [('progressive', 'plain')])
    for arm, strides in (('plain', [1, 1]), ('progressive', [2, 1])):
        for p in by[arm]['per_seed']:  # the schedule really ran: coarse tokens, then full
            assert [e['last_token_stride'] for e in p['epochs']] == strides
            assert p['metrics']['train_s'] == pytest.approx(sum(e['train_s'] for e in p['epochs']))
    saved = next(c for c in data['comparisons'] if c['metric'] == 'train_s')
    plain, prog = by['plain']['summaries']['train_s'], by['progressive']['summaries']['train_s']
    assert saved['diffs'] == pytest.approx([100 * (b - t) / b for b, t in
                                            zip(plain['values'], prog['values'])])
    assert saved['unit'] == '%' and saved['verdict'] in VERDICTS
    assert isinstance(data['target']['met'], bool)
    md = (out / 'retokenization_study.md').read_text()
    assert all(f"- {c['sentence']}" in md for c in data['comparisons'])
    assert 'progressive vs plain, training wall time saved: ' in md
    assert (out / 'retokenization_study.png').read_bytes().startswith(b'\x89PNG')
    assert len((out / 'trials.jsonl').read_text().splitlines()) == 4
