"""Reference classifiers of the cls task (logistic regression, small CNN) and their benchmark."""
import json

import pytest
import torch

from mmvitscale.experiments.references import build_reference, train_reference
from mmvitscale.experiments.stats import t_interval
from scripts import load_script

bench = load_script('benchmarks/cls_references.py')


@pytest.mark.parametrize('kind,params', [('logistic', 28 * 28 * 10 + 10),
                                         ('cnn', 320 + 18496 + 31370)])
def test_reference_models_take_fmnist_items(kind, params):
    model = build_reference(kind)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert sum(p.numel() for p in model.parameters()) == params


def test_logistic_regression_learns_within_its_budget():
    row = train_reference('logistic', seconds=0.5, seed=0, train=3000, val=1000, threads=1)
    assert row['kind'] == 'logistic' and row['val'] == 1000 and row['train'] == 3000
    assert row['epochs'] >= 1 and row['train_s'] < 10
    assert row['top1'] > 65  # chance is 10%; 3000 images give ~78%
    again = train_reference('logistic', seconds=0.5, seed=0, train=3000, val=1000, threads=1,
                            max_epochs=row['epochs'])
    if again['epochs'] == row['epochs']:  # same seed, same epochs: same model
        assert again['top1'] == row['top1']


@pytest.mark.parametrize('kwargs,message', [
    (dict(kind='mlp'), "kind must be one of ('logistic', 'cnn'), got 'mlp'"),
    (dict(seconds=0), 'seconds must be > 0, got 0'),
    (dict(train=0), 'train must be an integer >= 1, got 0'),
    (dict(batch=2.5), 'batch must be an integer >= 1, got 2.5')])
def test_reference_refuses_bad_arguments(kwargs, message):
    args = dict(kind='logistic', seconds=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        train_reference(**args)
    assert str(err.value) == message


def test_benchmark_writes_intervals(tmp_path):
    out = tmp_path / 'refs.json'
    result = bench.main(['--kinds', 'logistic', '--seeds', '0', '1', '--seconds', '0.3',
                         '--train', '2000', '--val', '500', '--workers', '1',
                         '--trials', str(tmp_path / 'none.jsonl'), '--out', str(out)])
    saved = json.loads(out.read_text())
    assert saved['summary'] == json.loads(json.dumps(result['summary']))
    s = saved['summary']['logistic']
    ci = t_interval(s['top1'])
    assert s['seeds'] == [0, 1] and len(s['top1']) == 2
    assert s['mean'] == pytest.approx(ci.mean) and s['ci95'] == pytest.approx([ci.low, ci.high])
    assert saved['seconds'] == 0.3


def test_benchmark_budget_from_the_study_store(tmp_path):
    from mmvitscale.experiments.store import ResultStore
    store = ResultStore(str(tmp_path / 'trials.jsonl'))
    for i, (task, rule, s) in enumerate([('cls', 'deit_tiny_shape', 80.0),
                                         ('cls', 'deit_tiny_shape', 90.0),
                                         ('cls', 'deit_tiny_shape', 84.0),
                                         ('cls', 'other', 10.0),
                                         ('cls_pit', 'deit_tiny_shape', 5.0)]):
        store.append(dict(key=f'k{i}', task=task, rule=rule, timings=dict(train_s=s)))
    store.append(dict(key='lat', kind='latency', task='cls', rule='deit_tiny_shape',
                      median_ms=2.0))
    assert bench.baseline_seconds(store.path, 'deit_tiny_shape') == 84.0
    assert bench.baseline_seconds(str(tmp_path / 'missing.jsonl'), 'deit_tiny_shape') is None
