"""Weight-sharing supernet scorer: slicing rules, exactness of extraction, the study's pieces
(subnet choice, input checks, Kendall tau, report), tiny end-to-end."""
import json
import math
import os.path as osp
import random

import pytest
import scipy.stats as sps
import torch
import torch.nn.functional as F

from mmvitscale.experiments import supernet_study as study
from mmvitscale.experiments.stats import kendall_tau
from mmvitscale.models.layers import eager_linear
from mmvitscale.models.vit import ScaledViT
from mmvitscale.errors import InputError
from mmvitscale.search.supernet import (SlicedViT, SubnetArch, ViTClassifier, build_subnet,
                                        check_subnet, extract_subnet, pick_subnets, sandwich_archs,
                                        score_subnets, search_space, smallest_subnet,
                                        train_supernet)
from scripts import load_script

SUPER = SubnetArch(embed_dims=32, num_layers=3, num_heads=4, mlp_ratio=2.0, img_size=16,
                   patch_size=4)  # head dim 8


def _supernet(seed=0):
    torch.manual_seed(seed)
    net = SlicedViT(SUPER, in_channels=1, num_classes=10)
    with torch.no_grad():  # non-trivial LayerNorms / biases / tokens, so slicing bugs show
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net.eval()


@pytest.mark.parametrize('sub', [
    SubnetArch(16, 2, 2, 1.5, 16, 4),   # narrower, shallower, fewer heads, narrower MLP
    SubnetArch(24, 3, 3, 2.0, 12, 4),   # other resolution (pos-embed resampled)
    SubnetArch(32, 1, 4, 1.0, 24, 4),   # full width, one block, larger resolution
])
def test_extracted_scaledvit_equals_sliced_forward(sub):
    net = _supernet()
    model = build_subnet(net.state_dict(), SUPER, sub)
    assert isinstance(model.backbone, ScaledViT)
    assert model.backbone.embed_dims == sub.embed_dims
    assert len(model.backbone.blocks) == sub.num_layers
    assert model.backbone.blocks[0].attn.num_heads == sub.num_heads
    assert model.backbone.blocks[0].mlp.fc1.out_features == sub.mlp_hidden
    x = torch.randn(3, 1, sub.img_size, sub.img_size)
    with torch.no_grad(), eager_linear():
        assert torch.equal(model(x), net(x, sub))


def test_sub_equal_super_is_the_supernet():
    net = _supernet()
    state = extract_subnet(net.state_dict(), SUPER, SUPER)
    assert state.keys() == net.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad(), eager_linear():
        ref = ViTClassifier.forward(net, x)  # the plain ScaledViT forward of the supernet
        assert torch.equal(net(x), ref)
        assert torch.equal(net(x, SUPER), ref)
        assert torch.equal(build_subnet(net.state_dict(), SUPER, SUPER)(x), ref)


def test_qkv_slicing_keeps_q_k_v_and_heads_aligned():
    Ds, D = SUPER.embed_dims, 16  # 4 heads of 8 -> first 2 heads
    sub = SubnetArch(D, 1, 2, 2.0, 16, 4)
    row = torch.arange(3 * Ds, dtype=torch.float32)
    state = {'blocks.0.attn.qkv.weight': row[:, None] * 100 + torch.arange(Ds)[None],
             'blocks.0.attn.qkv.bias': row.clone()}
    out = extract_subnet(state, SUPER, sub)
    w, b = out['blocks.0.attn.qkv.weight'], out['blocks.0.attn.qkv.bias']
    assert w.shape == (3 * D, D) and b.shape == (3 * D, )
    expect_rows = torch.cat([torch.arange(D) + j * Ds for j in range(3)]).float()
    assert torch.equal(b, expect_rows)
    assert torch.equal(w, expect_rows[:, None] * 100 + torch.arange(D)[None])

    # semantics: on inputs whose extra channels are zero, the subnet's heads are exactly the
    # supernet's first heads (the FBNetV2 channel-masking view of the same slicing)
    net = _supernet()
    attn = net.backbone.blocks[0].attn
    sub_state = extract_subnet(net.state_dict(), SUPER, sub)
    x = torch.randn(2, 5, D)
    x_pad = F.pad(x, (0, Ds - D))

    def heads(inp, weight, bias, n, hd):
        B, N, _ = inp.shape
        q, k, v = F.linear(inp, weight, bias).reshape(B, N, 3, n, hd).permute(2, 0, 3, 1,
                                                                              4).unbind(0)
        return F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, hd)

    full = heads(x_pad, attn.qkv.weight, attn.qkv.bias, SUPER.num_heads, SUPER.head_dim)
    part = heads(x, sub_state['backbone.blocks.0.attn.qkv.weight'],
                 sub_state['backbone.blocks.0.attn.qkv.bias'], sub.num_heads, SUPER.head_dim)
    torch.testing.assert_close(part, full[:, :sub.num_heads], rtol=1e-5, atol=1e-6)


def test_other_slices_and_validation():
    net = _supernet()
    sub = SubnetArch(16, 2, 2, 1.5, 8, 4)
    st = extract_subnet(net.state_dict(), SUPER, sub)
    sup = net.state_dict()
    assert not any(k.startswith('backbone.blocks.2.') for k in st)
    assert torch.equal(st['backbone.blocks.1.norm2.weight'],
                       sup['backbone.blocks.1.norm2.weight'][:16])
    assert torch.equal(st['backbone.norm.bias'], sup['backbone.norm.bias'][:16])
    assert torch.equal(st['backbone.blocks.0.mlp.fc1.weight'],
                       sup['backbone.blocks.0.mlp.fc1.weight'][:24, :16])
    assert torch.equal(st['backbone.blocks.0.mlp.fc2.weight'],
                       sup['backbone.blocks.0.mlp.fc2.weight'][:16, :24])
    assert torch.equal(st['head.weight'], sup['head.weight'][:, :16])
    assert st['backbone.pos_embed'].shape == (1, 1 + 2 * 2, 16)
    assert torch.equal(st['backbone.pos_embed'][:, 0], sup['backbone.pos_embed'][:, 0, :16])
    for bad in (SubnetArch(16, 2, 4, 2.0, 16, 4),    # head dim 4 != 8
                SubnetArch(40, 2, 5, 2.0, 16, 4),    # wider than the supernet
                SubnetArch(16, 4, 2, 2.0, 16, 4),    # deeper
                SubnetArch(16, 2, 2, 8.0, 16, 4),    # MLP wider
                SubnetArch(16, 2, 2, 2.0, 18, 4)):   # not a patch multiple
        with pytest.raises(ValueError):
            check_subnet(SUPER, bad)


def test_sandwich_and_tiny_end_to_end_scores_three_subnets():
    torch.manual_seed(0)
    net = SlicedViT(SUPER, in_channels=1, num_classes=10)
    space = search_space(SUPER, [1, 3], [16, 32], [1.0, 2.0], [8, 16])
    assert smallest_subnet(space) == SubnetArch(16, 1, 2, 1.0, 8, 4)
    archs = sandwich_archs(SUPER, space, 2, random.Random(0))
    assert archs[0] == SUPER and archs[1] == smallest_subnet(space) and len(archs) == 4
    x, y = torch.randn(64, 1, 16, 16), torch.randint(0, 10, (64, ))
    before = net.head.weight.detach().clone()
    stats = train_supernet(net, space, x, y, epochs=1, batch_size=32, num_random=1)
    assert stats['steps'] == 2 and not torch.equal(before, net.head.weight)
    subs = [SUPER, space[0], space[-3]]
    scores = score_subnets(net, subs, x[:40], y[:40])
    assert [s['label'] for s in scores] == [a.label for a in subs]
    assert all(0.0 <= s['accuracy'] <= 1.0 for s in scores)


def _tool():
    return load_script('tools/supernet_scorer.py')


def test_pick_subnets_largest_smallest_then_distinct_random():
    space = search_space(SUPER, [1, 2, 3], [16, 24, 32], [1.0, 2.0], [8, 16])
    small = smallest_subnet(space)
    picked = pick_subnets(space, SUPER, 6, seed=3)
    assert picked[:2] == [SUPER, small] and len(picked) == 6
    assert len(set(picked)) == 6 and all(a in space for a in picked)
    assert picked == pick_subnets(space, SUPER, 6, seed=3)  # deterministic in the seed
    assert pick_subnets(space, SUPER, 2) == [SUPER, small]
    assert len(pick_subnets(space, SUPER, 10 ** 6)) == len(space)  # capped by the space
    assert pick_subnets([SUPER], SUPER, 5) == [SUPER]  # largest == smallest: once


def test_rank_agreement_is_stats_kendall_tau_and_matches_scipy():
    acc = [0.61, 0.52, 0.66, 0.58, 0.49, 0.63]
    scratch = [0.40, 0.31, 0.45, 0.30, 0.28, 0.47]
    res = study.rank_agreement([dict(accuracy=a, scratch_accuracy=b)
                                for a, b in zip(acc, scratch)])
    ref = sps.kendalltau(acc, scratch)
    assert res == kendall_tau(acc, scratch)
    assert res.tau == pytest.approx(ref.statistic) and res.p_value == pytest.approx(ref.pvalue)
    assert res.n == 6 and res.method == 'exact'
    flat = study.rank_agreement([dict(accuracy=a, scratch_accuracy=0.1) for a in acc])
    assert math.isnan(flat.tau) and math.isnan(flat.p_value)  # a constant side


def _report(kendall):
    scores = [dict(arch=SUPER.as_dict(), label=SUPER.label, accuracy=0.5, seconds=0.1,
                   params=1234, scratch_accuracy=0.25, scratch_seconds=1.0,
                   scratch_seeds=[0, 1], scratch_accuracies=[0.2, 0.3]),
              dict(arch=SUPER.as_dict(), label='small', accuracy=0.4, seconds=0.1, params=99,
                   scratch_accuracy=0.2, scratch_seconds=1.0, scratch_seeds=[0, 1],
                   scratch_accuracies=[0.25, 0.15]),
              dict(arch=SUPER.as_dict(), label='mid', accuracy=0.45, seconds=0.1, params=500,
                   scratch_accuracy=0.3, scratch_seconds=1.0, scratch_seeds=[0, 1],
                   scratch_accuracies=[0.35, 0.25])]
    config = dict(num_random=2, super_images=10, super_epochs=1, val_images=5,
                  scratch_images=4, scratch_epochs=1, scratch_seeds=[0, 1], threads=1, seed=0)
    return study.build_report(SUPER, 7, config, dict(steps=1, final_loss=2.0, seconds=3.0),
                              scores, kendall, 9.0, '0.00 0.00 0.00', 'cmd')


def test_report_keys_markdown_and_files(tmp_path):
    res = study.rank_agreement(_report(None)['subnets'])
    report = _report(res)
    for key in ('supernet', 'search_space_size', 'config', 'supernet_train', 'subnets',
                'kendall_tau', 'kendall_p', 'wall_seconds', 'load_start', 'load_end', 'torch',
                'python', 'command'):
        assert key in report, key
    assert report['kendall_tau'] == res.tau and report['kendall_p'] == res.p_value
    assert report['kendall'] == dict(tau=res.tau, p_value=res.p_value, n=3, method='exact')
    over = report['over_seeds']
    # seed 0 ranks small > super, seed 1 super > small: per-seed taus and the ceiling differ
    seed0, seed1 = [0.2, 0.25, 0.35], [0.3, 0.15, 0.25]
    acc = [0.5, 0.4, 0.45]
    assert over['per_seed'] == pytest.approx([sps.kendalltau(acc, seed0).statistic,
                                              sps.kendalltau(acc, seed1).statistic])
    assert over['seed_agreement']['mean_tau'] == pytest.approx(
        sps.kendalltau(seed0, seed1).statistic)
    md = study.to_markdown(report)
    assert f"{res.tau:.3f}** (p = {res.p_value:.3g}, K = 3; 95% bootstrap interval" in md
    assert 'mean over 2 seed(s) [0, 1]' in md and 'Seed-to-seed ceiling' in md
    assert '| `small` | 99 | 0.4000 | 0.2000 | 0.2500, 0.1500 |' in md
    paths = study.write_report(report, str(tmp_path / 'a'))
    assert sorted(paths) == ['json', 'md', 'png'] and all(osp.exists(p) for p in paths.values())
    assert json.loads(open(paths['json']).read())['kendall']['n'] == 3
    scored_only = _report(None)  # --skip-scratch: no tau, no figure
    assert scored_only['kendall_tau'] is None and scored_only['kendall'] is None
    assert scored_only['over_seeds'] is None
    assert 'Kendall' not in study.to_markdown(scored_only)
    assert sorted(study.write_report(scored_only, str(tmp_path / 'b'))) == ['json', 'md']


@pytest.mark.parametrize('change, names, detail', [
    (dict(subnets=1), ('subnets', ), r'must be >= 2 .*got 1'),
    (dict(super_images=0), ('super_images', ), 'must be >= 1, got 0'),
    (dict(lr=0.0), ('lr', ), 'must be > 0, got 0.0'),
    (dict(num_random=-1), ('num_random', ), 'must be >= 0, got -1'),
    (dict(embed_dims=30), ('embed_dims', 'num_heads'), 'must divide .*got 30 / 4'),
    (dict(img_size=30), ('img_size', 'patch_size'), 'must divide, got 30 / 4'),
    (dict(depths=()), ('depths', ), 'at least one value'),
    (dict(scratch_seeds=(1, 1)), ('scratch_seeds', ), r'distinct integers >= 0, got \[1, 1\]'),
    (dict(seed=-1), ('seed', ), 'must be >= 0, got -1'),
    (dict(widths=(40, )), ('depths', 'widths', 'mlp_ratios', 'resolutions'), 'no subnet'),
])
def test_check_spec_names_the_field_and_value(change, names, detail, tmp_path):
    spec = study.SupernetStudySpec(**{**dict(data_root=str(tmp_path)), **change})
    with pytest.raises(InputError, match=detail) as err:
        study.check_spec(spec)
    assert err.value.names == names


def test_check_spec_refuses_a_folder_without_the_data(tmp_path):
    with pytest.raises(InputError, match='Fashion-MNIST not found') as err:
        study.check_spec(study.SupernetStudySpec(data_root=str(tmp_path)))
    assert err.value.names == ('data_root', )


def test_tool_refuses_bad_flags_before_any_work(tmp_path, capsys):
    tool, out = _tool(), tmp_path / 'out'
    for argv, message in ((['--subnets', '1'], '--subnets: must be >= 2'),
                          (['--widths', '40', '--embed-dims', '32'],
                           '--depths / --widths / --mlp-ratios / --resolutions: hold no subnet'),
                          (['--num-heads', '5'], '--embed-dims / --num-heads: must divide'),
                          (['--threads', '0'], '--threads: must be >= 1, got 0'),
                          (['--data-root', str(tmp_path)], '--data-root: Fashion-MNIST not')):
        with pytest.raises(SystemExit) as exc:
            tool.main(argv + ['--work-dir', str(out)])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err.strip().splitlines()[-1], argv
    assert not out.exists()


@pytest.mark.slow
def test_tool_tiny_run(tmp_path):
    from mmvitscale import datasets
    data = str(tmp_path / 'fashion_mnist')  # a clean checkout has no data/
    try:
        datasets.prepare_classification(data)
    except datasets.FashionMNISTNotFoundError as err:
        pytest.skip(str(err))
    tmp_path = tmp_path / 'out'
    tmp_path.mkdir()
    report = _tool().main([
        '--data-root', data, '--work-dir', str(tmp_path), '--embed-dims', '32', '--num-heads',
        '4', '--num-layers', '2', '--depths', '1,2', '--widths', '16,32', '--super-images',
        '128', '--super-epochs', '1', '--subnets', '3', '--scratch-images', '64',
        '--scratch-epochs', '1', '--scratch-seeds', '0', '1', '--val-images', '100',
        '--batch-size', '64', '--log-every', '1'
    ])
    assert len(report['subnets']) == 3 and 'kendall_tau' in report
    saved = json.loads((tmp_path / 'supernet_scores.json').read_text())
    assert len(saved['subnets']) == 3
    for s in saved['subnets']:
        assert s['scratch_seeds'] == [0, 1] and len(s['scratch_accuracies']) == 2
        assert s['scratch_accuracy'] == pytest.approx(sum(s['scratch_accuracies']) / 2)
    assert len(saved['over_seeds']['per_seed']) == 2
    assert (tmp_path / 'supernet_scores.md').exists()
    assert (tmp_path / 'supernet_vs_scratch.png').exists()
    assert (tmp_path / 'supernet.pth').exists()
    # Kendall tau and its p-value as scipy computes them on the same numbers
    acc = [s['accuracy'] for s in saved['subnets']]
    scratch = [s['scratch_accuracy'] for s in saved['subnets']]
    ref = sps.kendalltau(acc, scratch)
    for got, want in ((saved['kendall_tau'], ref.statistic), (saved['kendall_p'], ref.pvalue),
                      (saved['kendall']['tau'], ref.statistic),
                      (saved['kendall']['p_value'], ref.pvalue)):
        assert got == pytest.approx(want, nan_ok=True)
    assert saved['kendall']['n'] == 3
