"""Attention type as a dimension of the budgeted scaling search (Castling-ViT)."""
import json
import os.path as osp
import runpy

import pytest
from mmengine.config import Config

from mmvitscale.cost import get_complexity, vit_flops
from mmvitscale.models import ScaledViT
from mmvitscale.models.linear_attention import LinearAngularAttention
from mmvitscale.engine.config import load_with_rule
from mmvitscale.rules import derive_image
from mmvitscale.search.rule_search import (BaseSpec, enumerate_candidates, run_search,
                                           write_rule_file)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
FMNIST = dict(embed_dims=64, num_layers=6, num_heads=2, mlp_ratio=4.0)
CLS_CONFIG = osp.join(ROOT, 'configs/cls/scaled_vit_fmnist.py')
BOTH = ['softmax', 'linear_angular']


def test_search_over_attn_types_costs_each_type():
    base = BaseSpec('vit', FMNIST, 32, 4, 1, linear_kernel_size=5)
    grids = dict(depth_mult=(0.5, 1.0))
    res = run_search(base, 1e9, 'flops', 'flops', grids, attn_types=BOTH)
    assert res.num_enumerated == 4 and len(res.ranked) == 4
    by_key = {(c.rule.get('depth_mult', 1.0), c.rule['attn_type']): c for c in res.ranked}
    assert set(by_key) == {(d, a) for d in (0.5, 1.0) for a in BOTH}
    for (depth, attn), c in by_key.items():
        arch = base.resolve(c.rule)
        assert c.flops == vit_flops(arch, num_classes=0, in_channels=1, attn_type=attn,
                                    linear_kernel_size=5)['total']
        model = base.build(c.rule)  # the rule's attn_type reaches the backbone
        assert model.attn_type == attn
        assert c.flops == get_complexity(model, (1, 32, 32))['flops']
    for depth in (0.5, 1.0):
        assert by_key[depth, 'softmax'].flops != by_key[depth, 'linear_angular'].flops
    scores = [c.score for c in res.ranked]
    assert scores == sorted(scores, reverse=True) and scores[0] == max(c.flops for c in res.ranked)


def test_kernel_too_big_for_the_grid_is_infeasible_and_default_unchanged():
    base = BaseSpec('vit', FMNIST, 32, 4, 1)  # kernel 9: fits 8x8 (<= 15), not 4x4 (<= 7)
    grids = dict(patch_size_mult=(1.0, 2.0))
    cands, infeasible = enumerate_candidates(base, grids, BOTH)
    assert infeasible == 1
    assert [c.rule for c in cands] == [{'attn_type': 'softmax'},
                                       {'patch_size_mult': 2.0, 'attn_type': 'softmax'},
                                       {'attn_type': 'linear_angular'}]
    plain, _ = enumerate_candidates(base, grids)  # not searched: no attn_type in the rules
    assert [c.rule for c in plain] == [{}, {'patch_size_mult': 2.0}]
    with pytest.raises(ValueError, match="unknown attention type 'performer'"):
        enumerate_candidates(base, grids, ['performer'])
    with pytest.raises(ValueError, match='latency predictor models softmax attention only'):
        run_search(base, 1.0, 'latency', 'flops', grids, predictor=object(), attn_types=BOTH)
    with pytest.raises(ValueError, match="attn_type must be one of"):
        write_rule_file('/nonexistent/rule.py', dict(attn_type='linear'))
    with pytest.raises(ValueError, match='linear_kernel_size must be odd, got 4'):
        BaseSpec('vit', FMNIST, 32, 4, 1, linear_kernel_size=4)


def test_tool_winner_with_attn_type_builds_through_cls_config(tmp_path):
    from mmengine.registry import MODELS, DefaultScope
    tool = osp.join(ROOT, 'tools', 'scale_search.py')
    out = str(tmp_path / 'rule.py')
    # kernel 9 on the 8x8 grid: the dwconv makes linear-angular costlier than softmax here,
    # so the 'flops' scorer (more is better) picks it
    argv = ['--budget', '0.05', '--scorer', 'flops', '--only-grid', '--grid',
            'depth_mult=0.5,1', '--attn-types', *BOTH, '--work-dir', str(tmp_path / 'wd'),
            '--out-rule', out]
    mod = runpy.run_path(tool)
    res = mod['main'](argv)
    w = res.winner
    assert w.rule == {'attn_type': 'linear_angular'}
    data = json.load(open(tmp_path / 'wd' / 'candidates.json'))
    assert sorted(c['rule']['attn_type'] for c in data['candidates']) == sorted(BOTH * 2)
    assert data['attn_types'] == BOTH and data['linear_kernel_size'] == 9
    text = open(out).read()
    assert "scaling = dict(attn_type='linear_angular')" in text
    assert 'linear_kernel_size=9' in text
    assert Config.fromfile(out).scaling.to_dict() == w.rule

    scaled = derive_image('vit', FMNIST, w.rule, img_size=32, patch_size=4)
    assert scaled['backbone']['scaling'] == w.rule and scaled['input_size'] == (32, 32)
    cfg = load_with_rule(CLS_CONFIG, out)
    assert cfg.model.backbone.scaling.to_dict() == w.rule
    DefaultScope.get_instance(f'castling-{id(cfg)}', scope_name=cfg.default_scope)
    model = MODELS.build(cfg.model)
    backbone = model.backbone
    assert isinstance(backbone, ScaledViT) and backbone.attn_type == 'linear_angular'
    assert all(isinstance(b.attn, LinearAngularAttention) for b in backbone.blocks)
    assert get_complexity(backbone, (1, 32, 32))['flops'] == w.flops

    with pytest.raises(SystemExit):
        mod['parse_args'](argv + ['--cost', 'latency', '--predictor', 'p.json'])
    with pytest.raises(SystemExit):
        mod['parse_args'](argv + ['--linear-kernel-size', '4'])


def test_video_rule_with_attn_type_reaches_the_backbone():
    from mmvitscale.models import LinearAngularAttention, ScaledVideoViT
    from mmvitscale.rules import derive_video
    derived = derive_video(dict(embed_dims=32, num_layers=2, num_heads=2),
                           dict(attn_type='linear_angular', depth_mult=1.5), img_size=32,
                           patch_size=8, num_frames=4, linear_kernel_size=3,
                           attention_type='joint')
    assert derived['arch']['num_layers'] == 3
    kwargs = {k: v for k, v in derived['backbone'].items() if k != 'type'}
    model = ScaledVideoViT(**kwargs)
    assert all(isinstance(b.attn, LinearAngularAttention) for b in model.blocks)
