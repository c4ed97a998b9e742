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
the video knobs, so one rule file serves classification, detection and video.
"""
from typing import Any, Dict, Mapping, Optional

FRAME_KEYS = ('frames', 'frames_mult')
FAMILIES = ('vit', 'pit')


def _plain(obj: Any) -> Any:
    """ConfigDict / tuples -> plain dicts and lists (stable, printable config values)."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def image_rule(scaling: Optional[Mapping]) -> Dict[str, Any]:
    """The rule without its video-only knobs."""
    return {k: v for k, v in _plain(scaling or {}).items() if k not in FRAME_KEYS}


def derive_image(family: str, arch: Any, scaling: Optional[Mapping], img_size: int = 224,
                 patch_size: Optional[int] = None, **backbone_kwargs) -> Dict[str, Any]:
    """Backbone arguments and input size of an image task under a rule.

    Args:
        family: ``'vit'`` (ScaledViT) or ``'pit'`` (ScaledPiT).
        arch: the task's base preset name or arch dict.
        scaling: the inherited rule.
        img_size: the task's base resolution (the rule may scale it).
        patch_size: ViT patch size (PiT keeps it in its arch).
        backbone_kwargs: passed through to the backbone (out_type, in_channels, ...).

    Returns:
        ``dict(backbone=..., input_size=(h, w), arch=<resolved arch as a dict>)``.
    """
    from .models import ScaledPiT, ScaledViT
    if family not in FAMILIES:
        raise ValueError(f'family must be one of {FAMILIES}, got {family!r}')
    rule = image_rule(scaling)
    arch = _plain(arch)
    if family == 'vit':
        spec = ScaledViT.resolve_arch(arch, img_size, patch_size or 16, rule)
        backbone = dict(type='mmvitscale.ScaledViT', arch=arch, img_size=img_size,
                        patch_size=patch_size or 16, scaling=rule)
    else:
        if patch_size is not None:
            raise ValueError('patch_size belongs in the PiT arch dict (patch_size, '
                             f'patch_stride), got patch_size={patch_size!r}')
        spec = ScaledPiT.resolve_arch(arch, img_size, rule)
        backbone = dict(type='mmvitscale.ScaledPiT', arch=arch, img_size=img_size, scaling=rule)
    backbone.update(backbone_kwargs)
    return dict(backbone=backbone, input_size=tuple(spec.img_size), arch=_plain(spec.as_dict()))


def derive_video(arch: Any, scaling: Optional[Mapping], img_size: int = 224,
                 patch_size: int = 16, num_frames: int = 8, tubelet_size: int = 1,
                 **backbone_kwargs) -> Dict[str, Any]:
    """Backbone arguments, input size and clip length of a video task under a rule.

    Returns:
        ``dict(backbone=..., input_size=(h, w), num_frames=int, arch=<resolved arch>)``.
    """
    from .models.video_vit import ScaledVideoViT
    rule = _plain(scaling or {})
    spec = ScaledVideoViT.resolve_arch(arch, img_size, patch_size, num_frames, tubelet_size,
                                       rule)
    backbone = dict(type='mmvitscale.ScaledVideoViT', arch=_plain(arch), img_size=img_size,
                    patch_size=patch_size, num_frames=num_frames, tubelet_size=tubelet_size,
                    scaling=rule)
    backbone.update(backbone_kwargs)
    return dict(backbone=backbone, input_size=tuple(spec.spatial.img_size),
                num_frames=spec.num_frames, arch=_plain(spec.spatial.as_dict()))


def derive_detection(arch: Any, scaling: Optional[Mapping], img_size: int = 224,
                     patch_size: int = 16, base_scale=(1333, 800),
                     **backbone_kwargs) -> Dict[str, Any]:
    """ScaledViT + simple-feature-pyramid detection settings under a rule.

    The input scale follows the rule's resolution change (``base_scale`` times the ratio of the
    scaled to the base resolution); the pyramid has strides ``p/2, p, 2p, 4p, 8p`` for patch
    size ``p`` (scale factors 2, 1, 0.5 plus two pooled levels) and images are padded to a
    multiple of ``2p``.

    Returns:
        :func:`derive_image`'s dict plus ``scale`` (w, h), ``strides`` and
        ``pad_size_divisor``.
    """
    backbone_kwargs.setdefault('out_type', 'featmap')
    out = derive_image('vit', arch, scaling, img_size, patch_size, **backbone_kwargs)
    p = out['arch']['patch_size']
    if p % 2:
        raise ValueError('detection needs an even patch size for the stride p/2 pyramid level; '
                         f'the rule gives patch_size={p}')
    ratio = out['input_size'][0] / img_size
    out.update(scale=tuple(int(round(s * ratio)) for s in base_scale),
               strides=[p // 2, p, 2 * p, 4 * p, 8 * p], pad_size_divisor=2 * p)
    return out


SIZE_KEYS = ('scale', 'crop_size', 'size')


def rescale_pipeline(pipeline, size: int, base_size: int = 224) -> list:
    """A host data pipeline with every spatial size scaled by ``size / base_size``.

    Touches the ``scale`` / ``crop_size`` / ``size`` entries (ints or (w, h) pairs; -1 kept)
    of each transform, e.g. ``RandomResizedCrop(scale=224)``, ``ResizeEdge(scale=256)``,
    ``CenterCrop(crop_size=224)``, so a base recipe follows the rule's resolution.
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
        out.append(t)
    return out
