"""Named checkpoint converters: one function per third-party format, picked by signature keys.

Every converter maps a *backbone* state dict of its format to mmvitscale's own parameter names,
which are timm's (``VisionTransformer`` for ScaledViT, ``PoolingVisionTransformer`` for
ScaledPiT). A format is detected when all its signature keys are present and none of its
forbidden prefixes is; exactly one registered format must match, otherwise ``ValueError``.

Keys a converter does not own (classifier heads, ``head_dist``, mmpretrain's post-pooling
``ln2``) pass through unchanged, so ``load_state_dict`` reports them as unexpected. Backbone
keys it cannot map (layer scale, q/k norm, pre-norm, register tokens, ...) raise ``ValueError``:
dropping them would load a network that computes something else.

Distillation tokens are dropped: a DeiT-distilled checkpoint loses ``dist_token`` and its row of
``pos_embed``; a distilled PiT keeps the first of its two class tokens. The backbone then runs
with one class token, so its features differ slightly from the distilled model's.
"""
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor

StateDict = Dict[str, Any]
TARGETS = ('vit', 'pit', 'video')
WRAPPER_KEYS = ('state_dict', 'model')  # mmengine / mmpretrain, official DeiT
BACKBONE_PREFIX = 'backbone.'

# attn.dconv (and attn.aux_mask, below): ScaledViT / ScaledPiT linear-angular attention
_BLOCK = (r'(?P<p>norm1|attn\.qkv|attn\.proj|attn\.dconv|norm2|mlp\.fc1|mlp\.fc2)'
          r'\.(?P<t>weight|bias)')
_AFFINE = r'(?P<t>weight|bias)'


@dataclass(frozen=True)
class Converter:
    """A checkpoint format: its signature and the function mapping it to mmvitscale names."""

    name: str
    target: str
    description: str
    signature: Tuple[str, ...]
    forbidden: Tuple[str, ...]
    convert: Callable[[StateDict], StateDict]

    def detect(self, keys: Iterable[str]) -> bool:
        """All signature keys present and no key under a forbidden prefix."""
        keys = set(keys)
        return all(k in keys for k in self.signature) and not any(
            k.startswith(f) for k in keys for f in self.forbidden)

    def summary(self) -> str:
        """One line: name, description, target and signature."""
        sig = ', '.join(self.signature)
        if self.forbidden:
            sig += ''.join(f', no {f}*' for f in self.forbidden)
        return f'{self.name} ({self.description}; for {self.target}; signature: {sig})'


CONVERTERS: Dict[str, Converter] = {}


def register_converter(name: str, target: str, description: str, signature: Sequence[str],
                       forbidden: Sequence[str] = ()) -> Callable:
    """Decorator registering a ``convert(state_dict) -> state_dict`` function as a format."""
    if target not in TARGETS:
        raise ValueError(f'target must be one of {TARGETS}, got {target!r}')

    def decorator(fn: Callable[[StateDict], StateDict]) -> Callable[[StateDict], StateDict]:
        if name in CONVERTERS:
            raise KeyError(f'checkpoint format {name!r} is already registered')
        CONVERTERS[name] = Converter(name, target, description, tuple(signature),
                                     tuple(forbidden), fn)
        return fn

    return decorator


def known_formats() -> str:
    """One line per registered format, for error messages."""
    return '\n'.join(f'  - {c.summary()}' for c in CONVERTERS.values())


# ----------------------------------------------------------------------------- helpers
def _rename(state_dict: StateDict, rules: Sequence[Tuple[str, str]], owned: Sequence[str],
            fmt: str) -> StateDict:
    """Rename keys by full-match regex rules; an unmatched key under ``owned`` is refused."""
    compiled = [(re.compile(pattern), repl) for pattern, repl in rules]
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in compiled:
            match = pattern.fullmatch(key)
            if match:
                out[match.expand(repl)] = value
                break
        else:
            if any(key.startswith(o) for o in owned):
                raise ValueError(
                    f'{fmt} checkpoint key {key!r} has no counterpart in mmvitscale; refusing to '
                    'drop it (layer scale, q/k norm, pre-norm and register tokens are not '
                    'supported)')
            out[key] = value
    return out


def _drop_distillation_pit(state_dict: StateDict, fmt: str) -> StateDict:
    cls_token = state_dict.get('cls_token')
    if isinstance(cls_token, Tensor) and cls_token.dim() == 3 and cls_token.shape[1] == 2:
        state_dict['cls_token'] = cls_token[:, :1]
        print_log(f'{fmt}: distilled PiT checkpoint, kept the class token and dropped the '
                  'distillation token', logger='current')
    return state_dict


# ----------------------------------------------------------------------------- ViT formats
_TIMM_VIT_RULES = (
    (r'patch_embed\.proj\.' + _AFFINE, r'patch_embed.proj.\g<t>'),
    (r'cls_token', 'cls_token'),
    (r'pos_embed', 'pos_embed'),
    (r'blocks\.(?P<i>\d+)\.' + _BLOCK, r'blocks.\g<i>.\g<p>.\g<t>'),
    (r'blocks\.(?P<i>\d+)\.attn\.aux_mask', r'blocks.\g<i>.attn.aux_mask'),
    (r'norm\.' + _AFFINE, r'norm.\g<t>'),
)


@register_converter('timm_vit', 'vit', 'timm VisionTransformer / official DeiT / ScaledViT',
                    ('patch_embed.proj.weight', 'blocks.0.attn.qkv.weight'))
def convert_timm_vit(state_dict: StateDict) -> StateDict:
    """timm / DeiT names are mmvitscale's; drops a distillation token (DeiT-distilled)."""
    state_dict = dict(state_dict)
    dist_token = state_dict.pop('dist_token', None)
    if dist_token is not None:
        if 'cls_token' not in state_dict:
            raise ValueError('timm_vit: checkpoint has dist_token but no cls_token')
        pos_embed = state_dict.get('pos_embed')
        if pos_embed is not None:  # rows: [cls, dist, grid...]
            state_dict['pos_embed'] = torch.cat([pos_embed[:, :1], pos_embed[:, 2:]], dim=1)
        print_log('timm_vit: distilled DeiT checkpoint, dropped dist_token and its pos_embed '
                  'row', logger='current')
    return _rename(state_dict, _TIMM_VIT_RULES,
                   ('patch_embed.', 'blocks.', 'norm_pre.', 'reg_token', 'norm.'), 'timm_vit')


_MMPRETRAIN_VIT_RULES = (
    (r'patch_embed\.projection\.' + _AFFINE, r'patch_embed.proj.\g<t>'),
    (r'cls_token', 'cls_token'),
    (r'pos_embed', 'pos_embed'),
    (r'layers\.(?P<i>\d+)\.ln1\.' + _AFFINE, r'blocks.\g<i>.norm1.\g<t>'),
    (r'layers\.(?P<i>\d+)\.attn\.(?P<p>qkv|proj)\.' + _AFFINE, r'blocks.\g<i>.attn.\g<p>.\g<t>'),
    (r'layers\.(?P<i>\d+)\.ln2\.' + _AFFINE, r'blocks.\g<i>.norm2.\g<t>'),
    (r'layers\.(?P<i>\d+)\.ffn\.layers\.0\.0\.' + _AFFINE, r'blocks.\g<i>.mlp.fc1.\g<t>'),
    (r'layers\.(?P<i>\d+)\.ffn\.layers\.1\.' + _AFFINE, r'blocks.\g<i>.mlp.fc2.\g<t>'),
    (r'ln1\.' + _AFFINE, r'norm.\g<t>'),
)


@register_converter('mmpretrain_vit', 'vit', 'mmpretrain VisionTransformer backbone',
                    ('patch_embed.projection.weight', 'layers.0.attn.qkv.weight'))
def convert_mmpretrain_vit(state_dict: StateDict) -> StateDict:
    """mmpretrain 1.x ``VisionTransformer``: ``layers.{i}.ln1/attn/ln2/ffn``, final ``ln1``.

    ``pre_norm`` (CLIP-style) is refused; the top-level ``ln2`` that ``out_type='avg_featmap'``
    applies after pooling has no counterpart and passes through (reported as unexpected).
    """
    return _rename(state_dict, _MMPRETRAIN_VIT_RULES,
                   ('patch_embed.', 'layers.', 'pre_norm.'), 'mmpretrain_vit')


# ----------------------------------------------------------------------------- PiT formats
_TIMM_PIT_RULES = (
    (r'patch_embed\.conv\.' + _AFFINE, r'patch_embed.conv.\g<t>'),
    (r'cls_token', 'cls_token'),
    (r'pos_embed', 'pos_embed'),
    (r'transformers\.(?P<s>\d+)\.blocks\.(?P<i>\d+)\.' + _BLOCK,
     r'transformers.\g<s>.blocks.\g<i>.\g<p>.\g<t>'),
    (r'transformers\.(?P<s>\d+)\.blocks\.(?P<i>\d+)\.attn\.aux_mask',
     r'transformers.\g<s>.blocks.\g<i>.attn.aux_mask'),
    (r'transformers\.(?P<s>\d+)\.pool\.(?P<p>conv|fc)\.' + _AFFINE,
     r'transformers.\g<s>.pool.\g<p>.\g<t>'),
    (r'norm\.' + _AFFINE, r'norm.\g<t>'),
)
_PIT_OWNED = ('patch_embed.', 'transformers.', 'pools.', 'norm.')


@register_converter('timm_pit', 'pit', 'timm PoolingVisionTransformer / ScaledPiT',
                    ('patch_embed.conv.weight', 'transformers.0.blocks.0.attn.qkv.weight'),
                    forbidden=('pools.', ))
def convert_timm_pit(state_dict: StateDict) -> StateDict:
    """timm PiT names are mmvitscale's; a distilled PiT keeps its first class token."""
    state_dict = _drop_distillation_pit(dict(state_dict), 'timm_pit')
    return _rename(state_dict, _TIMM_PIT_RULES, _PIT_OWNED, 'timm_pit')


_NAVER_POOL = re.compile(r'pools\.(\d+)\.')


@register_converter('naver_pit', 'pit', 'naver-ai/pit PoolingTransformer',
                    ('patch_embed.conv.weight', 'transformers.0.blocks.0.attn.qkv.weight',
                     'pools.0.conv.weight'))
def convert_naver_pit(state_dict: StateDict) -> StateDict:
    """naver-ai PiT: ``pools.{i}`` (applied after stage i) is timm's ``transformers.{i+1}.pool``."""
    renamed = {}
    for key, value in state_dict.items():
        match = _NAVER_POOL.match(key)
        if match:
            key = f'transformers.{int(match.group(1)) + 1}.pool.{key[match.end():]}'
        renamed[key] = value
    state_dict = _drop_distillation_pit(renamed, 'naver_pit')
    return _rename(state_dict, _TIMM_PIT_RULES, _PIT_OWNED, 'naver_pit')


# ----------------------------------------------------------------------------- video formats
_TSF = r'transformer_layers\.layers\.(?P<i>\d+)\.'
_MMACTION_TIMESFORMER_RULES = (
    (r'patch_embed\.projection\.' + _AFFINE, r'patch_embed.proj.\g<t>'),
    (r'cls_token', 'cls_token'),
    (r'pos_embed', 'pos_embed'),
    (r'time_embed', 'time_embed'),
    (r'norm\.' + _AFFINE, r'norm.\g<t>'),
    (_TSF + r'attentions\.0\.norm\.' + _AFFINE, r'blocks.\g<i>.temporal_norm1.\g<t>'),
    (_TSF + r'attentions\.0\.attn\.in_proj_' + _AFFINE, r'blocks.\g<i>.temporal_attn.qkv.\g<t>'),
    (_TSF + r'attentions\.0\.attn\.out_proj\.' + _AFFINE,
     r'blocks.\g<i>.temporal_attn.proj.\g<t>'),
    (_TSF + r'attentions\.0\.temporal_fc\.' + _AFFINE, r'blocks.\g<i>.temporal_fc.\g<t>'),
    (_TSF + r'attentions\.1\.norm\.' + _AFFINE, r'blocks.\g<i>.norm1.\g<t>'),
    (_TSF + r'attentions\.1\.attn\.in_proj_' + _AFFINE, r'blocks.\g<i>.attn.qkv.\g<t>'),
    (_TSF + r'attentions\.1\.attn\.out_proj\.' + _AFFINE, r'blocks.\g<i>.attn.proj.\g<t>'),
    (_TSF + r'ffns\.0\.layers\.0\.0\.' + _AFFINE, r'blocks.\g<i>.mlp.fc1.\g<t>'),
    (_TSF + r'ffns\.0\.layers\.1\.' + _AFFINE, r'blocks.\g<i>.mlp.fc2.\g<t>'),
    (_TSF + r'ffns\.0\.norm\.' + _AFFINE, r'blocks.\g<i>.norm2.\g<t>'),
)


@register_converter('mmaction_timesformer', 'video',
                    "mmaction2 TimeSformer backbone (attention_type='divided_space_time')",
                    ('patch_embed.projection.weight', 'time_embed',
                     'transformer_layers.layers.0.attentions.0.temporal_fc.weight'))
def convert_mmaction_timesformer(state_dict: StateDict) -> StateDict:
    """mmaction2's divided space-time TimeSformer -> ScaledVideoViT (``attention_type=
    'divided'``, ``tubelet_size=1``): per-frame Conv2d patch kernels become (D, C, 1, p, p)
    Conv3d kernels; ``nn.MultiheadAttention``'s ``in_proj`` / ``out_proj`` are ``qkv`` /
    ``proj``. mmaction keeps tokens patch-major, ScaledVideoViT frame-major: an internal order
    that no weight depends on (tested equal to numeric tolerance)."""
    out = _rename(state_dict, _MMACTION_TIMESFORMER_RULES, ('transformer_layers.', ),
                  'mmaction_timesformer')
    kernel = out.get('patch_embed.proj.weight')
    if isinstance(kernel, Tensor) and kernel.dim() == 4:
        out['patch_embed.proj.weight'] = kernel.unsqueeze(2)
    return out


# ----------------------------------------------------------------------------- entry points
def unwrap_checkpoint(checkpoint: Mapping) -> StateDict:
    """The state dict inside a checkpoint file's content.

    ``{'state_dict': ...}`` (mmengine / mmpretrain) and ``{'model': ...}`` (official DeiT) are
    unwrapped, other top-level entries (``meta``, ``optimizer``, ...) are dropped; a plain state
    dict is returned as is. A ``module.`` prefix on every key (DataParallel) is stripped.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'a checkpoint must be a mapping, got {type(checkpoint).__name__}')
    wrappers = [k for k in WRAPPER_KEYS if isinstance(checkpoint.get(k), Mapping)]
    if len(wrappers) > 1:
        raise ValueError(f'checkpoint has several state-dict wrappers {wrappers}; unwrap it '
                         'yourself and pass the state dict')
    state_dict = dict(checkpoint[wrappers[0]] if wrappers else checkpoint)
    if state_dict and all(k.startswith('module.') for k in state_dict):
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    return state_dict


def _matching(keys: Iterable[str]) -> List[str]:
    keys = set(keys)
    return [c.name for c in CONVERTERS.values() if c.detect(keys)]


def detect_format(state_dict: Mapping) -> str:
    """Name of the one registered format whose signature ``state_dict`` carries."""
    matches = _matching(state_dict)
    if not matches:
        sample = sorted(state_dict)[:5]
        raise ValueError(f'unknown checkpoint format (first keys: {sample}); known formats:\n'
                         f'{known_formats()}')
    if len(matches) > 1:
        raise ValueError(f'checkpoint matches several formats {matches}; pass fmt= to choose')
    return matches[0]


def _carries(keys: Iterable[str], fmt: Optional[str]) -> bool:
    return CONVERTERS[fmt].detect(keys) if fmt is not None else bool(_matching(keys))


def _split_backbone(state_dict: StateDict, fmt: Optional[str]) -> Tuple[StateDict, StateDict]:
    """(backbone part, rest). When the top level carries no format signature but the
    ``backbone.`` subtree does (a whole mmpretrain / mmdet model), that subtree is the backbone
    and the other keys are the rest; otherwise everything is the backbone part."""
    if _carries(state_dict, fmt):
        return state_dict, {}
    sub = {k[len(BACKBONE_PREFIX):]: v for k, v in state_dict.items()
           if k.startswith(BACKBONE_PREFIX)}
    if not sub or not _carries(sub, fmt):
        return state_dict, {}
    return sub, {k: v for k, v in state_dict.items() if not k.startswith(BACKBONE_PREFIX)}


def convert_state_dict(state_dict: Mapping, target: str,
                       fmt: Optional[str] = None) -> Tuple[StateDict, str]:
    """Convert a checkpoint (plain or wrapped state dict) to mmvitscale names.

    Args:
        state_dict: a state dict or a checkpoint's content (see :func:`unwrap_checkpoint`);
            a whole-model one is used through its ``backbone.`` subtree, other keys pass through.
        target: ``'vit'`` (ScaledViT), ``'pit'`` (ScaledPiT) or ``'video'``
            (ScaledVideoViT).
        fmt: a registered format name; ``None`` detects it (exactly one must match).

    Returns:
        The converted state dict and the format's name.
    """
    if target not in TARGETS:
        raise ValueError(f'target must be one of {TARGETS}, got {target!r}')
    if fmt is not None and fmt not in CONVERTERS:
        raise ValueError(f'unknown checkpoint format {fmt!r}; known formats:\n{known_formats()}')
    backbone, rest = _split_backbone(unwrap_checkpoint(state_dict), fmt)
    if fmt is None:
        fmt = detect_format(backbone)
    elif not CONVERTERS[fmt].detect(backbone):
        raise ValueError(f'checkpoint does not carry the signature of format {fmt!r}: '
                         f'{CONVERTERS[fmt].summary()}')
    converter = CONVERTERS[fmt]
    if converter.target != target:
        raise ValueError(f'checkpoint is in format {fmt!r}, which is for {converter.target}; '
                         f'it cannot load into a {target} model')
    converted = converter.convert(backbone)
    clash = sorted(set(converted) & set(rest))
    if clash:
        raise ValueError(f'backbone keys {clash} clash with top-level keys of the checkpoint')
    converted.update(rest)
    return converted, fmt
