"""Attention, MLP and the one Transformer block shared by every backbone, plus position-embedding
resampling and init helpers. The ops they use live in :mod:`mmvitscale.models.ops` (re-exported
here for older imports)."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .linear_attention import LinearAngularAttention, check_attn_type
from .ops import DropPath, TokenGrid, eager_linear, fused_linear  # noqa: F401 (re-exported)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection and fused SDPA.

    ``head_dim=None`` needs ``dim`` divisible by ``num_heads``. A given ``head_dim`` sets the
    attention's inner width ``num_heads * head_dim`` (qkv: ``dim -> 3 * inner``, proj:
    ``inner -> dim``), as As-ViT's ``dim // num_heads`` heads for any ``dim``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0,
                 head_dim: Optional[int] = None) -> None:
        super().__init__()
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(f'dim={dim} is not divisible by num_heads={num_heads}')
            head_dim = dim // num_heads
        elif isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
            raise ValueError(f'head_dim must be a positive integer, got {head_dim!r} '
                             f'(dim={dim}, num_heads={num_heads})')
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.inner_dim = inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, inner * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, residual: Optional[Tensor] = None,
                grid: Optional[TokenGrid] = None) -> Tensor:
        """Attention of ``x`` (B, N, C); ``residual`` is added to the output (eval use only:
        it is added before ``proj_drop``). ``grid`` is accepted for a common signature and
        not needed."""
        B, N, C = x.shape
        qkv = fused_linear(x, self.qkv).reshape(B, N, 3, self.num_heads,
                                                self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, N, self.inner_dim)
        return self.proj_drop(fused_linear(x, self.proj, residual=residual))


class Mlp(nn.Module):
    """Two-layer feed-forward network with GELU."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        """MLP of ``x``; ``residual`` is added to the output (eval use: before ``drop``)."""
        hidden = self.drop(fused_linear(x, self.fc1, gelu=True))
        return self.drop(fused_linear(hidden, self.fc2, residual=residual))


class TransformerBlock(nn.Module):
    """Pre-norm Transformer encoder block, shared by ScaledViT and ScaledPiT.

    ``attn_type='linear_angular'`` uses :class:`~mmvitscale.models.linear_attention.
    LinearAngularAttention` (same ``attn.qkv`` / ``attn.proj`` names) with
    ``linear_kernel_size`` and ``aux_branch``; both are ignored for ``'softmax'``.
    ``head_dim``: as :class:`Attention` (softmax only; linear-angular needs ``dim`` divisible).
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 norm_eps: float = 1e-6, attn_type: str = 'softmax',
                 linear_kernel_size: int = 9, aux_branch: bool = False,
                 head_dim: Optional[int] = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        if attn_type == 'softmax':
            self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, head_dim)
        else:
            check_attn_type(attn_type)
            if head_dim is not None and head_dim * num_heads != dim:
                raise ValueError(f"attn_type='{attn_type}' needs dim={dim} divisible by "
                                 f'num_heads={num_heads} (head_dim={head_dim} given)')
            self.attn = LinearAngularAttention(dim, num_heads, qkv_bias, attn_drop, drop,
                                               linear_kernel_size, aux_branch)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden, drop)

    def forward(self, x: Tensor, grid: Optional[TokenGrid] = None) -> Tensor:
        """Block of ``x`` (B, N, C) laid out as ``grid`` (needed by linear-angular attention)."""
        if not self.training:  # dropout / drop path are identities: fuse the residual adds
            x = self.attn(self.norm1(x), residual=x, grid=grid)
            return self.mlp(self.norm2(x), residual=x)
        # residual added in place into the branch output (a fresh tensor): one allocation and
        # one memory pass less, same values, autograd-safe (linear / mul backward do not need
        # their outputs); the input x is never modified.
        x = self.drop_path(self.attn(self.norm1(x), grid=grid)).add_(x)
        return self.drop_path(self.mlp(self.norm2(x))).add_(x)


def resample_abs_pos_embed(pos_embed: Tensor, new_size: Sequence[int],
                           old_size: Optional[Sequence[int]] = None,
                           num_prefix_tokens: int = 1, mode: str = 'bicubic') -> Tensor:
    """Resize a ``(1, prefix + H*W, C)`` absolute position embedding to a new token grid.

    Prefix tokens (class / distillation) are kept as they are; the grid part is interpolated
    (bicubic, antialiased when shrinking). ``old_size`` defaults to a square grid.
    """
    new_size = tuple(int(s) for s in new_size)
    num_grid = pos_embed.shape[1] - num_prefix_tokens
    if old_size is None:
        side = int(round(num_grid**0.5))
        if side * side != num_grid:
            raise ValueError(f'cannot infer a square grid from {num_grid} position tokens; '
                             'pass old_size')
        old_size = (side, side)
    old_size = tuple(int(s) for s in old_size)
    if old_size[0] * old_size[1] != num_grid:
        raise ValueError(f'old_size={old_size} does not match {num_grid} position tokens')
    if new_size == old_size:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    orig_dtype = grid.dtype
    grid = grid.float().reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)
    shrink = new_size[0] < old_size[0] or new_size[1] < old_size[1]
    grid = F.interpolate(grid, size=new_size, mode=mode, align_corners=False,
                         antialias=shrink and mode in ('bilinear', 'bicubic'))
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_size[0] * new_size[1], dim).to(orig_dtype)
    return torch.cat([prefix, grid], dim=1)


def init_vit_weights(module: nn.Module) -> None:
    """DeiT-style init: truncated normal (std .02) linears, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def grid_of(x: Tensor, patch_size: int, field: str = 'input') -> Tuple[int, int]:
    """Token grid of an NCHW input, refusing sizes that are not multiples of the patch."""
    H, W = x.shape[-2:]
    if H % patch_size or W % patch_size:
        raise ValueError(f'{field} size {H}x{W} is not a multiple of patch_size={patch_size}')
    return H // patch_size, W // patch_size


def normalise_indices(out_indices, num: int, what: str = 'blocks') -> Tuple[int, ...]:
    """Sorted, de-duplicated, non-negative output indices; negative ones count from the end."""
    if isinstance(out_indices, int):
        out_indices = [out_indices]
    if not isinstance(out_indices, Sequence) or not out_indices:
        raise ValueError(f'out_indices must be an int or a non-empty sequence, '
                         f'got {out_indices!r}')
    result = set()
    for i in out_indices:
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f'out_indices entries must be ints, got {i!r} in {out_indices!r}')
        j = num + i if i < 0 else i
        if not 0 <= j < num:
            raise ValueError(f'out_indices entry {i} is out of range for {num} {what}')
        result.add(j)
    return tuple(sorted(result))
