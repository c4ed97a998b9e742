"""Train a model from an mmvitscale (or any OpenMMLab) config with mmengine's Runner.

    python tools/train.py configs/det/scaled_vit_retina.py [--work-dir DIR] [--resume [CKPT]]
"""
import argparse

import mmvitscale  # noqa: F401  (stack shims + registries, before any host import)
from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmvitscale.engine.config import load_config
from mmvitscale.engine.runner import apply_launch_args, parse_launch_args


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--rule', help='apply this scaling rule file instead of the one the '
                        'config inherits (configs/_base_/scaling/*.py or your own)')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint (path or URL), or from the latest '
                        'one in work-dir (refused if last_checkpoint points outside it); read '
                        'without running code from the file')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision')
    return parse_launch_args(parser, argv)


def merge_args(cfg: Config, args) -> Config:
    cfg = apply_launch_args(cfg, args)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)
    # rule overrides in --cfg-options re-derive the config; the others are merged after
    cfg = load_config(args.config, args.rule, args.cfg_options)
    cfg = merge_args(cfg, args)
    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
