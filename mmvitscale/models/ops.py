"""Low-level ops shared by every backbone: drop path, the fused linear fast path and its
``eager_linear`` switch, and :class:`TokenGrid` (the per-forward token layout). Imports no model
module, so attention types and blocks can both build on it without an import cycle."""
import contextlib
import contextvars
from typing import Iterator, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth per sample (identity at eval or ``p == 0``)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0], ) + (1, ) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Module wrapper of :func:`drop_path`."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f'p={self.p}'


def _has_onednn_linear() -> bool:
    try:
        return (torch.backends.mkldnn.is_available()
                and hasattr(torch.ops.mkldnn, '_linear_pointwise'))
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


_ONEDNN_LINEAR = _has_onednn_linear()
# True inside eager_linear(): fused_linear's fast path is off. A context variable: each thread
# (and asyncio task) has its own value, so one thread exporting does not slow another down.
_EAGER_LINEAR = contextvars.ContextVar('mmvitscale_eager_linear', default=False)


@contextlib.contextmanager
def eager_linear() -> Iterator[None]:
    """Inside the block, :func:`fused_linear` runs the plain ops (no oneDNN fast path).

    For exporters and tracers that must only see standard ATen ops (``torch.export``, ONNX
    export). TorchScript tracing (``torch.jit.trace``, ``torch.onnx.export(dynamo=False)``)
    turns the fast path off by itself. Applies to the current thread only; nests.
    """
    token = _EAGER_LINEAR.set(True)
    try:
        yield
    finally:
        _EAGER_LINEAR.reset(token)


class TokenGrid(NamedTuple):
    """Layout of a token sequence, passed to the blocks with each forward: ``prefix`` leading
    tokens (class / distillation) then ``frames`` consecutive ``h x w`` grids, row-major.
    Attention that mixes along the grid (linear-angular) needs it; softmax ignores it."""

    h: int
    w: int
    prefix: int = 0


def _no_transforms_active() -> bool:
    """No torch.func transform (vmap / grad / jvp) and no forward-mode AD level is active.

    oneDNN's linear has no batching or forward-AD rules; under those it would silently drop
    tangents, so the fast path must stay off there.
    """
    try:
        from torch._C._functorch import peek_interpreter_stack
        from torch.autograd.forward_ad import _current_level
    except ImportError:  # pragma: no cover - other torch versions: be conservative
        return False
    return peek_interpreter_stack() is None and _current_level < 0


def _fast_path(x: Tensor, weight: Tensor, gelu: bool, residual: Optional[Tensor]) -> bool:
    """Whether oneDNN's fused linear may run (see :func:`fused_linear`). Never while
    torch.compile traces: inductor's oneDNN lowering asserts on a weight that is not a graph
    constant, and it fuses the plain ops itself."""
    return (_ONEDNN_LINEAR and not torch.is_grad_enabled() and x.device.type == 'cpu'
            and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not (gelu and residual is not None) and not _EAGER_LINEAR.get()
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
            and _no_transforms_active())


def fused_linear(x: Tensor, layer: nn.Linear, gelu: bool = False,
                 residual: Optional[Tensor] = None) -> Tensor:
    """``layer(x)``, then exact GELU when ``gelu``, plus ``residual`` when given.

    Inference fast path: on CPU float32 with autograd off, oneDNN's linear adds the bias, the
    GELU or the residual inside the GEMM (post-ops) instead of copying the bias into the output
    first (``addmm``) and running GELU / the residual add as extra memory passes. Values agree
    with the eager ops to float rounding; anywhere else (autograd on, torch.func transforms or
    forward-mode AD, GPU, other dtypes, TorchScript tracing, inside :func:`eager_linear`) the
    eager ops run.
    """
    if _fast_path(x, layer.weight, gelu, residual):
        if residual is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, layer.weight,
                                                             layer.bias, 'add')
        if gelu:
            return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, 'gelu', [],
                                                      'none')
        return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, 'none', [], '')
    x = layer(x)
    if gelu:
        x = F.gelu(x)
    return x if residual is None else x.add_(residual)


def _hooked(module: nn.Module) -> bool:
    from torch.nn.modules import module as torch_module
    return bool(module._forward_hooks or module._forward_pre_hooks
                or torch_module._global_forward_hooks
                or torch_module._global_forward_pre_hooks)


def patchify(x: Tensor, conv: nn.Conv2d) -> Tuple[Tensor, Tuple[int, int]]:
    """Tokens ``(B, h*w, D)`` of ``conv(x)`` and their grid ``(h, w)``.

    A non-overlapping patch conv (stride equal to the kernel, no padding, dilation or groups)
    runs as one linear layer over the flattened patches, with the conv's own weights: the same
    values to float rounding (border rows / columns that the conv drops are dropped), and on
    CPU a backward several times cheaper than the convolution's (5.3 -> 1.0 ms for the cls
    study's 7-px patches at batch 128). Any other conv (overlapping PiT / re-tokenized
    strides) runs as the conv, and so does a conv with forward hooks (they see its call) or
    under ``torch.compile`` (inductor's oneDNN lowering wants the weight as a graph constant).
    """
    k = conv.kernel_size
    if (x.dim() != 4 or conv.stride != k or conv.padding != (0, 0) or conv.dilation != (1, 1)
            or conv.groups != 1 or x.shape[2] < k[0] or x.shape[3] < k[1] or _hooked(conv)
            or torch.compiler.is_compiling()):  # inductor lowers the conv itself
        out = conv(x)
        return out.flatten(2).transpose(1, 2), (out.shape[2], out.shape[3])
    return patch_linear(x, conv.weight, conv.bias)


def patch_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]
                 ) -> Tuple[Tensor, Tuple[int, int]]:
    """Tokens ``(B, h*w, D)`` and grid of a non-overlapping patch conv given by its ``weight``
    ``(D, C, kh, kw)`` and ``bias``, as one linear layer over the flattened patches (the
    functional form of :func:`patchify`; border rows / columns beyond whole patches dropped)."""
    D, _, kh, kw = weight.shape
    B, C, H, W = x.shape
    h, w = H // kh, W // kw
    patches = x[:, :, :h * kh, :w * kw].reshape(B, C, h, kh, w, kw)
    patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(B, h * w, C * kh * kw)
    weight = weight.reshape(D, -1)
    if _fast_path(patches, weight, False, None):
        return torch.ops.mkldnn._linear_pointwise(patches, weight, bias, 'none', [], ''), (h, w)
    return F.linear(patches, weight, bias), (h, w)
