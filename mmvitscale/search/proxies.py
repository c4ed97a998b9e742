"""Training-free architecture proxies of As-ViT (Chen et al., ICLR 2022), vectorised.

* **Trainability**: condition number ``kappa = lambda_max / lambda_min`` of the empirical NTK
  ``K = G G^T`` of one batch, where row ``i`` of ``G`` is the gradient of the summed pooled
  features of sample ``i`` w.r.t. the weight tensors. Lower is better.
* **Expressivity**: length distortion, ``sum_k ||d f(x(t_k)) / dt||`` over ``num_points``
  points of a circle ``x(t) = U [cos t, sin t]`` in input space, with every LayerNorm replaced
  by the identity. Higher is better.

Both are averaged over ``num_inits`` seeded random initialisations: a builder (a zero-argument
callable) is called under the seed and its model used as returned; a module is deep-copied and
re-initialised with its own ``init_weights()`` (modules without one are refused: PyTorch's
per-layer defaults are not the network's init and change the NTK several-fold).

Circle defaults and As-ViT's code (``lib/procedures/teg.py``): this module uses radius
``sqrt(numel)`` (the norm of a standard-normal image) and ``num_points`` distinct angles
``2 pi k / K``; the reference uses radius 1 and ``linspace(0, 2 pi, K)``, whose first and last
points coincide. ``radius=1.0, endpoint=True`` reproduces the reference. Length distortion is
not scale-free (LayerNorms are removed), so the radius changes values and can change rankings;
see README, "As-ViT proxies against the reference". Per-sample gradients come
from module hooks in one batched backward (or one ``vmap(grad(...))`` over the batch) and the
circle derivatives from one forward-mode ``jvp`` over all points for small inputs, or per point
by the double-backward trick for large ones (forward-mode through big attention maps is slower
on CPU), instead of the reference loops (``_ntk_condition_loop`` /
``_length_distortion_loop``, kept for benchmarks and tests).

Works on any backbone returning a tensor or a tuple of tensors (the last one is used): a 4-D
(or higher) map is averaged over its spatial dims, 3-D tokens over the tokens. The model is run
in eval mode on a copy; the caller's module is never modified.

Caveat of the "sum of features" readout: a final LayerNorm with unit gain and zero bias (its
value at init) makes ``sum(LN(x))`` constant, so every parameter before it gets a zero
gradient and only the norm's own gain shapes the NTK. Pool features that bypass the final norm
(e.g. ``ScaledViT(final_norm=False)``, ``ScaledPiT(out_type='avg_featmap')``) or add a head.
"""
import contextlib
import copy
import functools
import logging
import math
import warnings
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

logger = logging.getLogger(__name__)

ModelOrBuilder = Union[nn.Module, Callable[[], nn.Module]]
PARAM_SETS = ('weight', 'all')
LD_METHODS = ('auto', 'jvp', 'points')
# 'auto' length distortion: one batched jvp up to this many input elements per point, then
# per point by double backward (1 thread, 10 points, seconds jvp / per point: As-ViT seed
# topology 64 px 0.22 / 0.34, 128 px 1.04 / 0.96, 224 px 13.3 / 6.0; small ViT 64 px
# 0.35 / 0.43; small PiT 64 px 1.74 / 0.91, the one case this threshold gets wrong)
LD_JVP_MAX_NUMEL = 3 * 96 * 96

__all__ = ['ntk_condition', 'length_distortion', 'score_proxies', 'pool_features',
           'proxy_timing', 'check_batch_size', 'check_radius']


# ---------------------------------------------------------------------------- helpers
def pool_features(out: Union[Tensor, Sequence[Tensor]]) -> Tensor:
    """Backbone output -> one ``(B, C)`` feature vector per sample.

    Takes the last element of a tuple / list; averages a ``(B, C, H, W, ...)`` map over its
    spatial dims and ``(B, N, C)`` tokens over the tokens.
    """
    if isinstance(out, (tuple, list)):
        if not out:
            raise ValueError('the model returned an empty sequence')
        out = out[-1]
    if not isinstance(out, Tensor):
        raise TypeError(f'the model must return a tensor or a tuple of tensors, got '
                        f'{type(out).__name__}')
    if out.ndim >= 4:
        return out.flatten(2).mean(dim=2)
    if out.ndim == 3:
        return out.mean(dim=1)
    if out.ndim == 2:
        return out
    raise ValueError(f'cannot pool an output of shape {tuple(out.shape)} (needs a batch dim)')


@contextlib.contextmanager
def _quiet_init() -> Iterator[None]:
    """Silence mmengine's per-parameter init report and repeated-init warnings."""
    try:
        from mmengine.logging import MMLogger
        mm_logger = MMLogger.get_current_instance()
    except Exception:  # pragma: no cover - mmengine missing or unusable
        mm_logger = None
    level = mm_logger.level if mm_logger is not None else None
    if mm_logger is not None:
        mm_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            yield
    finally:
        if mm_logger is not None:
            mm_logger.setLevel(level)


def _reinit(model: nn.Module) -> None:
    """Fresh random init in place: ``reset_parameters`` everywhere (the construction-time
    init, e.g. of convs the network's init leaves alone), then the model's ``init_weights``."""
    if not callable(getattr(model, 'init_weights', None)):
        name = type(model).__name__
        raise TypeError(
            f'model_or_builder is a {name} module without init_weights(): the proxies '
            f're-initialise a module per seed and would fall back to PyTorch\'s per-layer '
            f'defaults, not the network\'s own init. Pass a builder instead, a zero-argument '
            f'callable returning a freshly initialised model (e.g. lambda: {name}(...)), or '
            f'give {name} an init_weights() method')
    for m in model.modules():
        if callable(getattr(m, 'reset_parameters', None)):
            m.reset_parameters()
    for m in model.modules():  # mmengine skips modules it believes are initialised
        if hasattr(m, '_is_init'):
            m._is_init = False
    model.init_weights()


def _model_for_init(model_or_builder: ModelOrBuilder, seed: int) -> nn.Module:
    """A private, eval-mode model seeded with ``seed`` (global RNG state left untouched).

    A builder is called with the seed set and its model is used as returned (so the builder
    decides the init); a module is deep-copied and re-initialised (:func:`_reinit`).
    """
    with torch.random.fork_rng(devices=[]), _quiet_init():
        torch.manual_seed(seed)
        if isinstance(model_or_builder, nn.Module):
            model = copy.deepcopy(model_or_builder)
            _reinit(model)
        elif callable(model_or_builder):
            model = model_or_builder()
            if not isinstance(model, nn.Module):
                raise TypeError(f'the builder must return an nn.Module, got '
                                f'{type(model).__name__}')
        else:
            raise TypeError('model_or_builder must be an nn.Module or a callable returning one')
    return model.eval()


def _strip_layernorms(model: nn.Module) -> nn.Module:
    """Replace every ``nn.LayerNorm`` of ``model`` (a private copy) by ``nn.Identity``."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.LayerNorm):
            setattr(model, name, nn.Identity())
        else:
            _strip_layernorms(child)
    return model


def _select_params(model: nn.Module, params: str) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """(differentiated, constant) parameter dicts; ``'weight'`` keeps names with ``weight`` in
    their last component (As-ViT / TE-NAS convention), ``'all'`` every trainable tensor."""
    if params not in PARAM_SETS:
        raise ValueError(f'params must be one of {PARAM_SETS}, got {params!r}')
    chosen, const = {}, {}
    for name, p in model.named_parameters():
        keep = p.requires_grad and (params == 'all' or 'weight' in name.rsplit('.', 1)[-1])
        (chosen if keep else const)[name] = p.detach()
    if not chosen:
        raise ValueError(f'the model has no trainable parameters matching params={params!r}')
    const.update({name: b for name, b in model.named_buffers()})
    return chosen, const


def _math_attention():
    """Math SDPA: the fused CPU kernels have neither vmap batching rules (per-sample loops)
    nor forward-mode / double-backward derivatives."""
    return sdpa_kernel(SDPBackend.MATH)


def _model_dtype_device(model: nn.Module) -> Tuple[torch.dtype, torch.device]:
    for t in model.parameters():
        return t.dtype, t.device
    return torch.get_default_dtype(), torch.device('cpu')


def _condition_number(gram: Tensor) -> float:
    """``lambda_max / lambda_min`` of a symmetric PSD matrix; nan if broken, inf if singular."""
    if not torch.isfinite(gram).all():
        return float('nan')
    try:
        eig = torch.linalg.eigvalsh(gram)
    except RuntimeError:  # LinAlgError subclasses RuntimeError
        return float('nan')
    lo, hi = eig[0].item(), eig[-1].item()
    if not hi > 0:
        return float('nan')  # all-zero gradients: no information at all
    return hi / lo if lo > 0 else float('inf')


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')


def _average(values: List[float], what: str) -> float:
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        logger.warning('%s: %d of %d initialisations gave a non-finite value (%s); the '
                       'architecture is probably broken', what, len(bad), len(values),
                       ', '.join(sorted({str(v) for v in bad})))
    return sum(values) / len(values)


def _autograd_on(fn: Callable) -> Callable:
    """Run ``fn`` with autograd available whatever the caller's mode (``no_grad``,
    ``inference_mode``): the transforms need it, and with grad mode off ``fused_linear``'s
    oneDNN fast path would silently drop forward-mode tangents."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False), torch.enable_grad():
            return fn(*args, **kwargs)

    return wrapper


def check_batch_size(batch_size: int, what: str = 'batch_size') -> None:
    """``ValueError`` naming ``what`` unless ``batch_size`` is an int >= 2 (the NTK needs it)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f'{what} must be an integer >= 2 for the NTK condition number (a '
                         f'1x1 NTK has condition number 1.0 whatever the network), got '
                         f'{batch_size!r}')


def _make_inputs(inputs: Union[Tensor, Sequence[int]], seed: int) -> Tensor:
    """The NTK batch: ``inputs`` itself (checked: >= 2 samples, finite) or a standard-normal
    batch of shape ``inputs`` drawn with ``seed``."""
    if isinstance(inputs, Tensor):
        if inputs.ndim < 1:
            raise ValueError(f'inputs must have a batch dim, got a {inputs.ndim}-D tensor')
        check_batch_size(inputs.shape[0], f'the batch size of inputs (shape '
                         f'{tuple(inputs.shape)})')
        if inputs.is_floating_point() or inputs.is_complex():
            bad = int((~torch.isfinite(inputs)).sum())
            if bad:
                raise ValueError(f'inputs (shape {tuple(inputs.shape)}) contain {bad} NaN / '
                                 'inf values; the proxies need a finite batch (this is bad '
                                 'input, not a broken architecture)')
        return inputs.clone() if inputs.is_inference() else inputs
    shape = tuple(int(s) for s in inputs)
    if not shape:
        raise ValueError('inputs must be a tensor or a non-empty shape, got ()')
    check_batch_size(shape[0], f'batch_size (inputs shape {shape})')
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen)


def check_radius(radius: Optional[float]) -> None:
    """``ValueError`` unless ``radius`` is None or a finite positive number."""
    if radius is not None and (isinstance(radius, bool) or not isinstance(radius, (int, float))
                               or not math.isfinite(radius) or radius <= 0):
        raise ValueError(f'radius must be a finite positive number or None (sqrt(numel)), '
                         f'got {radius!r}')


def _circle(input_shape: Sequence[int], num_points: int, radius: Optional[float],
            seed: int, endpoint: bool = False) -> Tuple[Tensor, Tensor]:
    """Points ``x(t_k)`` and tangents ``dx/dt`` of a random circle, both ``(K, *shape)``;
    ``t_k = 2 pi k / K`` or, with ``endpoint``, ``linspace(0, 2 pi, K)`` (the reference's)."""
    shape = tuple(int(s) for s in input_shape)
    dim = math.prod(shape)
    if dim < 2:
        raise ValueError(f'input_shape {shape} needs at least two elements')
    check_radius(radius)
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, 2, generator=gen, dtype=torch.float64))
    basis = basis * (math.sqrt(dim) if radius is None else float(radius))
    if endpoint:
        t = torch.linspace(0, 2 * math.pi, num_points, dtype=torch.float64)
    else:
        t = torch.arange(num_points, dtype=torch.float64) * (2 * math.pi / num_points)
    points = torch.stack([t.cos(), t.sin()], dim=1) @ basis.T
    tangents = torch.stack([-t.sin(), t.cos()], dim=1) @ basis.T
    return points.reshape(num_points, *shape), tangents.reshape(num_points, *shape)


# ---------------------------------------------------------------------------- trainability
NTK_METHODS = ('auto', 'hooks', 'vmap')
_HOOKED = (nn.Linear, nn.Conv2d, nn.LayerNorm)


def _hook_plan(model: nn.Module, chosen: Dict[str, Tensor]) -> Optional[Dict[str, nn.Module]]:
    """``{module name: module}`` owning every chosen tensor when each is the weight or bias of
    a plain ``nn.Linear``, ``nn.Conv2d`` (zero padding, one group) or ``nn.LayerNorm``, whose
    per-sample gradients follow from its input and output gradient; else ``None``."""
    modules = dict(model.named_modules())
    plan: Dict[str, nn.Module] = {}
    for name in chosen:
        owner, _, attr = name.rpartition('.')
        m = modules.get(owner)
        if attr not in ('weight', 'bias') or type(m) not in _HOOKED:
            return None
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != 'zeros'
                                         or isinstance(m.padding, str)):
            return None
        if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) != 1:
            return None
        plan[owner] = m
    return plan


def _rows(m: nn.Module, x: Tensor, delta: Tensor, batch: int) -> Tuple[Tensor, Tensor]:
    """Inputs ``(B, T, I)`` and output gradients ``(B, T, O)`` of one call of a Linear or a
    Conv2d (unfolded), rows of a sample contiguous (the leading dim is ``batch`` or
    ``batch * k``, sample-major: windows, frames)."""
    if isinstance(m, nn.Conv2d):
        cols = F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)
        x = cols.transpose(1, 2).reshape(batch, -1, cols.shape[1])
        return x, delta.flatten(2).transpose(1, 2).reshape(batch, -1, delta.shape[1])
    return x.reshape(batch, -1, x.shape[-1]), delta.reshape(batch, -1, delta.shape[-1])


def _per_sample(m: nn.Module, x: Tensor, delta: Tensor, batch: int) -> Dict[str, Tensor]:
    """Per-sample ``{'weight': (B, ...), 'bias': (B, ...)}`` gradients of one call of ``m``
    with input ``x`` and output gradient ``delta`` (rows as in :func:`_rows`)."""
    if isinstance(m, nn.LayerNorm):
        x = F.layer_norm(x, m.normalized_shape, eps=m.eps)  # x-hat: no affine
        x, delta = x.reshape(batch, -1, x.shape[-1]), delta.reshape(batch, -1, x.shape[-1])
        return dict(weight=(delta * x).sum(1), bias=delta.sum(1))
    x, delta = _rows(m, x, delta, batch)
    w = torch.einsum('bto,bti->boi', delta, x).reshape(batch, *m.weight.shape)
    return dict(weight=w, bias=delta.sum(1))


GHOST_MAX_ROWS = 2048  # batch x tokens of one call whose (rows x rows) Gram may be formed


def _ghost_pays(x: Tensor, delta: Tensor) -> bool:
    """Whether the weight-gradient Gram of one call is cheaper from its rows
    (:func:`_ghost_gram`, ``(B T)^2 (I + O)``) than from per-sample gradients (``B T I O``)."""
    b, t, i = x.shape
    o = delta.shape[-1]
    return b * t <= GHOST_MAX_ROWS and b * t * (i + o) < i * o


def _ghost_gram(x: Tensor, delta: Tensor) -> Tensor:
    """float64 Gram of the per-sample weight gradients ``G_b = sum_t delta_bt x_bt^T`` without
    forming them: ``<G_a, G_b> = sum_{t, s} (delta_at . delta_bs) (x_at . x_bs)``."""
    b, t = x.shape[:2]
    xr, dr = x.reshape(b * t, -1).double(), delta.reshape(b * t, -1).double()
    return (dr @ dr.T).mul_(xr @ xr.T).reshape(b, t, b, t).sum(dim=(1, 3))


def _ntk_gram_hooks(model: nn.Module, inputs: Tensor, chosen: Dict[str, Tensor],
                    plan: Dict[str, nn.Module], verify: bool = True) -> Optional[Tensor]:
    """float64 ``G G^T`` from one batched forward and one backward: per-sample gradients of
    Linear / Conv2d / LayerNorm tensors from their inputs and output gradients (as Opacus /
    BackPACK do). ``None`` when the model is not sample-separable this way (a module's leading
    dim not a multiple of the batch, a tensor never used, or, with ``verify``, samples mixed:
    checked against the exact gradient of sample 0's features, one extra backward) Without
    ``verify``, the Gram of a Linear / Conv2d weight called once comes from its rows where that
    is cheaper (:func:`_ghost_gram`: few tokens, wide layers)."""
    batch = inputs.shape[0]
    calls: List[Tuple[str, Tensor, Tensor]] = []
    handles = [m.register_forward_hook(
        lambda mod, args, out, name=name: calls.append((name, args[0] if args else None, out)))
        for name, m in plan.items()]
    try:
        pooled = pool_features(model(inputs))
    finally:
        for h in handles:
            h.remove()
    if pooled.shape[0] != batch or not calls or any(
            not torch.is_tensor(x) or x.shape[0] % batch or not out.requires_grad
            for _, x, out in calls):
        return None
    deltas = torch.autograd.grad(pooled.sum(), [out for _, _, out in calls],
                                 retain_graph=verify, allow_unused=True)
    grads: Dict[str, Tensor] = {}
    ghost = inputs.new_zeros((batch, batch), dtype=torch.float64)
    ghosted = set()  # weights whose Gram came from their rows (one call each, not verified)
    uses = {owner: sum(c[0] == owner for c in calls) for owner in plan}
    for (owner, x, out), delta in zip(calls, deltas):
        if delta is None:
            continue
        m, key = plan[owner], f'{owner}.weight'
        if (not verify and uses[owner] == 1 and key in chosen
                and isinstance(m, (nn.Linear, nn.Conv2d))):
            rows, drows = _rows(m, x.detach(), delta, batch)
            if _ghost_pays(rows, drows):
                ghost += _ghost_gram(rows, drows)
                ghosted.add(key)
                if f'{owner}.bias' in chosen:
                    grads[f'{owner}.bias'] = drows.sum(1)
                continue
        for attr, g in _per_sample(m, x.detach(), delta, batch).items():
            key = f'{owner}.{attr}'
            if key in chosen:
                grads[key] = grads[key] + g if key in grads else g
    if set(grads) | ghosted != set(chosen):
        return None
    names = list(chosen)
    tensors = dict(model.named_parameters())
    # sample 0 from the graph itself: catches models that mix samples or reorder rows
    exact = torch.autograd.grad(pooled[0].sum(), [tensors[n] for n in names],
                                allow_unused=True) if verify else ()
    for n, e in zip(names, exact):
        e = torch.zeros_like(tensors[n]) if e is None else e
        scale = float(e.abs().nan_to_num(0.0, 0.0, 0.0).max()) if e.numel() else 0.0
        if not torch.allclose(grads[n][0], e, rtol=1e-3, atol=1e-6 * scale + 1e-30,
                              equal_nan=True):
            logger.debug('ntk_condition: per-sample gradients by hooks disagree on %s; '
                         'falling back to vmap', n)
            return None
    gram = ghost
    for n in names:
        if n not in ghosted:
            g = grads.pop(n).reshape(batch, -1).double()
            gram += g @ g.T
    return gram


def _ntk_gram(model: nn.Module, inputs: Tensor, params: str, max_numel: int,
              method: str = 'auto', verify: bool = True) -> Tuple[Tensor, str]:
    """float64 ``G G^T`` of the per-sample gradients and the method used.

    ``method='auto'`` tries :func:`_ntk_gram_hooks` (one batched forward and backward;
    ``verify``: check it on sample 0) and falls back to ``'vmap'``: one ``vmap(grad)`` per
    parameter group.

    Parameters are split into groups whose per-sample gradients hold at most ``max_numel``
    elements, so ``G`` is never materialised as a whole; the Gram matrix accumulates
    ``g g^T`` tensor by tensor.
    """
    if method not in NTK_METHODS:
        raise ValueError(f'method must be one of {NTK_METHODS}, got {method!r}')
    chosen, const = _select_params(model, params)
    if method != 'vmap':
        plan = _hook_plan(model, chosen)
        x = inputs.detach().requires_grad_(False)
        # the check runs on 2 samples (an eighth of the cost of checking the whole batch)
        ok = plan is not None and (not verify or _ntk_gram_hooks(model, x[:2], chosen, plan,
                                                                 verify=True) is not None)
        gram = _ntk_gram_hooks(model, x, chosen, plan, verify=False) if ok else None
        if gram is not None:
            return gram, 'hooks'
        if method == 'hooks':
            raise ValueError('method=\'hooks\': the model\'s per-sample gradients do not follow '
                             'from Linear / Conv2d / LayerNorm hooks (other tensors, or '
                             'samples mixed); use method=\'vmap\' or \'auto\'')
    batch = inputs.shape[0]
    groups, group, size = [], [], 0
    for name, p in chosen.items():
        if group and size + batch * p.numel() > max_numel:
            groups.append(group)
            group, size = [], 0
        group.append(name)
        size += batch * p.numel()
    groups.append(group)

    gram = inputs.new_zeros((batch, batch), dtype=torch.float64)
    for names in groups:
        diff = {n: chosen[n] for n in names}
        fixed = {**const, **{n: p for n, p in chosen.items() if n not in diff}}

        def summed(p: Dict[str, Tensor], x: Tensor) -> Tensor:
            out = functional_call(model, {**fixed, **p}, (x.unsqueeze(0), ))
            return pool_features(out).sum()

        with _math_attention():
            grads = vmap(grad(summed), in_dims=(None, 0))(diff, inputs)
        for g in grads.values():
            g = g.reshape(batch, -1).double()
            gram += g @ g.T
        del grads
    return gram, 'vmap'


@_autograd_on
def ntk_condition(model_or_builder: ModelOrBuilder, inputs: Union[Tensor, Sequence[int]],
                  num_inits: int = 5, seed: int = 0, params: str = 'weight',
                  max_numel: int = 2**26, method: str = 'auto') -> float:
    """Mean condition number of the empirical NTK over ``num_inits`` seeded initialisations.

    Args:
        model_or_builder: a backbone with ``init_weights()`` (deep-copied and re-initialised
            with it per init, seed ``seed + i``) or a zero-argument callable building an
            initialised one (called with the global seed set to ``seed + i``).
        inputs: one finite batch ``(B, C, H, W)`` with ``B >= 2`` (As-ViT uses B=16), or its
            shape to draw a standard-normal batch seeded with ``seed``; ``ValueError``
            otherwise (NaN / inf inputs are bad input, not a broken architecture).
        params: ``'weight'`` (tensors named ``*weight*``, as As-ViT) or ``'all'``.
        max_numel: cap on per-sample-gradient elements held at once (memory knob, vmap).
        method: ``'hooks'``: one batched forward and backward, per-sample gradients of
            Linear / Conv2d / LayerNorm tensors from their inputs and output gradients
            (checked against sample 0's exact gradient); ``'vmap'``: ``vmap(grad)`` per
            sample, any model; ``'auto'``: hooks when they apply, else vmap.

    Returns:
        ``kappa`` (lower is better); ``inf`` for a singular NTK and ``nan`` for non-finite
        gradients, each logged as a warning, never raised.
    """
    _check_count('num_inits', num_inits)
    if method not in NTK_METHODS:
        raise ValueError(f'method must be one of {NTK_METHODS}, got {method!r}')
    inputs = _make_inputs(inputs, seed)
    values = []
    for i in range(num_inits):
        model = _model_for_init(model_or_builder, seed + i)
        dtype, device = _model_dtype_device(model)
        # the architecture is the same for every init: check the hooks once, then keep the
        # method that worked
        gram, method = _ntk_gram(model, inputs.to(device, dtype), params, max_numel, method,
                                 verify=i == 0)
        values.append(_condition_number(gram))
    return _average(values, 'ntk_condition')


@_autograd_on
def _ntk_condition_loop(model_or_builder: ModelOrBuilder, inputs: Union[Tensor, Sequence[int]],
                        num_inits: int = 5, seed: int = 0, params: str = 'weight') -> float:
    """Reference of :func:`ntk_condition` as in the public As-ViT / TE-NAS code: one forward of
    the batch, then one backward pass per sample through the retained graph."""
    _check_count('num_inits', num_inits)
    inputs = _make_inputs(inputs, seed)
    values = []
    for i in range(num_inits):
        model = _model_for_init(model_or_builder, seed + i)
        dtype, device = _model_dtype_device(model)
        tensors = dict(model.named_parameters())
        weights = [tensors[n] for n in _select_params(model, params)[0]]
        pooled = pool_features(model(inputs.to(device, dtype)))
        rows = []
        for b in range(pooled.shape[0]):
            grads = torch.autograd.grad(pooled[b].sum(), weights, retain_graph=True,
                                        allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(w) if g is None else g).reshape(-1)
                                   for g, w in zip(grads, weights)]))
        full = torch.stack(rows).double()
        values.append(_condition_number(full @ full.T))
    return _average(values, 'ntk_condition_loop')


# ---------------------------------------------------------------------------- expressivity
def _derivatives_per_point(model: nn.Module, points: Tensor, tangents: Tensor) -> Tensor:
    """``J f(x_k) v_k`` per point, each by the double-backward trick: ``u -> J^T u`` is
    linear, so the gradient of ``<J^T u, v>`` w.r.t. ``u`` is ``J v`` (reverse mode only)."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        rows = []
        for x, v in zip(points, tangents):
            x = x.unsqueeze(0).requires_grad_(True)
            y = pool_features(model(x))
            u = torch.zeros_like(y, requires_grad=True)
            (g, ) = torch.autograd.grad(y, x, grad_outputs=u, create_graph=True)
            (d, ) = torch.autograd.grad(g, u, grad_outputs=v.unsqueeze(0))
            rows.append(d)
        return torch.cat(rows)
    finally:
        for p in frozen:
            p.requires_grad_(True)


@_autograd_on
def length_distortion(model_or_builder: ModelOrBuilder, input_shape: Sequence[int],
                      num_points: int = 10, num_inits: int = 5, seed: int = 0,
                      radius: Optional[float] = None, endpoint: bool = False,
                      method: str = 'auto') -> float:
    """Mean length distortion of a random input circle over ``num_inits`` initialisations.

    Each init ``i`` (model seeded as in :func:`ntk_condition`) draws two orthonormal
    directions ``U`` of the flattened input space with seed ``seed + i``, scaled to
    ``radius`` (default ``sqrt(numel)``, the norm of a standard-normal image), strips the
    LayerNorms of its private copy and returns ``sum_k ||J f(x(t_k)) dx/dt(t_k)||`` for
    ``t_k = 2 pi k / num_points``, all points in one forward-mode ``jvp``.

    Args:
        input_shape: one sample's shape, e.g. ``(3, 32, 32)``.
        radius: circle radius; ``1.0`` is As-ViT's code (see the module docstring).
        endpoint: ``t_k = linspace(0, 2 pi, num_points)`` as As-ViT's code (first and last
            points coincide) instead of ``num_points`` distinct angles.
        method: ``'jvp'``: all points in one forward-mode ``jvp``; ``'points'``: one point at a
            time by double backward; ``'auto'``: ``'jvp'`` up to :data:`LD_JVP_MAX_NUMEL`
            input elements per point, else ``'points'`` (same value to float rounding).

    Returns:
        The distortion (higher is better); ``nan`` / ``inf`` for a broken model (logged).
    """
    _check_count('num_inits', num_inits)
    _check_count('num_points', num_points)
    if method not in LD_METHODS:
        raise ValueError(f'method must be one of {LD_METHODS}, got {method!r}')
    if method == 'auto':
        method = 'jvp' if math.prod(input_shape) <= LD_JVP_MAX_NUMEL else 'points'
    values = []
    for i in range(num_inits):
        model = _strip_layernorms(_model_for_init(model_or_builder, seed + i))
        dtype, device = _model_dtype_device(model)
        points, tangents = _circle(input_shape, num_points, radius, seed + i, endpoint)
        points, tangents = points.to(device, dtype), tangents.to(device, dtype)
        if method == 'points':
            with _math_attention():  # the fused attention kernels have no double backward
                deriv = _derivatives_per_point(model, points, tangents)
        else:
            state = {n: t.detach() for n, t in model.named_parameters()}
            state.update(model.named_buffers())

            def features(x: Tensor) -> Tensor:
                return pool_features(functional_call(model, state, (x, )))

            with _math_attention():  # grad mode is on (see _autograd_on)
                _, deriv = jvp(features, (points, ), (tangents, ))
        values.append(deriv.double().flatten(1).norm(dim=1).sum().item())
    return _average(values, 'length_distortion')


@_autograd_on
def _length_distortion_loop(model_or_builder: ModelOrBuilder, input_shape: Sequence[int],
                            num_points: int = 10, num_inits: int = 5, seed: int = 0,
                            radius: Optional[float] = None, endpoint: bool = False) -> float:
    """Reference of :func:`length_distortion`: one point at a time, each derivative by the
    double-backward trick of ``torch.autograd.functional.jvp``."""
    _check_count('num_inits', num_inits)
    _check_count('num_points', num_points)
    values = []
    for i in range(num_inits):
        model = _strip_layernorms(_model_for_init(model_or_builder, seed + i))
        dtype, device = _model_dtype_device(model)
        points, tangents = _circle(input_shape, num_points, radius, seed + i, endpoint)
        total = 0.0
        with _math_attention():  # the fused attention kernel has no double backward
            for x, v in zip(points.to(device, dtype), tangents.to(device, dtype)):
                _, deriv = torch.autograd.functional.jvp(
                    lambda z: pool_features(model(z)), x.unsqueeze(0), v.unsqueeze(0))
                total += deriv.double().norm().item()
        values.append(total)
    return _average(values, 'length_distortion_loop')


# ---------------------------------------------------------------------------- both
def score_proxies(model_or_builder: ModelOrBuilder, input_shape: Sequence[int],
                  batch_size: int = 16, inputs: Optional[Tensor] = None, num_points: int = 10,
                  num_inits: int = 5, seed: int = 0, params: str = 'weight',
                  radius: Optional[float] = None, endpoint: bool = False) -> Dict[str, float]:
    """Both As-ViT proxies: ``{'ntk_condition': kappa, 'length_distortion': L}``.

    ``inputs`` defaults to a standard-normal ``(batch_size, *input_shape)`` batch drawn with
    ``seed``; ``batch_size`` must be at least 2 (a 1x1 NTK always has condition number 1).
    ``radius`` / ``endpoint``: the circle of :func:`length_distortion`.
    """
    if inputs is None:
        check_batch_size(batch_size)
    batch = inputs if inputs is not None else (batch_size, *input_shape)
    check_radius(radius)
    kappa = ntk_condition(model_or_builder, batch, num_inits, seed, params)
    length = length_distortion(model_or_builder, input_shape, num_points, num_inits, seed,
                               radius, endpoint)
    return dict(ntk_condition=kappa, length_distortion=length)


# ---------------------------------------------------------------------------- cost
def _sync_for(model: nn.Module) -> Callable[[], None]:
    _, device = _model_dtype_device(model)
    if device.type == 'cuda':
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@_autograd_on
def proxy_timing(builder: Callable[[], nn.Module], input_shape: Sequence[int],
                 batch_size: int = 16, num_points: int = 10, num_inits: int = 1, seed: int = 0,
                 rounds: int = 3, radius: Optional[float] = None,
                 endpoint: bool = False) -> Dict[str, float]:
    """Seconds of both proxies against the network's own forward + backward, one process.

    Each round times, in this order, :func:`ntk_condition` (``batch_size`` inputs),
    :func:`length_distortion` (``num_points`` points) and one forward + backward of the same
    batch through a model from ``builder`` (eval mode, the summed pooled features as the loss,
    parameter gradients), so machine drift hits all three alike; one untimed round warms up.
    Returns the proxies' values, the median seconds of each (``ntk_s``, ``ld_s``, their sum
    ``proxies_s``, ``fwd_bwd_s``) and ``ratio = proxies_s / (num_inits * fwd_bwd_s)``: the
    proxies' cost in units of the forward + backward they cannot avoid (one per init).
    """
    check_batch_size(batch_size)
    _check_count('rounds', rounds)
    import statistics
    import time
    shape = tuple(int(s) for s in input_shape)
    inputs = _make_inputs((batch_size, *shape), seed)
    net = _model_for_init(builder, seed)
    dtype, device = _model_dtype_device(net)
    x = inputs.to(device, dtype)
    sync = _sync_for(net)
    params = [p for p in net.parameters() if p.requires_grad]

    def fwd_bwd() -> float:
        for p in params:
            p.grad = None
        pool_features(net(x)).sum().backward()
        return 0.0

    fns = dict(ntk=lambda: ntk_condition(builder, inputs, num_inits, seed),
               ld=lambda: length_distortion(builder, shape, num_points, num_inits, seed,
                                            radius, endpoint),
               fwd_bwd=fwd_bwd)
    times: Dict[str, List[float]] = {k: [] for k in fns}
    values: Dict[str, float] = {}
    for r in range(rounds + 1):
        for key, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            values[key] = fn()
            sync()
            if r:  # round 0 warms up
                times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    proxies_s = med['ntk'] + med['ld']
    return dict(ntk_condition=values['ntk'], length_distortion=values['ld'],
                ntk_s=med['ntk'], ld_s=med['ld'], proxies_s=proxies_s,
                fwd_bwd_s=med['fwd_bwd'], ratio=proxies_s / (num_inits * med['fwd_bwd']),
                rounds=rounds, threads=torch.get_num_threads(), device=str(device))
