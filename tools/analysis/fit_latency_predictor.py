"""Measure sampled scaled architectures, fit a latency predictor, report held-out MAPE.

    python tools/analysis/fit_latency_predictor.py [--family vit|pit] [--arch deit-tiny]
        [--img-size 224] [--patch-size 16] [--num-archs 60] [--train-frac 0.6]
        [--backends eager onnxruntime] [--threads 1] [--repeats 15] [--warmup 0.3]
        [--rounds 1] [--stat median|p10|min] [--seed 0]
        [--table work_dirs/latency/table.jsonl] [--out-dir work_dirs/latency_predictor]

On a shared machine use ``--threads 1 --rounds 3 --stat min``: each architecture is measured
in three round-robin passes and the fastest run is kept, the estimate least inflated by other
processes' load (every pass is still appended to the table, with ``min_ms``). ``--clock cpu``
times each run by the thread's CPU time instead of wall time (same protocol otherwise; rows are
marked ``clock: cpu``), which time slicing by other processes does not inflate.

Architectures are random scaling rules around the base (one multiplier per knob drawn from a
seeded grid; infeasible and duplicate results are redrawn). Each is measured with
:func:`mmvitscale.cost.backends.measure` (median of ``--repeats`` runs) on every backend and
appended to the latency table; per backend a :class:`~mmvitscale.cost.predictor.LatencyPredictor`
is fitted on a seeded train split and judged by its MAPE on the held-out architectures. Writes
``<out-dir>/<backend>.json`` (the predictor, with the split's MAPE in ``meta``),
``<out-dir>/<backend>_scatter.png`` and ``<out-dir>/summary.json``.
"""
import argparse
import json
import os
import os.path as osp
import random
import sys
from typing import Any, Dict, List

import mmvitscale  # noqa: F401  (shims before mmengine / host packages)
import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from mmvitscale.cost.backends import BACKENDS, BackendError, build_model, check_backend, measure
from mmvitscale.cost.latency_table import append_rows, fingerprint, make_row
from mmvitscale.cost.predictor import LatencyPredictor, mape
from mmvitscale.fileio import atomic_write, save_figure

GRIDS = dict(depth_mult=(0.5, 0.75, 1.0, 1.25, 1.5), width_mult=(0.5, 0.75, 1.0, 1.25, 1.5),
             heads_mult=(0.67, 1.0, 1.34, 2.0), mlp_ratio_mult=(0.5, 0.75, 1.0, 1.5),
             resolution_mult=(0.5, 0.75, 1.0, 1.25), patch_size_mult=(0.75, 1.0, 1.5, 2.0))
DEFAULT_ARCH = {'vit': 'deit-tiny', 'pit': 'pit-ti'}
STAT_KEYS = dict(median='median_ms', p10='p10_ms', min='min_ms')


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--family', default='vit', choices=('vit', 'pit'))
    p.add_argument('--arch', default=None, help='preset name or JSON dict (default deit-tiny)')
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--patch-size', type=int, default=16, help='ViT patch size')
    p.add_argument('--in-channels', type=int, default=3)
    p.add_argument('--num-archs', type=int, default=60)
    p.add_argument('--train-frac', type=float, default=0.6)
    p.add_argument('--backends', nargs='+', default=['eager'])
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--repeats', type=int, default=15)
    p.add_argument('--warmup', type=float, default=0.3)
    p.add_argument('--rounds', type=int, default=1,
                   help='measure every arch this many times, round robin; keep the lowest')
    p.add_argument('--stat', default='median', choices=tuple(STAT_KEYS),
                   help='per-measurement statistic (min: least disturbed by other load)')
    p.add_argument('--clock', default='wall', choices=('wall', 'cpu'),
                   help='wall: measure() latency; cpu: CPU time of the calling thread per run '
                   '(needs --threads 1; insensitive to time slicing by other processes)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--table', default='work_dirs/latency/table.jsonl',
                   help='latency table to append the measurements to ("" to skip)')
    p.add_argument('--out-dir', default='work_dirs/latency_predictor')
    args = p.parse_args(argv)
    for backend in args.backends:
        if backend not in BACKENDS:
            p.error(f'--backends: unknown backend {backend!r} '
                    f'(choose from {", ".join(BACKENDS)})')
        try:
            check_backend(backend, 'cpu')
        except ValueError as err:
            p.error(f'--backends {backend}: {err}')
    for flag in ('num_archs', 'rounds', 'threads', 'repeats', 'img_size', 'patch_size',
                 'in_channels'):
        if getattr(args, flag) < 1:
            p.error(f'--{flag.replace("_", "-")}: must be >= 1, got {getattr(args, flag)}')
    if args.num_archs < 4:
        p.error(f'--num-archs: needs at least 4 (train and test splits), got {args.num_archs}')
    if args.clock == 'cpu' and args.threads != 1:
        p.error(f'--clock cpu: needs --threads 1 (one thread does all the work), '
                f'got {args.threads}')
    if not 0 < args.train_frac < 1:
        p.error(f'--train-frac: must be in (0, 1), got {args.train_frac}')
    if args.arch and args.arch.lstrip().startswith('{'):
        args.arch = json.loads(args.arch)
    args.arch = args.arch or DEFAULT_ARCH[args.family]
    return args


def backbone_cfg(args: argparse.Namespace, rule: Dict[str, float]) -> Dict[str, Any]:
    cfg = dict(type='mmvitscale.ScaledViT' if args.family == 'vit' else 'mmvitscale.ScaledPiT',
               arch=args.arch, img_size=args.img_size, in_channels=args.in_channels,
               scaling=rule)
    if args.family == 'vit':
        cfg['patch_size'] = args.patch_size
    return cfg


def resolve(args: argparse.Namespace, rule: Dict[str, float]):
    from mmvitscale.models import ScaledPiT, ScaledViT
    if args.family == 'vit':
        return ScaledViT.resolve_arch(args.arch, args.img_size, args.patch_size, rule)
    return ScaledPiT.resolve_arch(args.arch, args.img_size, rule)


def sample_rules(args: argparse.Namespace) -> List[Dict[str, float]]:
    """``num_archs`` seeded random rules with distinct, feasible resolved architectures."""
    rng = random.Random(args.seed)
    grids = {k: v for k, v in GRIDS.items() if not (args.family == 'pit' and k == 'heads_mult')}
    rules, seen, tries = [{}], {resolve(args, {})}, 0
    while len(rules) < args.num_archs:
        tries += 1
        if tries > 100 * args.num_archs:
            raise ValueError(f'could only sample {len(rules)} distinct architectures')
        rule = {k: rng.choice(v) for k, v in grids.items()}
        rule = {k: v for k, v in rule.items() if v != 1.0}
        try:
            arch = resolve(args, rule)
        except ValueError:
            continue
        if arch not in seen:
            seen.add(arch)
            rules.append(rule)
    return rules


def setting(backend: str, args: argparse.Namespace) -> Dict[str, Any]:
    """The table fingerprint; CPU-time rows get ``clock: cpu`` (a separate fingerprint)."""
    fp = fingerprint('cpu', backend, args.threads)
    if args.clock == 'cpu':
        fp['clock'] = 'cpu'
    return fp


def measure_cpu_time(model: torch.nn.Module, shape, backend: str, warmup_s: float,
                     repeats: int) -> Dict[str, Any]:
    """Like :func:`measure`, in CPU milliseconds of this thread per forward (one thread).

    On a shared machine wall time includes the periods other processes hold the core; the
    thread's CPU time does not, so with ``--threads 1`` (torch and onnxruntime then run in the
    calling thread) it approximates the latency on an idle core.
    """
    import statistics
    import time

    from mmvitscale.cost.backends import _example, _ort_runner
    model.eval()
    with torch.no_grad():
        if backend == 'onnxruntime':
            run, _ = _ort_runner(model, shape, 1, backend, torch.device('cpu'), 17)
        elif backend == 'eager':
            x = _example(model, shape, 1)
            run = lambda: model(x)  # noqa: E731
        else:
            raise ValueError(f'--clock cpu supports eager and onnxruntime, not {backend!r}')
        start, runs = time.perf_counter(), 0
        while runs < 3 or time.perf_counter() - start < warmup_s:
            run()
            runs += 1
        times = []
        for _ in range(repeats):
            t0 = time.thread_time_ns()
            run()
            times.append((time.thread_time_ns() - t0) / 1e6)
    q = statistics.quantiles(times, n=10, method='inclusive') if len(times) > 1 else times * 9
    return dict(median_ms=statistics.median(times), p10_ms=q[0], p90_ms=q[-1],
                mean_ms=statistics.fmean(times), min_ms=min(times), repeats=repeats)


def scatter(path: str, pred: np.ndarray, true: np.ndarray, train: np.ndarray,
            title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(true[train], pred[train], s=14, label='train', alpha=0.7)
    ax.scatter(true[~train], pred[~train], s=14, label='held out', marker='x')
    lo, hi = min(true.min(), pred.min()) * 0.9, max(true.max(), pred.max()) * 1.1
    ax.plot([lo, hi], [lo, hi], 'k--', lw=0.8)
    ax.set(xscale='log', yscale='log', xlabel='measured (ms)', ylabel='predicted (ms)',
           title=title)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main(argv=None) -> Dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console()
    rules = sample_rules(args)
    archs = [resolve(args, r) for r in rules]
    order = np.random.default_rng(args.seed).permutation(len(rules))
    train = np.zeros(len(rules), dtype=bool)
    train[order[:max(2, int(round(args.train_frac * len(rules))))]] = True
    summary: Dict[str, Any] = dict(num_archs=len(rules), n_train=int(train.sum()),
                                   clock=args.clock, threads=args.threads, base=args.arch,
                                   rounds=args.rounds, repeats=args.repeats, stat=args.stat,
                                   backends={})
    with open('/proc/loadavg') as f:
        summary['loadavg_before'] = f.read().split()[:3]
    lat = {b: np.full(len(rules), np.inf) for b in args.backends}
    with Progress(console=console) as progress:
        task = progress.add_task('measuring',
                                 total=len(rules) * len(args.backends) * args.rounds)
        for backend in args.backends:
            fp, rows = setting(backend, args), []
            for rnd in range(args.rounds):  # round robin: slow drifts of the load hit all
                for i, rule in enumerate(rules):
                    model = build_model(backbone_cfg(args, rule))
                    shape = (args.in_channels, *archs[i].img_size)
                    try:
                        res = (measure(model, shape, backend, warmup_s=args.warmup,
                                       repeats=args.repeats) if args.clock == 'wall' else
                               measure_cpu_time(model, shape, backend, args.warmup,
                                                args.repeats))
                    except BackendError as err:
                        console.print(f'[red]error:[/red] {backend}: {err}')
                        sys.exit(1)
                    lat[backend][i] = min(lat[backend][i], res[STAT_KEYS[args.stat]])
                    rows.append(make_row(fp, args.family, archs[i].as_dict(), shape, 1, res,
                                         min_ms=res['min_ms'], round=rnd, rule=rule,
                                         clock=args.clock, source='fit_latency_predictor'))
                    progress.advance(task)
            if args.table:
                append_rows(args.table, rows)
    with open('/proc/loadavg') as f:
        summary['loadavg_after'] = f.read().split()[:3]

    os.makedirs(args.out_dir, exist_ok=True)
    for backend in args.backends:
        y = lat[backend]
        fp = setting(backend, args)
        pred_model = LatencyPredictor(dict(fingerprint=fp, source='fit_latency_predictor',
                                           stat=args.stat, rounds=args.rounds,
                                           clock=args.clock))
        pred_model.fit([archs[i] for i in np.flatnonzero(train)], y[train], args.in_channels)
        pred = pred_model.predict_many(archs, args.in_channels)
        test_mape, train_mape = mape(pred[~train], y[~train]), mape(pred[train], y[train])
        pred_model.meta.update(test_mape=test_mape, n_test=int((~train).sum()))
        path = pred_model.save(osp.join(args.out_dir, f'{backend}.json'))
        png = osp.join(args.out_dir, f'{backend}_scatter.png')
        scatter(png, pred, y, train, f'{backend}, {args.threads} thread(s): held-out MAPE '
                f'{test_mape:.1f}%')
        summary['backends'][backend] = dict(
            test_mape=test_mape, train_mape=train_mape, predictor=path, scatter=png,
            max_test_ape=float(np.max(np.abs(pred[~train] - y[~train]) / y[~train]) * 100),
            latency_ms_range=[float(y.min()), float(y.max())],
            coefficients=pred_model.coefficients)
        console.print(f'{backend}: held-out MAPE {test_mape:.2f}% on {(~train).sum()} archs '
                      f'(train {train_mape:.2f}% on {train.sum()}), latencies '
                      f'{y.min():.1f}-{y.max():.1f} ms -> {path}, {png}')
    atomic_write(osp.join(args.out_dir, 'summary.json'), json.dumps(summary, indent=2) + '\n')
    return summary


if __name__ == '__main__':
    main()
