"""Operator-level FLOPs counter that sees fused attention.

Counts at the ATen dispatch level (a ``TorchDispatchMode``), so whatever kernel a module ends up
calling is seen, including ``scaled_dot_product_attention`` and its backend-specific variants
that fvcore / mmengine's jit-trace counters skip.

Convention (the papers' and fvcore's, so numbers compare with published tables):

* matmul-like ops count multiply-accumulates (MACs): ``mm``, ``addmm``, ``bmm``, ``baddbmm``,
  oneDNN's fused ``_linear_pointwise``, convolutions (transposed too) and attention
  (``Q K^T`` plus ``A V``);
* normalisation layers count ``5 * numel`` with affine parameters (``4 *`` without), as fvcore;
* element-wise ops, softmax, activations and pooling count 0.
"""
from collections import Counter
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def _mm(args, out) -> int:
    a, b = args[0], args[1]
    return a.shape[0] * a.shape[1] * b.shape[1]


def _addmm(args, out) -> int:
    return _mm(args[1:], out)


def _bmm(args, out) -> int:
    a, b = args[0], args[1]
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _baddbmm(args, out) -> int:
    return _bmm(args[1:], out)


def _conv(args, out) -> int:
    x, w = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 else False
    kernel = _prod(w.shape[2:])
    if transposed:  # weight: (Cin, Cout/groups, k...); every input pixel feeds a kernel window
        return _prod(x.shape) * w.shape[1] * kernel
    y = out[0] if isinstance(out, (tuple, list)) else out
    return _prod(y.shape) * w.shape[1] * kernel  # w.shape[1] = Cin / groups


def _linear_pointwise(args, out) -> int:
    x, w = args[0], args[1]
    return _prod(x.shape[:-1]) * w.shape[1] * w.shape[0]


def _linear_pointwise_binary(args, out) -> int:  # (x, other, weight, bias, attr)
    return _linear_pointwise((args[0], args[2]), out)


def _sdpa(args, out) -> int:
    q, k, v = args[0], args[1], args[2]
    batch = _prod(q.shape[:-2])
    L, E = q.shape[-2], q.shape[-1]
    S, Ev = k.shape[-2], v.shape[-1]
    return batch * L * S * (E + Ev)


def _layer_norm(args, out) -> int:
    weight = args[2] if len(args) > 2 else None
    return _prod(args[0].shape) * (5 if weight is not None else 4)


def _batch_norm(args, out) -> int:
    weight = args[1] if len(args) > 1 else None
    return _prod(args[0].shape) * (5 if weight is not None else 4)


def _group_norm(args, out) -> int:
    weight = args[1] if len(args) > 1 else None
    return _prod(args[0].shape) * (5 if weight is not None else 4)


def _handlers() -> Dict[object, Callable]:
    table = {
        'mm': _mm, 'addmm': _addmm, 'bmm': _bmm, 'baddbmm': _baddbmm,
        'convolution': _conv, '_convolution': _conv,
        '_scaled_dot_product_flash_attention_for_cpu': _sdpa,
        '_scaled_dot_product_flash_attention': _sdpa,
        '_scaled_dot_product_efficient_attention': _sdpa,
        '_scaled_dot_product_cudnn_attention': _sdpa,
        '_scaled_dot_product_fused_attention_overrideable': _sdpa,
        'native_layer_norm': _layer_norm,
        'native_batch_norm': _batch_norm,
        '_native_batch_norm_legit_no_training': _batch_norm,
        '_native_batch_norm_legit': _batch_norm,
        'native_group_norm': _group_norm,
    }
    handlers = {}
    for name, fn in table.items():
        packet = getattr(aten, name, None)
        if packet is not None:
            handlers[packet] = fn
    # oneDNN linear (+bias, +activation), used by mmvitscale's CPU inference fast path
    packet = getattr(torch.ops.mkldnn, '_linear_pointwise', None)
    if packet is not None:
        handlers[packet.default] = _linear_pointwise
        if 'binary' in packet.overloads():
            handlers[packet.binary] = _linear_pointwise_binary
    return handlers


class FlopCounter(TorchDispatchMode):
    """Dispatch mode accumulating MACs per ATen op (see module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.handlers = _handlers()
        self.by_op: Counter = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        fn = self.handlers.get(func) or self.handlers.get(func.overloadpacket)
        if fn is not None:
            self.by_op[func.overloadpacket.__name__] += int(fn(args, out))
        return out


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen = {}
    for p in model.parameters():
        if trainable_only and not p.requires_grad:
            continue
        seen[id(p)] = p.numel()
    return sum(seen.values())


def get_complexity(model: nn.Module,
                   input_shape: Union[Sequence[int], None] = (3, 224, 224),
                   inputs: Optional[Union[Tensor, Tuple]] = None,
                   forward: Optional[Callable] = None) -> Dict[str, object]:
    """FLOPs (MACs, attention counted) and params of one forward pass.

    Args:
        model: any module; evaluated in eval mode under ``no_grad`` and restored afterwards.
        input_shape: shape of one sample without the batch dim, e.g. ``(3, 224, 224)``;
            a zero batch of size 1 is built from it unless ``inputs`` is given.
        inputs: explicit input tensor (or tuple of positional args).
        forward: callable ``forward(model, inputs)``; default ``model(inputs)``.

    Returns:
        ``dict(flops=int, params=int, by_op={op: MACs})`` for one forward pass.
    """
    if inputs is None:
        if input_shape is None:
            raise ValueError('get_complexity needs input_shape or inputs')
        param = next(model.parameters(), None)
        device = param.device if param is not None else 'cpu'
        inputs = torch.zeros((1, *input_shape), device=device)
    was_training = model.training
    model.eval()
    counter = FlopCounter()
    try:
        # Python dispatch modes see nothing under inference_mode: leave it for the count.
        with torch.inference_mode(False), torch.no_grad(), counter:
            if forward is not None:
                forward(model, inputs)
            elif isinstance(inputs, tuple):
                model(*inputs)
            else:
                model(inputs)
    finally:
        model.train(was_training)
    return dict(flops=counter.total, params=count_params(model), by_op=dict(counter.by_op))
