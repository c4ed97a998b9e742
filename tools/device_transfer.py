"""Device-transfer report: latency-rank agreement and budgeted winners across settings.

    python tools/device_transfer.py TABLE [TABLE ...] [--fingerprints ID ...]
        [--budget-quantile 0.5 ...] [--budget-ms 40 ...] [--scores SCORES.json]
        [--stat median_ms|p10_ms|min_ms|mean_ms] [--reduce min|median] [--scatter A B]
        [--out-dir work_dirs/device_transfer] [--name report]
    python tools/device_transfer.py --measure [--rules RULE ...] [--num-random 6] [--seed 0]
        [--arch deit-tiny] [--backends eager onnxruntime [compile]] [--compile-max-archs 5]
        [--threads 1] [--rounds 3] [--repeats 5] [--warmup 0.3] [--table OUT_DIR/table.jsonl]

A setting is one latency-table fingerprint (device, backend, threads, versions). For every pair
of settings the report gives Kendall's tau-b of their latency rankings over the architectures
both measured; for each budget (``--budget-quantile q``: the q-quantile of each setting's
latencies; ``--budget-ms``: the same ms on every setting; default ``--budget-quantile 0.5``)
the best architecture under it per setting, by FLOPs or by ``--scores`` (JSON ``{label:
score}`` or ``[{"arch": {...}, "score": x}]``, bigger is better), and whether the winner changes
between settings. Writes ``<out-dir>/<name>.md``, ``.json`` and ``.png`` (tau heatmap and the
latency scatter of the least-agreeing pair, or ``--scatter A B``), atomically. Each setting
has a noise floor (median run-to-run spread of its latencies) and each pair says how many of
its rank differences lie within it.

``--measure`` first measures the scaling rules (default: every ``configs/_base_/scaling/*.py``
plus ``--num-random`` seeded random rules) applied to ``--arch`` at batch 1 on each backend
(compile only on the first ``--compile-max-archs`` archs: its set-up takes tens of seconds)
and appends the rows, labelled by rule, to ``--table``; the report then reads ``--table`` and
any TABLEs given. All inputs are checked before any measurement.
"""
import argparse
import glob
import os.path as osp
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import mmvitscale  # noqa: F401  (shims before mmengine / host packages)
from rich.console import Console

from mmvitscale.search.device_transfer import (REDUCE, STATS, LatencyMatrix, TransferError,
                                               check_matrix, collect, load_scores, sample_rules,
                                               transfer_report, write_report)

RULES_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', '_base_',
                     'scaling')
SHORT = dict(depth_mult='d', width_mult='w', heads_mult='h', mlp_ratio_mult='m',
             resolution_mult='r', patch_size_mult='p')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=osp.basename(__file__),
                                description=__doc__.splitlines()[0])
    p.add_argument('tables', nargs='*', metavar='TABLE', help='latency tables (JSON lines)')
    p.add_argument('--fingerprints', nargs='+', default=None,
                   help='fingerprint ids (or unique prefixes) to compare (default: all)')
    p.add_argument('--stat', default='median_ms', choices=STATS, help='row latency statistic')
    p.add_argument('--reduce', default='min', choices=REDUCE,
                   help='how repeated rows of one (setting, arch) are combined')
    p.add_argument('--budget-quantile', nargs='+', type=float, default=None,
                   help='budgets as quantiles of each setting\'s latencies (default 0.5)')
    p.add_argument('--budget-ms', nargs='+', type=float, default=[],
                   help='absolute budgets in ms, the same on every setting')
    p.add_argument('--scores', default=None, help='per-arch score JSON (default: FLOPs)')
    p.add_argument('--scatter', nargs=2, default=None, metavar=('A', 'B'),
                   help='setting names for the scatter (default: the lowest-tau pair)')
    p.add_argument('--out-dir', default='work_dirs/device_transfer')
    p.add_argument('--name', default='report', help='output file stem')
    m = p.add_argument_group('measure mode')
    m.add_argument('--measure', action='store_true', help='measure the rules first')
    m.add_argument('--rules', nargs='+', default=None,
                   help='rule files (default: configs/_base_/scaling/*.py)')
    m.add_argument('--num-random', type=int, default=6, help='extra seeded random rules')
    m.add_argument('--seed', type=int, default=0)
    m.add_argument('--arch', default='deit-tiny', help='ViT preset the rules scale')
    m.add_argument('--img-size', type=int, default=224)
    m.add_argument('--patch-size', type=int, default=16)
    m.add_argument('--backends', nargs='+', default=['eager', 'onnxruntime'])
    m.add_argument('--compile-max-archs', type=int, default=5,
                   help='measure the compile backend on this many archs only')
    m.add_argument('--threads', type=int, default=1, help='torch / onnxruntime threads')
    m.add_argument('--rounds', type=int, default=3,
                   help='round-robin passes over the archs (noise floor: spread of the rounds)')
    m.add_argument('--repeats', type=int, default=5, help='timed runs per arch and round')
    m.add_argument('--warmup', type=float, default=0.3, help='warm-up seconds')
    m.add_argument('--table', default=None, help='table to append to (default '
                   'OUT_DIR/table.jsonl)')
    return p


def _all_tables(args: argparse.Namespace) -> List[str]:
    return list(args.tables) + ([args.table] if args.measure else [])


def validate(args: argparse.Namespace) -> Optional[LatencyMatrix]:
    """ValueError naming the flag and value of the first bad input, before any measurement.

    Without ``--measure`` the tables are read and checked (>= 2 fingerprints, >= 3 shared
    architectures) and the :class:`LatencyMatrix` returned.
    """
    from mmvitscale.cost.backends import BACKENDS, check_backend
    from mmvitscale.cost.latency_table import fingerprint, fingerprint_id, read_rows
    from mmvitscale.rules import _check_rule_file
    if not args.tables and not args.measure:
        raise ValueError('give one or more latency TABLEs, or --measure')
    for path in args.tables:
        if not osp.isfile(path):
            raise ValueError(f'TABLE: file not found: {path}')
    if args.scores is not None and not osp.isfile(args.scores):
        raise ValueError(f'--scores: file not found: {args.scores}')
    if args.budget_quantile is None:
        args.budget_quantile = [] if args.budget_ms else [0.5]
    for q in args.budget_quantile:
        if not 0 <= q <= 1:
            raise ValueError(f'--budget-quantile: must be in [0, 1], got {q:g}')
    for b in args.budget_ms:
        if not b > 0:
            raise ValueError(f'--budget-ms: must be > 0, got {b:g}')
    if not args.measure:
        matrix = collect([r for t in args.tables for r in read_rows(t)], args.stat,
                         args.reduce, args.fingerprints)
        check_matrix(matrix)
        _check_scatter(args, matrix)
        return matrix
    args.table = args.table or osp.join(args.out_dir, 'table.jsonl')
    if args.rules is None:
        args.rules = sorted(glob.glob(osp.join(RULES_DIR, '*.py')))
    for path in args.rules:
        try:
            _check_rule_file(path)
        except ValueError as err:
            raise ValueError(f'--rules: {err}') from None
    for flag in ('threads', 'rounds', 'repeats', 'img_size', 'patch_size'):
        if getattr(args, flag) < 1:
            raise ValueError(f'--{flag.replace("_", "-")}: must be >= 1, '
                             f'got {getattr(args, flag)}')
    if args.num_random < 0 or args.warmup < 0:
        flag, value = (('--num-random', args.num_random) if args.num_random < 0 else
                       ('--warmup', args.warmup))
        raise ValueError(f'{flag}: must be >= 0, got {value:g}')
    if len(args.rules) + args.num_random < 3:
        raise ValueError(f'--rules / --num-random: {len(args.rules)} rule file(s) + '
                         f'{args.num_random} random rule(s) give fewer than 3 architectures')
    for backend in args.backends:
        if backend not in BACKENDS:
            raise ValueError(f'--backends: unknown backend {backend!r} '
                             f'(choose from {", ".join(BACKENDS)})')
        try:
            check_backend(backend, 'cpu')
        except ValueError as err:
            raise ValueError(f'--backends {backend}: {err}') from None
    if 'compile' in args.backends and args.compile_max_archs < 3:
        raise ValueError(f'--compile-max-archs: must be >= 3 (archs shared by all settings), '
                         f'got {args.compile_max_archs}')
    fids = {fingerprint_id(fingerprint('cpu', b, args.threads)) for b in args.backends}
    fids |= {r.get('fingerprint_id') for t in args.tables for r in read_rows(t)} - {None}
    if len(fids) < 2 and args.fingerprints is None:
        raise ValueError(f'--backends: need latency rows of at least 2 (device, backend) '
                         f'fingerprints; {" ".join(args.backends)} plus the TABLEs give '
                         f'{len(fids)}')
    return None


def _check_scatter(args: argparse.Namespace, matrix: LatencyMatrix) -> None:
    names = [matrix.names[f] for f in matrix.settings]
    for name in args.scatter or []:
        if name not in names:
            raise ValueError(f'--scatter: unknown setting {name!r} (settings: '
                             f'{", ".join(names)})')
    if args.scatter and args.scatter[0] == args.scatter[1]:
        raise ValueError(f'--scatter: needs two different settings, got {args.scatter[0]!r} '
                         'twice')


def rule_label(name: str, rule: Dict[str, float]) -> str:
    """``name`` or, for a random rule, ``rand<i>(d0.75,w1.25)``."""
    return f"{name}({','.join(f'{SHORT.get(k, k)}{v:g}' for k, v in rule.items()) or 'base'})"


def plan(args: argparse.Namespace) -> List[Tuple[str, Dict[str, float]]]:
    """(label, rule) of every architecture to measure: rule files, then random rules."""
    from mmengine.config import Config

    from mmvitscale.models import ScaledViT
    from mmvitscale.rules import image_rule

    def resolve(rule):
        return ScaledViT.resolve_arch(args.arch, args.img_size, args.patch_size, rule)

    out, seen = [], set()
    for path in args.rules:
        rule = image_rule(Config.fromfile(path).scaling)
        arch = resolve(rule)
        if arch in seen:
            continue
        seen.add(arch)
        out.append((osp.splitext(osp.basename(path))[0], rule))
    randoms = sample_rules(resolve, args.num_random, args.seed, exclude=seen)
    out += [(rule_label(f'rand{i}', r), r) for i, r in enumerate(randoms)]
    return out


def measure_all(args: argparse.Namespace, console: Console) -> Dict[str, Any]:
    """Measure every planned arch on every backend; append the rows to ``args.table``.

    Protocol (:func:`mmvitscale.cost.backends.measure_interleaved`): threads and CPU affinity
    pinned, per backend all archs prepared, then visited round robin ``--rounds`` times with
    ``--repeats`` timed runs per visit; each row carries its ``noise_pct`` (spread of the
    per-round medians), the report's noise floor.
    """
    from mmvitscale.cost.backends import (BackendError, build_model, make_runner,
                                          measure_interleaved, pinned)
    from mmvitscale.cost.latency_table import append_rows, fingerprint, make_row
    archs = plan(args)
    info: Dict[str, Any] = dict(archs=[a[0] for a in archs], failures=[], setup_s={})
    t0 = time.perf_counter()
    for backend in args.backends:
        use = archs[:args.compile_max_archs] if backend.startswith('compile') else archs
        with pinned(args.threads) as pin:
            prepared, runners = [], []
            for label, rule in use:
                cfg = dict(type='mmvitscale.ScaledViT', arch=args.arch, img_size=args.img_size,
                           patch_size=args.patch_size, scaling=rule)
                model = build_model(cfg)
                arch = model.arch_spec.as_dict()
                shape = (3, *arch['img_size'])
                s0 = time.perf_counter()
                try:
                    run, sync, _ = make_runner(model, shape, backend)
                except BackendError as err:
                    info['failures'].append(f'{label} {backend}: {err}')
                    console.print(f'[red]failed:[/red] {label} {backend}: {err}')
                    continue
                info['setup_s'].setdefault(backend, []).append(time.perf_counter() - s0)
                prepared.append((label, rule, arch, shape))
                runners.append((run, sync))
            if not runners:
                continue
            results = measure_interleaved(runners, args.rounds, args.repeats, args.warmup)
        fp = fingerprint('cpu', backend, args.threads)
        rows = [make_row(fp, 'vit', arch, shape, 1, res, min_ms=res['min_ms'], label=label,
                         rule=rule, cpus=pin['cpus'], source='device_transfer')
                for (label, rule, arch, shape), res in zip(prepared, results)]
        for (label, *_), res in zip(prepared, results):
            console.print(f'{label:<32} {backend:<12} median {res["median_ms"]:8.2f} ms  '
                          f'p10-p90 {res["p10_ms"]:.2f}-{res["p90_ms"]:.2f} ms  '
                          f'noise {res["noise_pct"]:4.1f}%')
        append_rows(args.table, rows)
    info['measure_wall_s'] = time.perf_counter() - t0
    return info


def main(argv=None) -> Dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        matrix = validate(args)
    except ValueError as err:
        parser.error(str(err))
    console = Console(soft_wrap=True)
    t0 = time.perf_counter()
    with open('/proc/loadavg') as f:
        load_before = f.read().split()[:3]
    run: Dict[str, Any] = {}
    if args.measure:
        run = measure_all(args, console)
        from mmvitscale.cost.latency_table import read_rows
        try:
            matrix = collect([r for t in _all_tables(args) for r in read_rows(t)], args.stat,
                             args.reduce, args.fingerprints)
            check_matrix(matrix)
            _check_scatter(args, matrix)
        except ValueError as err:
            console.print(f'[red]error:[/red] {err}')
            sys.exit(2)
    assert matrix is not None
    try:
        scores = load_scores(args.scores, matrix) if args.scores else None
    except ValueError as err:
        parser.error(f'--scores: {err}')
    report = transfer_report(matrix, scores, args.budget_quantile, args.budget_ms,
                             score_name='scores:' + args.scores if args.scores else 'flops')
    with open('/proc/loadavg') as f:
        load_after = f.read().split()[:3]
    report['run'] = dict(tables=_all_tables(args), argv=sys.argv[1:] if argv is None else argv,
                         wall_s=time.perf_counter() - t0, loadavg_before=load_before,
                         loadavg_after=load_after, **run)
    paths = write_report(report, args.out_dir, args.name, tuple(args.scatter or ()) or None)
    for p in report['pairs']:
        na, nb = (f'{v:.1f}%' if v is not None else '?' for v in p['noise_floor_pct'])
        within = (' (every rank difference within the noise floor)' if p['discordant']
                  and p['within_noise'] else f" ({p['discordant'] - p['discordant_within_noise']}"
                  f" of {p['discordant']} discordant pairs beyond the noise floor)"
                  if p['discordant'] else '')
        console.print(f"tau {p['a']} vs {p['b']}: {p['tau']:.3f} (n={p['n']}, noise floor "
                      f'{na} / {nb}){within}')
    for b in report['budgets']:
        winners = ', '.join(f"{k}: {v['winner']}" for k, v in b['per_setting'].items())
        console.print(f"budget {b['name']}: {winners}"
                      + (' [bold]-> winner changes[/bold]' if b['winner_changes'] else ''))
    console.print(f"wrote {paths['md']}, {paths['json']}, {paths['png']}")
    return report


if __name__ == '__main__':
    try:
        main()
    except TransferError as err:  # raised after validation only by a racing table writer
        print(f'error: {err}', file=sys.stderr)
        sys.exit(2)
