"""ScaledPiT: pooling-based ViT (Heo et al. 2021) with the same scaling rules as ScaledViT."""
import math
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import register_checkpoint_hook
from ..registry import MODELS
from ..scaling import PIT_RULE_KEYS, PiTArch, make_pit_arch, scale_pit, to_2tuple
from .base import ScalableBackbone, check_common_args, check_frozen_stages
from .family import Family, register_family
from .kernels import Kernel, block_kernels
from .layers import TokenGrid, TransformerBlock, normalise_indices
from .linear_attention import (check_kernel_size, drop_aux_keys, per_stage_attn_types,
                               split_attn_rule)
from .ops import patchify


def _preset(base_dims, depths, heads, patch_size=16, patch_stride=8) -> dict:
    return dict(base_dims=base_dims, depths=depths, heads=heads, mlp_ratio=4.0,
                patch_size=patch_size, patch_stride=patch_stride)


def resample_pos_embed_2d(pos_embed: Tensor, size: Sequence[int], mode: str = 'bicubic') -> Tensor:
    """Resize a ``(1, C, H, W)`` position embedding (antialiased when shrinking)."""
    size = tuple(int(s) for s in size)
    if tuple(pos_embed.shape[-2:]) == size:
        return pos_embed
    shrink = size[0] < pos_embed.shape[-2] or size[1] < pos_embed.shape[-1]
    out = F.interpolate(pos_embed.float(), size=size, mode=mode, align_corners=False,
                        antialias=shrink and mode in ('bilinear', 'bicubic'))
    return out.to(pos_embed.dtype)


class Pooling(nn.Module):
    """Between stages: a strided depthwise conv widens and halves the token map; a Linear maps
    the class token. With ``out % in == 0`` (every PiT preset) this is exactly PiT's
    depthwise pooling; otherwise ``groups = gcd(in, out)``."""

    def __init__(self, in_dim: int, out_dim: int, stride: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, stride + 1, stride, stride // 2,
                              groups=math.gcd(in_dim, out_dim))
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor, cls_token: Tensor) -> Tuple[Tensor, Tensor]:
        return self.conv(x), self.fc(cls_token)


class PiTStage(nn.Module):
    """Optional pooling, then Transformer blocks over [class token; flattened map]."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_hidden: int,
                 pool: Optional[Pooling], drop_path: Sequence[float], drop: float = 0.0,
                 attn_drop: float = 0.0, norm_eps: float = 1e-6, attn_type: str = 'softmax',
                 linear_kernel_size: int = 9, aux_branch: bool = False,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        self.pool = pool
        self.attn_type = attn_type
        self.blocks = nn.Sequential(*[
            TransformerBlock(dim, heads, mlp_hidden, qkv_bias, drop, attn_drop, drop_path[i],
                             norm_eps, attn_type, linear_kernel_size, aux_branch)
            for i in range(depth)
        ])

    def forward(self, x: Tensor, cls_token: Tensor) -> Tuple[Tensor, Tensor]:
        if self.pool is not None:
            x, cls_token = self.pool(x, cls_token)
        B, C, H, W = x.shape
        n_cls = cls_token.shape[1]
        grid = TokenGrid(H, W, n_cls)
        tokens = torch.cat([cls_token, x.flatten(2).transpose(1, 2)], dim=1)
        for block in self.blocks:
            tokens = block(tokens, grid)
        x = tokens[:, n_cls:].transpose(1, 2).reshape(B, C, H, W)
        return x, tokens[:, :n_cls]


class ScaledPiT(ScalableBackbone):
    """Pooling-based Vision Transformer with scalable knobs.

    Overlapping conv patch embedding, learned 2-D position embedding (resized at load and at
    forward time, unlike timm), three stages joined by depthwise-conv pooling; the Transformer
    block is the one ScaledViT uses. Parameter names follow timm's ``PoolingVisionTransformer``.

    Args:
        arch: ``pit-ti``/``pit-xs``/``pit-s``/``pit-b`` (and aliases) or a dict with
            ``base_dims``, ``depths``, ``heads`` and optional ``mlp_ratio``, ``patch_size``,
            ``patch_stride``.
        img_size: training resolution; the position embedding is built for its token grid.
            The patch conv must tile it (``patch_size + patch_stride * n``), as it must tile
            every input: like ScaledViT, PiT drops no border pixels.
        scaling: a PiT scaling rule (see :func:`mmvitscale.scaling.scale_pit`).
        out_indices: stage indices (0..2) to return; strides are ``patch_stride * 2**i``.
        out_type: ``cls_token``, ``featmap`` (B, C, H, W), ``avg_featmap`` or ``raw`` tokens.
        return_tuple: tuple output (mmpretrain / mmdet) or the last one as a tensor (mmaction2).
        drop_rate, attn_drop_rate, drop_path_rate, qkv_bias, norm_eps, frozen_stages,
        interpolate_mode, init_cfg: as in :class:`~mmvitscale.models.ScaledViT`
            (``frozen_stages`` counts stages, -1 to ``len(depths)``).
        attn_type: ``'softmax'`` / ``'linear_angular'`` for all stages, or a list with one
            entry per stage; a ``scaling`` rule may carry it too.
        linear_kernel_size, aux_branch, inference_only: as in ScaledViT (the kernel must fit
            the grid of every linear-angular stage).
    """

    arch_zoo: Dict[str, dict] = {
        **dict.fromkeys(['ti', 'tiny', 'pit-ti', 'pit-tiny'],
                        _preset((32, 32, 32), (2, 6, 4), (2, 4, 8))),
        **dict.fromkeys(['xs', 'pit-xs'], _preset((48, 48, 48), (2, 6, 4), (2, 4, 8))),
        **dict.fromkeys(['s', 'small', 'pit-s', 'pit-small'],
                        _preset((48, 48, 48), (2, 6, 4), (3, 6, 12))),
        **dict.fromkeys(['b', 'base', 'pit-b', 'pit-base'],
                        _preset((64, 64, 64), (3, 6, 4), (4, 8, 16), 14, 7)),
    }
    arch_keys = (('base_dims', 'depths', 'heads'), ('mlp_ratio', 'patch_size', 'patch_stride'))
    num_prefix_tokens = 1
    tokenizer = 'patch_embed.conv'

    def __init__(self,
                 arch: Union[str, Mapping] = 'pit-ti',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 in_channels: int = 3,
                 scaling: Optional[Mapping] = None,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_type: str = 'cls_token',
                 return_tuple: bool = True,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 qkv_bias: bool = True,
                 norm_eps: float = 1e-6,
                 frozen_stages: int = -1,
                 interpolate_mode: str = 'bicubic',
                 init_cfg: Optional[Union[dict, list]] = None,
                 attn_type: Optional[Union[str, Sequence[str]]] = None,
                 linear_kernel_size: int = 9,
                 aux_branch: bool = False,
                 inference_only: bool = False) -> None:
        super().__init__(init_cfg=init_cfg)
        check_common_args(in_channels, drop_rate, attn_drop_rate, drop_path_rate, norm_eps,
                          interpolate_mode, qkv_bias=qkv_bias, return_tuple=return_tuple,
                          aux_branch=aux_branch, inference_only=inference_only)
        attn_type, scaling = split_attn_rule(attn_type, scaling)
        self.arch_spec = spec = self.resolve_arch(arch, img_size, scaling)
        check_frozen_stages(frozen_stages, len(spec.depths), 'stages')
        self.attn_types = per_stage_attn_types(attn_type, len(spec.depths))
        self.aux_branch = bool(aux_branch) and not inference_only
        check_kernel_size(linear_kernel_size)
        for t, grid in zip(self.attn_types, spec.grids):
            if t == 'linear_angular':
                check_kernel_size(linear_kernel_size, grid)
        self.out_type = self.check_out_type(out_type)
        self.num_stages = len(spec.depths)
        self.out_indices = normalise_indices(out_indices, self.num_stages, 'stages')
        self.return_tuple = return_tuple
        self.interpolate_mode = interpolate_mode
        self.frozen_stages = frozen_stages
        dims = spec.embed_dims
        self.embed_dims = dims[-1]
        self.img_size = spec.img_size
        self.grid_size = spec.grids[0]

        self.patch_embed = nn.Module()
        self.patch_embed.conv = nn.Conv2d(in_channels, dims[0], spec.patch_size,
                                          spec.patch_stride)
        self.pos_embed = nn.Parameter(torch.zeros(1, dims[0], *self.grid_size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dims[0]))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(spec.depths)).split(list(spec.depths))
        self.transformers = nn.ModuleList([
            PiTStage(dims[i], spec.depths[i], spec.heads[i], spec.mlp_hidden(i),
                     Pooling(dims[i - 1], dims[i]) if i else None, dpr[i].tolist(), drop_rate,
                     attn_drop_rate, norm_eps, self.attn_types[i], linear_kernel_size,
                     self.aux_branch, qkv_bias) for i in range(self.num_stages)
        ])
        self.norm = nn.LayerNorm(dims[-1], eps=norm_eps)
        register_checkpoint_hook(self, 'pit')  # other formats -> ours, first
        self._register_load_state_dict_pre_hook(self._resize_pos_embed_on_load)
        if inference_only:
            self._register_load_state_dict_pre_hook(drop_aux_keys)
        self._freeze_stages()

    @classmethod
    def resolve_arch(cls, arch: Union[str, Mapping], img_size=224,
                     scaling: Optional[Mapping] = None) -> PiTArch:
        """Preset (or dict) + resolution + scaling rule -> :class:`PiTArch`."""
        arch = cls.select_arch(arch)
        base = make_pit_arch(arch['base_dims'], arch['depths'], arch['heads'],
                             arch.get('mlp_ratio', 4.0), to_2tuple(img_size),
                             arch.get('patch_size', 16), arch.get('patch_stride', 8))
        return scale_pit(base, scaling)

    def frozen_modules(self):
        if self.frozen_stages < 0:
            return []
        modules = [self.patch_embed, *self.transformers[:self.frozen_stages]]
        return modules + ([self.norm] if self.frozen_stages >= self.num_stages else [])

    def frozen_params(self):
        return [self.pos_embed, self.cls_token] if self.frozen_stages >= 0 else []

    def _resize_pos_embed_on_load(self, state_dict, prefix, *args, **kwargs) -> None:
        key = prefix + 'pos_embed'
        ckpt = state_dict.get(key)
        if ckpt is not None and ckpt.dim() == 4 and ckpt.shape[:2] == self.pos_embed.shape[:2]:
            state_dict[key] = resample_pos_embed_2d(ckpt, self.grid_size, self.interpolate_mode)

    def _format(self, x: Tensor, cls_token: Tensor) -> Tensor:
        if self.out_type == 'featmap':
            return x
        if self.out_type == 'avg_featmap':
            return x.mean(dim=(2, 3))
        if self.out_type == 'cls_token':
            return cls_token[:, 0]
        return torch.cat([cls_token, x.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, x: Tensor) -> Union[Tuple[Tensor, ...], Tensor]:
        self.check_input(x)
        tokens, (h, w) = patchify(x, self.patch_embed.conv)
        x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)
        x = self.pos_drop(x + resample_pos_embed_2d(self.pos_embed, x.shape[-2:],
                                                    self.interpolate_mode))
        cls_token = self.cls_token.expand(x.shape[0], -1, -1)
        outs = []
        for i, stage in enumerate(self.transformers):
            x, cls_token = stage(x, cls_token)
            if i == self.num_stages - 1:
                cls_token = self.norm(cls_token)
            if i in self.out_indices:
                outs.append(self._format(x, cls_token))
        return tuple(outs) if self.return_tuple else outs[-1]


MODELS.register_module(module=ScaledPiT)


class PiTFamily(Family):
    """ScaledPiT behind the family protocol (:mod:`mmvitscale.families`); FLOPs are counted
    on the built model (no closed form)."""

    name = 'pit'
    order = 1
    backbone_type = 'mmvitscale.ScaledPiT'
    checkpoint_target = 'pit'
    rule_keys = PIT_RULE_KEYS
    default_arch = 'pit-ti'
    search_grid = dict(depth_mult=(0.5, 1.0, 1.5), width_mult=(0.75, 1.0, 1.25),
                       heads_mult=(1.0, 1.5), mlp_ratio_mult=(0.5, 1.0),
                       resolution_mult=(0.75, 1.0, 1.25), patch_stride_mult=(1.0, 2.0))
    proxy_kwargs = dict(out_type='avg_featmap')

    def resolve(self, arch, img_size=224, patch_size=None, rule=None, **geometry) -> PiTArch:
        if patch_size is not None:
            raise ValueError('patch_size belongs in the PiT arch dict (patch_size, '
                             f'patch_stride), got patch_size={patch_size!r}')
        shape = {k: v for k, v in (rule or {}).items() if k != 'attn_type'}
        return ScaledPiT.resolve_arch(arch, img_size, shape)

    def token_grids(self, spec: PiTArch):
        return [tuple(g) for g in spec.grids]

    # latency model: a stage per grid, a depthwise 3x3 pooling conv and a class-token fc between
    spec_type = PiTArch
    spec_key = 'base_dims'

    def spec_from_dict(self, d) -> PiTArch:
        return make_pit_arch(d['base_dims'], d['depths'], d['heads'], d.get('mlp_ratio', 4.0),
                             tuple(d['img_size']), d['patch_size'], d['patch_stride'])

    def token_stages(self, spec: PiTArch):
        return [(g[0] * g[1] + 1, spec.embed_dims[i], spec.mlp_hidden(i), spec.heads[i],
                 spec.depths[i]) for i, g in enumerate(spec.grids)]

    def embed_macs(self, spec: PiTArch, in_channels: int = 3) -> int:
        grids, dims = spec.grids, spec.embed_dims
        macs = grids[0][0] * grids[0][1] * in_channels * spec.patch_size**2 * dims[0]
        for i in range(1, len(dims)):  # depthwise 3x3 pooling conv + class-token fc
            macs += grids[i][0] * grids[i][1] * dims[i] * 9 + dims[i - 1] * dims[i]
        return macs

    def kernels(self, spec: PiTArch, in_channels: int = 3, batch_size: int = 1):
        b, grids, dims = batch_size, spec.grids, spec.embed_dims
        p0 = grids[0][0] * grids[0][1]
        out = [Kernel('gemm', (b * p0, in_channels * spec.patch_size**2, dims[0]),
                      'patch_embed'),
               Kernel('copy', (b * p0 * dims[0], ), 'pos_add')]
        for s, depth in enumerate(spec.depths):
            p = grids[s][0] * grids[s][1]
            n, d = p + 1, dims[s]
            if s:
                out.append(Kernel('dwconv', (b * p * d * 9, ), f'stage{s}.pool_conv'))
                out.append(Kernel('gemm', (b, dims[s - 1], d), f'stage{s}.pool_fc'))
            out.append(Kernel('copy', (2 * b * n * d, ), f'stage{s}.cat_flatten'))
            for i in range(depth):
                out += block_kernels(b, n, d, spec.mlp_hidden(s), spec.heads[s],
                                     f'stage{s}.blocks.{i}')
        out.append(Kernel('layernorm', (b * dims[-1], ), 'norm'))
        return out

    def arch_text(self, d, compact: bool = False) -> str:
        size = d['img_size'][0]
        if compact:
            return f"PiT{d['base_dims']}x{d['heads']}-L{d['depths']}@{size}"
        return (f"dims={d['base_dims']} depths={d['depths']} heads={d['heads']} "
                f"r={d['mlp_ratio']:g} {size}px p={d['patch_size']}/{d['patch_stride']}")


register_family(PiTFamily())
