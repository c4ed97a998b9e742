"""ScaledVideoViT: a space-time plain ViT for 3-D video recognizers (TimeSformer / ViViT style).

The number of input frames is a scaling knob next to the ViT ones. A scaling rule may hold
``frames`` (absolute) or ``frames_mult`` (multiplier), never both:

* ``frames``: used as given; it must be a positive integer multiple of ``tubelet_size``.
* ``frames_mult``: ``num_frames * m`` rounded to the nearest multiple of ``tubelet_size``; a
  result below one tubelet is an error.

Every other key is handed to :func:`mmvitscale.scaling.scale_vit` unchanged. Violations raise
``ValueError`` naming the field and the value.
"""
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import MODELS
from ..scaling import RULE_KEYS, ViTArch, pick_knob
from .base import ScalableBackbone, check_common_args, check_frozen_stages
from .family import Family, register_family
from .layers import (Attention, TokenGrid, TransformerBlock, normalise_indices,
                     resample_abs_pos_embed)
from .linear_attention import (check_attn_type, check_kernel_size, drop_aux_keys,
                               split_attn_rule)
from .vit import ScaledViT

ATTENTION_TYPES = ('joint', 'divided', 'space_only')
FRAME_KEYS = ('frames', 'frames_mult')
VIDEO_RULE_KEYS = RULE_KEYS | frozenset(FRAME_KEYS)


@dataclass(frozen=True)
class VideoViTArch:
    """A resolved space-time ViT: the spatial :class:`ViTArch` plus the clip length."""

    spatial: ViTArch
    num_frames: int
    tubelet_size: int

    @property
    def time_grid(self) -> int:
        return self.num_frames // self.tubelet_size

    @property
    def num_tokens(self) -> int:
        """Tokens of one clip in joint attention: class token + T' * h * w patches."""
        h, w = self.spatial.grid
        return 1 + self.time_grid * h * w


def scale_frames(num_frames: int, tubelet_size: int, rule: Optional[Mapping] = None) -> int:
    """Apply the ``frames`` / ``frames_mult`` part of a scaling rule (see module docstring)."""
    for name, value in (('num_frames', num_frames), ('tubelet_size', tubelet_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'arch: {name} must be a positive integer, got {value!r}')
    if num_frames % tubelet_size:
        raise ValueError(f'arch: num_frames={num_frames} is not a multiple of '
                         f'tubelet_size={tubelet_size}')
    absolute, mult = pick_knob(rule or {}, 'frames')
    if absolute is not None:
        if absolute != int(absolute):
            raise ValueError(f'scaling.frames must be an integer, got {rule["frames"]!r}')
        frames = int(absolute)
        if frames % tubelet_size:
            raise ValueError(f'scaling: frames={frames} is not a multiple of '
                             f'tubelet_size={tubelet_size}')
        return frames
    if mult is None:
        return num_frames
    frames = int(round(num_frames * mult / tubelet_size)) * tubelet_size
    if frames < tubelet_size:
        raise ValueError(f'scaling.frames_mult={rule["frames_mult"]!r} turns frames {num_frames} '
                         f'into {frames}; it must stay >= tubelet_size={tubelet_size}')
    return frames


def resample_time_embed(time_embed: Tensor, length: int) -> Tensor:
    """Linearly resize a ``(1, T, C)`` temporal position embedding to ``length`` positions."""
    if time_embed.shape[1] == length:
        return time_embed
    out = F.interpolate(time_embed.float().transpose(1, 2), size=int(length), mode='linear',
                        align_corners=False)
    return out.transpose(1, 2).to(time_embed.dtype)


def _needs_resize(ckpt: Optional[Tensor], param: Optional[Tensor]) -> bool:
    """A checkpoint embedding of the same width but another token count (else left to
    ``load_state_dict`` to accept or report)."""
    return (ckpt is not None and param is not None and ckpt.shape != param.shape
            and ckpt.shape[-1] == param.shape[-1])


class DividedSpaceTimeBlock(TransformerBlock):
    """TimeSformer block: temporal attention (per patch location, over frames), then the
    inherited spatial attention (per frame, with the class token) and MLP.

    ``temporal_fc`` is zero-initialised, so a freshly inflated block acts as a 2-D block.
    ``attn_type`` applies to the spatial attention; the temporal one is always softmax.
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 norm_eps: float = 1e-6, attn_type: str = 'softmax',
                 linear_kernel_size: int = 9, aux_branch: bool = False) -> None:
        super().__init__(dim, num_heads, mlp_hidden, qkv_bias, drop, attn_drop, drop_path,
                         norm_eps, attn_type, linear_kernel_size, aux_branch)
        self.temporal_norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.temporal_attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.temporal_fc = nn.Linear(dim, dim)

    def forward(self, x: Tensor, grid: Tuple[int, int, int]) -> Tensor:
        """``x``: (B, 1 + T*h*w, D) tokens, frame-major; ``grid``: (T, h, w)."""
        T, h, w = grid
        S = h * w
        B, _, D = x.shape
        cls, patches = x[:, :1], x[:, 1:]
        xt = patches.reshape(B, T, S, D).transpose(1, 2).reshape(B * S, T, D)
        res = self.temporal_fc(self.temporal_attn(self.temporal_norm1(xt)))
        res = res.reshape(B, S, T, D).transpose(1, 2).reshape(B, T * S, D)
        patches = patches + self.drop_path(res)
        xs = torch.cat([cls.unsqueeze(1).expand(B, T, 1, D).reshape(B * T, 1, D),
                        patches.reshape(B * T, S, D)], dim=1)
        res = self.attn(self.norm1(xs), grid=TokenGrid(h, w, 1))
        res = torch.cat([res[:, :1].reshape(B, T, D).mean(1, keepdim=True),
                         res[:, 1:].reshape(B, T * S, D)], dim=1)
        x = torch.cat([cls, patches], dim=1) + self.drop_path(res)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ScaledVideoViT(ScalableBackbone):
    """Space-time plain ViT for 3-D recognizers (input ``(N, C, T, H, W)``), scalable like
    :class:`~mmvitscale.models.ScaledViT` plus a ``frames`` knob (see module docstring).

    Tubelet embedding (Conv3d, kernel = stride = ``(tubelet_size, p, p)``), one class token,
    a learned spatial position embedding ``pos_embed`` (shaped as ScaledViT's) and a learned
    temporal one ``time_embed`` over the ``T / tubelet_size`` time positions; both are resampled
    at forward time (spatial: as ScaledViT; temporal: linear) when the clip differs from the
    training one. Parameter names match ScaledViT (``blocks.{i}.*``, ``norm``, ``cls_token``,
    ``pos_embed``), so a 2-D checkpoint initialises it (:meth:`inflate_from_2d`, also applied
    automatically when a state dict with a 2-D patch kernel is loaded).

    Args:
        arch: a ScaledViT preset name or arch dict.
        img_size, patch_size, in_channels: as ScaledViT.
        num_frames: training clip length; a multiple of ``tubelet_size``.
        tubelet_size: frames per tubelet (temporal kernel and stride of the embedding).
        scaling: a ScaledViT scaling rule plus ``frames`` / ``frames_mult``.
        attention_type: ``joint`` (all space-time tokens attend together), ``divided``
            (TimeSformer: temporal then spatial attention in each block; adds
            ``temporal_norm1``, ``temporal_attn``, ``temporal_fc`` per block) or
            ``space_only`` (each frame on its own, class tokens averaged over time at the
            output; no ``time_embed``).
        out_indices: block indices whose outputs are returned.
        out_type: ``cls_token`` (N, C), ``avg_featmap`` (N, C) mean of the patch tokens,
            ``featmap`` (N, C, T', H', W') or ``raw`` (N, 1 + T'*H'*W', C) tokens.
        final_norm: apply the last LayerNorm to the last block's output.
        return_tuple: tuple output, or (default, as mmaction2 heads need) the last output alone.
        drop_rate, attn_drop_rate, drop_path_rate, qkv_bias, norm_eps, interpolate_mode,
        init_cfg: as ScaledViT.
        frozen_stages: as ScaledViT: freeze the embeddings (tubelet conv, class token,
            ``pos_embed``, ``time_embed``) plus the first ``frozen_stages`` blocks (-1 to
            ``num_layers``; ``num_layers`` also freezes the final norm).
        attn_type, linear_kernel_size, aux_branch, inference_only: as ScaledViT. With
            ``'linear_angular'`` the value conv runs per frame on the (h, w) grid; in
            ``divided`` blocks only the spatial attention is linear-angular (the temporal one
            stays softmax).
    """

    arch_zoo: Dict[str, dict] = ScaledViT.arch_zoo
    arch_keys = ScaledViT.arch_keys
    init_std_params = ('pos_embed', 'cls_token', 'time_embed')
    num_prefix_tokens = 1
    tokenizer = 'patch_embed.proj'  # spatial dims only in set_token_stride

    def __init__(self,
                 arch: Union[str, Mapping] = 'deit-tiny',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 16,
                 num_frames: int = 8,
                 tubelet_size: int = 1,
                 in_channels: int = 3,
                 scaling: Optional[Mapping] = None,
                 attention_type: str = 'divided',
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_type: str = 'cls_token',
                 final_norm: bool = True,
                 return_tuple: bool = False,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 qkv_bias: bool = True,
                 norm_eps: float = 1e-6,
                 interpolate_mode: str = 'bicubic',
                 init_cfg: Optional[Union[dict, list]] = None,
                 attn_type: Optional[str] = None,
                 linear_kernel_size: int = 9,
                 aux_branch: bool = False,
                 inference_only: bool = False,
                 frozen_stages: int = -1) -> None:
        super().__init__(init_cfg=init_cfg)
        check_common_args(in_channels, drop_rate, attn_drop_rate, drop_path_rate, norm_eps,
                          interpolate_mode, qkv_bias=qkv_bias, final_norm=final_norm,
                          return_tuple=return_tuple, aux_branch=aux_branch,
                          inference_only=inference_only)
        attn_type, scaling = split_attn_rule(attn_type, scaling)
        self.attn_type = check_attn_type(attn_type)
        self.aux_branch = bool(aux_branch) and not inference_only and attn_type != 'softmax'
        if attention_type not in ATTENTION_TYPES:
            raise ValueError(f'attention_type must be one of {ATTENTION_TYPES}, '
                             f'got {attention_type!r}')
        self.check_out_type(out_type)
        self.video_spec = self.resolve_arch(arch, img_size, patch_size, num_frames,
                                            tubelet_size, scaling)
        self.arch_spec = spec = self.video_spec.spatial
        self.frozen_stages = check_frozen_stages(frozen_stages, spec.num_layers)
        self.attention_type = attention_type
        self.out_type = out_type
        self.out_indices = normalise_indices(out_indices, spec.num_layers)
        self.return_tuple = return_tuple
        self.interpolate_mode = interpolate_mode
        self.embed_dims = spec.embed_dims
        self.num_layers = spec.num_layers
        self.patch_size = spec.patch_size
        self.img_size = spec.img_size
        self.grid_size = spec.grid
        check_kernel_size(linear_kernel_size, spec.grid if attn_type != 'softmax' else None)
        self.num_frames = self.video_spec.num_frames
        self.tubelet_size = tubelet_size
        self.time_size = self.video_spec.time_grid

        D = spec.embed_dims
        p = spec.patch_size
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(in_channels, D, (tubelet_size, p, p),
                                          (tubelet_size, p, p))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + spec.grid[0] * spec.grid[1], D))
        if attention_type == 'space_only':
            self.time_embed = None
        else:
            self.time_embed = nn.Parameter(torch.zeros(1, self.time_size, D))
        self.pos_drop = nn.Dropout(drop_rate)
        block = DividedSpaceTimeBlock if attention_type == 'divided' else TransformerBlock
        dpr = torch.linspace(0, drop_path_rate, spec.num_layers).tolist()
        self.blocks = nn.ModuleList([
            block(D, spec.num_heads, spec.mlp_hidden, qkv_bias, drop_rate, attn_drop_rate,
                  dpr[i], norm_eps, attn_type, linear_kernel_size, self.aux_branch)
            for i in range(spec.num_layers)
        ])
        self.norm = nn.LayerNorm(D, eps=norm_eps) if final_norm else nn.Identity()
        self._register_load_state_dict_pre_hook(self._adapt_state_dict_on_load)
        if inference_only:
            self._register_load_state_dict_pre_hook(drop_aux_keys)
        self._freeze_stages()

    # ------------------------------------------------------------------ construction
    @classmethod
    def resolve_arch(cls, arch: Union[str, Mapping], img_size=224, patch_size: int = 16,
                     num_frames: int = 8, tubelet_size: int = 1,
                     scaling: Optional[Mapping] = None) -> VideoViTArch:
        """Preset + clip geometry + scaling rule (ViT keys and ``frames``) -> VideoViTArch."""
        spatial_rule = None
        if scaling is not None:
            if not isinstance(scaling, Mapping):
                raise ValueError(f'scaling must be a dict, got {type(scaling).__name__}: '
                                 f'{scaling!r}')
            unknown = sorted(set(scaling) - VIDEO_RULE_KEYS)
            if unknown:
                raise ValueError(f'unknown scaling key {unknown[0]!r} '
                                 f'(value {scaling[unknown[0]]!r}); '
                                 f'known keys: {sorted(VIDEO_RULE_KEYS)}')
            spatial_rule = {k: v for k, v in scaling.items() if k not in FRAME_KEYS}
        spatial = ScaledViT.resolve_arch(arch, img_size, patch_size, spatial_rule)
        frames = scale_frames(num_frames, tubelet_size, scaling)
        return VideoViTArch(spatial, frames, tubelet_size)

    def frozen_modules(self):
        if self.frozen_stages < 0:
            return []
        modules = [self.patch_embed, self.pos_drop, *self.blocks[:self.frozen_stages]]
        return modules + ([self.norm] if self.frozen_stages >= self.num_layers else [])

    def frozen_params(self):
        if self.frozen_stages < 0:
            return []
        return [p for p in (self.pos_embed, self.cls_token, self.time_embed) if p is not None]

    def reset_parameters(self) -> None:
        """DeiT-style init; ``temporal_fc`` starts at zero (TimeSformer's residual init)."""
        super().reset_parameters()
        for blk in self.blocks:
            if isinstance(blk, DividedSpaceTimeBlock):
                nn.init.zeros_(blk.temporal_fc.weight)
                nn.init.zeros_(blk.temporal_fc.bias)

    def inflate_from_2d(self, state_dict_2d: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """A state dict for this model from a ScaledViT / timm-ViT one.

        The 2-D patch kernel is repeated over the tubelet and divided by ``tubelet_size`` (a
        static clip embeds as the image does); ``pos_embed`` is resampled to this grid;
        ``time_embed`` is zero; divided blocks copy ``norm1`` / ``attn`` into their temporal
        counterparts and get a zero ``temporal_fc``. Other keys (e.g. a classifier head) pass
        through unchanged.
        """
        sd = dict(state_dict_2d)
        key = 'patch_embed.proj.weight'
        if key in sd and sd[key].ndim == 4:
            tb = self.tubelet_size
            sd[key] = sd[key].unsqueeze(2).repeat(1, 1, tb, 1, 1) / tb
        if _needs_resize(sd.get('pos_embed'), self.pos_embed):
            sd['pos_embed'] = resample_abs_pos_embed(sd['pos_embed'], self.grid_size,
                                                     num_prefix_tokens=1,
                                                     mode=self.interpolate_mode)
        if self.time_embed is not None and 'time_embed' not in sd:
            sd['time_embed'] = torch.zeros_like(self.time_embed.data)
        for i, blk in enumerate(self.blocks):
            if not isinstance(blk, DividedSpaceTimeBlock):
                continue
            pre = f'blocks.{i}.'
            for src, dst in (('norm1', 'temporal_norm1'), ('attn', 'temporal_attn')):
                for name in getattr(blk, dst).state_dict():
                    if pre + f'{dst}.{name}' not in sd and pre + f'{src}.{name}' in sd:
                        sd[pre + f'{dst}.{name}'] = sd[pre + f'{src}.{name}'].clone()
            for name, value in blk.temporal_fc.state_dict().items():
                sd.setdefault(pre + f'temporal_fc.{name}', torch.zeros_like(value))
        return sd

    def _adapt_state_dict_on_load(self, state_dict, prefix, *args, **kwargs) -> None:
        """Inflate 2-D checkpoints; resample position embeddings of other clip geometries."""
        kernel = state_dict.get(prefix + 'patch_embed.proj.weight')
        if kernel is not None and kernel.ndim == 4:
            sub = {k[len(prefix):]: state_dict.pop(k) for k in list(state_dict)
                   if k.startswith(prefix)}
            state_dict.update({prefix + k: v for k, v in self.inflate_from_2d(sub).items()})
            return
        pos = state_dict.get(prefix + 'pos_embed')
        if _needs_resize(pos, self.pos_embed):
            state_dict[prefix + 'pos_embed'] = resample_abs_pos_embed(
                pos, self.grid_size, num_prefix_tokens=1, mode=self.interpolate_mode)
        time = state_dict.get(prefix + 'time_embed')
        if _needs_resize(time, self.time_embed):
            state_dict[prefix + 'time_embed'] = resample_time_embed(time, self.time_size)

    # ------------------------------------------------------------------ forward
    input_dims = 'N, C, T, H, W'

    def check_input(self, x: Tensor) -> Tuple[int, int]:
        """As :meth:`ScalableBackbone.check_input`, and T must be a multiple of the tubelet."""
        grid = super().check_input(x)
        if x.shape[2] % self.tubelet_size:
            raise ValueError(f'ScaledVideoViT expects input (N, C, T, H, W) with T a multiple '
                             f'of tubelet_size={self.tubelet_size}, got shape '
                             f'{tuple(x.shape)}: input frames T={x.shape[2]} is not a multiple '
                             f'of tubelet_size={self.tubelet_size}')
        return grid

    def embed(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int, int]]:
        """Clips (B, C, T, H, W) -> tokens and the token grid (T', h, w).

        Tokens are (B, 1 + T'*h*w, D) frame-major, or (B*T', 1 + h*w, D) for ``space_only``.
        """
        h, w = self.check_input(x)
        T = x.shape[2] // self.tubelet_size
        B = x.shape[0]
        pos = resample_abs_pos_embed(self.pos_embed, (h, w), self.grid_size, 1,
                                     self.interpolate_mode)
        x = self.patch_embed.proj(x).flatten(3).permute(0, 2, 3, 1)  # (B, T', h*w, D)
        x = x + pos[:, None, 1:]
        cls = self.cls_token + pos[:, :1]
        if self.attention_type == 'space_only':
            x = x.reshape(B * T, h * w, -1)
            x = torch.cat([cls.expand(B * T, -1, -1), x], dim=1)
        else:
            x = x + resample_time_embed(self.time_embed, T)[:, :, None]
            x = torch.cat([cls.expand(B, -1, -1), x.flatten(1, 2)], dim=1)
        return self.pos_drop(x), (T, h, w)

    def _format(self, x: Tensor, grid: Tuple[int, int, int]) -> Tensor:
        T, h, w = grid
        if self.attention_type == 'space_only':  # per-frame tokens -> one clip sequence
            B = x.shape[0] // T
            cls = x[:, 0].reshape(B, T, -1).mean(1, keepdim=True)
            x = torch.cat([cls, x[:, 1:].reshape(B, T * h * w, -1)], dim=1)
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        patches = x[:, 1:]
        if self.out_type == 'avg_featmap':
            return patches.mean(dim=1)
        B, _, C = patches.shape
        return patches.transpose(1, 2).reshape(B, C, T, h, w)

    def forward(self, x: Tensor) -> Union[Tuple[Tensor, ...], Tensor]:
        x, grid = self.embed(x)
        # divided blocks take the (T', h, w) grid; the others frames of h x w after one class token
        tokens = grid if self.attention_type == 'divided' else TokenGrid(grid[1], grid[2], 1)
        return self.run_blocks(x, tokens, grid)


MODELS.register_module(module=ScaledVideoViT)


class VideoViTFamily(Family):
    """ScaledVideoViT behind the family protocol; ``geometry`` carries ``num_frames`` and
    ``tubelet_size``; rules may also scale ``frames``."""

    name = 'video'
    order = 2
    kind = 'video'
    backbone_type = 'mmvitscale.ScaledVideoViT'
    checkpoint_target = 'video'
    rule_keys = RULE_KEYS | frozenset(('frames', 'frames_mult'))
    default_arch = 'deit-tiny'
    patch_size_arg = True

    def resolve(self, arch, img_size=224, patch_size=None, rule=None, **geometry):
        shape = {k: v for k, v in (rule or {}).items() if k != 'attn_type'}
        return ScaledVideoViT.resolve_arch(arch, img_size, patch_size or 16,
                                           geometry.get('num_frames', 8),
                                           geometry.get('tubelet_size', 1), shape)

    def token_grids(self, spec):
        return [tuple(spec.spatial.grid)]

    def input_size(self, spec):
        return tuple(spec.spatial.img_size)


register_family(VideoViTFamily())
