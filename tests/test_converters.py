"""Checkpoint converters: every format loads through init_cfg Pretrained, load_pretrained and a
whole model's load_state_dict, reproducing the source implementation's outputs."""
import pytest
import torch
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint

from mmvitscale.checkpoint import (CONVERTERS, convert_state_dict, detect_format,
                                   load_pretrained, unwrap_checkpoint)
from mmvitscale.models import ScaledPiT, ScaledViT
from mmvitscale.models.layers import resample_abs_pos_embed
from mmvitscale.models.pit import resample_pos_embed_2d

timm = pytest.importorskip('timm')
from timm.models.deit import VisionTransformerDistilled  # noqa: E402
from timm.models.pit import PoolingVisionTransformer  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

D = 32
VIT_ARCH = dict(embed_dims=D, num_layers=2, num_heads=2)
PIT_ARCH = dict(base_dims=(8, 8, 8), depths=(1, 2, 1), heads=(1, 2, 4), patch_size=8,
                patch_stride=4)
ATOL = 1e-5


def randomize(module, seed=0):
    """Every parameter random (LayerNorms included), so a swapped mapping cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    module.eval()  # some mmpretrain modules' train() returns None
    return module


def timm_vit(depth=2, dim=D, **kw):
    return randomize(VisionTransformer(img_size=32, patch_size=8, embed_dim=dim, depth=depth,
                                       num_heads=2, num_classes=10, **kw))


def timm_pit(depth=(1, 2, 1), **kw):
    return randomize(PoolingVisionTransformer(img_size=32, patch_size=8, stride=4,
                                              base_dims=(8, 8, 8), depth=depth, heads=(1, 2, 4),
                                              num_classes=10, **kw))


def mmpretrain_vit(**kw):
    from mmpretrain.models import VisionTransformer as MMViT
    arch = dict(embed_dims=D, num_layers=2, num_heads=2, feedforward_channels=4 * D)
    return randomize(MMViT(arch=arch, img_size=32, patch_size=8, **kw))


def timm_features(ref, x):
    with torch.no_grad():
        return ref.forward_head(ref.forward_features(x), pre_logits=True)


def naver_keys(state_dict):
    """naver-ai/pit names: the pooling before timm's stage s is ``pools.{s-1}``."""
    out = {}
    for k, v in state_dict.items():
        parts = k.split('.')
        if parts[0] == 'transformers' and parts[2] == 'pool':
            k = '.'.join(['pools', str(int(parts[1]) - 1)] + parts[3:])
        out[k] = v
    return out


def save(tmp_path, obj, name='ckpt.pth'):
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def from_init_cfg(cls, path, **kw):
    kw.setdefault('arch', VIT_ARCH if cls is ScaledViT else PIT_ARCH)
    kw.setdefault('img_size', 32)
    if cls is ScaledViT:
        kw.setdefault('patch_size', 8)
    model = cls(init_cfg=dict(type='Pretrained', checkpoint=path, **kw.pop('init', {})), **kw)
    model.init_weights()
    return model.eval()


def vit(**kw):
    kw.setdefault('arch', VIT_ARCH)
    return ScaledViT(img_size=kw.pop('img_size', 32), patch_size=8, **kw).eval()


def pit(**kw):
    kw.setdefault('arch', PIT_ARCH)
    return ScaledPiT(img_size=kw.pop('img_size', 32), **kw).eval()


def out(model, x):
    with torch.no_grad():
        return model(x)[0]


X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------- per format
@pytest.mark.parametrize('wrap', ['plain', 'deit'])
def test_timm_vit(tmp_path, wrap):
    ref = timm_vit()
    sd = ref.state_dict()
    path = save(tmp_path, {'model': sd} if wrap == 'deit' else sd)
    expected = timm_features(ref, X)
    torch.testing.assert_close(out(from_init_cfg(ScaledViT, path), X), expected, rtol=0,
                               atol=ATOL)
    model = vit()
    result = load_pretrained(model, path)
    assert result.fmt == 'timm_vit' and result.missing_keys == []
    assert sorted(result.unexpected_keys) == ['head.bias', 'head.weight']
    torch.testing.assert_close(out(model, X), expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize('prefix', ['backbone.', None], ids=['prefix', 'no-prefix'])
def test_mmpretrain_vit(tmp_path, prefix):
    ref = mmpretrain_vit()
    sd = {'backbone.' + k: v for k, v in ref.state_dict().items()}
    sd['head.fc.weight'] = torch.zeros(10, D)
    path = save(tmp_path, {'state_dict': sd, 'meta': {'epoch': 3}})
    expected = out(ref, X)
    init = dict(prefix=prefix) if prefix else {}
    torch.testing.assert_close(out(from_init_cfg(ScaledViT, path, init=init), X), expected,
                               rtol=0, atol=ATOL)
    model = vit()
    result = load_pretrained(model, path)
    assert result.fmt == 'mmpretrain_vit' and result.missing_keys == []
    assert result.unexpected_keys == ['head.fc.weight']
    torch.testing.assert_close(out(model, X), expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize('fmt', ['timm_pit', 'naver_pit'])
def test_pit_formats(tmp_path, fmt):
    ref = timm_pit()
    sd = ref.state_dict() if fmt == 'timm_pit' else naver_keys(ref.state_dict())
    assert any(k.startswith('pools.1.') for k in sd) == (fmt == 'naver_pit')
    path = save(tmp_path, sd)
    expected = timm_features(ref, X)
    torch.testing.assert_close(out(from_init_cfg(ScaledPiT, path), X), expected, rtol=0,
                               atol=ATOL)
    model = pit()
    result = load_pretrained(model, path)
    assert result.fmt == fmt and result.missing_keys == []
    assert sorted(result.unexpected_keys) == ['head.bias', 'head.weight']
    torch.testing.assert_close(out(model, X), expected, rtol=0, atol=ATOL)


def test_mmpretrain_image_classifier_whole_model(tmp_path):
    """Runner(load_from=...) / load_state_dict of a whole mmpretrain model, 'backbone.' keys."""
    from mmpretrain.models import ImageClassifier
    DefaultScope.get_instance('test-converters-classifier', scope_name='mmpretrain')
    arch = dict(VIT_ARCH, feedforward_channels=4 * D)
    head = dict(type='LinearClsHead', num_classes=10, in_channels=D)
    src = ImageClassifier(backbone=dict(type='VisionTransformer', arch=arch, img_size=32,
                                        patch_size=8), head=head)
    randomize(src)
    ours = dict(type='mmvitscale.ScaledViT', arch=VIT_ARCH, img_size=32, patch_size=8)
    dst = ImageClassifier(backbone=ours, head=head).eval()
    result = dst.load_state_dict(src.state_dict())  # strict: every key maps
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        expected = src(X, mode='tensor')
        torch.testing.assert_close(dst(X, mode='tensor'), expected, rtol=0, atol=ATOL)
    path = save(tmp_path, {'state_dict': src.state_dict(), 'meta': {'epoch': 1}})
    fresh = ImageClassifier(backbone=ours, head=head).eval()
    load_checkpoint(fresh, path)  # what Runner(load_from=path) runs
    with torch.no_grad():
        torch.testing.assert_close(fresh(X, mode='tensor'), expected, rtol=0, atol=ATOL)


def test_native_round_trip_and_empty_state_dict():
    for build in (vit, pit):
        src, dst = randomize(build()), build()
        result = dst.load_state_dict(src.state_dict())
        assert not result.missing_keys and not result.unexpected_keys
        torch.testing.assert_close(out(dst, X), out(src, X), rtol=0, atol=0)
        assert len(dst.load_state_dict({}, strict=False).missing_keys) == len(src.state_dict())


# ----------------------------------------------------------------------------- distillation
def test_distilled_deit_drops_dist_token(tmp_path):
    ref = randomize(VisionTransformerDistilled(img_size=32, patch_size=8, embed_dim=D, depth=2,
                                               num_heads=2, num_classes=10))
    sd = ref.state_dict()
    assert sd['pos_embed'].shape == (1, 2 + 16, D)
    model = vit()
    result = load_pretrained(model, save(tmp_path, {'model': sd}))
    assert result.fmt == 'timm_vit' and result.missing_keys == []
    assert sorted(result.unexpected_keys) == ['head.bias', 'head.weight', 'head_dist.bias',
                                              'head_dist.weight']
    expected_pos = torch.cat([sd['pos_embed'][:, :1], sd['pos_embed'][:, 2:]], dim=1)
    torch.testing.assert_close(model.pos_embed.data, expected_pos, rtol=0, atol=0)
    # the rule equals a plain timm ViT holding the distilled weights minus the dist token
    plain = timm_vit()
    dist_keys = ('dist_token', 'head_dist.weight', 'head_dist.bias')
    sd_plain = {k: v for k, v in sd.items() if k not in dist_keys}
    sd_plain['pos_embed'] = expected_pos
    plain.load_state_dict(sd_plain)
    torch.testing.assert_close(out(model, X), timm_features(plain, X), rtol=0, atol=ATOL)


def test_distilled_pit_keeps_first_class_token(tmp_path):
    ref = timm_pit(distilled=True)
    sd = ref.state_dict()
    assert sd['cls_token'].shape == (1, 2, 8)
    model = pit()
    result = load_pretrained(model, save(tmp_path, naver_keys(sd)))
    assert result.fmt == 'naver_pit'
    torch.testing.assert_close(model.cls_token.data, sd['cls_token'][:, :1], rtol=0, atol=0)


# ----------------------------------------------------------------------------- resolution
@pytest.mark.parametrize('source', ['timm_vit', 'mmpretrain_vit'])
def test_vit_other_resolution(tmp_path, source):
    ref = timm_vit() if source == 'timm_vit' else mmpretrain_vit()
    path = save(tmp_path, ref.state_dict())
    model = from_init_cfg(ScaledViT, path, img_size=48, out_type='raw')
    assert model.pos_embed.shape == (1, 1 + 36, D)
    expected = resample_abs_pos_embed(ref.state_dict()['pos_embed'], (6, 6))
    torch.testing.assert_close(model.pos_embed.data, expected, rtol=0, atol=0)
    assert out(model, torch.randn(2, 3, 48, 48)).shape == (2, 37, D)
    fc2 = 'blocks.1.mlp.fc2.weight' if source == 'timm_vit' else 'layers.1.ffn.layers.1.weight'
    torch.testing.assert_close(model.blocks[1].mlp.fc2.weight.data, ref.state_dict()[fc2],
                               rtol=0, atol=0)


def test_pit_other_resolution(tmp_path):
    ref = timm_pit()
    model = pit(img_size=48)
    load_pretrained(model, save(tmp_path, naver_keys(ref.state_dict())))
    assert model.pos_embed.shape == (1, 8, 11, 11)  # (48 - 8) / 4 + 1
    torch.testing.assert_close(model.pos_embed.data,
                               resample_pos_embed_2d(ref.pos_embed.data, (11, 11)), rtol=0,
                               atol=0)
    assert out(model, torch.randn(2, 3, 48, 48)).shape == (2, 32)


# ----------------------------------------------------------------------------- depth / width
def test_vit_deeper_checkpoint_loads_first_blocks(tmp_path):
    ref = timm_vit(depth=4)
    model = vit()
    result = load_pretrained(model, save(tmp_path, ref.state_dict()))
    assert result.missing_keys == [] and not any('blocks' in k for k in result.unexpected_keys)
    ref.blocks = ref.blocks[:2]  # the rule: first N blocks, then the checkpoint's final norm
    torch.testing.assert_close(out(model, X), timm_features(ref, X), rtol=0, atol=ATOL)


def test_pit_deeper_checkpoint_loads_first_blocks_per_stage(tmp_path):
    ref = timm_pit(depth=(2, 3, 2))
    model = pit()
    load_pretrained(model, save(tmp_path, ref.state_dict()))
    for stage, depth in zip(ref.transformers, PIT_ARCH['depths']):
        stage.blocks = stage.blocks[:depth]
    torch.testing.assert_close(out(model, X), timm_features(ref, X), rtol=0, atol=ATOL)


def test_shallower_checkpoint_is_refused(tmp_path):
    path = save(tmp_path, timm_vit(depth=2).state_dict())
    with pytest.raises(ValueError, match='the checkpoint has 2 blocks, the model 3: a '
                       'shallower checkpoint is refused'):
        load_pretrained(vit(arch=dict(VIT_ARCH, num_layers=3)), path)
    path = save(tmp_path, timm_pit().state_dict(), 'pit.pth')
    with pytest.raises(ValueError, match='has 2 blocks in stage 1, the model 3'):
        from_init_cfg(ScaledPiT, path, arch=dict(PIT_ARCH, depths=(1, 3, 1)))
    with pytest.raises(ValueError, match='the checkpoint has 3 stages, the model 2'):
        load_pretrained(pit(arch=dict(PIT_ARCH, base_dims=(8, 8), depths=(1, 2), heads=(1, 2))),
                        path)


def test_width_mismatch_names_keys_and_shapes(tmp_path):
    path = save(tmp_path, {'model': timm_vit(dim=48).state_dict()})
    for load in (lambda: load_pretrained(vit(), path), lambda: from_init_cfg(ScaledViT, path)):
        with pytest.raises(ValueError, match='not width') as err:
            load()
        msg = str(err.value)
        assert 'patch_embed.proj.weight: checkpoint (48, 3, 8, 8) vs model (32, 3, 8, 8)' in msg
        assert 'pos_embed: checkpoint (1, 17, 48) vs model (1, 17, 32)' in msg
        assert 'blocks.1.mlp.fc2.weight: checkpoint (48, 192) vs model (32, 128)' in msg
    path = save(tmp_path, timm_pit().state_dict(), 'pit.pth')
    with pytest.raises(ValueError, match=r'pos_embed: checkpoint \(1, 8, 7, 7\) vs model '
                       r'\(1, 16, 7, 7\)'):
        load_pretrained(pit(arch=dict(PIT_ARCH, base_dims=(16, 16, 16))), path)


def test_class_token_rules(tmp_path):
    sd = timm_vit().state_dict()
    model = vit(with_cls_token=False, out_type='featmap')
    load_pretrained(model, save(tmp_path, sd))
    torch.testing.assert_close(model.pos_embed.data, sd['pos_embed'][:, 1:], rtol=0, atol=0)
    no_cls = mmpretrain_vit(with_cls_token=False, out_type='featmap').state_dict()
    with pytest.raises(ValueError, match='the checkpoint has no cls_token but the model has one'):
        vit().load_state_dict(no_cls)


# ----------------------------------------------------------------------------- detection
def test_unknown_format_lists_known_formats():
    bogus = {'encoder.weight': torch.zeros(2)}
    with pytest.raises(ValueError, match='unknown checkpoint format') as err:
        convert_state_dict(bogus, 'vit')
    for name in ('timm_vit', 'mmpretrain_vit', 'timm_pit', 'naver_pit'):
        assert f'  - {name} (' in str(err.value)
    assert set(CONVERTERS) == {'timm_vit', 'mmpretrain_vit', 'timm_pit', 'naver_pit',
                               'mmaction_timesformer'}
    with pytest.raises(ValueError, match=r"unknown checkpoint format \(first keys: "
                       r"\['encoder.weight'\]\)"):
        vit().load_state_dict(bogus, strict=False)
    with pytest.raises(ValueError, match="unknown checkpoint format 'nope'"):
        convert_state_dict(timm_vit().state_dict(), 'vit', fmt='nope')


def test_ambiguous_wrong_target_and_forced_format():
    both = {**timm_vit().state_dict(), **mmpretrain_vit().state_dict()}
    with pytest.raises(ValueError, match=r"matches several formats \['timm_vit', "
                       r"'mmpretrain_vit'\]; pass fmt="):
        detect_format(both)
    with pytest.raises(ValueError, match="format 'timm_pit', which is for pit; it cannot load "
                       'into a vit model'):
        vit().load_state_dict(timm_pit().state_dict())
    with pytest.raises(ValueError, match="does not carry the signature of format "
                       "'mmpretrain_vit'"):
        convert_state_dict(timm_vit().state_dict(), 'vit', fmt='mmpretrain_vit')
    converted, fmt = convert_state_dict(timm_vit().state_dict(), 'vit', fmt='timm_vit')
    assert fmt == 'timm_vit' and 'blocks.1.mlp.fc2.bias' in converted


@pytest.mark.parametrize('build, key', [
    (lambda: mmpretrain_vit(layer_scale_init_value=0.1), 'layers.0.attn.gamma1.weight'),
    (lambda: mmpretrain_vit(pre_norm=True), 'pre_norm.weight'),
    (lambda: timm_vit(init_values=0.1), 'blocks.0.ls1.gamma'),
], ids=['mmpretrain-layer-scale', 'mmpretrain-pre-norm', 'timm-layer-scale'])
def test_unsupported_parameters_are_refused(build, key):
    with pytest.raises(ValueError, match=f"checkpoint key '{key}' has no counterpart"):
        vit().load_state_dict(build().state_dict())


def test_unwrap_checkpoint():
    w = torch.zeros(1)
    assert unwrap_checkpoint({'module.a': w, 'module.b': w}) == {'a': w, 'b': w}
    assert unwrap_checkpoint({'model': {'a': w}, 'epoch': 3}) == {'a': w}
    with pytest.raises(ValueError, match=r"several state-dict wrappers \['state_dict', 'model'\]"):
        unwrap_checkpoint({'state_dict': {'a': w}, 'model': {'a': w}})


def test_load_pretrained_strictness(tmp_path):
    path = save(tmp_path, timm_vit(global_pool='avg', fc_norm=True).state_dict())
    with pytest.raises(RuntimeError, match=r"lacks model keys: \['norm.weight', 'norm.bias'\]"):
        load_pretrained(vit(), path)
    result = load_pretrained(vit(), path, strict=False)
    assert result.missing_keys == ['norm.weight', 'norm.bias']
    assert sorted(result.unexpected_keys) == ['fc_norm.bias', 'fc_norm.weight', 'head.bias',
                                              'head.weight']
    with pytest.raises(TypeError, match='load_pretrained loads into ScaledViT / ScaledPiT'):
        load_pretrained(torch.nn.Linear(2, 2), path)
