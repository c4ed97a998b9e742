"""Progressive re-tokenization vs the plain schedule on offline Fashion-MNIST, over seeds.

    python tools/analysis/retokenization_study.py [--seeds 0 1 2] [--epochs 6]
        [--switch-epoch 3] [--factor 2] [--train-images 8000] [--val-images 5000]
        [--batch-size 64] [--threads 1] [--out-dir DIR]

Trains ``configs/cls/scaled_vit_fmnist.py`` (under ``--rule`` when given) once per seed of
``--seeds`` in two arms, with the same seeds, data and epochs (a paired design): ``plain``,
and ``progressive`` with ``ProgressiveTokenizationHook(schedule=[(0, factor), (switch, 1)])``.
Training wall time and process CPU time are measured per epoch (testing excluded; CPU time
is the load-robust proxy on a shared machine); top-1 on the first ``--val-images`` test images
after training. Per arm: per-seed values, mean and 95% Student-t interval; progressive vs
plain: the per-seed top-1 difference and training time saved (percent of plain), each with
its mean, 95% interval and verdict (better / worse / inconclusive, from
:mod:`mmvitscale.experiments.stats`). Writes ``retokenization_study.{json,md,png}`` to
``--out-dir``; finished (arm, seed) trials are kept in ``<out-dir>/trials.jsonl`` and skipped
when the command is rerun. The machine load (``/proc/loadavg``) is recorded before and after
each trial: on a shared machine timings are only as good as the load was steady; one torch
thread keeps them stable. The logic lives in :mod:`mmvitscale.experiments.retokenization`.
"""
import argparse
import os.path as osp
import sys
from typing import Any, Dict, List, Optional

import mmvitscale  # noqa: F401  (stack shims + registries, before any host import)
from mmvitscale.errors import flag_errors, folder_arg, min_flag_error
from mmvitscale.engine.config import load_config
from mmvitscale.experiments.seeded import check_seeds
from mmvitscale.experiments.tasks import ROOT

CONFIG = osp.join(ROOT, 'configs', 'cls', 'scaled_vit_fmnist.py')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument('--rule', default=None, help="scaling rule file (default: the config's)")
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data'), type=folder_arg,
                        help='folder holding fashion_mnist/ (a path ending in fashion_mnist '
                             'is taken as that folder)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2],
                        help='seeds of both arms (paired; k >= 3 for an interval worth '
                             'reading; default 0 1 2)')
    parser.add_argument('--seed', dest='seeds', type=int, nargs=1, default=argparse.SUPPRESS,
                        help='one seed (= --seeds N)')
    parser.add_argument('--epochs', type=int, default=6)
    parser.add_argument('--switch-epoch', type=int, default=None,
                        help='epoch where the factor returns to 1 (default: epochs // 2)')
    parser.add_argument('--factor', type=int, default=2, help='coarse token stride factor')
    parser.add_argument('--train-images', type=int, default=8000)
    parser.add_argument('--val-images', type=int, default=5000)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--threads', type=int, default=1, help='torch intra-op threads')
    parser.add_argument('--out-dir', default='work_dirs/retokenization_study', type=folder_arg)
    args = parser.parse_args(argv)
    with flag_errors(parser):
        check_seeds(args.seeds)
    problem = min_flag_error(args, ('epochs', 'train_images', 'val_images', 'batch_size',
                                    'threads'))
    if problem:
        parser.error(problem)
    if args.switch_epoch is None:
        args.switch_epoch = args.epochs // 2
    if not 0 < args.switch_epoch < args.epochs:
        parser.error(f'--switch-epoch must be in [1, --epochs - 1], got {args.switch_epoch} '
                     f'with --epochs {args.epochs}')
    if args.factor < 2:
        parser.error(f'--factor must be >= 2, got {args.factor}')
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    import torch

    from mmvitscale.experiments.retokenization import run_study
    args = parse_args(argv)
    args.out_dir, args.data_root = osp.abspath(args.out_dir), osp.abspath(args.data_root)
    if osp.basename(args.data_root) == 'fashion_mnist':  # the old meaning of --data-root
        args.data_root = osp.dirname(args.data_root)
    load_config(args.config, args.rule)  # fail early on a bad config / rule
    torch.set_num_threads(args.threads)

    def say(msg: str) -> None:
        print(msg, file=sys.__stdout__, flush=True)

    command = ' '.join(['tools/analysis/retokenization_study.py']
                       + list(sys.argv[1:] if argv is None else argv))
    summary = run_study(args, say, command)
    for c in summary['comparisons']:
        say(c['sentence'])
    say(summary['target']['text'])
    say(f'wrote {osp.join(args.out_dir, "retokenization_study")}.json, .md and .png')
    return summary


if __name__ == '__main__':
    main()
