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
"""
import re
from functools import partial
from typing import Dict, List, Mapping, NamedTuple, Optional, Pattern, Sequence, Tuple

from mmengine.logging import print_log
from torch import Tensor, nn

from .safe_load import safe_torch_load
from .converters import StateDict, convert_state_dict


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


def convert_on_load(module: nn.Module, state_dict: dict, prefix: str, *args,
                    target: str) -> None:
    """``load_state_dict`` pre-hook: converts and fits the keys under ``prefix`` in place."""
    keys = [k for k in state_dict if k.startswith(prefix)]
    if not keys:
        return
    own = {k[len(prefix):]: state_dict[k] for k in keys}
    converted, _ = adapt_state_dict(own, module, target)
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


def fit_model_checkpoint(model: nn.Module, checkpoint: Mapping, filename: str,
                         revise_keys: Sequence[Tuple[str, str]] = ((r'^module\.', ''), )) -> dict:
    """What ``Runner.load_checkpoint`` (``load_from``, ``tools/test.py``) should load.

    A whole-model checkpoint (any of its keys is one of ``model``'s) is returned unchanged. A
    backbone-format one (timm / DeiT, mmpretrain, PiT, wrapped as ``{'model': ...}`` or not)
    is converted and fitted to the model's ScaledViT / ScaledPiT backbone and returned as
    ``{'state_dict': {'backbone.<key>': ...}, 'meta': ...}``; the converter's ``ValueError``
    (unknown format, width mismatch, ...) is raised naming ``filename``. A checkpoint none of
    whose keys fit a model without such a backbone is refused: mmengine would only warn and
    go on with random weights.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'load_from={filename!r}: expected a checkpoint dict, got '
                        f'{type(checkpoint).__name__}')
    state = checkpoint.get('state_dict', checkpoint)
    state = state if isinstance(state, Mapping) else {}
    keys = [_revised(k, revise_keys) for k in state if isinstance(k, str)]
    own = model.state_dict()
    if any(k in own for k in keys):
        return dict(checkpoint)
    backbones = [(name, m) for name, m in model.named_modules()
                 if getattr(m, _TARGET_ATTR, None) is not None]
    if not backbones:
        raise ValueError(f'load_from={filename!r}: none of its {len(keys)} keys is a key of the '
                         f'model (checkpoint: {keys[:3]}..., model: {list(own)[:3]}...)')
    name, backbone = backbones[0]  # named_modules is outermost-first
    try:
        converted, fmt = adapt_state_dict(checkpoint, backbone, getattr(backbone, _TARGET_ATTR))
    except (ValueError, TypeError) as err:
        raise type(err)(f'load_from={filename!r}: its keys are not the model\'s, and as a '
                        f'backbone checkpoint: {err}') from None
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
                    strict: bool = True) -> LoadResult:
    """Load a checkpoint file of any registered format into a ScaledViT / ScaledPiT.

    The file is read without running code (:func:`.safe_load.safe_torch_load`). Unexpected keys
    (classifier heads, ...) are returned; missing keys raise ``RuntimeError`` when ``strict``.
    """
    target = getattr(model, _TARGET_ATTR, None)
    if target is None:
        raise TypeError(f'load_pretrained loads into ScaledViT / ScaledPiT, got '
                        f'{type(model).__name__}; call load_state_dict on a whole model')
    checkpoint = safe_torch_load(path, map_location='cpu')
    state_dict, fmt = adapt_state_dict(checkpoint, model, target, fmt)
    result = model.load_state_dict(state_dict, strict=False)
    if strict and result.missing_keys:
        raise RuntimeError(f'{path} ({fmt}) lacks model keys: {result.missing_keys}')
    return LoadResult(fmt, list(result.missing_keys), list(result.unexpected_keys))


__all__ = ['adapt_state_dict', 'convert_on_load', 'fit_model_checkpoint', 'fit_state_dict',
           'load_pretrained', 'register_checkpoint_hook', 'LoadResult']
