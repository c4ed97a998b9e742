"""Measure sampled ViT / PiT architectures, fit latency predictors, report held-out error.

    # measure (one run) into the dataset, then fit and report
    python tools/analysis/fit_latency_predictor.py --backends eager onnxruntime --threads 1 2 \
        --run-id A --dataset data/latency/cpu_runs.jsonl
    # refit from the shipped dataset, no measuring
    python tools/analysis/fit_latency_predictor.py --from-dataset data/latency/cpu_runs.jsonl

Archs: :func:`mmvitscale.cost.evaluation.sample_archs`; protocol per (backend, threads):
:func:`mmvitscale.cost.protocol.measure_rows`; study and files: ``evaluation.fit_report``.
"""
import argparse
import os
import os.path as osp
import sys
import time
from typing import Any, Dict, List

import mmvitscale  # noqa: F401  (shims before mmengine / host packages)
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mmvitscale.cost import evaluation as ev
from mmvitscale.cost.backends import BACKENDS, CLOCKS, check_backend
from mmvitscale.cost.latency_table import read_dataset, write_dataset
from mmvitscale.cost.protocol import DEFAULT_STAT, STATS, measure_rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = p.add_argument
    add('--from-dataset', nargs='+', default=None, metavar='FILE',
        help='refit from these dataset files; no measuring')
    add('--dataset', default='work_dirs/latency/dataset.jsonl', help='rows are added here')
    add('--run-id', default=None, help='name of this run (default: the UTC time)')
    for flag, n in (('--num-core', 30), ('--num-beyond', 8), ('--num-pit', 8)):
        add(flag, type=int, default=n, help=f'sampled archs ({n})')
    add('--backends', nargs='+', default=['eager'])
    add('--threads', nargs='+', type=int, default=[1])
    add('--rounds', type=int, default=3, help='round-robin passes over the archs')
    add('--repeats', type=int, default=5, help='timed runs per arch and round')
    add('--warmup', type=float, default=0.3, help='warm-up seconds per arch')
    add('--clock', default='wall', choices=CLOCKS, help='wall, or thread CPU time (1 thread)')
    add('--affinity', default='auto', choices=('auto', 'none'),
        help='pin to the first THREADS CPUs (auto) or not')
    add('--wait-quiet', type=float, default=0.0, metavar='S',
        help='wait up to S seconds per setting for a quiet machine (then warn)')
    add('--stat', default=DEFAULT_STAT, choices=STATS,
        help=f'row statistic the predictors are fitted to and judged on ({DEFAULT_STAT})')
    add('--train-frac', type=float, default=0.6)
    add('--cal-sizes', nargs='+', type=int, default=[5, 10, 20])
    add('--cal-draws', type=int, default=20)
    add('--seed', type=int, default=0)
    add('--out-dir', default='work_dirs/latency_predictor')
    args = p.parse_args(argv)
    try:
        validate(args)
    except ValueError as err:
        p.error(str(err))
    return args


def validate(args: argparse.Namespace) -> None:
    """ValueError naming the flag and value of the first bad input, before any work."""
    args.rows = []
    for path in args.from_dataset or ():
        try:
            args.rows += read_dataset(path)
        except ValueError as err:
            raise ValueError(f'--from-dataset: {err}') from None
    if args.from_dataset and not args.rows:
        raise ValueError(f'--from-dataset: no rows in {" ".join(args.from_dataset)}')
    for backend in args.backends:
        if backend not in BACKENDS:
            raise ValueError(f'--backends: unknown backend {backend!r} '
                             f'(choose from {", ".join(BACKENDS)})')
        try:
            check_backend(backend, 'cpu')
        except ValueError as err:
            raise ValueError(f'--backends {backend}: {err}') from None
    for flag, low in (('rounds', 1), ('repeats', 1), ('cal_draws', 1), ('warmup', 0),
                      ('wait_quiet', 0)):
        if getattr(args, flag) < low:
            raise ValueError(f'--{flag.replace("_", "-")}: must be >= {low}, got '
                             f'{getattr(args, flag)}')
    for flag, values in (('--threads', args.threads), ('--cal-sizes', args.cal_sizes)):
        bad = [v for v in values if v < 1]
        if bad:
            raise ValueError(f'{flag}: must be >= 1, got {bad[0]}')
    if args.num_core < 4 or args.num_beyond < 0 or args.num_pit < 0:
        raise ValueError(f'--num-core must be >= 4 and --num-beyond / --num-pit >= 0, got '
                         f'{args.num_core}, {args.num_beyond}, {args.num_pit}')
    if args.clock == 'thread' and any(t != 1 for t in args.threads):
        raise ValueError(f'--clock thread: needs --threads 1 (one thread does all the work), '
                         f'got {" ".join(map(str, args.threads))}')
    if not 0 < args.train_frac < 1:
        raise ValueError(f'--train-frac: must be in (0, 1), got {args.train_frac}')
    if osp.isdir(args.dataset):
        raise ValueError(f'--dataset: {args.dataset} is a folder, give a .jsonl file')


def measure_run(args: argparse.Namespace, console: Console) -> List[Dict[str, Any]]:
    """Measure every sampled arch on every (backend, threads); returns the dataset rows."""
    items = ev.measure_items(ev.sample_archs(args.num_core, args.num_beyond, args.num_pit,
                                             args.seed))
    run_id = args.run_id or time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
    rows: List[Dict[str, Any]] = []
    with Progress(TextColumn('{task.description}'), BarColumn(), MofNCompleteColumn(),
                  TextColumn('ETA'), TimeRemainingColumn(), console=console) as bar:
        for backend, threads in [(b, t) for t in args.threads for b in args.backends]:
            tasks: Dict[str, Any] = {}

            def step(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(f'{backend}/{threads}t {stage}', total=total)
                bar.update(tasks[stage], completed=done)

            new, info = measure_rows(items, backend, threads, args.rounds, args.repeats,
                                     args.warmup, args.clock, args.affinity == 'auto',
                                     args.wait_quiet, console.print, step)
            if info['failures']:
                raise SystemExit(f'error: {backend}: {info["failures"][0][1]}')
            rows += [dict(r, run_id=run_id) for r in new]
            console.print(f'{backend}/{threads}t run {run_id}: {len(new)} archs, noise floor '
                          f'{info["noise_pct"]:.1f}%, measuring thread on its core '
                          f'{100 * info["cpu_share"]:.0f}% of the timed wall time '
                          f'({len(info["loaded"])} archs under 90%), load '
                          f'{" ".join(info["loadavg"]["before"])} -> '
                          f'{" ".join(info["loadavg"]["after"])}')
    return rows


def main(argv=None) -> Dict[str, Any]:
    args = parse_args(argv)
    console = Console()
    rows = args.rows
    if not args.from_dataset:  # measure, add to the dataset, then report on the new rows
        rows = measure_run(args, console)
        old = read_dataset(args.dataset) if osp.exists(args.dataset) else []
        os.makedirs(osp.dirname(osp.abspath(args.dataset)), exist_ok=True)
        console.print(f'added {write_dataset(args.dataset, old + rows) - len(old)} rows to '
                      f'{args.dataset}')
    return ev.fit_report(rows, args.out_dir, args.stat, args.train_frac, args.seed,
                         args.cal_sizes, args.cal_draws, console.print,
                         sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':
    main()
