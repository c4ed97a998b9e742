"""Closed-form cost of a plain ViT (same convention as :mod:`mmvitscale.cost.counter`).

With ``N = h*w + 1`` tokens, width ``D``, MLP hidden ``F = round(r * D)``, depth ``L``:

* linear layers per block: ``N * (4 D^2 + 2 D F)`` (qkv, proj, fc1, fc2);
* attention per block: ``2 N^2 D`` (``Q K^T`` and ``A V``); with
  ``attn_type='linear_angular'`` (Castling-ViT, inference model without the auxiliary branch)
  ``2 N D d + N D`` (``K^T V``, ``Q (K^T V)`` and the normaliser ``Q sum K``; head size ``d``)
  plus a ``dwconv`` term ``h*w * D * k^2`` (depthwise value conv, kernel ``k``);
* LayerNorms: ``(2 L + 1) * 5 N D`` (fvcore's convention, affine);
* patch embedding: ``h*w * C_in p^2 D``; classifier head: ``D * classes``.
"""
from typing import Dict

from ..scaling import ViTArch

ATTN_TYPES = ('softmax', 'linear_angular')


def vit_flops(arch: ViTArch, num_classes: int = 1000, in_channels: int = 3,
              with_cls_token: bool = True, attn_type: str = 'softmax',
              linear_kernel_size: int = 9) -> Dict[str, int]:
    """Per-term and total MACs of one image through ScaledViT (+ a linear head).

    ``attn_type='linear_angular'`` adds a ``dwconv`` term (see the module docstring).
    """
    if attn_type not in ATTN_TYPES:
        raise ValueError(f'attn_type must be one of {ATTN_TYPES}, got {attn_type!r}')
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
