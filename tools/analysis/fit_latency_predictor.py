"""Measure sampled ViT / PiT architectures, fit latency predictors, report held-out error.

    # measure (one run) into the dataset, then fit and report
    python tools/analysis/fit_latency_predictor.py --backends eager onnxruntime --threads 1 2 \
        --run-id A --dataset data/latency/cpu_runs.jsonl
    # refit from the shipped dataset, no measuring
    python tools/analysis/fit_latency_predictor.py --from-dataset data/latency/cpu_runs.jsonl

Architectures (:func:`mmvitscale.cost.evaluation.sample_archs`, seeded): ``--num-core`` scaled
DeiT-Ti inside a box of depth / width / resolution multipliers, ``--num-beyond`` with one of
them past the box, ``--num-pit`` scaled PiT-Ti. Every (backend, threads) setting is measured
with the repeatable protocol of :mod:`mmvitscale.cost.backends` (threads and CPU affinity
pinned, archs visited round robin ``--rounds`` times, ``--repeats`` timed runs per visit;
median, p10 / p90 and the round-to-round spread as the noise floor) and the rows (with
``--run-id``, ``uptime`` load before and after) are added to ``--dataset``.

Per (setting, run), the analytic baseline and the per-kernel predictor are fitted on a seeded
``--train-frac`` of the core ViTs and judged on the held-out core ViTs, the out-of-range ViTs
and the PiTs (cross-family). With several settings in a run, the kernel predictor of the first
setting is calibrated to each other one with 5 / 10 / 20 measured archs (``--cal-sizes``,
drawn from the target's training and out-of-range archs; judged on its held-out core ViTs
and PiTs) and compared with fitting from scratch. With several runs of a setting, the
run-to-run spread and each run's predictors judged on the other run's held-out archs are
reported too. Writes
``<out-dir>/report.md``, ``summary.json``, ``scatter.png``, ``calibration.png`` and one
predictor JSON per (setting, run, kind).
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import Any, Dict, List

import mmvitscale  # noqa: F401  (shims before mmengine / host packages)
import numpy as np
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from mmvitscale.cost import evaluation as ev
from mmvitscale.cost.backends import (BACKENDS, BackendError, CLOCKS, build_model,
                                      check_backend, make_runner, measure_interleaved, pinned)
from mmvitscale.cost.calibration import METHODS, calibration_curve
from mmvitscale.cost.latency_table import (fingerprint, make_row, read_dataset,
                                           write_dataset)
from mmvitscale.families import get_family
from mmvitscale.fileio import atomic_write


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--from-dataset', nargs='+', default=None, metavar='FILE',
                   help='refit from these dataset files; no measuring')
    p.add_argument('--dataset', default='work_dirs/latency/dataset.jsonl',
                   help='dataset file the measured rows are added to')
    p.add_argument('--run-id', default=None, help='name of this measurement run '
                   '(default: the UTC time)')
    p.add_argument('--num-core', type=int, default=30)
    p.add_argument('--num-beyond', type=int, default=8)
    p.add_argument('--num-pit', type=int, default=8)
    p.add_argument('--backends', nargs='+', default=['eager'])
    p.add_argument('--threads', nargs='+', type=int, default=[1])
    p.add_argument('--rounds', type=int, default=3, help='round-robin passes over the archs')
    p.add_argument('--repeats', type=int, default=5, help='timed runs per arch and round')
    p.add_argument('--warmup', type=float, default=0.3, help='warm-up seconds per arch')
    p.add_argument('--clock', default='wall', choices=CLOCKS,
                   help='wall, or thread CPU time (only with --threads 1)')
    p.add_argument('--affinity', default='auto', choices=('auto', 'none'),
                   help='pin to the first THREADS CPUs (auto) or not')
    p.add_argument('--stat', default='median_ms', choices=('median_ms', 'p10_ms', 'min_ms'),
                   help='row statistic the predictors are fitted to and judged on')
    p.add_argument('--train-frac', type=float, default=0.6)
    p.add_argument('--cal-sizes', nargs='+', type=int, default=[5, 10, 20])
    p.add_argument('--cal-draws', type=int, default=20)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out-dir', default='work_dirs/latency_predictor')
    args = p.parse_args(argv)
    try:
        validate(args)
    except ValueError as err:
        p.error(str(err))
    return args


def validate(args: argparse.Namespace) -> None:
    """ValueError naming the flag and value of the first bad input, before any work."""
    if args.from_dataset:
        args.rows = []
        for path in args.from_dataset:
            try:
                args.rows += read_dataset(path)
            except ValueError as err:
                raise ValueError(f'--from-dataset: {err}') from None
        if not args.rows:
            raise ValueError(f'--from-dataset: no rows in {" ".join(args.from_dataset)}')
    for backend in args.backends:
        if backend not in BACKENDS:
            raise ValueError(f'--backends: unknown backend {backend!r} '
                             f'(choose from {", ".join(BACKENDS)})')
        try:
            check_backend(backend, 'cpu')
        except ValueError as err:
            raise ValueError(f'--backends {backend}: {err}') from None
    for flag in ('rounds', 'repeats', 'cal_draws'):
        if getattr(args, flag) < 1:
            raise ValueError(f'--{flag.replace("_", "-")}: must be >= 1, got '
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
    if args.warmup < 0:
        raise ValueError(f'--warmup: must be >= 0, got {args.warmup}')
    if osp.isdir(args.dataset):
        raise ValueError(f'--dataset: {args.dataset} is a folder, give a .jsonl file')


def _load() -> List[str]:
    with open('/proc/loadavg') as f:
        return f.read().split()[:3]


def measure_run(args: argparse.Namespace, console: Console) -> List[Dict[str, Any]]:
    """Measure every sampled arch on every (backend, threads); returns the dataset rows."""
    archs = ev.sample_archs(args.num_core, args.num_beyond, args.num_pit, args.seed)
    run_id = args.run_id or time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
    settings = [(b, t) for t in args.threads for b in args.backends]
    rows: List[Dict[str, Any]] = []
    columns = (TextColumn('{task.description}'), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn('ETA'), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task('settings', total=len(settings))
        for backend, threads in settings:
            load_before = _load()
            with pinned(threads, 'auto' if args.affinity == 'auto' else None) as pin:
                prep = progress.add_task(f'{backend}/{threads}t: prepare', total=len(archs))
                runners = []
                for a in archs:
                    fam = get_family(a['family'])
                    cfg = fam.backbone_cfg(fam.default_arch, 224, rule=a['rule'])
                    model = build_model(cfg)
                    run, sync, _ = make_runner(model, (3, *a['arch']['img_size']), backend)
                    runners.append((run, sync))
                    progress.advance(prep)
                timed = progress.add_task(f'{backend}/{threads}t: measure',
                                          total=len(archs) * args.rounds)
                results = measure_interleaved(
                    runners, args.rounds, args.repeats, args.warmup, clock=args.clock,
                    progress=lambda d, t: progress.update(timed, completed=d))
                del runners
            fp = fingerprint('cpu', backend, threads)
            if args.clock != 'wall':
                fp['clock'] = args.clock
            load_after = _load()
            for a, res in zip(archs, results):
                rows.append(make_row(fp, a['family'], a['arch'], [3, *a['arch']['img_size']],
                                     1, res, run_id=run_id, group=a['group'], rule=a['rule'],
                                     clock=args.clock, cpus=pin['cpus'],
                                     loadavg=dict(before=load_before, after=load_after),
                                     min_ms=res['min_ms'], max_ms=res['max_ms'],
                                     source='fit_latency_predictor'))
            noise = float(np.median([r['noise_pct'] for r in results]))
            share = float(np.median([r['cpu_share'] for r in results]))
            console.print(f'{backend}/{threads}t run {run_id}: {len(results)} archs, '
                          f'{min(r["median_ms"] for r in results):.1f}-'
                          f'{max(r["median_ms"] for r in results):.1f} ms, noise floor '
                          f'{noise:.1f}%, main thread on CPU {100 * share:.0f}% of the '
                          f'timed wall time, load {" ".join(load_before)} -> '
                          f'{" ".join(load_after)}')
            progress.advance(task)
    return rows


def main(argv=None) -> Dict[str, Any]:
    args = parse_args(argv)
    console = Console()
    if args.from_dataset:
        rows = args.rows
    else:
        try:
            new = measure_run(args, console)
        except BackendError as err:
            console.print(f'[red]error:[/red] {err}')
            sys.exit(1)
        old = read_dataset(args.dataset) if osp.exists(args.dataset) else []
        os.makedirs(osp.dirname(osp.abspath(args.dataset)), exist_ok=True)
        write_dataset(args.dataset, old + new)
        console.print(f'added {len(new)} rows to {args.dataset}')
        rows = new
    data = ev.latencies(rows, args.stat)
    os.makedirs(args.out_dir, exist_ok=True)
    results: Dict[Any, Dict[str, Any]] = {}
    summary: Dict[str, Any] = dict(argv=sys.argv[1:] if argv is None else argv, runs={},
                                   calibration={}, stat=args.stat)
    for key in sorted(data, key=lambda k: (k[1], k[0])):
        res = ev.evaluate(data[key], train_frac=args.train_frac, seed=args.seed)
        results[key] = res
        entry = dict(noise_floor_pct=res['noise_floor_pct'], cpu_share=res['cpu_share'],
                     train_range=res['train_range'],
                     latency_ms_range=res['latency_ms_range'], kinds={})
        for kind, k in res['kinds'].items():
            stem = f'{key[0].replace("/", "_")}_{key[1]}_{kind}'
            path = k['predictor'].save(osp.join(args.out_dir, stem + '.json'))
            entry['kinds'][kind] = dict(metrics=k['metrics'], predictor=path,
                                        coefficients=k['predictor'].coefficients)
            m = k['metrics']
            console.print(f'{key[0]} run {key[1]} {kind:>8}: held-out MAPE '
                          + ', '.join(f"{s} {m[s]['mape']:.2f}% ({m[s]['within10']:.0f}% "
                                      f"within 10%, n={m[s]['n']}, target "
                                      f"{'met' if m[s]['meets_target'] else 'not met'})"
                                      for s in ev.SPLITS[1:] if m[s]['n']))
        summary['runs'][f'{key[0]} {key[1]}'] = entry
    calibration: Dict[str, List[Dict[str, Any]]] = {}
    for run in dict.fromkeys(k[1] for k in data):
        keys = [k for k in results if k[1] == run]
        if len(keys) < 2:
            continue
        src = keys[0]
        base = results[src]['kinds']['kernel']['predictor']
        for dst in keys[1:]:
            d, sp = data[dst], results[dst]['splits']
            pool = sorted(sp['train'] + sp['out-of-range'])  # up to 20 calibration samples
            test = sorted(set(range(len(d['archs']))) - set(pool))
            pair = f'{src[0]} -> {dst[0]} ({run})'
            calibration[pair] = calibration_curve(
                base, [d['archs'][i] for i in pool], d['y'][pool],
                [d['archs'][i] for i in test], d['y'][test], sizes=args.cal_sizes,
                methods=METHODS, draws=args.cal_draws, seed=args.seed)
            best = min((r for r in calibration[pair] if r['k'] == max(args.cal_sizes)
                        and not r['method'].startswith('scratch')),
                       key=lambda r: r['mape'], default=None)
            if best:
                console.print(f"calibration {pair}: {best['method']} with {best['k']} archs "
                              f"-> held-out MAPE {best['mape']:.2f}%")
    summary['calibration'] = calibration
    runs, crossed = ev.run_to_run(data), ev.cross_run(data, results)
    summary.update(run_to_run=runs, cross_run=crossed)
    for setting, r in runs.items():
        console.print(f"{setting} run to run ({' / '.join(r['runs'])}): median "
                      f"{r['median_pct']:.1f}%, p90 {r['p90_pct']:.1f}% over {r['n']} archs")
    atomic_write(osp.join(args.out_dir, 'report.md'),
                 ev.markdown(results, calibration, runs=runs, crossed=crossed))
    atomic_write(osp.join(args.out_dir, 'summary.json'),
                 json.dumps(summary, indent=1, default=float) + '\n')
    ev.plot_scatter(osp.join(args.out_dir, 'scatter.png'), results, data)
    if calibration:
        ev.plot_calibration(osp.join(args.out_dir, 'calibration.png'), calibration)
    console.print(f'wrote {args.out_dir}/report.md, summary.json, scatter.png'
                  + (', calibration.png' if calibration else ''))
    return summary


if __name__ == '__main__':
    main()
