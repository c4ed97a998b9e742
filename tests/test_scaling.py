import pytest

from mmvitscale.scaling import ViTArch, make_vit_arch, scale_vit

BASE = make_vit_arch(192, 12, 3, 4.0, 224, 16)


def test_no_rule_is_identity():
    assert scale_vit(BASE, None) == BASE
    assert scale_vit(BASE, {}) == BASE


def test_multipliers_round_as_documented():
    arch = scale_vit(BASE, dict(depth_mult=1.5, width_mult=1.25, mlp_ratio_mult=0.75))
    assert arch.num_layers == 18
    assert arch.embed_dims == 240  # 192 * 1.25 = 240, a multiple of lcm(3, 8) = 24
    assert arch.mlp_ratio == 3.0 and arch.mlp_hidden == 720
    # 192 * 0.8 = 153.6 -> nearest multiple of 24 is 144
    assert scale_vit(BASE, dict(width_mult=0.8)).embed_dims == 144
    # changing heads re-rounds width to lcm(heads, 8): 192 -> multiple of 40 = 200
    arch = scale_vit(BASE, dict(heads=5))
    assert (arch.num_heads, arch.embed_dims) == (5, 200)
    assert arch.embed_dims % 8 == 0 and arch.embed_dims % 5 == 0


def test_resolution_multiplier_rounds_to_patch_multiple():
    arch = scale_vit(BASE, dict(resolution_mult=1.1))  # 246.4 -> 240 (15 patches of 16)
    assert arch.img_size == (240, 240) and arch.grid == (15, 15)
    arch = scale_vit(BASE, dict(patch_size=32, resolution_mult=1.3))  # 291.2 -> 288
    assert arch.patch_size == 32 and arch.img_size == (288, 288)


def test_absolute_targets():
    arch = scale_vit(BASE, dict(depth=6, width=256, heads=4, mlp_ratio=3, resolution=192,
                                patch_size=12))
    assert arch == ViTArch(256, 6, 4, 3.0, (192, 192), 12)
    assert arch.head_dims == 64 and arch.grid == (16, 16)


@pytest.mark.parametrize('rule, message', [
    (dict(depth_mult=0.01), 'scaling.depth_mult=0.01 turns depth 12 into 0; it must stay >= 1'),
    (dict(width=200), 'scaling: width=200 is not divisible by heads=3'),
    (dict(resolution=230), 'scaling: resolution=230 is not a multiple of patch_size=16 '
     '(no padding is applied)'),
    (dict(depths=3), "unknown scaling key 'depths' (value 3)"),
    (dict(depth=0), 'scaling.depth must be a positive number, got 0'),
    (dict(depth=3, depth_mult=2.0), 'scaling gives both depth=3 and depth_mult=2.0'),
    (dict(width_mult=0.01), 'scaling.width_mult=0.01 turns width 192 into 0'),
    (dict(depth=2.5), 'scaling.depth must be an integer, got 2.5'),
    (dict(width_mult='2'), "scaling.width_mult must be a positive number, got '2'"),
])
def test_infeasible_rules_name_field_and_value(rule, message):
    with pytest.raises(ValueError) as err:
        scale_vit(BASE, rule)
    assert message in str(err.value)


def test_rule_must_be_a_mapping():
    with pytest.raises(ValueError, match=r"scaling must be a dict, got list: \[1\]"):
        scale_vit(BASE, [1])
