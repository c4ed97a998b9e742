"""ScaledViT: a vanilla (DeiT-recipe) Vision Transformer whose basic knobs are scalable."""
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..checkpoint import register_checkpoint_hook
from ..registry import MODELS
from ..scaling import RULE_KEYS, ViTArch, make_vit_arch, scale_vit, to_2tuple
from .base import OUT_TYPES, ScalableBackbone, check_common_args, check_frozen_stages
from .family import Family, register_family
from .kernels import Kernel, block_kernels
from .layers import TokenGrid, TransformerBlock, normalise_indices, resample_abs_pos_embed
from .linear_attention import (check_attn_type, check_kernel_size, drop_aux_keys,
                               split_attn_rule)
from .ops import patchify

__all__ = ['OUT_TYPES', 'ScaledViT', 'vit_flops', 'vit_params']


def _preset(embed_dims: int, num_layers: int, num_heads: int, mlp_ratio: float = 4.0) -> dict:
    return dict(embed_dims=embed_dims, num_layers=num_layers, num_heads=num_heads,
                mlp_ratio=mlp_ratio)


class ScaledViT(ScalableBackbone):
    """Vanilla ViT backbone (DeiT recipe) with a ``scaling`` rule on top of a preset.

    Patch embedding, class token, learned absolute position embedding, pre-norm blocks with
    fused scaled-dot-product attention. Parameter names follow timm, so official DeiT / timm
    weights map one to one.

    Args:
        arch: preset name (``deit-tiny``/``deit-small``/``deit-base`` and aliases) or a dict
            with ``embed_dims``, ``num_layers``, ``num_heads`` and optional ``mlp_ratio``.
        img_size: training resolution (int or (H, W)); position embeddings are built for it.
        patch_size: side of the square, non-overlapping patches.
        in_channels: input image channels.
        scaling: a scaling rule applied to the preset (see :mod:`mmvitscale.scaling`).
        out_indices: block indices whose outputs are returned (negative counts from the end).
        out_type: ``cls_token`` (B, C), ``featmap`` (B, C, H, W), ``avg_featmap`` (B, C) or
            ``raw`` (B, N, C) tokens.
        with_cls_token: prepend a class token (required for ``out_type='cls_token'``).
        final_norm: apply the last LayerNorm to the last block's output.
        return_tuple: return a tuple (mmpretrain / mmdet convention); ``False`` returns the last
            requested output as a single tensor (mmaction2's TSN-style heads need that).
        drop_rate, attn_drop_rate, drop_path_rate: regularisation (drop path grows linearly).
        qkv_bias: bias in the qkv projection.
        norm_eps: LayerNorm epsilon (1e-6 like DeiT / timm).
        frozen_stages: freeze the embeddings (0) plus the first ``frozen_stages`` blocks
            (-1: nothing; ``num_layers``: every block and the final norm).
        interpolate_mode: position-embedding resize mode, on load and at forward time.
        init_cfg: mmengine init config, e.g. ``dict(type='Pretrained', checkpoint=...)``.
        attn_type: ``'softmax'`` (default) or ``'linear_angular'`` (Castling-ViT, see
            :mod:`mmvitscale.models.linear_attention`); a ``scaling`` rule may carry it too.
        linear_kernel_size: depthwise value-conv kernel of linear-angular attention (odd, at
            most ``2 * grid - 1``).
        aux_branch: add the training-time masked softmax branch to linear-angular attention.
        inference_only: build the pure linear model (no auxiliary branch, whatever
            ``aux_branch`` says) and drop ``*.aux_mask`` keys from loaded state dicts.
    """

    arch_zoo: Dict[str, dict] = {
        **dict.fromkeys(['t', 'ti', 'tiny', 'deit-t', 'deit-ti', 'deit-tiny'],
                        _preset(192, 12, 3)),
        **dict.fromkeys(['s', 'small', 'deit-s', 'deit-small'], _preset(384, 12, 6)),
        **dict.fromkeys(['b', 'base', 'deit-b', 'deit-base'], _preset(768, 12, 12)),
    }
    arch_keys = (('embed_dims', 'num_layers', 'num_heads'), ('mlp_ratio', ))
    num_prefix_tokens = 1
    tokenizer = 'patch_embed.proj'

    def __init__(self,
                 arch: Union[str, Mapping] = 'deit-tiny',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 scaling: Optional[Mapping] = None,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_type: str = 'cls_token',
                 with_cls_token: bool = True,
                 final_norm: bool = True,
                 return_tuple: bool = True,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 qkv_bias: bool = True,
                 norm_eps: float = 1e-6,
                 frozen_stages: int = -1,
                 interpolate_mode: str = 'bicubic',
                 init_cfg: Optional[Union[dict, list]] = None,
                 attn_type: Optional[str] = None,
                 linear_kernel_size: int = 9,
                 aux_branch: bool = False,
                 inference_only: bool = False) -> None:
        super().__init__(init_cfg=init_cfg)
        check_common_args(in_channels, drop_rate, attn_drop_rate, drop_path_rate, norm_eps,
                          interpolate_mode, qkv_bias=qkv_bias, with_cls_token=with_cls_token,
                          final_norm=final_norm, return_tuple=return_tuple,
                          aux_branch=aux_branch, inference_only=inference_only)
        attn_type, scaling = split_attn_rule(attn_type, scaling)
        self.attn_type = check_attn_type(attn_type)
        self.arch_spec = self.resolve_arch(arch, img_size, patch_size, scaling)
        spec = self.arch_spec
        check_frozen_stages(frozen_stages, spec.num_layers)
        self.aux_branch = bool(aux_branch) and not inference_only and attn_type != 'softmax'
        check_kernel_size(linear_kernel_size, spec.grid if attn_type != 'softmax' else None)
        self.check_out_type(out_type)
        if out_type == 'cls_token' and not with_cls_token:
            raise ValueError("out_type='cls_token' needs with_cls_token=True")
        self.out_type = out_type
        self.out_indices = normalise_indices(out_indices, spec.num_layers)
        self.return_tuple = return_tuple
        self.interpolate_mode = interpolate_mode
        self.embed_dims = spec.embed_dims
        self.num_layers = spec.num_layers
        self.patch_size = spec.patch_size
        self.img_size = spec.img_size
        self.grid_size = spec.grid
        self.num_prefix_tokens = 1 if with_cls_token else 0

        D = spec.embed_dims
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_channels, D, spec.patch_size, spec.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if with_cls_token else None
        num_pos = spec.grid[0] * spec.grid[1] + self.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, D))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, spec.num_layers).tolist()
        self.blocks = nn.ModuleList([
            TransformerBlock(D, spec.num_heads, spec.mlp_hidden, qkv_bias, drop_rate,
                             attn_drop_rate, dpr[i], norm_eps, attn_type, linear_kernel_size,
                             self.aux_branch) for i in range(spec.num_layers)
        ])
        self.norm = nn.LayerNorm(D, eps=norm_eps) if final_norm else nn.Identity()
        self.frozen_stages = frozen_stages
        register_checkpoint_hook(self, 'vit')  # other formats -> ours, first
        self._register_load_state_dict_pre_hook(self._resize_pos_embed_on_load)
        if inference_only:
            self._register_load_state_dict_pre_hook(drop_aux_keys)
        self._freeze_stages()

    # ------------------------------------------------------------------ construction
    @classmethod
    def resolve_arch(cls, arch: Union[str, Mapping], img_size=224, patch_size: int = 16,
                     scaling: Optional[Mapping] = None) -> ViTArch:
        """Preset (or dict) + resolution + patch size + scaling rule -> :class:`ViTArch`."""
        arch = cls.select_arch(arch)
        base = make_vit_arch(arch['embed_dims'], arch['num_layers'], arch['num_heads'],
                             arch.get('mlp_ratio', 4.0), to_2tuple(img_size), patch_size)
        return scale_vit(base, scaling)

    def frozen_modules(self):
        if self.frozen_stages < 0:
            return []
        modules = [self.patch_embed, self.pos_drop, *self.blocks[:self.frozen_stages]]
        return modules + ([self.norm] if self.frozen_stages >= self.num_layers else [])

    def frozen_params(self):
        if self.frozen_stages < 0:
            return []
        return [p for p in (self.pos_embed, self.cls_token) if p is not None]

    def _resize_pos_embed_on_load(self, state_dict, prefix, *args, **kwargs) -> None:
        key = prefix + 'pos_embed'
        if key not in state_dict:
            return
        ckpt = state_dict[key]
        if ckpt.shape == self.pos_embed.shape:
            return
        if ckpt.shape[-1] != self.pos_embed.shape[-1]:
            return  # width mismatch: left to load_state_dict to report
        state_dict[key] = resample_abs_pos_embed(ckpt, self.grid_size,
                                                 num_prefix_tokens=self.num_prefix_tokens,
                                                 mode=self.interpolate_mode)

    # ------------------------------------------------------------------ forward
    def pos_embed_for(self, grid: Tuple[int, int]) -> Tensor:
        """Position embedding for a token grid (resampled when it differs from training)."""
        return resample_abs_pos_embed(self.pos_embed, grid, self.grid_size,
                                      self.num_prefix_tokens, self.interpolate_mode)

    def embed(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Images (B, C, H, W) -> tokens (B, prefix + h*w, D) and the token grid (h, w)."""
        grid = self.check_input(x)
        x, _ = patchify(x, self.patch_embed.proj)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.pos_drop(x + self.pos_embed_for(grid)), grid

    def _format(self, x: Tensor, grid: Tuple[int, int]) -> Tensor:
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        patches = x[:, self.num_prefix_tokens:]
        if self.out_type == 'avg_featmap':
            return patches.mean(dim=1)
        B, _, C = patches.shape
        return patches.transpose(1, 2).reshape(B, C, *grid)

    def forward(self, x: Tensor) -> Union[Tuple[Tensor, ...], Tensor]:
        x, grid = self.embed(x)
        return self.run_blocks(x, TokenGrid(grid[0], grid[1], self.num_prefix_tokens), grid)


MODELS.register_module(module=ScaledViT)


class ViTFamily(Family):
    """ScaledViT behind the family protocol (:mod:`mmvitscale.families`)."""

    name = 'vit'
    order = 0
    backbone_type = 'mmvitscale.ScaledViT'
    checkpoint_target = 'vit'
    rule_keys = RULE_KEYS
    default_arch = 'deit-tiny'
    patch_size_arg = True
    search_grid = dict(depth_mult=(0.5, 0.75, 1.0, 1.25, 1.5),
                       width_mult=(0.5, 0.75, 1.0, 1.25, 1.5),
                       heads_mult=(1.0, 2.0), mlp_ratio_mult=(0.5, 1.0),
                       resolution_mult=(0.75, 1.0, 1.25, 1.5, 2.0), patch_size_mult=(1.0, 2.0))
    proxy_kwargs = dict(out_type='avg_featmap', final_norm=False)

    def resolve(self, arch, img_size=224, patch_size=None, rule=None, **geometry) -> ViTArch:
        shape = {k: v for k, v in (rule or {}).items() if k != 'attn_type'}
        return ScaledViT.resolve_arch(arch, img_size, patch_size or 16, shape)

    def analytic_flops(self, spec: ViTArch, in_channels: int = 3, attn_type: str = 'softmax',
                       linear_kernel_size: int = 9) -> int:
        return int(vit_flops(spec, num_classes=0, in_channels=in_channels, attn_type=attn_type,
                             linear_kernel_size=linear_kernel_size)['total'])

    # latency model: one stage of N = h*w + 1 tokens
    spec_type = ViTArch
    spec_key = 'embed_dims'

    def spec_from_dict(self, d) -> ViTArch:
        return make_vit_arch(d['embed_dims'], d['num_layers'], d['num_heads'],
                             d.get('mlp_ratio', 4.0), tuple(d['img_size']), d['patch_size'])

    def token_stages(self, spec: ViTArch):
        g = spec.grid
        return [(g[0] * g[1] + 1, spec.embed_dims, spec.mlp_hidden, spec.num_heads,
                 spec.num_layers)]

    def embed_macs(self, spec: ViTArch, in_channels: int = 3) -> int:
        g = spec.grid
        return g[0] * g[1] * in_channels * spec.patch_size**2 * spec.embed_dims

    def kernels(self, spec: ViTArch, in_channels: int = 3, batch_size: int = 1):
        b, g = batch_size, spec.grid
        p = g[0] * g[1]
        n, d = p + 1, spec.embed_dims
        out = [Kernel('gemm', (b * p, in_channels * spec.patch_size**2, d), 'patch_embed'),
               Kernel('copy', (2 * b * n * d, ), 'cls_cat_pos_add')]
        for i in range(spec.num_layers):
            out += block_kernels(b, n, d, spec.mlp_hidden, spec.num_heads, f'blocks.{i}')
        out.append(Kernel('layernorm', (b * n * d, ), 'norm'))
        return out

    def arch_text(self, d, compact: bool = False) -> str:
        size = d['img_size'][0]
        if compact:
            return (f"D{d['embed_dims']}-L{d['num_layers']}-H{d['num_heads']}-"
                    f"r{d.get('mlp_ratio', 4.0):g}-p{d['patch_size']}@{size}")
        return (f"D={d['embed_dims']} L={d['num_layers']} H={d['num_heads']} "
                f"r={d['mlp_ratio']:g} {size}px p={d['patch_size']}")


register_family(ViTFamily())


def vit_flops(arch: ViTArch, num_classes: int = 1000, in_channels: int = 3,
              with_cls_token: bool = True, attn_type: str = 'softmax',
              linear_kernel_size: int = 9) -> Dict[str, int]:
    """Per-term and total MACs of one image through ScaledViT (+ a linear head), in
    :mod:`mmvitscale.cost.counter`'s convention. With ``N = h*w + 1`` tokens, width ``D``, MLP
    hidden ``F = round(r * D)``, depth ``L``:

    * linear layers per block: ``N * (4 D^2 + 2 D F)`` (qkv, proj, fc1, fc2);
    * attention per block: ``2 N^2 D`` (``Q K^T`` and ``A V``); with
      ``attn_type='linear_angular'`` (Castling-ViT, inference model without the auxiliary
      branch) ``2 N D d + N D`` (``K^T V``, ``Q (K^T V)`` and the normaliser ``Q sum K``; head
      size ``d``) plus a ``dwconv`` term ``h*w * D * k^2`` (depthwise value conv, kernel ``k``);
    * LayerNorms: ``(2 L + 1) * 5 N D`` (fvcore's convention, affine);
    * patch embedding: ``h*w * C_in p^2 D``; classifier head: ``D * classes``.
    """
    check_attn_type(attn_type)
    D, L, F = arch.embed_dims, arch.num_layers, arch.mlp_hidden
    patches = arch.grid[0] * arch.grid[1]
    N = patches + int(with_cls_token)
    if attn_type == 'softmax':
        attention = L * 2 * N * N * D
    else:
        attention = L * (2 * N * D * arch.head_dims + N * D)
    terms = dict(
        linear=L * N * (4 * D * D + 2 * D * F),
        attention=attention,
        norm=(2 * L + 1) * 5 * N * D,
        patch_embed=patches * in_channels * arch.patch_size**2 * D,
        head=D * num_classes,
    )
    if attn_type == 'linear_angular':
        terms['dwconv'] = L * patches * D * linear_kernel_size**2
    terms['total'] = sum(terms.values())
    return terms


def vit_params(arch: ViTArch, num_classes: int = 1000, in_channels: int = 3,
               with_cls_token: bool = True, qkv_bias: bool = True) -> int:
    """Parameter count of ScaledViT (+ a linear head when ``num_classes > 0``)."""
    D, L, F = arch.embed_dims, arch.num_layers, arch.mlp_hidden
    patches = arch.grid[0] * arch.grid[1]
    block = (3 * D * D + (3 * D if qkv_bias else 0)) + (D * D + D) + (D * F + F) + (F * D + D)
    block += 4 * D  # two LayerNorms
    embed = in_channels * arch.patch_size**2 * D + D + (patches + int(with_cls_token)) * D
    embed += D * int(with_cls_token)
    head = D * num_classes + num_classes if num_classes else 0
    return L * block + embed + 2 * D + head
