"""The kernels one forward pass runs, as data: each family's ``Family.kernels`` lists them.

:class:`Kernel` is one kernel call with its shape; :func:`block_kernels` is one pre-norm
Transformer block. The per-kernel latency predictor (:mod:`mmvitscale.cost.kernels`) turns
these into cost terms.
"""
from dataclasses import dataclass
from typing import List, Tuple

__all__ = ['Kernel', 'block_kernels']


@dataclass(frozen=True)
class Kernel:
    """One kernel call: ``op`` and its shape (``shape`` keys depend on ``op``)."""

    op: str  # gemm, attention, layernorm, gelu, copy, dwconv
    shape: Tuple[int, ...]  # gemm (M, K, N); attention (heads, tokens, head_dim); else (elems,)
    name: str = ''


def block_kernels(b: int, n: int, d: int, hid: int, h: int, tag: str) -> List[Kernel]:
    """The kernels of one pre-norm Transformer block: batch ``b``, ``n`` tokens, width ``d``,
    MLP hidden ``hid``, ``h`` heads; ``tag`` prefixes the kernel names."""
    m = b * n
    return [
        Kernel('layernorm', (m * d, ), f'{tag}.norm1'),
        Kernel('gemm', (m, d, 3 * d), f'{tag}.qkv'),
        Kernel('copy', (3 * m * d, ), f'{tag}.qkv_permute'),
        Kernel('attention', (b * h, n, d // h), f'{tag}.sdpa'),
        Kernel('copy', (m * d, ), f'{tag}.attn_transpose'),
        Kernel('gemm', (m, d, d), f'{tag}.proj'),
        Kernel('copy', (m * d, ), f'{tag}.residual1'),
        Kernel('layernorm', (m * d, ), f'{tag}.norm2'),
        Kernel('gemm', (m, d, hid), f'{tag}.fc1'),
        Kernel('gelu', (m * hid, ), f'{tag}.gelu'),
        Kernel('gemm', (m, hid, d), f'{tag}.fc2'),
        Kernel('copy', (m * d, ), f'{tag}.residual2'),
    ]
