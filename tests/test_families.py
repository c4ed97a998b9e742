"""The backbone-family protocol: every registered family answers it consistently, and a new
family is usable by rules and the scaling search without touching them."""
import pytest
import torch

from mmvitscale.checkpoint.converters import TARGETS
from mmvitscale.cost import get_complexity
from mmvitscale.families import FAMILIES, Family, family_names, get_family, register_family
from mmvitscale.registry import MODELS
from mmvitscale.rules import derive_image
from mmvitscale.search.rule_search import BaseSpec, attach_costs, enumerate_candidates

SMALL = {
    'vit': (dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.0), 32, 8, {}),
    'pit': (dict(base_dims=(16, 16), depths=(1, 1), heads=(2, 2), mlp_ratio=2.0, patch_size=4,
                 patch_stride=4), 32, None, {}),
    'video': (dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.0), 32, 8,
              dict(num_frames=2)),
    'asvit': ('asvit-seed', 64, None, {}),
}


def test_every_family_is_covered_here():
    assert family_names() == ('vit', 'pit', 'video', 'asvit')
    assert set(SMALL) == set(FAMILIES)


@pytest.mark.parametrize('name', list(SMALL))
def test_protocol_answers_match_the_built_backbone(name):
    fam = get_family(name)
    arch, size, patch, geometry = SMALL[name]
    rule = dict(depth_mult=1.0)
    spec = fam.resolve(arch, size, patch, rule, **geometry)
    cfg = fam.backbone_cfg(arch, size, patch, rule, **geometry)
    model = MODELS.build(cfg).eval()
    assert type(model) is fam.backbone_cls
    assert fam.checkpoint_target is None or fam.checkpoint_target in TARGETS
    h, w = fam.input_size(spec)
    shape = (3, geometry['num_frames'], h, w) if fam.kind == 'video' else (3, h, w)
    with torch.no_grad():
        model(torch.randn(1, *shape))
    grids = fam.token_grids(spec)
    assert grids and all(g[0] > 0 and g[1] > 0 for g in grids)
    flops = fam.analytic_flops(spec)
    if flops is not None:  # the closed form equals the dispatch-level counter
        if name == 'asvit':
            model = MODELS.build(dict(cfg, out_indices=-1))
        assert flops == get_complexity(model, shape)['flops']


def test_unknown_family_names_the_field_and_choices():
    with pytest.raises(ValueError, match=r"^family must be one of \('vit', 'pit', 'video', "
                       r"'asvit'\), got 'cnn'$"):
        get_family('cnn')
    with pytest.raises(ValueError, match=r"^--family must be one of \('vit', 'pit'\), got 3$"):
        get_family(3, '--family', among=('vit', 'pit'))
    with pytest.raises(KeyError, match='already registered'):
        register_family(type(get_family('vit'))())


def test_a_new_family_needs_no_change_elsewhere():
    """A family registered from outside the package is usable by derive_image and the search."""
    vit = get_family('vit')

    class Wide(type(vit)):
        name = 'test-wide-vit'
        order = 50
        search_grid = dict(width_mult=(1.0, 2.0))

        def resolve(self, arch, img_size=224, patch_size=None, rule=None, **geometry):
            rule = dict(rule or {})
            rule['width_mult'] = rule.get('width_mult', 1.0) * 2
            return super().resolve(arch, img_size, patch_size, rule)

        def backbone_cfg(self, arch, img_size=224, patch_size=None, rule=None, **kwargs):
            rule = dict(rule or {})
            rule['width_mult'] = rule.get('width_mult', 1.0) * 2
            return super().backbone_cfg(arch, img_size, patch_size, rule, **kwargs)

    register_family(Wide())
    try:
        arch = SMALL['vit'][0]
        derived = derive_image('test-wide-vit', arch, {}, img_size=32, patch_size=8)
        assert derived['arch']['embed_dims'] == 64
        base = BaseSpec('test-wide-vit', arch, 32, 8)
        cands, _ = enumerate_candidates(base)
        attach_costs(cands, base)
        assert sorted(c.arch['embed_dims'] for c in cands) == [64, 128]
        assert all(c.flops == vit.analytic_flops(base.resolve(c.rule)) for c in cands)
    finally:
        FAMILIES.pop('test-wide-vit')
    assert not isinstance(FAMILIES.get('test-wide-vit'), Family)


@pytest.mark.parametrize('name', list(SMALL))
def test_shared_constructor_options_behave_alike(name):
    """qkv_bias, drop_path_rate and frozen_stages mean the same in every family."""
    fam = get_family(name)
    arch, size, patch, geometry = SMALL[name]
    cfg = fam.backbone_cfg(arch, size, patch, {}, **geometry)
    model = MODELS.build(dict(cfg, qkv_bias=False))
    qkv = [m for n, m in model.named_modules() if n.endswith('attn.qkv')]
    assert qkv and all(m.bias is None for m in qkv)
    with pytest.raises(ValueError, match=r'^drop_path_rate must be .*got 1.5$'):
        MODELS.build(dict(cfg, drop_path_rate=1.5))
    with pytest.raises(ValueError, match=r'^frozen_stages must be an int from -1 .*got 20$'):
        MODELS.build(dict(cfg, frozen_stages=20))
    with pytest.raises(TypeError, match=r"^qkv_bias must be a bool, got 'no'$"):
        MODELS.build(dict(cfg, qkv_bias='no'))


@pytest.mark.parametrize('name', ['vit', 'pit'])
def test_latency_model_agrees_with_itself_and_round_trips(name):
    """A family's two latency descriptions (analytic terms, kernel list) count the same work."""
    from mmvitscale.cost.kernels import KERNEL_FEATURES, kernel_features
    from mmvitscale.cost.predictor import FEATURES, features
    from mmvitscale.families import spec_family, spec_from_dict
    fam = get_family(name)
    arch, size, patch, _ = SMALL[name]
    spec = fam.resolve(arch, size, patch, dict(width_mult=1.5))
    assert spec_family(spec) is fam
    assert spec_from_dict(spec.as_dict()) == spec
    f = dict(zip(FEATURES, features(spec, in_channels=3)))
    k = dict(zip(KERNEL_FEATURES, kernel_features(spec, in_channels=3)))
    assert k['gemm_mac'] + k['dwconv_mac'] == f['linear'] + f['embed']
    assert (k['attn_mac'], k['attn_score']) == (f['attention'], f['softmax'])
    assert k['blocks'] == f['blocks'] == sum(d for *_, d in fam.token_stages(spec))


def test_latency_model_lookup_errors():
    from mmvitscale.families import latency_families, spec_family, spec_from_dict
    assert [f.name for f in latency_families()] == ['vit', 'pit']
    with pytest.raises(ValueError, match=r"arch dict \{'width': 8\} is no family's spec: it "
                                         r"needs one of 'embed_dims' \(vit\), 'base_dims'"):
        spec_from_dict(dict(width=8))
    with pytest.raises(ValueError, match=r"lacks 'patch_stride'"):
        spec_from_dict(dict(base_dims=[8], depths=[1], heads=[1], img_size=[32, 32],
                            patch_size=4))
    asvit = get_family('asvit').resolve('asvit-seed', 64)
    with pytest.raises(TypeError, match=r'^arch must be one of ViTArch, PiTArch, got AsViTArch$'):
        spec_family(asvit)
    with pytest.raises(TypeError, match=r'got AsViTArch \(or the dict of one\)$'):
        spec_from_dict(asvit)
    with pytest.raises(NotImplementedError, match="family 'asvit' has no latency model"):
        get_family('asvit').kernels(asvit)
