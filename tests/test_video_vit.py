"""ScaledVideoViT: shapes, clip-geometry changes, the frames knob, 2-D inflation, cost and an
mmaction2 Recognizer3D built from a config."""
import pytest
import torch
from mmengine.registry import DefaultScope

from mmvitscale.cost import get_complexity
from mmvitscale.models import ScaledVideoViT, ScaledViT, resample_abs_pos_embed
from mmvitscale.models.video_vit import resample_time_embed

TINY = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.0)
ATTN = ('joint', 'divided', 'space_only')


def tiny(**kw) -> ScaledVideoViT:
    kw.setdefault('arch', dict(TINY))
    kw.setdefault('img_size', 32)
    kw.setdefault('patch_size', 8)
    kw.setdefault('num_frames', 4)
    kw.setdefault('tubelet_size', 2)
    model = ScaledVideoViT(**kw)
    model.init_weights()
    return model.eval()


def randomise_temporal_fc(model: ScaledVideoViT) -> None:
    for blk in model.blocks:
        if hasattr(blk, 'temporal_fc'):
            torch.nn.init.normal_(blk.temporal_fc.weight, std=0.2)


@pytest.mark.parametrize('attention_type', ATTN)
@pytest.mark.parametrize('out_type, shape', [
    ('cls_token', (2, 32)),
    ('avg_featmap', (2, 32)),
    ('featmap', (2, 32, 2, 4, 4)),
    ('raw', (2, 1 + 2 * 16, 32)),
])
def test_out_types(attention_type, out_type, shape):
    model = tiny(attention_type=attention_type, out_type=out_type)
    out = model(torch.randn(2, 3, 4, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == shape
    model.return_tuple, model.out_indices = True, (0, 1)
    outs = model(torch.randn(2, 3, 4, 32, 32))
    assert isinstance(outs, tuple) and [o.shape for o in outs] == [shape, shape]


@pytest.mark.parametrize('attention_type', ATTN)
def test_outputs_are_views_of_raw_tokens(attention_type):
    model = tiny(attention_type=attention_type, out_type='raw')
    x = torch.randn(1, 3, 4, 32, 32)
    raw = model(x)
    model.out_type = 'cls_token'
    torch.testing.assert_close(model(x), raw[:, 0])
    model.out_type = 'avg_featmap'
    torch.testing.assert_close(model(x), raw[:, 1:].mean(1))
    model.out_type = 'featmap'
    fm = model(x)  # token (t, i, j) sits at 1 + t*16 + i*4 + j
    torch.testing.assert_close(fm[0, :, 1, 2, 3], raw[0, 1 + 16 + 2 * 4 + 3])


@pytest.mark.parametrize('attention_type, mixes_time', [
    ('joint', True), ('divided', True), ('space_only', False)])
def test_which_attention_mixes_frames(attention_type, mixes_time):
    model = tiny(attention_type=attention_type, out_type='featmap', tubelet_size=1)
    randomise_temporal_fc(model)
    x = torch.randn(1, 3, 4, 32, 32)
    y = x.clone()
    y[:, :, 0] = torch.randn(3, 32, 32)
    later = (model(x)[:, :, 1:] - model(y)[:, :, 1:]).abs().max()
    assert (later > 1e-4) == mixes_time


@pytest.mark.parametrize('attention_type', ATTN)
def test_clip_length_and_resolution_change_at_forward_time(attention_type):
    model = tiny(attention_type=attention_type, out_type='featmap')
    out = model(torch.randn(1, 3, 8, 48, 32))
    assert out.shape == (1, 32, 4, 6, 4)
    model.out_type = 'raw'
    assert model(torch.randn(1, 3, 2, 16, 16)).shape == (1, 1 + 1 * 4, 32)


def test_time_embed_is_resampled_linearly():
    embed = torch.tensor([[[0.0], [1.0]]])
    assert resample_time_embed(embed, 2) is embed
    torch.testing.assert_close(resample_time_embed(embed, 4),
                               torch.tensor([[[0.0], [0.25], [0.75], [1.0]]]))
    model = tiny(attention_type='joint', out_type='raw')
    assert model.time_embed.shape == (1, 2, 32)
    # a 4-tubelet clip uses the resampled table: equal to a model trained for 8 frames
    ref = tiny(attention_type='joint', out_type='raw', num_frames=8)
    ref.load_state_dict(model.state_dict())
    torch.testing.assert_close(ref.time_embed, resample_time_embed(model.time_embed, 4))
    x = torch.randn(1, 3, 8, 32, 32)
    torch.testing.assert_close(model(x), ref(x))
    # likewise the spatial table on loading into a model built for another resolution
    big = tiny(attention_type='joint', img_size=48)
    big.load_state_dict(model.state_dict())
    torch.testing.assert_close(big.pos_embed, resample_abs_pos_embed(model.pos_embed, (6, 6)))


@pytest.mark.parametrize('shape, message', [
    ((1, 3, 3, 32, 32), 'ScaledVideoViT expects input (N, C, T, H, W) with T a multiple of '
     'tubelet_size=2, got shape (1, 3, 3, 32, 32): input frames T=3 is not a multiple of '
     'tubelet_size=2'),
    ((1, 3, 4, 30, 32), 'ScaledVideoViT expects input (N, C, T, H, W) with C=3, got shape '
     '(1, 3, 4, 30, 32): input size 30x32 is not a multiple of patch_size=8'),
    ((1, 3, 32, 32), 'ScaledVideoViT expects a 5-D input (N, C, T, H, W) with C=3, got shape '
     '(1, 3, 32, 32) (a dim is missing: is it the batch dim?)'),
])
def test_bad_inputs(shape, message):
    with pytest.raises(ValueError) as err:
        tiny()(torch.randn(shape))
    assert str(err.value) == message


def test_presets_and_frames_scaling():
    spec = ScaledVideoViT.resolve_arch('deit-tiny', num_frames=8, tubelet_size=2,
                                       scaling=dict(depth=4, frames_mult=2))
    assert spec.spatial == ScaledViT.resolve_arch('deit-tiny', scaling=dict(depth=4))
    assert (spec.num_frames, spec.time_grid, spec.num_tokens) == (16, 8, 1 + 8 * 196)
    # frames_mult rounds to the nearest multiple of the tubelet: 8 * 0.6 / 2 = 2.4 -> 2 tubelets
    assert ScaledVideoViT.resolve_arch('t', num_frames=8, tubelet_size=2,
                                       scaling=dict(frames_mult=0.6)).num_frames == 4
    model = tiny(scaling=dict(frames=8, width_mult=2.0, depth=1), attention_type='joint')
    assert (model.num_frames, model.time_size, model.embed_dims) == (8, 4, 64)
    assert model.time_embed.shape == (1, 4, 64) and len(model.blocks) == 1
    assert tiny(attention_type='space_only').time_embed is None


@pytest.mark.parametrize('kwargs, message', [
    (dict(attention_type='axial'),
     "attention_type must be one of ('joint', 'divided', 'space_only'), got 'axial'"),
    (dict(num_frames=5), 'arch: num_frames=5 is not a multiple of tubelet_size=2'),
    (dict(tubelet_size=0), 'arch: tubelet_size must be a positive integer, got 0'),
    (dict(scaling=dict(frames=6, tubelet_size=2)),
     "unknown scaling key 'tubelet_size' (value 2); known keys: ['depth', 'depth_mult', "
     "'frames', 'frames_mult', 'heads', 'heads_mult', 'mlp_ratio', 'mlp_ratio_mult', "
     "'patch_size', 'patch_size_mult', 'resolution', 'resolution_mult', 'width', "
     "'width_mult']"),
    (dict(scaling=dict(frames=5)), 'scaling: frames=5 is not a multiple of tubelet_size=2'),
    (dict(scaling=dict(frames=6.5)), 'scaling.frames must be an integer, got 6.5'),
    (dict(scaling=dict(frames=-4)), 'scaling.frames must be a positive number, got -4'),
    (dict(scaling=dict(frames_mult=0.2)),
     'scaling.frames_mult=0.2 turns frames 4 into 0; it must stay >= tubelet_size=2'),
    (dict(scaling=dict(frames=8, frames_mult=2)),
     'scaling gives both frames=8 and frames_mult=2; use one of them'),
    (dict(scaling=dict(frames=8, width=30, heads=4)),
     'scaling: width=30 is not divisible by heads=4'),
    (dict(scaling=[('frames', 8)]), "scaling must be a dict, got list: [('frames', 8)]"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as err:
        tiny(**kwargs)
    assert str(err.value) == message


def test_image_vit_rules_still_reject_frames():
    with pytest.raises(ValueError, match=r"unknown scaling key 'frames' \(value 8\)"):
        ScaledViT('deit-tiny', scaling=dict(frames=8))


@pytest.mark.parametrize('attention_type, frames, tubelet', [
    ('joint', 1, 1),  # a single frame: exactly the image model
    ('divided', 4, 2),  # a static clip: temporal_fc = 0, class tokens averaged over frames
    ('space_only', 4, 2),
])
def test_inflated_2d_weights_reproduce_the_image_model(attention_type, frames, tubelet):
    image_model = ScaledViT(dict(TINY), img_size=32, patch_size=8, return_tuple=False)
    image_model.init_weights()
    image_model.eval()
    model = tiny(attention_type=attention_type, num_frames=frames, tubelet_size=tubelet)
    randomise_temporal_fc(model)  # the inflation must reset it
    sd_2d = image_model.state_dict()
    model.load_state_dict(model.inflate_from_2d(sd_2d))
    if attention_type == 'divided':
        assert model.blocks[1].temporal_fc.weight.abs().sum() == 0
        torch.testing.assert_close(model.blocks[1].temporal_attn.qkv.weight,
                                   image_model.blocks[1].attn.qkv.weight)
    if model.time_embed is not None:
        assert model.time_embed.abs().sum() == 0
    img = torch.randn(2, 3, 32, 32)
    clip = img.unsqueeze(2).expand(-1, -1, frames, -1, -1)
    with torch.no_grad():
        torch.testing.assert_close(model(clip), image_model(img), atol=1e-5, rtol=1e-5)
    # loading the 2-D state dict directly inflates it the same way (e.g. init_cfg Pretrained)
    direct = tiny(attention_type=attention_type, num_frames=frames, tubelet_size=tubelet)
    direct.load_state_dict(sd_2d)
    with torch.no_grad():
        torch.testing.assert_close(direct(clip), model(clip))
    # ... also under a prefix, as a recognizer's checkpoint holds it
    holder = torch.nn.Module()
    holder.backbone = tiny(attention_type=attention_type, num_frames=frames, tubelet_size=tubelet)
    holder.load_state_dict({f'backbone.{k}': v for k, v in sd_2d.items()})
    with torch.no_grad():
        torch.testing.assert_close(holder.backbone(clip), model(clip))


def test_inflation_resamples_pos_embed_and_passes_other_keys():
    image_model = ScaledViT(dict(TINY), img_size=64, patch_size=8)
    sd = dict(image_model.state_dict(), **{'head.weight': torch.ones(3, 32)})
    out = tiny(attention_type='joint').inflate_from_2d(sd)
    assert out['pos_embed'].shape == (1, 17, 32)
    assert out['patch_embed.proj.weight'].shape == (32, 3, 2, 8, 8)
    torch.testing.assert_close(out['patch_embed.proj.weight'].sum(2),
                               sd['patch_embed.proj.weight'])
    assert out['head.weight'] is sd['head.weight']


@pytest.mark.parametrize('attention_type', ATTN)
def test_attention_cost(attention_type):
    model = tiny(attention_type=attention_type, num_frames=4, tubelet_size=1)
    by_op = get_complexity(model, (3, 4, 32, 32))['by_op']
    sdpa = {k: v for k, v in by_op.items() if 'scaled_dot_product' in k}
    assert len(sdpa) == 1
    T, S, D, L = 4, 16, 32, 2  # tubelets, patches per frame, width, blocks
    expected = {
        'joint': 2 * (1 + T * S)**2 * D,
        'divided': 2 * S * T**2 * D + 2 * T * (1 + S)**2 * D,
        'space_only': 2 * T * (1 + S)**2 * D,
    }[attention_type]
    assert model.video_spec.num_tokens == 1 + T * S
    assert sum(sdpa.values()) == L * expected


@pytest.mark.slow
def test_mmaction_recognizer3d_from_config():
    from mmaction.registry import MODELS
    from mmaction.structures import ActionDataSample
    DefaultScope.get_instance(f'test-video-vit-{torch.randint(1 << 30, ()).item()}',
                              scope_name='mmaction')
    model = MODELS.build(dict(
        type='Recognizer3D',
        backbone=dict(type='mmvitscale.ScaledVideoViT', arch=dict(TINY), img_size=32,
                      patch_size=8, num_frames=4, tubelet_size=2, attention_type='divided'),
        cls_head=dict(type='TimeSformerHead', num_classes=5, in_channels=32,
                      average_clips='prob'),
        data_preprocessor=dict(type='ActionDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], format_shape='NCTHW')))
    assert type(model.backbone) is ScaledVideoViT
    model.init_weights()
    data = dict(
        inputs=[torch.randint(0, 255, (1, 3, 4, 32, 32), dtype=torch.uint8) for _ in range(2)],
        data_samples=[ActionDataSample().set_gt_label(torch.tensor([i])) for i in (0, 4)])
    losses = model(**model.data_preprocessor(data, True), mode='loss')
    assert torch.isfinite(losses['loss_cls'])
    losses['loss_cls'].backward()
    assert model.backbone.blocks[0].temporal_fc.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(data, False), mode='predict')
    assert len(preds) == 2 and preds[0].pred_score.shape == (5, )
    torch.testing.assert_close(preds[0].pred_score.sum(), torch.tensor(1.0))
