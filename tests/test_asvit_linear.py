"""AsViT with Castling-ViT linear-angular attention: windows, conversion, errors, FLOPs."""
import math
from typing import Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from mmvitscale.cost import get_complexity
from mmvitscale.models.asvit import AsViT
from mmvitscale.models.layers import Attention, TransformerBlock
from mmvitscale.models.linear_attention import (LinearAngularAttention, aux_regularizer,
                                                convert_to_inference)

# img 64: stage maps 16, 8, 4, 2; windows 4x4, 4x4, 2x2, 2x2
ARCH = dict(width=16, depths=(1, 2, 1, 1), heads=16, mlp_ratios=(2, 3, 4, 2),
            tokenizer_kernel=7, down_kernels=(3, 4, 2), splits=(4, 2, 2, 1))
GLOBAL = dict(ARCH, splits=(1, 1, 1, 1))
LIN = 'linear_angular'


def build(**kw) -> AsViT:
    kw.setdefault('arch', ARCH)
    kw.setdefault('img_size', 64)
    kw.setdefault('linear_kernel_size', 3)
    model = AsViT(**kw)
    model.init_weights()
    return model.eval()


def ref_attention(attn: LinearAngularAttention, x: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Naive O(N^2) linear-angular attention (no prefix tokens, no aux branch)."""
    B, N, C = x.shape
    H, d = attn.num_heads, attn.head_dim
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(B, N, 3, H, d)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    sim = 0.5 + F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) / math.pi
    out = ((sim / sim.sum(-1, keepdim=True)) @ v).transpose(1, 2).reshape(B, N, C)
    vg = v.transpose(1, 2).reshape(B, *grid, C).permute(0, 3, 1, 2)
    conv = F.conv2d(vg, attn.dconv.weight, attn.dconv.bias, padding=attn.kernel_size // 2,
                    groups=C)
    return F.linear(out + conv.flatten(2).transpose(1, 2), attn.proj.weight, attn.proj.bias)


def ref_block(blk: TransformerBlock, x: Tensor, grid: Tuple[int, int]) -> Tensor:
    x = x + ref_attention(blk.attn, blk.norm1(x), grid)
    return x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(x))))


@pytest.mark.parametrize('out_type', ['raw', 'featmap', 'avg_featmap'])
def test_shapes_per_stage_attn_type(out_type):
    types = [LIN, 'softmax', LIN, LIN]
    model = build(out_indices=(0, 1, 2, 3), out_type=out_type, attn_type=types,
                  aux_branch=True)
    assert model.attn_types == types and model.aux_branch
    assert [type(s.blocks[0].attn) for s in model.stages] == [
        LinearAngularAttention, Attention, LinearAngularAttention, LinearAngularAttention]
    x = torch.randn(2, 3, 64, 96)
    for mode in (True, False):
        model.train(mode)
        outs = model(x)
        for i, (o, s) in enumerate(zip(outs, (4, 8, 16, 32))):
            C, h, w = 16 * 2**i, 64 // s, 96 // s
            expect = {'raw': (2, h * w, C), 'featmap': (2, C, h, w), 'avg_featmap': (2, C)}
            assert o.shape == expect[out_type]


def test_softmax_default_unchanged_and_linear_adds_only_conv_params():
    torch.manual_seed(0)
    default = build(linear_kernel_size=9)
    torch.manual_seed(0)
    soft = build(attn_type='softmax')
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(default(x)[0], soft(x)[0])
    assert default.attn_types == ['softmax'] * 4 and not default.aux_branch
    soft_keys = set(default.state_dict())
    lin_keys = set(build(attn_type=LIN, aux_branch=True).state_dict())
    assert soft_keys < lin_keys
    assert {k.rsplit('.', 2)[-2] if 'dconv' in k else k.rsplit('.', 1)[-1]
            for k in lin_keys - soft_keys} == {'dconv', 'aux_mask'}


def test_rule_carries_attn_type():
    model = build(scaling=dict(depth=2, attn_type=LIN))
    assert model.attn_types == [LIN] * 4 and model.arch_spec.depths == (2, 2, 2, 2)
    assert isinstance(model.stages[3].blocks[1].attn, LinearAngularAttention)


@pytest.mark.parametrize('stage', [0, 1])
def test_windows_match_manual_per_window_attention(stage):
    torch.manual_seed(0)
    arch = dict(ARCH, splits=(2, 2, 1, 1))
    model = build(arch=arch, attn_type=LIN).double()
    for p in model.parameters():  # non-trivial conv / biases
        p.data.add_(0.05 * torch.randn_like(p))
    st = model.stages[stage]
    # channels-last stage-1 map (B, H, W, C); stage 2 halves it
    x = torch.randn(2, 16, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        got = st(x)
        y = st.downsample(x) if st.downsample is not None else x
        B, H, W, C = y.shape
        h, w = H // 2, W // 2
        expect = torch.empty_like(y)
        for i in range(2):
            for j in range(2):
                t = y[:, i * h:(i + 1) * h, j * w:(j + 1) * w].reshape(B, h * w, C)
                for blk in st.blocks:
                    t = ref_block(blk, t, (h, w))
                expect[:, i * h:(i + 1) * h, j * w:(j + 1) * w] = t.reshape(B, h, w, C)
        torch.testing.assert_close(got, expect, rtol=1e-10, atol=1e-10)
        # windows matter: one global attention over the whole map gives something else
        st.split = 1
        assert not torch.allclose(st(x), got, atol=1e-4)
        st.split = 2


def test_conversion_with_zero_masks_is_exact():
    torch.manual_seed(0)
    model = build(attn_type=LIN, aux_branch=True, out_type='raw')
    n_heads = sum(s.blocks[0].attn.num_heads * len(s.blocks) for s in model.stages)
    assert aux_regularizer(model).item() == pytest.approx(n_heads)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        with_mask = model(x)[0]
        for m in model.modules():
            if isinstance(m, LinearAngularAttention):
                m.aux_mask.zero_()
        zero = model(x)[0]
    assert not torch.allclose(with_mask, zero, atol=1e-3)
    sd = model.state_dict()
    assert convert_to_inference(model) is model
    assert not any('aux' in k for k in model.state_dict()) and not model.aux_branch
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], zero, atol=1e-6, rtol=1e-6)
    pure = build(attn_type=LIN, aux_branch=True, inference_only=True, out_type='raw')
    assert not pure.aux_branch
    pure.load_state_dict(sd)  # strict: aux keys dropped at load
    with torch.no_grad():
        torch.testing.assert_close(pure(x)[0], zero, atol=1e-6, rtol=1e-6)
    with pytest.raises(RuntimeError, match='aux_mask'):
        build(attn_type=LIN).load_state_dict(sd)


def test_errors_name_field_and_value():
    with pytest.raises(ValueError, match=r'^linear_kernel_size=5 does not fit the token grid '
                       r'2x2 \(at most 2\*2-1=3\): stage 3 windows of its 4x4 token map with '
                       r'split=2$'):
        build(attn_type=LIN, linear_kernel_size=5)
    build(attn_type=[LIN, LIN, 'softmax', 'softmax'], linear_kernel_size=5)  # 4x4 windows fit
    build(attn_type='softmax', linear_kernel_size=5)  # unused kernel: no grid check
    with pytest.raises(ValueError, match=r'^linear_kernel_size must be an odd positive int, '
                       r'got 4$'):
        build(attn_type=LIN, linear_kernel_size=4)
    with pytest.raises(ValueError, match=r"^attn_type\[2\] must be one of \('softmax', "
                       r"'linear_angular'\), got 'x'$"):
        build(attn_type=['softmax', 'softmax', 'x', 'softmax'])
    with pytest.raises(ValueError, match=r"^attn_type must be a str or a list of 4 \(one per "
                       r"stage\), got \['softmax'\]$"):
        build(attn_type=['softmax'])
    with pytest.raises(ValueError, match=r"^attn_type='softmax' conflicts with "
                       r"scaling.attn_type='linear_angular'$"):
        build(attn_type='softmax', scaling=dict(attn_type=LIN))
    model = build(attn_type=LIN)
    with pytest.raises(ValueError, match=r'^linear_kernel_size=3 does not fit the token grid '
                       r'2x1 \(at most 2\*1-1=1\): stage 3 windows of its 4x2 token map with '
                       r'split=2$'):
        model(torch.randn(1, 3, 64, 32))  # narrower input at forward time
    with pytest.raises(ValueError, match=r'^aux_branch=False: AsViT has no auxiliary'):
        convert_to_inference(model)


def test_flops_count_the_conv_and_are_linear_for_global_stages():
    k = 3
    lin = {s: get_complexity(build(arch=GLOBAL, attn_type=LIN), (3, s, s)) for s in (64, 128)}
    soft = {s: get_complexity(build(arch=GLOBAL), (3, s, s)) for s in (64, 128)}
    # every term of the linear model is linear in the tokens; softmax attention is not
    assert lin[128]['flops'] == 4 * lin[64]['flops']
    assert soft[128]['flops'] > 4 * soft[64]['flops']
    assert '_scaled_dot_product_flash_attention_for_cpu' not in lin[64]['by_op']
    model = build(arch=GLOBAL)
    dwconv = sum(depth * gh * gw * dim * k * k for depth, (gh, gw), dim in zip(
        model.arch_spec.depths, model.arch_spec.grids, model.arch_spec.dims))
    conv_op = [op for op in lin[64]['by_op'] if 'conv' in op]
    assert len(conv_op) == 1
    assert lin[64]['by_op'][conv_op[0]] - soft[64]['by_op'][conv_op[0]] == dwconv
    # windowed: same conv MACs (windows tile the map), attention MACs differ from softmax
    win_lin = get_complexity(build(attn_type=LIN), (3, 64, 64))
    win_soft = get_complexity(build(), (3, 64, 64))
    assert win_lin['flops'] != win_soft['flops']
    assert win_lin['by_op'][conv_op[0]] - win_soft['by_op'][conv_op[0]] == sum(
        depth * gh * gw * dim * k * k for depth, (gh, gw), dim in zip(
            ARCH['depths'], model.arch_spec.grids, model.arch_spec.dims))
