"""Fitting converted checkpoints to a model, the load hook and :func:`load_pretrained`.

Rules applied when a checkpoint's shape differs from the model's:

* resolution: position embeddings are resampled by the model's own load hook (after this one);
* depth: a deeper checkpoint loads its first N blocks (per stage for PiT), its final norm kept;
  a shallower one, or a PiT with another number of stages, is refused (``ValueError``);
* width (embed dims, MLP hidden size, patch size: any other tensor shape) is refused with a
  ``ValueError`` naming each mismatching key and both shapes;
* class token: a checkpoint with one loads into a model without (``with_cls_token=False``) by
  dropping it and its position row; the reverse is refused.

The number of heads is not stored in a checkpoint and cannot be checked.

Refused rather than loaded with a warning (each error names the file or the keys):

* an empty ``state_dict``;
* non-finite weights (NaN / inf), naming the tensors;
* a checkpoint that covers less than ``min_coverage`` (default :data:`MIN_COVERAGE`, 0.5) of
  the parameter elements of the module it loads into, naming the missing keys. The share
  counts the module being loaded: the backbone for a backbone checkpoint or ``init_cfg``
  ``Pretrained`` on a backbone, and for a whole-model checkpoint the top-level modules its
  keys reach (a classifier's ``backbone.*`` keys loaded into a detector cover its backbone;
  the detector's neck and head keep their initialisation);
* a head built for another number of classes (``num_classes``), unless the head is to be
  re-initialised (``reinit_head=True``: the head's keys are dropped and it keeps its init).

For ``load_from`` / ``tools/test.py`` both are set in the config:
``load_from_options = dict(min_coverage=0.5, reinit_head=False)`` (e.g. ``--cfg-options
load_from_options.reinit_head=True``); :func:`load_pretrained` takes them as arguments;
``init_cfg=dict(type='Pretrained')`` uses :data:`MIN_COVERAGE` unless run inside
:func:`min_coverage`.
"""
import contextlib
import re
from contextvars import ContextVar
from functools import partial
from typing import (Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Pattern, Sequence,
                    Tuple)

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from .safe_load import safe_torch_load
from .converters import StateDict, convert_state_dict, unwrap_checkpoint


class Layout(NamedTuple):
    """How a target's state dict is laid out, for fitting it to a model.

    ``block_key`` matches a block's keys (group ``block``; ``stage`` when staged);
    ``stage_key``: staged layouts only, matches any key of a stage (group 1: the stage), so
    stages without blocks count and the stage counts must match; ``pos_channels``:
    the channel axis of ``pos_embed`` (ViT ``(1, N, C)``: -1; PiT ``(1, C, H, W)``: 1);
    ``cls_token_optional``: a class token may be dropped for a model built without one.
    """

    block_key: Pattern
    stage_key: Optional[Pattern]
    pos_channels: int
    cls_token_optional: bool


LAYOUTS: Dict[str, Layout] = {
    'vit': Layout(re.compile(r'blocks\.(?P<block>\d+)\.'), stage_key=None, pos_channels=-1,
                  cls_token_optional=True),
    'pit': Layout(re.compile(r'transformers\.(?P<stage>\d+)\.blocks\.(?P<block>\d+)\.'),
                  stage_key=re.compile(r'transformers\.(\d+)\.'), pos_channels=1,
                  cls_token_optional=False),
}
_TARGET_ATTR = '_mmvitscale_checkpoint_target'
# A checkpoint must cover at least this share of the parameter elements of the module it
# loads into. A backbone checkpoint fitted to its model covers 100 % (deeper ones are
# truncated, position embeddings resampled); what falls short is another architecture, a wrong
# key prefix, or a file holding a few stray tensors, all of which would otherwise "load" with
# a warning and leave most of the model at its random initialisation. 0.5 leaves room for
# legitimately partial files (a checkpoint without its class token or some adapter) while
# refusing the file that would train or evaluate mostly from scratch.
MIN_COVERAGE = 0.5
_COVERAGE: ContextVar[float] = ContextVar('mmvitscale_min_coverage', default=MIN_COVERAGE)
LOAD_OPTIONS = ('min_coverage', 'reinit_head')


def _layout(target: str) -> Layout:
    if target not in LAYOUTS:
        raise ValueError(f'checkpoint fitting supports targets {tuple(LAYOUTS)}, got {target!r}')
    return LAYOUTS[target]


def _depths(keys, layout: Layout) -> Dict[int, int]:
    """Blocks per stage (unstaged: one stage, 0) found in ``keys``."""
    depths: Dict[int, int] = {}
    for key in keys:
        match = layout.block_key.match(key)
        if match:
            stage = int(match.groupdict().get('stage') or 0)
            depths[stage] = max(depths.get(stage, 0), int(match.group('block')) + 1)
    if layout.stage_key is not None:
        for key in keys:
            match = layout.stage_key.match(key)
            if match:
                depths.setdefault(int(match.group(1)), 0)
    return depths


def _fit_class_token(state_dict: StateDict, model_state: Mapping[str, Tensor]) -> None:
    if 'cls_token' in state_dict and 'cls_token' not in model_state:
        state_dict.pop('cls_token')
        if isinstance(state_dict.get('pos_embed'), Tensor):
            state_dict['pos_embed'] = state_dict['pos_embed'][:, 1:]
        print_log('checkpoint class token dropped: the model has with_cls_token=False',
                  logger='current')
    elif 'cls_token' in model_state and 'cls_token' not in state_dict:
        raise ValueError('the checkpoint has no cls_token but the model has one; build it with '
                         "with_cls_token=False (and out_type='featmap'/'avg_featmap'/'raw')")


def _where(layout: Layout, stage: int) -> str:
    return f' in stage {stage}' if layout.stage_key is not None else ''


def _fit_depth(state_dict: StateDict, model_state: Mapping[str, Tensor], layout: Layout) -> None:
    ckpt, model = _depths(state_dict, layout), _depths(model_state, layout)
    if layout.stage_key is not None and len(ckpt) != len(model):
        raise ValueError(f'the checkpoint has {len(ckpt)} stages, the model {len(model)}')
    for stage, depth in sorted(model.items()):
        have = ckpt.get(stage, 0)
        if have < depth:
            raise ValueError(f'the checkpoint has {have} blocks{_where(layout, stage)}, the model '
                             f'{depth}: a shallower checkpoint is refused')
    truncated = []
    for key in list(state_dict):
        match = layout.block_key.match(key)
        if match:
            stage = int(match.groupdict().get('stage') or 0)
            if int(match.group('block')) >= model[stage]:
                del state_dict[key]
                truncated.append(stage)
    if truncated:
        kept = ', '.join(f'{model[s]} of {ckpt[s]}{_where(layout, s)}'
                         for s in sorted(set(truncated)))
        print_log(f'checkpoint deeper than the model: loaded the first {kept} blocks',
                  logger='current')


def _pos_embed_channels(shape: Tuple[int, ...], layout: Layout) -> Tuple[int, ...]:
    """``pos_embed``'s shape without its token grid: its rank and channels."""
    if len(shape) < 2:
        return shape
    return len(shape), shape[layout.pos_channels]


def _check_shapes(state_dict: StateDict, model_state: Mapping[str, Tensor],
                  layout: Layout) -> None:
    bad: List[str] = []
    for key, value in state_dict.items():
        ref = model_state.get(key)
        if ref is None or not isinstance(value, Tensor):
            continue
        got, want = tuple(value.shape), tuple(ref.shape)
        if key == 'pos_embed':  # the token grid is resampled later: compare the channels
            same = _pos_embed_channels(got, layout) == _pos_embed_channels(want, layout)
        else:
            same = got == want
        if not same:
            bad.append(f'{key}: checkpoint {got} vs model {want}')
    if bad:
        raise ValueError('checkpoint does not fit the model (only depth and resolution are '
                         'adapted, not width):\n  ' + '\n  '.join(bad))


def fit_state_dict(state_dict: StateDict, model_state: Mapping[str, Tensor],
                   target: str) -> StateDict:
    """Adapt a converted state dict to a model's own ``state_dict()`` (see module rules)."""
    layout = _layout(target)
    state_dict = dict(state_dict)
    if layout.cls_token_optional:
        _fit_class_token(state_dict, model_state)
    _fit_depth(state_dict, model_state, layout)
    _check_shapes(state_dict, model_state, layout)
    return state_dict


def adapt_state_dict(checkpoint: Mapping, model: nn.Module, target: str,
                     fmt: Optional[str] = None) -> Tuple[StateDict, str]:
    """Convert ``checkpoint`` (any registered format, wrapped or not) and fit it to ``model``."""
    state_dict, fmt = convert_state_dict(checkpoint, target, fmt)
    return fit_state_dict(state_dict, model.state_dict(), target), fmt


# ----------------------------------------------------------------------------- load checks
def check_min_coverage(share: Any, name: str = 'min_coverage') -> float:
    """``share`` as a float in [0, 1]; ``ValueError`` naming ``name`` otherwise."""
    if (isinstance(share, bool) or not isinstance(share, (int, float))
            or not 0 <= share <= 1):
        raise ValueError(f'{name} must be a number in [0, 1] (a share of the parameter '
                         f'elements), got {share!r}')
    return float(share)


@contextlib.contextmanager
def min_coverage(share: float) -> Iterator[None]:
    """Within this block, ``init_cfg=dict(type='Pretrained')`` loads (and every other check
    that uses the default) need ``share`` instead of :data:`MIN_COVERAGE` (0 turns the check
    off)."""
    token = _COVERAGE.set(check_min_coverage(share))
    try:
        yield
    finally:
        _COVERAGE.reset(token)


def check_load_options(options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``load_from_options`` of a config as keyword arguments of :func:`fit_model_checkpoint`;
    ``ValueError`` naming an unknown key or a bad value."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(LOAD_OPTIONS))
    if unknown:
        raise ValueError(f'load_from_options: unknown key {unknown[0]!r} (known: '
                         f'{", ".join(LOAD_OPTIONS)})')
    if 'min_coverage' in options:
        check_min_coverage(options['min_coverage'], 'load_from_options.min_coverage')
    if not isinstance(options.get('reinit_head', False), bool):
        raise ValueError('load_from_options.reinit_head must be True or False, got '
                         f"{options['reinit_head']!r}")
    return options


def _has_weights(checkpoint: Any) -> bool:
    """Whether the state dict inside ``checkpoint`` (unwrapped as the converters do) holds a
    tensor; a file that is not a mapping is left to the caller's own error."""
    try:
        state = unwrap_checkpoint(checkpoint)
    except (TypeError, ValueError):
        return True
    return any(isinstance(v, Tensor) for v in state.values())


def _shown(keys: Sequence[str], limit: int = 6) -> str:
    more = f', ... ({len(keys)} in all)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def check_finite(state: Mapping[str, Any], where: str) -> None:
    """``ValueError`` naming every tensor of ``state`` that holds NaN or inf."""
    bad = [key for key, value in state.items()
           if isinstance(value, Tensor) and (value.is_floating_point() or value.is_complex())
           and not bool(torch.isfinite(value).all())]
    if bad:
        raise ValueError(f'{where}: non-finite weights (NaN or inf) in {len(bad)} tensor'
                         f'{"s" if len(bad) > 1 else ""}: {_shown(bad)}')


def check_coverage(keys: Sequence[str], module: nn.Module, where: str,
                   share: Optional[float] = None, prefix: str = '',
                   what: Optional[str] = None) -> float:
    """The share of ``module``'s parameter elements whose names (``prefix`` + name) are in
    ``keys``; ``ValueError`` naming the missing keys when it is below ``share`` (default: the
    current :func:`min_coverage`, :data:`MIN_COVERAGE` unless set)."""
    share = _COVERAGE.get() if share is None else check_min_coverage(share)
    params = {prefix + name: p.numel() for name, p in module.named_parameters()}
    total = sum(params.values())
    if not total:
        return 1.0
    present = set(keys)
    covered = sum(n for key, n in params.items() if key in present) / total
    if covered < share:
        missing = [key for key in params if key not in present]
        what = what or (prefix.rstrip('.') or type(module).__name__)
        raise ValueError(f'{where}: covers {covered:.1%} of the {total} parameter elements of '
                         f'{what}, less than min_coverage={share:g} (a checkpoint of another '
                         f'model?); missing: {_shown(missing)}')
    return covered


def _class_count_owner(key: str, modules: Mapping[str, nn.Module]) -> Optional[Tuple[str, int]]:
    """``(module name, num_classes)`` of the innermost module above ``key`` that has an int
    ``num_classes`` (a classification or detection head), else None."""
    parts = key.split('.')[:-1]
    for i in range(len(parts), 0, -1):
        name = '.'.join(parts[:i])
        n = getattr(modules.get(name), 'num_classes', None)
        if isinstance(n, int) and not isinstance(n, bool):
            return name, n
    return None


def fit_heads(state: Mapping[str, Any], model: nn.Module, where: str,
              reinit_head: bool = False) -> Dict[str, Any]:
    """``state`` (keys as the model's) less the keys of heads built for another number of
    classes when ``reinit_head``; else a ``ValueError`` naming ``num_classes`` and the keys."""
    own = model.state_dict()
    modules = dict(model.named_modules())
    heads: Dict[str, Tuple[int, str]] = {}
    for key, value in state.items():
        ref = own.get(key)
        if ref is None or not isinstance(value, Tensor) or value.shape == ref.shape:
            continue
        owner = _class_count_owner(key, modules)
        if owner is not None and owner[0] not in heads:
            heads[owner[0]] = (owner[1], f'{key}: checkpoint {tuple(value.shape)} vs model '
                                         f'{tuple(ref.shape)}')
    if not heads:
        return dict(state)
    if not reinit_head:
        name, (n, shapes) = next(iter(heads.items()))
        raise ValueError(f'{where}: the checkpoint\'s {name} was trained for another number of '
                         f'classes than the model\'s num_classes={n} ({shapes}); set num_classes '
                         'to match, or re-initialise the head: load_from_options=dict('
                         'reinit_head=True) (--cfg-options load_from_options.reinit_head=True)')
    dropped = tuple(name + '.' for name in heads)
    print_log(f'{where}: re-initialising {", ".join(heads)} (num_classes differs from the '
              'checkpoint\'s): its weights are not loaded', logger='current')
    return {k: v for k, v in state.items() if not k.startswith(dropped)}


# the file being loaded by ``init_cfg=dict(type='Pretrained')`` (set by the compat shim)
_PRETRAINED: ContextVar[Optional[str]] = ContextVar('mmvitscale_pretrained_file', default=None)


def checked_pretrained_init(call: Any) -> Any:
    """Wrap mmengine's ``PretrainedInit.__call__``: while it loads, the load hook of every
    ScaledViT / ScaledPiT it reaches refuses an empty, non-finite or poorly covering checkpoint
    naming the file (see the module docstring)."""

    def pretrained_checked(self, module):
        token = _PRETRAINED.set(str(getattr(self, 'checkpoint', '?')))
        try:
            return call(self, module)
        finally:
            _PRETRAINED.reset(token)

    pretrained_checked.__wrapped__ = call
    pretrained_checked.__doc__ = call.__doc__
    return pretrained_checked


def convert_on_load(module: nn.Module, state_dict: dict, prefix: str, *args,
                    target: str) -> None:
    """``load_state_dict`` pre-hook: converts and fits the keys under ``prefix`` in place.

    Inside an ``init_cfg`` ``Pretrained`` load it also refuses an empty, non-finite or poorly
    covering checkpoint (:func:`check_finite`, :func:`check_coverage`), naming the file.
    """
    keys = [k for k in state_dict if k.startswith(prefix)]
    pretrained = _PRETRAINED.get()
    if not keys:
        if pretrained is not None and not state_dict:
            raise ValueError(f'init_cfg Pretrained checkpoint={pretrained!r}: its state_dict is '
                             'empty (no weights)')
        return
    own = {k[len(prefix):]: state_dict[k] for k in keys}
    converted, _ = adapt_state_dict(own, module, target)
    if pretrained is not None:
        where = f'init_cfg Pretrained checkpoint={pretrained!r}'
        check_finite(converted, where)
        check_coverage(list(converted), module, where)
    for key in keys:
        del state_dict[key]
    state_dict.update({prefix + k: v for k, v in converted.items()})


def register_checkpoint_hook(module: nn.Module, target: str) -> None:
    """Make ``module.load_state_dict`` (hence mmengine's ``Pretrained`` init and ``load_from``)
    accept every registered format for ``target``. Register it before other pre-hooks."""
    setattr(module, _TARGET_ATTR, target)
    module._register_load_state_dict_pre_hook(partial(convert_on_load, target=target),
                                              with_module=True)


def _revised(key: str, revise_keys: Sequence[Tuple[str, str]]) -> str:
    for pattern, replacement in revise_keys:
        key = re.sub(pattern, replacement, key)
    return key


def _loaded_modules(model: nn.Module, keys: Sequence[str]) -> List[str]:
    """The top-level modules of ``model`` that ``keys`` reach ('' for the model itself)."""
    children = dict(model.named_children())
    out = []
    for key in keys:
        head = key.split('.', 1)[0]
        name = head if head in children and '.' in key else ''
        if name not in out:
            out.append(name)
    return out


def _check_whole_model(model: nn.Module, state: Mapping[str, Any], where: str,
                       share: Optional[float]) -> None:
    """Coverage of each top-level module a whole-model checkpoint reaches, so a classifier's
    backbone loaded into a detector counts against the backbone, not the detector."""
    for name in _loaded_modules(model, list(state)):
        module = model.get_submodule(name) if name else model
        check_coverage(list(state), module, where, share, prefix=f'{name}.' if name else '',
                       what=name or type(model).__name__)


def fit_model_checkpoint(model: nn.Module, checkpoint: Mapping, filename: str,
                         revise_keys: Sequence[Tuple[str, str]] = ((r'^module\.', ''), ),
                         options: Optional[Mapping[str, Any]] = None) -> dict:
    """What ``Runner.load_checkpoint`` (``load_from``, ``tools/test.py``) should load.

    A whole-model checkpoint (any of its keys is one of ``model``'s) is returned unchanged. A
    backbone-format one (timm / DeiT, mmpretrain, PiT, wrapped as ``{'model': ...}`` or not)
    is converted and fitted to the model's ScaledViT / ScaledPiT backbone and returned as
    ``{'state_dict': {'backbone.<key>': ...}, 'meta': ...}``; the converter's ``ValueError``
    (unknown format, width mismatch, ...) is raised naming ``filename``. A checkpoint none of
    whose keys fit a model without such a backbone is refused: mmengine would only warn and
    go on with random weights.

    Also refused, naming ``filename`` (module docstring): an empty ``state_dict``, non-finite
    weights, coverage below ``options['min_coverage']`` (default :data:`MIN_COVERAGE`) of each
    top-level module the checkpoint reaches, and a head trained for another ``num_classes``
    unless ``options['reinit_head']`` (its keys are then left out). ``options`` is the
    config's ``load_from_options`` (:func:`check_load_options`).
    """
    where = f'load_from={filename!r}'
    opts = check_load_options(options)
    share, reinit = opts.get('min_coverage'), opts.get('reinit_head', False)
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'{where}: expected a checkpoint dict, got '
                        f'{type(checkpoint).__name__}')
    state = checkpoint.get('state_dict', checkpoint)
    state = state if isinstance(state, Mapping) else {}
    if not _has_weights(checkpoint):
        raise ValueError(f'{where}: its state_dict is empty (no weight tensors)')
    revised = {_revised(k, revise_keys): k for k in state if isinstance(k, str)}
    keys = list(revised)
    own = model.state_dict()
    if any(k in own for k in keys):
        mine = {k: state[revised[k]] for k in keys if k in own}
        check_finite(mine, where)
        kept = fit_heads(mine, model, where, reinit)
        _check_whole_model(model, kept, where, share)
        if len(kept) == len(mine):
            return dict(checkpoint)
        dropped = {revised[k] for k in mine if k not in kept}
        return dict(checkpoint, state_dict={k: v for k, v in state.items() if k not in dropped})
    backbones = [(name, m) for name, m in model.named_modules()
                 if getattr(m, _TARGET_ATTR, None) is not None]
    if not backbones:
        raise ValueError(f'{where}: none of its {len(keys)} keys is a key of the '
                         f'model (checkpoint: {keys[:3]}..., model: {list(own)[:3]}...)')
    name, backbone = backbones[0]  # named_modules is outermost-first
    try:
        converted, fmt = adapt_state_dict(checkpoint, backbone, getattr(backbone, _TARGET_ATTR))
    except (ValueError, TypeError) as err:
        raise type(err)(f'{where}: its keys are not the model\'s, and as a '
                        f'backbone checkpoint: {err}') from None
    check_finite(converted, where)
    check_coverage(list(converted), backbone, where, share, what=name or 'the model')
    prefix = f'{name}.' if name else ''
    print_log(f'load_from: {filename} is a {fmt} backbone checkpoint; loaded into '
              f'{prefix.rstrip(".") or "the model"}', logger='current')
    meta = checkpoint.get('meta')
    return dict(state_dict={prefix + k: v for k, v in converted.items()},
                meta=meta if isinstance(meta, dict) else {})


class LoadResult(NamedTuple):
    fmt: str
    missing_keys: List[str]
    unexpected_keys: List[str]


def load_pretrained(model: nn.Module, path: str, fmt: Optional[str] = None,
                    strict: bool = True, min_coverage: float = MIN_COVERAGE) -> LoadResult:
    """Load a checkpoint file of any registered format into a ScaledViT / ScaledPiT.

    The file is read without running code (:func:`.safe_load.safe_torch_load`). Unexpected keys
    (classifier heads, ...) are returned; missing keys raise ``RuntimeError`` when ``strict``.
    Refused with a ``ValueError`` naming ``path``: an empty state dict, non-finite weights
    (the tensors named) and, when not ``strict``, a checkpoint covering less than
    ``min_coverage`` of the model's parameter elements (the missing keys named).
    """
    target = getattr(model, _TARGET_ATTR, None)
    if target is None:
        raise TypeError(f'load_pretrained loads into ScaledViT / ScaledPiT, got '
                        f'{type(model).__name__}; call load_state_dict on a whole model')
    share = check_min_coverage(min_coverage)
    checkpoint = safe_torch_load(path, map_location='cpu')
    if not _has_weights(checkpoint):
        raise ValueError(f'{path}: its state_dict is empty (no weight tensors)')
    state_dict, fmt = adapt_state_dict(checkpoint, model, target, fmt)
    check_finite(state_dict, path)
    if not strict:
        check_coverage(list(state_dict), model, f'{path} ({fmt})', share)
    result = model.load_state_dict(state_dict, strict=False)
    if strict and result.missing_keys:
        raise RuntimeError(f'{path} ({fmt}) lacks model keys: {result.missing_keys}')
    return LoadResult(fmt, list(result.missing_keys), list(result.unexpected_keys))


__all__ = ['adapt_state_dict', 'check_coverage', 'check_finite', 'check_load_options',
           'check_min_coverage', 'checked_pretrained_init', 'convert_on_load',
           'fit_heads', 'fit_model_checkpoint', 'fit_state_dict', 'load_pretrained',
           'min_coverage', 'register_checkpoint_hook', 'LoadResult', 'MIN_COVERAGE']
