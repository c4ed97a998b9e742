"""Castling-ViT linear-angular attention: math, backbones, conversion, cost, sparsity hook."""
import math

import pytest
import torch
import torch.nn.functional as F

import mmvitscale  # noqa: F401
from mmvitscale.cost import get_complexity, vit_flops
from mmvitscale.engine import AuxMaskSparsityHook
from mmvitscale.models import ScaledPiT, ScaledVideoViT, ScaledViT, TransformerBlock
from mmvitscale.models.layers import Attention
from mmvitscale.models.linear_attention import (LinearAngularAttention, aux_regularizer,
                                                convert_to_inference)
from mmvitscale.models.ops import TokenGrid

TINY = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.0)
LIN = dict(attn_type='linear_angular', linear_kernel_size=3)


def reference(attn: LinearAngularAttention, x, grid, prefix):
    """Naive O(N^2) linear-angular attention (+ masked softmax branch) with a loop conv."""
    B, N, C = x.shape
    H, d = attn.num_heads, attn.head_dim
    qkv = (x @ attn.qkv.weight.T + attn.qkv.bias).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    qn = q / q.norm(dim=-1, keepdim=True)
    kn = k / k.norm(dim=-1, keepdim=True)
    sim = 0.5 + qn @ kn.transpose(-2, -1) / math.pi  # (B, H, N, N), all > 0
    out = (sim / sim.sum(-1, keepdim=True)) @ v
    if attn.aux_mask is not None:
        soft = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1) @ v
        out = out + attn.aux_mask.view(1, H, 1, 1) * soft
    out = out.transpose(1, 2).reshape(B, N, C)
    h, w = grid
    vg = v.transpose(1, 2).reshape(B, N, C)[:, prefix:].reshape(B, h, w, C)
    r = attn.kernel_size // 2
    wt = attn.dconv.weight[:, 0]  # (C, k, k)
    conv = torch.zeros_like(vg) + attn.dconv.bias
    for i in range(h):
        for j in range(w):
            for a in range(-r, r + 1):
                for b in range(-r, r + 1):
                    if 0 <= i + a < h and 0 <= j + b < w:
                        conv[:, i, j] += vg[:, i + a, j + b] * wt[:, a + r, b + r]
    out = out.clone()
    out[:, prefix:] += conv.reshape(B, h * w, C)
    return out @ attn.proj.weight.T + attn.proj.bias


@pytest.mark.parametrize('prefix,aux,dtype', [(1, False, torch.float64), (0, True, torch.float64),
                                              (1, True, torch.float32)])
def test_matches_naive_reference(prefix, aux, dtype):
    torch.manual_seed(0)
    attn = LinearAngularAttention(24, 3, kernel_size=3, aux_branch=aux).to(dtype)
    if aux:
        attn.aux_mask.data = torch.tensor([0.5, -1.0, 2.0], dtype=dtype)
    grid = (3, 4)
    x = torch.randn(2, prefix + 12, 24, dtype=dtype)
    tokens = TokenGrid(*grid, prefix)
    with torch.no_grad():
        ref = reference(attn, x, grid, prefix)
        attn.train()
        torch.testing.assert_close(attn(x, grid=tokens), ref, atol=1e-5, rtol=1e-5)
        attn.eval()  # oneDNN fast path (float32) with the fused residual add
        torch.testing.assert_close(attn(x, residual=x, grid=tokens), ref + x, atol=1e-5,
                                   rtol=1e-5)
    with pytest.raises(ValueError, match='needs the token grid'):
        attn(x)


def test_several_frames_conv_per_frame_and_token_mismatch():
    torch.manual_seed(0)
    attn = LinearAngularAttention(16, 2, kernel_size=3).double()
    x = torch.randn(1, 1 + 2 * 6, 16, dtype=torch.double)
    grid = TokenGrid(2, 3, 1)
    out = attn(x, grid=grid)
    # frame 1 alone (same class token) gives the same conv term, so the difference with the
    # 2-frame output is only in the (global) attention part: check the conv separately
    v = attn.qkv(x)[..., 32:]
    conv = attn._value_conv(v[:, 1:], grid)
    per_frame = attn.dconv(v[:, 1:].reshape(2, 2, 3, 16).permute(0, 3, 1, 2))
    torch.testing.assert_close(conv, per_frame.permute(0, 2, 3, 1).reshape(1, 12, 16))
    assert out.shape == x.shape
    with pytest.raises(ValueError, match=r'^LinearAngularAttention: 12 tokens do not match '
                       r'grid=2x3 with 1 prefix tokens$'):
        attn(x[:, :12], grid=grid)


def test_softmax_block_unchanged_and_checkpoint_names_map():
    blk = TransformerBlock(32, 2, 64)
    assert type(blk.attn) is Attention
    lin = TransformerBlock(32, 2, 64, attn_type='linear_angular', linear_kernel_size=3)
    sd = blk.state_dict()
    missing, unexpected = lin.load_state_dict(sd, strict=False)
    assert unexpected == [] and sorted(missing) == ['attn.dconv.bias', 'attn.dconv.weight']
    soft = ScaledViT(TINY, img_size=32, patch_size=8).state_dict()
    missing, unexpected = ScaledViT(TINY, img_size=32, patch_size=8, **LIN).load_state_dict(
        soft, strict=False)
    assert unexpected == [] and all(k.endswith(('dconv.weight', 'dconv.bias')) for k in missing)
    assert len(missing) == 4


@pytest.mark.parametrize('out_type', ['raw', 'cls_token', 'featmap', 'avg_featmap'])
def test_vit_and_pit_shapes(out_type):
    x = torch.randn(2, 3, 48, 32)
    vit = ScaledViT(TINY, img_size=32, patch_size=8, out_type=out_type, aux_branch=True, **LIN)
    expect = {'raw': (2, 25, 32), 'cls_token': (2, 32), 'featmap': (2, 32, 6, 4),
              'avg_featmap': (2, 32)}[out_type]
    for mode in (True, False):
        vit.train(mode)
        assert vit(x)[0].shape == expect
    pit = ScaledPiT(img_size=64, out_type=out_type, out_indices=(0, 1, 2),
                    attn_type=['linear_angular', 'softmax', 'linear_angular'],
                    linear_kernel_size=3)
    outs = pit(torch.randn(1, 3, 64, 64))
    assert [type(s.attn).__name__ for s in (pit.transformers[0].blocks[0],
                                            pit.transformers[1].blocks[0])] == [
        'LinearAngularAttention', 'Attention']
    assert len(outs) == 3 and outs[2].shape[:2] == ((1, 256) if out_type != 'raw' else (1, 5))


@pytest.mark.parametrize('attention_type', ['joint', 'divided', 'space_only'])
def test_video_vit_shapes(attention_type):
    model = ScaledVideoViT(TINY, img_size=32, patch_size=8, num_frames=2,
                           attention_type=attention_type, out_type='featmap', **LIN)
    assert model(torch.randn(2, 3, 2, 32, 32)).shape == (2, 32, 2, 4, 4)
    if attention_type == 'divided':
        assert type(model.blocks[0].temporal_attn) is Attention


def test_rule_carries_attn_type():
    vit = ScaledViT(TINY, img_size=32, patch_size=8, linear_kernel_size=3,
                    scaling=dict(depth=3, attn_type='linear_angular'))
    assert vit.attn_type == 'linear_angular' and vit.num_layers == 3
    assert isinstance(vit.blocks[2].attn, LinearAngularAttention)
    video = ScaledVideoViT(TINY, img_size=32, patch_size=8, num_frames=2, linear_kernel_size=3,
                           scaling=dict(frames=4, attn_type='linear_angular'))
    assert isinstance(video.blocks[0].attn, LinearAngularAttention)
    pit = ScaledPiT(img_size=64, linear_kernel_size=3, scaling=dict(attn_type='linear_angular'))
    assert pit.attn_types == ['linear_angular'] * 3


def test_errors_name_field_and_value():
    kw = dict(arch=TINY, img_size=32, patch_size=8)
    with pytest.raises(ValueError, match=r"^attn_type must be one of \('softmax', "
                       r"'linear_angular'\), got 'performer'$"):
        ScaledViT(**kw, attn_type='performer')
    with pytest.raises(ValueError, match=r'^linear_kernel_size must be an odd positive int, '
                       r'got 8$'):
        ScaledViT(**kw, attn_type='linear_angular', linear_kernel_size=8)
    with pytest.raises(ValueError, match=r'^linear_kernel_size=9 does not fit the token grid '
                       r'4x4 \(at most 2\*4-1=7\)$'):
        ScaledViT(**kw, attn_type='linear_angular')
    vit = ScaledViT(**kw, attn_type='linear_angular', linear_kernel_size=7)
    with pytest.raises(ValueError, match=r'^linear_kernel_size=7 does not fit the token grid '
                       r'2x3 \(at most 2\*2-1=3\)$'):
        vit(torch.randn(1, 3, 16, 24))  # smaller input at forward time
    with pytest.raises(ValueError, match=r"^attn_type\[1\] must be one of \('softmax', "
                       r"'linear_angular'\), got 'x'$"):
        ScaledPiT(img_size=64, attn_type=['softmax', 'x', 'softmax'])
    with pytest.raises(ValueError, match=r"^attn_type must be a str or a list of 3 \(one per "
                       r"stage\), got \['softmax'\]$"):
        ScaledPiT(img_size=64, attn_type=['softmax'])
    with pytest.raises(ValueError, match=r"^attn_type='softmax' conflicts with "
                       r"scaling.attn_type='linear_angular'$"):
        ScaledViT(**kw, attn_type='softmax', scaling=dict(attn_type='linear_angular'))
    with pytest.raises(ValueError, match=r'^aux_branch=False: ScaledViT has no auxiliary '
                       r'softmax branch to remove'):
        convert_to_inference(vit)
    with pytest.raises(ValueError, match=r'^attn_type must be one of'):
        vit_flops(vit.arch_spec, attn_type='linear')


def test_conversion_with_zero_mask_is_exact_and_removes_the_branch():
    torch.manual_seed(0)
    model = ScaledViT(TINY, img_size=32, patch_size=8, aux_branch=True, out_type='raw', **LIN)
    assert aux_regularizer(model).item() == pytest.approx(4.0)  # 2 blocks x 2 heads x 1
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        with_mask = model(x)[0]
        for blk in model.blocks:
            blk.attn.aux_mask.zero_()
        zero = model(x)[0]
    assert not torch.allclose(with_mask, zero, atol=1e-3)  # the branch did contribute
    sd = model.state_dict()
    assert any(k.endswith('aux_mask') for k in sd)
    assert convert_to_inference(model) is model
    assert not any('aux' in k for k in model.state_dict())
    assert not model.aux_branch and aux_regularizer(model).item() == 0
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], zero, atol=1e-6, rtol=1e-6)
    # loading the training checkpoint with inference_only gives the same pure linear model
    pure = ScaledViT(TINY, img_size=32, patch_size=8, aux_branch=True, out_type='raw',
                     inference_only=True, **LIN).eval()
    pure.load_state_dict(sd)  # strict: aux keys dropped at load
    assert not any('aux' in k for k in pure.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(pure(x)[0], zero, atol=1e-6, rtol=1e-6)
    with pytest.raises(RuntimeError, match='aux_mask'):  # without the flag: refused
        ScaledViT(TINY, img_size=32, patch_size=8, **LIN).load_state_dict(sd)


@pytest.mark.parametrize('size,kernel', [(224, 9), (320, 5), (96, 3)])
def test_counter_matches_analytic(size, kernel):
    model = ScaledViT('deit-tiny', img_size=size, attn_type='linear_angular',
                      linear_kernel_size=kernel)
    counted = get_complexity(model, (3, size, size))
    terms = vit_flops(model.arch_spec, num_classes=0, attn_type='linear_angular',
                      linear_kernel_size=kernel)
    assert counted['flops'] == terms['total']
    assert counted['by_op']['bmm'] == terms['attention']
    assert '_scaled_dot_product_flash_attention_for_cpu' not in counted['by_op']
    soft = vit_flops(model.arch_spec, num_classes=0)
    assert 'dwconv' not in soft and soft['total'] == get_complexity(
        ScaledViT('deit-tiny', img_size=size), (3, size, size))['flops']


def test_analytic_attention_is_linear_in_tokens():
    small = ScaledViT.resolve_arch('deit-tiny', 224)
    big = ScaledViT.resolve_arch('deit-tiny', 448)  # 4x patches
    lin = [vit_flops(a, attn_type='linear_angular') for a in (small, big)]
    soft = [vit_flops(a) for a in (small, big)]
    assert lin[1]['attention'] / lin[0]['attention'] == pytest.approx(785 / 197)
    assert lin[1]['dwconv'] == 4 * lin[0]['dwconv']
    assert soft[1]['attention'] / soft[0]['attention'] == pytest.approx((785 / 197)**2)


def test_hook_rejects_bad_weight_and_models_without_masks():
    with pytest.raises(ValueError, match=r'^weight must be a non-negative number, got -1$'):
        AuxMaskSparsityHook(weight=-1)

    class R:
        model = ScaledViT(TINY, img_size=32, patch_size=8)
    with pytest.raises(ValueError, match='has no aux_mask'):
        AuxMaskSparsityHook().before_run(R())


def _run(tmp_path, hook_weight):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.backbone = ScaledViT(TINY, img_size=32, patch_size=8, aux_branch=True, **LIN)
            self.head = torch.nn.Linear(32, 4)

        def forward(self, inputs, labels, mode='tensor'):
            logits = self.head(self.backbone(torch.stack(inputs))[0])
            if mode == 'loss':
                return dict(loss_cls=F.cross_entropy(logits, torch.stack(labels)))
            return logits

    g = torch.Generator().manual_seed(0)
    data = [dict(inputs=torch.randn(3, 32, 32, generator=g), labels=torch.tensor(i % 4))
            for i in range(8)]
    torch.manual_seed(0)
    model = Toy()
    hooks = [dict(type='mmvitscale.AuxMaskSparsityHook', weight=hook_weight)] if hook_weight \
        else []
    runner = Runner(model=model, work_dir=str(tmp_path / str(hook_weight)),
                    train_dataloader=dict(dataset=data, batch_size=4, num_workers=0,
                                          sampler=dict(type='DefaultSampler', shuffle=False),
                                          collate_fn=dict(type='pseudo_collate')),
                    train_cfg=dict(by_epoch=False, max_iters=6),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05)),
                    custom_hooks=hooks, default_hooks=dict(checkpoint=None),
                    default_scope='mmvitscale', log_level='WARNING')
    runner.train()
    assert 'parse_losses' not in model.__dict__  # wrapper removed after training
    return aux_regularizer(model).item(), runner


def test_hook_shrinks_mask_in_a_real_runner(tmp_path):
    with_hook, runner = _run(tmp_path, 1.0)
    without, _ = _run(tmp_path, 0.0)
    assert with_hook < 4.0 - 6 * 0.05 * 4 * 0.9  # L1 step of lr * weight per mask entry
    assert with_hook < without - 0.8  # the task loss alone barely moves the masks
    logged = runner.message_hub.get_scalar('train/loss_aux_mask').current()
    assert 0 < logged <= 4.0  # the penalty is part of the logged (and optimised) loss


def test_pit_round_trip_and_inference_only_load():
    kw = dict(img_size=64, linear_kernel_size=3,
              attn_type=['linear_angular', 'softmax', 'linear_angular'])
    sd = ScaledPiT(aux_branch=True, **kw).state_dict()
    assert sum(k.endswith('aux_mask') for k in sd) == 6  # stages 0 and 2: 2 + 4 blocks
    ScaledPiT(aux_branch=True, **kw).load_state_dict(sd)  # own format incl. dconv / aux_mask
    pure = ScaledPiT(aux_branch=True, inference_only=True, **kw)
    pure.load_state_dict(sd)
    assert not any('aux' in k for k in pure.state_dict())


@pytest.mark.parametrize('family', ['vit', 'pit', 'video'])
def test_one_model_two_resolutions_in_two_threads(family):
    """The token grid travels with each forward: threads with different input sizes sharing
    one model get exactly the sequential results (it used to be stored on the modules)."""
    import threading
    torch.manual_seed(0)
    if family == 'vit':
        model = ScaledViT(TINY, img_size=32, patch_size=8, **LIN)
        inputs = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 48, 64)]
    elif family == 'pit':
        arch = dict(base_dims=(16, 16), depths=(1, 1), heads=(2, 2), mlp_ratio=2.0,
                    patch_size=4, patch_stride=4)
        model = ScaledPiT(arch, img_size=32, **LIN)
        inputs = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 48, 64)]
    else:
        model = ScaledVideoViT(TINY, img_size=32, patch_size=8, num_frames=2, **LIN)
        inputs = [torch.randn(2, 3, 2, 32, 32), torch.randn(2, 3, 2, 48, 64)]
    model.eval()
    with torch.no_grad():
        expected = [model(x) for x in inputs]
    results, errors = {}, []

    def work(i):
        try:
            with torch.no_grad():
                for _ in range(20):
                    results[i] = model(inputs[i])
                    torch.testing.assert_close(results[i], expected[i], rtol=0, atol=0)
        except Exception as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i, )) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_eager_linear_applies_to_its_own_thread_only():
    import threading

    from mmvitscale.models import ops
    seen = {}
    entered, release = threading.Event(), threading.Event()

    def exporter():
        with ops.eager_linear():
            seen['exporter'] = ops._EAGER_LINEAR.get()
            entered.set()
            release.wait(5)

    t = threading.Thread(target=exporter)
    t.start()
    entered.wait(5)
    seen['other'] = ops._EAGER_LINEAR.get()
    release.set()
    t.join()
    assert seen == {'exporter': True, 'other': False}
