"""Closed-form cost of a plain ViT (same convention as :mod:`mmvitscale.cost.counter`).

With ``N = h*w + 1`` tokens, width ``D``, MLP hidden ``F = round(r * D)``, depth ``L``:

* linear layers per block: ``N * (4 D^2 + 2 D F)`` (qkv, proj, fc1, fc2);
* attention per block: ``2 N^2 D`` (``Q K^T`` and ``A V``);
* LayerNorms: ``(2 L + 1) * 5 N D`` (fvcore's convention, affine);
* patch embedding: ``h*w * C_in p^2 D``; classifier head: ``D * classes``.
"""
from typing import Dict

from ..scaling import ViTArch


def vit_flops(arch: ViTArch, num_classes: int = 1000, in_channels: int = 3,
              with_cls_token: bool = True) -> Dict[str, int]:
    """Per-term and total MACs of one image through ScaledViT (+ a linear head)."""
    D, L, F = arch.embed_dims, arch.num_layers, arch.mlp_hidden
    patches = arch.grid[0] * arch.grid[1]
    N = patches + int(with_cls_token)
    terms = dict(
        linear=L * N * (4 * D * D + 2 * D * F),
        attention=L * 2 * N * N * D,
        norm=(2 * L + 1) * 5 * N * D,
        patch_embed=patches * in_channels * arch.patch_size**2 * D,
        head=D * num_classes,
    )
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
