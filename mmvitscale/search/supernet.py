"""Weight-sharing supernet scorer (issue 5; the FBNetV2 / OFA / BigNAS masking idea).

One widest / deepest :class:`~mmvitscale.models.ScaledViT` (plus a linear classifier) is trained
once with the *sandwich rule*; scaled subnets are then scored with the shared weights, without
retraining. A subnet is a :class:`SubnetArch`: fewer blocks, a narrower embedding, fewer heads, a
narrower MLP and / or another input resolution.

Slicing rule (used by both :func:`extract_subnet` and the masked forward of :class:`SlicedViT`,
through the single helper :func:`slice_tensor`):

* **depth**: the first ``num_layers`` blocks are kept; the final LayerNorm follows the last kept
  block.
* **width**: the first ``embed_dims`` channels of every embedding-sized axis (patch-embed
  output, class token, position embedding, LayerNorm weight / bias, attention projection, MLP
  in / out, classifier input).
* **heads**: the head dimension is fixed to the supernet's (``super.embed_dims //
  super.num_heads``), so a subnet has ``num_heads = embed_dims / head_dim`` heads and they are
  the *first* heads of the supernet. ScaledViT's attention width equals its embedding width and
  heads are contiguous ``head_dim`` chunks inside each of the q, k and v blocks of the fused qkv
  projection, so the qkv weight is viewed as ``(3, D_super, D_super)`` and sliced to ``(3, D,
  D)``: q, k and v stay aligned (head ``j`` of q meets head ``j`` of k and v).
* **MLP**: the first ``mlp_hidden = round(embed_dims * mlp_ratio)`` hidden units (rows of fc1,
  columns of fc2).
* **resolution**: the (width-sliced) position embedding is resampled to the subnet's token grid
  with ScaledViT's own :func:`~mmvitscale.models.layers.resample_abs_pos_embed` (bicubic); the
  patch size is shared.

Masking is done by slicing in the forward (no zero masks): the sliced tensors are views /
differentiable copies of the supernet parameters, so the gradients of every subnet land in the
shared weights. There is no BatchNorm in a ViT, so no statistics recalibration is needed before
scoring.

Why a plain PyTorch loop rather than the project's runner: each sandwich step runs several
forward / backward passes over *different* architectures and resolutions on one shared set of
weights, which the runner's one-model-one-``train_step`` abstraction does not express without
a custom model wrapper; on two shared CPU cores the plain loop also avoids the runner's hook,
logging and dataloader-worker overhead, which matters for minute-scale budgets.
"""
import math
import random
import re
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.layers import resample_abs_pos_embed
from ..models.ops import patch_linear
from ..models.vit import ScaledViT

__all__ = [
    'SubnetArch', 'ViTClassifier', 'SlicedViT', 'check_subnet', 'slice_tensor', 'extract_subnet',
    'build_subnet', 'search_space', 'sample_subnet', 'smallest_subnet', 'sandwich_archs',
    'pick_subnets', 'prepare_images', 'train_supernet', 'train_model', 'score_subnets', 'evaluate'
]

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


@dataclass(frozen=True)
class SubnetArch:
    """A (sub)network of the supernet's space: ScaledViT knobs plus the input resolution."""

    embed_dims: int
    num_layers: int
    num_heads: int
    mlp_ratio: float = 4.0
    img_size: int = 32
    patch_size: int = 4

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.embed_dims * self.mlp_ratio))  # same rounding as ScaledViT

    @property
    def head_dim(self) -> int:
        return self.embed_dims // self.num_heads

    @property
    def grid(self) -> Tuple[int, int]:
        return (self.img_size // self.patch_size, ) * 2

    def vit_arch(self) -> dict:
        return dict(embed_dims=self.embed_dims, num_layers=self.num_layers,
                    num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        return (f'D{self.embed_dims}-L{self.num_layers}-H{self.num_heads}-'
                f'M{self.mlp_hidden}-R{self.img_size}')


ArchLike = Union[SubnetArch, Mapping]


def as_arch(arch: ArchLike) -> SubnetArch:
    return arch if isinstance(arch, SubnetArch) else SubnetArch(**arch)


def check_subnet(super_arch: ArchLike, sub_arch: ArchLike) -> SubnetArch:
    """Validate that ``sub_arch`` can be sliced out of ``super_arch``; returns it as a
    :class:`SubnetArch` (``ValueError`` naming the offending field otherwise)."""
    sup, sub = as_arch(super_arch), as_arch(sub_arch)
    if sup.embed_dims % sup.num_heads:
        raise ValueError(f'supernet embed_dims={sup.embed_dims} is not divisible by '
                         f'num_heads={sup.num_heads}')
    if not 0 < sub.embed_dims <= sup.embed_dims:
        raise ValueError(f'embed_dims={sub.embed_dims} is outside (0, {sup.embed_dims}]')
    if not 0 < sub.num_layers <= sup.num_layers:
        raise ValueError(f'num_layers={sub.num_layers} is outside (0, {sup.num_layers}]')
    if sub.num_heads <= 0 or sub.num_heads * sup.head_dim != sub.embed_dims:
        raise ValueError(f'num_heads={sub.num_heads} with embed_dims={sub.embed_dims} breaks the '
                         f'fixed head dim {sup.head_dim} (need embed_dims = num_heads * '
                         f'{sup.head_dim})')
    if not 0 < sub.mlp_hidden <= sup.mlp_hidden:
        raise ValueError(f'mlp_hidden={sub.mlp_hidden} (mlp_ratio={sub.mlp_ratio}) is outside '
                         f'(0, {sup.mlp_hidden}]')
    if sub.patch_size != sup.patch_size:
        raise ValueError(f'patch_size={sub.patch_size} differs from the supernet\'s '
                         f'{sup.patch_size} (the patch embedding is shared)')
    if sub.img_size <= 0 or sub.img_size % sub.patch_size:
        raise ValueError(f'img_size={sub.img_size} is not a positive multiple of '
                         f'patch_size={sub.patch_size}')
    return sub


_BLOCK = re.compile(r'^(?P<pre>(?:.*\.)?)blocks\.(?P<idx>\d+)\.(?P<rest>.+)$')


def slice_tensor(name: str, t: Tensor, sup: SubnetArch, sub: SubnetArch) -> Optional[Tensor]:
    """Slice one supernet tensor ``name`` (a ScaledViT / :class:`ViTClassifier` state-dict key,
    any prefix) to ``sub``; ``None`` for tensors the subnet drops (blocks past its depth).

    Differentiable: the result is a view or a copy of ``t`` that autograd tracks, so the masked
    forward trains the shared weights through it.
    """
    D, H = sub.embed_dims, sub.mlp_hidden
    m = _BLOCK.match(name)
    if m:
        if int(m.group('idx')) >= sub.num_layers:
            return None
        rest = m.group('rest')
        if rest in ('norm1.weight', 'norm1.bias', 'norm2.weight', 'norm2.bias',
                    'attn.proj.bias', 'mlp.fc2.bias'):
            return t[:D]
        if rest == 'attn.qkv.weight':  # (3*Ds, Ds) -> (3, Ds, Ds) -> (3, D, D): q/k/v aligned
            return t.reshape(3, sup.embed_dims, sup.embed_dims)[:, :D, :D].reshape(3 * D, D)
        if rest == 'attn.qkv.bias':
            return t.reshape(3, sup.embed_dims)[:, :D].reshape(3 * D)
        if rest == 'attn.proj.weight':
            return t[:D, :D]
        if rest == 'mlp.fc1.weight':
            return t[:H, :D]
        if rest == 'mlp.fc1.bias':
            return t[:H]
        if rest == 'mlp.fc2.weight':
            return t[:D, :H]
        raise KeyError(f'no slicing rule for {name!r}')
    base = name.rsplit('.', 2)
    tail = '.'.join(base[-2:]) if len(base) >= 2 else name
    if name.endswith('cls_token'):
        return t[..., :D]
    if name.endswith('pos_embed'):
        return resample_abs_pos_embed(t[..., :D], sub.grid, sup.grid, 1, 'bicubic')
    if tail in ('proj.weight', 'proj.bias') and 'patch_embed' in name:
        return t[:D]
    if tail in ('norm.weight', 'norm.bias'):
        return t[:D]
    if tail == 'head.weight':
        return t[:, :D]
    if tail == 'head.bias':
        return t
    raise KeyError(f'no slicing rule for {name!r}')


def extract_subnet(super_state: Mapping[str, Tensor], super_arch: ArchLike,
                   sub_arch: ArchLike) -> Dict[str, Tensor]:
    """State dict of the subnet ``sub_arch`` sliced out of the supernet's ``super_state``.

    Keys keep their names (ScaledViT keys, with or without a ``backbone.`` prefix, and an
    optional ``head.*`` classifier); blocks past the subnet's depth are dropped; tensors are
    detached contiguous copies, loadable into ``ScaledViT(sub.vit_arch(), img_size=sub.img_size,
    patch_size=sub.patch_size, ...)`` (see :func:`build_subnet`).
    """
    sup = as_arch(super_arch)
    sub = check_subnet(sup, sub_arch)
    out = {}
    for name, t in super_state.items():
        s = slice_tensor(name, t, sup, sub)
        if s is not None:
            out[name] = s.detach().clone().contiguous()
    return out


class ViTClassifier(nn.Module):
    """ScaledViT backbone (class-token output) + linear classifier."""

    def __init__(self, arch: ArchLike, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.arch = as_arch(arch)
        self.backbone = ScaledViT(self.arch.vit_arch(), img_size=self.arch.img_size,
                                  patch_size=self.arch.patch_size, in_channels=in_channels)
        self.head = nn.Linear(self.arch.embed_dims, num_classes)
        self.backbone.reset_parameters()  # init_weights() would log every tensor
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x)[-1])


class SlicedViT(ViTClassifier):
    """The supernet: a :class:`ViTClassifier` of the largest arch whose ``forward(x, arch)`` runs
    any subnet by slicing the shared parameters (functional ops, no copies of the model)."""

    def sliced_params(self, sub: SubnetArch) -> Dict[str, Tensor]:
        return {n: s for n, p in self.named_parameters()
                if (s := slice_tensor(n, p, self.arch, sub)) is not None}

    def forward(self, x: Tensor, arch: Optional[ArchLike] = None) -> Tensor:
        sub = check_subnet(self.arch, self.arch if arch is None else arch)
        p = self.sliced_params(sub)
        bb = self.backbone
        D, nh, hd = sub.embed_dims, sub.num_heads, self.arch.head_dim
        eps = bb.blocks[0].norm1.eps
        if x.shape[-1] != sub.img_size or x.shape[-2] != sub.img_size:
            raise ValueError(f'input {tuple(x.shape[-2:])} does not match img_size='
                             f'{sub.img_size}')
        # the patch conv as ScaledViT runs it (models.ops.patchify): bit-equal tokens to the
        # extracted subnet's
        x, _ = patch_linear(x, p['backbone.patch_embed.proj.weight'],
                            p['backbone.patch_embed.proj.bias'])
        x = torch.cat([p['backbone.cls_token'].expand(x.shape[0], -1, -1), x], dim=1)
        x = x + p['backbone.pos_embed']
        B, N, _ = x.shape
        drop = self.training and bb.blocks[0].attn.attn_drop
        for i in range(sub.num_layers):
            pre = f'backbone.blocks.{i}.'
            h = F.layer_norm(x, (D, ), p[pre + 'norm1.weight'], p[pre + 'norm1.bias'], eps)
            qkv = F.linear(h, p[pre + 'attn.qkv.weight'], p.get(pre + 'attn.qkv.bias'))
            q, k, v = qkv.reshape(B, N, 3, nh, hd).permute(2, 0, 3, 1, 4).unbind(0)
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=drop or 0.0)
            a = a.transpose(1, 2).reshape(B, N, D)
            x = F.linear(a, p[pre + 'attn.proj.weight'], p[pre + 'attn.proj.bias']) + x
            h = F.layer_norm(x, (D, ), p[pre + 'norm2.weight'], p[pre + 'norm2.bias'], eps)
            h = F.gelu(F.linear(h, p[pre + 'mlp.fc1.weight'], p[pre + 'mlp.fc1.bias']))
            x = F.linear(h, p[pre + 'mlp.fc2.weight'], p[pre + 'mlp.fc2.bias']) + x
        x = F.layer_norm(x, (D, ), p['backbone.norm.weight'], p['backbone.norm.bias'], eps)
        return F.linear(x[:, 0], p['head.weight'], p['head.bias'])


def build_subnet(super_state: Mapping[str, Tensor], super_arch: ArchLike,
                 sub_arch: ArchLike) -> ViTClassifier:
    """A standalone :class:`ViTClassifier` (ScaledViT inside) carrying the sliced weights."""
    sub = check_subnet(super_arch, sub_arch)
    state = extract_subnet(super_state, super_arch, sub)
    in_ch = state['backbone.patch_embed.proj.weight'].shape[1]
    model = ViTClassifier(sub, in_channels=in_ch, num_classes=state['head.weight'].shape[0])
    model.load_state_dict(state, strict=True)
    return model.eval()


# ---------------------------------------------------------------------- search space
def search_space(super_arch: ArchLike, depths: Sequence[int], widths: Sequence[int],
                 mlp_ratios: Sequence[float], resolutions: Sequence[int]) -> List[SubnetArch]:
    """Every valid combination (heads follow width through the fixed head dim)."""
    sup = as_arch(super_arch)
    out = []
    for r in resolutions:
        for d in depths:
            for w in widths:
                for m in mlp_ratios:
                    arch = SubnetArch(w, d, w // sup.head_dim, m, r, sup.patch_size)
                    try:
                        out.append(check_subnet(sup, arch))
                    except ValueError:
                        pass
    if not out:
        raise ValueError('empty search space')
    return out


def smallest_subnet(space: Sequence[SubnetArch]) -> SubnetArch:
    return min(space, key=lambda a: (a.embed_dims, a.num_layers, a.mlp_hidden, a.img_size))


def sample_subnet(space: Sequence[SubnetArch], rng: random.Random) -> SubnetArch:
    return space[rng.randrange(len(space))]


def sandwich_archs(super_arch: SubnetArch, space: Sequence[SubnetArch], num_random: int,
                   rng: random.Random) -> List[SubnetArch]:
    """Largest, smallest and ``num_random`` random subnets (one sandwich step)."""
    return [super_arch, smallest_subnet(space)] + [sample_subnet(space, rng)
                                                   for _ in range(num_random)]


def pick_subnets(space: Sequence[SubnetArch], super_arch: SubnetArch, k: int,
                 seed: int = 0) -> List[SubnetArch]:
    """The subnets a study scores: the largest (``super_arch``), the smallest of ``space`` and
    ``k - 2`` distinct others drawn at random from the rest of ``space`` (fewer when the space
    holds fewer); deterministic in ``seed`` (``random.Random(seed + 1)``).

    The largest and the smallest are always returned, once each (only the largest when they
    are the same subnet), so ``k < 2`` still gives both.
    """
    small = smallest_subnet(space)
    head = [super_arch] if small == super_arch else [super_arch, small]
    rest = [a for a in space if a not in head]
    rng = random.Random(seed + 1)
    return head + rng.sample(rest, min(max(0, k - 2), len(rest)))


# ---------------------------------------------------------------------- data / loops
def prepare_images(images: np.ndarray, pad_to: int = 32) -> Tensor:
    """uint8 (N, 28, 28) -> normalised float (N, 1, pad_to, pad_to) (zero-padded centred)."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0).unsqueeze(1)
    x = (x - FMNIST_MEAN) / FMNIST_STD
    extra = pad_to - x.shape[-1]
    if extra:
        lo = extra // 2
        x = F.pad(x, (lo, extra - lo, lo, extra - lo), value=-FMNIST_MEAN / FMNIST_STD)
    return x


def resize(x: Tensor, size: int) -> Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False,
                         antialias=size < x.shape[-1])


def _cosine_lr(opt: torch.optim.Optimizer, base: float, step: int, total: int,
               warmup: int) -> None:
    if step < warmup:
        lr = base * (step + 1) / warmup
    else:
        lr = 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    for g in opt.param_groups:
        g['lr'] = lr


def _batches(n: int, batch_size: int, epochs: int, gen: torch.Generator) -> Iterable[Tensor]:
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):  # drop_last: equal-size steps
            yield perm[i:i + batch_size]


def _augment(x: Tensor, gen: torch.Generator) -> Tensor:
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _run_training(step_fn: Callable[[Tensor, Tensor], float], params, images: Tensor,
                  labels: Tensor, epochs: int, batch_size: int, lr: float, weight_decay: float,
                  seed: int, log: Optional[Callable[[str], None]], tag: str,
                  log_every: int) -> Dict[str, float]:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    batch_size = min(batch_size, len(images))
    total = epochs * (len(images) // batch_size)
    warmup = max(1, total // 20)
    t0, loss_avg = time.perf_counter(), None
    for step, idx in enumerate(_batches(len(images), batch_size, epochs, gen)):
        _cosine_lr(opt, lr, step, total, warmup)
        opt.zero_grad(set_to_none=True)
        loss = step_fn(_augment(images[idx], gen), labels[idx])
        opt.step()
        loss_avg = loss if loss_avg is None else 0.9 * loss_avg + 0.1 * loss
        if log and (step + 1) % log_every == 0 or log and step + 1 == total:
            log(f'[{tag}] step {step + 1}/{total} loss {loss_avg:.4f} '
                f'({time.perf_counter() - t0:.1f}s)')
    return dict(steps=total, final_loss=float(loss_avg or 0.0),
                seconds=time.perf_counter() - t0)


def train_supernet(supernet: SlicedViT, space: Sequence[SubnetArch], images: Tensor,
                   labels: Tensor, epochs: int = 3, batch_size: int = 128, lr: float = 1e-3,
                   weight_decay: float = 0.05, num_random: int = 2, seed: int = 0,
                   log: Optional[Callable[[str], None]] = None,
                   log_every: int = 20) -> Dict[str, float]:
    """Sandwich-rule training: each step the largest, the smallest and ``num_random`` random
    subnets (at their own resolutions) run forward / backward on the same batch; their
    gradients add up in the shared weights (= backward of the summed losses, one graph alive
    at a time) before one optimiser step."""
    rng = random.Random(seed)
    supernet.train()

    def step(x: Tensor, y: Tensor) -> float:
        total = 0.0
        for arch in sandwich_archs(supernet.arch, space, num_random, rng):
            loss = F.cross_entropy(supernet(resize(x, arch.img_size), arch), y)
            loss.backward()
            total += loss.item()
        return total

    return _run_training(step, supernet.parameters(), images, labels, epochs, batch_size, lr,
                         weight_decay, seed, log, 'supernet', log_every)


def train_model(model: nn.Module, images: Tensor, labels: Tensor, img_size: int,
                epochs: int = 2, batch_size: int = 128, lr: float = 1e-3,
                weight_decay: float = 0.05, seed: int = 0,
                log: Optional[Callable[[str], None]] = None, tag: str = 'scratch',
                log_every: int = 50) -> Dict[str, float]:
    """Plain training of one standalone model (the from-scratch reference)."""
    model.train()

    def step(x: Tensor, y: Tensor) -> float:
        loss = F.cross_entropy(model(resize(x, img_size)), y)
        loss.backward()
        return loss.item()

    return _run_training(step, model.parameters(), images, labels, epochs, batch_size, lr,
                         weight_decay, seed, log, tag, log_every)


@torch.no_grad()
def evaluate(forward: Callable[[Tensor], Tensor], images: Tensor, labels: Tensor,
             img_size: int, batch_size: int = 500) -> float:
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = forward(resize(images[i:i + batch_size], img_size))
        correct += int((logits.argmax(-1) == labels[i:i + batch_size]).sum())
    return correct / max(1, len(images))


@torch.no_grad()
def score_subnets(supernet: SlicedViT, archs: Sequence[ArchLike], images: Tensor,
                  labels: Tensor, batch_size: int = 500) -> List[Dict[str, object]]:
    """Top-1 accuracy of every subnet on ``images`` with the shared weights (masked forward,
    eval mode, no retraining, no recalibration: a ViT has no BatchNorm)."""
    was_training = supernet.training
    supernet.eval()
    out = []
    try:
        for arch in archs:
            arch = check_subnet(supernet.arch, arch)
            t0 = time.perf_counter()
            acc = evaluate(lambda x, a=arch: supernet(x, a), images, labels, arch.img_size,
                           batch_size)
            out.append(dict(arch=arch.as_dict(), label=arch.label, accuracy=acc,
                            seconds=time.perf_counter() - t0))
    finally:
        supernet.train(was_training)
    return out
