"""AsViT: the multi-stage windowed ViT of As-ViT (Chen et al., ICLR 2022) with scaling rules.

Topology (what :mod:`mmvitscale.search.topology` searches), one arch dict:

* ``width``: stage-1 embed dims; stage ``i`` has ``min(width * 2**i, max(width, 1024))``.
* ``depths``: blocks per stage (4).
* ``heads``: final-stage heads ``h`` (stages get ``h/8, h/4, h/2, h``, at least 1) or a
  per-stage list. Each head has ``dim // heads`` channels, as in the reference, so a stage
  width need not be divisible by its heads (attention's inner width is then
  ``heads * (dim // heads)``; linear-angular attention needs it divisible).
* ``mlp_ratios``: MLP ratio per stage (hidden = ``round(dim * ratio)``).
* ``tokenizer_kernel``: kernel ``k`` of the stride-4 patch conv; the input is zero-padded by
  ``(k - 4) // 2`` before and ``(k - 3) // 2`` after each side, so the map is ``input / 4``
  (overlapping patches when ``k > 4``). A LayerNorm follows the conv.
* ``down_kernels``: kernels of the stride-2 patch merging that starts stages 2-4: zero padding
  ``(k - 2) // 2`` before and ``(k - 1) // 2`` after, ``Unfold(k, stride 2)`` -> LayerNorm over
  the ``k * k * C`` patch vector -> Linear without bias to the new width (map halved).
* ``splits``: per stage, the token map is cut into ``split x split`` windows and attention runs
  inside each window (``split == 1``: global attention); LayerNorms and MLPs are per token.
  There is no class token.

This is the network of the public As-ViT code (github VITA-Group/AsViT,
``lib/models/cell_infers/transformer.py``): same tokenizer, padding, patch merging, window
attention, LayerNorm eps (1e-5), initialisation (truncated normal std .02 linears with zero
biases, unit LayerNorms, PyTorch's default for the tokenizer conv) and pooled features
(``out_type='avg_featmap'`` is its ``forward_features(x)[0]`` with ``final_norm=True`` and
``forward_features(x)[1]``, the proxies' readout, with ``final_norm=False``). Checked against it
in ``tests/test_asvit_reference.py``. Differences: stages are numbered by resolution (stage
``i`` starts with the patch merging that the reference runs at the end of stage ``i - 1``), so
stage outputs are the maps at strides 4/8/16/32; non-square inputs get ``H/s x W/s`` windows
(the reference only runs square inputs).

Position embedding: ``pos_embed='none'`` (default; the overlapping tokenizer and the windows
carry position, as in As-ViT) or ``'learned'`` (a 2-D table on the stage-1 grid added after the
tokenizer's LayerNorm, resized at forward time; As-ViT's ``ape`` option). Inputs whose sides
are multiples of 32 always tile every window split; other sizes raise ``ValueError`` naming the
stage and split.

Attention: ``attn_type='softmax'`` (default) or ``'linear_angular'`` (Castling-ViT, see
:mod:`mmvitscale.models.linear_attention`), for all stages or one per stage. The depthwise conv
of linear-angular attention runs over each window's ``h x w`` token grid (no prefix tokens), so
``linear_kernel_size`` must fit the window grid of every linear-angular stage.
"""
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import MODELS
from ..scaling import (check_rule, per_stage, pick_knob, scaled_int, scaled_resolution,
                       scaled_width, to_2tuple)
from .base import ScalableBackbone, check_common_args, check_frozen_stages
from .family import Family, register_family
from .layers import TokenGrid, TransformerBlock, normalise_indices
from .linear_attention import (check_kernel_size, drop_aux_keys, per_stage_attn_types,
                               split_attn_rule)
from .pit import resample_pos_embed_2d

NUM_STAGES = 4
MAX_WIDTH = 1024
TOKEN_STRIDE = 4
ASVIT_KNOBS = ('depth', 'width', 'heads', 'mlp_ratio', 'resolution')
ASVIT_RULE_KEYS = frozenset(ASVIT_KNOBS) | frozenset(k + '_mult' for k in ASVIT_KNOBS)
LIST_KNOBS = ('depth', 'heads', 'mlp_ratio')
POS_EMBEDS = ('none', 'learned')


NORM_EPS = 1e-5  # nn.LayerNorm's default, as in the reference


def same_padding(kernel: int, stride: int) -> Tuple[int, int]:
    """As-ViT's zero padding ``(before, after)`` of one side for a ``kernel`` / ``stride`` patch
    op: ``(k - s) // 2`` and ``(k - s + 1) // 2``, mapping a side ``n`` (a multiple of
    ``stride``) to ``n / stride``."""
    return max(0, (kernel - stride) // 2), max(0, (kernel - stride + 1) // 2)


def conv_out(n: int, kernel: int, stride: int) -> int:
    """Output side of a patch op on a side ``n`` with :func:`same_padding`."""
    return (n + sum(same_padding(kernel, stride)) - kernel) // stride + 1


def stage_heads(final_heads: int) -> Tuple[int, ...]:
    """As-ViT's per-stage heads ``h/8, h/4, h/2, h`` (at least 1 each)."""
    return tuple(max(1, final_heads // 2**(NUM_STAGES - 1 - i)) for i in range(NUM_STAGES))


def stage_dims(width: int) -> Tuple[int, ...]:
    """Width doubles per stage, capped at 1024 (or at ``width`` when that is larger)."""
    return tuple(min(width * 2**i, max(width, MAX_WIDTH)) for i in range(NUM_STAGES))


@dataclass(frozen=True)
class AsViTArch:
    """A fully resolved AsViT topology plus its training resolution."""

    width: int
    depths: Tuple[int, ...]
    heads: Tuple[int, ...]
    mlp_ratios: Tuple[float, ...]
    tokenizer_kernel: int
    down_kernels: Tuple[int, ...]
    splits: Tuple[int, ...]
    img_size: Tuple[int, int]

    @property
    def dims(self) -> Tuple[int, ...]:
        return stage_dims(self.width)

    @property
    def grids(self) -> Tuple[Tuple[int, int], ...]:
        return stage_grids(self.img_size, self.tokenizer_kernel, self.down_kernels)

    def mlp_hidden(self, stage: int) -> int:
        return int(round(self.dims[stage] * self.mlp_ratios[stage]))

    def head_dim(self, stage: int) -> int:
        """Channels per head, ``dim // heads`` (the reference's, for any width)."""
        return self.dims[stage] // self.heads[stage]

    def inner_dim(self, stage: int) -> int:
        """Attention's qkv / proj inner width, ``heads * head_dim``."""
        return self.heads[stage] * self.head_dim(stage)

    def as_dict(self) -> Dict[str, Any]:
        """Plain arch dict (lists), loadable by :class:`AsViT` (``img_size`` excluded)."""
        d = asdict(self)
        d.pop('img_size')
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def stage_grids(img_size: Tuple[int, int], tokenizer_kernel: int,
                down_kernels: Sequence[int]) -> Tuple[Tuple[int, int], ...]:
    h, w = (conv_out(s, tokenizer_kernel, TOKEN_STRIDE) for s in img_size)
    grids = [(h, w)]
    for k in down_kernels:
        h, w = conv_out(h, k, 2), conv_out(w, k, 2)
        grids.append((h, w))
    return tuple(grids)


def _ints(source: str, name: str, values: Any, length: int) -> Tuple[int, ...]:
    if (not isinstance(values, (list, tuple)) or len(values) != length or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values)):
        raise ValueError(f'{source}: {name} must be {length} positive integers, got {values!r}')
    return tuple(int(v) for v in values)


def make_asvit_arch(width: int, depths: Sequence[int], heads: Union[int, Sequence[int]],
                    mlp_ratios: Union[float, Sequence[float]], tokenizer_kernel: int,
                    down_kernels: Sequence[int], splits: Sequence[int],
                    img_size: Union[int, Tuple[int, int]],
                    source: str = 'arch') -> AsViTArch:
    """Build an :class:`AsViTArch`, raising ``ValueError`` naming the first infeasible field."""
    img_size = to_2tuple(img_size)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f'{source}: width must be a positive integer, got {width!r}')
    depths = _ints(source, 'depths', depths, NUM_STAGES)
    if isinstance(heads, int) and not isinstance(heads, bool):
        if heads < 1:
            raise ValueError(f'{source}: heads must be a positive integer, got {heads!r}')
        heads = stage_heads(heads)
    heads = _ints(source, 'heads', heads, NUM_STAGES)
    if isinstance(mlp_ratios, (int, float)) and not isinstance(mlp_ratios, bool):
        mlp_ratios = (mlp_ratios, ) * NUM_STAGES
    if (not isinstance(mlp_ratios, (list, tuple)) or len(mlp_ratios) != NUM_STAGES or any(
            isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0
            for r in mlp_ratios)):
        raise ValueError(f'{source}: mlp_ratios must be {NUM_STAGES} positive numbers, '
                         f'got {mlp_ratios!r}')
    mlp_ratios = tuple(float(r) for r in mlp_ratios)
    (tokenizer_kernel, ) = _ints(source, 'tokenizer_kernel', [tokenizer_kernel], 1)
    down_kernels = _ints(source, 'down_kernels', down_kernels, NUM_STAGES - 1)
    splits = _ints(source, 'splits', splits, NUM_STAGES)
    for i, (dim, h) in enumerate(zip(stage_dims(width), heads)):
        if dim < h:
            raise ValueError(f'{source}: stage {i + 1} width={dim} (from width={width}) is '
                             f'below heads={h}: each head needs at least one channel')
    for i, ((gh, gw), s) in enumerate(
            zip(stage_grids(img_size, tokenizer_kernel, down_kernels), splits)):
        if gh < 1 or gw < 1 or gh % s or gw % s:
            raise ValueError(f'{source}: splits[{i}]={s} does not divide stage {i + 1} '
                             f'resolution {gh}x{gw} (img_size={img_size[0]}x{img_size[1]}; '
                             f'multiples of 32 always tile)')
    return AsViTArch(width, depths, heads, mlp_ratios, tokenizer_kernel, down_kernels, splits,
                     img_size)


def check_window_kernel(kernel_size: int, map_size: Sequence[int], split: int,
                        stage: int) -> Tuple[int, int]:
    """The window grid ``(h, w)`` of a ``map_size`` token map cut ``split x split``, after
    checking that ``kernel_size`` fits it (``ValueError`` naming the field, value and stage)."""
    H, W = int(map_size[0]), int(map_size[1])
    window = (H // split, W // split)
    try:
        check_kernel_size(kernel_size, window)
    except ValueError as e:
        raise ValueError(f'{e}: stage {stage + 1} windows of its {H}x{W} token map with '
                         f'split={split}') from None
    return window


def validate_asvit_rule(rule: Optional[Mapping]) -> Dict[str, Any]:
    """Check an As-ViT scaling rule (per-stage lists allowed for the list knobs)."""
    return check_rule(rule, ASVIT_RULE_KEYS, LIST_KNOBS)


def scale_asvit(base: AsViTArch, rule: Optional[Mapping] = None) -> AsViTArch:
    """Apply a scaling rule to an AsViT topology.

    Keys as for ScaledPiT: ``depth`` (one value for every stage or a 4-list) / ``depth_mult``;
    ``width`` (stage-1 width) / ``width_mult``, rounded to a multiple of
    ``lcm(stage-1 heads, 8)``; ``heads`` (final-stage heads, stages derived as h/8..h, or a
    4-list) / ``heads_mult`` (each stage); ``mlp_ratio`` (one value or a 4-list) /
    ``mlp_ratio_mult``; ``resolution`` / ``resolution_mult`` (rounded to a multiple of 32).
    """
    rule = validate_asvit_rule(rule)
    depths = per_stage(rule, 'depth', base.depths)
    if 'heads' in rule and not isinstance(rule['heads'], (list, tuple)):
        heads = stage_heads(scaled_int(rule, 'heads', base.heads[-1]))
    else:
        heads = per_stage(rule, 'heads', base.heads)
    width = scaled_width(rule, base.width, heads[0], heads != base.heads)
    if isinstance(rule.get('mlp_ratio'), (list, tuple)):
        if 'mlp_ratio_mult' in rule:
            raise ValueError(f'scaling gives both mlp_ratio={rule["mlp_ratio"]!r} and '
                             f'mlp_ratio_mult={rule["mlp_ratio_mult"]!r}; use one of them')
        mlp_ratios = tuple(rule['mlp_ratio'])
    else:
        ratio_abs, ratio_mult = pick_knob(rule, 'mlp_ratio')
        mlp_ratios = ((ratio_abs, ) * NUM_STAGES if ratio_abs is not None else tuple(
            r * (ratio_mult or 1.0) for r in base.mlp_ratios))
    img_size = scaled_resolution(rule, base.img_size, 32)
    return make_asvit_arch(width, depths, heads, list(mlp_ratios), base.tokenizer_kernel,
                           base.down_kernels, base.splits, img_size, source='scaling')


class PatchEmbed(nn.Module):
    """As-ViT tokenizer: zero padding (:func:`same_padding`), a stride-4 conv, a LayerNorm.

    ``(B, C, H, W)`` images -> ``(B, H / 4, W / 4, dim)`` channels-last tokens. The symmetric
    part of the padding is the conv's own (``conv.padding``); an odd kernel adds one more row
    and column after (right / bottom), as the reference's ``ZeroPad2d``.
    """

    def __init__(self, in_channels: int, dim: int, kernel: int,
                 norm_eps: float = NORM_EPS) -> None:
        super().__init__()
        before, after = same_padding(kernel, TOKEN_STRIDE)
        self.extra_pad = after - before
        self.conv = nn.Conv2d(in_channels, dim, kernel, TOKEN_STRIDE, before)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        if self.extra_pad:
            x = F.pad(x, (0, self.extra_pad, 0, self.extra_pad))
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """As-ViT downsampling: zero padding, ``Unfold(k, stride 2)``, a LayerNorm over each
    ``k * k * in_dim`` patch vector and a Linear without bias to ``dim``.

    ``(B, H, W, in_dim)`` -> ``(B, H', W', dim)`` with ``H' = conv_out(H, k, 2)``.
    """

    def __init__(self, in_dim: int, dim: int, kernel: int, norm_eps: float = NORM_EPS) -> None:
        super().__init__()
        self.kernel = kernel
        before, after = same_padding(kernel, 2)
        self.padding = (before, after, before, after)
        self.norm = nn.LayerNorm(kernel * kernel * in_dim, eps=norm_eps)
        self.reduction = nn.Linear(kernel * kernel * in_dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, _ = x.shape
        k = self.kernel
        x = F.pad(x.permute(0, 3, 1, 2), self.padding)
        Ho, Wo = (H + sum(self.padding[:2]) - k) // 2 + 1, (W + sum(self.padding[2:]) - k) // 2 + 1
        patches = F.unfold(x, k, stride=2).transpose(1, 2)  # (B, Ho*Wo, C*k*k), C-major
        return self.reduction(self.norm(patches)).reshape(B, Ho, Wo, -1)


class AsViTStage(nn.Module):
    """Optional patch merging, then Transformer blocks whose attention runs inside each window
    (``attn_type='linear_angular'``: the value conv runs over each window's grid).

    Channels-last in and out: ``(B, H, W, C)``.
    """

    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, mlp_hidden: int,
                 split: int, down_kernel: Optional[int], drop_path: Sequence[float],
                 drop: float = 0.0, attn_drop: float = 0.0, norm_eps: float = NORM_EPS,
                 index: int = 0, attn_type: str = 'softmax', linear_kernel_size: int = 9,
                 aux_branch: bool = False, qkv_bias: bool = True) -> None:
        super().__init__()
        self.split = split
        self.index = index
        self.attn_type = attn_type
        self.linear_kernel_size = linear_kernel_size
        self.downsample = None if down_kernel is None else PatchMerging(
            in_dim, dim, down_kernel, norm_eps)
        self.blocks = nn.Sequential(*[
            TransformerBlock(dim, heads, mlp_hidden, qkv_bias=qkv_bias, drop=drop,
                             attn_drop=attn_drop, drop_path=drop_path[i], norm_eps=norm_eps,
                             attn_type=attn_type, linear_kernel_size=linear_kernel_size,
                             aux_branch=aux_branch,
                             head_dim=dim // heads if attn_type == 'softmax' else None)
            for i in range(depth)
        ])

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        B, H, W, C = x.shape
        s = self.split
        if H % s or W % s:
            raise ValueError(f'stage {self.index + 1}: split={s} does not divide the {H}x{W} '
                             'token map (input sides that are multiples of 32 always tile)')
        h, w = H // s, W // s
        if self.attn_type != 'softmax':
            check_window_kernel(self.linear_kernel_size, (H, W), s, self.index)
        grid = TokenGrid(h, w, 0)
        if s == 1:
            x = x.reshape(B, H * W, C)
            for block in self.blocks:
                x = block(x, grid)
            return x.reshape(B, H, W, C)
        windows = x.reshape(B, s, h, s, w, C).transpose(2, 3).reshape(B * s * s, h * w, C)
        for block in self.blocks:
            windows = block(windows, grid)
        return windows.reshape(B, s, s, h, w, C).transpose(2, 3).reshape(B, H, W, C)


class AsViT(ScalableBackbone):
    """As-ViT backbone: stride-4 conv tokenizer with a LayerNorm, 4 stages of windowed
    Transformer blocks joined by patch merging (feature strides 4/8/16/32), no class token;
    equal to the public As-ViT network (see the module docstring).

    Args:
        arch: a preset name or a dict with ``width``, ``depths``, ``heads`` and optional
            ``mlp_ratios`` (4.0), ``tokenizer_kernel`` (4), ``down_kernels`` (2, 2, 2),
            ``splits`` (1, 1, 1, 1); see the module docstring.
        img_size: training resolution (learned position table, split checks).
        scaling: an AsViT scaling rule (:func:`scale_asvit`).
        out_indices: stage indices (0..3) to return.
        out_type: ``featmap`` (B, C, H, W), ``avg_featmap`` (B, C) or ``raw`` tokens
            (B, H*W, C); ``cls_token`` is refused (no class token: use ``avg_featmap``).
        return_tuple: tuple output (mmpretrain / mmdet) or the last one as a tensor.
        final_norm: a LayerNorm on each returned stage (off for proxy scoring: a final norm
            makes the summed-feature NTK degenerate).
        pos_embed: ``'none'`` or ``'learned'``.
        norm_eps: every LayerNorm's eps (1e-5, the reference's; ScaledPiT uses 1e-6).
        drop_rate, attn_drop_rate, drop_path_rate, frozen_stages, interpolate_mode,
        init_cfg: as in :class:`~mmvitscale.models.ScaledPiT`.
        attn_type: ``'softmax'`` / ``'linear_angular'`` for all stages, or a list of 4 (one
            per stage); a ``scaling`` rule may carry it too.
        linear_kernel_size, aux_branch, inference_only: as in ScaledPiT; the kernel must fit
            the window grid of every linear-angular stage (checked at build and forward time).
        qkv_bias: bias of the qkv projections (True, the reference's).
    """

    arch_zoo: Dict[str, dict] = {
        **dict.fromkeys(['seed', 'asvit-seed'],
                        dict(width=32, depths=(1, 1, 1, 1), heads=16, mlp_ratios=(4, 4, 4, 4),
                             tokenizer_kernel=4, down_kernels=(2, 2, 2), splits=(1, 1, 1, 1))),
        **dict.fromkeys(['tiny', 'asvit-tiny'],
                        dict(width=64, depths=(1, 1, 3, 1), heads=16, mlp_ratios=(4, 4, 4, 4),
                             tokenizer_kernel=7, down_kernels=(3, 3, 3), splits=(4, 2, 1, 1))),
    }
    arch_keys = (('width', 'depths', 'heads'),
                 ('mlp_ratios', 'tokenizer_kernel', 'down_kernels', 'splits'))
    init_std_params = ('pos_embed', )
    tokenizer = 'patch_embed.conv'

    def __init__(self,
                 arch: Union[str, Mapping] = 'asvit-tiny',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 in_channels: int = 3,
                 scaling: Optional[Mapping] = None,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_type: str = 'avg_featmap',
                 return_tuple: bool = True,
                 final_norm: bool = True,
                 pos_embed: str = 'none',
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 norm_eps: float = NORM_EPS,
                 frozen_stages: int = -1,
                 interpolate_mode: str = 'bicubic',
                 init_cfg: Optional[Union[dict, list]] = None,
                 attn_type: Optional[Union[str, Sequence[str]]] = None,
                 linear_kernel_size: int = 9,
                 aux_branch: bool = False,
                 inference_only: bool = False,
                 qkv_bias: bool = True) -> None:
        super().__init__(init_cfg=init_cfg)
        check_common_args(in_channels, drop_rate, attn_drop_rate, drop_path_rate, norm_eps,
                          interpolate_mode, qkv_bias=qkv_bias, final_norm=final_norm,
                          return_tuple=return_tuple, aux_branch=aux_branch,
                          inference_only=inference_only)
        if out_type == 'cls_token':
            raise ValueError("out_type='cls_token': AsViT has no class token; use "
                             "out_type='avg_featmap'")
        self.out_type = self.check_out_type(out_type)
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f'pos_embed must be one of {POS_EMBEDS}, got {pos_embed!r}')
        attn_type, scaling = split_attn_rule(attn_type, scaling)
        self.arch_spec = spec = self.resolve_arch(arch, img_size, scaling)
        self.attn_types = per_stage_attn_types(attn_type, NUM_STAGES)
        self.aux_branch = bool(aux_branch) and not inference_only
        check_kernel_size(linear_kernel_size)
        for i, (t, grid) in enumerate(zip(self.attn_types, spec.grids)):
            if t == 'linear_angular':
                check_window_kernel(linear_kernel_size, grid, spec.splits[i], i)
                if spec.dims[i] % spec.heads[i]:
                    raise ValueError(f"arch: attn_type='linear_angular' in stage {i + 1} needs "
                                     f'its width={spec.dims[i]} (from width={spec.width}) '
                                     f'divisible by heads={spec.heads[i]}')
        self.num_stages = NUM_STAGES
        self.out_indices = normalise_indices(out_indices, NUM_STAGES, 'stages')
        self.return_tuple = return_tuple
        self.interpolate_mode = interpolate_mode
        self.frozen_stages = check_frozen_stages(frozen_stages, NUM_STAGES, 'stages')
        dims = spec.dims
        self.embed_dims = dims[-1]
        self.img_size = spec.img_size
        self.grid_size = spec.grids[0]

        self.patch_embed = PatchEmbed(in_channels, dims[0], spec.tokenizer_kernel, norm_eps)
        self.pos_embed = (nn.Parameter(torch.zeros(1, dims[0], *self.grid_size))
                          if pos_embed == 'learned' else None)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(spec.depths)).split(list(spec.depths))
        self.stages = nn.ModuleList([
            AsViTStage(dims[i - 1] if i else dims[0], dims[i], spec.depths[i], spec.heads[i],
                       spec.mlp_hidden(i), spec.splits[i],
                       spec.down_kernels[i - 1] if i else None, dpr[i].tolist(), drop_rate,
                       attn_drop_rate, norm_eps, index=i, attn_type=self.attn_types[i],
                       linear_kernel_size=linear_kernel_size, aux_branch=self.aux_branch,
                       qkv_bias=qkv_bias)
            for i in range(NUM_STAGES)
        ])
        self.norms = nn.ModuleDict({
            str(i): nn.LayerNorm(dims[i], eps=norm_eps) if final_norm else nn.Identity()
            for i in self.out_indices
        })
        if inference_only:
            self._register_load_state_dict_pre_hook(drop_aux_keys)
        self._freeze_stages()

    @classmethod
    def resolve_arch(cls, arch: Union[str, Mapping], img_size=224,
                     scaling: Optional[Mapping] = None) -> AsViTArch:
        """Preset (or dict) + resolution + scaling rule -> :class:`AsViTArch`."""
        arch = cls.select_arch(arch)
        base = make_asvit_arch(arch['width'], arch['depths'], arch['heads'],
                               arch.get('mlp_ratios', 4.0), arch.get('tokenizer_kernel', 4),
                               arch.get('down_kernels', (2, 2, 2)),
                               arch.get('splits', (1, 1, 1, 1)), to_2tuple(img_size))
        return scale_asvit(base, scaling)

    def frozen_modules(self) -> Iterable[nn.Module]:
        if self.frozen_stages < 0:
            return []
        modules: List[nn.Module] = [self.patch_embed, *self.stages[:self.frozen_stages]]
        return modules + [self.norms[k] for k in self.norms if int(k) < self.frozen_stages]

    def frozen_params(self) -> Iterable[nn.Parameter]:
        return [self.pos_embed] if self.frozen_stages >= 0 and self.pos_embed is not None \
            else []

    def _format(self, x: Tensor, i: int) -> Tensor:
        """Channels-last stage output ``(B, H, W, C)`` -> the requested ``out_type``."""
        x = self.norms[str(i)](x)
        if self.out_type == 'raw':
            return x.flatten(1, 2)
        if self.out_type == 'avg_featmap':
            return x.mean(dim=(1, 2))
        return x.permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Union[Tuple[Tensor, ...], Tensor]:
        if self.token_stride != 1:
            self._token_grid(x.shape, self.token_stride)
        x = self.patch_embed(x)  # (B, H, W, C)
        if self.pos_embed is not None:
            x = x + resample_pos_embed_2d(self.pos_embed, x.shape[1:3],
                                          self.interpolate_mode).permute(0, 2, 3, 1)
        x = self.pos_drop(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(self._format(x, i))
        return tuple(outs) if self.return_tuple else outs[-1]


MODELS.register_module(module=AsViT)


def asvit_params(arch: Mapping[str, Any], in_channels: int = 3, img_size: int = 224) -> int:
    """Closed-form parameter count of ``AsViT(arch, out_indices=-1)`` (with its final norm)."""
    spec = AsViT.resolve_arch(arch, img_size)
    dims, k = spec.dims, spec.tokenizer_kernel
    total = in_channels * k * k * dims[0] + 3 * dims[0]  # conv with bias, LayerNorm
    for i, d in enumerate(dims):
        if i:  # patch merging: LayerNorm over k*k*C, Linear without bias
            patch = spec.down_kernels[i - 1]**2 * dims[i - 1]
            total += 2 * patch + patch * d
        h, a = spec.mlp_hidden(i), spec.inner_dim(i)
        block = 4 * d + (3 * d * a + 3 * a) + (a * d + d) + (d * h + h) + (h * d + d)
        total += spec.depths[i] * block
    return total + 2 * dims[-1]


def asvit_flops(arch: Mapping[str, Any], in_channels: int = 3, img_size: int = 224) -> int:
    """Closed-form FLOPs of ``AsViT(arch, out_indices=-1)`` at ``img_size``, in the convention
    of :func:`~mmvitscale.cost.get_complexity` (MACs of convs, linears and windowed
    attention, ``5 * numel`` per LayerNorm, padding and unfold free; equal to it, checked in
    the tests)."""
    spec = AsViT.resolve_arch(arch, img_size)
    dims, k = spec.dims, spec.tokenizer_kernel
    (H, W), total = spec.grids[0], 0
    total += dims[0] * H * W * in_channels * k * k + 5 * H * W * dims[0]
    for i, d in enumerate(dims):
        H, W = spec.grids[i]
        if i:  # patch merging: LayerNorm and Linear over k*k*C patch vectors
            patch = spec.down_kernels[i - 1]**2 * dims[i - 1]
            total += H * W * (5 * patch + patch * d)
        N, h, a = H * W, spec.mlp_hidden(i), spec.inner_dim(i)
        window = N // spec.splits[i]**2
        block = 10 * N * d + 4 * N * d * a + 2 * N * d * h + 2 * N * window * a
        total += spec.depths[i] * block
    return total + 5 * N * dims[-1]


class AsViTFamily(Family):
    """AsViT behind the family protocol: scaled by its topology search and growth
    (:mod:`mmvitscale.search.topology`), not by the multiplier grid of the scaling search."""

    name = 'asvit'
    order = 3
    backbone_type = 'mmvitscale.AsViT'
    default_arch = 'asvit-seed'

    def resolve(self, arch, img_size=224, patch_size=None, rule=None, **geometry) -> AsViTArch:
        if patch_size is not None:
            raise ValueError('patch_size belongs in the AsViT arch dict (tokenizer_kernel), '
                             f'got patch_size={patch_size!r}')
        shape = {k: v for k, v in (rule or {}).items() if k != 'attn_type'}
        return AsViT.resolve_arch(arch, img_size, shape)

    def token_grids(self, spec: AsViTArch):
        return [(h // s, w // s) for (h, w), s in zip(spec.grids, spec.splits)]

    def analytic_flops(self, spec: AsViTArch, in_channels: int = 3, attn_type: str = 'softmax',
                       linear_kernel_size: int = 9) -> Optional[int]:
        if attn_type != 'softmax' or spec.img_size[0] != spec.img_size[1]:
            return None  # the closed form covers square inputs with softmax attention
        return asvit_flops(spec.as_dict(), in_channels, spec.img_size[0])


register_family(AsViTFamily())
