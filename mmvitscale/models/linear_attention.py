"""Castling-ViT's linear-angular attention (You et al., CVPR 2023) as a drop-in attention.

Queries and keys are L2-normalised per head; the angular similarity ``1 - angle(q, k) / pi``
is replaced by its linear term ``1/2 + q.k / pi``, so the attention is computed keys-first
(``K^T V``), linear in the number of tokens::

    out_i = sum_j (1/2 + q_i.k_j / pi) v_j / sum_j (1/2 + q_i.k_j / pi)  +  dwconv(V)_i

The normaliser is at least ``N (1/2 - 1/pi) > 0``. A depthwise ``k x k`` convolution over the
values on the token grid (prefix tokens excluded: they get no conv term) stands in for the
dropped higher-order terms.

Training-time auxiliary branch (``aux_branch=True``): a softmax attention on the raw q, k, v,
scaled per head by the learnable gate ``aux_mask`` (initialised at 1), is added to the output.
:class:`~mmvitscale.engine.AuxMaskSparsityHook` adds ``weight * sum |aux_mask|`` to the loss;
:func:`convert_to_inference` then removes the branch (exact when the mask is zero).

Token grid: the backbone passes a :class:`~mmvitscale.models.ops.TokenGrid` to its blocks with
each forward (the grid depends on the input size; nothing is stored on the modules, so one model
may run different input sizes in different threads); the attention checks that
``prefix + frames * h * w`` equals its token count (several frames of the same grid: the conv
runs per frame).
"""
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops import TokenGrid, fused_linear

ATTN_TYPES = ('softmax', 'linear_angular')


def check_attn_type(attn_type: str, field: str = 'attn_type') -> str:
    """``attn_type`` itself, or a ``ValueError`` naming the field and value."""
    if attn_type not in ATTN_TYPES:
        raise ValueError(f'{field} must be one of {ATTN_TYPES}, got {attn_type!r}')
    return attn_type


def check_kernel_size(kernel_size: int, grid: Optional[Sequence[int]] = None,
                      field: str = 'linear_kernel_size') -> int:
    """An odd positive int kernel that fits ``grid`` (at most ``2 * side - 1``)."""
    if (isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1
            or kernel_size % 2 == 0):
        raise ValueError(f'{field} must be an odd positive int, got {kernel_size!r}')
    if grid is not None:
        limit = 2 * min(int(g) for g in grid) - 1
        if kernel_size > limit:
            raise ValueError(f'{field}={kernel_size} does not fit the token grid '
                             f'{grid[0]}x{grid[1]} (at most 2*{min(grid)}-1={limit})')
    return kernel_size


def per_stage_attn_types(attn_type: Union[str, Sequence[str]], num_stages: int) -> List[str]:
    """A str for all stages or one entry per stage -> a checked list of ``num_stages``."""
    if isinstance(attn_type, str):
        return [check_attn_type(attn_type)] * num_stages
    if not isinstance(attn_type, Sequence) or len(attn_type) != num_stages:
        raise ValueError(f'attn_type must be a str or a list of {num_stages} (one per stage), '
                         f'got {attn_type!r}')
    return [check_attn_type(a, f'attn_type[{i}]') for i, a in enumerate(attn_type)]


def split_attn_rule(attn_type, scaling: Optional[Mapping]) -> Tuple[object, Optional[Mapping]]:
    """Resolve the backbone ``attn_type`` argument against a rule's ``attn_type``.

    Returns ``(attn_type, rule without attn_type)``; ``attn_type=None`` takes the rule's value
    (default ``'softmax'``); both given and different is a ``ValueError``.
    """
    if not isinstance(scaling, Mapping) or 'attn_type' not in scaling:
        return ('softmax' if attn_type is None else attn_type), scaling
    rule = {k: v for k, v in scaling.items() if k != 'attn_type'}
    ruled = scaling['attn_type']
    if attn_type is not None and attn_type != ruled:
        raise ValueError(f'attn_type={attn_type!r} conflicts with '
                         f'scaling.attn_type={ruled!r}')
    return ruled, rule


class LinearAngularAttention(nn.Module):
    """Linear-angular attention (see module docstring); parameter names as ``Attention``.

    Args:
        dim, num_heads, qkv_bias, attn_drop, proj_drop: as :class:`Attention`
            (``attn_drop`` only applies to the auxiliary softmax branch).
        kernel_size: side of the depthwise conv over the value grid (odd).
        aux_branch: add the masked softmax branch (training time; see
            :func:`convert_to_inference`).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, kernel_size: int = 9,
                 aux_branch: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim={dim} is not divisible by num_heads={num_heads}')
        check_kernel_size(kernel_size)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.kernel_size = kernel_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.aux_branch = bool(aux_branch)
        self.aux_mask = nn.Parameter(torch.ones(num_heads)) if aux_branch else None

    def extra_repr(self) -> str:
        return (f'num_heads={self.num_heads}, kernel_size={self.kernel_size}, '
                f'aux_branch={self.aux_branch}')

    def _value_conv(self, v: Tensor, grid: TokenGrid) -> Tensor:
        """Depthwise conv of the grid values ``v`` (B, frames*h*w, C), per frame."""
        h, w = grid.h, grid.w
        B, M, C = v.shape
        if M == 0 or M % (h * w):
            raise ValueError(f'LinearAngularAttention: {M + grid.prefix} tokens do not match '
                             f'grid={h}x{w} with {grid.prefix} prefix tokens')
        check_kernel_size(self.kernel_size, (h, w))
        frames = M // (h * w)
        v = v.reshape(B * frames, h, w, C).permute(0, 3, 1, 2)
        return self.dconv(v).permute(0, 2, 3, 1).reshape(B, M, C)

    def forward(self, x: Tensor, residual: Optional[Tensor] = None,
                grid: Optional[TokenGrid] = None) -> Tensor:
        """Attention of ``x`` (B, N, C) laid out as ``grid`` (required: the value conv runs
        over it); ``residual`` is added to the output (eval use)."""
        if grid is None:
            raise ValueError('LinearAngularAttention needs the token grid: call it (or its '
                             'block) with grid=TokenGrid(h, w, prefix)')
        grid = TokenGrid(*grid)
        B, N, C = x.shape
        H, d = self.num_heads, self.head_dim
        qkv = fused_linear(x, self.qkv).reshape(B, N, 3, H, d)
        p = grid.prefix
        conv = self._value_conv(qkv[:, p:, 2].reshape(B, N - p, C), grid)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, d)
        qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        kv = kn.transpose(-2, -1) @ v  # (B, H, d, d): K^T V first, linear in N
        num = (qn @ kv).mul_(1 / math.pi).add_(v.sum(-2, keepdim=True), alpha=0.5)
        den = (qn @ kn.sum(-2, keepdim=True).transpose(-2, -1)).mul_(1 / math.pi).add_(0.5 * N)
        out = num / den
        if self.aux_mask is not None:
            soft = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
            out = out + soft * self.aux_mask.view(1, H, 1, 1)
        out = out.transpose(1, 2).reshape(B, N, C)
        if p:
            out = torch.cat([out[:, :p], out[:, p:] + conv], dim=1)
        else:
            out = out + conv
        return self.proj_drop(fused_linear(out, self.proj, residual=residual))


def aux_masks(module: nn.Module) -> List[Tensor]:
    """The ``aux_mask`` parameters of all linear-angular attentions under ``module``."""
    return [m.aux_mask for m in module.modules()
            if isinstance(m, LinearAngularAttention) and m.aux_mask is not None]


def aux_regularizer(module: nn.Module) -> Tensor:
    """``sum |aux_mask|`` over ``module`` (a zero tensor when it has no auxiliary branch)."""
    masks = aux_masks(module)
    if not masks:
        p = next(module.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else 'cpu')
    return torch.stack([m.abs().sum() for m in masks]).sum()


def drop_aux_keys(state_dict: Dict[str, Tensor], prefix: str = '', *args, **kwargs) -> None:
    """``load_state_dict`` pre-hook: remove the auxiliary-branch keys (``*.aux_mask``)."""
    for key in [k for k in state_dict if k.startswith(prefix) and k.endswith('.aux_mask')]:
        del state_dict[key]


def convert_to_inference(model: nn.Module) -> nn.Module:
    """Remove the auxiliary softmax branch in place (and return ``model``).

    Exact when the masks are zero; otherwise the branch's contribution is dropped. A model
    without any auxiliary branch is a ``ValueError``.
    """
    found = [m for m in model.modules()
             if isinstance(m, LinearAngularAttention) and m.aux_mask is not None]
    if not found:
        raise ValueError(f'aux_branch=False: {type(model).__name__} has no auxiliary softmax '
                         'branch to remove (convert_to_inference needs a model built with '
                         "attn_type='linear_angular', aux_branch=True)")
    for m in found:
        del m.aux_mask
        m.aux_mask = None
        m.aux_branch = False
    for m in model.modules():  # the backbone's own flag, if it keeps one
        if hasattr(m, 'aux_branch') and not isinstance(m, LinearAngularAttention):
            try:
                m.aux_branch = False
            except (AttributeError, TypeError):  # pragma: no cover - read-only attribute
                pass
    return model
