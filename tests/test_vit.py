import pytest
import torch

from mmvitscale.models import ScaledPiT, ScaledViT, resample_abs_pos_embed

timm = pytest.importorskip('timm')


def tiny(**kw):
    kw.setdefault('arch', dict(embed_dims=32, num_layers=3, num_heads=2, mlp_ratio=2.0))
    kw.setdefault('img_size', 32)
    kw.setdefault('patch_size', 8)
    model = ScaledViT(**kw)
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('out_type, shape', [
    ('cls_token', (2, 32)),
    ('avg_featmap', (2, 32)),
    ('featmap', (2, 32, 4, 4)),
    ('raw', (2, 17, 32)),
])
def test_out_types(out_type, shape):
    outs = tiny(out_type=out_type, out_indices=(0, -1))(torch.randn(2, 3, 32, 32))
    assert isinstance(outs, tuple) and len(outs) == 2
    assert all(o.shape == shape for o in outs)


def test_single_tensor_mode_and_non_square_input():
    model = tiny(out_type='featmap', return_tuple=False)
    out = model(torch.randn(2, 3, 48, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 32, 6, 4)


def test_avg_featmap_is_mean_of_patch_tokens():
    model = tiny(out_type='raw')
    x = torch.randn(1, 3, 32, 32)
    raw = model(x)[0]
    model.out_type = 'avg_featmap'
    torch.testing.assert_close(model(x)[0], raw[:, 1:].mean(1))


def test_presets_aliases_and_scaling():
    assert ScaledViT.resolve_arch('deit-tiny') == ScaledViT.resolve_arch('Ti')
    assert ScaledViT.resolve_arch('deit-s').embed_dims == 384
    spec = ScaledViT.resolve_arch('deit-base', scaling=dict(depth_mult=0.5, resolution=256))
    assert (spec.embed_dims, spec.num_layers, spec.img_size) == (768, 6, (256, 256))
    model = ScaledViT('deit-tiny', scaling=dict(depth=2, width_mult=0.5))
    assert len(model.blocks) == 2 and model.embed_dims == 96
    assert model.pos_embed.shape == (1, 197, 96)


@pytest.mark.parametrize('kwargs, exc, message', [
    (dict(arch='deit-huge'), ValueError, "arch 'deit-huge' is not a known preset"),
    (dict(arch=dict(embed_dims=32, num_layers=2)), ValueError,
     "arch dict is missing key 'num_heads'"),
    (dict(arch=dict(embed_dims=32, num_layers=2, num_heads=2, depth=3)), ValueError,
     "arch dict has unknown key 'depth' (value 3)"),
    (dict(out_type='tokens'), ValueError,
     "out_type must be one of ('raw', 'cls_token', 'featmap', 'avg_featmap'), got 'tokens'"),
    (dict(out_indices=12), ValueError, 'out_indices entry 12 is out of range for 12 blocks'),
    (dict(with_cls_token=False), ValueError, "out_type='cls_token' needs with_cls_token=True"),
    (dict(img_size=100), ValueError, 'img_size=100 is not a multiple of patch_size=16'),
    (dict(scaling=dict(heads=5, width=96)), ValueError,
     'scaling: width=96 is not divisible by heads=5'),
])
def test_bad_arguments(kwargs, exc, message):
    with pytest.raises(exc) as err:
        ScaledViT(**kwargs)
    assert message in str(err.value)


def test_input_not_multiple_of_patch():
    with pytest.raises(ValueError, match='input size 30x32 is not a multiple of patch_size=8'):
        tiny()(torch.randn(1, 3, 30, 32))


def test_pos_embed_resizes_at_forward_time():
    model = tiny(out_type='raw')
    x = torch.randn(1, 3, 64, 48)
    out = model(x)[0]
    assert out.shape == (1, 1 + 8 * 6, 32)
    # equals a model built for that resolution holding the resampled embedding
    big = tiny(out_type='raw', img_size=(64, 48))
    state = model.state_dict()
    state['pos_embed'] = resample_abs_pos_embed(model.pos_embed, (8, 6), (4, 4))
    big.load_state_dict(state)
    torch.testing.assert_close(big(x)[0], out)


def test_pos_embed_resizes_on_checkpoint_load():
    small = tiny()
    big = tiny(img_size=64)
    missing = big.load_state_dict(small.state_dict())
    assert not missing.missing_keys and not missing.unexpected_keys
    assert big.pos_embed.shape == (1, 65, 32)
    expected = resample_abs_pos_embed(small.pos_embed, (8, 8), (4, 4))
    torch.testing.assert_close(big.pos_embed.data, expected)
    # the cls position is kept exactly; an unchanged grid is returned as is
    torch.testing.assert_close(big.pos_embed[:, 0], small.pos_embed[:, 0])
    assert resample_abs_pos_embed(small.pos_embed, (4, 4)) is small.pos_embed


def test_resample_rejects_wrong_grid():
    with pytest.raises(ValueError, match=r'old_size=\(3, 3\) does not match 16 position'):
        resample_abs_pos_embed(torch.zeros(1, 17, 4), (5, 5), (3, 3))


def test_frozen_stages():
    model = tiny(frozen_stages=1)
    model.train()
    assert not model.pos_embed.requires_grad and not model.cls_token.requires_grad
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.blocks[0].parameters())
    assert all(p.requires_grad for p in model.blocks[1].parameters())
    assert not model.blocks[0].training and model.blocks[1].training


def test_drop_path_is_active_only_in_training():
    model = tiny(drop_path_rate=0.5)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(x)[0], model(x)[0])
    model.train()
    torch.manual_seed(0)
    a = model(x)[0]
    torch.manual_seed(1)
    assert not torch.allclose(a, model(x)[0])


@pytest.mark.parametrize('backbone, timm_name, arch', [
    (ScaledViT, 'deit_tiny_patch16_224', 'deit-tiny'), (ScaledPiT, 'pit_ti_224', 'pit-ti'),
    (ScaledPiT, 'pit_xs_224', 'pit-xs')])
def test_matches_timm(backbone, timm_name, arch):
    """timm's weights load with only its head left over, and the pre-logits features agree."""
    torch.manual_seed(0)
    ref = timm.create_model(timm_name, pretrained=False).eval()
    model = backbone(arch).eval()
    result = model.load_state_dict(ref.state_dict(), strict=False)
    assert result.missing_keys == []
    assert sorted(result.unexpected_keys) == ['head.bias', 'head.weight']
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref.forward_head(ref.forward_features(x), pre_logits=True)
        ours = model(x)[0]
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_cpu_inference_fast_path_matches_eager_ops():
    from mmvitscale.cost import get_complexity
    from mmvitscale.models import ops
    model = tiny(out_type='raw')
    x = torch.randn(2, 3, 32, 32)
    eager = model(x)[0].detach()  # autograd on: plain nn.Linear + GELU
    with torch.no_grad():
        fast = model(x)[0]
    torch.testing.assert_close(fast, eager, rtol=0, atol=1e-6)
    by_op = get_complexity(model, (3, 32, 32))['by_op']
    if ops._ONEDNN_LINEAR:
        assert '_linear_pointwise' in by_op and 'addmm' not in by_op


def test_fast_path_keeps_forward_mode_tangents():
    """Under torch.func.jvp with autograd off, outputs and tangents match the eager ops."""
    model = tiny(out_type='raw')
    x, v = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    eps = 1e-3
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):  # the fused CPU kernel has no fwd AD
        out, tangent = torch.func.jvp(lambda t: model(t)[0], (x, ), (v, ))
        finite = (model(x + eps * v)[0] - model(x - eps * v)[0]) / (2 * eps)
    torch.testing.assert_close(tangent, finite, rtol=1e-2, atol=1e-3)
    assert tangent.abs().max() > 1e-3


@pytest.mark.parametrize('channels, size, kernel, stride', [
    (1, (28, 28), 7, 7), (3, (32, 30), 8, 8), (3, (33, 37), (4, 5), (4, 5)), (2, (17, 17), 4, 2)])
def test_patchify_equals_the_conv_and_its_gradients(channels, size, kernel, stride):
    """Non-overlapping patch convs run as one linear layer: same tokens, grid and gradients;
    an overlapping or hooked conv runs as the conv."""
    from mmvitscale.models.ops import patchify
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, 16, kernel, stride)
    x = torch.randn(3, channels, *size, requires_grad=True)
    ref = conv(x)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, [x, conv.weight, conv.bias], g)
    tokens, grid = patchify(x, conv)
    assert grid == tuple(ref.shape[2:]) and tokens.shape == (3, grid[0] * grid[1], 16)
    torch.testing.assert_close(tokens, ref.flatten(2).transpose(1, 2), rtol=0, atol=1e-5)
    grads = torch.autograd.grad(tokens, [x, conv.weight, conv.bias],
                                g.flatten(2).transpose(1, 2))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    with torch.no_grad(), torch.profiler.profile() as prof:
        torch.testing.assert_close(patchify(x, conv)[0], tokens, rtol=0, atol=1e-5)
    ran_conv = any('convolution' in e.name for e in prof.events())
    assert ran_conv == (conv.stride != conv.kernel_size)
    seen = []
    handle = conv.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    patchify(x, conv)
    handle.remove()
    assert seen == [ref.shape]
