"""Training throughput: mmengine's Runner (as a trial trains) against a raw PyTorch loop.

Same model (the task config under the rule), batch, torch threads and iterations after
warm-up, in one process; each Runner iteration is followed by one raw step. Prints img/s
of each and the ratio runner/raw; writes JSON (atomically) to ``--out``.

    python benchmarks/training.py --threads 1 --out work_dirs/benchmarks/training.json

The raw step clips gradients as the config does (the recipe, not framework overhead).
"""
import argparse
import json
import subprocess
from typing import Dict, Optional, Sequence

import mmvitscale  # noqa: F401  (shims first)
from mmvitscale.experiments.throughput import DATA_CHOICES, benchmark_training
from mmvitscale.fileio import atomic_write


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--task', default='cls', help='a registered classification task')
    p.add_argument('--rule', default=None,
                   help='rule file (default: configs/_base_/scaling/deit_tiny_shape.py)')
    p.add_argument('--batch', type=int, default=None,
                   help="batch size (default: the task's trial batch, 128 for cls)")
    p.add_argument('--iters', type=int, default=40, help='timed iterations per round')
    p.add_argument('--warmup', type=int, default=5, help='untimed iterations first')
    p.add_argument('--rounds', type=int, default=3, help='Runner runs (fresh Runner each)')
    p.add_argument('--threads', type=int, default=1, help='torch threads')
    p.add_argument('--data', choices=DATA_CHOICES, default='config',
                   help="'mmpretrain': mmpretrain's FashionMNIST + pseudo_collate (the path "
                   "before InMemoryFashionMNIST) instead of the config's dataset")
    p.add_argument('--data-root', default=None,
                   help='prepared offline data root (default: a temporary folder)')
    p.add_argument('--out', default='work_dirs/benchmarks/training.json')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    try:
        uptime = subprocess.run(['uptime'], capture_output=True, text=True,
                                timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uptime = ''
    print(f'load: {uptime}', flush=True)
    result = benchmark_training(
        task=args.task, rule=args.rule, batch=args.batch, iters=args.iters, warmup=args.warmup,
        rounds=args.rounds, threads=args.threads, data_root=args.data_root,
        data=args.data,
        progress=lambda msg: print(msg, flush=True))
    result['uptime'] = uptime
    print(f"raw {result['raw_img_s']:.0f} img/s, Runner {result['runner_img_s']:.0f} img/s, "
          f"ratio runner/raw {result['ratio']:.3f}, of median iterations "
          f"{result['ratio_median_iter']:.3f} (median of {args.rounds} rounds; "
          f"{args.threads} thread(s), batch {result['batch']}, load "
          f"{result['loadavg_start'][0]:.2f} -> {result['loadavg_end'][0]:.2f})")
    atomic_write(args.out, json.dumps(result, indent=2) + '\n')
    print(f'wrote {args.out}')
    return result


if __name__ == '__main__':
    main()
