"""What logistic regression and a small CNN reach on the cls study task's data in its time.

Each reference trains on the same Fashion-MNIST images as the `cls` task (first ``--train``)
for about ``--seconds`` of training (default: the ViT baseline's median training time in
the study's ``--trials`` store when it has any, else 85 s), one torch thread per process, seeds
``--seeds``; prints each kind's mean top-1 with its 95% Student-t interval and writes JSON.

    python benchmarks/cls_references.py --trials work_dirs/transfer/trials.jsonl \
        --out work_dirs/benchmarks/cls_references.json
"""
import argparse
import json
import os.path as osp
import statistics
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Dict, Optional, Sequence

from mmvitscale.experiments.console import loadavg_text
from mmvitscale.experiments.references import KINDS, train_reference
from mmvitscale.experiments.stats import t_interval
from mmvitscale.experiments.store import ResultStore
from mmvitscale.fileio import atomic_write


def baseline_seconds(path: str, rule: str) -> Optional[float]:
    """Median training seconds of the cls trials of ``rule`` in a study's results store."""
    if not osp.isfile(path):
        return None
    times = [r['timings']['train_s'] for r in ResultStore(path).rows()
             if r.get('task') == 'cls' and r.get('rule') == rule and 'timings' in r]
    return statistics.median(times) if times else None


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--kinds', nargs='+', choices=KINDS, default=list(KINDS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--seconds', type=float, default=None,
                   help='training budget per run (default: from --transfer, else 85)')
    p.add_argument('--trials', default='work_dirs/transfer/trials.jsonl',
                   help="a study's results store (for the default --seconds)")
    p.add_argument('--baseline-rule', default='deit_tiny_shape',
                   help='the rule whose cls trials set the default --seconds')
    p.add_argument('--train', type=int, default=60000)
    p.add_argument('--val', type=int, default=10000)
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--out', default='work_dirs/benchmarks/cls_references.json')
    args = p.parse_args(argv)
    if args.seconds is not None and not args.seconds > 0:
        p.error(f'--seconds must be > 0, got {args.seconds}')
    if args.workers < 1:
        p.error(f'--workers must be >= 1, got {args.workers}')
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        p.error(f'--seeds must be distinct and >= 0, got {args.seeds}')
    seconds = args.seconds or baseline_seconds(args.trials, args.baseline_rule) or 85.0
    load = loadavg_text()
    jobs = [dict(kind=k, seconds=seconds, seed=s, train=args.train, val=args.val, threads=1)
            for k in args.kinds for s in args.seeds]
    print(f'{len(jobs)} runs of {seconds:.0f} s on {args.workers} worker(s); load average: '
          f'{load}', flush=True)
    if args.workers == 1:
        rows = [train_reference(**job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            rows = [f.result() for f in [pool.submit(train_reference, **job) for job in jobs]]
    summary = {}
    for kind in args.kinds:
        acc = [r['top1'] for r in rows if r['kind'] == kind]
        ci = t_interval(acc)
        summary[kind] = dict(mean=ci.mean, ci95=[ci.low, ci.high], seeds=args.seeds, top1=acc,
                             epochs=[r['epochs'] for r in rows if r['kind'] == kind])
        print(f'{kind}: top-1 {ci.mean:.2f}% (95% interval {ci.low:.2f} to {ci.high:.2f}, '
              f'{len(acc)} seeds), {summary[kind]["epochs"]} epochs in ~{seconds:.0f} s')
    result = dict(seconds=seconds, train=args.train, val=args.val, load_start=load,
                  load_end=loadavg_text(),
                  summary=summary, runs=rows)
    atomic_write(args.out, json.dumps(result, indent=2) + '\n')
    print(f'wrote {args.out}')
    return result


if __name__ == '__main__':
    main()
