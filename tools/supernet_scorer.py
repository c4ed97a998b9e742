"""Weight-sharing supernet scorer (issue 5): train one supernet, score subnets, check ranking.

1. Train ONE widest / deepest ScaledViT supernet on offline Fashion-MNIST with the sandwich rule
   (largest + smallest + ``--num-random`` random subnets per step).
2. Score ``--subnets`` subnets (largest, smallest, the rest drawn at random from the space) with
   the shared weights on a validation subset (the Fashion-MNIST test split), no retraining.
3. Train each of those subnets from scratch with one equal short budget, once per
   ``--scratch-seeds`` seed, and evaluate it on the same subset; report Kendall's tau between the
   shared-weight and the seed-mean scratch accuracies with its 95% bootstrap interval over
   subnets, the tau per seed, and how alike two scratch seeds rank the subnets (the ceiling).

Outputs (atomic) in ``--work-dir``: ``supernet_scores.json``, ``supernet_scores.md``,
``supernet_vs_scratch.png`` and ``supernet.pth``; the report gives Kendall's tau-b with its
two-sided p-value, its 95% bootstrap interval, the tau per scratch seed and the seed-to-seed
ceiling. The defaults (3 scratch seeds) took 26 minutes on one CPU thread with another job
on the other core; raise ``--super-images`` / ``--super-epochs`` / ``--scratch-*`` for more.
Bad flag values are refused before any work. The logic lives in
:mod:`mmvitscale.experiments.supernet_study`.

Example::

    python tools/supernet_scorer.py --work-dir work_dirs/supernet
"""
import argparse
import os.path as osp
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import mmvitscale  # noqa: F401  isort:skip  (shims before mmengine / host packages)
import torch

from mmvitscale.errors import flag_errors, folder_arg
from mmvitscale.experiments.supernet_study import check_spec, run_study, spec_from_flags

DEFAULT_DATA = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'data',
                        'fashion_mnist')


def ints(s: str) -> List[int]:
    return [int(v) for v in s.split(',') if v]


def floats(s: str) -> List[float]:
    return [float(v) for v in s.split(',') if v]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data-root', default=DEFAULT_DATA if osp.isdir(DEFAULT_DATA) else None,
                   type=folder_arg, help='folder with the Fashion-MNIST idx files')
    p.add_argument('--work-dir', default='work_dirs/supernet', type=folder_arg)
    p.add_argument('--embed-dims', type=int, default=96)
    p.add_argument('--num-layers', type=int, default=8)
    p.add_argument('--num-heads', type=int, default=4)
    p.add_argument('--mlp-ratio', type=float, default=4.0)
    p.add_argument('--img-size', type=int, default=32)
    p.add_argument('--patch-size', type=int, default=4)
    p.add_argument('--depths', type=ints, default=[2, 4, 6, 8])
    p.add_argument('--widths', type=ints, default=[48, 72, 96],
                   help='embed dims; heads = width / supernet head dim')
    p.add_argument('--mlp-ratios', type=floats, default=[2.0, 3.0, 4.0])
    p.add_argument('--resolutions', type=ints, default=[16, 24, 32])
    p.add_argument('--super-images', type=int, default=10000)
    p.add_argument('--super-epochs', type=int, default=3)
    p.add_argument('--num-random', type=int, default=2, help='random subnets per sandwich step')
    p.add_argument('--subnets', type=int, default=12, help='K subnets scored and retrained')
    p.add_argument('--scratch-images', type=int, default=3000)
    p.add_argument('--scratch-epochs', type=int, default=2)
    p.add_argument('--scratch-seeds', type=int, nargs='+', default=[0, 1, 2],
                   help='every subnet is trained from scratch once per seed (k >= 2 for the '
                   'seed-to-seed ceiling)')
    p.add_argument('--skip-scratch', action='store_true', help='only score (no tau)')
    p.add_argument('--val-images', type=int, default=2000)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--weight-decay', type=float, default=0.05)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--log-every', type=int, default=20)
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f'--threads: must be >= 1, got {args.threads}')
    with flag_errors(p):  # every field is its flag with '-' for '_'
        check_spec(spec_from_flags(args))
    return args


def log(msg: str) -> None:
    print(f'[{time.strftime("%H:%M:%S")}] {msg}', flush=True)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    spec = spec_from_flags(args)
    torch.set_num_threads(args.threads)
    command = ' '.join([osp.basename(sys.argv[0])] + (sys.argv[1:] if argv is None
                                                      else list(argv)))
    report = run_study(spec, args.work_dir, vars(args), command, log)
    log(f"done in {report['wall_seconds']:.0f} s -> {args.work_dir}")
    return report


if __name__ == '__main__':
    main()
