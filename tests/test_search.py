"""Latency predictor and budgeted scaling search (tools/scale_search.py)."""
import json
import math
import os.path as osp
import runpy

import numpy as np
import pytest

from mmvitscale.cost.predictor import FEATURES, LatencyPredictor, features, mape, nnls
from mmvitscale.scaling import make_pit_arch, make_vit_arch, scale_vit
from mmvitscale.search.rule_search import (SEARCH_FAMILIES, BaseSpec, BudgetError, Candidate,
                                           check_grids, enumerate_candidates, filter_budget,
                                           pareto_front, ranks, rule_file_text, run_search,
                                           write_rule_file)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
FMNIST = dict(embed_dims=64, num_layers=6, num_heads=2, mlp_ratio=4.0)
TRUE_COEF = np.array([2e-6, 3e-7, 1e-5, 4e-6, 1e-3, 1e-7, 2e-6, 0.05, 0.4])  # one per feature


def _archs():
    base = make_vit_arch(64, 6, 2, 4.0, 32, 4)
    return [scale_vit(base, dict(depth_mult=d, width_mult=w, resolution_mult=r, heads_mult=h))
            for d in (0.5, 1, 1.5) for w in (0.5, 1, 1.5) for r in (1, 1.5) for h in (1, 2)]


# ---------------------------------------------------------------------------- predictor
def test_mape():
    assert mape([110, 90], [100, 100]) == pytest.approx(10.0)
    assert mape(np.array([2.0]), [1.0]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match='2 predictions for 1 true'):
        mape([1, 2], [1])
    with pytest.raises(ValueError, match='positive'):
        mape([1], [0])
    with pytest.raises(ValueError, match='no values'):
        mape([], [])


def test_nnls_matches_known_solution():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(40, 5))
    x_true = np.array([1.0, 0.0, 2.0, 0.5, 0.0])
    np.testing.assert_allclose(nnls(a, a @ x_true), x_true, atol=1e-9)
    x = nnls(a, -a @ x_true)  # best non-negative fit of a negative target is 0
    assert np.all(x >= 0) and np.allclose(x, 0)


def test_predictor_fits_exact_linear_model_and_round_trips(tmp_path):
    archs = _archs()
    y = [features(a, 1) @ TRUE_COEF for a in archs]
    train = [i for i in range(len(archs)) if i % 3]  # mixes every knob
    test = [i for i in range(len(archs)) if not i % 3]
    pred = LatencyPredictor(dict(note='synthetic')).fit([archs[i] for i in train],
                                                        [y[i] for i in train], in_channels=1)
    held = pred.predict_many([archs[i] for i in test], in_channels=1)
    assert mape(held, [y[i] for i in test]) < 1e-6
    assert all(v >= 0 for v in pred.coefficients.values())
    # batch size scales the work terms, not the per-call / per-block overhead
    b4 = pred.predict(archs[0], in_channels=1, batch_size=4)
    assert b4 == pytest.approx(features(archs[0], 1, 4) @ TRUE_COEF, rel=1e-6)
    assert b4 < 4 * pred.predict(archs[0], in_channels=1)

    path = pred.save(str(tmp_path / 'sub' / 'pred.json'))
    assert not [p for p in (tmp_path / 'sub').iterdir() if p.name != 'pred.json']  # no temps
    loaded = LatencyPredictor.load(path)
    assert loaded.meta['note'] == 'synthetic' and loaded.meta['n_train'] == len(train)
    for a in archs[:5]:
        assert loaded.predict(a, 1) == pred.predict(a, 1)
    assert json.load(open(path))['features'] == list(FEATURES)


def test_predictor_from_latency_table(tmp_path):
    from mmvitscale.cost.latency_table import append_rows, make_row
    fp_a, fp_b = dict(device='x', backend='eager'), dict(device='y', backend='eager')
    archs = _archs()[:8]
    rows = [make_row(fp_a, 'vit', a.as_dict(), (1, *a.img_size), 1,
                     dict(median_ms=float(features(a, 1) @ TRUE_COEF))) for a in archs]
    rows.append(make_row(fp_b, 'vit', archs[0].as_dict(), (1, 32, 32), 1, dict(median_ms=1e6)))
    table = str(tmp_path / 'table.jsonl')
    append_rows(table, rows)
    pred = LatencyPredictor.from_table(table, fp_a, family='vit')
    assert pred.meta['n_train'] == 8  # the other fingerprint's row is not used
    assert pred.predict(archs[3], 1) == pytest.approx(rows[3]['median_ms'], rel=1e-6)
    with pytest.raises(ValueError, match='0 rows for fingerprint'):
        LatencyPredictor.from_table(table, dict(device='z'))


def test_predictor_bad_inputs(tmp_path):
    archs = _archs()
    with pytest.raises(ValueError, match='3 architectures but 2 latencies'):
        LatencyPredictor().fit(archs[:3], [1.0, 2.0])
    with pytest.raises(ValueError, match='positive finite'):
        LatencyPredictor().fit(archs[:2], [1.0, -2.0])
    with pytest.raises(ValueError, match='at least 2'):
        LatencyPredictor().fit(archs[:1], [1.0])
    with pytest.raises(RuntimeError, match='fit'):
        LatencyPredictor().predict(archs[0])
    pred = LatencyPredictor().fit(archs[:4], [1.0, 2.0, 3.0, 4.0])
    pit = make_pit_arch((32, 32, 32), (2, 6, 4), (2, 4, 8), 4.0, 224, 16, 8)
    with pytest.raises(ValueError, match="fitted on \\['vit'\\] architectures, not 'pit'"):
        pred.predict(pit)
    bad = tmp_path / 'bad.json'
    bad.write_text('{"format": "other"}')
    with pytest.raises(ValueError, match='is not a latency predictor'):
        LatencyPredictor.load(str(bad))
    with pytest.raises(ValueError, match='not found'):
        LatencyPredictor.load(str(tmp_path / 'missing.json'))


def test_pit_features_sum_stages():
    pit = make_pit_arch((32, 32, 32), (2, 6, 4), (2, 4, 8), 4.0, 224, 16, 8)
    f = dict(zip(FEATURES, features(pit)))
    assert f['blocks'] == 12 and f['const'] == 1
    assert f['weights'] == sum(d * (4 * w * w + 2 * w * 4 * w) for d, w in
                               zip((2, 6, 4), (64, 128, 256)))
    # work terms scale with the batch, per-forward overheads do not
    f4 = dict(zip(FEATURES, features(pit, batch_size=4)))
    assert f4['linear'] == 4 * f['linear'] and f4['weights'] == f['weights']
    assert f['tokens'] == 2 * (27 * 27 + 1) + 6 * (14 * 14 + 1) + 4 * (7 * 7 + 1)


# ---------------------------------------------------------------------------- search pieces
def _cand(cost, score):
    return Candidate(rule={}, arch={}, flops=cost, score=score)


def test_pareto_front_hand_made():
    pts = [(1, 0.1), (2, 0.5), (2, 0.4), (3, 0.5), (4, 0.9), (0.5, 0.05), (5, 0.8), (4, 0.9)]
    assert pareto_front(pts) == [5, 0, 1, 4, 7]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [0]


def test_ranks_ties_and_non_finite():
    assert ranks([3.0, 1.0, 2.0], higher_is_better=False) == [2, 0, 1]
    assert ranks([3.0, 1.0, 2.0], higher_is_better=True) == [0, 2, 1]
    assert ranks([1.0, 1.0, 5.0], higher_is_better=True) == [1.5, 1.5, 0]
    assert ranks([math.inf, 2.0, math.nan], higher_is_better=False) == [1.5, 0, 1.5]


def test_budget_filter_and_exact_error():
    cands = [_cand(3e9, 0), _cand(1e9, 0), _cand(2e9, 0)]
    cands[1].rule = dict(depth_mult=0.5)
    assert [c.flops for c in filter_budget(cands, 2e9)] == [1e9, 2e9]
    with pytest.raises(BudgetError) as err:
        filter_budget(cands, 5e8)
    assert str(err.value) == ("no candidate meets the flops budget of 0.5 GFLOPs: the cheapest "
                              "candidate (scaling={'depth_mult': 0.5}) costs 1 GFLOPs")
    lat = [Candidate({}, {}, latency_ms=4.0)]
    with pytest.raises(BudgetError, match='latency budget of 2 ms.*costs 4 ms'):
        filter_budget(lat, 2.0, 'latency')
    with pytest.raises(ValueError, match='budget must be a positive number'):
        filter_budget(cands, -1)
    with pytest.raises(ValueError, match='cost must be one of'):
        filter_budget(cands, 1, 'energy')


def test_enumerate_dedups_and_skips_infeasible():
    base = BaseSpec('vit', FMNIST, 32, 4, 1)
    # width_mult 0.01 rounds width to 0 (infeasible); heads 1 and 1.2 give the same arch
    cands, infeasible = enumerate_candidates(
        base, dict(width_mult=(0.01, 1.0), heads_mult=(1.0, 1.2)))
    assert infeasible == 2 and len(cands) == 1 and cands[0].rule == {}
    with pytest.raises(ValueError, match="unknown vit scaling key 'patch_stride_mult'"):
        check_grids(dict(patch_stride_mult=(1, 2)), 'vit')
    with pytest.raises(ValueError, match='positive numbers'):
        check_grids(dict(depth_mult=(1, -2)), 'vit')
    with pytest.raises(ValueError, match='family must be one of'):
        BaseSpec('resnet')


def test_rule_file_text():
    text = rule_file_text(dict(depth_mult=1.5, width_mult=0.75), ['hello', 'world'])
    assert text == '# hello\n# world\nscaling = dict(depth_mult=1.5, width_mult=0.75)\n'
    assert rule_file_text({}) == 'scaling = dict()\n'


# ---------------------------------------------------------------------------- end to end
def test_flops_search_writes_loadable_rule(tmp_path):
    from mmengine.config import Config

    from mmvitscale.cost import vit_flops
    from mmvitscale.engine.config import load_with_rule
    from mmvitscale.rules import derive_image
    base = BaseSpec('vit', FMNIST, 32, 4, 1)
    grids = dict(depth_mult=(0.5, 1.0, 1.5), width_mult=(0.5, 1.0, 1.5))
    budget = 0.03e9
    res = run_search(base, budget, 'flops', 'flops', grids)
    assert res.num_enumerated == 9
    arch_flops = [c.flops for c in res.ranked]
    assert all(f <= budget for f in arch_flops) and len(arch_flops) < 9
    assert arch_flops == sorted(arch_flops, reverse=True)  # 'flops' scorer: bigger is better
    w = res.winner
    assert w.flops == vit_flops(base.resolve(w.rule), num_classes=0, in_channels=1)['total']
    # with the FLOPs scorer every candidate with more FLOPs scores higher: all on the front
    assert len(res.front) == len(res.ranked)

    rule_path = write_rule_file(str(tmp_path / 'searched.py'), w.rule, ['searched'])
    assert Config.fromfile(rule_path).scaling.to_dict() == w.rule
    cfg = load_with_rule(osp.join(ROOT, 'configs/cls/scaled_vit_fmnist.py'), rule_path)
    assert cfg.model.backbone.scaling == w.rule
    scaled = derive_image('vit', FMNIST, w.rule, img_size=32, patch_size=4)
    assert cfg.model.head.in_channels == scaled['arch']['embed_dims'] == w.arch['embed_dims']

    with pytest.raises(BudgetError, match='budget of 0.001 GFLOPs'):
        run_search(base, 1e6, 'flops', 'flops', grids)
    with pytest.raises(ValueError, match='needs a latency predictor'):
        run_search(base, 1.0, 'latency', 'flops', grids)
    with pytest.raises(ValueError, match='scorer must be one of'):
        run_search(base, 1e9, 'flops', 'accuracy', grids)


def test_latency_budget_search_uses_predictor():
    base = BaseSpec('vit', FMNIST, 32, 4, 1)
    archs = _archs()
    pred = LatencyPredictor().fit(archs, [features(a, 1) @ TRUE_COEF for a in archs], 1)
    grids = dict(depth_mult=(0.5, 1.0, 1.5))
    lats = sorted(pred.predict(base.resolve(dict(depth_mult=m)), 1) for m in (0.5, 1.0, 1.5))
    res = run_search(base, (lats[1] + lats[2]) / 2, 'latency', 'flops', grids, predictor=pred)
    assert len(res.ranked) == 2 and res.winner.rule == {}
    assert res.winner.latency_ms == pytest.approx(lats[1])


def test_proxy_search_runs_and_ranks():
    base = BaseSpec('vit', dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.0), 16,
                    4, 1)
    grids = dict(depth_mult=(0.5, 1.0, 2.0), width_mult=(1.0, 2.0))
    res = run_search(base, 1e9, 'flops', 'proxies', grids, batch_size=4, num_inits=1,
                     num_points=4, max_candidates=4)
    assert len(res.ranked) == 4  # the four costliest of the six
    scores = [c.score for c in res.ranked]
    assert scores == sorted(scores, reverse=True) and 0 <= min(scores) <= max(scores) <= 1
    for c in res.ranked:
        assert math.isfinite(c.metrics['ntk_condition']) and c.metrics['ntk_condition'] >= 1
        assert c.metrics['length_distortion'] > 0
        assert c.score == pytest.approx(1 - (c.metrics['rank_ntk'] + c.metrics['rank_length'])
                                        / 6)


def test_tool_cli(tmp_path, capsys):
    tool = osp.join(ROOT, 'tools', 'scale_search.py')
    out = str(tmp_path / 'rule.py')
    argv = ['--budget', '0.025', '--scorer', 'flops', '--only-grid', '--grid',
            'depth_mult=0.5,1,1.5', '--work-dir', str(tmp_path / 'wd'), '--out-rule', out]
    mod = runpy.run_path(tool)
    res = mod['main'](argv)
    assert osp.isfile(out) and osp.isfile(tmp_path / 'wd' / 'pareto.png')
    data = json.load(open(tmp_path / 'wd' / 'candidates.json'))
    assert data['num_feasible'] == len(res.ranked) == 2
    assert data['winner']['rule'] == res.winner.rule == {}
    md = (tmp_path / 'wd' / 'candidates.md').read_text()
    assert md.count('\n| ') == 1 + 2  # header + one row per feasible candidate
    with pytest.raises(SystemExit):
        mod['main'](argv[:1] + ['0.00001'] + argv[2:])
    assert 'no candidate meets the flops budget of 1e-05 GFLOPs' in capsys.readouterr().err
    for bad, msg in ((['--grid', 'depth=oops'], '--grid: expected KEY=V1,V2'),
                     (['--grid', 'foo_mult=1,2'], "unknown vit scaling key 'foo_mult'"),
                     (['--budget', '-1'], '--budget: must be a positive number'),
                     (['--cost', 'latency'], '--cost latency needs --predictor')):
        with pytest.raises(SystemExit):
            mod['parse_args'](argv + bad)
        assert msg in capsys.readouterr().err


@pytest.mark.parametrize('family', SEARCH_FAMILIES)
def test_tool_default_base_is_the_family_fmnist_config_backbone(family, tmp_path):
    """With no --arch the search's base is the backbone of configs/cls/scaled_<family>_fmnist.py
    (so the written rule drops into that config)."""
    from mmvitscale.engine.config import load_with_rule
    mod = runpy.run_path(osp.join(ROOT, 'tools', 'scale_search.py'))
    args = mod['parse_args'](['--family', family, '--budget', '1',
                              '--out-rule', str(tmp_path / 'r.py')])
    identity = write_rule_file(str(tmp_path / 'identity.py'), {})
    cfg = load_with_rule(osp.join(ROOT, f'configs/cls/scaled_{family}_fmnist.py'), identity)
    assert args.base.backbone_cfg({}) == cfg.model.backbone.to_dict()


def test_pit_flops_search(tmp_path):
    from mmvitscale.cost import get_complexity
    from mmvitscale.engine.config import load_with_rule
    arch = dict(base_dims=(16, 16, 16), depths=(1, 3, 2), heads=(2, 4, 8), patch_size=4,
                patch_stride=2)
    base = BaseSpec('pit', arch, 32, 4, 1)
    grids = dict(depth_mult=(1.0, 2.0), patch_stride_mult=(1.0, 2.0))
    full = run_search(base, 1e12, 'flops', 'flops', grids)
    assert full.num_enumerated == 4
    costs = sorted(c.flops for c in full.ranked)
    res = run_search(base, costs[2], 'flops', 'flops', grids)
    assert len(res.ranked) == 3 and res.winner.flops == costs[2]
    model = base.build(res.winner.rule)
    assert res.winner.flops == get_complexity(model, (1, 32, 32))['flops']
    rule = write_rule_file(str(tmp_path / 'pit_rule.py'), res.winner.rule)
    cfg = load_with_rule(osp.join(ROOT, 'configs/cls/scaled_pit_fmnist.py'), rule)
    assert cfg.model.backbone.scaling == res.winner.rule


def test_backbone_kwargs_cost_candidates_as_the_task_builds_them():
    """A task config without a class token: candidates are built and counted that way, so
    the search's FLOPs equal the study's count of the task's backbone."""
    from mmvitscale.cost import get_complexity
    from mmvitscale.experiments.tasks import get_task, input_shape
    from mmvitscale.registry import MODELS
    from mmvitscale.engine.config import load_with_rule
    from mmvitscale.search.rule_search import attach_costs
    arch = dict(embed_dims=64, num_layers=4, num_heads=2, mlp_ratio=2.0)
    kwargs = dict(with_cls_token=False, out_type='avg_featmap')
    plain = BaseSpec('vit', arch, 28, 7, 1)
    pooled = BaseSpec('vit', arch, 28, 7, 1, backbone_kwargs=kwargs)
    rule = dict(depth_mult=1.5, width_mult=1.25, mlp_ratio_mult=0.5, resolution_mult=0.75)
    counted = {}
    for name, base in (('plain', plain), ('pooled', pooled)):
        cands, _ = enumerate_candidates(base, dict(depth_mult=(1.0, 1.5), width_mult=(1.0, 1.25),
                                                   mlp_ratio_mult=(1.0, 0.5),
                                                   resolution_mult=(1.0, 0.75)))
        attach_costs(cands, base)
        counted[name] = {json.dumps(c.rule, sort_keys=True): c.flops for c in cands}
    key = json.dumps(rule, sort_keys=True)
    assert counted['pooled'][key] < counted['plain'][key]  # 9 tokens, not 10
    assert pooled.backbone_cfg(rule)['with_cls_token'] is False
    cfg = load_with_rule(get_task('cls').config_path, osp.join(
        ROOT, 'configs/_base_/scaling/search_deeper_lowres.py'))
    study = get_complexity(MODELS.build(cfg.model.backbone), input_shape(get_task('cls'), cfg))
    assert counted['pooled'][key] == study['flops']
    with pytest.raises(ValueError, match=r"backbone_kwargs must not set \['img_size'\]"):
        BaseSpec('vit', arch, 28, 7, 1, backbone_kwargs=dict(img_size=32))
    with pytest.raises(ValueError, match='backbone_kwargs must be a dict'):
        BaseSpec('vit', arch, 28, 7, 1, backbone_kwargs=[('with_cls_token', False)])
