"""Castling-ViT accuracy check: softmax vs linear-angular attention on offline Fashion-MNIST.

    python tools/analysis/castling_accuracy.py [--seeds 0 1 2] [--epochs 3] [--train 6000]
        [--val 2000] [--kernel-size 5] [--aux-weight 0.01] [--aux-lr-mult 10] [--out-dir DIR]

Trains ``configs/cls/scaled_vit_fmnist.py`` (under ``--rule``, default: the config's own rule)
in three variants with mmengine's stock Runner, each once per seed of ``--seeds`` (the same
seeds for every variant: a paired design), same epochs and data subsets
(:func:`mmvitscale.experiments.tasks.configure`: first ``--train`` training images, first
``--val`` test images, quiet logs, one test after training):

* ``softmax``: the config as it is;
* ``linear``: ``attn_type='linear_angular'`` without the auxiliary branch;
* ``linear_aux``: ``attn_type='linear_angular', aux_branch=True`` trained with
  :class:`~mmvitscale.engine.AuxMaskSparsityHook`, evaluated as trained (``before conversion``)
  and again after :func:`~mmvitscale.models.linear_attention.convert_to_inference` (the pure
  linear model, ``linear_aux -> converted``). The converted backbone is checked against a fresh
  ``inference_only=True`` backbone loaded with the same weights (``max |logit diff|``).

Kernel size: the config's grid is 8x8 tokens (32 px / patch 4). ``check_kernel_size`` accepts
up to ``2*8-1 = 15``, so the backbone default 9 would build, but a 9x9 depthwise conv already
covers the whole 8x8 grid from every token; the default here is 5 (about the ratio of
Castling-ViT's 9 at 14x14), set with ``--kernel-size``.

Auxiliary masks start at 1. Under AdamW each step moves a mask by about ``lr`` whatever the
penalty weight, so with the config's ``lr=2e-3`` and a short cosine schedule a mask cannot travel
from 1 to 0; ``--aux-lr-mult`` (default 10, ``decay_mult=0``) gives the ``aux_mask``
parameters their own learning rate through the optimiser's ``paramwise_cfg`` (it touches no
other parameter, and only the ``linear_aux`` run has masks). ``--aux-lr-mult 1`` keeps the
config's optimiser as it is.

Per variant: the per-seed top-1, its mean and 95% Student-t interval; per comparison (each
variant vs ``softmax``, ``converted`` vs ``linear_aux``) the per-seed paired differences, their
mean, 95% interval and verdict (better / worse / inconclusive, from
:mod:`mmvitscale.experiments.stats`). Writes ``castling_accuracy.json``, ``.md`` and ``.png``
(means and differences with error bars) to ``--out-dir`` (atomic writes; after each trial the
report covers the seeds every variant has finished). Finished (variant, seed) trials are kept
in ``<out-dir>/trials.jsonl``: rerunning the command skips them. The logic lives in
:mod:`mmvitscale.experiments.castling`.
"""
import argparse
import os.path as osp
from typing import Any, Dict, Optional, Sequence

import mmvitscale  # noqa: F401  (stack shims + registries, before any host import)
from mmvitscale.errors import flag_errors, folder_arg, min_flag_error
from mmvitscale.experiments.castling import CONFIG, RUNS, run_study
from mmvitscale.engine.config import load_config
from mmvitscale.experiments.seeded import check_seeds
from mmvitscale.experiments.tasks import ROOT


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--config', default=osp.join(ROOT, CONFIG), help='classification config')
    p.add_argument('--rule', default=None, help="scaling rule file (default: the config's)")
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2],
                   help='seeds of every variant (paired; k >= 3 for an interval worth reading)')
    p.add_argument('--seed', dest='seeds', type=int, nargs=1, default=argparse.SUPPRESS,
                   help='one seed (= --seeds N)')
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--train', type=int, default=6000, help='first N training images')
    p.add_argument('--val', type=int, default=2000, help='first N test images')
    p.add_argument('--batch', type=int, default=32, help='training batch size')
    p.add_argument('--kernel-size', type=int, default=5,
                   help='linear_kernel_size (odd; the fmnist grid is 8x8)')
    p.add_argument('--aux-weight', type=float, default=0.01,
                   help='AuxMaskSparsityHook weight (L1 on the aux masks)')
    p.add_argument('--aux-lr-mult', type=float, default=10.0,
                   help='learning-rate multiplier of the aux_mask parameters (1: as config)')
    p.add_argument('--runs', nargs='+', choices=RUNS, default=list(RUNS))
    p.add_argument('--data-root', default=osp.join(ROOT, 'data'), type=folder_arg,
                   help='folder holding fashion_mnist/')
    p.add_argument('--out-dir', default=osp.join(ROOT, 'work_dirs', 'castling_accuracy'),
                   type=folder_arg)
    p.add_argument('--workers', type=int, default=0, help='data loader workers')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    args = p.parse_args(argv)
    with flag_errors(p):
        check_seeds(args.seeds)
    problem = min_flag_error(args, ('epochs', 'train', 'val', 'batch', 'threads'))
    if problem:
        p.error(problem)
    if args.kernel_size < 1 or args.kernel_size % 2 == 0:
        p.error(f'--kernel-size must be an odd positive int, got {args.kernel_size}')
    if args.aux_weight < 0 or not args.aux_lr_mult > 0:
        p.error('--aux-weight must be >= 0 and --aux-lr-mult > 0')
    if len(set(args.runs)) != len(args.runs):
        p.error(f'--runs must be distinct, got {args.runs}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    import torch

    from mmvitscale.experiments.console import Stages, clock
    args = parse_args(argv)
    args.out_dir, args.data_root = osp.abspath(args.out_dir), osp.abspath(args.data_root)
    load_config(args.config, args.rule)  # fail early on a bad config / rule
    torch.set_num_threads(args.threads)
    stages = Stages()
    summary = run_study(args, stages)
    for c in summary['comparisons']:
        stages.console.print(c['sentence'])
    stages.console.print(f'[{clock(stages.elapsed())}] wrote {args.out_dir}/'
                         'castling_accuracy.json, .md and .png')
    return summary


if __name__ == '__main__':
    main()
