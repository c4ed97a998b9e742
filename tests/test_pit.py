import pytest
import torch
from torch import nn

from mmvitscale.cost import get_complexity
from mmvitscale.models import ScaledPiT, ScaledViT
from mmvitscale.models.layers import TransformerBlock


def tiny(**kw):
    kw.setdefault('arch', dict(base_dims=(8, 8, 8), depths=(1, 2, 1), heads=(1, 2, 4),
                               patch_size=8, patch_stride=4))
    kw.setdefault('img_size', 64)
    model = ScaledPiT(**kw)
    model.init_weights()
    return model.eval()


def test_block_is_shared_with_vit():
    pit, vit = tiny(), ScaledViT(dict(embed_dims=16, num_layers=1, num_heads=2), img_size=32)
    assert type(pit.transformers[0].blocks[0]) is type(vit.blocks[0]) is TransformerBlock


@pytest.mark.parametrize('arch, gflops, mparams', [
    ('pit-ti', 0.70, 4.85), ('pit-xs', 1.40, 10.62), ('pit-s', 2.88, 23.46),
    ('pit-b', 12.42, 73.76)])
def test_pit_reference_costs(arch, gflops, mparams):
    backbone = ScaledPiT(arch)
    model = nn.Sequential(backbone, _Head(backbone.embed_dims))
    cost = get_complexity(model, (3, 224, 224))
    assert cost['flops'] / 1e9 == pytest.approx(gflops, rel=1e-2)
    assert cost['params'] / 1e6 == pytest.approx(mparams, rel=1e-2)


class _Head(nn.Module):

    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Linear(dim, 1000)

    def forward(self, feats):
        return self.fc(feats[-1])


def test_multi_stage_featmaps_for_detection():
    model = tiny(out_indices=(0, 1, 2), out_type='featmap')
    outs = model(torch.randn(2, 3, 64, 64))
    # grid (64 - 8) / 4 + 1 = 15 -> 8 -> 4: strides ~4 / 8 / 16 of the input
    assert [o.shape for o in outs] == [(2, 8, 15, 15), (2, 16, 8, 8), (2, 32, 4, 4)]
    assert model.arch_spec.grids == ((15, 15), (8, 8), (4, 4))


@pytest.mark.parametrize('out_type, shape', [('cls_token', (2, 32)), ('avg_featmap', (2, 32)),
                                             ('raw', (2, 17, 32))])
def test_out_types(out_type, shape):
    assert tiny(out_type=out_type)(torch.randn(2, 3, 64, 64))[0].shape == shape
    single = tiny(out_type=out_type, return_tuple=False)(torch.randn(2, 3, 64, 64))
    assert isinstance(single, torch.Tensor) and single.shape == shape


def test_pos_embed_resizes_at_forward_and_on_load():
    model = tiny(out_type='featmap')
    out = model(torch.randn(1, 3, 96, 96))[0]
    assert out.shape == (1, 32, 6, 6)  # (96 - 8) / 4 + 1 = 23 -> 12 -> 6
    big = tiny(img_size=96)
    big.load_state_dict(model.state_dict())
    assert big.pos_embed.shape == (1, 8, 23, 23)
    x = torch.randn(1, 3, 96, 96)
    big.out_type = 'featmap'
    torch.testing.assert_close(big(x)[0], model(x)[0])


def test_scaling_rules():
    spec = ScaledPiT.resolve_arch('pit-ti', scaling=dict(depth_mult=1.5, width_mult=1.25,
                                                         resolution=256, patch_stride=16))
    assert spec.depths == (3, 9, 6) and spec.base_dims == (40, 40, 40)
    assert spec.embed_dims == (80, 160, 320) and spec.img_size == (256, 256)
    assert spec.grids[0] == (16, 16)
    spec = ScaledPiT.resolve_arch('pit-xs', scaling=dict(depth=[1, 2, 3], heads=[1, 2, 4]))
    assert spec.depths == (1, 2, 3) and spec.embed_dims == (48, 96, 192)


@pytest.mark.parametrize('rule, depths', [
    (dict(depth_mult=1.25), (1, 3, 1)),   # rounding each stage would leave [1, 2, 1]
    (dict(depth_mult=0.75), (1, 1, 1)),   # ... and here too
    (dict(depth_mult=1.5), (1, 3, 2)),    # total 6; the tie goes to the later stage
    (dict(depth_mult=2.0), (2, 4, 2)),
    (dict(depth=[3, 1, 2]), (3, 1, 2)),
])
def test_depth_mult_scales_the_total_depth(rule, depths):
    from mmvitscale.scaling import make_pit_arch, scale_pit
    base = make_pit_arch([16, 16, 16], [1, 2, 1], [2, 4, 8], 2.0, 28, 4, 4)
    assert scale_pit(base, rule).depths == depths
    assert sum(depths) == round(sum(base.depths) * rule.get('depth_mult', 1.5))


def test_patch_size_mult_scales_the_stride_unless_the_rule_sets_it():
    from mmvitscale.scaling import make_pit_arch, scale_pit
    base = make_pit_arch([16, 16, 16], [1, 2, 1], [2, 4, 8], 2.0, 28, 4, 4)
    arch = scale_pit(base, dict(patch_size_mult=2.0, resolution_mult=1.5))
    assert (arch.patch_size, arch.patch_stride, arch.img_size) == (8, 8, (40, 40))
    assert arch.grids[0] == (5, 5)  # fewer, larger tokens, as on ViT
    arch = scale_pit(base, dict(patch_size_mult=2.0, patch_stride_mult=1.0))
    assert (arch.patch_size, arch.patch_stride, arch.grids[0]) == (8, 4, (6, 6))
    ti = ScaledPiT.resolve_arch('pit-ti', scaling=dict(patch_size_mult=0.5))  # 16/8 overlap kept
    assert (ti.patch_size, ti.patch_stride) == (8, 4)


@pytest.mark.parametrize('rule, message', [
    (dict(depth=[1, 2]), 'scaling.depth must be 3 positive integers (one per stage), got [1, 2]'),
    (dict(depth_mult=0.1), 'scaling.depth_mult=0.1 turns depth 2 into 0'),
    (dict(window=2), "unknown scaling key 'window' (value 2)"),
    (dict(resolution=8), 'scaling: resolution=8 is smaller than patch_size=16'),
])
def test_bad_rules(rule, message):
    with pytest.raises(ValueError) as err:
        ScaledPiT('pit-ti', scaling=rule)
    assert message in str(err.value)


def test_non_multiple_widths_use_grouped_pooling():
    model = tiny(scaling=dict(heads=[2, 3, 4]))
    assert model.arch_spec.embed_dims == (16, 24, 32)
    assert model.transformers[1].pool.conv.groups == 8
    assert model(torch.randn(1, 3, 64, 64))[0].shape == (1, 32)


def test_patch_size_mult_names_itself_when_the_stride_vanishes():
    from mmvitscale.scaling import make_pit_arch, scale_pit
    base = make_pit_arch([16, 16, 16], [1, 2, 1], [2, 4, 8], 2.0, 32, 16, 8)
    with pytest.raises(ValueError) as err:
        scale_pit(base, dict(patch_size_mult=0.06))
    assert str(err.value) == ('scaling.patch_size_mult=0.06 turns patch_stride 8 into 0; it '
                              'must stay >= 1')
