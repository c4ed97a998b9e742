"""FLOPs (multiply-accumulates, attention counted) and params of a config's model.

    python tools/analysis/get_flops.py CONFIG [--shape H W] [--backbone-only]
        [--cfg-options scaling.width_mult=2]

Unlike mmengine's / fvcore's jit counters this sees fused ``scaled_dot_product_attention``.
The config is loaded as ``tools/train.py`` loads it (:func:`mmvitscale.engine.config.load_config`):
a rule override in ``--cfg-options`` (``scaling.<key>`` or ``model.backbone.scaling.<key>``)
re-derives the model under the overridden rule, and an unknown rule key is refused. Without
``--shape`` the input is the built backbone's own (rule-resolved) ``img_size``.
"""
import argparse
import json

import mmvitscale  # noqa: F401  (stack shims + registries)
import torch
from mmengine.config import DictAction
from mmengine.model import BaseModel
from mmengine.registry import MODELS, init_default_scope

from mmvitscale.cost import get_complexity
from mmvitscale.engine.config import load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Count FLOPs and params of a model config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--shape', type=int, nargs='+', default=None,
                        help='input H W (or one value for square); default: the built '
                        "backbone's img_size (as the rule resolves it), else 224")
    parser.add_argument('--backbone-only', action='store_true',
                        help='count the backbone alone instead of the whole model')
    parser.add_argument('--json', action='store_true', help='print JSON instead of text')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value; scaling.<key>=v '
                        're-derives the model under the overridden rule')
    return parser.parse_args(argv)


def check_shape(shape):
    """``--shape`` as an (H, W) pair (None when not given); ``SystemExit`` naming the flag."""
    if shape is None:
        return None
    if len(shape) not in (1, 2):
        raise SystemExit(f'--shape takes 1 or 2 values, got {shape}')
    if min(shape) < 1:
        raise SystemExit(f'--shape: H and W must be positive, got {" ".join(map(str, shape))}')
    return tuple(shape * 2) if len(shape) == 1 else tuple(shape)


def _shape(args, cfg, backbone):
    """``--shape``, else the built backbone's resolved ``img_size`` (a rule may scale the
    config's), else the config's, else 224."""
    if args.shape:
        return args.shape
    size = getattr(backbone, 'img_size', None)
    if size is None:
        size = cfg.model.get('backbone', {}).get('img_size', 224)
    return (size, size) if isinstance(size, int) else tuple(size)


def _check_backbone_input(backbone, in_ch: int, H: int, W: int) -> None:
    """The backbone's own input check (mmvitscale image backbones), reported as ``--shape``."""
    check = getattr(backbone, 'check_input', None)
    if check is None or len(getattr(backbone, 'input_dims', '').split(',')) != 4:
        return
    try:
        check(torch.empty(1, in_ch, H, W))
    except (TypeError, ValueError) as err:
        raise SystemExit(f'--shape {H} {W}: {err}') from None


def _tensor_mode(model, inputs):
    """mmengine models: plain forward to tensors, no data samples."""
    return model(inputs, mode='tensor')


def main(argv=None):
    args = parse_args(argv)
    args.shape = check_shape(args.shape)  # before any work
    try:  # rule overrides re-derive the config; an invalid or unknown rule key is refused
        cfg = load_config(args.config, cfg_options=args.cfg_options)
    except (ValueError, TypeError, KeyError) as err:
        raise SystemExit(str(err)) from None
    init_default_scope(cfg.get('default_scope', 'mmvitscale'))
    model_cfg = cfg.model.backbone if args.backbone_only else cfg.model
    try:  # e.g. --cfg-options model.backbone.bogus=3: one line naming the options
        model = MODELS.build(model_cfg)
    except (TypeError, ValueError, KeyError) as err:
        given = ''.join(f' {k}={v!r}' for k, v in (args.cfg_options or {}).items())
        given = f' with --cfg-options{given}' if given else ''
        raise SystemExit(f'{args.config}{given}: the model cannot be built: {err}') from None
    backbone = model if args.backbone_only else getattr(model, 'backbone', None)
    H, W = _shape(args, cfg, backbone)
    in_ch = cfg.model.get('backbone', {}).get('in_channels', 3)
    _check_backbone_input(backbone, in_ch, H, W)
    forward = _tensor_mode if isinstance(model, BaseModel) else None
    result = get_complexity(model, (in_ch, H, W), forward=forward)
    result['input_shape'] = [in_ch, H, W]
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    print(f"Input shape: {in_ch}x{H}x{W}")
    print(f"Flops: {result['flops'] / 1e9:.4g} GFLOPs (multiply-accumulates)")
    print(f"Params: {result['params'] / 1e6:.4g} M")
    for op, macs in sorted(result['by_op'].items(), key=lambda kv: -kv[1]):
        print(f'  {op:<48s} {macs / 1e9:.4g} G')
    return result


if __name__ == '__main__':
    main()
