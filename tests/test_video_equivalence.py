"""ScaledVideoViT (divided attention) equals mmaction2's TimeSformer backbone with copied weights.

Every parameter of mmaction's model is randomised, converted by the ``mmaction_timesformer``
converter and loaded strictly; the class-token features must agree to numeric tolerance.
Differences that remain by design (not exercised by the comparison, documented here):
mmaction keeps tokens patch-major and ScaledVideoViT frame-major (internal order only); mmaction
applies drop path before ``temporal_fc`` and ScaledVideoViT after it (identical at eval, where
drop path is the identity); mmaction supports ``tubelet_size=1`` only.
"""
import pytest
import torch
from mmengine.registry import DefaultScope
from torch import nn

from mmvitscale.checkpoint import convert_state_dict
from mmvitscale.models import ScaledVideoViT

D, HEADS, LAYERS, T, SIZE, P = 32, 2, 2, 4, 32, 8


def _timesformer():
    DefaultScope.get_instance(f'video-eq-{id(object())}', scope_name='mmaction')
    import mmaction.models  # noqa: F401  (registers the attention layers)
    from mmaction.models.backbones.timesformer import TimeSformer
    torch.manual_seed(0)
    ref = TimeSformer(num_frames=T, img_size=SIZE, patch_size=P, embed_dims=D, num_heads=HEADS,
                      num_transformer_layers=LAYERS, attention_type='divided_space_time')
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in ref.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.2)
    return ref.eval()


def _ours(**kw):
    return ScaledVideoViT(dict(embed_dims=D, num_layers=LAYERS, num_heads=HEADS, mlp_ratio=4.0),
                          img_size=SIZE, patch_size=P, num_frames=T, attention_type='divided',
                          out_type='cls_token', **kw).eval()


def test_divided_attention_equals_mmaction_timesformer():
    ref = _timesformer()
    converted, fmt = convert_state_dict(ref.state_dict(), 'video')
    assert fmt == 'mmaction_timesformer'
    ours = _ours()
    ours.load_state_dict(converted, strict=True)
    x = torch.randn(2, 3, T, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref(x)
        got = ours(x)
    assert expected.shape == got.shape == (2, D)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # a wrong mapping (e.g. spatial and temporal swapped) must show
        ours.blocks[0].temporal_fc.weight.mul_(0.5)
        assert not torch.allclose(ours(x), expected, atol=1e-3)


def test_timesformer_checkpoint_is_refused_for_an_image_model():
    ref = _timesformer()
    with pytest.raises(ValueError, match="format 'mmaction_timesformer', which is for video"):
        convert_state_dict(ref.state_dict(), 'vit')


def test_unmapped_timesformer_key_is_refused():
    state = dict(_timesformer().state_dict())
    state['transformer_layers.layers.0.attentions.0.layer_scale'] = nn.Parameter(torch.ones(D))
    with pytest.raises(ValueError, match='layer_scale.*no counterpart'):
        convert_state_dict(state, 'video')
