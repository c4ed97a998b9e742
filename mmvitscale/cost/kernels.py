"""Kernel-level view of a ViT / PiT forward pass, for the per-kernel latency predictor.

:func:`kernels` lists the kernels one forward pass runs (each family's ``kernels``: GEMMs with
their ``M x K x N`` shape, fused attention with heads / tokens / head size, LayerNorms, GELUs,
memory copies, PiT's depthwise pooling conv; :class:`~mmvitscale.models.kernels.Kernel` and
:func:`~mmvitscale.models.kernels.block_kernels`, one Transformer block, live with the models).
:func:`kernel_features` maps each kernel to a few cost terms of its type and sums them over the
network (the nn-Meter / HAT idea: network latency is the sum of its kernels' latencies, each a
function of the kernel's shape):

=================  ============================================================================
feature            per kernel (summed over the network)
=================  ============================================================================
``gemm_mac``       ``M K N`` multiply-accumulates of every GEMM (linear layers, patch embedding)
``gemm_mn``        ``M N``: output writes; with ``gemm_mac`` it makes small-``K`` GEMMs slower
                   per MAC
``gemm_mk``        ``M K``: activation reads / packing; small-``N`` GEMMs slower per MAC
``gemm_kn``        ``K N``: weight reads / packing, paid once per GEMM whatever ``M`` is, so
                   few-token GEMMs are memory bound
``attn_mac``       ``2 H N^2 d`` MACs of ``Q K^T`` and ``A V`` (per batch element and head)
``attn_score``     ``H N^2`` attention scores (softmax, scaling)
``attn_io``        ``4 H N d`` elements of q, k, v read and the output written
``norm_elem``      LayerNorm elements
``gelu_elem``      GELU elements (fused into fc1 in eager, separate in ONNX Runtime)
``copy_elem``      elements moved by permutes, residual adds, concatenations, position adds
``dwconv_mac``     MACs of PiT's depthwise pooling conv
``blocks``         Transformer blocks (per-block dispatch of about ten kernels)
``const``          1 (per-call overhead)
=================  ============================================================================

GEMM efficiency changes with shape: ``time = M K N (a + b / K + c / N + d / M)``, i.e. one
reciprocal term per dimension, is a roofline-style efficiency curve that is linear in its
coefficients, so the per-kernel costs are fitted from whole-network latencies by non-negative
least squares (see :class:`~mmvitscale.cost.predictor.KernelLatencyPredictor`). The same
kernel costs serve ViT and PiT (cross-family prediction).
"""
from typing import Any, Dict, List, Tuple

import numpy as np

from ..families import spec_family
from ..models.kernels import Kernel

KERNEL_FEATURES = ('gemm_mac', 'gemm_mn', 'gemm_mk', 'gemm_kn', 'attn_mac', 'attn_score',
                   'attn_io', 'norm_elem', 'gelu_elem', 'copy_elem', 'dwconv_mac', 'blocks',
                   'const')
# kernel groups for few-shot calibration (one scale per group)
GROUPS: Dict[str, Tuple[str, ...]] = {
    'gemm': ('gemm_mac', 'gemm_mn', 'gemm_mk', 'gemm_kn'),
    'attention': ('attn_mac', 'attn_score', 'attn_io'),
    'memory': ('norm_elem', 'gelu_elem', 'copy_elem', 'dwconv_mac'),
    'overhead': ('blocks', 'const'),
}


def kernels(arch: Any, in_channels: int = 3, batch_size: int = 1) -> List[Kernel]:
    """Kernels of one forward pass of ``batch_size`` images (softmax attention, no head): the
    ``kernels`` of the arch's family (:mod:`mmvitscale.families`)."""
    return spec_family(arch).kernels(arch, in_channels, batch_size)


def kernel_terms(k: Kernel) -> Dict[str, float]:
    """The :data:`KERNEL_FEATURES` terms of one kernel (those it does not touch are left out)."""
    if k.op == 'gemm':
        m, kk, n = (float(v) for v in k.shape)
        return dict(gemm_mac=m * kk * n, gemm_mn=m * n, gemm_mk=m * kk, gemm_kn=kk * n)
    if k.op == 'attention':
        h, n, d = (float(v) for v in k.shape)
        return dict(attn_mac=2 * h * n * n * d, attn_score=h * n * n, attn_io=4 * h * n * d)
    key = dict(layernorm='norm_elem', gelu='gelu_elem', copy='copy_elem',
               dwconv='dwconv_mac').get(k.op)
    if key is None:
        raise ValueError(f'unknown kernel op {k.op!r}')
    return {key: float(k.shape[0])}


def kernel_features(arch: Any, in_channels: int = 3, batch_size: int = 1) -> np.ndarray:
    """The :data:`KERNEL_FEATURES` vector of one forward pass, summed over its kernels."""
    f = dict.fromkeys(KERNEL_FEATURES, 0.0)
    for k in kernels(arch, in_channels, batch_size):
        for key, value in kernel_terms(k).items():
            f[key] += value
    f['blocks'] = float(sum(depth for *_, depth in spec_family(arch).token_stages(arch)))
    f['const'] = 1.0
    return np.array([f[k] for k in KERNEL_FEATURES], dtype=np.float64)
