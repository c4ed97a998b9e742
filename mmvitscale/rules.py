"""Turn a scaling rule (plain data from ``configs/_base_/scaling/*.py``) into task settings.

Task configs call these right after their ``_base_`` list, so that everything that depends on
the rule -- backbone arguments, the input resolution of the data pipelines, the clip length of
video pipelines -- is derived from the one inherited ``scaling`` dict::

    _base_ = ['../_base_/scaling/deeper_narrower.py', ...]
    from mmvitscale.rules import derive_image  # after _base_ (keeps it a text config)
    scaled = derive_image('vit', arch=..., scaling=_base_.scaling, img_size=224, patch_size=16)
    model = dict(backbone=scaled['backbone'])
    train_pipeline = [..., dict(type='RandomResizedCrop', scale=scaled['input_size']), ...]

Rules may hold image knobs and the video knobs ``frames`` / ``frames_mult``; image tasks ignore
the video knobs, so one rule file serves classification, detection and video. Loading a task
config under another rule file is :func:`mmvitscale.engine.config.load_with_rule`.
"""
from typing import Any, Dict, Mapping, Optional

from .fileio import json_ready as _plain  # ConfigDict / tuples -> plain dicts and lists

FRAME_KEYS = ('frames', 'frames_mult')


def image_rule(scaling: Optional[Mapping]) -> Dict[str, Any]:
    """The rule without its video-only knobs (``attn_type`` is kept: backbones read it)."""
    return {k: v for k, v in _plain(scaling or {}).items() if k not in FRAME_KEYS}


def derive_image(family: str, arch: Any, scaling: Optional[Mapping], img_size: int = 224,
                 patch_size: Optional[int] = None, **backbone_kwargs) -> Dict[str, Any]:
    """Backbone arguments and input size of an image task under a rule.

    Args:
        family: ``'vit'`` (ScaledViT) or ``'pit'`` (ScaledPiT).
        arch: the task's base preset name or arch dict.
        scaling: the inherited rule; an ``attn_type`` in it stays in the backbone's
            ``scaling`` (the backbone resolves it, see ``split_attn_rule``).
        img_size: the task's base resolution (the rule may scale it).
        patch_size: ViT patch size (PiT keeps it in its arch).
        backbone_kwargs: passed through to the backbone (out_type, in_channels, ...).

    Returns:
        ``dict(backbone=..., input_size=(h, w), arch=<resolved arch as a dict>)``.
    """
    from .families import family_names, get_family
    fam = get_family(family, among=family_names('image'))
    rule = image_rule(scaling)  # ``attn_type`` stays in it: backbones read it, shapes ignore it
    arch = _plain(arch)
    spec = fam.resolve(arch, img_size, patch_size, rule)
    backbone = fam.backbone_cfg(arch, img_size, patch_size, rule, **backbone_kwargs)
    return dict(backbone=backbone, input_size=fam.input_size(spec), arch=_plain(spec.as_dict()))


def derive_video(arch: Any, scaling: Optional[Mapping], img_size: int = 224,
                 patch_size: int = 16, num_frames: int = 8, tubelet_size: int = 1,
                 **backbone_kwargs) -> Dict[str, Any]:
    """Backbone arguments, input size and clip length of a video task under a rule.

    Returns:
        ``dict(backbone=..., input_size=(h, w), num_frames=int, arch=<resolved arch>)``.
    """
    from .models.video_vit import ScaledVideoViT
    rule = _plain(scaling or {})
    shape = {k: v for k, v in rule.items() if k != 'attn_type'}  # not an architecture knob
    spec = ScaledVideoViT.resolve_arch(arch, img_size, patch_size, num_frames, tubelet_size,
                                       shape)
    backbone = dict(type='mmvitscale.ScaledVideoViT', arch=_plain(arch), img_size=img_size,
                    patch_size=patch_size, num_frames=num_frames, tubelet_size=tubelet_size,
                    scaling=rule)
    backbone.update(backbone_kwargs)
    return dict(backbone=backbone, input_size=tuple(spec.spatial.img_size),
                num_frames=spec.num_frames, arch=_plain(spec.spatial.as_dict()))


def derive_detection(arch: Any, scaling: Optional[Mapping], img_size: int = 224,
                     patch_size: int = 16, **backbone_kwargs) -> Dict[str, Any]:
    """ScaledViT + simple-feature-pyramid detection settings under a rule.

    The pyramid has strides ``p/2, p, 2p, 4p, 8p`` for patch size ``p`` (scale factors 2, 1,
    0.5 plus two pooled levels) and images are padded to a multiple of ``2p``. Scale the host
    pipelines with :func:`rescale_pipeline` (``input_size[0]`` against ``img_size``).

    Returns:
        :func:`derive_image`'s dict plus ``strides`` and ``pad_size_divisor``.
    """
    backbone_kwargs.setdefault('out_type', 'featmap')
    out = derive_image('vit', arch, scaling, img_size, patch_size, **backbone_kwargs)
    p = out['arch']['patch_size']
    if p % 2:
        raise ValueError('detection needs an even patch size for the stride p/2 pyramid level; '
                         f'the rule gives patch_size={p}')
    out.update(strides=[p // 2, p, 2 * p, 4 * p, 8 * p], pad_size_divisor=2 * p)
    return out


SIZE_KEYS = ('scale', 'crop_size', 'size', 'scale_range')


def rescale_pipeline(pipeline, size: int, base_size: int = 224,
                     frames: Optional[int] = None) -> list:
    """A host data pipeline following a rule's resolution (and clip length).

    Every spatial size is scaled by ``size / base_size``: the ``scale`` / ``crop_size`` /
    ``size`` / ``scale_range`` entries (ints or pairs; -1 kept) of each transform, e.g.
    ``RandomResizedCrop(scale=224)``, ``ResizeEdge(scale=256)``, mmdet's
    ``Resize(scale=(1333, 800))``, ``CenterCrop(crop_size=224)``. With ``frames``, each
    ``SampleFrames`` samples that many frames over the same time span (its
    ``frame_interval`` scaled inversely, at least 1).
    """
    ratio = size / base_size

    def scaled(value):
        if isinstance(value, bool) or not isinstance(value, (int, list, tuple)):
            return value
        if isinstance(value, int):
            return value if value < 0 else int(round(value * ratio))
        if all(isinstance(v, int) for v in value):
            return tuple(scaled(v) for v in value)
        return value

    out = []
    for transform in pipeline:
        t = _plain(transform)
        for key in SIZE_KEYS:
            if key in t:
                t[key] = scaled(t[key])
        if frames is not None and t.get('type') == 'SampleFrames':
            span = t['clip_len'] * t.get('frame_interval', 1)
            t['clip_len'], t['frame_interval'] = frames, max(1, span // frames)
        out.append(t)
    return out


def check_rule_file(rule_path: str) -> None:
    """ValueError naming ``rule_path`` unless it exists and defines a ``scaling`` dict."""
    import os.path as osp

    from mmengine.config import Config
    if not osp.isfile(rule_path):
        raise ValueError(f'rule file not found: {rule_path}')
    try:
        rule = Config.fromfile(rule_path)
    except Exception as err:  # a syntax error etc.: say which file
        raise ValueError(f'rule file {rule_path} cannot be loaded: '
                         f'{type(err).__name__}: {err}') from err
    if not isinstance(rule.get('scaling'), Mapping):
        raise ValueError(f'rule file {rule_path} has no top-level `scaling = dict(...)`')
    for key, value in rule.scaling.items():  # values only: key sets differ per family
        if key == 'attn_type' or isinstance(value, (list, tuple)):
            continue  # checked by the backbone (per-stage lists, attention names)
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not 0 < value < float('inf')):
            raise ValueError(f'rule file {rule_path}: scaling.{key} must be a positive number, '
                             f'got {value!r}')
