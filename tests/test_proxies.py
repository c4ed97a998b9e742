import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from mmvitscale.models import ScaledPiT, ScaledViT
from mmvitscale.search import length_distortion, ntk_condition, pool_features, score_proxies
from mmvitscale.search import proxies as P


pytestmark = pytest.mark.usefixtures('one_thread')  # tests/conftest.py


def linear_builder(weight: torch.Tensor):
    def build() -> nn.Module:
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(weight)
        return layer
    return build


def tiny_vit() -> ScaledViT:
    model = ScaledViT(dict(embed_dims=16, num_layers=2, num_heads=2, mlp_ratio=2.0),
                      img_size=16, patch_size=4, out_type='avg_featmap', final_norm=False)
    model.init_weights()
    return model


def tiny_pit() -> ScaledPiT:
    model = ScaledPiT(dict(base_dims=(8, 8), depths=(1, 1), heads=(1, 2), patch_size=4,
                           patch_stride=2), img_size=16, out_type='avg_featmap')
    model.init_weights()
    return model


class NaNNet(nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * float('nan')


# ------------------------------------------------------------------ hand-checkable cases
def test_ntk_of_linear_map_matches_closed_form():
    # f(x) = sum(W x): d f / d W = 1 x^T, so K = d_out * X X^T whatever W is.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    weight = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    eig = np.linalg.eigvalsh(3 * x.numpy() @ x.numpy().T)
    expected = eig[-1] / eig[0]
    assert expected > 2  # a non-trivial condition number
    got = ntk_condition(linear_builder(weight), x, num_inits=2)
    assert got == pytest.approx(expected, rel=1e-10)


def test_length_distortion_of_linear_map_is_exact():
    # |W v| = 2 |v| for W = 2 Q (Q orthogonal): every point contributes 2 * radius.
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1),
                                       dtype=torch.float64))
    builder = linear_builder(2 * q)
    assert length_distortion(builder, (6, ), num_points=10, num_inits=3) == pytest.approx(
        10 * 2 * math.sqrt(6), rel=1e-12)
    assert length_distortion(builder, (6, ), num_points=4, num_inits=1,
                             radius=0.5) == pytest.approx(4 * 2 * 0.5, rel=1e-12)


def test_length_distortion_of_generic_linear_map():
    gen = torch.Generator().manual_seed(2)
    weight = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    seed, n, r = 4, 7, math.sqrt(8)
    builder = linear_builder(weight)
    got = length_distortion(lambda: nn.Sequential(nn.Flatten(), builder()), (2, 4),
                            num_points=n, num_inits=1, seed=seed)
    points, tangents = P._circle((2, 4), n, None, seed)
    points, tangents = points.reshape(n, -1).numpy(), tangents.reshape(n, -1).numpy()
    # a circle of radius sqrt(numel) through x(0), with the derivative of x(t) as tangents
    assert np.allclose(np.linalg.norm(points, axis=1), r)
    assert np.allclose(np.linalg.norm(tangents, axis=1), r)
    assert np.allclose((points * tangents).sum(1), 0, atol=1e-9)
    t = 2 * np.pi / n
    assert np.allclose(points[1], np.cos(t) * points[0] + np.sin(t) * tangents[0])
    expected = np.linalg.norm(tangents @ weight.numpy().T, axis=1).sum()
    assert got == pytest.approx(expected, rel=1e-12)


def test_pool_features_shapes():
    x = torch.arange(24.).reshape(2, 3, 4)
    assert torch.equal(pool_features(x), x.mean(1))
    fmap = torch.randn(2, 5, 3, 3)
    assert torch.equal(pool_features((x, fmap)), fmap.mean(dim=(2, 3)))
    assert torch.equal(pool_features([x[:, 0]]), x[:, 0])
    with pytest.raises(ValueError):
        pool_features(torch.ones(3))


# ------------------------------------------------------------------ fast path vs loops
@pytest.mark.parametrize('builder', [tiny_vit, tiny_pit], ids=['vit', 'pit'])
def test_fast_path_matches_loop_reference(builder):
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    fast = ntk_condition(builder, x, num_inits=2, seed=1)
    loop = P._ntk_condition_loop(builder, x, num_inits=2, seed=1)
    assert math.isfinite(fast) and fast > 1
    assert fast == pytest.approx(loop, rel=1e-4)
    fast = length_distortion(builder, (3, 16, 16), num_points=6, num_inits=2, seed=1)
    loop = P._length_distortion_loop(builder, (3, 16, 16), num_points=6, num_inits=2, seed=1)
    assert math.isfinite(fast) and fast > 0
    assert fast == pytest.approx(loop, rel=1e-4)


@pytest.mark.parametrize('builder', [tiny_vit, tiny_pit], ids=['vit', 'pit'])
def test_length_distortion_methods_agree_and_auto_switches_on_input_size(builder, monkeypatch):
    kw = dict(num_points=5, num_inits=2, seed=3)
    jvp_value = length_distortion(builder, (3, 16, 16), method='jvp', **kw)
    points = length_distortion(builder, (3, 16, 16), method='points', **kw)
    assert math.isfinite(points) and points > 0
    assert points == pytest.approx(jvp_value, rel=1e-4)  # forward mode vs double backward
    assert points == pytest.approx(P._length_distortion_loop(builder, (3, 16, 16), **kw),
                                   rel=1e-6)
    used = []
    real = P._derivatives_per_point
    monkeypatch.setattr(P, '_derivatives_per_point',
                        lambda *a: used.append('points') or real(*a))
    length_distortion(builder, (3, 16, 16), **kw)  # 768 elements: one jvp
    assert used == []
    monkeypatch.setattr(P, 'LD_JVP_MAX_NUMEL', 3 * 16 * 16 - 1)
    assert length_distortion(builder, (3, 16, 16), **kw) == points
    assert used == ['points'] * 2  # once per init
    # the per-point helper freezes the parameters it differentiates through and restores
    # exactly those, also when the forward raises
    model = builder().eval()
    frozen = next(iter(model.parameters()))
    frozen.requires_grad_(False)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    pts = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with P._math_attention():
        d = P._derivatives_per_point(model, pts, torch.ones_like(pts))
    assert d.shape[0] == 2 and torch.isfinite(d).all()
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    with pytest.raises(ValueError, match='in_channels=3'):
        P._derivatives_per_point(model, torch.ones(1, 5, 16, 16), torch.ones(1, 5, 16, 16))
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert before[next(iter(before))] is False and sum(before.values()) == len(before) - 1
    with pytest.raises(ValueError, match=r"method must be one of \('auto', 'jvp', 'points'\), "
                       r"got 'loop'"):
        length_distortion(builder, (3, 16, 16), method='loop')


def test_ntk_parameter_groups_and_param_sets():
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    whole = ntk_condition(tiny_vit, x, num_inits=1)
    assert ntk_condition(tiny_vit, x, num_inits=1, max_numel=1) == pytest.approx(whole, rel=1e-9)
    everything = ntk_condition(tiny_vit, x, num_inits=1, params='all')
    assert everything == pytest.approx(P._ntk_condition_loop(tiny_vit, x, 1, params='all'),
                                       rel=1e-4)
    assert everything != pytest.approx(whole, rel=1e-3)  # biases / embeddings do count
    with pytest.raises(ValueError, match='params'):
        ntk_condition(tiny_vit, x, num_inits=1, params='biases')


def test_grad_mode_of_caller_does_not_matter():
    # the oneDNN inference fast path of fused_linear must stay off inside the transforms
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ntk = ntk_condition(tiny_vit, x, num_inits=1)
    length = length_distortion(tiny_vit, (3, 16, 16), num_points=4, num_inits=1)
    with torch.no_grad():
        assert ntk_condition(tiny_vit, x, num_inits=1) == ntk
        assert length_distortion(tiny_vit, (3, 16, 16), num_points=4, num_inits=1) == length
    with torch.inference_mode():
        assert ntk_condition(tiny_vit, x.clone(), num_inits=1) == ntk
        assert length_distortion(tiny_vit, (3, 16, 16), num_points=4, num_inits=1) == length
        assert P._length_distortion_loop(tiny_vit, (3, 16, 16), num_points=4,
                                         num_inits=1) == pytest.approx(length, rel=1e-4)
        assert P._ntk_condition_loop(tiny_vit, x, num_inits=1) == pytest.approx(ntk, rel=1e-4)


# ------------------------------------------------------------------ seeds, models, failures
def test_seeded_and_deterministic():
    model = tiny_vit()
    rng = torch.get_rng_state()
    a = score_proxies(model, (3, 16, 16), batch_size=4, num_points=4, num_inits=2, seed=5)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is left alone
    b = score_proxies(model, (3, 16, 16), batch_size=4, num_points=4, num_inits=2, seed=5)
    c = score_proxies(model, (3, 16, 16), batch_size=4, num_points=4, num_inits=2, seed=6)
    assert a == b
    assert set(a) == {'ntk_condition', 'length_distortion'}
    assert all(math.isfinite(v) and v > 0 for v in a.values())
    assert a['ntk_condition'] != c['ntk_condition']
    assert a['length_distortion'] != c['length_distortion']
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    assert a['ntk_condition'] == ntk_condition(model, x, num_inits=2, seed=5)


def test_caller_model_is_not_mutated():
    model = tiny_vit().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    score_proxies(model, (3, 16, 16), batch_size=4, num_points=4, num_inits=2)
    assert model.training
    assert isinstance(model.blocks[0].norm1, nn.LayerNorm)
    assert sum(isinstance(m, nn.LayerNorm) for m in model.modules()) == 4
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_layernorms_are_removed_for_length_distortion():
    model = P._strip_layernorms(P._model_for_init(tiny_pit, 0))
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    assert sum(isinstance(m, nn.LayerNorm) for m in tiny_pit().modules()) == 5


def test_nan_model_returns_nan_and_warns(caplog):
    x = torch.randn(4, 4)
    with caplog.at_level(logging.WARNING, logger=P.__name__):  # NaNNet: the class builds one
        assert math.isnan(ntk_condition(NaNNet, x, num_inits=2))
        assert math.isnan(length_distortion(NaNNet, (4, ), num_points=3, num_inits=2))
        assert math.isnan(P._ntk_condition_loop(NaNNet, x, num_inits=1))
    assert sum('non-finite' in r.getMessage() for r in caplog.records) == 3


def test_singular_ntk_is_infinite_not_an_error(caplog):
    x = torch.randn(4, 3, dtype=torch.float64)
    x[2] = 0  # a zero input has a zero gradient row: K is exactly singular
    with caplog.at_level(logging.WARNING, logger=P.__name__):
        kappa = ntk_condition(linear_builder(torch.ones(2, 3, dtype=torch.float64)), x,
                              num_inits=1)
    assert kappa == math.inf
    assert any('non-finite' in r.getMessage() for r in caplog.records)


def test_bad_arguments_are_reported():
    with pytest.raises(TypeError, match='nn.Module'):
        ntk_condition(lambda: 3, torch.randn(2, 3), num_inits=1)
    with pytest.raises(ValueError, match='num_inits'):
        ntk_condition(NaNNet(), torch.randn(2, 4), num_inits=0)
    with pytest.raises(ValueError, match='num_points'):
        length_distortion(NaNNet(), (4, ), num_points=0)


# ------------------------------------------------------------------ init of a passed module
class InitNet(nn.Module):
    """A module whose own init (constant 0.5 weights) differs from PyTorch's defaults."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x)) * x.sum(1, keepdim=True)

    def init_weights(self) -> None:
        nn.init.normal_(self.fc.weight, 0.5, 0.01)


def test_module_is_reinitialised_with_its_own_init_weights():
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    # same RNG use: construction (PyTorch's default draw), then init_weights
    built = ntk_condition(lambda: _inited(InitNet()), x, num_inits=2, seed=3)
    assert ntk_condition(InitNet(), x, num_inits=2, seed=3) == pytest.approx(built, rel=1e-12)
    defaults = ntk_condition(InitNet, x, num_inits=2, seed=3)  # PyTorch's per-layer defaults
    assert defaults != pytest.approx(built, rel=1e-2)


def _inited(model: InitNet) -> InitNet:
    model.init_weights()
    return model


def test_module_without_init_weights_is_refused_naming_the_fix():
    with pytest.raises(TypeError, match=r'NaNNet module without init_weights\(\).*Pass a '
                                        r'builder.*lambda: NaNNet\(\.\.\.\)'):
        ntk_condition(NaNNet(), torch.randn(3, 4), num_inits=1)
    with pytest.raises(TypeError, match='without init_weights'):
        length_distortion(NaNNet(), (4, ), num_points=3, num_inits=1)


def test_batch_of_one_is_refused():
    with pytest.raises(ValueError, match=r'^batch_size must be an integer >= 2 .*1x1 NTK.*got '
                                         r'1$'):
        score_proxies(tiny_vit, (3, 16, 16), batch_size=1, num_inits=1)
    with pytest.raises(ValueError, match=r'batch size of inputs \(shape \(1, 4\)\) must be '
                                         r'an integer >= 2'):
        ntk_condition(NaNNet, torch.randn(1, 4), num_inits=1)
    with pytest.raises(ValueError, match=r'batch_size \(inputs shape \(1, 3, 16, 16\)\)'):
        ntk_condition(tiny_vit, (1, 3, 16, 16), num_inits=1)


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_inputs_are_bad_input_not_a_broken_architecture(bad, caplog):
    x = torch.randn(4, 3, 16, 16)
    x[1, 0, 2, 3] = bad
    with caplog.at_level(logging.WARNING, logger=P.__name__):
        with pytest.raises(ValueError, match=r'inputs \(shape \(4, 3, 16, 16\)\) contain 1 '
                                             r'NaN / inf values.*not a broken architecture'):
            ntk_condition(tiny_vit, x, num_inits=1)
        with pytest.raises(ValueError, match='NaN / inf'):
            score_proxies(tiny_vit, (3, 16, 16), inputs=x, num_inits=1)
    assert not any('broken' in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match=r'radius must be a finite positive number.*got nan'):
        length_distortion(tiny_vit, (3, 16, 16), radius=float('nan'), num_inits=1)


def test_reference_circle_repeats_the_first_point():
    points, tangents = P._circle((2, 3), 10, 1.0, 0, endpoint=True)
    torch.testing.assert_close(points[0], points[-1])
    assert points.flatten(1).norm(dim=1).sub(1).abs().max() < 1e-12
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1),
                                       dtype=torch.float64))
    # |2 Q v| = 2 r at every point, duplicated or not
    assert length_distortion(linear_builder(2 * q), (6, ), num_points=10, num_inits=1,
                             radius=1.0, endpoint=True) == pytest.approx(20.0, rel=1e-12)


# ------------------------------------------------------------------ NTK by hooks
class MixNet(nn.Module):
    """Mixes samples after a Linear: per-sample gradients do not follow from hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.fc(x))
        return y + 0.5 * y.flip(0)


def tiny_asvit() -> nn.Module:
    from mmvitscale.models import AsViT
    from mmvitscale.search.topology import genotype_to_arch
    model = AsViT(genotype_to_arch('5,4,2|3,2,3|2,2,2|4,1,2|16', width=16), img_size=32,
                  out_type='avg_featmap', final_norm=False)
    model.init_weights()
    return model


@pytest.mark.parametrize('builder', [tiny_asvit, tiny_vit], ids=['asvit', 'vit'])
def test_ntk_by_hooks_equals_vmap_and_loop(builder):
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    if builder is tiny_vit:
        x = x[..., :16, :16]
    model = P._model_for_init(builder, 0)
    chosen, _ = P._select_params(model, 'weight')
    assert P._hook_plan(model, chosen) is not None
    with torch.enable_grad():
        gram, used = P._ntk_gram(model, x, 'weight', 2**26, 'auto')
        ref, _ = P._ntk_gram(model, x, 'weight', 2**26, 'vmap')
    assert used == 'hooks'
    torch.testing.assert_close(gram, ref, rtol=1e-5, atol=1e-7 * ref.abs().max().item())
    hooks = ntk_condition(builder, x, num_inits=2, method='hooks')
    assert hooks == pytest.approx(P._ntk_condition_loop(builder, x, num_inits=2), rel=1e-4)


def test_ntk_hooks_fall_back_when_they_do_not_apply():
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="method='hooks'.*samples mixed"):
        ntk_condition(MixNet, x, num_inits=1, method='hooks')
    auto = ntk_condition(MixNet, x, num_inits=2)  # vmap: one sample at a time
    assert auto == pytest.approx(ntk_condition(MixNet, x, num_inits=2, method='vmap'), rel=1e-12)
    pit = P._model_for_init(tiny_pit, 0)  # depthwise pooling conv: no hook rule
    assert P._hook_plan(pit, P._select_params(pit, 'weight')[0]) is None
    with pytest.raises(ValueError, match='method must be one of'):
        ntk_condition(MixNet, x, num_inits=1, method='fast')


def test_ghost_gram_equals_the_materialised_per_sample_gram(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    x, delta = torch.randn(4, 3, 7, generator=gen), torch.randn(4, 3, 5, generator=gen)
    per_sample = torch.einsum('bto,bti->boi', delta.double(), x.double()).reshape(4, -1)
    torch.testing.assert_close(P._ghost_gram(x, delta), per_sample @ per_sample.T)
    assert P._ghost_pays(torch.zeros(16, 1, 256), torch.zeros(16, 1, 256))  # wide, 1 token
    assert not P._ghost_pays(torch.zeros(16, 64, 32), torch.zeros(16, 64, 32))  # many tokens
    # a whole network: the Gram from rows (not verified) equals the materialised one
    model = P._model_for_init(tiny_asvit, 0)
    x = torch.randn(6, 3, 32, 32, generator=gen)
    chosen, _ = P._select_params(model, 'weight')
    plan = P._hook_plan(model, chosen)
    calls = []
    real = P._ghost_gram
    monkeypatch.setattr(P, '_ghost_gram', lambda a, b: calls.append(1) or real(a, b))
    with torch.enable_grad():
        ghost = P._ntk_gram_hooks(model, x, chosen, plan, verify=False)
        full = P._ntk_gram_hooks(model, x, chosen, plan, verify=True)  # never from rows
    assert len(calls) > 0
    torch.testing.assert_close(ghost, full, rtol=1e-6, atol=1e-9 * full.abs().max().item())
