"""Evaluate a checkpoint with mmengine's Runner.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR]
"""
import argparse

import mmvitscale  # noqa: F401  (stack shims + registries, before any host import)
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmvitscale.engine.config import load_config
from mmvitscale.engine.runner import apply_launch_args, parse_launch_args


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (weights are loaded as tensors)')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    return parse_launch_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, cfg_options=args.cfg_options)  # rule overrides re-derive
    cfg = apply_launch_args(cfg, args)
    cfg.load_from = args.checkpoint
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    return runner.test()


if __name__ == '__main__':
    main()
