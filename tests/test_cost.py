import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmvitscale.cost import count_params, get_complexity, vit_flops, vit_params
from mmvitscale.models import ScaledViT, SimpleFeaturePyramid


class Classifier(nn.Module):

    def __init__(self, backbone, classes=1000):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.embed_dims, classes)

    def forward(self, x):
        return self.head(self.backbone(x)[-1])


@pytest.mark.parametrize('arch, gflops, mparams', [
    ('deit-tiny', 1.258, 5.717),
    ('deit-small', 4.608, 22.05),
    ('deit-base', 17.58, 86.57),
])
def test_deit_reference_costs(arch, gflops, mparams):
    model = Classifier(ScaledViT(arch))
    cost = get_complexity(model, (3, 224, 224))
    assert cost['flops'] / 1e9 == pytest.approx(gflops, rel=5e-3)
    assert cost['params'] / 1e6 == pytest.approx(mparams, rel=5e-3)
    spec = model.backbone.arch_spec
    assert cost['flops'] == vit_flops(spec)['total']
    assert cost['params'] == vit_params(spec)


def test_attention_is_counted():
    """The fused SDPA kernel contributes exactly 2 N^2 D per block."""
    model = ScaledViT('deit-tiny')
    by_op = get_complexity(model, (3, 224, 224))['by_op']
    sdpa = {k: v for k, v in by_op.items() if 'scaled_dot_product' in k}
    assert len(sdpa) == 1
    assert sum(sdpa.values()) == 12 * 2 * 197**2 * 192
    assert vit_flops(model.arch_spec)['attention'] == 12 * 2 * 197**2 * 192


def test_fused_and_explicit_attention_count_the_same():

    def explicit(q, k, v, dropout_p=0.0, **kw):
        attn = (q @ k.transpose(-2, -1)) * q.shape[-1]**-0.5
        return attn.softmax(-1) @ v

    model = ScaledViT(dict(embed_dims=64, num_layers=2, num_heads=4), img_size=64)
    fused = get_complexity(model, (3, 64, 64))['flops']
    orig = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = explicit
    try:
        manual = get_complexity(model, (3, 64, 64))
    finally:
        F.scaled_dot_product_attention = orig
    assert 'bmm' in manual['by_op']
    assert manual['flops'] == fused


@pytest.mark.parametrize('rule', [
    dict(depth=5, width_mult=0.5, heads=2),
    dict(mlp_ratio=3.0, resolution=160, patch_size=20),
    dict(resolution_mult=1.3, patch_size=32, depth_mult=0.25),
])
def test_analytic_formula_matches_counter(rule):
    model = Classifier(ScaledViT('deit-tiny', scaling=rule), classes=10)
    spec = model.backbone.arch_spec
    cost = get_complexity(model, (3, *spec.img_size))
    assert cost['flops'] == vit_flops(spec, num_classes=10)['total']
    assert cost['params'] == vit_params(spec, num_classes=10)


def test_conv_and_transposed_conv_counts():
    neck = SimpleFeaturePyramid(8, 4, scale_factors=(2.0, ), num_outs=1)
    cost = get_complexity(neck, (8, 5, 5))
    # deconv 8->4 (k2 s2): every input pixel x kernel x cout; 1x1 4->4 and 3x3 4->4 at 10x10
    deconv = 25 * 8 * 4 * 4
    conv = 100 * 4 * 4 + 100 * 4 * 4 * 9
    norms = 2 * 5 * 4 * 100
    assert cost['flops'] == deconv + conv + norms
    assert cost['params'] == count_params(neck)


def test_count_params_counts_shared_once():
    lin = nn.Linear(3, 3)
    assert count_params(nn.Sequential(lin, lin)) == 12
    lin.weight.requires_grad = False
    assert count_params(lin, trainable_only=True) == 3


def test_counts_inside_inference_mode():
    lin = nn.Linear(4, 3)
    with torch.inference_mode():
        assert get_complexity(lin, (4, ))['flops'] == 12


def test_get_complexity_restores_training_mode():
    model = ScaledViT(dict(embed_dims=16, num_layers=1, num_heads=2), img_size=32)
    model.train()
    get_complexity(model, (3, 32, 32))
    assert model.training
    with pytest.raises(ValueError, match='needs input_shape or inputs'):
        get_complexity(model, None)
